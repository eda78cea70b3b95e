"""``objective.py``: the targets (style mixes, masks, sampled kernels), the statistics
registry, and the loss terms, checked against the public loss functions they run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax import LossConfig, losses, objective, statistics
from nst_jax.image import mask_problems
from nst_jax.objective import Targets, content_targets, style_targets
from nst_jax.statistics import SCALES

from .conftest import SMALL_WIDTHS, smooth_image

LAYERS = ("conv1_1", "conv2_1", "pool2", "conv3_1")


def _loss(**kw):
    return LossConfig(**{"style_layers": LAYERS, "content_layers": ("conv2_2",), **kw})


def _style(network, shape, style, loss, **kw):
    """``style_targets``, jitted: eager, every operation would compile on its own."""
    run = jax.jit(lambda n, s, kw: style_targets(n, s, loss, shape=shape, **kw))
    return run(network, style, kw)


def _features(network, image, layers):
    return jax.jit(lambda n, x: n.features(x, layers))(network, image)


def _targets(network, content, style, loss):
    content_side = jax.jit(lambda n, c: content_targets(n, c, loss))(network, content)
    return Targets(content_side, _style(network, content.shape[:2], style, loss))


def _terms(network, image, targets, loss):
    return jax.jit(lambda n, x, t: objective.loss_terms(n, x, t, loss))(network, image, targets)


@pytest.mark.parametrize("name", ["gram", "meanstd", "mmd_linear", "mmd_poly", "histogram"])
def test_blend_mixes_targets_linearly(small_net, styles, name):
    network, shape = small_net(), (24, 32)
    loss = _loss(style_loss=((name, 1.0),))
    both = _style(network, shape, list(styles), loss, blend=jnp.array([3.0, 1.0]))
    one = _style(network, shape, styles[0], loss)
    two = _style(network, shape, styles[1], loss)
    expected = jax.tree.map(lambda a, b: 0.75 * a + 0.25 * b, one.statistics, two.statistics)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # noqa: E731
    jax.tree.map(close, both.statistics, expected)
    # A blend of (1, 0) is the first style alone.
    only = _style(network, shape, list(styles), loss, blend=jnp.array([1.0, 0.0]))
    jax.tree.map(close, only.statistics, one.statistics)


def test_gaussian_mmd_samples_the_mixture_and_keeps_its_settings(small_net, styles):
    network = small_net()
    loss = _loss(style_loss=(("mmd_gauss", 1.0),), style_layers=("conv1_1",), mmd_samples=256)
    feats = [
        np.asarray(_features(network, s, ("conv1_1",))["conv1_1"]).reshape(-1, 4) for s in styles
    ]
    target = _style(network, (24, 32), list(styles), loss, blend=jnp.array([1.0, 0.0]))
    samples = np.asarray(target.statistics["mmd_gauss/conv1_1"]["samples"])
    # Every sampled row comes from the first style's features.
    d = np.abs(samples[:, None, :] - feats[0][None]).sum(-1).min(1)
    assert d.max() < 1e-4
    fixed = LossConfig(style_loss=(("mmd_gauss", 1.0),), mmd_sigma=3.5)
    target = _style(network, (24, 32), styles[0], fixed)
    assert float(target.statistics["mmd_gauss/conv1_1"]["sigma"]) == pytest.approx(3.5)


@pytest.mark.parametrize("style_norm", ["relative", "gatys"])
def test_the_loss_terms_are_the_public_losses(small_net, rng, styles, style_norm):
    """What the product runs is what the tests of ``losses.py`` check: each term, at
    each layer, is the public loss of the image's features, scaled and weighted; under
    ``"relative"`` the scale is one over the style's distance from zero statistics."""
    network, image = small_net(), jnp.asarray(smooth_image(rng, 24, 32))
    content = jnp.asarray(smooth_image(rng, 24, 32))
    mix = (("gram", 1.0), ("meanstd", 0.5), ("mmd_linear", 0.25), ("mmd_poly", 2.0))
    loss = _loss(
        style_loss=mix, mmd_c=0.5, style_layer_weights=(1.0, 2.0, 3.0, 4.0), style_norm=style_norm
    )
    targets = _targets(network, content, styles[1], loss)
    terms = _terms(network, image, targets, loss)
    feats = _features(network, image, (*LAYERS, "conv2_2"))
    style_feats = _features(network, styles[1], LAYERS)
    expected = 0.0
    for name, weight in mix:
        for layer, w in zip(LAYERS, loss.layer_weights, strict=True):
            f, s = feats[layer], style_feats[layer]
            zero = np.zeros_like(f)
            if name == "gram":
                value, at_zero = (losses.gram_loss(x, losses.gram(s)) for x in (f, zero))
            elif name == "meanstd":
                mu, sigma = losses.mean_std(s)
                value = losses.mean_std_loss(f, (mu, sigma))
                at_zero = losses.mean_std_distance(0 * mu, 0 * sigma, (mu, sigma))
            else:
                x, y = f.reshape(-1, f.shape[-1]), s.reshape(-1, s.shape[-1])
                if name == "mmd_linear":
                    value, at_zero = (losses.mmd2_linear(v, y.mean(0)) for v in (x, 0 * x))
                else:
                    value, at_zero = (
                        losses.mmd2_poly2(v, losses.gram(s), y.mean(0), c=0.5)
                        / (4 * f.shape[-1] ** 2)
                        for v in (x, 0 * x)
                    )
            scale = SCALES[name] if style_norm == "gatys" else 1.0 / float(at_zero)
            expected += weight * w * scale * float(value)
    np.testing.assert_allclose(float(terms.style), expected, rtol=1e-4)
    np.testing.assert_allclose(
        float(terms.content),
        float(losses.normalized_content_loss(feats["conv2_2"], targets.content["conv2_2"])),
        rtol=1e-5,
    )
    np.testing.assert_allclose(float(terms.tv), float(losses.total_variation(image)), rtol=1e-6)


