"""Feed-forward generators: the architectures (``nets/generator.py``), training
(``tasks/train.py``), checkpoints (``checkpoint.py``), the training photos
(``data.py``) and the ``--mode train``/``--mode apply`` jobs. Small random generators and
VGG19s throughout; one real-weights run at 64 px."""

import dataclasses
import gc
import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import nst_jax
from nst_jax import checkpoint, cli, data, signals
from nst_jax.nets import generator
from nst_jax.nets.generator import GeneratorConfig
from nst_jax.nets.network import NetConfig
from nst_jax.tasks import resume, trained
from nst_jax.tasks import train as training

from .conftest import SMALL_WIDTHS, smooth_image

TINY = {"scales": 3, "width": 4}
# The training machinery's tests, on fewer layers, with Gatys's absolute losses: the
# small random network's relative losses start near 1 whatever the generator does.
SHALLOW = nst_jax.LossConfig(
    style_layers=("conv1_1", "conv2_1"), content_layers=("conv2_2",), style_weight=3e-3,
    tv_weight=1e3, content_loss="mse", style_norm="gatys",
)  # fmt: skip


@pytest.mark.parametrize(
    "config",
    [
        GeneratorConfig(**TINY),
        GeneratorConfig(**TINY, norm="batch"),
        GeneratorConfig(kind="residual", width=4, blocks=1),
        GeneratorConfig(**TINY, texture=True),
    ],
    ids=["pyramid", "pyramid-batch", "residual", "texture"],
)
def test_generators_are_fully_convolutional_and_vmap_like_a_loop(config, rng):
    variables = generator.init(jax.random.key(0), config)
    keys = jax.random.split(jax.random.key(1), 3)
    # Odd sizes; the pyramid also at one smaller than its coarsest scale's halvings.
    for shape in [(37, 51)] + ([(16, 17)] if config == GeneratorConfig(**TINY) else []):
        contents = None if config.texture else jnp.asarray(rng.random((3, *shape, 3)), jnp.float32)

        def one(x, k, shape=shape):
            return generator.apply(variables, config, x, k, shape=shape)

        batched = jax.jit(jax.vmap(one, in_axes=(None if config.texture else 0, 0)))(contents, keys)
        alone = jax.jit(one)
        looped = [alone(None if config.texture else contents[i], keys[i]) for i in range(3)]
        assert batched.shape == (3, *shape, 3)
        assert np.abs(np.asarray(batched) - np.stack(looped)).max() < 1e-4  # float32 rounding
        assert 0 <= float(batched.min()) and float(batched.max()) <= 1
    if not config.texture:  # The noise matters, and so does the content.
        x = jnp.asarray(rng.random((24, 24, 3)), jnp.float32)
        run = jax.jit(lambda x, k: generator.apply(variables, config, x, k))
        a, b = (run(x, k) for k in keys[:2])
        c = run(x[::-1], keys[0])
        assert float(jnp.abs(a - b).max()) > 1e-4 and float(jnp.abs(a - c).max()) > 1e-3
        # One example: a batch is vmap's, and pixels are floats (not a flax shape error).
        for bad, match in [(x[None], r"\[H, W, 3\] RGB"), ((x * 255).astype(jnp.uint8), "float")]:
            with pytest.raises(ValueError, match=match):
                generator.apply(variables, config, bad, keys[0])


def test_the_pyramids_downsampling_and_noise(rng):
    """Constant matrices resize as ``jax.image.resize`` does; one draw of noise, cut
    into the scales, fills each with its own uniform values."""
    for shape, new in [((170, 256), (85, 128)), ((37, 51), (19, 26)), ((16, 17), (1, 2))]:
        x = jnp.asarray(rng.random((1, *shape, 3)), jnp.float32)
        want = jax.image.resize(x, (1, *new, 3), "linear", antialias=True)
        assert float(jnp.abs(generator._downsample(x, new) - want).max()) < 1e-6
    config = GeneratorConfig(scales=3, noise=2)
    noise = generator.draw_noise(config, jax.random.key(0), (9, 13))
    assert [z.shape for z in noise] == [(1, 3, 4, 2), (1, 5, 7, 2), (1, 9, 13, 2)]
    flat = np.concatenate([np.ravel(z) for z in noise])
    assert 0 <= flat.min() and flat.max() < 1 and len(np.unique(flat)) == flat.size


def _perturbed(params, seed=1, size=0.3):
    """``params`` moved away from the initial zeros and ones, so that no gradient, and
    no bias's effect, vanishes by chance."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    moved = [x + size * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(tree, moved)


def _named(tree) -> dict:
    return {"/".join(k.key for k in path): x for path, x in jax.tree.flatten_with_path(tree)[0]}


@pytest.mark.parametrize(
    "small", [TINY, {"kind": "residual", "width": 4, "blocks": 1}], ids=["pyramid", "residual"]
)
def test_every_generator_parameter_changes_the_output(small, rng):
    """No parameter is one that normalisation cancels: each has a gradient far above
    rounding. Format 1's generators (``legacy_biases``) had such biases, and theirs are
    rounding alone."""
    x = jnp.asarray(rng.random((20, 24, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(20, 24, 3)), jnp.float32)

    def largest_gradients(config):
        params = _perturbed(generator.init(jax.random.key(0), config)["params"])

        def loss(p):
            return jnp.sum(w * generator.apply({"params": p}, config, x, jax.random.key(2)))

        grads = _named(jax.jit(jax.grad(loss))(params))
        return {name: float(jnp.abs(g).max()) for name, g in grads.items()}

    new = largest_gradients(GeneratorConfig(**small))
    old = largest_gradients(GeneratorConfig(**small, legacy_biases=True))
    scale = max(new.values())
    assert min(new.values()) > 1e-3 * scale, min(new, key=new.get)
    cancelled = set(old) - set(new)
    assert set(new) < set(old) and all(name.endswith("/bias") for name in cancelled)
    assert max(old[name] for name in cancelled) < 1e-5 * scale


# Checkpoints name their arrays by the generator's module tree, which Flax names by the
# order the modules are built in: reordering two calls renames the arrays, and every
# checkpoint already trained stops loading ("does not fit this generator").
TREES = Path(__file__).resolve().parent / "generator_trees.json"
TREE_CONFIGS = {
    "pyramid": {},
    "pyramid, batch norm": {"norm": "batch"},
    "pyramid, texture": {"texture": True},
    "residual": {"kind": "residual"},
    "residual, batch norm": {"kind": "residual", "norm": "batch"},
    "pyramid, format 1": {"legacy_biases": True},
    "residual, format 1": {"kind": "residual", "legacy_biases": True},
}


def _tree(config: GeneratorConfig) -> dict[str, list[int]]:
    """Every variable's name and shape, of the default-sized generator (traced only)."""
    variables = jax.eval_shape(lambda: generator.init(jax.random.key(0), config))
    return {name: list(x.shape) for name, x in _named(variables).items()}


