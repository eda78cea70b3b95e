"""Statistics and losses: small pure functions on one example, ``[H, W, C]`` arrays.

Each formula is written once. The moment statistics (Gram matrices, means, standard
deviations) are made of sums over positions (``moment_sums``), which ``remat.py`` takes
strip by strip, and their losses are distances between statistics (``gram_distance``,
``mean_std_distance``, ...): the objective runs those, and the feature-level losses
(``gram_loss``, ``mean_std_loss``, ...) are the same distances of the same statistics.
Batch with ``jax.vmap``. Reductions run in float32 whatever the input dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def check_rank(name: str, x: jax.Array, rank: int) -> None:
    if x.ndim != rank:
        raise ValueError(f"{name} expects a rank-{rank} array, got shape {x.shape}")


def content_loss(features: jax.Array, target: jax.Array) -> jax.Array:
    """Mean squared feature difference (Gatys et al. 2016, eq. 1, averaged not summed).

    ``L = mean((F - P)^2)``. Averaging over the ``H * W * C`` entries makes the default
    weight carry across image sizes.

    Args:
      features: ``[H, W, C]`` activations of the image being optimised.
      target: ``[H, W, C]`` activations of the content image.

    Returns:
      A float32 scalar.
    """
    check_rank("content_loss", features, 3)
    if features.shape != target.shape:
        raise ValueError(f"shape mismatch: features {features.shape} vs target {target.shape}")
    diff = features.astype(jnp.float32) - target.astype(jnp.float32)
    return jnp.mean(jnp.square(diff))


def normalized_content_loss(features: jax.Array, target: jax.Array) -> jax.Array:
    """``‖F − P‖² / ‖P‖²``, the reconstruction error of Mahendran & Vedaldi (2015), eq. 1.

    Relative to the target's own energy, so one weight serves every layer.

    Args:
      features: ``[H, W, C]`` activations of the image being optimised.
      target: ``[H, W, C]`` activations of the image to reconstruct.

    Returns:
      A float32 scalar; 1 for all-zero features.
    """
    check_rank("normalized_content_loss", features, 3)
    if features.shape != target.shape:
        raise ValueError(f"shape mismatch: features {features.shape} vs target {target.shape}")
    p = target.astype(jnp.float32)
    diff = features.astype(jnp.float32) - p
    return jnp.sum(jnp.square(diff)) / jnp.maximum(jnp.sum(jnp.square(p)), 1e-12)


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


@jax.custom_vjp
def _weighted_gram(f: jax.Array, m: jax.Array) -> jax.Array:
    """``Σ_i m_i f_i f_iᵀ``: ``f`` ``[M, C]``, ``m`` ``[M, 1]`` or a scalar -> ``[C, C]``.

    Its gradient is one matmul, ``df = m (f S)`` with ``S = Ḡ + Ḡᵀ``, where autodiff
    makes two (``f Ḡ`` and ``f Ḡᵀ``), each as large as the features: at 2048 px, a
    third full-resolution buffer at conv1_1.
    """
    if m.ndim == 0:  # Scaling G, not F, spares a copy of the features.
        return _matmul(f.T, f) * m
    return _matmul((f * m).T, f)


def _weighted_gram_fwd(f, m):
    g = _weighted_gram(f, m)
    return g, (f, m, g)


def _weighted_gram_bwd(residuals, g_bar):
    f, m, g = residuals
    s = g_bar + g_bar.T
    if m.ndim == 0:  # Scaling S, not f S, spares a copy of the gradient.
        return _matmul(f, s * m), jnp.sum(g * g_bar) / m
    fs = _matmul(f, s)
    dm = 0.5 * jnp.sum(f * fs, axis=-1, keepdims=True)  # dG/dm_i = f_iᵀ Ḡ f_i.
    return m * fs, dm


_weighted_gram.defvjp(_weighted_gram_fwd, _weighted_gram_bwd)


MOMENTS = ("sum", "sq", "gram")


def moment_sums(
    features: jax.Array, kinds: tuple[str, ...], *, masks: jax.Array | None = None
) -> dict[str, jax.Array]:
    """Sums over positions that the moment statistics (``moment_statistics``) are made of.

    ``"sum"``: ``Σ_i m_i f_i``; ``"sq"``: ``Σ_i m_i f_i²``; ``"gram"``: ``Σ_i m_i f_i f_iᵀ``,
    with its one-matmul gradient. They add up over any split of the positions, so
    ``remat.py`` takes them strip by strip and never holds the features whole.

    Args:
      features: ``[H, W, C]``.
      kinds: names from ``MOMENTS``.
      masks: optional ``[R, H, W]`` non-negative masks (soft masks weigh positions),
        one sum per region; without them every position weighs 1 and the sums have no
        region axis.

    Returns:
      ``{kind: [(R,) C]}``, and ``[(R,) C, C]`` for ``"gram"``; float32.
    """
    check_rank("moment_sums", features, 3)
    h, w, c = features.shape
    f = features.reshape(h * w, c).astype(jnp.float32)
    if masks is None:
        sums = {
            "sum": lambda: jnp.sum(f, axis=0),
            "sq": lambda: jnp.sum(jnp.square(f), axis=0),
            "gram": lambda: _weighted_gram(f, jnp.float32(1.0)),
        }
    else:
        if masks.ndim != 3 or masks.shape[1:] != (h, w):
            raise ValueError(f"masks {masks.shape} must be [R, {h}, {w}]")
        m = masks.reshape(-1, h * w).astype(jnp.float32)
        sums = {
            "sum": lambda: _matmul(m, f),
            "sq": lambda: _matmul(m, jnp.square(f)),
            "gram": lambda: jax.vmap(lambda r: _weighted_gram(f, r[:, None]))(m),
        }
    return {kind: sums[kind]() for kind in kinds}


def moment_statistics(
    sums: dict[str, jax.Array], count: jax.Array | float, *, eps: float = 1e-5
) -> dict[str, jax.Array]:
    """Normalised statistics from ``moment_sums`` over ``count`` (``Σ_i m_i``) positions.

    ``"gram"``: ``G = Σ_i m_i f_i f_iᵀ / Σ_i m_i``; ``"mean"``: ``μ = Σ_i m_i f_i / Σ_i m_i``;
    ``"std"`` (needs ``"sum"`` and ``"sq"``): ``σ = sqrt(E[f²] − E[f]² + eps)``.

    Args:
      sums: ``{kind: [(R,) C, ...]}``.
      count: a scalar, or ``[R]`` per region; clamped to at least 1e-8.

    Returns:
      ``{"gram": [(R,) C, C], "mean": [(R,) C], "std": [(R,) C]}``, those the sums allow.
    """
    n = jnp.maximum(jnp.asarray(count, jnp.float32), 1e-8)[..., None]
    out = {}
    if "gram" in sums:
        out["gram"] = sums["gram"] / n[..., None]
    if "sum" in sums:
        out["mean"] = sums["sum"] / n
        if "sq" in sums:
            var = jnp.maximum(sums["sq"] / n - jnp.square(out["mean"]), 0.0)
            out["std"] = jnp.sqrt(var + eps)
    return out


def _one_region(features: jax.Array, mask: jax.Array | None):
    """``(masks [1, H, W] or None, count)`` for a single optional ``[H, W]`` mask."""
    if mask is None:
        return None, features.shape[0] * features.shape[1]
    if mask.shape != features.shape[:2]:
        raise ValueError(f"mask {mask.shape} must match features {features.shape[:2]}")
    return mask[None], jnp.sum(mask)[None]


def _statistics(features: jax.Array, kinds: tuple[str, ...], mask: jax.Array | None):
    check_rank("statistics", features, 3)
    masks, count = _one_region(features, mask)
    stats = moment_statistics(moment_sums(features, kinds, masks=masks), count)
    return stats if mask is None else jax.tree.map(lambda v: v[0], stats)


def gram(features: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
    """Gram matrix normalised by the number of positions: ``G = Fᵀ F / M``.

    ``F`` is the ``[M, C]`` matrix of feature vectors at the ``M = H * W`` positions.
    Dividing by ``M`` makes ``G`` an average, comparable across image sizes. With a
    ``mask`` (a soft mask ``m``, Gatys et al. 2017) it is the weighted average
    ``Σ_i m_i f_i f_iᵀ / Σ_i m_i``: for a binary mask, the Gram matrix of the masked
    positions normalised by their number ``M_l``, as in the paper. For a soft mask the
    paper's guided Gram ``(T ∘ F)ᵀ(T ∘ F)`` weighs a position by ``m_i²``; this weighs
    it by ``m_i``, deliberately: a weighted mean of ``f_i f_iᵀ``, so that the average-pooled
    masks at each layer, fractional along every region's edge, count each position by
    the share of it inside the region, and the Gram matrix of the features stays that
    of a distribution (the mean, ``sum / Σ m``, is weighted alike).

    Args:
      features: ``[H, W, C]``.
      mask: optional ``[H, W]`` non-negative mask.

    Returns:
      ``[C, C]`` float32, symmetric positive semi-definite.
    """
    return _statistics(features, ("gram",), mask)["gram"]


def feature_mean(features: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
    """Per-channel mean over positions, ``[H, W, C] -> [C]``, optionally mask-weighted."""
    return _statistics(features, ("sum",), mask)["mean"]


def mean_std(features: jax.Array, *, mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and standard deviation over positions (mask-weighted if given).

    Args:
      features: ``[H, W, C]``.
      mask: optional ``[H, W]`` non-negative mask.

    Returns:
      ``(mean [C], std [C])``, float32; the std as ``moment_statistics`` gives it.
    """
    stats = _statistics(features, ("sum", "sq"), mask)
    return stats["mean"], stats["std"]


