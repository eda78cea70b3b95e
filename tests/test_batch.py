"""``batch.py``: folders in, folders out; batches sharded over devices and split over
hosts. Devices are simulated (``--xla_force_host_platform_device_count``) in processes
of their own, and two processes on localhost stand in for two hosts."""

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

import nst_jax
from nst_jax import cli
from nst_jax.batch import Element, find_contents, plan_batches

from .conftest import SMALL_WIDTHS

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "run.py"


def test_batches_group_by_shape_pad_and_split_evenly():
    shapes = [(8, 8), (8, 12), None, (8, 8), (8, 8), (8, 12), (8, 8)]
    batches = plan_batches(shapes, 2, per_process=3)
    assert [b.shape for b in batches] == [(8, 8)] * 3 + [(8, 12)] * 2
    flat = [e for b in batches for e in b.elements if e is not None]
    assert sorted(flat) == sorted(Element(i, c) for i in (0, 1, 3, 4, 5, 6) for c in (0, 1))
    assert batches[2].elements[-1] is None  # 8 (8, 8) elements: padded to 9.
    # Two processes: the same batches each, every element exactly once between them.
    halves = [plan_batches(shapes, 2, per_process=2, processes=2, process=p) for p in (0, 1)]
    assert [b.shape for b in halves[0]] == [b.shape for b in halves[1]]
    both = [e for h in halves for b in h for e in b.elements if e is not None]
    assert sorted(both) == sorted(flat)
    todo = {Element(1, 0), Element(6, 1)}
    assert [b.elements for b in plan_batches(shapes, 2, per_process=2, todo=todo)] == [
        (Element(6, 1), None),
        (Element(1, 0), None),
    ]


def test_contents_load_at_the_shape_planned_from_their_headers(tmp_path):
    """Arrays (NumPy or JAX) are contents as they are; a file decoded at an aspect ratio
    its header did not give is refused, not squashed into the planned shape."""
    from nst_jax import batch

    x = np.random.default_rng(0).random((24, 40, 3)).astype(np.float32)
    assert batch.run_shape(jax.numpy.asarray(x), None, None) == (24, 40)
    np.testing.assert_allclose(batch._load(jax.numpy.asarray(x), (24, 40), False), x)
    path = nst_jax.save_image(tmp_path / "x.png", x)
    assert batch._load(path, batch.run_shape(path, 30, None), False).shape == (18, 30, 3)
    with pytest.raises(ValueError, match="decoded at 40x24, where its header says 24x40"):
        batch._load(path, (40, 24), False)


def test_a_cluster_is_a_slurm_step_of_several_tasks_or_a_tpu_pod(monkeypatch):
    for name in ("SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(name, raising=False)
    assert not nst_jax.hosts.in_cluster()
    monkeypatch.setenv("SLURM_NTASKS", "4")  # A shell in an salloc -n4: one process.
    assert not nst_jax.hosts.in_cluster()
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")  # srun -n4: four.
    assert nst_jax.hosts.in_cluster()
    monkeypatch.delenv("SLURM_STEP_NUM_TASKS")
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "w0,w1")
    assert nst_jax.hosts.in_cluster()


def test_processes_that_see_different_contents_are_refused(monkeypatch, tmp_path):
    """Each host reads the folder itself; where one could not read a file another could,
    or one refused the job, every process refuses, rather than split different lists or
    wait for the others. (A second process is played by what it sends.)"""
    from nst_jax import hosts

    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    mine, theirs = [(32, 40), (40, 32)], [(32, 40), None]  # b.png unreadable there.
    sent = []
    monkeypatch.setattr(hosts, "gathered", lambda v: (sent.append(v), v[None])[1])
    hosts.check_agreement(paths, theirs)  # What the other host sends; or, had it
    with pytest.raises(ValueError, match="no images found"):  # refused, this, as it
        hosts.agree(None, "no images found")  # raises its own error;
    for other, match in [(sent[0], "see different contents"), (sent[2], "another process")]:
        monkeypatch.setattr(hosts, "gathered", lambda v, other=other: np.stack([v, other]))
        with pytest.raises(ValueError, match=match):  # and so does this host.
            hosts.check_agreement(paths, mine)
    theirs_now = sent[:2]
    monkeypatch.setattr(hosts, "gathered", lambda v: np.stack([v, theirs_now.pop(0)]))
    hosts.check_agreement(paths, theirs)  # The same view on both: agreed.
    # A library caller that gives each process its own ``todo`` is refused too: they
    # would plan different batches.
    todo = {Element(0, 0), Element(1, 0)}
    monkeypatch.setattr(hosts, "gathered", lambda v: (sent.append(v), v[None])[1])
    hosts.check_agreement(paths, mine, todo)  # What the other host sends: two views.
    theirs_now = sent[-2:]
    monkeypatch.setattr(hosts, "gathered", lambda v: np.stack([v, theirs_now.pop(0)]))
    hosts.check_agreement(paths, mine, {(1, 0), (0, 0)})  # In any order or spelling.
    theirs_now = sent[-2:]
    monkeypatch.setattr(hosts, "gathered", lambda v: np.stack([v, theirs_now.pop(0)]))
    with pytest.raises(ValueError, match="given different elements to do"):
        hosts.check_agreement(paths, mine, {Element(0, 0)})