def write_generator_trees():
    """Rewrite ``TREES``: only with a new checkpoint format, whose loader maps the old
    names (``python -m tests.test_feedforward``)."""
    trees = {label: _tree(GeneratorConfig(**kw)) for label, kw in TREE_CONFIGS.items()}
    lines = ",\n".join(
        f"  {json.dumps(label)}: {{\n"
        + ",\n".join(f"    {json.dumps(n)}: {json.dumps(s)}" for n, s in tree.items())
        + "\n  }"
        for label, tree in trees.items()
    )
    TREES.write_text("{\n" + lines + "\n}\n")


@pytest.mark.parametrize("label", TREE_CONFIGS)
def test_the_generators_variable_names_are_the_checkpoints(label):
    """The names and shapes checkpoints already hold (format 2, and format 1 through
    ``legacy_biases``) are the ones the generators build."""
    stored = json.loads(TREES.read_text())[label]
    built = _tree(GeneratorConfig(**TREE_CONFIGS[label]))
    assert built == stored, (
        f"{label}: missing {sorted(set(stored) - set(built))[:4]}, "
        f"new {sorted(set(built) - set(stored))[:4]}, "
        f"reshaped {[n for n in stored if n in built and built[n] != stored[n]][:4]}: "
        "trained checkpoints would no longer load (see write_generator_trees)"
    )


def test_a_kind_changed_by_replace_gets_its_own_width():
    """The default width is the kind's own, however the config was made: replacing a
    pyramid's kind gave a residual network of the pyramid's 8 channels, not 32.
    Checkpoints record the width spelt out, as they always did."""
    residual = dataclasses.replace(GeneratorConfig(), kind="residual")
    assert _tree(residual) == _tree(GeneratorConfig(kind="residual"))
    assert residual.channels == 32 and GeneratorConfig().channels == 8
    recorded = resume.settings(training.TrainConfig())["generator"]
    assert recorded["width"] == 8 and GeneratorConfig(**recorded) == GeneratorConfig().resolved()


def test_instance_norm_normalises_each_image_and_channel(rng):
    x = jnp.asarray(rng.normal(3.0, 5.0, (1, 13, 17, 4)), jnp.float32)
    norm = generator.Norm("instance", training=False)
    y, _ = norm.init_with_output(jax.random.key(0), x)
    assert np.allclose(y.mean(axis=(1, 2)), 0, atol=1e-5)
    assert np.allclose(y.std(axis=(1, 2)), 1, atol=1e-3)


def test_instance_norm_makes_the_output_independent_of_contrast(rng):
    """Ulyanov et al.'s point: a content at 0.3x contrast gives the same image with
    instance normalisation (exactly, noise and all: the content is normalised before the
    noise joins it), while a batch-normalised generator's output moves."""
    x = jnp.asarray(smooth_image(rng, 40, 48), jnp.float32)
    low = 0.3 * x + 0.35
    gaps = {}
    for norm in ("instance", "batch"):
        config = GeneratorConfig(**TINY, norm=norm)
        v = generator.init(jax.random.key(0), config)
        if norm == "batch":  # Running averages of normal-contrast photos, as in training.

            def stats(v, im, c=config):
                return generator.apply(v, c, im, jax.random.key(0), training=True)[1]

            train = jax.jit(jax.vmap(stats, in_axes=(None, 0), axis_name=generator.BATCH_AXIS))
            for _ in range(60):
                v = {**v, "batch_stats": jax.tree.map(lambda s: s[0], train(v, x[None]))}
        run = jax.jit(lambda v, im, c=config: generator.apply(v, c, im, jax.random.key(0)))
        a, b = (run(v, im) for im in (x, low))
        gaps[norm] = float(jnp.abs(a - b).mean())
    assert gaps["instance"] < 1e-3 and gaps["batch"] > max(0.01, 20 * gaps["instance"]), gaps


