"""The 3x3 'SAME' convolutions of VGG19, and image gradients that run fast.

Style transfer differentiates a frozen network with respect to its input, every step,
so the input gradient of each convolution is half the work. Three ways to run it
(``ALGORITHMS``), all computing the same values as ``jax.lax.conv_general_dilated``:

* ``"plain"``: XLA's convolution and autodiff's gradient, which flips and transposes
  every kernel inside every step (13 copies, 80 MB, about a tenth of a step on XLA:CPU).
  The reference the others are measured against.
* ``"direct"``: XLA's convolution, with the input gradient given a kernel flipped and
  transposed once, ahead of time (``backward_kernel``).
* ``"winograd"``: Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, "Fast
  Algorithms for Convolutional Neural Networks", CVPR 2016). Each 2x2 output tile costs
  16 multiplications per channel pair instead of 36, as 16 batched matmuls between
  transformed 4x4 input tiles and transformed kernels; the input gradient is the same
  algorithm run with the transformed backward kernel. Block 1 stays direct
  (``layer_algorithm``): with 3 and 64 input channels at full resolution, the tile
  transforms cost more than the matmuls save. What it gains on which machine is
  measured by ``benchmarks/step.py`` (figures in the README).

``derive`` computes an algorithm's kernels once, outside the jitted step
(``network.prepare`` does it for every layer); deriving them inside the step would cost
what they save. The parameter gradients stay exact in every algorithm (computed the
plain way; XLA drops them as dead code when only the image gradient is used).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

ALGORITHMS = ("plain", "direct", "winograd")
# Winograd from this VGG block on (see the module docstring and ``layer_algorithm``).
WINOGRAD_FROM_BLOCK = 2

_DIMS = ("NHWC", "HWIO", "NHWC")
# F(2x2, 3x3) transforms: output tile Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A for a 4x4 input tile d.
_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


# Zero padding ((top, bottom), (left, right)): 'SAME' keeps the size.
SAME = ((1, 1), (1, 1))


def direct(x: jax.Array, kernel: jax.Array, padding=SAME) -> jax.Array:
    """``[N, H, W, I] x [3, 3, I, O] -> [N, H + t + b - 2, W + l + r - 2, O]`` for
    ``padding = ((t, b), (l, r))``; the default keeps the size."""
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_DIMS)


def _transposed(padding):
    """The input gradient's padding: a row padded ``p`` on one side is cropped ``p``."""
    return tuple((2 - lo, 2 - hi) for lo, hi in padding)


def backward_kernel(kernel: jax.Array) -> jax.Array:
    """The kernel of the input gradient: ``[3, 3, I, O] -> [3, 3, O, I]``.

    The gradient of ``direct(x, k)`` with respect to ``x`` is ``direct(g, k')``, with
    ``k'`` flipped in space and its channel axes swapped.
    """
    return jnp.flip(kernel, (0, 1)).swapaxes(2, 3)


def winograd_kernel(kernel: jax.Array) -> jax.Array:
    """``G k Gᵀ`` for each channel pair: ``[3, 3, I, O] -> [4, 4, I, O]``."""
    return jnp.einsum("ai,ijco,bj->abco", _G, kernel, _G)


def _tiles(x: jax.Array, axis: int, n: int) -> list[jax.Array]:
    """The 4 rows (along ``axis``) of ``n`` overlapping stride-2 windows of size 4.

    ``x`` has ``2n + 2`` entries along ``axis``; window ``i`` is ``x[2i : 2i + 4]``, and
    its row ``a`` is ``x[2i + a]``: a reshape into pairs and two shifted slices, rather
    than four strided slices (XLA:CPU compiles those slowly).
    """
    shape = x.shape[:axis] + (n + 1, 2) + x.shape[axis + 1 :]
    pairs = x.reshape(shape)
    lo, hi = (jax.lax.slice_in_dim(pairs, s, s + n, axis=axis) for s in (0, 1))
    return [jax.lax.index_in_dim(p, k, axis + 1, keepdims=False) for p in (lo, hi) for k in (0, 1)]


