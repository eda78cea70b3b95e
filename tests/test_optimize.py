import jax
import numpy as np
import pytest

import nst_jax
from nst_jax import conv, memory, optimize
from nst_jax.objective import LossConfig

from .conftest import SMALL_WIDTHS, smooth_image

LOSS = LossConfig(widths=SMALL_WIDTHS, style_weight=1.0, tv_weight=0.0)


def _config(**kw):
    return nst_jax.Config(loss=kw.pop("loss", LOSS), **kw)


@pytest.fixture
def pair(rng):
    return smooth_image(rng, 32, 40), rng.random((36, 36, 3)).astype(np.float32)


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_losses_fall_and_image_stays_in_range(small_weights, pair, optimizer):
    content, style = pair
    cfg = _config(steps=15, optimizer=optimizer, lr=0.05)
    result = nst_jax.stylize(content, style, cfg, weights=small_weights, progress=False)
    assert result.steps == 15 and len(result.history["total"]) == 15
    assert result.final["total"] < 0.5 * result.initial["total"]
    assert result.final["style"] < result.initial["style"]
    assert result.image.shape == content.shape
    assert 0.0 <= result.image.min() and result.image.max() <= 1.0
    assert not np.allclose(result.image, content)
    assert result.seconds_per_step > 0 and result.compile_seconds > 0


def test_history_starts_at_the_content(small_weights, pair):
    content, style = pair
    result = nst_jax.stylize(
        content, style, _config(steps=3, optimizer="adam"), weights=small_weights, progress=False
    )
    assert result.history["content"][0] == pytest.approx(0.0, abs=1e-6)
    assert result.history["content"][-1] > 0.0
    w = LOSS
    expected = (
        w.content_weight * result.history["content"]
        + w.style_weight * result.history["style"]
        + w.tv_weight * result.history["tv"]
    )
    np.testing.assert_allclose(result.history["total"], expected, rtol=1e-5)


def test_vmap_over_contents_equals_separate_runs(small_weights, rng):
    contents = np.stack([smooth_image(rng, 24, 24), smooth_image(rng, 24, 24)])
    style = rng.random((24, 24, 3)).astype(np.float32)
    keys = jax.random.split(jax.random.key(0), 2)
    for optimizer in ("adam", "lbfgs"):
        cfg = _config(steps=5, optimizer=optimizer)

        def run(content, key, cfg=cfg):
            return nst_jax.transfer(
                small_weights.params,
                content,
                style,
                cfg,
                preprocessing=small_weights.preprocessing,
                key=key,
            )

        batched, hist = jax.jit(jax.vmap(run))(contents, keys)
        assert batched.shape == contents.shape and hist.shape == (2, 5, 5)
        for i in range(2):
            single, single_hist = jax.jit(run)(contents[i], keys[i])
            np.testing.assert_allclose(batched[i], single, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(hist[i], single_hist, rtol=1e-4)
        assert not np.allclose(batched[0], batched[1])


def test_transfer_matches_stylize(small_weights, pair):
    content, style = pair
    cfg = _config(steps=7, optimizer="lbfgs")
    image, hist = nst_jax.transfer(
        small_weights.params,
        content,
        style,
        cfg,
        preprocessing=small_weights.preprocessing,
        key=jax.random.key(cfg.seed),
    )
    # stylize splits the same steps into chunks of 3: the result must not change.
    result = nst_jax.stylize(content, style, cfg, weights=small_weights, progress=False, chunk=3)
    np.testing.assert_allclose(result.image, image, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.history["total"], hist[:, 0], rtol=1e-4)


def test_initialisations(small_weights, pair):
    content, style = pair
    key = jax.random.key(3)
    assert np.array_equal(optimize.initial_image(content, style, "content", key=key), content)
    noise = np.asarray(optimize.initial_image(content, style, "noise", key=key))
    assert noise.shape == content.shape and 0 <= noise.min() and noise.max() <= 1
    assert noise.std() > 0.2
    again = optimize.initial_image(content, style, "noise", key=jax.random.key(3))
    np.testing.assert_array_equal(noise, again)
    styled = np.asarray(optimize.initial_image(content, style, "style", key=key))
    assert styled.shape == content.shape
    np.testing.assert_allclose(styled.mean(axis=(0, 1)), style.mean(axis=(0, 1)), atol=0.02)


def test_seed_makes_noise_runs_reproducible(small_weights, pair):
    content, style = pair

    def run(seed):
        cfg = _config(steps=3, optimizer="adam", init="noise", seed=seed)
        return nst_jax.stylize(content, style, cfg, weights=small_weights, progress=False).image

    a, b, c = run(1), run(1), run(2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_init_image_is_used(small_weights, pair):
    content, style = pair
    start = np.full_like(content, 0.5)
    cfg = _config(steps=1, optimizer="adam", lr=1e-6)
    result = nst_jax.stylize(
        content, style, cfg, weights=small_weights, progress=False, init_image=start
    )
    np.testing.assert_allclose(result.image, start, atol=1e-4)
    with pytest.raises(ValueError, match="init_image shape"):
        nst_jax.stylize(
            content, style, cfg, weights=small_weights, progress=False, init_image=start[:20]
        )


def test_callback_and_ctrl_c_keep_finished_work(small_weights, pair):
    content, style = pair
    seen = []

    def callback(step, image, losses):
        seen.append((step, image.copy()))
        if step == 4:
            raise KeyboardInterrupt

    cfg = _config(steps=10, optimizer="adam")
    result = nst_jax.stylize(
        content, style, cfg, weights=small_weights, progress=False, chunk=2, callback=callback
    )
    assert [s for s, _ in seen] == [2, 4]
    assert result.interrupted and result.steps == 4
    np.testing.assert_array_equal(result.image, seen[-1][1])
    assert len(result.history["total"]) == 4


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(steps=-1), "steps"),
        (dict(optimizer="sgd"), "optimizer"),
        (dict(lr=0.0), "lr"),
        (dict(init="banana"), "init"),
        (dict(linesearch="exact"), "linesearch"),
    ],
)
def test_bad_config_raises(kw, match):
    with pytest.raises(ValueError, match=match):
        nst_jax.Config(**kw)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(style_weight=-1.0), "style_weight"),
        (dict(content_weight=float("nan")), "content_weight"),
        (dict(style_layers=("conv1_1", "conv9_9")), "conv9_9"),
        (dict(style_layer_weights=(1.0,)), "1 style layer weights for 5"),
        (dict(style_layer_weights=(1, 1, 1, 1, -1)), ">= 0"),
        (dict(pooling="min"), "pooling"),
    ],
)
def test_bad_loss_config_raises(kw, match):
    with pytest.raises(ValueError, match=match):
        LossConfig(**kw)