def test_photos_are_deterministic_augmented_crops(tmp_path, capsys):
    paths = data.default_photos()
    assert len(paths) == len(data.DEFAULT_PHOTOS) == 13 and all(p.is_file() for p in paths)
    photos = data.Photos(paths[:3], size=24, batch_size=5, seed=3)
    a, b, c = photos.batch(7), photos.batch(7), photos.batch(8)
    assert a.shape == (5, 24, 24, 3) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    steps = [(k, x) for (k, x), _ in zip(photos.batches(7), range(2), strict=False)]
    assert [k for k, _ in steps] == [7, 8] and np.array_equal(steps[0][1], a)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    nst_jax.save_image(tmp_path / "good.png", np.ones((30, 40, 3), np.float32) * 0.5)
    good = data.check_photos([tmp_path / "bad.jpg", tmp_path / "good.png"], warn=print)
    assert good == [tmp_path / "good.png"] and "skipping training file" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no readable training images"):
        data.check_photos([tmp_path / "bad.jpg"], warn=lambda m: None)
    # A file whose header reads but whose pixels do not, named twice (as a caller of
    # the API may): drawing gives up once every distinct file failed; it looped for good.
    whole = (tmp_path / "good.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: whole.index(b"IDAT") + 8])
    twice = data.Photos([tmp_path / "cut.png", str(tmp_path / "cut.png")], size=8,
                        batch_size=1, seed=0)  # fmt: skip
    assert twice.paths == [tmp_path / "cut.png"]
    with pytest.raises(ValueError, match="no readable training images left"):
        twice.batch(0)


def test_large_photos_are_kept_at_four_times_what_a_sample_spans(tmp_path):
    """A sample spans at most 2 crops of 24 px of a photo's short side: a 600x800 PNG is
    kept at a short side of 192, a 150x170 one as it is."""
    big = nst_jax.save_image(tmp_path / "big.png", smooth_image(np.random.default_rng(0), 600, 800))
    small = nst_jax.save_image(tmp_path / "small.png", np.full((150, 170, 3), 0.5, np.float32))
    photos = data.Photos([big, small], size=24, batch_size=2, seed=0)
    assert photos._photo(big).shape == (192, 256, 3)
    assert photos._photo(small).shape == (150, 170, 3)
    # A JPEG five times as wide as high decodes small, but not below a sample's 48 px.
    wide = tmp_path / "wide.jpg"
    Image.fromarray(np.full((200, 1000, 3), 128, np.uint8)).save(wide)
    assert min(photos._photo(wide).shape[:2]) >= 48


def test_photo_scales_set_how_much_of_a_photo_a_crop_holds(tmp_path):
    """At scale 1 a crop spans the photo's whole short side; zoomed in 3x, many crops
    fall inside one half of a photo whose top and bottom halves differ."""
    halves = np.zeros((30, 40, 3), np.float32)
    halves[15:] = 1.0
    nst_jax.save_image(tmp_path / "halves.png", halves)
    means = {}
    for scales in ((1.0, 1.0), (3.0, 3.0)):
        photos = data.Photos([tmp_path / "halves.png"], size=12, batch_size=16, seed=0,
                             scales=scales)  # fmt: skip
        means[scales] = photos.batch(0).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(means[1.0, 1.0], 0.5, atol=0.02)
    assert np.sum((means[3.0, 3.0] < 0.1) | (means[3.0, 3.0] > 0.9)) >= 4, means[3.0, 3.0]
    with pytest.raises(ValueError, match="photo scales"):
        data.Photos([tmp_path / "halves.png"], size=12, batch_size=1, seed=0, scales=(0.5, 1))


@pytest.fixture(scope="module")
def small(small_weights):
    style = smooth_image(np.random.default_rng(1), 40, 40)
    return small_weights, style


def _config(steps, **kw):
    base = {"generator": GeneratorConfig(**TINY), "loss": SHALLOW, "size": 24, "batch_size": 2,
            "warmup": 2}  # fmt: skip
    return training.TrainConfig(**{**base, "steps": steps, **kw})


def test_training_lowers_the_loss_and_resumes_exactly(small, tmp_path, monkeypatch, capsys):
    """Four steps in one go equal two steps, a checkpoint, and two more resumed from it;
    the checkpoint applies to the same image as the state in memory."""
    weights, style = small
    photos = data.Photos(data.default_photos(), size=24, batch_size=2, seed=0)
    whole = training.train_generator(
        style, _config(4), weights=weights, photos=photos, progress=False
    )
    model = tmp_path / "model"

    def stop(step, image):  # Ctrl-C after step 2: the state is saved.
        raise KeyboardInterrupt

    first = training.train_generator(
        style, _config(4), weights=weights, photos=photos, model_dir=model, progress=False,
        sample=style, save_every=2, on_sample=stop,
    )  # fmt: skip
    assert first.interrupted and first.step == 2 and checkpoint.latest_step(model) == 2
    resumed = training.train_generator(
        style, _config(4), weights=weights, photos=photos, model_dir=model, progress=False
    )
    assert resumed.resumed == 2 and resumed.step == 4 and len(resumed.history) == 2
    for a, b in zip(jax.tree.leaves(whole.state), jax.tree.leaves(resumed.state), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert [h["total"] for h in whole.history[2:]] == [h["total"] for h in resumed.history]
    g, variables, meta = trained.load_generator(model)
    assert g == GeneratorConfig(**TINY) and meta["step"] == 4
    content = smooth_image(np.random.default_rng(2), 30, 20)
    from_disk = trained.apply_generator(variables, g, content, seeds=(0, 1))
    in_memory = trained.apply_generator({"params": whole.state.params}, g, content, seeds=(0, 1))
    assert from_disk.shape == (2, 30, 20, 3) and np.array_equal(from_disk, in_memory)
    compiled = nst_jax.solve.programs.compiled_programs  # Applying again compiles nothing.
    trained.apply_generator(variables, g, content[::-1], seeds=(3, 4))
    assert nst_jax.solve.programs.compiled_programs == compiled
    with pytest.raises(ValueError, match="at least one seed"):
        trained.apply_generator(variables, g, content, seeds=())
    with pytest.raises(ValueError, match="needs the output's shape"):
        trained.apply_generator(variables, g, None)
    # Too large is refused before any pixel is made, or once compiled, by XLA's figure.
    with pytest.raises(ValueError, match="above the limit of 100,000,000 pixels"):
        trained.apply_generator(variables, g, None, seeds=(0, 1), shape=(8000, 7000))
    with monkeypatch.context() as m:
        m.setattr(nst_jax.memory, "available_bytes", lambda device=None: 2**10)
        with pytest.raises(ValueError, match="GiB is free; the largest size that fits"):
            trained.apply_generator(variables, g, content, seeds=(5, 6, 7))
    # Photos made for other settings than the config's are refused before training.
    for name, value in [("batch_size", 3), ("size", 32), ("seed", 5)]:
        other = data.Photos(data.default_photos(), **{"size": 24, "batch_size": 2, "seed": 0,
                                                      name: value})  # fmt: skip
        with pytest.raises(ValueError, match=f"photos were made with {name} {value}, and"):
            training.train_generator(style, _config(6), weights=weights, photos=other,
                                     model_dir=model, progress=False)  # fmt: skip
    # A longer run of other settings must not resume from this one.
    tv = dataclasses.replace(SHALLOW, tv_weight=0.5)
    with pytest.raises(ValueError, match=r"other train settings \(loss.tv_weight: .* 0.5 now\)"):
        training.train_generator(style, _config(6, loss=tv), weights=weights, photos=photos,
                       model_dir=model, progress=False)  # fmt: skip
    # Another rate, or another way to compute VGG19, resumes (with a note for the rate):
    # a run whose loss overflowed goes on at a lower rate from its last checkpoint.
    again = tmp_path / "again"
    shutil.copytree(model, again)
    capsys.readouterr()
    faster = training.train_generator(
        style, _config(5, lr=0.5, net=NetConfig(convolution="direct")), weights=weights,
        photos=photos, model_dir=again, progress=False,
    )  # fmt: skip
    err = capsys.readouterr().err
    assert faster.resumed == 4 and faster.step == 5
    assert "note: resuming" in err and "(lr: 0.03 there, 0.5 now)" in err, err
    assert "other training photos" not in err
    fewer = data.Photos(data.default_photos()[:5], size=24, batch_size=2, seed=0)
    training.train_generator(style, _config(6), weights=weights, photos=fewer,
                             model_dir=again, progress=False)  # fmt: skip
    assert "on other training photos (13 trained it, 5 now)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="checkpoint of other style"):
        training.train_generator(style[::-1], _config(6), weights=weights, photos=photos,
                       model_dir=model, progress=False)  # fmt: skip


class _InterruptWhenRead:
    """A metric whose reading raises KeyboardInterrupt: a Ctrl-C that lands while the
    host waits for a step it has dispatched."""

    def __float__(self):
        raise KeyboardInterrupt


def test_an_interrupt_or_error_mid_step_keeps_every_step_computed(small, tmp_path, monkeypatch):
    """A Ctrl-C while step 3 computes saves its state as step 3 (the state's own count),
    and resuming from it gives the uninterrupted run; an error saves before it raises."""
    weights, style = small
    photos = data.Photos(data.default_photos(), size=24, batch_size=2, seed=0)
    whole = training.train_generator(
        style, _config(4), weights=weights, photos=photos, progress=False
    )
    compile_step = training.compile_step

    def interrupting(*args, **kwargs):
        step, calls = compile_step(*args, **kwargs), []

        def run(*a):
            state, metrics = step(*a)
            calls.append(1)
            return state, (
                {**metrics, "total": _InterruptWhenRead()} if len(calls) == 3 else metrics
            )

        return run

    monkeypatch.setattr(training, "compile_step", interrupting)
    model = tmp_path / "model"
    first = training.train_generator(
        style, _config(4), weights=weights, photos=photos, model_dir=model, progress=False
    )
    monkeypatch.undo()
    assert first.interrupted and first.step == 3 and checkpoint.latest_step(model) == 3
    assert int(first.state.step) == 3
    resumed = training.train_generator(
        style, _config(4), weights=weights, photos=photos, model_dir=model, progress=False
    )
    assert resumed.resumed == 3 and resumed.step == 4
    for a, b in zip(jax.tree.leaves(whole.state), jax.tree.leaves(resumed.state), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))

    def full_disk(step, image):
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        training.train_generator(
            style, _config(4), weights=weights, photos=photos, model_dir=tmp_path / "m2",
            progress=False, sample=style, save_every=2, on_sample=full_disk,
        )  # fmt: skip
    assert checkpoint.latest_step(tmp_path / "m2") == 2


def test_a_stop_signal_while_a_checkpoint_is_written_waits_for_it(small, tmp_path, monkeypatch):
    """Ctrl-C inside orbax's write of step 2: the write finishes, training stops there,
    and step 2 restores. Before, the signal cut the write short, step 2 was lost, and
    the save on the way out met its half-written folder and failed."""
    import orbax.checkpoint as ocp

    weights, style = small
    photos = data.Photos(data.default_photos(), size=24, batch_size=2, seed=0)
    save, finish, writing, raised = (
        checkpoint.save,
        ocp.CheckpointManager.wait_until_finished,
        [],
        [],
    )

    def saving(directory, step, *args):
        writing.append(step)
        return save(directory, step, *args)

    def interrupted_while_writing(self):
        if writing[-1] == 2 and not raised:
            raised.append(signal.raise_signal(signal.SIGINT))
        return finish(self)

    monkeypatch.setattr(checkpoint, "save", saving)
    monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", interrupted_while_writing)
    model = tmp_path / "model"
    trained = training.train_generator(
        style, _config(5), weights=weights, photos=photos, model_dir=model,
        checkpoint_every=1, progress=False,
    )  # fmt: skip
    monkeypatch.undo()
    assert trained.interrupted and trained.step == 2 and checkpoint.latest_step(model) == 2
    restored = checkpoint.restore(model, 2, jax.device_get(trained.state))
    for a, b in zip(jax.tree.leaves(trained.state), jax.tree.leaves(restored), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_the_last_two_checkpoints_are_kept(small, tmp_path):
    weights, style = small
    photos = data.Photos(data.default_photos(), size=24, batch_size=2, seed=0)
    model = tmp_path / "m"
    training.train_generator(style, _config(6), weights=weights, photos=photos,
                             model_dir=model, checkpoint_every=2, progress=False)  # fmt: skip
    steps = sorted(int(p.name) for p in model.iterdir() if p.name.isdigit())
    assert steps == [4, 6] and checkpoint.latest_step(model) == 6


# orbax's readers leave coroutines behind when a step's files are cut short.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_damaged_last_checkpoint_gives_way_to_the_one_before(small, tmp_path, capsys):
    """Step 4's files cut short, or its arrays not the ones saved (the record's hash):
    applying and resuming use step 2, kept for this, with a note; with every kept step
    damaged, one line says so. Before, a cut step 4 was "does not fit this generator",
    and changed arrays applied silently."""
    weights, style = small
    photos = data.Photos(data.default_photos(), size=24, batch_size=2, seed=0)
    model = tmp_path / "model"
    training.train_generator(style, _config(4), weights=weights, photos=photos,
                             model_dir=model, checkpoint_every=2, progress=False)  # fmt: skip
    shutil.copytree(model, tmp_path / "two")
    shutil.rmtree(tmp_path / "two" / "4")
    want = trained.load_generator(tmp_path / "two")[1]

    def cut(step_dir):
        for f in (step_dir / "state").rglob("ocdbt.process_0/d/*"):
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])

    def rehashed(step_dir):
        record = step_dir / "meta" / "metadata"
        record.write_text(json.dumps({**json.loads(record.read_text()), "arrays_sha256": "0"}))

    for damage, why in [
        (cut, "is damaged"),
        (rehashed, "is damaged: its arrays are not the ones saved"),
    ]:
        damaged = tmp_path / damage.__name__
        shutil.copytree(model, damaged)
        damage(damaged / "4")
        capsys.readouterr()
        _, variables, meta = trained.load_generator(damaged)
        assert meta["step"] == 2 and trained.variables_hash(variables) == trained.variables_hash(
            want
        )
        err = capsys.readouterr().err
        assert f"step 4 in {damaged} {why}" in err and "using step 2" in err, err
        resumed = training.train_generator(style, _config(4), weights=weights, photos=photos,
                                           model_dir=damaged, progress=False)  # fmt: skip
        assert resumed.resumed == 2 and resumed.step == 4
        err = capsys.readouterr().err
        assert "using step 2" in err and "the damaged one is removed" in err, err
        # Step 4 is written anew: the next load is its, with no note.
        assert trained.load_generator(damaged)[2]["step"] == 4
        assert "damaged" not in capsys.readouterr().err
    damaged = tmp_path / "cut"
    cut(damaged / "4")
    # In a process of its own, the command line's apply and a training resume: the notes,
    # and none of the tracebacks orbax's leftover readers of the damaged step print there
    # (some while the next step is read, the rest when they are finalised, later).
    np.save(tmp_path / "style.npy", style)
    resume = f"""
        import sys, numpy as np
        sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
        from nst_jax import cli, data
        from tests.test_feedforward import _config
        from nst_jax.tasks import train
        assert cli.execute(["nst-jax", "--mode", "apply", "--model", {str(damaged)!r},
                            "--demo", "--output", {str(tmp_path / "out.png")!r}]) == 0
        from tests.conftest import small_weights
        weights = small_weights.__wrapped__()  # The same random network as this test's.
        photos = data.Photos(data.default_photos(), size=24, batch_size=2, seed=0)
        done = train.train_generator(np.load({str(tmp_path / "style.npy")!r}), _config(6),
                                     weights=weights, photos=photos,
                                     model_dir={str(damaged)!r}, checkpoint_every=2,
                                     progress=False)
        print(done.resumed, done.step)
        """
    ran = subprocess.run([sys.executable, "-c", textwrap.dedent(resume)], capture_output=True,
                         text=True, timeout=300, check=False)  # fmt: skip
    assert ran.returncode == 0 and ran.stdout.split() == ["2", "6"], ran.stderr[-3000:]
    assert ran.stderr.count("using step 2") == 2, ran.stderr[-3000:]
    assert "Traceback" not in ran.stderr and "Exception ignored" not in ran.stderr, ran.stderr
    damaged = tmp_path / "rehashed"
    cut(damaged / "2")
    cut(damaged / "4")
    with pytest.raises(ValueError, match="step 4 in .* is damaged"):
        trained.load_generator(damaged)
    gc.collect()  # The coroutines orbax left behind go here, not in the next test.


