"""``tasks/``: stylize, batches, style mixes, masks, colour, coarse to fine, texture,
inversion; small random networks throughout."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.color import rgb2yiq

import nst_jax
from nst_jax import Config, LossConfig, losses
from nst_jax.tasks.stylize import check_image

from .conftest import interrupted_at_call, shallow, smooth_image

LAYERS = ("conv1_1", "conv2_1", "conv3_1")


def _loss(**kw):
    return LossConfig(**{"style_layers": LAYERS, "content_layers": ("conv2_2",), **kw})


@pytest.fixture
def pair(rng):
    return smooth_image(rng, 32, 40), rng.random((36, 36, 3)).astype(np.float32)


def test_init_image_is_used(small_weights, pair):
    content, style = pair
    start = np.full_like(content, 0.5)
    cfg = Config(steps=1, lr=1e-6, loss=shallow())
    result = nst_jax.stylize(
        content, style, cfg, weights=small_weights, progress=False, init_image=start
    )
    np.testing.assert_allclose(result.image, start, atol=1e-4)
    with pytest.raises(ValueError, match="init_image shape"):
        nst_jax.stylize(
            content, style, cfg, weights=small_weights, progress=False, init_image=start[:20]
        )
    with pytest.raises(ValueError, match="content is 40x8; need at least 16 px"):
        nst_jax.stylize(content[:8], style, cfg, weights=small_weights, progress=False)


@pytest.mark.parametrize(
    "name", ["gram", "mmd_poly", "mmd_linear", "mmd_gauss", "meanstd", "histogram"]
)
def test_each_statistic_is_optimised(small_weights, pair, name):
    content, style = pair
    loss = shallow(
        style_loss=((name, 1.0),), mmd_samples=64, tv_weight=0.0, style_weight=1.0, content_weight=0
    )
    cfg = Config(steps=12, lr=0.05, loss=loss)
    result = nst_jax.stylize(content, style, cfg, weights=small_weights, progress=False)
    assert result.final["style"] < 0.8 * result.initial["style"], result.history["style"]


def test_sampled_polynomial_kernel_and_alpha_norm(small_weights, pair):
    content, style = pair
    # A polynomial kernel of degree 3 takes the sampled path and is still optimised; the
    # alpha-norm and TV^beta enter the total with their weights.
    loss = shallow(
        style_loss=(("mmd_poly", 1.0),),
        mmd_degree=3,
        mmd_c=1.0,
        mmd_samples=64,
        style_weight=1.0,
        tv_weight=2.0,
        tv_beta=1.5,
        alpha_norm_weight=3.0,
        alpha=4.0,
    )
    result = nst_jax.stylize(
        content, style, Config(steps=12, lr=0.05, loss=loss), weights=small_weights, progress=False
    )
    h = result.history
    assert result.final["style"] < 0.8 * result.initial["style"]
    assert h["alpha_norm"][0] > 0
    np.testing.assert_allclose(
        h["total"], h["content"] + h["style"] + 2.0 * h["tv"] + 3.0 * h["alpha_norm"], rtol=1e-5
    )


def test_texture_synthesis_from_style_alone(small_weights, rng):
    style = rng.random((30, 30, 3)).astype(np.float32)
    cfg = Config(steps=12, lr=0.02, loss=shallow(style_weight=1.0, tv_weight=0.0))
    result = nst_jax.synthesize(style, (20, 44), cfg, weights=small_weights, progress=False)
    assert result.image.shape == (20, 44, 3)  # Any shape, not the style's.
    assert np.all(result.history["content"] == 0.0)
    assert result.final["style"] < 0.5 * result.initial["style"]
    assert result.image.std() > 0.05  # Started from noise, not a blank canvas.
    with pytest.raises(ValueError, match="texture is 44x8"):
        nst_jax.synthesize(style, (8, 44), cfg, weights=small_weights, progress=False)


def test_progress_bars_are_named_by_what_runs(small_weights, rng, monkeypatch):
    """Texture, inversion and pyramid runs say which they are; off stays off. (The
    driver is replaced by a stand-in that records its ``progress`` and returns zeros.)"""
    from nst_jax.solve import driver

    names = []

    def stand_in(network, content, styles, config, *, progress, **kw):
        names.append(progress)
        zeros = {k: np.zeros(len(content)) for k in nst_jax.solve.HISTORY_KEYS}
        return driver.Result(np.zeros_like(content), {}, zeros, 0, 0.0, 0.0, False, zeros)

    monkeypatch.setattr(driver, "run", stand_in)
    image = smooth_image(rng, 32, 32)
    config = Config(steps=1)
    kw = dict(weights=small_weights)
    nst_jax.synthesize(image, (32, 32), config, **kw)
    nst_jax.invert(image, "pool2", config, **kw)
    nst_jax.stylize_pyramid(image, image, config, sizes=(16, 32), **kw)
    nst_jax.stylize(image, image, config, progress=False, **kw)
    assert names == ["texture", "invert pool2", "level 1/2, 16x16", "level 2/2, 32x32", False]


def test_vmap_over_style_mixes_equals_separate_runs(small_weights, rng, styles):
    content = smooth_image(rng, 24, 32)
    config = Config(loss=_loss(), steps=3)
    blends = np.array([[1.0, 0.0], [0.2, 0.8]], np.float32)
    batch = nst_jax.stylize_batch(
        content,
        list(styles),
        config,
        blends=blends,
        seeds=[0, 0],
        weights=small_weights,
        progress=False,
    )
    one = config.replace(loss=dict(style_blend=tuple(blends[1])))
    single = nst_jax.stylize(content, list(styles), one, weights=small_weights, progress=False)
    np.testing.assert_allclose(batch.image[1], single.image, atol=1e-4)
    assert np.abs(batch.image[0] - batch.image[1]).mean() > 1e-4
    with pytest.raises(ValueError, match="batch sizes disagree"):
        nst_jax.stylize_batch(content, styles[0], config, seeds=[1, 2], blends=blends[:1])


def test_each_region_moves_towards_its_own_style(small_weights, small_net, rng, styles):
    h, w = 32, 48
    content = smooth_image(rng, h, w)
    masks = np.zeros((2, h, w), np.float32)
    masks[0, :, : w // 2] = 1.0
    masks[1] = 1.0 - masks[0]
    loss = _loss(style_weight=1e3, content_weight=0.0, tv_weight=0.0)
    result = nst_jax.stylize(
        content,
        list(styles),
        Config(loss=loss, steps=80, stop_tol=0.0),
        content_masks=masks,
        weights=small_weights,
        progress=False,
    )
    assert result.final["style"] < 0.05 * result.initial["style"]
    network = small_net()
    features = jax.jit(lambda n, x: n.features(x, LAYERS))
    style_feats = [features(network, s) for s in styles]

    def distances(image):
        """[region, style]: Gram distances of the region to each style, summed over
        layers, as they are (``raw``) and relative to the style's Gram (``relative``)."""
        raw, relative = np.zeros((2, 2)), np.zeros((2, 2))
        feats = features(network, jnp.asarray(image))
        for layer in LAYERS:
            m = nst_jax.statistics.layer_masks(jnp.asarray(masks), layer)
            for s in range(2):
                g_style = losses.gram(style_feats[s][layer])
                for r in range(2):
                    g = losses.gram(feats[layer], mask=m[r])
                    d = float(jnp.sum(jnp.square(g - g_style)))
                    raw[r, s] += d
                    relative[r, s] += d / float(jnp.sum(jnp.square(g_style)))
        return raw, relative

    (_, before), (raw, after) = distances(content), distances(result.image)
    for r in range(2):
        # Each region moved to its own style, as the objective measures it (relative to
        # that style, the one the stripes' faint deeper layers make large),
        assert after[r, r] < 0.05 * before[r, r], (r, before, after)
        assert raw[r, r] < 0.75 * raw[r, 1 - r], (r, raw)  # and is nearer it than the other.
    with pytest.raises(ValueError, match="style masks need content masks"):
        nst_jax.stylize(
            content, list(styles), Config(steps=1), style_masks=[None, None], weights=small_weights
        )
    empty = np.zeros(styles[1].shape[:2], np.float32)  # Its targets would be zeros.
    with pytest.raises(ValueError, match="style mask 2 is empty"):
        nst_jax.stylize(content, list(styles), Config(steps=1), content_masks=masks,
                        style_masks=[None, empty], weights=small_weights)  # fmt: skip