def _bt(rows: list[jax.Array]) -> list[jax.Array]:
    """``Bᵀ`` applied to 4 rows."""
    d0, d1, d2, d3 = rows
    return [d0 - d2, d1 + d2, d2 - d1, d1 - d3]


def _at(rows: list[jax.Array]) -> list[jax.Array]:
    """``Aᵀ`` applied to 4 rows."""
    m0, m1, m2, m3 = rows
    return [m0 + m1 + m2, m1 - m2 - m3]


def winograd(x: jax.Array, u: jax.Array, padding=SAME) -> jax.Array:
    """F(2x2, 3x3) convolution: ``x`` ``[N, H, W, I]``, ``u = winograd_kernel(k)``.

    Equals ``direct(x, k, padding)`` up to float32 rounding (relative error about 1e-6),
    for any ``H`` and ``W``: odd sizes are padded to whole tiles and cropped back.

    Returns:
      ``[N, H + t + b - 2, W + l + r - 2, O]`` for ``padding = ((t, b), (l, r))``.
    """
    n, h, w, c = x.shape
    (top, bottom), (left, right) = padding
    oh, ow = h + top + bottom - 2, w + left + right - 2
    th, tw = (oh + 1) // 2, (ow + 1) // 2  # Output tiles.
    pads = ((0, 0), (top, 2 * th + 2 - h - top), (left, 2 * tw + 2 - w - left), (0, 0))
    xp = jnp.pad(x, pads)
    rows = jnp.stack(_bt(_tiles(xp, 1, th)))  # Bᵀ d: [4, N, th, 2 tw + 2, I]
    v = jnp.stack(_bt(_tiles(rows, 3, tw)), axis=1)  # Bᵀ d B: [4, 4, N, th, tw, I]
    m = jnp.einsum(
        "kpc,kco->kpo", v.reshape(16, -1, c), u.reshape(16, c, -1), precision="highest"
    ).reshape(4, 4, n, th, tw, -1)
    cols = jnp.stack(_at([m[a] for a in range(4)]))  # Aᵀ m: [2, 4, N, th, tw, O]
    y = jnp.stack(_at([cols[:, b] for b in range(4)]), axis=-2)  # [2, N, th, tw, 2, O]
    y = jnp.moveaxis(y, 0, 2)  # [N, th, 2, tw, 2, O]
    return y.reshape(n, 2 * th, 2 * tw, -1)[:, :oh, :ow]


def _kernel_grad(x: jax.Array, kernel: jax.Array, g: jax.Array, padding=SAME) -> jax.Array:
    return jax.vjp(lambda k: direct(x, k, padding), kernel)[1](g)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def direct_pretransposed(
    x: jax.Array, kernel: jax.Array, kernel_t: jax.Array, padding=SAME
) -> jax.Array:
    """``direct(x, kernel, padding)``, whose input gradient uses ``kernel_t =
    backward_kernel(kernel)``. Autodiff's rearranged kernel is also slow to run, several
    times slower inside a loop on XLA:CPU (the README's memory section)."""
    return direct(x, kernel, padding)


def _direct_fwd(x, kernel, kernel_t, padding):
    return direct(x, kernel, padding), (x, kernel, kernel_t)


def _direct_bwd(padding, residuals, g):
    x, kernel, kernel_t = residuals
    dx = direct(g, kernel_t, _transposed(padding))
    return dx, _kernel_grad(x, kernel, g, padding), jnp.zeros_like(kernel_t)