def gram_distance(g: jax.Array, target: jax.Array) -> jax.Array:
    """``Σ (G − G_s)² / (4 N²)``: the per-layer style loss ``E_l`` of Gatys et al. (2016),
    eq. 4, between normalised Gram matrices ``[(R,) N, N]`` (summed over regions).

    With ``G = Fᵀ F / M`` (see ``gram``), ``E_l = 1 / (4 N² M²) Σ (Fᵀ F − Aᵀ A)²`` is this:
    independent of the image size, so the style image may differ in size from the content.
    """
    if g.shape != target.shape:
        raise ValueError(f"shape mismatch: gram {g.shape} vs target {target.shape}")
    n = g.shape[-1]
    return jnp.sum(jnp.square(g - target)) / (4.0 * n * n)


def mean_distance(mean: jax.Array, target: jax.Array) -> jax.Array:
    """``‖μ − μ_s‖²``: MMD² with the linear kernel ``k(x, y) = xᵀy`` (Li et al. 2017),
    which matches only the feature means; summed over regions if any."""
    return jnp.sum(jnp.square(mean - target))


def mean_std_distance(
    mean: jax.Array, std: jax.Array, target: tuple[jax.Array, jax.Array]
) -> jax.Array:
    """``1/C Σ_c (μ_c − μ_c^s)² + (σ_c − σ_c^s)²``: the batch-norm-statistics style loss
    (Li et al. 2017, "Demystifying NST", eq. 12); summed over regions if any."""
    target_mean, target_std = target
    per = jnp.square(mean - target_mean) + jnp.square(std - target_std)
    return jnp.sum(jnp.mean(per, axis=-1))


