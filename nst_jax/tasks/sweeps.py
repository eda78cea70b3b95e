"""Grids of runs: one row per setting that changes the program, one column per batch
element of a single vmapped program.

A row is a ``Config`` of its own (a layer to invert, a set of style layers), so each
row compiles once. Columns vary what can be traced: seeds, the TV weight λ_β and the
content/style ratio α/β. They run as one ``jax.vmap``-ed batch.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from nst_jax.config import Config
from nst_jax.grid import labelled_grid
from nst_jax.image import resize, resized_shape
from nst_jax.nets.vgg import WIDTHS, check_layers, layer, widths_of
from nst_jax.nets.weights import Weights, load_weights
from nst_jax.objective import LossConfig, Terms
from nst_jax.progress import named
from nst_jax.solve.driver import Result
from nst_jax.tasks import policy
from nst_jax.tasks.invert import invert_config
from nst_jax.tasks.pyramid import check_styles, scaled_styles, style_scales
from nst_jax.tasks.stylize import _styles, run
from nst_jax.tasks.texture import texture_config


class Grid(NamedTuple):
    """What ``run_grid`` returns.

    Attributes:
      images: ``[R, C, H, W, 3]``; rows not reached after Ctrl-C are white.
      row_labels: ``R`` labels.
      col_labels: ``C`` labels.
      results: the batched ``Result`` of each row that ran.
      interrupted: True if Ctrl-C stopped the sweep.
      failure: why the last row stopped on its own (see ``Result.failure``), or None.
    """

    images: np.ndarray
    row_labels: list[str]
    col_labels: list[str]
    results: list[Result]
    interrupted: bool
    failure: str | None = None


class Columns(NamedTuple):
    seeds: list[int]
    term_weights: Terms  # Fields are [C] arrays.
    labels: list[str]


def _g(x: float) -> str:  # Labels stay ASCII: PIL's built-in font has no Greek.
    return f"{x:.3g}"


def columns(
    loss: LossConfig,
    *,
    seeds: Sequence[int] = (0,),
    tv_weights: Sequence[float] | None = None,
    ratios: Sequence[float] | None = None,
) -> Columns:
    """The batch: every combination of α/β ratio, TV weight and seed, in that order.

    A ratio ``r`` keeps α at ``loss.content_weight`` and sets β = α / r.
    """
    if any(not (r > 0 and math.isfinite(r)) for r in ratios or ()):
        raise ValueError(f"content/style ratios must be finite and > 0, got {list(ratios)}")
    if any(not (t >= 0 and math.isfinite(t)) for t in tv_weights or ()):
        raise ValueError(f"TV weights must be finite and >= 0, got {list(tv_weights)}")
    if not seeds:
        raise ValueError("need at least one seed")
    base = loss.term_weights
    if ratios and not base.content:
        raise ValueError("ratios set beta = alpha / r: they need a content weight alpha > 0")
    rows, labels, out_seeds = [], [], []
    for ratio, tv, seed in itertools.product(ratios or [None], tv_weights or [None], seeds):
        w = base._replace(
            style=base.style if ratio is None else base.content / ratio,
            tv=base.tv if tv is None else tv,
        )
        parts = [f"alpha/beta={_g(ratio)}"] if ratio is not None else []
        parts += [f"tv={_g(tv)}"] if tv is not None else []
        parts += [f"seed {seed}"] if len(seeds) > 1 else []
        rows.append(w)
        labels.append(", ".join(parts))
        out_seeds.append(seed)
    term_weights = Terms(*(np.asarray(v, np.float32) for v in zip(*rows, strict=True)))
    return Columns(out_seeds, term_weights, labels)


def growing_layer_sets(layers: Sequence[str]) -> list[tuple[str, ...]]:
    """``(a, b, c) -> [(a,), (a, b), (a, b, c)]``: Gatys et al.'s texture figure."""
    layers = check_layers(layers)
    return [layers[: i + 1] for i in range(len(layers))]


def parse_layer_sets(spec: str, style_layers: Sequence[str]) -> list[tuple[str, ...]]:
    """``"growing"`` or ``"conv1_1;conv1_1,conv2_1"`` -> a list of layer tuples."""
    if spec.strip() == "growing":
        return growing_layer_sets(style_layers)
    sets = [
        check_layers([x.strip() for x in part.split(",") if x.strip()]) for part in spec.split(";")
    ]
    if not sets or any(not s for s in sets):
        raise ValueError(f"bad layer sets {spec!r}; e.g. growing or conv1_1;conv1_1,conv2_1")
    return sets


def layer_set_label(layers: Sequence[str]) -> str:
    """``("conv1_1", "conv2_1") -> "conv1_1+2_1"``."""
    kind = layer(layers[0]).is_pool
    rest = [layer(n).suffix if layer(n).is_pool == kind else n for n in layers[1:]]
    return layers[0] + "".join(f"+{name}" for name in rest)