def test_contents_come_from_folders_globs_and_lists(tmp_path):
    for name in ("a.png", "sub/b.jpg", "sub/deeper/c.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        nst_jax.save_image(tmp_path / name, np.zeros((4, 4, 3), np.float32))
    (tmp_path / "notes.txt").write_text("sub/b.jpg\n# a comment\na.png\n")
    found, root = find_contents(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a.png",
        "sub/b.jpg",
        "sub/deeper/c.png",
    ]
    assert root == tmp_path
    found, root = find_contents(f"{tmp_path}/sub/**/*.png")
    assert [p.name for p in found] == ["c.png"] and root == tmp_path / "sub" / "deeper"
    found, _ = find_contents(f"{tmp_path}/*")  # Not notes.txt, nor the folder.
    assert [p.name for p in found] == ["a.png"]
    found, _ = find_contents(tmp_path / "notes.txt")
    assert [p.name for p in found] == ["a.png", "b.jpg"]
    with pytest.raises(ValueError, match="no images found"):
        find_contents(tmp_path / "nothing*.png")


def _python(code: str, devices: int = 4, timeout: int = 300) -> dict:
    """Runs ``code`` in a process of ``devices`` simulated CPU devices; its last line
    of output is JSON."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    env = {**os.environ, "XLA_FLAGS": flags.strip()}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_sharded_batches_equal_unsharded_and_separate_runs():
    """On 4 devices: a sharded batch equals the same batch on one device and each
    element run alone; its arrays really are sharded; a short batch's padding is
    dropped."""
    out = _python(f"""
        import json, jax, jax.numpy as jnp, numpy as np
        import nst_jax
        from nst_jax import Config, NetConfig
        from nst_jax.solve import driver, placement, programs, solver
        from tests.conftest import shallow
        weights = nst_jax.Weights(
            nst_jax.init_params(jax.random.key(0), widths={SMALL_WIDTHS}), nst_jax.CAFFE, "s"
        )
        config = Config(steps=3, loss=shallow(), net=NetConfig(convolution="direct"))
        rng = np.random.default_rng(0)
        contents = rng.random((3, 24, 32, 3)).astype(np.float32)
        style = rng.random((24, 24, 3)).astype(np.float32)
        big = nst_jax.resize_longest(style, 32)  # Styles run at the content's longest side.
        place = placement.Placement(placement.mesh_of())
        many = list(nst_jax.stylize_many(
            list(contents), style, config, weights=weights, placement=place, batch_size=4,
            progress=False,
        ))
        alone = [
            nst_jax.stylize(c, big, config.replace(seed=i), weights=weights, progress=False)
            for i, c in enumerate(contents)
        ]
        network = nst_jax.prepare(weights, config.net)
        keys = jnp.stack([jax.random.key(i) for i in range(4)])
        tw = nst_jax.Terms(*(jnp.broadcast_to(w, (4,)) for w in solver.term_weights_of(config)))
        batch = np.concatenate([contents, contents[:1]])
        plain = driver.run(network, batch, (big,), config, keys=keys, term_weights=tw,
                           progress=False)
        args = place.shared((network, (big,), None))
        args = (args[0], place.batched(batch), args[1], None, None, None, place.batched(keys))
        setup, step, _ = programs.compile_run(args, place.batched(tw), config, placement=place)
        targets, state = setup(*args)
        state, losses = step(args[0], targets, state, place.batched(tw))
        gap = lambda a, b: float(np.abs(a - b).max())
        print(json.dumps({{
            "elements": [list(o.element) for o in many],
            "many_vs_alone": max(gap(o.image, a.image) for o, a in zip(many, alone)),
            "plain_vs_alone": max(gap(plain.image[i], alone[i].image) for i in range(3)),
            "devices": len(state.image.sharding.device_set),
            "sharded": state.image.sharding.is_equivalent_to(place.batch, 4),
            "shard_rows": [s.data.shape[0] for s in state.image.addressable_shards],
        }}))
    """)
    assert out["elements"] == [[0, 0], [1, 0], [2, 0]]  # The padding element is dropped.
    assert out["many_vs_alone"] < 1e-4 and out["plain_vs_alone"] < 1e-4
    assert out["devices"] == 4 and out["sharded"] and out["shard_rows"] == [1, 1, 1, 1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Photos of two shapes in nested folders, one corrupt file, two styles, and a
    small random VGG19 as a weights file, so that jobs compile fast."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for name, shape in [("a.png", (30, 40)), ("b.jpg", (30, 40)), ("trip/c.png", (40, 30))]:
        (root / "photos" / name).parent.mkdir(parents=True, exist_ok=True)
        nst_jax.save_image(root / "photos" / name, rng.random((*shape, 3)).astype(np.float32))
    (root / "photos" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    nst_jax.save_image(root / "s1.png", rng.random((32, 32, 3)).astype(np.float32))
    nst_jax.save_image(root / "s2.png", (rng.random((32, 32, 3)) ** 3).astype(np.float32))
    params = jax.tree.map(np.asarray, nst_jax.init_params(jax.random.key(0), widths=SMALL_WIDTHS))
    nst_jax.nets.weights.save_npz(root / "small.npz", params, nst_jax.CAFFE, "small")
    return root


def _job(folder, out, *extra):
    return [
        "--content", folder / "photos", "--style", f"{folder / 's1.png'},{folder / 's2.png'}",
        "--output_dir", out, "--size", "32", "--steps", "3", "--weights", folder / "small.npz",
        "--style_layers", "conv1_1,conv2_1", "--content_layers", "conv2_2", *extra,
    ]  # fmt: skip


def _cli(capsys, *args):
    capsys.readouterr()
    code = cli.execute(["nst-jax", *map(str, args), "--noprogress"])
    return code, capsys.readouterr().err


def test_a_folder_job_skips_a_bad_file_resumes_and_overwrites(folder, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _cli(capsys, *_job(folder, out))
    assert code == cli.SOME_FAILED, err
    assert err.count("warning: skipping") == 1 and "broken.png" in err
    manifest = json.loads((out / "manifest.json").read_text())
    names = sorted(Path(d["output"]).relative_to(out).as_posix() for d in manifest["done"])
    assert names == [f"{n}.{s}.png" for n in ("a", "b", "trip/c") for s in ("s1", "s2")]
    assert [Path(f["input"]).name for f in manifest["failed"]] == ["broken.png"] * 2
    assert "not a readable image" in manifest["failed"][0]["reason"]
    settings = nst_jax.read_settings(out / "trip" / "c.s2.png")
    assert settings["step"] == 3 and settings["blend"] == [0.0, 1.0]
    assert Image.open(out / "trip" / "c.s2.png").size == (24, 32)
    # The same command again: nothing left, nothing compiled.
    code, err = _cli(capsys, *_job(folder, out))
    again = json.loads((out / "manifest.json").read_text())
    assert code == cli.SOME_FAILED and not again["done"] and len(again["skipped"]) == 6
    assert again["programs_compiled"] == 0
    # From another folder, the paths spelt relative to it: still nothing left.
    os.chdir(folder)
    try:
        code, err = _cli(capsys, *_job(Path("."), os.path.relpath(out, folder)))
    finally:
        os.chdir(ROOT)
    assert len(json.loads((out / "manifest.json").read_text())["skipped"]) == 6, err
    # --steps 0 completes at the start: each output is written, as a single run's is.
    code, err = _cli(capsys, *_job(folder, tmp_path / "zero", "--steps", "0"))
    assert nst_jax.read_settings(tmp_path / "zero" / "a.s1.png")["complete"] is True, err
    # Ended by the stopping rule before --steps: done, and not done again.
    early = _job(
        folder, tmp_path / "early", "--steps", "60", "--stop_tol", "0.9", "--stop_window", "2"
    )
    code, err = _cli(capsys, *early)
    assert code == cli.SOME_FAILED, err
    settings = nst_jax.read_settings(tmp_path / "early" / "a.s1.png")
    assert settings["step"] < 60 and settings["complete"] is True
    code, err = _cli(capsys, *early)
    again = json.loads((tmp_path / "early" / "manifest.json").read_text())
    assert not again["done"] and len(again["skipped"]) == 6 and again["programs_compiled"] == 0
    # Other settings are other outputs' settings: redone; so is --overwrite.
    code, _ = _cli(capsys, *_job(folder, out, "--style_weight", "0.02"))
    assert len(json.loads((out / "manifest.json").read_text())["done"]) == 6
    code, _ = _cli(capsys, *_job(folder, out, "--style_weight", "0.02", "--overwrite"))
    assert len(json.loads((out / "manifest.json").read_text())["done"]) == 6


def test_a_ctrl_c_while_saving_keeps_the_batchs_outcomes_and_starts_no_more(
    folder, tmp_path, capsys, monkeypatch
):
    """A SIGINT during the first save of a batch of two: both of its images are saved
    and recorded, no other batch runs, and the rerun does only what is left."""
    from nst_jax import folders

    saved = []

    def save_and_signal(path, image, **kw):
        if not saved:
            signal.raise_signal(signal.SIGINT)
        saved.append(path)
        return nst_jax.save_image(path, image, **kw)

    monkeypatch.setattr(folders, "save_image", save_and_signal)
    out = tmp_path / "out"
    code, err = _cli(capsys, *_job(folder, out, "--batch_size", "2"))
    assert code == 128 + signal.SIGINT, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["interrupted"] and len(saved) == len(manifest["done"]) == 2
    assert all(Path(d["output"]).is_file() for d in manifest["done"])
    monkeypatch.setattr(folders, "save_image", nst_jax.save_image)
    code, err = _cli(capsys, *_job(folder, out, "--batch_size", "2"))
    again = json.loads((out / "manifest.json").read_text())
    assert len(again["skipped"]) == 2 and len(again["done"]) == 4, err


def test_blends_are_columns_that_equal_separate_runs(folder, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _cli(capsys, *_job(folder, out, "--blends", "1,0;0.3,0.7", "--crop", "24x16"))
    assert code == cli.SOME_FAILED, err
    blended = np.asarray(Image.open(out / "a.blend-0.3-0.7.png"), np.float32) / 255
    assert blended.shape == (16, 24, 3)
    content = nst_jax.load_image(folder / "photos" / "a.png")
    cropped = nst_jax.batch.crop_to(content, (16, 24))
    style = [nst_jax.load_image(folder / s) for s in ("s1.png", "s2.png")]
    config = nst_jax.Config(
        steps=3,
        loss=nst_jax.LossConfig(
            style_layers=("conv1_1", "conv2_1"), content_layers=("conv2_2",), style_blend=(0.3, 0.7)
        ),
    )
    weights = nst_jax.load_weights(folder / "small.npz")
    expected = nst_jax.stylize(
        cropped,
        [nst_jax.resize_longest(s, 24) for s in style],
        config,
        weights=weights,
        progress=False,
    )
    assert np.abs(blended - expected.image).max() <= 1.5 / 255


def test_folder_flags_that_make_no_sense_are_refused(folder, tmp_path, capsys):
    out = tmp_path / "out"
    for extra, match in [
        (["--save_every", "2"], "--save_every is for one content"),
        (["--blends", "1,x"], "bad --blends"),
        (["--blends", "1,0,0"], "needs 2 finite weights"),
        (["--crop", "12"], "bad --crop"),
        (["--crop", "8x8"], "--crop must be at least 16x16"),
        (["--size", "8"], "--size must be at least 16"),
        (["--style_scale", "0"], "style_scale needs one positive value"),
        (["--style_blend", "1,2,3"], "one weight per --style image: 3 for 2"),
        (["--batch_size", "3", "--devices", "1"], None),
    ]:
        code, err = _cli(capsys, *_job(folder, out, *extra))
        if match is None:
            assert code == cli.SOME_FAILED, err
            continue
        assert code == 2 and err.strip().startswith("error: ") and match in err, err
    one_style = _job(folder, folder / "photos")
    one_style[3] = folder / "s1.png"  # One style: outputs named as the inputs are.
    code, err = _cli(capsys, *one_style)
    assert code == 2 and "is an input file" in err, err
    # Two styles of one name label their outputs alike: refused, nothing overwritten.
    (tmp_path / "other").mkdir()
    shutil.copy(folder / "s1.png", tmp_path / "other" / "s1.png")
    same_names = _job(folder, out)
    same_names[3] = f"{folder / 's1.png'},{tmp_path / 'other' / 's1.png'}"
    code, err = _cli(capsys, *same_names)
    assert code == 2 and "share the name 's1', which labels their outputs" in err, err
    # A file of the user's where an output would go is not replaced without --overwrite.
    Image.new("RGB", (4, 4)).save(out / "a.s1.png")
    code, err = _cli(capsys, *_job(folder, out))
    assert code == 2 and "is not an nst_jax output" in err, err
    assert Image.open(out / "a.s1.png").size == (4, 4)


def test_planning_refuses_what_would_lose_a_file_or_fail_after_compute(tmp_path):
    """Checked before any compute: a manifest that is not nst_jax's, a file where a
    folder of outputs goes; a link is named as the user sees it; a link loop among the
    contents is a content that will fail, not a crash; an output folder that is the
    contents folder does not read its own outputs as contents."""
    from nst_jax.folders import plan_outputs

    photos, out = tmp_path / "photos", tmp_path / "out"
    (photos / "sub").mkdir(parents=True)
    x = np.zeros((20, 20, 3), np.float32)
    for name in ("a.jpg", "sub/b.png", "sub/longername.png"):
        nst_jax.save_image(photos / name, x)
    (photos / "x.png").symlink_to(photos / "sub" / "longername.png")
    (photos / "loop.png").symlink_to("loop.png")
    listed = tmp_path / "list.txt"
    listed.write_text("photos/a.jpg\nphotos/loop.png\n")
    out.mkdir()
    (out / "manifest.json").write_text('{"precious": true}')
    with pytest.raises(ValueError, match="manifest.json exists and is not an nst_jax manifest"):
        plan_outputs(str(photos), out, [""])
    (out / "manifest.json").write_text('{"done": [], "failed": [], "interrupted": false}')
    (out / "sub").write_text("a file")
    with pytest.raises(ValueError, match="sub is a file, where a folder of outputs goes"):
        plan_outputs(str(photos), out, [""])
    (out / "sub").unlink()
    (out / "sub").symlink_to(tmp_path / "nowhere")  # A dangling link: no folder either.
    with pytest.raises(ValueError, match="sub is a file, where a folder of outputs goes"):
        plan_outputs(str(photos), out, [""])
    (out / "sub").unlink()
    # What a killed run's atomic writes left is cleared; what is not theirs stays.
    stale = [out / ".a.png.k3x_9qz0", out / ".manifest.json.abcdefgh"]
    kept = [out / ".a.png.notours", out / ".other.png.abcdefgh", out / ".a.png.20240517"]
    for path in stale + kept:
        path.write_text("")
        path.chmod(0o600)  # As mkstemp makes them.
        os.utime(path, (time.time() - 3600,) * 2)  # Untouched for an hour.
    (out / ".a.png.20240517").chmod(0o644)  # A user's: not mkstemp's mode.
    (out / ".a.png.livewrit").write_text("")  # Another job's write in progress.
    (out / ".a.png.livewrit").chmod(0o600)
    kept.append(out / ".a.png.livewrit")
    sources, _, paths = plan_outputs(str(photos), out, [""])
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    names = sorted(p.relative_to(out).as_posix() for p in paths.values())
    assert names == ["a.png", "sub/b.png", "sub/longername.png", "x.png"]  # No loop: not a file.
    sources, _, paths = plan_outputs(str(listed), out, [""])
    assert [p.name for p in sources] == ["a.jpg", "loop.png"]
    # Outputs among the contents: a rerun plans the same, not outputs of outputs.
    jpgs = tmp_path / "jpgs"
    jpgs.mkdir()
    nst_jax.save_image(jpgs / "c.jpg", x)
    nst_jax.save_image(jpgs / "c.png", x, settings={"mode": "stylize"})  # An earlier output.
    sources, _, paths = plan_outputs(str(jpgs), jpgs, [""])
    assert [p.name for p in sources] == ["c.jpg"] and list(paths.values()) == [jpgs / "c.png"]
    (jpgs / "list.txt").write_text("c.png\n")  # Named one by one: an output is a content.
    sources, _, _ = plan_outputs(str(jpgs / "list.txt"), tmp_path / "elsewhere", ["s"])
    assert [p.name for p in sources] == ["c.png"]
    sources, _, _ = plan_outputs(str(jpgs / "list.txt"), jpgs, ["s"])
    assert [p.name for p in sources] == ["c.png"]


def test_an_output_folder_inside_the_contents_is_not_read_as_contents(folder, tmp_path, capsys):
    photos = tmp_path / "photos"
    shutil.copytree(folder / "photos", photos)
    job = _job(folder, photos / "styled")
    job[1] = photos
    code, err = _cli(capsys, *job)
    manifest = json.loads((photos / "styled" / "manifest.json").read_text())
    assert code == cli.SOME_FAILED and len(manifest["done"]) == 6, err
    code, err = _cli(capsys, *job)  # The outputs are not new contents: all done before.
    manifest = json.loads((photos / "styled" / "manifest.json").read_text())
    assert code == cli.SOME_FAILED and len(manifest["skipped"]) == 6 and not manifest["done"], err
    # A glob that matches the earlier outputs too: they do not move the outputs' root.
    shutil.rmtree(photos / "styled")
    job = _job(folder, photos / "out")
    job[1] = f"{photos}/*/*.png"  # trip/c.png now; out/c.s1.png, out/c.s2.png next time.
    for run in range(2):
        code, err = _cli(capsys, *job)
        manifest = json.loads((photos / "out" / "manifest.json").read_text())
        assert code == 0 and len(manifest["skipped" if run else "done"]) == 2, err
    assert sorted(p.name for p in (photos / "out").glob("*.png")) == ["c.s1.png", "c.s2.png"]


def _two_processes(program: Path, args: list, port: int) -> tuple[list, list]:
    """``program ARGS`` as the two processes of one jax.distributed job on localhost:
    ``(return codes, (stdout, stderr) each)``."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(program),
                *map(str, args),
                "--noprogress",
                "--distributed",
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num_processes",
                "2",
                "--process_id",
                str(p),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for p in (0, 1)
    ]
    try:
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    return [p.returncode for p in procs], results