def test_histogram_colour_preservation_recolours_the_style_first(small_weights, rng, styles):
    """``preserve_color="histogram"`` is the run on the style recoloured to the content's
    colours (``color.match_color``): the same targets, the same losses."""
    content = 0.25 + 0.5 * smooth_image(rng, 32, 40)
    config = Config(loss=_loss(), steps=2, preserve_color="histogram")
    run = functools.partial(nst_jax.stylize, weights=small_weights, progress=False)
    kept = run(content, styles[1], config)
    by_hand = run(content, nst_jax.color.match_color(styles[1], content),
                  dataclasses.replace(config, preserve_color="none"))  # fmt: skip
    plain = run(content, styles[1], dataclasses.replace(config, preserve_color="none"))
    np.testing.assert_allclose(kept.history["style"], by_hand.history["style"], rtol=1e-4)
    assert abs(kept.initial["style"] - plain.initial["style"]) > 1e-3 * plain.initial["style"]


def test_luminance_transfer_keeps_the_content_chroma(small_weights, rng, styles):
    content = 0.25 + 0.5 * smooth_image(rng, 32, 40)  # Away from the gamut's edges.
    # A gentle rate: the point is the chroma, and a bold one pushes pixels out of gamut.
    config = Config(loss=_loss(), steps=10, lr=0.03, preserve_color="luminance")
    seen = []
    result = nst_jax.stylize(
        content,
        styles[1],
        config,
        weights=small_weights,
        progress=False,
        callback=lambda step, image, losses: seen.append(image),
    )
    out, ref = rgb2yiq(result.image), rgb2yiq(content)
    np.testing.assert_allclose(out[..., 1:], ref[..., 1:], atol=2e-2)
    # Snapshots are in colour too.
    np.testing.assert_allclose(rgb2yiq(seen[-1])[..., 1:], ref[..., 1:], atol=2e-2)
    assert np.abs(out[..., 0] - ref[..., 0]).mean() > 1e-3  # The luminance did change.
    plain = nst_jax.stylize(
        content,
        styles[1],
        dataclasses.replace(config, preserve_color="none"),
        weights=small_weights,
        progress=False,
    )
    assert (
        np.abs(rgb2yiq(plain.image)[..., 1:] - ref[..., 1:]).mean()
        > np.abs(out[..., 1:] - ref[..., 1:]).mean()
    )