def run_grid(
    rows: Sequence[tuple[str, Config]],
    content: np.ndarray,
    style: np.ndarray | Sequence[np.ndarray],
    cols: Columns,
    *,
    size: int | None = None,
    style_scale: float | Sequence[float] = 1.0,
    weights: Weights | None = None,
    init_image: np.ndarray | None = None,
    progress: bool | str = True,
) -> Grid:
    """Runs each row's config as one batched program over ``cols``.

    Every row's memory, and its styles' passes, are checked before anything runs or is
    resized.

    Args:
      rows: ``(label, config)`` per row.
      content: ``[H, W, 3]`` shared by every run (a blank canvas for texture).
      style: ``[H', W', 3]``, or a list of styles.
      cols: the batch, from ``columns``.
      size: the longest side to run at; the content, the styles (times ``style_scale``)
        and ``init_image`` are resized to it. None runs them as they are.
      init_image: one ``[h, w, 3]`` start shared by every tile.
    """
    styles = _styles(style)
    shape = content.shape[:2] if size is None else resized_shape(content.shape[:2], size)
    widths = WIDTHS if weights is None else widths_of(weights.params)
    b = len(cols.labels)
    plans = [policy.plan(config, shape, b, widths=widths) for _, config in rows]
    if size is not None:
        scales = style_scales(style_scale, len(styles))
        for (_, config), plan in zip(rows, plans, strict=True):
            check_styles(plan, config, styles, size, scales)
    weights = weights or load_weights(progress=bool(progress))
    if size is not None:
        content = resize(content, shape)
        styles = scaled_styles(styles, size, scales)
    init_images = None
    if init_image is not None:
        init_images = np.broadcast_to(resize(init_image, shape), (b, *shape, 3))
    images = np.ones((len(rows), b, *shape, 3), np.float32)
    results, interrupted = [], False
    for r, ((label, config), plan) in enumerate(zip(rows, plans, strict=True)):
        named_row = f"row {r + 1}/{len(rows)}" + (f", {label}" if label else "")
        try:  # A signal while a later row sets up keeps the rows before it.
            result = run(
                np.broadcast_to(content, (b, *content.shape)),
                styles,
                config,
                seeds=cols.seeds,
                term_weights=cols.term_weights,
                weights=weights,
                init_images=init_images,
                blends=None,
                content_masks=None,
                style_masks=None,
                callback=None,
                chunk=10,
                progress=named(progress, named_row),
                plan=plan,
            )
        except KeyboardInterrupt:
            if not results:
                raise
            interrupted = True
            break
        images[r] = result.image
        results.append(result)
        if result.interrupted or result.failure:
            break
    return Grid(
        images=images,
        row_labels=[label for label, _ in rows],
        col_labels=cols.labels,
        results=results,
        interrupted=interrupted or (bool(results) and results[-1].interrupted),
        failure=results[-1].failure if results else None,
    )


def _as_drawn(grid: Grid) -> tuple[np.ndarray, list[str], list[str] | None]:
    """Tiles ``[R, C, H, W, 3]``, column and row labels as drawn: a single column as a row."""
    tiles, cols, rows = grid.images, grid.col_labels, grid.row_labels
    if len(cols) == 1:
        tiles, cols, rows = tiles.swapaxes(0, 1), rows, [""]
    return tiles, cols, rows if any(rows) else None


def grid_image(grid: Grid) -> np.ndarray:
    """The grid as one labelled ``[H, W, 3]`` image; a single column is laid out as a row."""
    return labelled_grid(*_as_drawn(grid))


def drawn_shape(grid: Grid) -> tuple[int, int]:
    """``(rows, columns)`` of tiles in ``grid_image``: ``(1, R)`` for a single column."""
    rows, cols = _as_drawn(grid)[0].shape[:2]
    return rows, cols


def tile_losses(grid: Grid) -> list[dict]:
    """Initial and final losses of every tile that ran, for reports."""
    return [
        {
            "row": r,
            "col": c,
            "initial_losses": {k: float(v[c]) for k, v in result.initial.items()},
            "final_losses": {k: float(v[c]) for k, v in result.final.items()},
        }
        for r, result in enumerate(grid.results)
        for c in range(len(grid.col_labels))
    ]


def inversion_rows(config: Config, layers: Sequence[str]) -> list[tuple[str, Config]]:
    """One row per layer to invert from."""
    return [(name, invert_config(config, name)) for name in check_layers(layers)]


def texture_rows(config: Config, layer_sets: Sequence[Sequence[str]]) -> list[tuple[str, Config]]:
    """One row per set of style layers (equal weights within a set)."""
    config = texture_config(config)
    out = []
    for layers in layer_sets:
        loss = dataclasses.replace(
            config.loss, style_layers=tuple(layers), style_layer_weights=None, stat_layers=()
        )
        out.append((layer_set_label(layers), dataclasses.replace(config, loss=loss)))
    return out
