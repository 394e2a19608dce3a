"""Montages: many feature maps in one image, as a grid of labelled tiles.

Tiles keep their size (no resampling); each sits below its label, cells are separated by
``GAP`` pixels of background (0), labels are drawn in white with Pillow's default font.

>>> grid_shape(10), grid_shape(3), grid_shape(5, (1, 5))
((3, 4), (2, 2), (1, 5))
"""

from __future__ import annotations

import math
import re
from typing import Callable, Optional, Sequence

import numpy as np

from convcli.errors import ParameterError, ShapeError
from convcli.limits import check_arrays, parse_whole, shorten

GAP = 4
#: Rows or columns of a montage grid: a 2**16-wide grid of 1-pixel tiles is already
#: 262,144 pixels wide (past every image format's limit but PNG's).
MAX_GRID_SIDE = 2**16


def parse_grid(text: str) -> tuple[int, int]:
    """``RxC`` (rows x columns), both at least 1.

    >>> parse_grid("2x3")
    (2, 3)
    """
    parts = str(text).lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(re.fullmatch(r"[0-9]+", p, re.ASCII) for p in parts):
        raise ParameterError(f"montage grid {shorten(text)!r} is not RxC, e.g. 2x4")
    rows, cols = (parse_whole(p, f"montage grid {shorten(text)!r}: the {axis}", 0, MAX_GRID_SIDE)
                  for p, axis in zip(parts, ("rows", "columns")))
    if min(rows, cols) < 1:
        raise ParameterError(f"montage grid {shorten(text)!r} needs at least 1 row and 1 column")
    return rows, cols


def grid_shape(count: int, grid: Optional[tuple[int, int]] = None) -> tuple[int, int]:
    """Rows and columns for ``count`` tiles: ``grid`` if given (it must hold them all), else
    ``ceil(sqrt(count))`` columns and as many rows as needed (a near-square, wider than tall)."""
    if grid is not None:
        if grid[0] * grid[1] < count:
            raise ShapeError(f"montage grid {grid[0]}x{grid[1]} holds {grid[0] * grid[1]} tiles, "
                             f"there are {count} feature maps")
        return grid
    cols = math.ceil(math.sqrt(count))
    return math.ceil(count / cols), cols


def montage(tiles: np.ndarray, labels: Sequence[str], white: float,
            grid: Optional[tuple[int, int]] = None,
            check: Optional[Callable[[tuple[int, int, int]], None]] = None) -> np.ndarray:
    """Lay ``tiles`` (N, K, H, W) out on a grid with ``labels``: returns (K, rows, cols) float32.

    Cells are as wide as the tile or its label, whichever is wider; text is ``white``.
    ``check(shape)`` may refuse the canvas's shape before it is allocated (as does the
    memory budget).

    >>> tiles = np.ones((3, 1, 8, 8), np.float32)
    >>> out = montage(tiles, ["a", "b", "c"], 255.0)
    >>> out.shape[0], float(out[0, -8:, :8].min()), float(out[0, -8:, -8:].max())  # 2x2, last empty
    (1, 1.0, 0.0)
    """
    from PIL import Image, ImageDraw, ImageFont

    count, channels, height, width = tiles.shape
    if len(labels) != count:
        raise ShapeError(f"{len(labels)} labels for {count} tiles")
    rows, cols = grid_shape(count, grid)
    font = ImageFont.load_default()
    label_height = math.ceil(font.getbbox("0Ag")[3]) + 2
    cell_w = max([width] + [math.ceil(font.getbbox(text)[2]) + 1 for text in labels])
    cell_h = label_height + height
    shape = (channels, rows * cell_h + (rows - 1) * GAP, cols * cell_w + (cols - 1) * GAP)
    if check is not None:
        check(shape)
    check_arrays("montage", held=tiles.nbytes, canvas=shape)
    canvas = np.zeros(shape, np.float32)
    for index, (tile, text) in enumerate(zip(tiles, labels)):
        top, left = (index // cols) * (cell_h + GAP), (index % cols) * (cell_w + GAP)
        band = Image.new("L", (cell_w, label_height))
        ImageDraw.Draw(band).text((0, 1), text, fill=255, font=font)
        text_mask = np.asarray(band, np.float32) / 255.0
        canvas[:, top:top + label_height, left:left + cell_w] = text_mask * white
        canvas[:, top + label_height:top + cell_h, left:left + width] = tile
    return canvas