def test_two_processes_split_a_folder(folder, tmp_path):
    """Two hosts, played by two processes on localhost (jax.distributed, gloo): each
    writes its own share; every file is stylised exactly once; the manifests agree."""
    out = tmp_path / "out"
    codes, results = _two_processes(RUN, _job(folder, out), 12300 + os.getpid() % 500)
    assert codes == [cli.SOME_FAILED, 0], results
    manifests = [json.loads((out / f"manifest-{p}-of-2.json").read_text()) for p in (0, 1)]
    done = [d["output"] for m in manifests for d in m["done"]]
    assert len(done) == len(set(done)) == 6  # Every output once.
    assert all(len(m["done"]) == 3 for m in manifests)  # In even shares.
    assert manifests[0]["settings"] == manifests[1]["settings"]
    assert [m["process"] for m in manifests] == [0, 1]


def test_processes_stopped_at_different_moments_stop_together(folder, tmp_path):
    """A signal lands on each host at another moment: here SIGTERM on process 0 while it
    compiles its first batch, SIGINT on process 1 while it saves that batch. Each records it
    and they act on it together, at a sync where they agree: both stop at the same step
    and exit 130. Before, one stopped alone and the other waited for it for good."""
    program = tmp_path / "stopped.py"
    program.write_text(
        textwrap.dedent(f"""
        import signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        import nst_jax
        from nst_jax import cli, folders
        from nst_jax.solve import driver

        if sys.argv[sys.argv.index("--process_id") + 1] == "0":
            compile_run = driver.programs.compile_run

            def signalled(*args, **kwargs):
                signal.raise_signal(signal.SIGTERM)
                return compile_run(*args, **kwargs)

            driver.programs.compile_run = signalled
        else:
            saved = []

            def save(path, image, **kw):
                if not saved:
                    signal.raise_signal(signal.SIGINT)
                saved.append(path)
                return nst_jax.save_image(path, image, **kw)

            folders.save_image = save
        cli.run()
        """)
    )
    out = tmp_path / "out"
    args = _job(folder, out, "--batch_size", "2", "--steps", "30")
    codes, results = _two_processes(program, args, 12800 + os.getpid() % 500)
    assert codes == [128 + signal.SIGTERM, 128 + signal.SIGINT], results  # Each its own.
    manifests = [json.loads((out / f"manifest-{p}-of-2.json").read_text()) for p in (0, 1)]
    assert all(m["interrupted"] for m in manifests)
    stopped = [f["reason"] for m in manifests for f in m["failed"] if "interrupted" in f["reason"]]
    assert len(stopped) == 2 and len(set(stopped)) == 1, stopped  # At one step, both.