def test_pyramid_sizes():
    assert nst_jax.pyramid_sizes(512, levels=3) == [128, 256, 512]
    assert nst_jax.pyramid_sizes(1024, start_size=200) == [256, 512, 1024]
    assert nst_jax.pyramid_sizes(300) == [300]
    with pytest.raises(ValueError, match="below 16"):
        nst_jax.pyramid_sizes(64, levels=4)
    with pytest.raises(ValueError, match="above the output"):
        nst_jax.pyramid_sizes(64, start_size=100)


def test_pyramid_runs_coarse_to_fine(small_weights, rng, styles, monkeypatch):
    content = smooth_image(rng, 48, 64)
    config = Config(loss=_loss(), steps=6)
    results = nst_jax.stylize_pyramid(
        content,
        styles[1],
        config,
        sizes=[32, 64],
        level_steps=[8, 3],
        weights=small_weights,
        progress=False,
    )
    assert [r.image.shape for r in results] == [(24, 32, 3), (48, 64, 3)]
    assert [r.steps for r in results] == [8, 3]
    # The fine level starts from the upsampled coarse result, not from the content.
    single = nst_jax.stylize(
        content,
        nst_jax.resize_longest(styles[1], 64),
        dataclasses.replace(config, steps=3),
        weights=small_weights,
        progress=False,
    )
    assert results[1].initial["style"] < single.initial["style"]
    # Ctrl-C while the fine level sets up: the coarse level is kept, marked interrupted.
    monkeypatch.setattr(
        nst_jax.tasks.pyramid, "run", interrupted_at_call(nst_jax.tasks.pyramid.run, 2)
    )
    kept = nst_jax.stylize_pyramid(content, styles[1], config, sizes=[32, 64], level_steps=[8, 3],
                                   weights=small_weights, progress=False)  # fmt: skip
    assert len(kept) == 1 and kept[0].interrupted and kept[0].steps == 8
    assert np.array_equal(kept[0].image, results[0].image)


def test_stylize_checks_its_inputs():
    check = check_image
    check("content", np.zeros((16, 20, 3)))
    with pytest.raises(ValueError, match="must be \\[H, W, 3\\] RGB"):
        check("style", np.zeros((16, 20)))
    with pytest.raises(ValueError, match="must be in \\[0, 1\\], got values from 0 to 255"):
        check("content", np.linspace(0.0, 255.0, 16 * 20 * 3).reshape(16, 20, 3))
    check("content", np.full((16, 20, 3), np.nan))  # Non-finite: the run reports it.