def test_too_large_a_size_names_what_fits(small_weights, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 200 * 2**20)
    with pytest.raises(ValueError, match=r"largest size that fits is about --size \d+"):
        memory.check_estimate((8000, 8000), LossConfig())
    memory.check_estimate((64, 64), LossConfig())  # Fits.


@pytest.mark.parametrize(
    "convolution, loss",
    [
        ("direct", {}),
        ("winograd", {}),
        ("direct", {"style_loss": (("histogram", 1.0),)}),  # Matching's temporaries.
        # Remat's plain Gram step: test_remat.py, at 320x480.
        ("winograd", {"remat": True, "style_loss": (("histogram", 1.0), ("gram", 1.0))}),
        ("direct", {"remat": True, "content_layers": ("conv1_2",)}),  # Held whole.
    ],
)
def test_memory_estimate_bounds_xla(convolution, loss):
    """The quick estimate should not be below XLA's figure for the step ``stylize`` runs,
    nor so far above it that ``memory.SURELY`` of it would refuse a size that fits."""
    config = nst_jax.Config(convolution=convolution, loss=LossConfig(**loss))
    shape = (96, 128)
    estimate = memory.estimate_bytes(shape, config.loss, convolution=convolution)
    # Full-size VGG19 parameters as shapes only: compiling needs no memory for them.
    params = jax.eval_shape(
        lambda: conv.prepare(nst_jax.init_params(jax.random.key(0)), convolution)
    )
    analysis = optimize.step_memory(params, shape, config, preprocessing=nst_jax.CAFFE)
    if analysis is None:
        pytest.fail("XLA gave no memory analysis on this backend")
    xla = memory.analysis_bytes(analysis)
    assert xla <= estimate and memory.SURELY * estimate <= xla, (xla, estimate)


def test_style_loss_mix_is_the_weighted_sum(small_weights, pair):
    from nst_jax import objective as obj

    content, style = pair
    image = smooth_image(np.random.default_rng(5), *content.shape[:2])

    def style_term(mix, **kw):
        loss = LossConfig(widths=SMALL_WIDTHS, style_loss=mix, **kw)
        targets = obj.make_targets(
            small_weights.params, content, style, loss, preprocessing=small_weights.preprocessing
        )
        terms = obj.loss_terms(
            small_weights.params, image, targets, loss, preprocessing=small_weights.preprocessing
        )
        return float(terms.style)

    gram, hist = style_term((("gram", 1.0),)), style_term((("histogram", 1.0),))
    both = style_term((("gram", 1.0), ("histogram", 0.5)))
    np.testing.assert_allclose(both, gram + 0.5 * hist, rtol=1e-4)
    # Per-statistic layers: histogram on conv1_1 alone differs from all five layers.
    only = style_term((("histogram", 1.0),), stat_layers=(("histogram", ("conv1_1",)),))
    assert only != pytest.approx(hist)


