"""Memory: what a step needs, what is free, and the largest size that fits.

Two checks guard a run (the task layer makes them, once: ``tasks.policy``): a quick
analytic estimate before anything is resized or compiled (``check_estimate``), and
XLA's own figure for the compiled step (``check_compiled``). Either failing raises
``ValueError`` naming the largest ``--size`` that fits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax

from nst_jax.nets.conv import WINOGRAD_FROM_BLOCK
from nst_jax.nets.network import NetConfig
from nst_jax.nets.remat import strip_rows
from nst_jax.nets.vgg import BLOCKS, LAYERS, WIDTHS, feature_shape, layer
from nst_jax.objective import LossConfig
from nst_jax.statistics import feature_layers


def available_bytes(device: jax.Device | None = None) -> int | None:
    """Free memory on ``device`` (this process's first by default: in a multi-host run
    another process's devices have no statistics here): MemAvailable on CPU, the
    allocator's headroom on GPU/TPU."""
    device = device or jax.local_devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        limit = stats.get("bytes_limit")
        return None if limit is None else int(limit - stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def estimate_bytes(
    shape: tuple[int, int], loss: LossConfig, net: NetConfig, *, widths: Sequence[int] = WIDTHS
) -> int:
    """A quick estimate of one step's memory at ``shape`` = (H, W), before compiling.

    ``net.convolution`` must be an algorithm, not ``"auto"``. Counts float32 buffers:
    the kernels with the ones the algorithm derives, 5 per histogram layer (its quantile
    target and the matching's temporaries), and:

    * plain: 16 image-sized buffers for the optimiser, and every VGG layer's up to the
      deepest one used, times 2.5 (XLA keeps about 2x for the default objective: each
      activation and, in turn, its gradient, plus workspace). Winograd also holds one
      layer's transformed tiles and products, 4x its input and 4x its output.
    * ``net.remat`` (``remat.py``): 8 image-sized buffers for the optimiser, the layers
      held whole (content layers, and those of the statistics that are not sums over
      positions) twice (with their gradients), the content targets, each block's input
      and the largest one's gradient, and 6 buffers of the largest strip (14 with
      Winograd's tiles); all times 1.1.

    It errs high, by design; tests check it against XLA's own figure for the step.
    """
    if net.convolution == "auto":
        raise ValueError("estimate_bytes needs a convolution algorithm, not 'auto'")
    h, w = shape
    style = loss.all_style_layers if loss.style_weight else ()
    used = loss.content_layers + style
    whole = loss.content_layers + (feature_layers(loss) if style else ())
    on = style and "histogram" in dict(loss.style_loss)
    histogram = {name for name, _ in loss.statistic_layers("histogram")} if on else set()
    deepest = max(layer(name).order for name in used)
    elements, weights, tiles, channels = 0, 0, 0, 3
    held, strip, extra, gradient = 3 * h * w, 0, 0, 0  # The image, with remat.
    for name in LAYERS[: deepest + 1]:
        info = layer(name)
        size, width = _positions(shape, name), widths[info.block - 1]
        elements += size * width
        extra += 5 * size * width * (name in histogram)
        held += size * width * (name in loss.content_layers)  # The content target.
        held += 2 * size * width * (name in whole)
        if info.is_pool:
            continue
        first = info.index == 1
        held += size * channels * first  # The block's input.
        gradient = max(gradient, size * channels * first)
        halo = BLOCKS[info.block - 1]
        tiled = net.convolution == "winograd" and info.block >= WINOGRAD_FROM_BLOCK
        buffers = 14 if tiled else 6  # Winograd's tiles and products: 4x each.
        rows, cols = feature_shape(shape, name)
        strip = max(strip, buffers * (strip_rows(rows, halo) + 2 * halo) * cols * width)
        pairs = channels * width
        if tiled:
            weights += 9 * pairs + 2 * 16 * pairs + width
            tiles = max(tiles, 4 * (rows + 1) * (cols + 1) * (channels + width))
        else:  # The kernel, and its backward kernel (derived, or autodiff's).
            weights += 2 * 9 * pairs + width
        channels = width
    if net.remat:
        return 4 * 11 * (held + gradient + strip + extra + weights + 8 * h * w * 3) // 10
    return 4 * (5 * elements // 2 + tiles + extra + weights + 16 * h * w * 3)


def _positions(shape: tuple[int, int], name: str) -> int:
    h, w = feature_shape(shape, name)
    return h * w


def _largest(shape, need: int, have: int) -> int:
    """The ``--size`` that fits ``have`` bytes, if ``shape`` needs ``need``: memory grows
    with the pixel count."""
    return int(max(shape[:2]) * (0.9 * have / need) ** 0.5) // 16 * 16


def _raise_too_big(
    shape, need: int, have: int, batch: int = 1, lean: int | None = None, *, sure: float = 1.0
):
    """``need`` and ``lean`` are estimates that err high when ``sure`` < 1: the message
    then says what ``sure`` of ``need`` is ("at least"), and its sizes stay on the safe side."""
    hint = ""
    if lean is not None:
        hint = (
            f"; --remat needs about {lean / 2**30:.1f} GiB and fits it"
            if lean <= 0.9 * have
            else f", or --size {_largest(shape, lean, have)} with --remat"
        )
    raise ValueError(
        f"{_needs(shape, need, have, batch, sure=sure)}; "
        f"the largest size that fits is about --size {_largest(shape, need, have)}{hint}"
    )


def _needs(shape, need: int, have: int, batch: int = 1, *, sure: float = 1.0) -> str:
    """ "WxH needs about N GiB but F GiB is free" (``sure`` as in ``check``)."""
    h, w = shape[:2]
    what = f"{w}x{h}" if batch == 1 else f"a batch of {batch} at {w}x{h}"
    amount = f"about {need / 2**30:.1f}" if sure == 1 else f"at least {sure * need / 2**30:.1f}"
    return f"{what} needs {amount} GiB but {have / 2**30:.1f} GiB is free"


def shortfall(need: int, shape: tuple[int, int], *, sure: float = 1.0) -> tuple[str, int] | None:
    """Where ``need`` bytes (``sure`` as in ``check``) won't fit: what it needs against
    what is free, as ``check`` words it, and the longest side that would fit; else None."""
    if fits(sure * need):
        return None
    have = available_bytes()
    return _needs(shape, need, have, sure=sure), _largest(shape, need, have)


def fits(need: int) -> bool:
    """Whether ``need`` bytes fit in 90% of the free memory (True when that is unknown)."""
    have = available_bytes()
    return have is None or need <= 0.9 * have


def check(
    need: int,
    shape: tuple[int, int],
    batch: int = 1,
    *,
    lean: int | None = None,
    sure: float = 1.0,
) -> None:
    """Raises ValueError, naming the largest size that fits, if ``need`` bytes won't fit.

    ``lean``: what the same run needs with ``--remat``, for the message; None when the
    run already uses it. ``sure``: for estimates that err high, refuse only when this
    share of ``need`` won't fit.
    """
    if not fits(sure * need):
        _raise_too_big(shape, need, available_bytes(), batch, lean, sure=sure)


# ``estimate_bytes`` errs high, by 1.1-1.7x from 512 to 4096 px (benchmarks/memory.py;
# tests hold it between XLA's figure and 1 / SURELY of it): the quick check refuses a
# size only when this much of the estimate won't fit, and leaves the rest to XLA's figure.
SURELY = 0.55


def check_estimate(
    shape: tuple[int, int],
    loss: LossConfig,
    net: NetConfig,
    batch: int = 1,
    *,
    widths: Sequence[int] = WIDTHS,
) -> None:
    """Raises ValueError, naming the largest size that fits, if ``shape`` surely won't fit.

    Cheap enough to call before resizing anything; the task layer checks again with
    XLA's exact figure once the step is compiled (``check_compiled``).
    """
    need = batch * estimate_bytes(shape, loss, net, widths=widths)
    lean = lean_bytes(shape, loss, net, batch, widths=widths)
    check(need, shape, batch, lean=lean, sure=SURELY)


def lean_bytes(
    shape: tuple[int, int],
    loss: LossConfig,
    net: NetConfig,
    batch: int = 1,
    *,
    widths: Sequence[int] = WIDTHS,
) -> int | None:
    """The estimate with ``remat``, for error messages; None if ``net`` has it already."""
    if net.remat:
        return None
    lean = dataclasses.replace(net, remat=True)
    return batch * estimate_bytes(shape, loss, lean, widths=widths)


def check_compiled(
    compiled, shape: tuple[int, ...], batch: int = 1, *, lean: int | None = None
) -> None:
    """``check`` with XLA's figure for a compiled step; ``lean`` as in ``check``."""
    try:
        analysis = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports; then we just try.
        return
    if analysis is None:
        return
    check(analysis_bytes(analysis), shape, batch, lean=lean)


def analysis_bytes(analysis) -> int:
    """What a compiled program needs, from its ``memory_analysis()``: arguments, outputs
    and temporaries."""
    return (
        analysis.temp_size_in_bytes
        + analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
    )
