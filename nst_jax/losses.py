"""Statistics and losses: small pure functions on one example, ``[H, W, C]`` arrays.

Batch them with ``jax.vmap``. Reductions run in float32 whatever the input dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _check_rank(name: str, x: jax.Array, rank: int) -> None:
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
    _check_rank("content_loss", features, 3)
    if features.shape != target.shape:
        raise ValueError(f"shape mismatch: features {features.shape} vs target {target.shape}")
    diff = features.astype(jnp.float32) - target.astype(jnp.float32)
    return jnp.mean(jnp.square(diff))


def gram(features: jax.Array) -> jax.Array:
    """Gram matrix normalised by the number of positions: ``G = Fᵀ F / M``.

    ``F`` is the ``[M, C]`` matrix of feature vectors at the ``M = H * W`` positions.
    Dividing by ``M`` makes ``G`` an average, comparable across image sizes.

    Args:
      features: ``[H, W, C]``.

    Returns:
      ``[C, C]`` float32, symmetric positive semi-definite.
    """
    _check_rank("gram", features, 3)
    h, w, c = features.shape
    f = features.reshape(h * w, c).astype(jnp.float32)
    return jnp.matmul(f.T, f, precision=jax.lax.Precision.HIGHEST) / (h * w)


def gram_loss(features: jax.Array, target_gram: jax.Array) -> jax.Array:
    """Per-layer style loss ``E_l`` of Gatys et al. (2016), eq. 4.

    ``E_l = 1 / (4 N² M²) Σ (Fᵀ F − Aᵀ A)²``, which with ``G = Fᵀ F / M`` (see ``gram``)
    is ``Σ (G − G_style)² / (4 N²)``: independent of the image size, so the style
    image may differ in size from the content.

    Args:
      features: ``[H, W, C]`` activations of the image being optimised.
      target_gram: ``[C, C]`` normalised Gram matrix of the style image.

    Returns:
      A float32 scalar.
    """
    g = gram(features)
    if g.shape != target_gram.shape:
        raise ValueError(f"shape mismatch: gram {g.shape} vs target {target_gram.shape}")
    c = g.shape[0]
    return jnp.sum(jnp.square(g - target_gram)) / (4.0 * c * c)


def total_variation(image: jax.Array, *, beta: float = 2.0, eps: float = 1e-8) -> jax.Array:
    """Total variation ``mean (Δx² + Δy²)^(β/2)`` over pixels (Mahendran & Vedaldi 2015).

    ``Δx = x[i, j+1] − x[i, j]`` and ``Δy = x[i+1, j] − x[i, j]``, summed over channels,
    averaged over the ``(H − 1)(W − 1)`` positions where both exist. ``β = 2`` is the
    usual smooth penalty; ``β < 2`` preserves edges. ``eps`` keeps the gradient finite
    where the image is flat and ``β < 2``.

    Args:
      image: ``[H, W, C]``, H and W at least 2.

    Returns:
      A float32 scalar, 0 for a constant image.
    """
    _check_rank("total_variation", image, 3)
    x = image.astype(jnp.float32)
    dx = x[:-1, 1:, :] - x[:-1, :-1, :]
    dy = x[1:, :-1, :] - x[:-1, :-1, :]
    sq = jnp.sum(jnp.square(dx) + jnp.square(dy), axis=-1)
    if beta == 2.0:
        return jnp.mean(sq)
    return jnp.mean(jnp.power(sq + eps, beta / 2.0))