def test_style_loss_mix_is_the_weighted_sum(small_net, rng, styles):
    network = small_net()
    content, image = smooth_image(rng, 24, 32), smooth_image(rng, 24, 32)

    def style_term(mix, **kw):
        loss = _loss(style_loss=mix, **kw)
        targets = _targets(network, content, styles[0], loss)
        return float(_terms(network, image, targets, loss).style)

    gram, hist = style_term((("gram", 1.0),)), style_term((("histogram", 1.0),))
    both = style_term((("gram", 1.0), ("histogram", 0.5)))
    np.testing.assert_allclose(both, gram + 0.5 * hist, rtol=1e-4)
    # Per-statistic layers: histogram on conv1_1 alone differs from all the layers.
    only = style_term((("histogram", 1.0),), stat_layers=(("histogram", ("conv1_1",)),))
    assert only != pytest.approx(hist)


@pytest.mark.parametrize("shape", [(37, 53), (32, 48)])
def test_layer_masks_follow_the_feature_shapes(small_net, shape):
    feats = _features(small_net(), np.zeros((*shape, 3), np.float32), nst_jax.LAYERS)
    masks = np.ones((2, *shape), np.float32)
    masks[1, :, : shape[1] // 2] = 0.0
    for layer, f in feats.items():
        m = statistics.layer_masks(jnp.asarray(masks), layer)
        assert m.shape == (2, *f.shape[:2]), layer
        np.testing.assert_allclose(m[0], 1.0)
    # Area averaging, as VGG's pooling (2x2, twice, flooring): a soft mask at conv3_1 is
    # its 4x4 block means.
    soft = np.random.default_rng(0).random((2, *shape)).astype(np.float32)
    h, w = shape[0] // 2 // 2, shape[1] // 2 // 2
    blocks = soft[:, : 4 * h, : 4 * w].reshape(2, h, 4, w, 4).mean(axis=(2, 4))
    got = statistics.layer_masks(jnp.asarray(soft), "conv3_1")
    np.testing.assert_allclose(got, blocks, rtol=1e-5, atol=1e-6)


def test_mask_errors_and_warnings(small_net, styles):
    network = small_net()
    with pytest.raises(ValueError, match="content masks"):
        _style(network, (24, 32), list(styles), _loss(), content_masks=jnp.ones((2, 10, 10)))
    with pytest.raises(ValueError, match="masks work with"):
        _style(
            network,
            (24, 32),
            list(styles),
            _loss(style_loss=(("histogram", 1.0),)),
            content_masks=jnp.ones((2, 24, 32)),
        )
    masks = np.zeros((2, 10, 10), np.float32)
    masks[0, :, :4] = 1.0
    masks[1, :, 3:6] = 1.0
    problems = mask_problems(masks)
    assert any("no mask" in p for p in problems) and any("overlap" in p for p in problems)
    assert mask_problems(np.stack([masks[0], 1.0 - masks[0]])) == []


@pytest.mark.parametrize("style_norm", ["relative", "gatys"])
def test_masked_regions_each_count_against_their_own_style(small_net, rng, styles, style_norm):
    """Two regions' style loss is the sum of each region's alone (each relative to its own
    style, not to the styles' total); a third, empty region adds nothing."""
    network, shape = small_net(), (24, 32)
    content, image = smooth_image(rng, *shape), smooth_image(rng, *shape)
    loss = _loss(style_norm=style_norm)
    top = np.zeros((1, *shape), np.float32)
    top[0, :12] = 1.0
    regions = np.concatenate([top, 1.0 - top])
    content_side = jax.jit(lambda n, c: content_targets(n, c, loss))(network, content)

    def style_term(chosen, masks):
        targets = _style(network, shape, chosen, loss, content_masks=jnp.asarray(masks))
        return float(_terms(network, image, Targets(content_side, targets), loss).style)

    both = style_term(list(styles), regions)
    alone = [style_term([s], m[None]) for s, m in zip(styles, regions, strict=True)]
    np.testing.assert_allclose(both, sum(alone), rtol=1e-5)
    empty = np.concatenate([regions, np.zeros((1, *shape), np.float32)])
    np.testing.assert_allclose(style_term([*styles, styles[1] * 0.5], empty), both, rtol=1e-5)


def test_masks_and_blends_are_refused_together(small_net, styles):
    network, masks = small_net(), jnp.ones((2, 24, 32))
    with pytest.raises(ValueError, match="content masks place them"):
        _style(network, (24, 32), list(styles), _loss(), content_masks=masks, blend=jnp.ones(2))
    with pytest.raises(ValueError, match="content masks place them"):
        _style(network, (24, 32), list(styles), _loss(style_blend=(1.0, 2.0)), content_masks=masks)
    with pytest.raises(ValueError, match=r"shape \(\) for 2 style images"):
        _style(network, (24, 32), list(styles), _loss(), blend=jnp.float32(1.0))


def test_the_objective_refuses_what_is_not_one_image(small_net, rng, styles):
    """A batch, integer pixels or an image too small for a layer are refused, naming the
    problem, where they failed deep in the network (or a batch passed silently)."""
    network, loss = small_net(), _loss()
    image = smooth_image(rng, 24, 32)
    targets = _targets(network, image, styles[0], loss)
    for bad, match in [
        (image[None], r"\[H, W, 3\] RGB \(vmap over a batch\)"),
        ((image * 255).astype(np.uint8), "float in \\[0, 1\\], got uint8"),
        (image[:1, :1], r"1x1 leaves conv2_\d empty: it needs 2 px a side"),
    ]:
        with pytest.raises(ValueError, match=match):
            _terms(network, bad, targets, loss)
        with pytest.raises(ValueError, match=match):
            jax.jit(lambda n, c: content_targets(n, c, loss))(network, bad)
        with pytest.raises(ValueError, match=match):
            _style(network, (24, 32), bad, loss)


def test_style_masks_restrict_the_style(small_net, styles):
    network = small_net()
    half = np.zeros((32, 32), np.float32)
    half[:16] = 1.0
    masked = _style(
        network,
        (24, 32),
        [styles[0]],
        _loss(),
        content_masks=jnp.ones((1, 24, 32)),
        style_masks=[half],
    )
    f = _features(network, styles[0], ("conv1_1",))["conv1_1"]
    top = np.asarray(f)[:16].reshape(-1, f.shape[-1])
    np.testing.assert_allclose(
        masked.statistics["gram/conv1_1"][0], top.T @ top / len(top), rtol=1e-4, atol=1e-3
    )


def test_the_widths_come_from_the_weights(small_net):
    assert small_net().widths == SMALL_WIDTHS


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(style_weight=-1.0), "style_weight"),
        (dict(content_weight=float("nan")), "content_weight"),
        (dict(style_weight=float("inf")), "finite"),
        (dict(style_loss=(("gram", float("inf")),)), "finite"),
        (dict(style_layers=("conv1_1", "conv9_9")), "conv9_9"),
        (dict(style_layer_weights=(1.0,)), "1 style layer weights for 5"),
        (dict(style_layer_weights=(1, 1, 1, 1, -1)), ">= 0"),
        (dict(style_loss=(("gramm", 1.0),)), "unknown style loss"),
    ],
)
def test_bad_loss_config_raises(kw, match):
    with pytest.raises(ValueError, match=match):
        LossConfig(**kw)


