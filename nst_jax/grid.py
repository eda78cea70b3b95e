"""Labelled grids of images: tiles ``[rows, cols, H, W, 3]`` laid out with a label over
each column and, optionally, beside each row (the sweeps' and the figures' pictures)."""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GRID_GAP = 4  # Pixels between tiles.
GRID_LABEL_HEIGHT = 20  # The band above each column holding its label.
# Pillow's own font (Aileron) at 13 px: at its default 10 px a space is a pixel or two
# wide, and "its output" reads as "itsoutput".
GRID_FONT_SIZE = 13


@functools.cache
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=GRID_FONT_SIZE)


class GridLayout(NamedTuple):
    """Where ``labelled_grid`` puts things: ``boxes[r][c] = (top, left)`` of each tile."""

    shape: tuple[int, int]  # (H, W) of the whole grid.
    label_width: int  # Width of the row-label margin on the left (0 without row labels).
    boxes: tuple[tuple[tuple[int, int], ...], ...]


def _text_width(text: str) -> int:
    return int(np.ceil(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=_font())))


def grid_layout(
    tile: tuple[int, int], rows: int, cols: int, row_labels: list[str] | None = None
) -> GridLayout:
    """The layout of an ``rows x cols`` grid of ``tile = (h, w)`` tiles."""
    h, w = tile
    label_width = max(map(_text_width, row_labels)) + 2 * GRID_GAP if row_labels else 0
    top, left = GRID_LABEL_HEIGHT, label_width
    boxes = tuple(
        tuple((top + r * (h + GRID_GAP), left + c * (w + GRID_GAP)) for c in range(cols))
        for r in range(rows)
    )
    shape = (top + rows * (h + GRID_GAP) - GRID_GAP, left + cols * (w + GRID_GAP) - GRID_GAP)
    return GridLayout(shape, label_width, boxes)


def labelled_grid(
    tiles: np.ndarray, col_labels: list[str], row_labels: list[str] | None = None
) -> np.ndarray:
    """Tiles on a white canvas, each column labelled above and each row on the left.

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
    layout = grid_layout((h, w), rows, cols, row_labels)
    canvas = Image.new("RGB", layout.shape[::-1], "white")
    draw = ImageDraw.Draw(canvas)
    for c, label in enumerate(col_labels):
        draw.text((layout.boxes[0][c][1] + 2, 2), label, fill="black", font=_font())
    for r, label in enumerate(row_labels or []):
        top = layout.boxes[r][0][0] + h // 2 - GRID_FONT_SIZE // 2 - 2
        draw.text((GRID_GAP, top), label, fill="black", font=_font())
    out = np.asarray(canvas, np.float32) / 255.0
    for r in range(rows):
        for c in range(cols):
            top, left = layout.boxes[r][c]
            out[top : top + h, left : left + w] = tiles[r, c]
    return out
