"""Pairwise-kernel MMD (Li et al. 2017) over rows of features: the kernels that compare
sampled positions, ``[M, C]`` against ``[N, C]``, in O(M N C). Pure functions on one
example; ``statistics.py`` draws the samples. The kernels that reduce to moments (linear,
degree-2 polynomial) are exact over all positions in ``losses.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nst_jax.losses import check_rank


def squared_distances(x: jax.Array, y: jax.Array) -> jax.Array:
    """``[M, N]`` matrix of ``‖x_i − y_j‖²`` for ``x`` ``[M, C]``, ``y`` ``[N, C]``.

    Expanded as ``‖x‖² + ‖y‖² − 2 xᵀy``, so memory is O(M N), not O(M N C).
    """
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    d2 = (
        jnp.sum(jnp.square(x), axis=1)[:, None]
        + jnp.sum(jnp.square(y), axis=1)[None, :]
        - 2.0 * jnp.matmul(x, y.T, precision=jax.lax.Precision.HIGHEST)
    )
    return jnp.maximum(d2, 0.0)


def _pair_mean(k: jax.Array, distinct: bool) -> jax.Array:
    """Mean of a kernel matrix over its pairs; with ``distinct`` (``k`` square, of one set
    of rows with itself), over i ≠ j only."""
    if not distinct:
        return jnp.mean(k)
    n = k.shape[0]
    return (jnp.sum(k) - jnp.trace(k)) / (n * (n - 1))


def gaussian_kernel_mean(
    x: jax.Array, y: jax.Array, sigma: jax.Array, *, distinct: bool = False
) -> jax.Array:
    """Mean of ``exp(−‖x_i − y_j‖² / (2σ²))`` over all ``[M] x [N]`` pairs (``distinct``:
    ``y`` is ``x``, and the pairs i = j are left out)."""
    return _pair_mean(jnp.exp(-squared_distances(x, y) / (2.0 * jnp.square(sigma))), distinct)


def poly_kernel_mean(
    x: jax.Array, y: jax.Array, *, c: float, degree: int, distinct: bool = False
) -> jax.Array:
    """Mean of ``(x_iᵀy_j + c)^d`` over all ``[M] x [N]`` pairs (``distinct``: ``y`` is
    ``x``, and the pairs i = j are left out)."""
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    k = jnp.power(jnp.matmul(x, y.T, precision=jax.lax.Precision.HIGHEST) + c, degree)
    return _pair_mean(k, distinct)


def mmd2_poly(
    x: jax.Array,
    y: jax.Array,
    *,
    c: float = 0.0,
    degree: int = 2,
    kyy: jax.Array | None = None,
    sampled: bool = False,
) -> jax.Array:
    """MMD² with ``k(x, y) = (xᵀy + c)^d`` over all pairs of the rows given.

    O(M N C): callers pass samples of positions. For d = 2, ``mmd2_poly2`` is exact over
    all positions in O(M C²). With ``sampled`` (rows drawn with replacement), the
    within-set means leave out the pairs i = j, an unbiased estimate of the MMD² of the
    distributions drawn from: ``k(x_i, x_i)`` is no sample of ``k(x, x')``, and at 1/M
    of the mean it left a floor (3.6% of a zero output's loss at d = 3, 1,024 samples)
    whose gradient shrinks the features.

    Args:
      x: ``[M, C]`` output feature samples.
      y: ``[N, C]`` style feature samples.
      kyy: ``E k(y, y')`` if already known (it does not depend on the output).
    """
    check_rank("mmd2_poly", x, 2)
    if kyy is None:
        kyy = poly_kernel_mean(y, y, c=c, degree=degree, distinct=sampled)
    kxx = poly_kernel_mean(x, x, c=c, degree=degree, distinct=sampled)
    return kxx + kyy - 2.0 * poly_kernel_mean(x, y, c=c, degree=degree)


def mmd2_gaussian(
    x: jax.Array,
    y: jax.Array,
    sigma: jax.Array,
    *,
    kyy: jax.Array | None = None,
    sampled: bool = False,
):
    """MMD² with the Gaussian kernel ``k(x, y) = exp(−‖x − y‖² / (2σ²))`` (Li et al. 2017).

    ``MMD² = E k(x, x') + E k(y, y') − 2 E k(x, y)``, over all pairs of the rows given;
    ``sampled`` as for ``mmd2_poly``. Memory and time are O(M N C): callers pass a sample
    of positions (``statistics.py`` draws a fresh, seeded sample of a fixed size, every
    Adam step and every ``solver.RESAMPLE_EVERY`` L-BFGS steps), never all of them.

    Args:
      x: ``[M, C]`` output feature samples.
      y: ``[N, C]`` style feature samples.
      sigma: kernel bandwidth, a scalar.
      kyy: ``E k(y, y')`` if already known (it does not depend on the output).
    """
    check_rank("mmd2_gaussian", x, 2)
    kyy = gaussian_kernel_mean(y, y, sigma, distinct=sampled) if kyy is None else kyy
    kxx = gaussian_kernel_mean(x, x, sigma, distinct=sampled)
    return kxx + kyy - 2.0 * gaussian_kernel_mean(x, y, sigma)