def test_processes_whose_images_settle_at_different_steps_stop_together(folder, tmp_path):
    """L-BFGS's step reduces over the whole batch, across processes, so they must run
    the same steps: the stopping rule is agreed at each sync. Before, the process whose
    images settled first left the other in a collective alone (gloo aborted both)."""
    out = tmp_path / "out"
    args = _job(folder, out, "--batch_size", "2", "--optimizer", "lbfgs", "--steps", "200",
                "--stop_window", "5", "--stop_tol", "0.02")  # fmt: skip
    codes, results = _two_processes(RUN, args, 13300 + os.getpid() % 500)
    assert codes == [cli.SOME_FAILED, 0], results  # broken.png, process 0's share.
    manifests = [json.loads((out / f"manifest-{p}-of-2.json").read_text()) for p in (0, 1)]
    assert sum(len(m["done"]) for m in manifests) == 6


def test_a_non_finite_loss_on_one_process_fails_that_batch_not_the_job(folder, tmp_path):
    """Process 0's first batch overflows: both processes stop that batch at the same
    sync (process 1's images fail with it, to be redone), and go on to the next; no
    process reports a signal that never came."""
    program = tmp_path / "overflow.py"
    program.write_text(
        textwrap.dedent(f"""
        import sys
        import numpy as np
        sys.path.insert(0, {str(ROOT)!r})
        from nst_jax import cli
        from nst_jax.solve import placement

        if sys.argv[sys.argv.index("--process_id") + 1] == "0":
            local, seen = placement.Placement.local, []

            def overflowing(self, x):
                a = local(self, x)
                if a.ndim == 2 and a.shape[-1] == 5:  # A step's [B, 5] losses.
                    seen.append(1)
                    if len(seen) == 2:
                        return np.full_like(a, np.inf)
                return a

            placement.Placement.local = overflowing
        cli.run()
        """)
    )
    out = tmp_path / "out"
    args = _job(folder, out, "--batch_size", "2")
    codes, results = _two_processes(program, args, 13800 + os.getpid() % 500)
    assert codes == [cli.SOME_FAILED] * 2, results
    manifests = [json.loads((out / f"manifest-{p}-of-2.json").read_text()) for p in (0, 1)]
    assert not any(m["interrupted"] for m in manifests)
    reasons = [f["reason"] for f in manifests[1]["failed"]]
    assert any("another process's images left float32" in r for r in reasons), reasons
    assert sum(len(m["done"]) for m in manifests) == 4  # The other batches ran.