def poly2_mmd2(
    g: jax.Array,
    mean: jax.Array,
    target_gram: jax.Array,
    target_mean: jax.Array,
    *,
    c: float = 0.0,
) -> jax.Array:
    """MMD² with the kernel ``k(x, y) = (xᵀy + c)²``, exactly, from moments.

    With ``G = Xᵀ X / M`` and ``μ = mean(X)``, the mean of ``k`` over all pairs is
    ``⟨G_x, G_y⟩_F + 2c μ_xᵀμ_y + c²``, so ``MMD² = ‖G_x − G_y‖²_F + 2c ‖μ_x − μ_y‖²``.
    With ``c = 0`` this is ``4 N² E_l``, Gatys' Gram loss (Li et al. 2017, Theorem 1).
    """
    return 4.0 * g.shape[-1] ** 2 * gram_distance(g, target_gram) + 2.0 * c * mean_distance(
        mean, target_mean
    )


def gram_loss(
    features: jax.Array, target_gram: jax.Array, *, mask: jax.Array | None = None
) -> jax.Array:
    """``gram_distance(gram(features), target_gram)``: Gatys et al.'s ``E_l``.

    Args:
      features: ``[H, W, C]`` activations of the image being optimised.
      target_gram: ``[C, C]`` normalised Gram matrix of the style image.
      mask: optional ``[H, W]`` mask: compare the Gram matrix of this region only.

    Returns:
      A float32 scalar.
    """
    return gram_distance(gram(features, mask=mask), target_gram)


