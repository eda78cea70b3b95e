"""``color.py``: colour matching keeps the content's palette; luminance matching its
brightness and contrast."""

import numpy as np

from nst_jax import color

from .conftest import smooth_image


def test_histogram_colour_matching(rng):
    content = smooth_image(rng, 32, 40)
    # A style whose channels are correlated unlike the content's: blue-yellow.
    t = rng.random((30, 30, 1)).astype(np.float32)
    noise = 0.15 * rng.random((30, 30, 3)).astype(np.float32)
    painting = np.concatenate([t, t, 1.0 - t], axis=-1) * 0.7 + noise
    matched = color.match_color(painting, content)
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
    lum = color.match_luminance((rng.random((40, 24, 3)) ** 3).astype(np.float32), content)
    assert abs(lum[..., 0].mean() - color.luminance(content).mean()) < 0.02
    assert np.allclose(lum[..., 0], lum[..., 1])
