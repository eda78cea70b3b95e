"""Grids of runs: one row per setting that changes the program, one column per batch
element of a single vmapped program.

A row is a ``Config`` of its own (a layer to invert, a set of style layers), so each
row compiles once. Columns vary what can be traced: seeds, the TV weight λ_β and the
content/style ratio α/β. They run as one ``jax.vmap``-ed batch (``stylize_batch``).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from nst_jax import objective as obj
from nst_jax import optimize
from nst_jax.image import labelled_grid
from nst_jax.vgg import check_layers


class Grid(NamedTuple):
    """What ``run_grid`` returns.

    Attributes:
      images: ``[R, C, H, W, 3]``; rows not reached after Ctrl-C are white.
      row_labels: ``R`` labels.
      col_labels: ``C`` labels.
      results: the batched ``Result`` of each row that ran.
      interrupted: True if Ctrl-C stopped the sweep.
    """

    images: np.ndarray
    row_labels: list[str]
    col_labels: list[str]
    results: list[optimize.Result]
    interrupted: bool


class Columns(NamedTuple):
    seeds: list[int]
    term_weights: obj.Terms  # Fields are [C] arrays.
    labels: list[str]


def _g(x: float) -> str:  # Labels stay ASCII: PIL's built-in font has no Greek.
    return f"{x:.3g}"


def columns(
    loss: obj.LossConfig,
    *,
    seeds: Sequence[int] = (0,),
    tv_weights: Sequence[float] | None = None,
    ratios: Sequence[float] | None = None,
) -> Columns:
    """The batch: every combination of α/β ratio, TV weight and seed, in that order.

    A ratio ``r`` keeps α at ``loss.content_weight`` and sets β = α / r.
    """
    if any(not r > 0 for r in ratios or ()):
        raise ValueError(f"content/style ratios must be > 0, got {list(ratios)}")
    if any(not t >= 0 for t in tv_weights or ()):
        raise ValueError(f"TV weights must be >= 0, got {list(tv_weights)}")
    if not seeds:
        raise ValueError("need at least one seed")
    base = loss.term_weights
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
    weights = obj.Terms(*(np.asarray(v, np.float32) for v in zip(*rows, strict=True)))
    return Columns(out_seeds, weights, labels)


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
    return layers[0] + "".join(f"+{name[4:]}" for name in layers[1:])


def run_grid(
    rows: Sequence[tuple[str, optimize.Config]],
    content: np.ndarray,
    style: np.ndarray,
    cols: Columns,
    **kwargs,
) -> Grid:
    """Runs each row's config as one batched program over ``cols``.

    Args:
      rows: ``(label, config)`` per row.
      content: ``[H, W, 3]`` shared by every run (a blank canvas for texture).
      style: ``[H', W', 3]``.
      cols: the batch, from ``columns``.
      **kwargs: passed to ``stylize_batch`` (``weights``, ``progress``, ...).
    """
    h, w = content.shape[:2]
    images = np.ones((len(rows), len(cols.labels), h, w, 3), np.float32)
    results = []
    progress = kwargs.pop("progress", True)
    for r, (label, config) in enumerate(rows):
        named = f"row {r + 1}/{len(rows)}" + (f", {label}" if label else "")
        result = optimize.stylize_batch(
            content,
            style,
            config,
            seeds=cols.seeds,
            term_weights=cols.term_weights,
            progress=optimize.progress_label(progress, named),
            **kwargs,
        )
        images[r] = result.image
        results.append(result)
        if result.interrupted:
            break
    return Grid(
        images=images,
        row_labels=[label for label, _ in rows],
        col_labels=cols.labels,
        results=results,
        interrupted=bool(results) and results[-1].interrupted,
    )


def grid_image(grid: Grid) -> np.ndarray:
    """The grid as one labelled ``[H, W, 3]`` image; a single column is laid out as a row."""
    tiles, cols, rows = grid.images, grid.col_labels, grid.row_labels
    if len(cols) == 1:
        tiles, cols, rows = tiles.swapaxes(0, 1), rows, [""]
    return labelled_grid(tiles, cols, rows if any(rows) else None)


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


def inversion_rows(config: optimize.Config, layers: Sequence[str]):
    """One row per layer to invert from."""
    return [(layer, optimize.invert_config(config, layer)) for layer in check_layers(layers)]


def texture_rows(config: optimize.Config, layer_sets: Sequence[Sequence[str]]):
    """One row per set of style layers (equal weights within a set)."""
    config = optimize.texture_config(config)
    out = []
    for layers in layer_sets:
        loss = dataclasses.replace(
            config.loss, style_layers=tuple(layers), style_layer_weights=None, stat_layers=()
        )
        out.append((layer_set_label(layers), dataclasses.replace(config, loss=loss)))
    return out