def test_what_loading_holds_back_from_stderr_is_only_the_damaged_steps_noise(capfd):
    """Output while checkpoints load is passed on, errors or not, unless a damaged step
    was met; under a ``sys.stderr`` with no file behind it too."""
    import contextlib
    import io
    import os

    with checkpoint._held_stderr():
        os.write(2, b"kept\n")
    with pytest.raises(ValueError), checkpoint._held_stderr():
        os.write(2, b"kept too\n")
        raise ValueError("not damage")
    with checkpoint._held_stderr() as held:
        os.write(2, b"dropped\n")
        held.drop = True
    with contextlib.redirect_stderr(io.StringIO()), checkpoint._held_stderr():
        os.write(2, b"and under a redirect\n")
    err = capfd.readouterr().err  # (orbax threads of an earlier test may print here too)
    passed_on = ["kept\n", "kept too\n", "and under a redirect\n"]
    assert all(line in err for line in passed_on) and "dropped" not in err, err
    assert [err.index(line) for line in passed_on] == sorted(err.index(line) for line in passed_on)


def test_stop_signals_wait_for_the_step_in_flight():
    """A Ctrl-C inside ``_signals_deferred`` is raised as it ends, not inside it."""
    reached = []
    with pytest.raises(KeyboardInterrupt), signals.deferred():
        signal.raise_signal(signal.SIGINT)
        reached.append(True)
    assert reached == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_training_lowers_the_style_loss_of_held_out_photos(small):
    weights, style = small
    photos = data.Photos(data.default_photos(), size=24, batch_size=2, seed=0)
    config = _config(30, lr=0.05)
    trained = training.train_generator(
        style, config, weights=weights, photos=photos, progress=False
    )
    untrained = training.init_state(config)
    network = nst_jax.prepare(weights, nst_jax.NetConfig(convolution="direct"))
    targets = nst_jax.style_targets(network, style, SHALLOW, shape=(24, 24))
    held_out = jnp.asarray(
        np.stack([smooth_image(np.random.default_rng(i), 24, 24) for i in range(3)])
    )

    def style_of(x, y):  # y's style loss, as a stylisation of x.
        t = nst_jax.Targets(nst_jax.content_targets(network, x, SHALLOW), targets)
        return nst_jax.objective.loss_terms(network, y, t, SHALLOW).style

    def style_loss(params, images):
        def one(x):
            y = generator.apply({"params": params}, config.generator, x, jax.random.key(0))
            return style_of(x, y)

        return float(jax.jit(jax.vmap(one))(images).mean())

    after = style_loss(trained.state.params, held_out)
    assert after < 0.7 * style_loss(untrained.params, held_out)
    own = float(jax.jit(jax.vmap(lambda x: style_of(x, x)))(held_out).mean())
    assert after < own  # Lower than the photos' own style loss.


