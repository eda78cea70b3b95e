"""Gatys et al. (2017) controls: style mixes, spatial masks, colour preservation,
coarse-to-fine, and rematerialised VGG blocks. Small random networks throughout."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.color import rgb2yiq

import nst_jax
from nst_jax import image as image_lib
from nst_jax import losses, optimize
from nst_jax import objective as obj
from nst_jax.objective import LossConfig

from .conftest import SMALL_WIDTHS, smooth_image

LAYERS = ("conv1_1", "conv2_1", "conv3_1")


def _loss(**kw):
    kw = {"style_layers": LAYERS, "content_layers": ("conv2_2",), **kw}
    return LossConfig(widths=SMALL_WIDTHS, **kw)


@pytest.fixture
def styles(rng):
    stripes = np.zeros((32, 32, 3), np.float32)
    stripes[::4] = 1.0
    stripes[..., 2] = 0.2
    speckle = (rng.random((40, 24, 3)) ** 3).astype(np.float32)
    return stripes, speckle


def _targets(weights, content, style, loss, **kw):
    return obj.make_targets(
        weights.params, content, style, loss, preprocessing=weights.preprocessing, **kw
    )


@pytest.mark.parametrize("name", ["gram", "meanstd", "mmd_linear", "mmd_poly", "histogram"])
def test_blend_mixes_targets_linearly(small_weights, rng, styles, name):
    content = smooth_image(rng, 24, 32)
    loss = _loss(style_loss=((name, 1.0),))
    both = _targets(small_weights, content, list(styles), loss, blend=jnp.array([3.0, 1.0]))
    one = _targets(small_weights, content, styles[0], loss)
    two = _targets(small_weights, content, styles[1], loss)
    expected = jax.tree.map(lambda a, b: 0.75 * a + 0.25 * b, one.style, two.style)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), both.style, expected
    )
    # A blend of (1, 0) is the first style alone.
    only = _targets(small_weights, content, list(styles), loss, blend=jnp.array([1.0, 0.0]))
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), only.style, one.style
    )


def test_gaussian_mmd_samples_the_mixture(small_weights, rng, styles):
    content = smooth_image(rng, 24, 32)
    loss = _loss(style_loss=(("mmd_gauss", 1.0),), style_layers=("conv1_1",), mmd_samples=256)
    feats = [
        np.asarray(
            obj.features(
                small_weights.params,
                s,
                ("conv1_1",),
                preprocessing=small_weights.preprocessing,
                widths=SMALL_WIDTHS,
            )["conv1_1"]
        ).reshape(-1, 4)
        for s in styles
    ]
    samples = np.asarray(
        _targets(small_weights, content, list(styles), loss, blend=jnp.array([1.0, 0.0])).style[
            "mmd_gauss/conv1_1"
        ]["samples"]
    )
    # Every sampled row comes from the first style's features.
    d = np.abs(samples[:, None, :] - feats[0][None]).sum(-1).min(1)
    assert d.max() < 1e-4


def test_vmap_over_style_mixes_equals_separate_runs(small_weights, rng, styles):
    content = smooth_image(rng, 24, 32)
    config = optimize.Config(loss=_loss(), steps=3)
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
    for b in range(2):
        one = dataclasses.replace(
            config, loss=dataclasses.replace(config.loss, style_blend=tuple(blends[b]))
        )
        single = nst_jax.stylize(content, list(styles), one, weights=small_weights, progress=False)
        np.testing.assert_allclose(batch.image[b], single.image, atol=1e-4)
    assert np.abs(batch.image[0] - batch.image[1]).mean() > 1e-4


def test_masked_gram_is_the_gram_of_the_region(rng):
    f = jnp.asarray(rng.normal(size=(6, 8, 5)), jnp.float32)
    mask = np.zeros((6, 8), np.float32)
    mask[1:4, 2:7] = 1.0
    region = np.asarray(f)[mask > 0]
    np.testing.assert_allclose(
        losses.gram(f, weights=mask), region.T @ region / len(region), rtol=1e-5
    )
    mean, std = losses.mean_std(f, weights=mask)
    np.testing.assert_allclose(mean, region.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, np.sqrt(region.var(0) + 1e-5), rtol=1e-5)
    # Weights scale out: a soft mask of constant 0.3 is the plain Gram.
    np.testing.assert_allclose(
        losses.gram(f, weights=np.full((6, 8), 0.3)), losses.gram(f), rtol=1e-5
    )
    with pytest.raises(ValueError, match="must match"):
        losses.gram(f, weights=np.ones((3, 3)))


@pytest.mark.parametrize("shape", [(37, 53), (32, 48)])
def test_layer_masks_follow_the_feature_shapes(small_weights, shape):
    image = np.zeros((*shape, 3), np.float32)
    feats = obj.features(
        small_weights.params,
        image,
        nst_jax.LAYERS,
        preprocessing=small_weights.preprocessing,
        widths=SMALL_WIDTHS,
    )
    masks = np.ones((2, *shape), np.float32)
    masks[1, :, : shape[1] // 2] = 0.0
    for layer, f in feats.items():
        m = obj.layer_masks(jnp.asarray(masks), layer)
        assert m.shape == (2, *f.shape[:2]), layer
        np.testing.assert_allclose(m[0], 1.0)
    # Area averaging: the half mask stays a half on average.
    assert abs(float(obj.layer_masks(jnp.asarray(masks), "conv3_1")[1].mean()) - 0.5) < 0.1


def test_each_region_moves_towards_its_own_style(small_weights, rng, styles):
    h, w = 32, 48
    content = smooth_image(rng, h, w)
    masks = np.zeros((2, h, w), np.float32)
    masks[0, :, : w // 2] = 1.0
    masks[1] = 1.0 - masks[0]
    loss = _loss(style_weight=1e3, content_weight=0.0, tv_weight=0.0)
    config = optimize.Config(loss=loss, steps=40)
    result = nst_jax.stylize(
        content, list(styles), config, content_masks=masks, weights=small_weights, progress=False
    )
    assert result.final["style"] < 0.3 * result.initial["style"]
    kw = dict(preprocessing=small_weights.preprocessing, widths=SMALL_WIDTHS)

    def distances(image):
        """[region, style]: Gram distance of the region to each style, summed over layers."""
        out = np.zeros((2, 2))
        for layer in LAYERS:
            f = obj.features(small_weights.params, jnp.asarray(image), (layer,), **kw)[layer]
            m = obj.layer_masks(jnp.asarray(masks), layer)
            for s, style in enumerate(styles):
                g_style = losses.gram(
                    obj.features(small_weights.params, style, (layer,), **kw)[layer]
                )
                for r in range(2):
                    out[r, s] += float(jnp.sum(jnp.square(losses.gram(f, weights=m[r]) - g_style)))
        return out

    before, after = distances(content), distances(result.image)
    for r in range(2):
        assert after[r, r] < 0.2 * before[r, r], (r, before, after)  # Moved to its style,
        assert after[r, r] < 0.5 * after[r, 1 - r], (r, after)  # and not to the other.


def test_mask_errors_and_warnings(small_weights, rng, styles):
    content = smooth_image(rng, 24, 32)
    with pytest.raises(ValueError, match="content masks"):
        _targets(small_weights, content, list(styles), _loss(), content_masks=jnp.ones((2, 10, 10)))
    with pytest.raises(ValueError, match="masks work with"):
        _targets(
            small_weights,
            content,
            list(styles),
            _loss(style_loss=(("histogram", 1.0),)),
            content_masks=jnp.ones((2, 24, 32)),
        )
    with pytest.raises(ValueError, match="style masks need content masks"):
        nst_jax.stylize(
            content,
            list(styles),
            optimize.Config(loss=_loss(), steps=1),
            style_masks=[None, None],
            weights=small_weights,
            progress=False,
        )
    masks = np.zeros((2, 10, 10), np.float32)
    masks[0, :, :4] = 1.0
    masks[1, :, 3:6] = 1.0
    problems = image_lib.mask_problems(masks)
    assert any("no mask" in p for p in problems) and any("overlap" in p for p in problems)
    full = np.stack([masks[0], 1.0 - masks[0]])
    assert image_lib.mask_problems(full) == []


def test_style_masks_restrict_the_style(small_weights, rng, styles):
    content = smooth_image(rng, 24, 32)
    half = np.zeros((32, 32), np.float32)
    half[:16] = 1.0
    masked = _targets(
        small_weights,
        content,
        [styles[0]],
        _loss(),
        content_masks=jnp.ones((1, 24, 32)),
        style_masks=[half],
    )
    f = obj.features(
        small_weights.params,
        styles[0],
        ("conv1_1",),
        preprocessing=small_weights.preprocessing,
        widths=SMALL_WIDTHS,
    )["conv1_1"]
    top = np.asarray(f)[:16].reshape(-1, f.shape[-1])
    np.testing.assert_allclose(
        masked.style["gram/conv1_1"][0], top.T @ top / len(top), rtol=1e-4, atol=1e-3
    )


def test_luminance_transfer_keeps_the_content_chroma(small_weights, rng, styles):
    content = 0.25 + 0.5 * smooth_image(rng, 32, 40)  # Away from the gamut's edges.
    config = optimize.Config(loss=_loss(), steps=10, preserve_color="luminance")
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


def test_histogram_colour_matching(rng, styles):
    content = smooth_image(rng, 32, 40)
    # A style whose channels are correlated unlike the content's: blue-yellow.
    t = rng.random((30, 30, 1)).astype(np.float32)
    noise = 0.15 * rng.random((30, 30, 3)).astype(np.float32)
    painting = np.concatenate([t, t, 1.0 - t], axis=-1) * 0.7 + noise
    matched = image_lib.match_color(painting, content)
    corr = np.corrcoef(matched.reshape(-1, 3).T)
    target = np.corrcoef(content.reshape(-1, 3).T)
    np.testing.assert_allclose(corr, target, atol=0.15)  # The palette, not just the marginals.
    assert np.corrcoef(painting.reshape(-1, 3).T)[0, 2] < -0.9
    for c in range(3):
        q = np.linspace(0.05, 0.95, 10)
        np.testing.assert_allclose(
            np.quantile(matched[..., c], q), np.quantile(content[..., c], q), atol=0.03
        )
    # The luminance-matched style has the content's mean and std of luminance.
    lum = image_lib.match_luminance(styles[1], content)
    assert abs(lum[..., 0].mean() - image_lib.luminance(content).mean()) < 0.02
    assert np.allclose(lum[..., 0], lum[..., 1])


def test_pyramid_sizes():
    assert optimize.pyramid_sizes(512, levels=3) == [128, 256, 512]
    assert optimize.pyramid_sizes(1024, start_size=200) == [256, 512, 1024]
    assert optimize.pyramid_sizes(300) == [300]
    with pytest.raises(ValueError, match="below 16"):
        optimize.pyramid_sizes(64, levels=4)
    with pytest.raises(ValueError, match="above the output"):
        optimize.pyramid_sizes(64, start_size=100)


def test_pyramid_runs_coarse_to_fine(small_weights, rng, styles):
    content = smooth_image(rng, 48, 64)
    config = optimize.Config(loss=_loss(), steps=6)
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
        styles[1],
        dataclasses.replace(config, steps=3),
        weights=small_weights,
        progress=False,
    )
    assert results[1].initial["style"] < single.initial["style"]


def test_remat_gives_the_same_values_and_gradients(small_weights, rng):
    image = jnp.asarray(smooth_image(rng, 24, 32))
    layers = ("conv1_1", "conv2_2", "conv4_1")

    def f(x, remat):
        feats = obj.features(
            small_weights.params,
            x,
            layers,
            preprocessing=small_weights.preprocessing,
            widths=SMALL_WIDTHS,
            remat=remat,
        )
        return sum(jnp.sum(jnp.square(v)) for v in feats.values())

    np.testing.assert_allclose(f(image, True), f(image, False), rtol=1e-5)
    np.testing.assert_allclose(
        jax.grad(f)(image, True), jax.grad(f)(image, False), rtol=1e-4, atol=1e-3
    )
