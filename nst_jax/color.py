"""Colour preservation (Gatys et al. 2017, "Controlling Perceptual Factors", sec. 5):
luminance-only transfer and colour matching, on arrays, outside the differentiable loss."""

from __future__ import annotations

import numpy as np


def luminance(image: np.ndarray) -> np.ndarray:
    """``[..., 3]`` RGB -> ``[...]`` luminance Y (of YIQ)."""
    from skimage.color import rgb2yiq

    return rgb2yiq(image)[..., 0].astype(np.float32)


def luminance_image(image: np.ndarray) -> np.ndarray:
    """``[..., 3]`` RGB -> ``[..., 3]`` grey image of its luminance, for VGG."""
    return np.repeat(luminance(image)[..., None], 3, axis=-1)


def match_luminance(style: np.ndarray, content: np.ndarray) -> np.ndarray:
    """The style's luminance, shifted and scaled to the content's mean and std, as a grey
    ``[H', W', 3]`` image: ``L_s' = σ_c / σ_s (L_s − μ_s) + μ_c`` (Gatys et al. 2017)."""
    ls, lc = luminance(style), luminance(content)
    matched = (ls - ls.mean()) * (lc.std() / max(float(ls.std()), 1e-6)) + lc.mean()
    return np.repeat(np.clip(matched, 0.0, 1.0)[..., None], 3, axis=-1).astype(np.float32)


def with_content_color(output: np.ndarray, content: np.ndarray) -> np.ndarray:
    """The output's luminance with the content's chroma (I and Q of YIQ), clipped to
    [0, 1]: the second half of luminance-only transfer. ``output`` ``[..., H, W, 3]``
    (a batch too), ``content`` ``[H, W, 3]``."""
    from skimage.color import rgb2yiq, yiq2rgb

    yiq = np.broadcast_to(rgb2yiq(content), output.shape).copy()
    yiq[..., 0] = luminance(output)
    return np.clip(yiq2rgb(yiq), 0.0, 1.0).astype(np.float32)


def _sqrtm(cov: np.ndarray, *, inverse: bool = False) -> np.ndarray:
    """Symmetric square root (or inverse square root) of a ``[3, 3]`` covariance."""
    w, v = np.linalg.eigh(cov)
    w = np.maximum(w, 1e-6)
    return (v * w ** (-0.5 if inverse else 0.5)) @ v.T


def match_color(style: np.ndarray, content: np.ndarray) -> np.ndarray:
    """The style recoloured with the content's palette: colour preservation before the
    transfer (Gatys et al. 2017, sec. 5.1).

    First the linear map ``x' = Σ_c^½ Σ_s^-½ (x − μ_s) + μ_c`` gives the style's pixels
    the content's mean and RGB covariance (Hertzmann 1998, the method of the paper);
    matching the channels one by one alone would keep the style's colour correlations
    (a blue-yellow painting stays blue-yellow). Then scikit-image's
    ``match_histograms`` matches each channel's histogram exactly.
    """
    from skimage.exposure import match_histograms

    xs = style.reshape(-1, 3).astype(np.float64)
    xc = content.reshape(-1, 3).astype(np.float64)
    a = _sqrtm(np.cov(xc.T)) @ _sqrtm(np.cov(xs.T), inverse=True)
    linear = np.clip((xs - xs.mean(0)) @ a.T + xc.mean(0), 0.0, 1.0).reshape(style.shape)
    matched = match_histograms(linear, content, channel_axis=-1)
    return np.clip(matched, 0.0, 1.0).astype(np.float32)
