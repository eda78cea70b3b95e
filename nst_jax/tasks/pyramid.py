"""Coarse to fine (Gatys et al. 2017, sec. 6): optimise at a low resolution, upsample,
continue; and the style-scale policy every run from full-resolution inputs follows."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

from nst_jax.config import Config
from nst_jax.image import resize, resize_mask, resized_shape
from nst_jax.nets.vgg import WIDTHS, widths_of
from nst_jax.nets.weights import Weights, load_weights
from nst_jax.objective import Terms
from nst_jax.progress import named
from nst_jax.solve.driver import Result
from nst_jax.solve.solver import term_weights_of
from nst_jax.tasks import policy
from nst_jax.tasks.stylize import MIN_SIDE, _styles, run


def pyramid_sizes(size: int, *, levels: int = 1, start_size: int = 0) -> list[int]:
    """Longest sides of a coarse-to-fine pyramid, each twice the last, ending at ``size``.

    ``start_size`` (if set) wins over ``levels``: the pyramid starts at the smallest
    ``size / 2^k`` that is at least ``start_size``.
    """
    if size < MIN_SIDE or levels < 1 or start_size < 0:
        raise ValueError(f"bad pyramid: size {size}, levels {levels}, start_size {start_size}")
    if start_size:
        if start_size > size:
            raise ValueError(f"start_size {start_size} is above the output size {size}")
        levels = 1
        while size / 2**levels >= start_size:
            levels += 1
    sizes = [round(size / 2**k) for k in reversed(range(levels))]
    if sizes[0] < MIN_SIDE:
        raise ValueError(f"{levels} pyramid levels from {size} px go below {MIN_SIDE} px")
    return sizes


def style_scales(style_scale: float | Sequence[float], n: int) -> list[float]:
    """One positive scale per style, from one for all or one each."""
    scales = [float(style_scale)] * n if np.ndim(style_scale) == 0 else list(style_scale)
    if len(scales) == 1:
        scales = scales * n
    if len(scales) != n or any(not (k > 0 and math.isfinite(k)) for k in scales):
        raise ValueError(f"style_scale needs one positive value, or one per style ({n}): {scales}")
    return scales


def scaled_side(size: int, scale: float, shape: tuple[int, int] | None = None) -> int:
    """A style's longest side for an output of longest side ``size``: ``scale`` times it,
    at least ``MIN_SIDE``, and, for a style of ``shape`` (H, W), enough to keep its
    short side at ``MIN_SIDE`` too. The style's scale relative to the output sets its
    strokes."""
    side = max(MIN_SIDE, round(scale * size))
    if shape is not None:
        side = max(side, math.ceil(MIN_SIDE * max(shape) / min(shape)))
    return side


def scaled_shape(shape: tuple[int, int], size: int, scale: float) -> tuple[int, int]:
    """The (H, W) a style of ``shape`` runs at, for an output of longest side ``size``:
    its longest side at its ``scaled_side``."""
    return resized_shape(shape, scaled_side(size, scale, shape))


def scaled_styles(
    styles: Sequence[np.ndarray], size: int, scales: Sequence[float]
) -> tuple[np.ndarray, ...]:
    """Each style resized to its ``scaled_shape``."""
    return tuple(
        resize(s, scaled_shape(s.shape[:2], size, k)) for s, k in zip(styles, scales, strict=True)
    )


def check_styles(
    plan: policy.Plan,
    config: Config,
    styles: Sequence[np.ndarray],
    size: int,
    scales: Sequence[float],
) -> None:
    """Refuses, before any is resized, a style whose pass at its ``scaled_shape`` won't
    fit in the run ``plan`` plans (``Plan.check_style``)."""
    for s, k in zip(styles, scales, strict=True):
        plan.check_style(config, scaled_shape(s.shape[:2], size, k), scale=k, size=size)


def stylize_pyramid(
    content: np.ndarray,
    style: np.ndarray | Sequence[np.ndarray],
    config: Config = Config(),
    *,
    sizes: Sequence[int],
    level_steps: Sequence[int] | None = None,
    style_scale: float | Sequence[float] = 1.0,
    content_masks: np.ndarray | Sequence[np.ndarray] | None = None,
    style_masks: Sequence[np.ndarray | None] | None = None,
    init_image: np.ndarray | None = None,
    weights: Weights | None = None,
    callback: Callable[[int, int, np.ndarray, dict[str, float]], None] | None = None,
    chunk: int = 10,
    progress: bool | str = True,
) -> list[Result]:
    """Coarse to fine: cheap coarse levels fix the large-scale structure, so the final
    size needs fewer steps. With one size, a single run from full-resolution inputs.

    Every level resizes the full-resolution inputs: the content to the level's longest
    side, each style to ``style_scale`` times it (``scaled_styles``), the masks and the
    start image like the content. Level 0 starts as ``config.init`` says (or from
    ``init_image``); each later level starts from the previous result, upsampled. Each
    level's memory, the styles' passes included, is checked before anything is resized
    for it.

    Args:
      content: ``[H, W, 3]`` at any resolution.
      style: ``[H', W', 3]`` or a list of them, at any resolution.
      config: settings shared by every level; ``config.steps`` per level unless
        ``level_steps`` gives one count per level.
      sizes: longest side per level, coarse to fine (``pyramid_sizes``).
      style_scale: one scale, or one per style.
      content_masks: ``S`` masks ``[h, w]`` at any resolution (resized like the content).
      style_masks: as for ``stylize``.
      init_image: ``[h, w, 3]`` start for level 0, at any resolution.
      callback: ``callback(level, step, image, losses)``.

    Returns:
      One ``Result`` per level run; the last one is the output. After Ctrl-C (or a
      failure) the list ends with the level that stopped, or, stopped while a level
      was setting up, with the level before it, marked interrupted.
    """
    styles = _styles(style)
    scales = style_scales(style_scale, len(styles))
    steps = [config.steps] * len(sizes) if level_steps is None else [int(n) for n in level_steps]
    if len(steps) != len(sizes):
        raise ValueError(f"{len(steps)} step counts for {len(sizes)} pyramid levels")
    widths = WIDTHS if weights is None else widths_of(weights.params)
    results: list[Result] = []
    for level, (size, n) in enumerate(zip(sizes, steps, strict=True)):
        try:  # A signal while a later level sets up keeps the levels before it.
            shape = resized_shape(content.shape[:2], size)
            level_config = dataclasses.replace(config, steps=n)
            plan = policy.plan(level_config, shape, widths=widths)  # Before resizing.
            check_styles(plan, level_config, styles, size, scales)
            weights = weights or load_weights(progress=bool(progress))
            start = results[-1].image if results else init_image
            masks = None
            if content_masks is not None:
                masks = np.stack([resize_mask(m, shape) for m in content_masks])
            label = f"level {level + 1}/{len(sizes)}, {shape[1]}x{shape[0]}"
            one = None
            if callback is not None:

                def one(step, images, losses, level=level):
                    callback(level, step, images[0], {k: float(v[0]) for k, v in losses.items()})

            result = run(
                resize(content, shape)[None],
                scaled_styles(styles, size, scales),
                level_config,
                seeds=[config.seed],
                term_weights=Terms(*(w[None] for w in term_weights_of(config))),
                weights=weights,
                init_images=None if start is None else resize(start, shape)[None],
                blends=None,
                content_masks=masks,
                style_masks=style_masks,
                callback=one,
                chunk=chunk,
                progress=named(progress, label) if len(sizes) > 1 else progress,
                plan=plan,
            ).element(0)
        except KeyboardInterrupt:
            if not results:
                raise
            results[-1] = results[-1]._replace(interrupted=True)
            break
        results.append(result)
        if result.interrupted or result.failure:
            break
    return results
