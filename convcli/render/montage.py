"""Montages: many feature maps in one image, as a grid of labelled tiles, and legends.

Tiles keep their size (no resampling). Every size follows from the tile's height ``h`` and
width ``w``, the font size ``s = font_size(h)`` (``h // 16`` clamped to 10..32 px) and
whether there is a legend:

- label strip ``s + s // 2`` pixels high, above each tile (none for a lone map's legend);
- legend ``GAP + s + s // 2 + 6 * s`` wide (``legend_width``): a gap, a ramp one em wide
  (white at the top, black at the bottom, in the output's colormap), half an em, and a column
  of 6 ems for the numbers that white, mid-grey and black stand for;
- cell ``max(w + legend, 4 * s)`` wide and ``strip + body`` high, where the body is ``h``, or
  with a legend ``max(h, 3 * strip)`` (room for the three numbers);
- canvas ``rows * cell_h + (rows - 1) * GAP`` by ``cols * cell_w + (cols - 1) * GAP``, the
  background 0. Labels are drawn in white with Pillow's scalable default font and shortened
  with ``…`` to the cell's width.

>>> grid_shape(10), grid_shape(3), grid_shape(5, (1, 5))
((3, 4), (2, 2), (1, 5))
>>> canvas_shape(4, 256, 256, 1), canvas_shape(1, 256, 256, 3, labelled=False, legend=True)
((1, 564, 516), (3, 256, 380))
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from convcli.errors import ParameterError, ShapeError
from convcli.limits import check_arrays, parse_whole, shorten

GAP = 4
#: Rows or columns of a montage grid: a 2**16-wide grid of 1-pixel tiles is already
#: 262,144 pixels wide (past every image format's limit but PNG's).
MAX_GRID_SIDE = 2**16
#: The font size in pixels: the tile height over ``FONT_PER_TILE``, within ``FONT_SIZES``
#: (16 px on a 256-pixel tile: readable at 100% zoom).
FONT_PER_TILE = 16
FONT_SIZES = (10, 32)
#: Ems of the legend's number column ("-1.235e+05" is 5 ems in the default font).
NUMBER_EMS = 6
#: The narrowest cell, in ems: room for a few letters of a label above a tiny tile.
MIN_CELL_EMS = 4


def parse_grid(text: str) -> tuple[int, int]:
    """``RxC`` (rows x columns), both at least 1.

    >>> parse_grid("2x3")
    (2, 3)
    """
    parts = str(text).lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(re.fullmatch(r"[0-9]+", p, re.ASCII) for p in parts):
        raise ParameterError(f"montage grid {shorten(text)!r} is not RxC, e.g. 2x4")
    rows, cols = (
        parse_whole(p, f"montage grid {shorten(text)!r}: the {axis}", 0, MAX_GRID_SIDE)
        for p, axis in zip(parts, ("rows", "columns"))
    )
    if min(rows, cols) < 1:
        raise ParameterError(f"montage grid {shorten(text)!r} needs at least 1 row and 1 column")
    return rows, cols


def grid_shape(count: int, grid: tuple[int, int] | None = None) -> tuple[int, int]:
    """Rows and columns for ``count`` tiles: ``grid`` if given (it must hold them all), else
    ``ceil(sqrt(count))`` columns and as many rows as needed (a near-square, wider than tall)."""
    if grid is not None:
        if grid[0] * grid[1] < count:
            raise ShapeError(
                f"montage grid {grid[0]}x{grid[1]} holds {grid[0] * grid[1]} tiles, "
                f"there are {count} feature maps"
            )
        return grid
    cols = math.ceil(math.sqrt(count))
    return math.ceil(count / cols), cols


def font_size(tile_height: int) -> int:
    """Pixels of label and legend text for tiles ``tile_height`` high.

    >>> font_size(8), font_size(256), font_size(4096)
    (10, 16, 32)
    """
    return min(FONT_SIZES[1], max(FONT_SIZES[0], tile_height // FONT_PER_TILE))


def legend_width(size: int) -> int:
    """Columns a legend adds beside a tile, for text of ``size`` pixels (see the module).

    >>> legend_width(16)
    124
    """
    return GAP + size + size // 2 + NUMBER_EMS * size


@dataclass(frozen=True)
class Layout:
    """Where things go (see the module): grid, font size, label strip, cell and canvas."""

    rows: int
    cols: int
    size: int
    strip: int
    body: int
    cell: tuple[int, int]
    shape: tuple[int, int, int]


def layout(
    count: int,
    height: int,
    width: int,
    channels: int,
    grid: tuple[int, int] | None = None,
    labelled: bool = True,
    legend: bool = False,
) -> Layout:
    """The layout of ``count`` tiles of ``height`` x ``width`` with ``channels`` colour planes."""
    rows, cols = grid_shape(count, grid)
    size = font_size(height)
    strip = size + size // 2 if labelled else 0
    body = max(height, 3 * (size + size // 2)) if legend else height
    cell_w = max(width + (legend_width(size) if legend else 0), MIN_CELL_EMS * size)
    cell_h = strip + body
    shape = (channels, rows * cell_h + (rows - 1) * GAP, cols * cell_w + (cols - 1) * GAP)
    return Layout(rows, cols, size, strip, body, (cell_h, cell_w), shape)


def canvas_shape(
    count: int,
    height: int,
    width: int,
    channels: int,
    grid: tuple[int, int] | None = None,
    labelled: bool = True,
    legend: bool = False,
) -> tuple[int, int, int]:
    """(K, rows, cols) of the image ``montage`` draws (see the module for the formula)."""
    return layout(count, height, width, channels, grid, labelled, legend).shape


@dataclass(frozen=True)
class Legend:
    """A legend per tile: ``values`` (N, 3) are what white, mid-grey and black stand for in each
    map (``absolute``: values of ``|y|``); ``colour`` turns levels (n,) in ``[0, white]`` into the
    tile's colours (K, n)."""

    values: np.ndarray
    colour: Callable[[np.ndarray], np.ndarray]
    absolute: bool = False