# Where one process fails alone, and how: (process, patched attribute, replacement source).
FAILURES = {
    # ``stylize_many``'s memory plan refuses its second batch.
    "plan": (
        0,
        "policy.plan",
        """
        def failing(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise ValueError("memory: this batch will not fit")
            return original(*args, **kwargs)""",
    ),
    # The driver's compiled-step check refuses the second batch's program.
    "compile": (
        1,
        "driver.programs.compile_run",
        """
        def failing(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise ValueError("memory: the compiled step will not fit")
            return original(*args, **kwargs)""",
    ),
    # A step runs out of device memory on the first batch's second chunk.
    "step": (
        0,
        "placement.Placement.local",
        """
        def failing(self, x):
            if x.ndim == 2 and x.shape[-1] == 5:  # A step's [B, 5] losses.
                calls.append(1)
                if len(calls) == 2:
                    raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory")
            return original(self, x)""",
    ),
    # Setting up the second batch runs out of device memory.
    "setup": (
        0,
        "driver.programs.compile_run",
        """
        def failing(*args, **kwargs):
            calls.append(1)
            setup, step, losses_at = original(*args, **kwargs)
            if len(calls) < 2:
                return setup, step, losses_at

            def failing_setup(*a):
                raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory")

            return failing_setup, step, losses_at""",
    ),
    # The weights cannot be fetched on one host.
    "weights": (
        1,
        "folders.load_weights",
        """
        def failing(*args, **kwargs):
            raise OSError("the weights could not be fetched")""",
    ),
    # The disk fills while the first batch is saved.
    "save": (
        1,
        "folders.save_image",
        """
        def failing(*args, **kwargs):
            raise OSError(28, "No space left on device")""",
    ),
}