def test_batch_norm_trains_and_keeps_running_statistics(small):
    weights, style = small
    photos = data.Photos(data.default_photos(), size=24, batch_size=2, seed=0)
    config = _config(3).replace(generator=GeneratorConfig(**TINY, norm="batch"))
    start = training.init_state(config)
    trained = training.train_generator(
        style, config, weights=weights, photos=photos, progress=False
    )
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), start.batch_stats,
                         trained.state.batch_stats)  # fmt: skip
    assert min(jax.tree.leaves(moved)) > 0


def test_checkpoints_refuse_what_is_not_theirs(small, tmp_path):
    with pytest.raises(ValueError, match="no checkpoint"):
        trained.load_generator(tmp_path / "nothing")
    (tmp_path / "foreign" / "5").mkdir(parents=True)
    (tmp_path / "foreign" / "5" / "junk").write_text("x")
    with pytest.raises(ValueError, match="not a readable nst_jax checkpoint|holds no nst_jax"):
        trained.load_generator(tmp_path / "foreign")
    state = training.init_state(_config(2))
    checkpoint.save(tmp_path / "other", 1, jax.device_get(state), {"generator": {}})
    bigger = training.init_state(_config(2).replace(generator=GeneratorConfig(scales=3, width=6)))
    with pytest.raises(ValueError, match="does not fit this generator"):
        checkpoint.restore(tmp_path / "other", 1, bigger)


