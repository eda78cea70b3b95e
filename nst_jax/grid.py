"""Labelled grids of images: tiles ``[rows, cols, H, W, 3]`` laid out with a label over
each column and, optionally, beside each row (the sweeps' and the figures' pictures)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GRID_GAP = 4  # Pixels between tiles.
GRID_LABEL_HEIGHT = 20  # The band above the columns when each label takes one line.
# Pillow's own font (Aileron) at 13 px: at its default 10 px a space is a pixel or two
# wide, and "its output" reads as "itsoutput".
GRID_FONT_SIZE = 13
# Column labels too wide for their tiles shrink, all together, down to this size before
# they wrap onto a second line (or, failing that, lose their middle to "…"): smaller
# letters are hard to read.
GRID_MIN_FONT_SIZE = 10
_PAD = 2  # A column label is drawn this far right of its tile's left edge and below the top.
_BREAKS = " +,;/="  # A column label may wrap after one of these (a space at the break goes).
_SIZES = range(GRID_FONT_SIZE, GRID_MIN_FONT_SIZE - 1, -1)


@functools.cache
def _font(size: int = GRID_FONT_SIZE) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


@functools.cache
def _text_width(text: str, size: int = GRID_FONT_SIZE) -> int:
    """Pixels from where ``text`` is drawn to the right edge of its ink or advance."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    ink = draw.textbbox((0, 0), text, font=_font(size))[2] if text else 0
    return int(np.ceil(max(draw.textlength(text, font=_font(size)), ink)))


def _line_height(size: int) -> int:
    return sum(_font(size).getmetrics())


def _wrapped(label: str, width: int, size: int) -> tuple[str, ...] | None:
    """``label`` in lines that fit ``width`` at ``size``: one line, or two broken after one
    of ``_BREAKS`` where the wider line is narrowest; None if neither fits."""
    if _text_width(label, size) <= width:
        return (label,)
    splits = [(label[: i + 1].rstrip(), label[i + 1 :].lstrip()) for i in range(len(label) - 1)]
    splits = [s for i, s in enumerate(splits) if label[i] in _BREAKS and all(s)]
    widest = {s: max(_text_width(line, size) for line in s) for s in splits}
    fits = [s for s in splits if widest[s] <= width]
    return min(fits, key=widest.__getitem__, default=None)


def _elided(label: str, width: int, size: int) -> str:
    """``label`` with its middle replaced by "…", keeping as much of both ends as fits."""
    for keep in range(len(label) - 1, -1, -1):
        head, tail = label[: (keep + 1) // 2], label[len(label) - keep // 2 :]
        text = head.rstrip() + "…" + tail.lstrip()
        if _text_width(text, size) <= width:
            return text
    return ""


def fit_labels(labels: Sequence[str], width: int) -> tuple[int, tuple[tuple[str, ...], ...]]:
    """One font size for all of ``labels``, and each label's lines, so that every line fits
    in ``width`` pixels.

    The largest size from ``GRID_FONT_SIZE`` down to ``GRID_MIN_FONT_SIZE`` at which each
    label fits on one line; failing that, the largest at which each fits on at most two
    (wrapped after a "+", a space, ...); failing that, at the smallest size, a label that
    does not fit on two lines is shortened on one by dropping its middle for "…".
    """
    width = max(width, 0)
    for size in _SIZES:
        if all(_text_width(label, size) <= width for label in labels):
            return size, tuple((label,) for label in labels)
    for size in _SIZES:
        lines = [_wrapped(label, width, size) for label in labels]
        if all(lines):
            return size, tuple(lines)
    size = GRID_MIN_FONT_SIZE
    lines = [_wrapped(label, width, size) or (_elided(label, width, size),) for label in labels]
    return size, tuple(lines)


class GridLayout(NamedTuple):
    """Where ``labelled_grid`` puts things: ``boxes[r][c] = (top, left)`` of each tile."""

    shape: tuple[int, int]  # (H, W) of the whole grid.
    label_width: int  # Width of the row-label margin on the left (0 without row labels).
    boxes: tuple[tuple[tuple[int, int], ...], ...]
    font_size: int = GRID_FONT_SIZE  # Of the column labels; row labels keep GRID_FONT_SIZE.
    col_lines: tuple[tuple[str, ...], ...] = ()  # Each column's label as drawn, by line.


def grid_layout(
    tile: tuple[int, int],
    rows: int,
    cols: int,
    row_labels: Sequence[str] | None = None,
    *,
    col_labels: Sequence[str] | None = None,
) -> GridLayout:
    """The layout of an ``rows x cols`` grid of ``tile = (h, w)`` tiles.

    The band above the tiles is ``GRID_LABEL_HEIGHT`` high, and a line taller for
    ``col_labels`` that wrap (see ``fit_labels``); without ``col_labels``, one line.
    """
    h, w = tile
    if col_labels is not None and len(col_labels) != cols:
        raise ValueError(f"{len(col_labels)} column labels for {cols} columns")
    size, lines = fit_labels(col_labels or [], w - _PAD)
    extra = max(map(len, lines), default=1) - 1
    label_width = max(map(_text_width, row_labels)) + 2 * GRID_GAP if row_labels else 0
    top, left = GRID_LABEL_HEIGHT + extra * _line_height(size), label_width
    boxes = tuple(
        tuple((top + r * (h + GRID_GAP), left + c * (w + GRID_GAP)) for c in range(cols))
        for r in range(rows)
    )
    shape = (top + rows * (h + GRID_GAP) - GRID_GAP, left + cols * (w + GRID_GAP) - GRID_GAP)
    return GridLayout(shape, label_width, boxes, size, lines)


def labelled_grid(
    tiles: np.ndarray, col_labels: Sequence[str], row_labels: Sequence[str] | None = None
) -> np.ndarray:
    """Tiles on a white canvas, each column labelled above and each row on the left.

    A column label never runs past its tile's width: see ``fit_labels``.

    Args:
      tiles: ``[R, C, h, w, 3]`` in [0, 1].
      col_labels: ``C`` labels.
      row_labels: ``R`` labels, or None for no row margin.

    Returns:
      ``[H, W, 3]`` float32; ``grid_layout`` says where each tile lies.
    """
    tiles = np.asarray(tiles, np.float32)
    if tiles.ndim != 5 or tiles.shape[-1] != 3:
        raise ValueError(f"tiles must be [rows, cols, h, w, 3], got {tiles.shape}")
    rows, cols, h, w, _ = tiles.shape
    if len(col_labels) != cols or (row_labels is not None and len(row_labels) != rows):
        raise ValueError(f"{len(col_labels)} column labels for {cols} columns, or rows likewise")
    layout = grid_layout((h, w), rows, cols, row_labels, col_labels=col_labels)
    canvas = Image.new("RGB", layout.shape[::-1], "white")
    draw = ImageDraw.Draw(canvas)
    font, step = _font(layout.font_size), _line_height(layout.font_size)
    for c, lines in enumerate(layout.col_lines):
        for i, line in enumerate(lines):
            draw.text((layout.boxes[0][c][1] + _PAD, _PAD + i * step), line, "black", font)
    for r, label in enumerate(row_labels or []):
        top = layout.boxes[r][0][0] + h // 2 - GRID_FONT_SIZE // 2 - 2
        draw.text((GRID_GAP, top), label, fill="black", font=_font())
    out = np.asarray(canvas, np.float32) / 255.0
    for r in range(rows):
        for c in range(cols):
            top, left = layout.boxes[r][c]
            out[top : top + h, left : left + w] = tiles[r, c]
    return out