@pytest.mark.parametrize("where", FAILURES)
def test_an_error_on_one_process_stops_every_process(folder, tmp_path, where):
    """An error on one host (not a signal) stops the job on every host at the point
    where they agree, each with one line: the failed one its own error, the others
    that another process failed. Before, the others waited for it in their next
    collective, and the failed one waited for them in its exit, for good."""
    process, name, replacement = FAILURES[where]
    owner, attribute = name.rsplit(".", 1)
    program = tmp_path / "failing.py"
    program.write_text(
        textwrap.dedent(f"""
        import sys
        import jax
        sys.path.insert(0, {str(ROOT)!r})
        from nst_jax import cli, folders
        from nst_jax.solve import driver, placement
        from nst_jax.tasks import policy

        if sys.argv[sys.argv.index("--process_id") + 1] == "{process}":
            original, calls = {name}, []
        """)
        + textwrap.indent(textwrap.dedent(replacement), "    ")
        + f"\n    {owner}.{attribute} = failing\ncli.run()\n"
    )
    out = tmp_path / "out"
    port = 14300 + 500 * list(FAILURES).index(where) + os.getpid() % 500
    codes, results = _two_processes(program, _job(folder, out, "--batch_size", "2"), port)
    errors = [err.strip().splitlines()[-1] for _, err in results]
    assert "Traceback" not in "".join(err for _, err in results), results
    assert codes[1 - process] == cli.USAGE and "another process" in errors[1 - process], results
    own = {"plan": "will not fit", "compile": "will not fit", "step": "out of device memory",
           "setup": "out of device memory", "weights": "could not be fetched",
           "save": "No space left"}[where]  # fmt: skip
    assert codes[process] != 0 and own in errors[process], results