def test_a_format_1_checkpoint_still_applies_but_does_not_resume(small, tmp_path, monkeypatch):
    """Format 1's generators carried the biases normalisation cancels: they load as
    such (``legacy_biases``), and give what the same generator without them gives."""
    weights, style = small
    legacy = GeneratorConfig(**TINY, legacy_biases=True)
    config = _config(2).replace(generator=legacy)
    state = training.init_state(config)
    state = state._replace(params=_perturbed(state.params))
    recorded = {k: v for k, v in dataclasses.asdict(legacy).items() if k != "legacy_biases"}
    monkeypatch.setattr(checkpoint, "FORMAT", checkpoint.LEGACY_FORMAT)
    checkpoint.save(tmp_path / "old", 2, jax.device_get(state), {"generator": recorded, "step": 2})
    monkeypatch.undo()
    g, variables, meta = trained.load_generator(tmp_path / "old")
    assert g == legacy and meta["format"] == checkpoint.LEGACY_FORMAT
    content = smooth_image(np.random.default_rng(3), 30, 26)
    old = trained.apply_generator(variables, g, content, seeds=(0,))
    params = _named(variables["params"])
    without = GeneratorConfig(**TINY)
    like = generator.init(jax.random.key(0), without)["params"]
    kept = jax.tree.unflatten(jax.tree.structure(like), [params[n] for n in _named(like)])
    new = trained.apply_generator({"params": kept}, without, content, seeds=(0,))
    assert len(_named(like)) < len(params)
    assert float(np.abs(old - new).max()) < 1e-5
    assert float(np.abs(old - trained.apply_generator(variables, g, content[::-1])).max()) > 1e-3
    photos = data.Photos(data.default_photos(), size=24, batch_size=2, seed=0)
    with pytest.raises(ValueError, match="earlier format .* another --model folder"):
        training.train_generator(style, config, weights=weights, photos=photos,
                                 model_dir=tmp_path / "old", progress=False)  # fmt: skip


# The command line, on a small random VGG19 saved as a weights file.