def number_text(value: float, absolute: bool = False) -> str:
    """A legend number: 4 significant digits; ``±`` for a value of ``|y|``.

    >>> number_text(-127.5), number_text(1234567.0), number_text(255.0, absolute=True)
    ('-127.5', '1.235e+06', '±255')
    >>> number_text(-0.0)
    '0'
    """
    text = f"{value + 0.0:.4g}"  # + 0.0: no "-0"
    return f"±{text}" if absolute and value != 0 else text


def fit_text(text: str, font, width: int) -> str:
    """``text``, shortened with ``…`` to ``width`` pixels in ``font`` ("" if not even that fits)."""
    if font.getlength(text) <= width:
        return text
    for end in range(len(text) - 1, -1, -1):
        if font.getlength(text[:end] + "…") <= width:
            return text[:end] + "…"
    return ""


def montage(
    tiles: np.ndarray,
    labels: Sequence[str] | None,
    white: float,
    grid: tuple[int, int] | None = None,
    check: Callable[[tuple[int, int, int]], None] | None = None,
    legend: Legend | None = None,
) -> np.ndarray:
    """Lay ``tiles`` (N, K, H, W) out on a grid with ``labels`` (None: no label strip) and a
    ``legend`` beside each tile: returns (K, rows, cols) float32. Text is ``white``.
    ``check(shape)`` may refuse the canvas's shape before it is allocated (as does the
    memory budget).

    >>> tiles = np.ones((3, 1, 8, 8), np.float32)
    >>> out = montage(tiles, ["a", "b", "c"], 255.0)
    >>> out.shape, float(out[0, -8:, :8].min()), float(out[0, -8:, -40:].max())  # 2x2, last empty
    ((1, 50, 84), 1.0, 0.0)
    """
    from PIL import ImageFont

    count, channels, height, width = tiles.shape
    if labels is not None and len(labels) != count:
        raise ShapeError(f"{len(labels)} labels for {count} tiles")
    plan = layout(count, height, width, channels, grid, labels is not None, legend is not None)
    if check is not None:
        check(plan.shape)
    check_arrays("montage", held=tiles.nbytes, canvas=plan.shape)
    font = ImageFont.load_default(size=plan.size)
    canvas = np.zeros(plan.shape, np.float32)
    cell_h, cell_w = plan.cell
    ramp = None if legend is None else legend.colour(np.linspace(white, 0.0, plan.body))
    for index, tile in enumerate(tiles):
        top, left = (index // plan.cols) * (cell_h + GAP), (index % plan.cols) * (cell_w + GAP)
        if labels is not None:
            text = fit_text(str(labels[index]), font, cell_w)
            _write(
                canvas[:, top : top + plan.strip, left : left + cell_w],
                [(text, 0, "la")],
                font,
                white,
            )
        body = canvas[:, top + plan.strip : top + cell_h, left : left + cell_w]
        body[:, :height, :width] = tile
        if legend is not None:
            bar = width + GAP
            body[:, :, bar : bar + plan.size] = ramp[:, :, None]
            numbers = [number_text(v, legend.absolute) for v in legend.values[index]]
            placed = [
                (numbers[0], 0, "la"),
                (numbers[1], plan.body // 2, "lm"),
                (numbers[2], plan.body, "ld"),
            ]
            _write(body[:, :, bar + plan.size + plan.size // 2 :], placed, font, white)
    return canvas


def _write(area: np.ndarray, texts: Sequence[tuple[str, int, str]], font, white: float) -> None:
    """Draw each (text, row, Pillow anchor) into ``area`` (K, H, W), left-aligned, in ``white``."""
    from PIL import Image, ImageDraw

    band = Image.new("L", (area.shape[2], area.shape[1]))
    draw = ImageDraw.Draw(band)
    for text, row, anchor in texts:
        if anchor == "la":  # the strip's text sits a quarter em down
            row += max(1, font.size // 4)
        draw.text((0, row), text, fill=255, font=font, anchor=anchor)
    mask = np.asarray(band, np.float32) / 255.0
    np.maximum(area, mask * white, out=area)
