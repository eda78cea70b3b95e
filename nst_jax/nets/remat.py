"""VGG19 features whose gradient needs little memory (``NetConfig.remat``).

Without it, the backward pass of a step holds every activation up to the deepest layer
used: gigabytes at 2048 px. ``features`` keeps only each VGG block's input instead, and
runs every block in horizontal strips, both ways: a strip recomputes its rows of the
block from the block's input, with a halo of one row per convolution, and adds its
share of the input gradient. No block's activations, nor their gradients, exist whole
in the backward pass. The style statistics that are sums over positions (Gram matrices,
means, variances: ``losses.moment_sums``) are taken strip by strip as well, forward, and
in the backward pass each strip adds their gradient to its rows' own: a style layer is
never held whole. The cost is one more forward pass, in strips; what that costs in time
and saves in memory is measured by ``benchmarks/memory.py`` (figures in the README).

A strip is exact, not an approximation: its outputs depend on input rows within
``halo`` of its own (one 3x3 convolution per row), pooling windows never straddle two
strips (strips start at even rows), and the input gradient is the sum of the strips'
shares. Zero padding at the image's edges is reproduced by zeroing rows outside it.

Why strips, on XLA:CPU:

* ``jax.checkpoint`` does not work there: XLA drops the optimisation barriers that keep
  a recomputation apart from the forward pass, merges the two, and so keeps every
  activation anyway (the README's memory section has the measurement). A loop's body is
  never merged.
* The forward pass runs in strips too, each output written into one buffer: on the
  whole image, XLA computes a ReLU once per consumer (the next convolution, the Gram
  matrix) and holds both copies.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from nst_jax import losses
from nst_jax.nets import conv
from nst_jax.nets.vgg import BLOCKS, check_layers, layer, pool2x2

# Each block's backward pass runs in about this many strips; more saves little memory
# (each strip's buffers are 1/STRIPS of a layer's) and costs loop overhead.
STRIPS = 16
# Rows per strip are at least this many times the halo, so that recomputing the halo
# costs at most 2/MIN_STRIP_TO_HALO of the block; taller strips hold more memory. 16 was
# the best trade measured by benchmarks/memory.py against 8 and 32.
MIN_STRIP_TO_HALO = 16


def _conv_rows(x: jax.Array, params: dict, algorithm: str) -> jax.Array:
    """3x3 convolution, 'VALID' over rows and 'SAME' over columns, so it loses 2 rows.

    ``[N, R, W, I] -> [N, R - 2, W, O]``; ``params`` has the kernels ``algorithm``
    derives (``_prepare``).
    """
    y = conv.apply(algorithm, x, params["kernel"], params, ((0, 0), (1, 1)))
    return y + params["bias"][None, None, None]


def _strip(
    params: dict,
    x: jax.Array,
    first: jax.Array,
    *,
    height: int,
    names: tuple[str, ...],
    pooling: str,
    algorithm: str,
) -> dict[str, jax.Array]:
    """A block's outputs on rows ``first .. first + R``, as on the whole input.

    Args:
      params: the block's first ``h`` layers, ``{name: {kernel, bias, kernel_t}}``:
        those that ``names`` need.
      x: ``[N, R + 2 h, W, C]``, rows ``first - h .. first + R + h`` of the block's input
        (zero outside ``0 .. height``).
      first: the first row (even, so that pooling windows align); may be traced.
      height: the block input's height.
      names: outputs: the block's layer names and ``"pool"``, its pooled last layer.
      algorithm: the strips' convolution algorithm (``_prepare``).

    Returns:
      ``{name: [N, R / s, W / s, C]}``: rows ``first / s ..`` of each output, where ``s``
      is 2 for ``"pool"`` and 1 otherwise.
    """
    layers = sorted(params)  # conv{b}_1, conv{b}_2, ...
    halo = len(layers)
    out = {}
    for i, name in enumerate(layers):
        x = jax.nn.relu(_conv_rows(x, params[name], algorithm))
        lost = halo - 1 - i  # Rows of halo left on each side.
        # The next convolution pads with zeros at the input's edges, not with this
        # layer's response to zeros.
        rows = first - lost + jnp.arange(x.shape[1])
        x = x * ((rows >= 0) & (rows < height))[None, :, None, None].astype(x.dtype)
        out[name] = x[:, lost : x.shape[1] - lost]
    if "pool" in names:
        pooled = pool2x2(out[layers[-1]], pooling)
        # An odd height pools its last row with a zero row past the image into a row
        # that VGG's pooling floors away: zero it, so that it adds nothing to the sums.
        rows = first // 2 + jnp.arange(pooled.shape[1])
        out["pool"] = pooled * (rows < height // 2)[None, :, None, None].astype(pooled.dtype)
    return {name: out[name] for name in names}


def strip_rows(height: int, halo: int) -> int:
    """Rows per strip for an input ``height`` rows high: even, and splitting it into
    ``STRIPS`` strips, or fewer where a strip would be under ``MIN_STRIP_TO_HALO`` halos.
    """
    strips = max(1, min(STRIPS, height // (MIN_STRIP_TO_HALO * halo)))
    return 2 * math.ceil(height / (2 * strips))


def _scale(name: str) -> int:
    return 2 if name == "pool" else 1


def _rows(first: jax.Array, name: str, rows: int) -> jax.Array:
    """Indices of output ``name``'s rows in the strip of ``rows`` input rows from ``first``."""
    return first // _scale(name) + jnp.arange(rows // _scale(name))