direct_pretransposed.defvjp(_direct_fwd, _direct_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def winograd_conv(
    x: jax.Array, kernel: jax.Array, u: jax.Array, u_t: jax.Array, padding=SAME
) -> jax.Array:
    """``direct(x, kernel, padding)`` by Winograd both ways: ``u``, ``u_t`` transform the
    kernel and its ``backward_kernel``."""
    return winograd(x, u, padding)


def _winograd_fwd(x, kernel, u, u_t, padding):
    return winograd(x, u, padding), (x, kernel, u, u_t)


def _winograd_bwd(padding, residuals, g):
    x, kernel, u, u_t = residuals
    dx = winograd(g, u_t, _transposed(padding))
    return dx, _kernel_grad(x, kernel, g, padding), jnp.zeros_like(u), jnp.zeros_like(u_t)


winograd_conv.defvjp(_winograd_fwd, _winograd_bwd)


def layer_algorithm(algorithm: str, block: int) -> str:
    """The algorithm a layer of VGG block ``block`` runs in a network of ``algorithm``:
    Winograd networks run their first block direct (see the module docstring)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"convolution must be one of {ALGORITHMS}, got {algorithm!r}")
    if algorithm == "winograd" and block < WINOGRAD_FROM_BLOCK:
        return "direct"
    return algorithm


def derived_shapes(algorithm: str, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the kernels a layer of ``algorithm`` derives from its kernel
    of ``shape`` = ``[3, 3, I, O]``."""
    i, o = shape[2], shape[3]
    if algorithm == "direct":
        return {"kernel_t": (3, 3, o, i)}
    if algorithm == "winograd":
        return {"winograd": (4, 4, i, o), "winograd_t": (4, 4, o, i)}
    return {}


def derive(algorithm: str, kernel: jax.Array) -> dict[str, jax.Array]:
    """The kernels ``derived_shapes`` names, computed from ``kernel`` ``[3, 3, I, O]``."""
    if algorithm == "direct":
        return {"kernel_t": backward_kernel(kernel)}
    if algorithm == "winograd":
        return {
            "winograd": winograd_kernel(kernel),
            "winograd_t": winograd_kernel(backward_kernel(kernel)),
        }
    return {}


def apply(
    algorithm: str, x: jax.Array, kernel: jax.Array, derived: dict, padding=SAME
) -> jax.Array:
    """``direct(x, kernel, padding)``, run by ``algorithm`` with its ``derived`` kernels.

    ``[N, H, W, I] -> [N, H + t + b - 2, W + l + r - 2, O]``.
    """
    if algorithm == "winograd":
        return winograd_conv(x, kernel, derived["winograd"], derived["winograd_t"], padding)
    if algorithm == "direct":
        return direct_pretransposed(x, kernel, derived["kernel_t"], padding)
    return direct(x, kernel, padding)


# ``in_strips`` cuts an output into strips of about this many rows. 24 measured best of
# 16-48 for the generators (benchmarks/feedforward.py).
STRIP_ROWS = 24
# And into at most this many, so that a program's size (and compile time) stops growing
# with the image: at 512-1024 px, 8 strips ran as fast as 14-28.
MAX_STRIPS = 8


def in_strips(lhs, rhs, window_strides, padding, **kwargs) -> jax.Array:
    """``jax.lax.conv_general_dilated`` for NHWC inputs, run on XLA:CPU as one
    convolution per horizontal strip of about ``STRIP_ROWS`` output rows (at most
    ``MAX_STRIPS``, unrolled: a fixed count, whatever the image size); the same
    arguments (``flax.linen.Conv(conv_general_dilated=...)``).

    Why: XLA:CPU's convolutions of few channels (8-48, a generator's) run slower per
    pixel on a whole 256 px image than on strips of it, which also run on separate
    cores: a generator's forward pass at 256-1024 px is markedly faster (figures in
    benchmarks/results/feedforward.md and the README). The values are the same: each
    output row depends on its ``kh`` input rows alone. Only unstrided 'VALID'
    convolutions wider than 1x1 (the generators' own, padded beforehand) are cut;
    anything else, and every other backend, is passed on.
    """
    conv_fn = functools.partial(jax.lax.conv_general_dilated, **kwargs)
    kh = rhs.shape[0]
    valid = padding == "VALID" or all(tuple(p) == (0, 0) for p in padding)
    out_rows = lhs.shape[1] - kh + 1
    strips = min(MAX_STRIPS, round(out_rows / STRIP_ROWS))
    cpu = jax.default_backend() == "cpu"
    if not cpu or kh == 1 or tuple(window_strides) != (1, 1) or not valid or strips < 2:
        return conv_fn(lhs, rhs, window_strides, padding)
    rows = -(-out_rows // strips)
    parts = [
        conv_fn(lhs[:, top : min(top + rows, out_rows) + kh - 1], rhs, window_strides, padding)
        for top in range(0, out_rows, rows)
    ]
    return jnp.concatenate(parts, axis=1)