@pytest.mark.parametrize(
    "name", ["gram", "mmd_poly", "mmd_linear", "mmd_gauss", "meanstd", "histogram"]
)
def test_each_statistic_is_optimised(small_weights, pair, name):
    content, style = pair
    loss = LossConfig(widths=SMALL_WIDTHS, style_loss=((name, 1.0),), mmd_samples=64, tv_weight=0.0)
    cfg = _config(steps=12, optimizer="adam", lr=0.05, loss=loss)
    result = nst_jax.stylize(content, style, cfg, weights=small_weights, progress=False)
    assert result.final["style"] < 0.8 * result.initial["style"], result.history["style"]


def test_parse_style_loss():
    from nst_jax.objective import parse_style_loss

    assert parse_style_loss("gram:1,histogram:0.5") == (("gram", 1.0), ("histogram", 0.5))
    assert parse_style_loss("mmd_poly") == (("mmd_poly", 1.0),)
    with pytest.raises(ValueError, match="bad weight"):
        parse_style_loss("gram:x")
    with pytest.raises(ValueError, match="unknown style loss"):
        LossConfig(style_loss=(("gramm", 1.0),))


def test_texture_synthesis_from_style_alone(small_weights, rng):
    style = rng.random((30, 30, 3)).astype(np.float32)
    cfg = _config(steps=12, optimizer="adam", lr=0.05)
    result = nst_jax.synthesize(style, (20, 44), cfg, weights=small_weights, progress=False)
    assert result.image.shape == (20, 44, 3)  # Any shape, not the style's.
    assert np.all(result.history["content"] == 0.0)
    assert result.final["style"] < 0.5 * result.initial["style"]
    assert result.image.std() > 0.05  # Started from noise, not a blank canvas.


def test_pairwise_kernel_settings_are_used(small_weights, pair):
    from nst_jax import objective as obj

    content, style = pair
    loss = LossConfig(widths=SMALL_WIDTHS, style_loss=(("mmd_gauss", 1.0),), mmd_sigma=3.5)
    targets = obj.make_targets(
        small_weights.params, content, style, loss, preprocessing=small_weights.preprocessing
    )
    assert float(targets.style["mmd_gauss/conv1_1"]["sigma"]) == pytest.approx(3.5)
    # A polynomial kernel of degree 3 takes the sampled path and is still optimised.
    loss = LossConfig(
        widths=SMALL_WIDTHS,
        style_loss=(("mmd_poly", 1.0),),
        mmd_degree=3,
        mmd_c=1.0,
        mmd_samples=64,
        tv_weight=0.0,
    )
    result = nst_jax.stylize(
        content, style, _config(steps=12, lr=0.05, loss=loss), weights=small_weights, progress=False
    )
    assert result.final["style"] < 0.8 * result.initial["style"]


def test_alpha_norm_enters_the_total(small_weights, pair):
    content, style = pair
    loss = LossConfig(
        widths=SMALL_WIDTHS,
        style_weight=1.0,
        tv_weight=2.0,
        tv_beta=1.5,
        alpha_norm_weight=3.0,
        alpha=4.0,
    )
    result = nst_jax.stylize(
        content, style, _config(steps=3, loss=loss), weights=small_weights, progress=False
    )
    h = result.history
    assert h["alpha_norm"][0] > 0
    np.testing.assert_allclose(
        h["total"], h["content"] + h["style"] + 2.0 * h["tv"] + 3.0 * h["alpha_norm"], rtol=1e-5
    )


def test_progress_bars_are_named_by_what_runs(small_weights, rng, monkeypatch):
    """Texture, inversion and pyramid runs say which they are; off stays off."""
    names = []
    real = optimize._progress_bar

    def spy(total, progress):
        names.append(progress)
        return real(total, False)

    monkeypatch.setattr(optimize, "_progress_bar", spy)
    image = smooth_image(rng, 32, 32)
    config = nst_jax.Config(steps=1, loss=LossConfig(widths=SMALL_WIDTHS))
    kw = dict(weights=small_weights)
    optimize.synthesize(image, (32, 32), config, **kw)
    optimize.invert(image, "conv2_1", config, **kw)
    optimize.stylize_pyramid(image, image, config, sizes=(16, 32), **kw)
    optimize.stylize(image, image, config, progress=False, **kw)
    assert names == ["texture", "invert conv2_1", "level 1/2, 16x16", "level 2/2, 32x32", False]


@pytest.mark.parametrize("remat", [False, True])
def test_the_step_lowers_for_gpu(remat):
    """No GPU runs these tests: lowering the step for CUDA at least shows that every
    operation in it, remat's strips included, has a GPU lowering."""
    config = nst_jax.Config(loss=LossConfig(remat=remat), convolution="direct")
    params = jax.eval_shape(lambda: conv.prepare(nst_jax.init_params(jax.random.key(0))))
    lowered = optimize.lower_step(
        params, (96, 128), config, preprocessing=nst_jax.CAFFE, platforms=("cuda",)
    )
    text = lowered.as_text()
    assert "stablehlo.convolution" in text
    assert ("stablehlo.while" in text) == remat  # The strips are loops.
