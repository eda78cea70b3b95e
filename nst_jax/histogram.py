"""The histogram loss of Risser et al. (2017), "Stable and Controllable Neural Texture
Synthesis and Style Transfer Using Histogram Losses": per channel, the output's
activations are matched to the style's distribution (exactly by sorting, or through
256-bin histograms where sorting would dominate the step), and the loss pulls them to
that match. Pure functions of one example, like ``losses.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nst_jax.losses import check_rank

EXACT_HISTOGRAM_MAX = 1 << 18  # Above this many activations, match with 256-bin histograms.


def match_histogram(values: jax.Array, quantiles: jax.Array) -> jax.Array:
    """Exact histogram matching by sorting: the value of rank r becomes the r-th quantile.

    O(M log M) per channel. Exact, but XLA's CPU sort takes about a second for the
    2.8M activations of conv1_1 at 256 px; ``histogram_loss`` uses
    ``match_histogram_binned`` above ``EXACT_HISTOGRAM_MAX`` activations.

    Args:
      values: ``[M, C]`` output activations.
      quantiles: ``[M, C]`` sorted style activations, resampled to ``M`` values per channel.

    Returns:
      ``[M, C]``: per channel, the same ordering as ``values`` with the style's values.
    """
    order = jnp.argsort(values, axis=0)
    channels = jnp.arange(values.shape[1])[None, :]
    return jnp.zeros_like(quantiles).at[order, channels].set(quantiles)


def match_histogram_binned(values: jax.Array, quantiles: jax.Array, *, bins: int = 256):
    """Histogram matching through a ``bins``-bin histogram, in O(M) (Risser et al. 2017).

    Per channel, each value's CDF is read off the output's histogram (linear within its
    bin), and the style quantile at that CDF becomes its target. Approximates
    ``match_histogram`` to within a bin's share of the distribution.

    Args:
      values: ``[M, C]`` output activations.
      quantiles: ``[Q, C]`` sorted style activations.

    Returns:
      ``[M, C]`` targets.
    """
    m, c = values.shape
    lo = jnp.min(values, axis=0, keepdims=True)
    span = jnp.maximum(jnp.max(values, axis=0, keepdims=True) - lo, 1e-12)
    t = (values - lo) / span * bins
    b = jnp.clip(jnp.floor(t), 0, bins - 1).astype(jnp.int32)
    frac = jnp.clip(t - b, 0.0, 1.0)
    channels = jnp.broadcast_to(jnp.arange(c)[None, :], (m, c))
    # Counted in int32: float32 stops counting at 2^24 (16.7 M), which one bin of a
    # large image's ReLU activations (their zeros) passes.
    counts = jnp.zeros((bins, c), jnp.int32).at[b, channels].add(1)
    below = jnp.cumsum(counts, axis=0) - counts  # Values in lower bins.
    rank = jnp.take_along_axis(below, b, axis=0).astype(jnp.float32)
    rank = rank + frac * jnp.take_along_axis(counts, b, axis=0).astype(jnp.float32)
    pos = rank / m * (quantiles.shape[0] - 1)
    i0 = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, quantiles.shape[0] - 1)
    i1 = jnp.minimum(i0 + 1, quantiles.shape[0] - 1)
    w = pos - i0
    q0 = jnp.take_along_axis(quantiles, i0, axis=0)
    q1 = jnp.take_along_axis(quantiles, i1, axis=0)
    return q0 * (1.0 - w) + q1 * w


def histogram_loss(features: jax.Array, quantiles: jax.Array) -> jax.Array:
    """Histogram loss of Risser et al. (2017): ``mean (O − Õ)²``, with ``Õ`` held constant.

    ``Õ`` is ``O`` histogram-matched to the style, per channel: exactly by sorting up to
    ``EXACT_HISTOGRAM_MAX`` activations (``match_histogram``), through 256-bin histograms
    above it (``match_histogram_binned``), where sorting would dominate the step. Zero
    when the output's activations have exactly the style's distribution (exact path).

    Args:
      features: ``[H, W, C]`` output activations.
      quantiles: ``[H * W, C]`` style quantiles (``style_quantiles``).
    """
    check_rank("histogram_loss", features, 3)
    o = features.reshape(-1, features.shape[-1]).astype(jnp.float32)
    if o.shape != quantiles.shape:
        raise ValueError(f"shape mismatch: features {o.shape} vs quantiles {quantiles.shape}")
    match = match_histogram if o.size <= EXACT_HISTOGRAM_MAX else match_histogram_binned
    target = jax.lax.stop_gradient(match(o, quantiles))
    return jnp.mean(jnp.square(o - target))


def style_quantiles(features: jax.Array, m: int) -> jax.Array:
    """The style's per-channel distribution as ``m`` sorted values (linear interpolation).

    Args:
      features: ``[H, W, C]`` style activations, any size.
      m: number of positions in the output's activation at this layer.

    Returns:
      ``[m, C]``, each column sorted ascending.
    """
    check_rank("style_quantiles", features, 3)
    s = jnp.sort(features.reshape(-1, features.shape[-1]).astype(jnp.float32), axis=0)
    n = s.shape[0]
    pos = jnp.linspace(0.0, n - 1.0, m)
    lo = jnp.floor(pos).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, n - 1)
    frac = (pos - lo)[:, None]
    return s[lo] * (1.0 - frac) + s[hi] * frac