def _zero_from(x: jax.Array) -> jax.Array:
    """A scalar 0 that XLA cannot fold into a constant: it waits for ``x``."""
    return jnp.nan_to_num(0 * x.reshape(-1)[0], nan=0.0)


def strip_algorithm(convolution: str, block: int) -> str:
    """What a block's strips run in a network of ``convolution``: its layers' algorithm,
    but never ``"plain"``: autodiff's rearranged kernels run several times slower inside a
    loop on XLA:CPU, so a plain network's strips derive the direct kernels (``_prepare``)."""
    algorithm = conv.layer_algorithm(convolution, block)
    return "direct" if algorithm == "plain" else algorithm


def _strip_params(p: dict, algorithm: str) -> dict:
    """A layer's kernel, bias and ``algorithm``'s kernels: the prepared ones, or derived
    here for a network that runs "plain" (see ``strip_algorithm``)."""
    needed = conv.derived_shapes(algorithm, p["kernel"].shape)
    derived = {k: p[k] for k in needed if k in p}
    if len(derived) < len(needed):
        derived = conv.derive(algorithm, p["kernel"])
    return {"kernel": p["kernel"], "bias": p["bias"], **derived}


def _prepare(params: dict, x: jax.Array, algorithm: str):
    """The strips' parameters, the padded input, the halo, rows per strip and strips."""
    plain = {name: _strip_params(p, algorithm) for name, p in params.items()}
    halo, height = len(params), x.shape[1]
    rows = strip_rows(height, halo)
    strips = -(-height // rows)
    # Zero rows past the last strip too: outputs there are dropped, and get no gradient.
    xp = jnp.pad(x, ((0, 0), (halo, strips * rows - height + halo), (0, 0), (0, 0)))
    return plain, xp, halo, rows, strips


def _key(name: str) -> str:
    """A layer's output name within its block: ``"pool"`` for the block's pooling."""
    return "pool" if layer(name).is_pool else name


def _strip_sums(
    res: dict, masks: dict, first: jax.Array, rows: int, moments: tuple
) -> dict[str, dict[str, jax.Array]]:
    """A strip's share of each ``(layer, kinds)`` in ``moments``: ``losses.moment_sums``
    over its rows, ``{layer: {kind: [N, (R,) C, ...]}}``. Rows past the image are zero in
    ``res`` and in the masks (a gather with fill), so they add nothing."""
    out = {}
    for name, kinds in moments:
        m = masks[name]
        if m is not None:
            m = jnp.take(m, _rows(first, _key(name), rows), axis=1, mode="fill", fill_value=0)
        out[name] = jax.vmap(lambda f, m=m, kinds=kinds: losses.moment_sums(f, kinds, masks=m))(
            res[_key(name)]
        )
    return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def block(
    params: dict,
    x: jax.Array,
    masks: dict,
    names: tuple,
    pooling: str,
    moments: tuple = (),
    algorithm: str = "direct",
) -> tuple[dict, dict]:
    """A VGG19 block computed in strips, both ways, from its input.

    Args:
      params: the block's first layers, ``{name: {kernel, bias, ...}}``: as many as
        ``names`` and ``moments`` need (all of them for ``"pool"``).
      x: ``[N, H, W, C]``, the block's input (the image, or the previous block pooled).
      masks: ``{layer: [R, h, w] | None}``, the masks of each layer in ``moments``.
      names: wanted outputs, layer names of this block or ``"pool"`` (last).
      moments: ``((layer, kinds), ...)``: sums over positions (``losses.moment_sums``)
        taken strip by strip, so that the layer is never held whole, nor its gradient;
        the block's pooling is named ``pool{b}`` here.
      algorithm: the strips' convolutions, ``"direct"`` or ``"winograd"``.

    Returns:
      ``({name: [N, H / s, W / s, C]}, {layer: {kind: [N, (R,) C, ...]}})`` with ``s`` 1,
      or 2 for ``"pool"`` (floored).
    """
    plain, xp, halo, rows, strips = _prepare(params, x, algorithm)
    outputs = _strip_outputs(x, masks, names, pooling, moments, rows, algorithm)

    def body(i, carry):
        out, sums = carry
        first = i * rows
        res, part = outputs(
            plain, jax.lax.dynamic_slice_in_dim(xp, first, rows + 2 * halo, 1), first
        )
        # In place; the last strip's rows past the end are dropped.
        out = {k: out[k].at[:, _rows(first, k, rows)].set(res[k], mode="drop") for k in names}
        return out, jax.tree.map(jnp.add, sums, part)

    # Outputs are written strip by strip into their buffers: a whole-image forward pass
    # would hold some activations twice (XLA:CPU duplicates a ReLU per consumer).
    strip, sum_shapes = jax.eval_shape(outputs, plain, xp[:, : rows + 2 * halo], 0)
    # Zeros computed from the input, so that XLA allocates them as the block starts,
    # not all at the start of the step.
    zero = _zero_from(x)
    out = {
        k: jnp.broadcast_to(zero, (v.shape[0], x.shape[1] // _scale(k), *v.shape[2:]))
        for k, v in strip.items()
    }
    sums = jax.tree.map(lambda v: jnp.zeros(v.shape, v.dtype), sum_shapes)
    return jax.lax.fori_loop(0, strips, body, (out, sums))


def _strip_outputs(x, masks, names, pooling, moments, rows, algorithm):
    """What both passes compute per strip: ``(params, window, first) -> ({name: the
    strip's rows}, {layer: its sums})`` for the block input ``x``."""
    f = functools.partial(
        _strip,
        height=x.shape[1],
        names=_wanted(names, moments),
        pooling=pooling,
        algorithm=algorithm,
    )

    def outputs(p, window, first):
        res = f(p, window, first)
        return {k: res[k] for k in names}, _strip_sums(res, masks, first, rows, moments)

    return outputs


def _wanted(names: tuple, moments: tuple) -> tuple:
    """What a strip computes: the outputs, and the layers whose sums are taken."""
    return tuple(dict.fromkeys(names + tuple(_key(name) for name, _ in moments)))


def _block_fwd(params, x, masks, names, pooling, moments, algorithm):
    out = block(params, x, masks, names, pooling, moments, algorithm)
    return out, (params, x, masks)


def _block_bwd(names, pooling, moments, algorithm, residuals, g):
    params, x, masks = residuals
    g_out, g_sums = g
    plain, xp, halo, rows, strips = _prepare(params, x, algorithm)
    outputs = _strip_outputs(x, masks, names, pooling, moments, rows, algorithm)

    def body(i, carry):
        dplain, dx = carry
        first = i * rows
        window = jax.lax.dynamic_slice_in_dim(xp, first, rows + 2 * halo, axis=1)
        # This strip's rows of each cotangent, zero past the end: a gather with fill
        # reads them in place, where padding would copy a whole gradient. The sums'
        # cotangents are every strip's.
        cotangents = {
            k: jnp.take(g_out[k], _rows(first, k, rows), axis=1, mode="fill", fill_value=0)
            for k in names
        }
        _, vjp = jax.vjp(lambda p, w: outputs(p, w, first), plain, window)
        dp, dwindow = vjp((cotangents, g_sums))
        old = jax.lax.dynamic_slice_in_dim(dx, first, rows + 2 * halo, axis=1)
        dx = jax.lax.dynamic_update_slice_in_dim(dx, old + dwindow, first, axis=1)
        return jax.tree.map(jnp.add, dplain, dp), dx

    # As in the forward pass: zeros allocated as this block's backward pass starts, when
    # the next block's has given the gradient of the pooled output (the last name).
    zero = _zero_from(g_out[names[-1]] if names else jax.tree.leaves(g_sums)[0])
    init = (jax.tree.map(jnp.zeros_like, plain), jnp.broadcast_to(zero, xp.shape))
    dplain, dx = jax.lax.fori_loop(0, strips, body, init)
    dparams = {  # Exact for kernels and biases; none for the derived kernels.
        name: {
            k: dplain[name][k] if k in ("kernel", "bias") else jnp.zeros_like(v)
            for k, v in p.items()
        }
        for name, p in params.items()
    }
    # The masks are constants: no gradient.
    return dparams, dx[:, halo : halo + x.shape[1]], jax.tree.map(jnp.zeros_like, masks)


block.defvjp(_block_fwd, _block_bwd)


def features(
    params: dict,
    x: jax.Array,
    layers: Sequence[str],
    *,
    pooling: str = "avg",
    convolution: str = "direct",
) -> dict[str, jax.Array]:
    """``VGG19(layers).apply({"params": params}, x)``, with a lean backward pass.

    Args:
      params: VGG19 parameters ``{layer: {kernel, bias, ...}}``, with the kernels that
        ``convolution`` derives (or plain ones: then the strips derive their own).
      x: ``[H, W, 3]`` or ``[N, H, W, 3]``, preprocessed.
      layers: names from ``LAYERS``.

    Returns:
      ``{layer: [(N,) h, w, c]}``, as ``VGG19``.
    """
    return features_and_sums(params, x, layers, {}, pooling=pooling, convolution=convolution)[0]


def features_and_sums(
    params: dict,
    x: jax.Array,
    layers: Sequence[str],
    moments: dict[str, tuple[tuple[str, ...], jax.Array | None]],
    *,
    pooling: str = "avg",
    convolution: str = "direct",
) -> tuple[dict[str, jax.Array], dict[str, dict[str, jax.Array]]]:
    """``features``, and sums over positions of other layers, taken strip by strip.

    A layer in ``moments`` alone is never held whole, nor its gradient: at large sizes the
    style layers are the largest buffers of all.

    Args:
      params: as for ``features``.
      x: ``[H, W, 3]`` or ``[N, H, W, 3]``, preprocessed.
      layers: names from ``LAYERS``, returned whole.
      moments: ``{layer: (kinds, masks)}``: ``losses.moment_sums(f, kinds, masks=masks)``
        of each example's layer ``f``; ``masks`` ``[R, h, w]`` at the layer's
        resolution, or None.
      pooling: ``"avg"`` or ``"max"``.
      convolution: the network's algorithm (``conv.ALGORITHMS``).

    Returns:
      ``({layer: [(N,) h, w, c]}, {layer: {kind: [(N,) (R,) C, ...]}})``.
    """
    layers = check_layers(layers) if layers else ()
    if moments:
        check_layers(tuple(moments))
    if not layers and not moments:
        raise ValueError("no layers and no sums asked for")
    batched = x.ndim == 4
    x = x if batched else x[None]
    deepest = max(layer(name).block for name in (*layers, *moments))
    out, sums = {}, {}
    for index in range(1, deepest + 1):
        mine_layers = tuple(name for name in layers if layer(name).block == index)
        names = tuple(name for name in mine_layers if not layer(name).is_pool)
        pooled = index < deepest or len(names) < len(mine_layers)
        names += ("pool",) if pooled else ()
        mine_moments = tuple(
            (name, tuple(kinds))
            for name, (kinds, _) in moments.items()
            if layer(name).block == index
        )
        masks = {name: moments[name][1] for name, _ in mine_moments}
        # The layers up to the deepest wanted, or all of them for the pooling.
        wanted = _wanted(names, mine_moments)
        depth = BLOCKS[index - 1] if "pool" in wanted else max(layer(n).index for n in wanted)
        mine = {f"conv{index}_{i}": params[f"conv{index}_{i}"] for i in range(1, depth + 1)}
        algorithm = strip_algorithm(convolution, index)
        res, part = block(mine, x, masks, names, pooling, mine_moments, algorithm)
        x = res.pop("pool", None)
        if f"pool{index}" in layers:
            out[f"pool{index}"] = x
        out.update(res)
        sums.update(part)
    if not batched:
        out, sums = jax.tree.map(lambda v: v[0], (out, sums))
    return {name: out[name] for name in layers}, sums