def test_the_api_refuses_what_it_would_misread(small_weights, rng, styles, tmp_path):
    """Arrays and settings the library would otherwise take silently, and wrongly."""
    content = smooth_image(rng, 24, 32)
    config = Config(loss=_loss(), steps=1)
    run = functools.partial(nst_jax.stylize_batch, weights=small_weights, progress=False)
    with pytest.raises(ValueError, match="float pixels in \\[0, 1\\], got uint8"):
        nst_jax.stylize((content * 255).astype(np.uint8), styles[0], config, weights=small_weights)
    with pytest.raises(ValueError, match="style mixes must be >= 0, each with a positive sum"):
        run(content, list(styles), config, blends=[[1.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="style mixes must be >= 0"):
        run(content, list(styles), config, blends=[[1.5, -0.5]])
    with pytest.raises(ValueError, match="blends must be \\[B, 2\\]"):
        run(content, list(styles), config, seeds=[0, 1], blends=[1.0, 0.0])
    sweep = nst_jax.Terms(content=1.0, style=4.0, tv=0.01, alpha_norm=np.array([0.0, 100.0]))
    with pytest.raises(ValueError, match="sweep alpha_norm, but the config turns that term off"):
        run(content, styles[0], config, term_weights=sweep)
    with pytest.raises(ValueError, match="term weights must be finite and >= 0; style"):
        run(content, styles[0], config, term_weights=sweep._replace(style=np.array([1.0, -1.0])))
    two = run(content, styles[0], config, seeds=np.arange(2))  # NumPy seeds are seeds.
    assert two.image.shape == (2, 24, 32, 3)
    with pytest.raises(ValueError, match="a texture has no content"):
        nst_jax.synthesize(styles[0], (24, 32), config.replace(preserve_color="luminance"))
    network = nst_jax.prepare(small_weights)
    hist = _loss(style_loss=(("histogram", 1.0),))
    with pytest.raises(ValueError, match="masks work with gram, .* not histogram"):
        nst_jax.style_targets(
            network, [styles[0]], hist, shape=(24, 32), style_masks=[np.ones((32, 32))]
        )
    for bad in (dict(steps=2.5), dict(seed=1.5)):
        with pytest.raises(ValueError, match="must be an integer"):
            Config(**bad)
    with pytest.raises(ValueError, match="remat must be True or False"):
        nst_jax.NetConfig(remat="no")
    with pytest.raises(ValueError, match="mmd_degree must be an integer"):
        LossConfig(mmd_degree=2.5)
    assert LossConfig(content_layers="conv4_2").content_layers == ("conv4_2",)
    # Files: integer or non-finite pixels, a missing folder, a missing file.
    with pytest.raises(ValueError, match="must be float pixels"):
        nst_jax.save_image(tmp_path / "u.png", (content * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="non-finite pixels"):
        nst_jax.save_image(tmp_path / "n.png", np.full((4, 4, 3), np.nan, np.float32))
    with pytest.raises(FileNotFoundError, match="output folder does not exist"):
        nst_jax.save_image(tmp_path / "no" / "x.png", content)
    with pytest.raises(ValueError, match="image not found"):
        nst_jax.read_settings(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="must be \\[H, W, C\\]"):
        nst_jax.resize(content[..., 0], (12, 16))
    resized = nst_jax.resize(jax.numpy.asarray(content), (12, 16))
    np.testing.assert_allclose(resized, nst_jax.resize(content, (12, 16)))


def test_a_style_resized_for_a_small_level_keeps_16_px_a_side():
    """A wide style at a coarse pyramid level (or a small crop) is sized by its short
    side too: a 47x28 style for a 24 px level became 24x14 and was refused as too
    small, though the user gave 28 px."""
    from nst_jax.tasks.pyramid import scaled_side

    side = scaled_side(24, 1.0, (28, 47))
    assert min(nst_jax.image.resized_shape((28, 47), side)) == 16
    assert scaled_side(24, 1.0) == 24 and scaled_side(200, 0.5, (100, 100)) == 100


def test_pixels_take_any_float_and_a_resamplers_overshoot():
    """bfloat16 is float; a Lanczos resize's slight overshoot is still [0, 1] pixels."""
    from nst_jax.tasks.stylize import pixels

    half = pixels("content", jnp.full((20, 20, 3), 0.5, jnp.bfloat16))
    assert half.dtype == np.float32 and float(half.max()) == 0.5
    check_image("content", np.linspace(-0.01, 1.02, 20 * 20 * 3).reshape(20, 20, 3))
    same = np.full((4, 4, 3), 1.2, np.float32)
    assert nst_jax.resize(same, (4, 4)).max() == 1.0 and same.max() == np.float32(1.2)