def test_parse_style_loss():
    assert objective.parse_style_loss("gram:1,histogram:0.5") == (("gram", 1.0), ("histogram", 0.5))
    assert objective.parse_style_loss("mmd_poly") == (("mmd_poly", 1.0),)
    with pytest.raises(ValueError, match="bad weight"):
        objective.parse_style_loss("gram:x")


def test_sampled_kernels_know_when_they_draw(small_net, rng):
    """The style as the output, through the objective. A layer whose positions are all
    taken (no more than ``mmd_samples``) scores exactly 0: every pair counted. Where
    positions are drawn, the pairs i = j are left out on both sides, and the loss
    averages to 0 over draws; counting them left a floor."""
    network = small_net()
    style = rng.random((16, 16, 3)).astype(np.float32)  # conv1_1: 256 positions.
    loss = LossConfig(
        style_layers=("conv1_1",), content_layers=(), style_loss=(("mmd_gauss", 1.0),)
    )

    def style_term(loss, key):  # The style's sample and the output's, both drawn anew.
        ks, kx = jax.random.split(key)
        style_target = style_targets(network, style, loss, shape=(16, 16), key=ks)
        targets = Targets(content={}, style=style_target)
        return objective.loss_terms(network, style, targets, loss, key=kx).style

    whole = jax.jit(lambda k: style_term(loss, k))(jax.random.key(1))
    assert abs(float(whole)) < 1e-6
    drawn = LossConfig(**{**loss.__dict__, "mmd_samples": 16})
    keys = jax.random.split(jax.random.key(2), 200)
    values = np.asarray(jax.jit(jax.vmap(lambda k: style_term(drawn, k)))(keys))
    assert abs(values.mean()) < 3 * values.std() / np.sqrt(len(values)), values.mean()