@pytest.fixture(scope="module")
def files(tmp_path_factory, small_weights):
    root = tmp_path_factory.mktemp("ff")
    rng = np.random.default_rng(0)
    nst_jax.save_image(root / "style.png", smooth_image(rng, 48, 48))
    nst_jax.save_image(root / "photo.png", smooth_image(rng, 40, 52))
    (root / "photos").mkdir()
    for i in range(3):
        nst_jax.save_image(root / "photos" / f"p{i}.png", smooth_image(rng, 50, 60))
    (root / "photos" / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    params = jax.tree.map(np.asarray, small_weights.params)
    nst_jax.nets.weights.save_npz(root / "small.npz", params, nst_jax.CAFFE, "small")
    return root


def _cli(capsys, *args):
    capsys.readouterr()
    code = cli.execute(["nst-jax", *map(str, args), "--noprogress"])
    return code, capsys.readouterr().err


def test_train_and_apply_from_the_command_line(files, tmp_path, capsys, monkeypatch):
    model = tmp_path / "model"
    train = [
        "--mode", "train", "--style", files / "style.png", "--model", model,
        "--train_data", files / "photos", "--weights", files / "small.npz", "--size", "24",
        "--batch_size", "2", "--steps", "4", "--checkpoint_every", "2", "--save_every", "2",
        "--style_layers", "conv1_1,conv2_1", "--content_layers", "conv2_2",
        "--scales", "3", "--width", "4", "--tv_weight", "0.5", "--content", files / "photo.png",
    ]  # fmt: skip
    code, err = _cli(capsys, *train, "--report", tmp_path / "train.json")
    assert code == 0, err
    assert err.count("skipping training file") == 1 and "broken.jpg" in err
    report = json.loads((tmp_path / "train.json").read_text())
    assert report["steps_done"] == 4 and report["photos"] == 3 and len(report["history"]) == 4
    assert sorted(p.name for p in (model / "samples").iterdir()) == [
        "step000002.png", "step000004.png",
    ]  # fmt: skip
    assert checkpoint.latest_step(model) == 4
    recorded = checkpoint.read_meta(model)[1]["train"]  # Optimisation's objective, and flags.
    defaults = nst_jax.LossConfig()
    assert recorded["loss"]["style_norm"] == defaults.style_norm == "relative"
    assert recorded["loss"]["style_weight"] == 2 * defaults.style_weight == 8  # Training's β.
    assert recorded["loss"]["tv_weight"] == 0.5 and recorded["net"]["pooling"] == "max"
    assert recorded["style_scale"] == 2.0  # Sized for photos at twice the crops.
    shutil.rmtree(model / "4")  # As if stopped after step 2: the same command resumes.
    code, err = _cli(capsys, *train, "--report", tmp_path / "train.json")
    assert code == 0 and "trained to step 4/4" in err, err
    assert json.loads((tmp_path / "train.json").read_text())["resumed_from"] == 2
    # A given --style_weight reaches training, and a model of the default one refuses it.
    code, err = _cli(capsys, *train, "--style_weight", "4")
    assert code == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (  # After the broken photo's warning.
        f"error: {model} holds a checkpoint of other train settings (loss.style_weight: 8.0"
        " there, 4.0 now); train into another --model folder, or remove it"
    )
    out = tmp_path / "out.png"
    code, err = _cli(capsys, "--mode", "apply", "--model", model, "--content",
                     files / "photo.png", "--output", out, "--size", "45")  # fmt: skip
    assert code == 0, err
    assert nst_jax.load_image(out).shape == (35, 45, 3)
    assert nst_jax.read_settings(out)["trained_steps"] == 4
    grid = tmp_path / "grid.png"
    code, err = _cli(capsys, "--mode", "apply", "--model", model, "--content",
                     files / "photo.png", "--output", grid, "--inits", "3")  # fmt: skip
    assert code == 0, err
    assert nst_jax.load_image(grid).shape[1] > 3 * 52
    # A folder: one output per photo, the broken file skipped; the rerun skips them all.
    folder = ["--mode", "apply", "--model", model, "--content", files / "photos",
              "--output_dir", tmp_path / "styled"]  # fmt: skip
    code, err = _cli(capsys, *folder)
    manifest = json.loads((tmp_path / "styled" / "manifest.json").read_text())
    assert code == cli.SOME_FAILED and "skipping" in err and "broken.jpg" in err
    assert sorted(Path(d["output"]).name for d in manifest["done"]) == [
        "p0.png",
        "p1.png",
        "p2.png",
    ]
    # A folder's image is the one apply makes of it alone (the same seed).
    alone = tmp_path / "alone.png"
    code, err = _cli(capsys, "--mode", "apply", "--model", model, "--content",
                     files / "photos" / "p1.png", "--output", alone)  # fmt: skip
    by_folder = [Path(d["output"]) for d in manifest["done"] if "p1" in d["output"]][0]
    assert np.array_equal(nst_jax.load_image(alone), nst_jax.load_image(by_folder)), err
    code, err = _cli(capsys, *folder)
    manifest = json.loads((tmp_path / "styled" / "manifest.json").read_text())
    assert code == cli.SOME_FAILED and len(manifest["skipped"]) == 3 and not manifest["done"]
    # The same folder and step count, other arrays (retrained, say): nothing is done before.
    load = trained.load_generator

    def retrained(model_dir):
        g, variables, meta = load(model_dir)
        return g, {"params": _perturbed(variables["params"], size=0.01)}, meta

    monkeypatch.setattr(trained, "load_generator", retrained)
    code, err = _cli(capsys, *folder)
    monkeypatch.undo()
    manifest = json.loads((tmp_path / "styled" / "manifest.json").read_text())
    assert len(manifest["done"]) == 3 and not manifest["skipped"], err
    # A size too large fails each image before it is resized, and the job goes on.
    code, err = _cli(capsys, *folder, "--size", "60000", "--overwrite")
    manifest = json.loads((tmp_path / "styled" / "manifest.json").read_text())
    reasons = [f["reason"] for f in manifest["failed"] if "broken" not in f["input"]]
    assert code == cli.SOME_FAILED and not manifest["done"] and len(reasons) == 3, err
    assert all("above the limit of 100,000,000 pixels" in r for r in reasons), reasons
    for args, match in [
        (["--mode", "apply", "--model", tmp_path / "none", "--content", files / "photo.png"],
         "no checkpoint"),
        (["--mode", "apply", "--model", model, "--content", files / "photo.png",
          "--generator", "residual"], "holds a pyramid generator"),
        (["--mode", "apply", "--model", model], "give --content"),
        (["--mode", "apply", "--model", model, "--content", files / "photo.png", "--output",
          files / "photo.png"], "refusing to overwrite"),
        ([*train[:-2], "--norm", "batch"], "checkpoint of other generator"),
        ([*train[:4], "--model", tmp_path / "m2", "--train_data", tmp_path / "empty*"],
         "no training images"),
        (["--mode", "train", "--content", files / "photo.png"], "needs --model"),
        ([*train, "--style_scale", "inf"], "--style_scale must be positive and finite"),
        ([*train, "--style_scale", "1,2"], "takes one --style_scale"),
        ([*train, "--seed", "-1"], "seed must be in [0, 2^31)"),
        ([*train, "--report", files / "photo.png"], "--report must end in .json"),
        ([*folder, "--size", "8"], "--size must be at least 16"),
        ([*folder, "--report", tmp_path / "r.json"], "--report is for one content"),
        ([*folder, "--inits", "2"], "--inits is for one content"),
        ([*folder, "--crop", "32x32"], "--crop is for --mode stylize folder jobs"),
        (["--mode", "apply", "--model", model, "--content", files / "photo.png", "--seed",
          "-1"], "seed must be in [0, 2^31)"),
        (["--mode", "apply", "--model", model, "--content", files / "photo.png", "--inits",
          "0"], "--inits must be >= 1"),
        (["--mode", "apply", "--model", model, "--content", files, "--output", tmp_path / "o.png"],
         "a folder of contents takes --output_dir"),
        (["--mode", "apply", "--model", model, "--content", files / "photo.png", "--report",
          tmp_path], "--report must end in .json"),
        # Flags that do nothing in a mode (the colour, the optimiser) are refused.
        (["--mode", "apply", "--model", model, "--content", files / "photo.png",
          "--preserve_color", "luminance"], "--preserve_color does nothing in --mode apply"),
        ([*train, "--optimizer", "lbfgs"], "--optimizer does nothing in --mode train"),
        ([*train, "--inits", "2"], "--inits does nothing in --mode train"),
        ([*train, "--generator", "residual"], "--scales is for --generator pyramid"),
        # Sizes that would not fit are refused before anything is resized to them.
        (["--mode", "apply", "--model", model, "--content", files / "photo.png", "--size",
          "60000", "--output", out], "above the limit of 100,000,000 pixels"),
        ([*train, "--size", "100000"], "the largest size that fits"),
        ([*train, "--style_scale", "5000"], "(--style_scale 5000 x --size 24) will not fit"),
    ]:  # fmt: skip
        code, err = _cli(capsys, *args)
        last = err.strip().splitlines()[-1]
        assert code == 2 and last.startswith("error: ") and match in last, (args, err)
        assert "Traceback" not in err
    # A loss that overflows at once: exit 3, and no checkpoint to resume from, said so.
    overflowing = [*train, "--model", tmp_path / "m3", "--style_weight", "3e38"]
    code, err = _cli(capsys, *overflowing)
    last = err.strip().splitlines()[-1]
    assert code == cli.FAILED and last.startswith("stopped: the training loss became"), err
    assert last.endswith("no checkpoint was saved"), err


def test_a_texture_network_trains_and_applies_from_the_command_line(files, tmp_path, capsys):
    model = tmp_path / "texture"
    code, err = _cli(
        capsys, "--mode", "train", "--texture_net", "--style", files / "style.png",
        "--model", model, "--weights", files / "small.npz", "--size", "24", "--steps", "2",
        "--batch_size", "2", "--style_layers", "conv1_1,conv2_1", "--scales", "3", "--width", "4",
    )  # fmt: skip
    assert code == 0, err
    meta = checkpoint.read_meta(model)[1]
    assert meta["generator"]["texture"] and meta["train"]["loss"]["content_layers"] == []
    out = tmp_path / "texture.png"
    code, err = _cli(capsys, "--mode", "apply", "--model", model, "--output", out, "--size", "37")
    assert code == 0, err
    assert nst_jax.load_image(out).shape == (37, 37, 3)  # Any size: a square texture.
    code, err = _cli(capsys, "--mode", "apply", "--model", model, "--content",
                     files / "photo.png", "--output", tmp_path / "x.png")  # fmt: skip
    assert code == 2 and "texture network: it takes no --content" in err, err


def test_sigterm_saves_the_training_state(files, tmp_path):
    """A real SIGTERM to a training process: the state reached is checkpointed, the
    exit code is 128 + 15."""
    model = tmp_path / "model"
    train = [
        sys.executable, str(Path(__file__).resolve().parent.parent / "run.py"), "--mode",
        "train", "--style", str(files / "style.png"), "--model", str(model), "--train_data",
        str(files / "photos"), "--weights", str(files / "small.npz"), "--size", "24",
        "--batch_size", "2", "--checkpoint_every", "100000", "--save_every", "1",
        "--style_layers", "conv1_1,conv2_1", "--content_layers", "conv2_2", "--scales", "3",
        "--width", "4", "--noprogress", "--nocompilation_cache",
    ]  # fmt: skip
    proc = subprocess.Popen([*train, "--steps", "100000"], stderr=subprocess.PIPE, text=True)
    try:
        first = model / "samples" / "step000001.png"
        deadline = time.monotonic() + 240
        while not first.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert first.exists(), proc.stderr.read() if proc.poll() is not None else "timeout"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted at step" in err and "Traceback" not in err, err
    saved = checkpoint.latest_step(model)
    assert saved is not None and saved >= 1
    assert checkpoint.read_meta(model)[1]["step"] == saved


def test_real_weights_training_at_64px_lowers_the_loss(real_weights):
    _, style = nst_jax.demo_images()
    config = training.TrainConfig(steps=20, size=64, batch_size=2, warmup=2, lr=0.02,
                                  net=nst_jax.NetConfig(convolution="direct"))  # fmt: skip
    photos = data.Photos(data.default_photos(), size=64, batch_size=2, seed=0)
    result = training.train_generator(
        style, config, weights=real_weights, photos=photos, progress=False
    )
    first = np.mean([h["total"] for h in result.history[:3]])
    last = np.mean([h["total"] for h in result.history[-3:]])
    assert last < 0.7 * first, (first, last)


def test_training_shards_its_batch_over_devices():
    """Data parallel on 2 simulated devices: the same steps as on one, the batch sharded."""
    from .test_batch import _python

    out = _python(f"""
        import json, jax, numpy as np
        import nst_jax
        from nst_jax import data
        from nst_jax.nets.generator import GeneratorConfig
        from nst_jax.solve import placement
        from nst_jax.tasks import train as training
        from nst_jax.tasks import trained
        from tests.conftest import smooth_image
        weights = nst_jax.Weights(
            nst_jax.init_params(jax.random.key(0), widths={SMALL_WIDTHS}), nst_jax.CAFFE, "s"
        )
        loss = nst_jax.LossConfig(style_layers=("conv1_1", "conv2_1"), content_layers=("conv2_2",))
        config = training.TrainConfig(generator=GeneratorConfig(scales=3, width=4), loss=loss,
                                      steps=2, size=16, batch_size=2, warmup=1)
        style = smooth_image(np.random.default_rng(1), 40, 40)
        photos = data.Photos(data.default_photos(), size=16, batch_size=2, seed=0)
        place = placement.Placement(placement.mesh_of())
        runs = [training.train_generator(style, config, weights=weights, photos=photos,
                                         placement=p, progress=False) for p in (None, place)]
        totals = [np.array([h["total"] for h in r.history]) for r in runs]
        x = smooth_image(np.random.default_rng(2), 24, 32)
        images = [trained.apply_generator({{"params": jax.device_get(r.state.params)}},
                                           config.generator, x)[0] for r in runs]
        print(json.dumps({{
            "loss_gap": float(np.abs(totals[0] / totals[1] - 1).max()),
            "image_gap": float(np.abs(images[0] - images[1]).mean()),
            "devices": len(jax.tree.leaves(runs[1].state.params)[0].sharding.device_set),
        }}))
    """, devices=2)  # fmt: skip
    # Adam's first steps divide by tiny gradients, so float rounding in the sharded sums
    # moves a few parameters a little: compare losses and images, not parameters.
    assert out["devices"] == 2 and out["loss_gap"] < 1e-4 and out["image_gap"] < 1e-3, out


def test_a_loss_that_overflows_stops_training_and_keeps_the_checkpoint(small, tmp_path):
    weights, style = small
    photos = data.Photos(data.default_photos(), size=24, batch_size=2, seed=0)
    model = tmp_path / "model"
    training.train_generator(style, _config(2), weights=weights, photos=photos,
                             model_dir=model, progress=False)  # fmt: skip
    loss = dataclasses.replace(SHALLOW, style_weight=3e38)
    with pytest.raises(ValueError, match="checkpoint of other train settings"):
        training.train_generator(style, _config(4, loss=loss), weights=weights, photos=photos,
                                 model_dir=model, progress=False)  # fmt: skip
    result = training.train_generator(
        style, _config(4, loss=loss), weights=weights, photos=photos,
        model_dir=tmp_path / "m2", progress=False,
    )  # fmt: skip
    assert result.failure and "style" in result.failure and result.step == 0
    assert checkpoint.latest_step(tmp_path / "m2") is None  # Nothing non-finite is saved.
    assert checkpoint.latest_step(model) == 2
    # A loss that fits float32 with a gradient that does not: before, Adam's moment
    # overflowed and training went on with zero updates, saving nothing, silently.
    loss = dataclasses.replace(SHALLOW, style_weight=1e30)
    result = training.train_generator(
        style, _config(4, loss=loss), weights=weights, photos=photos,
        model_dir=tmp_path / "m3", progress=False,
    )  # fmt: skip
    assert result.step == 0 and "the gradient overflowed float32 (style weight" in result.failure


if __name__ == "__main__":
    write_generator_trees()