def mean_std_loss(
    features: jax.Array,
    target: tuple[jax.Array, jax.Array],
    *,
    mask: jax.Array | None = None,
) -> jax.Array:
    """``mean_std_distance`` of the features' ``mean_std`` from ``target``.

    Args:
      features: ``[H, W, C]``.
      target: ``(mean [C], std [C])`` of the style features (see ``mean_std``).
      mask: optional ``[H, W]`` mask: compare this region's statistics only.
    """
    return mean_std_distance(*mean_std(features, mask=mask), target)


def _rows_as_features(x: jax.Array, name: str) -> jax.Array:
    check_rank(name, x, 2)
    return x[None]


def mmd2_linear(x: jax.Array, y_mean: jax.Array) -> jax.Array:
    """MMD² with the linear kernel: ``mean_distance(mean(x), y_mean)``, exact in O(M C).

    Args:
      x: ``[M, C]`` feature vectors of the output, one per position.
      y_mean: ``[C]`` mean feature vector of the style.
    """
    return mean_distance(feature_mean(_rows_as_features(x, "mmd2_linear")), y_mean)


def mmd2_poly2(x: jax.Array, y_gram: jax.Array, y_mean: jax.Array, *, c: float = 0.0):
    """MMD² with the kernel ``(xᵀy + c)²`` over all positions, in O(M C²): ``poly2_mmd2``
    of ``x``'s moments.

    Args:
      x: ``[M, C]`` output features.
      y_gram: ``[C, C]`` normalised Gram matrix of the style (``gram``).
      y_mean: ``[C]`` mean of the style features.
    """
    stats = _statistics(_rows_as_features(x, "mmd2_poly2"), ("gram", "sum"), None)
    return poly2_mmd2(stats["gram"], stats["mean"], y_gram, y_mean, c=c)


def total_variation(image: jax.Array, *, beta: float = 2.0, eps: float = 1e-8) -> jax.Array:
    """Total variation ``mean (Δx² + Δy²)^(β/2)`` over pixels (Mahendran & Vedaldi 2015).

    ``Δx = x[i, j+1] − x[i, j]`` and ``Δy = x[i+1, j] − x[i, j]``, summed over channels,
    averaged over the ``(H − 1)(W − 1)`` positions where both exist. ``β = 2`` is the
    usual smooth penalty; ``β < 2`` preserves edges. ``eps`` keeps the gradient finite
    where the image is flat and ``β < 2``.

    Args:
      image: ``[H, W, C]``, H and W at least 2.

    Returns:
      A float32 scalar; for a constant image 0 at ``β = 2``, else ``eps^(β/2)``, a
      constant that moves no gradient.
    """
    check_rank("total_variation", image, 3)
    x = image.astype(jnp.float32)
    dx = x[:-1, 1:, :] - x[:-1, :-1, :]
    dy = x[1:, :-1, :] - x[:-1, :-1, :]
    sq = jnp.sum(jnp.square(dx) + jnp.square(dy), axis=-1)
    if beta == 2.0:
        return jnp.mean(sq)
    return jnp.mean(jnp.power(sq + eps, beta / 2.0))


def alpha_norm(image: jax.Array, *, alpha: float = 6.0) -> jax.Array:
    """The α-norm regulariser ``mean |x − mean(x)|^α`` (Mahendran & Vedaldi 2015, eq. 3).

    ``‖x‖_α^α`` on the image less its own per-channel mean, averaged over pixels and
    channels so its weight carries across sizes. Large α penalises the pixels furthest
    from the mean, spikes and saturated outliers, far more than the rest. It leaves a
    uniform shift alone: the range itself is kept by clipping (Adam's projected steps,
    and every result's clip to [0, 1]).

    Args:
      image: ``[H, W, C]``.
    """
    check_rank("alpha_norm", image, 3)
    x = image.astype(jnp.float32)
    x = x - jnp.mean(x, axis=(0, 1), keepdims=True)
    return jnp.mean(jnp.power(jnp.abs(x) + 1e-12, alpha))