def test_a_signal_saves_the_batch_in_flight_and_the_manifest(folder, tmp_path):
    """SIGTERM once the first batch is stepping (its progress bar says so)."""
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, str(RUN), *map(str, _job(folder, out, "--steps", "100000"))],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        seen, deadline = b"", time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if select.select([proc.stderr], [], [], 1.0)[0]:
                seen += os.read(proc.stderr.fileno(), 4096)
            if re.search(rb"batch 1/\d+.*?\| *[1-9]\d*/100000", seen):
                break
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)[1], None
        err = (seen + rest).decode(errors="replace")
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["interrupted"] and "Traceback" not in err
    stopped = [f for f in manifest["failed"] if f["reason"].startswith("interrupted at step")]
    assert stopped and all(Path(f["output"]).is_file() for f in stopped)  # Work kept.


def test_polled_signals_are_recorded_nested_and_ignored_ones_stay_ignored():
    """``signals.polled``: a stop signal inside is recorded, not raised, and an inner
    block shares the outer one's record; a signal set to be ignored stays ignored; the
    handlers come back after."""
    from nst_jax import signals

    before = signal.getsignal(signal.SIGINT)
    hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with signals.polled():
            signal.raise_signal(signal.SIGHUP)  # Ignored, as it was set.
            assert not signals.requested()
            with signals.polled():
                signal.raise_signal(signal.SIGTERM)
            assert signals.requested() and signals.last_recorded() == signal.SIGTERM
        assert not signals.requested() and signal.getsignal(signal.SIGINT) is before
    finally:
        signal.signal(signal.SIGHUP, hup)
        signals.forget()
    assert signals.last_recorded() is None
