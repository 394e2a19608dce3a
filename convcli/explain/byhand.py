"""Small convolutions, pools and transposed convolutions worked cell by cell."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from convcli import geometry
from convcli.errors import InputError, ParameterError, ShapeError
from convcli.explain.language import Pads
from convcli.explain.text import hw_text, number_text
from convcli.explain.trace import _axes, _conv_formula, _per_axis, _transposed_formulas
from convcli.geometry import (
    PaddingSpec,
    Pair,
    padding_text,
    shape_text,
    window_too_large,
)
from convcli.io.paths import require_regular_file
from convcli.layers import rules
from convcli.layers.values import parse_pad_mode
from convcli.limits import parse_real, shorten

# By hand

#: Largest matrix side worked by hand (the point is to read every number).
MAX_BY_HAND = 32
#: Most output cells drawn in a ``--gif`` animation (one frame each).
MAX_GIF_CELLS = 400


def parse_matrix(text: str) -> list[list[float]]:
    """Rows separated by ``;`` or new lines, values by ``,`` or spaces.

    >>> parse_matrix("1,2,0; 4 1 1")
    [[1.0, 2.0, 0.0], [4.0, 1.0, 1.0]]
    """
    return one_plane(parse_planes(text), f"matrix {shorten(text)!r}")


def parse_planes(text: str) -> list[list[list[float]]]:
    """A matrix of several channels, as planes (C, H, W): each value ``a|b|c`` holds a cell's
    channels.

    >>> parse_planes("1|10, 2|20; 3|30, 4|40")
    [[[1.0, 2.0], [3.0, 4.0]], [[10.0, 20.0], [30.0, 40.0]]]
    """
    rows = [r.replace(",", " ").split() for r in re.split(r"[;\n]", str(text)) if r.strip()]
    where = f"matrix {shorten(text)!r}"
    cells = [
        [[parse_real(v, f"{where}: value", finite=False) for v in cell.split("|")] for cell in row]
        for row in rows
    ]
    depths = {len(cell) for row in cells for cell in row}
    if len(depths) > 1:
        raise ParameterError(
            f"{where}: every cell must have the same number of |-separated channels"
        )
    planes = [[[cell[c] for cell in row] for row in cells] for c in range(max(depths, default=1))]
    return [_check_matrix(plane, where) for plane in planes]


def load_matrix(spec: str) -> list[list[float]]:
    """A small 2-D matrix from inline text (``parse_matrix``) or a ``.npy`` file ((H, W) or
    (H, W, 1))."""
    return one_plane(
        load_planes(spec),
        f"matrix file {spec!r}"
        if str(spec).lower().endswith(".npy")
        else f"matrix {shorten(spec)!r}",
    )


def one_plane(planes: list, where: str) -> list[list[float]]:
    """The only plane of ``planes``; several are an ``InputError`` naming ``where``."""
    if len(planes) != 1:
        raise InputError(f"{where} has {len(planes)} channels; by hand takes one here")
    return planes[0]


def load_planes(spec: str) -> list[list[list[float]]]:
    """Small planes (C, H, W) from inline text (``parse_planes``) or a ``.npy`` file ((H, W) or
    (H, W, C))."""
    if not str(spec).lower().endswith(".npy"):
        return parse_planes(spec)
    require_regular_file(spec, "matrix file")
    try:
        from convcli.io.images import load_npy  # checks the header first: no 40 GB from a tiny file

        array = load_npy(spec, f"matrix file {spec!r}")
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"matrix file {spec!r} is not a readable .npy file ({exc})") from None
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.dtype.kind not in "biuf" or array.shape[2] > MAX_BY_HAND:
        raise InputError(
            f"matrix file {spec!r} holds {array.dtype} {array.shape}; "
            f"by hand takes a real (H, W) or (H, W, C) matrix"
        )
    return [
        _check_matrix(plane, f"matrix file {spec!r}")
        for plane in array.astype(float).transpose(2, 0, 1).tolist()
    ]


def _check_matrix(matrix: list[list[float]], where: str) -> list[list[float]]:
    if not matrix or len({len(row) for row in matrix}) != 1:
        raise ParameterError(f"{where}: rows must all have the same number of values")
    if len(matrix) > MAX_BY_HAND or len(matrix[0]) > MAX_BY_HAND:
        raise ParameterError(
            f"{where}: {len(matrix)}x{len(matrix[0])} is too large to work by hand "
            f"(at most {MAX_BY_HAND}x{MAX_BY_HAND})"
        )
    if not all(v == v and abs(v) != float("inf") for row in matrix for v in row):
        raise ParameterError(f"{where}: values must be finite")
    return matrix


@dataclass(frozen=True)
class Cell:
    """One output cell worked out: the taps of its window and how they combine.

    ``positions`` are input (row, column) indices (negative or past the end: padding);
    ``values`` are None in padding that holds nothing (zeros; pools), else the border value
    the pad mode reads; ``products`` are value x weight (conv only); ``winner`` (max pooling)
    is the (row, column) of the window's maximum: the first in row-major order on ties,
    never a padding cell.
    """

    row: int
    col: int
    positions: tuple[Pair, ...]
    values: tuple[float | None, ...]
    weights: tuple[float, ...]
    products: tuple[float, ...]
    total: float
    divisor: int
    value: float
    winner: Pair | None = None


@dataclass(frozen=True)
class Worked:
    """A small convolution (``op="conv"``) or pooling (``"max"``, ``"avg"``) to show by hand.

    ``image`` is the unpadded matrix; ``pads`` (top, bottom, left, right) come from geometry;
    ``weights`` (conv) are used as correlated, then ``/ scale + offset`` as ``convcli conv`` does;
    ``pad_mode`` (conv) fills the padding as ``conv --pad-mode`` does.
    """

    op: str
    image: tuple[tuple[float, ...], ...]
    size: Pair
    stride: Pair
    dilation: Pair
    padding: PaddingSpec
    pads: Pads
    output_hw: Pair
    arithmetic: tuple[str, ...]
    weights: tuple[tuple[float, ...], ...] = ()
    scale: float = 1.0
    offset: float = 0.0
    count_include_pad: bool = True
    name: str = ""
    pad_mode: str = "zeros"

    def inside(self, row: int, col: int) -> bool:
        """Whether (row, col) lies in the matrix, not in its padding."""
        return 0 <= row < len(self.image) and 0 <= col < len(self.image[0])

    def value_at(self, row: int, col: int) -> float | None:
        """The input value at (row, col); in the padding, the value the pad mode reads there
        (``correlation.source_index``), None for zeros.

        >>> worked = by_hand_conv(
        ...     [[1, 2, 3]], [[1, 1, 1]], padding=(0, 0, 2, 2), pad_mode="symmetric"
        ... )
        >>> [worked.value_at(0, c) for c in range(-2, 5)]      # b a | a b c | c b
        [2.0, 1.0, 1.0, 2.0, 3.0, 3.0, 2.0]
        """
        if self.inside(row, col):
            return self.image[row][col]
        if self.pad_mode == "zeros":
            return None
        import numpy as np

        from convcli.engine.correlation import source_index

        row, col = (
            int(source_index(np.array([at]), size, self.pad_mode)[0])
            for at, size in ((row, len(self.image)), (col, len(self.image[0])))
        )
        return self.image[row][col]

    def cell(self, i: int, j: int) -> Cell:
        """Output cell (i, j), worked out tap by tap.

        >>> seed = by_hand_conv(SEED_IMAGE, [[1, 0, -1]] * 3)
        >>> seed.cell(0, 1).products, seed.cell(0, 1).value
        ((2.0, 0.0, -1.0, 1.0, 0.0, -0.0, 2.0, 0.0, -1.0), 3.0)
        """
        h_out, w_out = self.output_hw
        if not (0 <= i < h_out and 0 <= j < w_out):
            raise ParameterError(
                f"cell {i},{j} is outside the {h_out}x{w_out} output "
                f"(rows and columns count from 0)"
            )
        (kh, kw), (sh, sw), (dh, dw) = self.size, self.stride, self.dilation
        top, left = self.pads[0], self.pads[2]
        positions = tuple(
            (i * sh - top + m * dh, j * sw - left + n * dw) for m in range(kh) for n in range(kw)
        )
        values = tuple(self.value_at(r, c) for r, c in positions)
        real = [v for v in values if v is not None]
        if self.op == "conv":
            weights = tuple(w for row in self.weights for w in row)
            products = tuple((v or 0.0) * w for v, w in zip(values, weights))
            total = sum(products)
            return Cell(
                i,
                j,
                positions,
                values,
                weights,
                products,
                total,
                1,
                total / self.scale + self.offset,
            )
        if self.op == "max":  # pad cells never win (PyTorch pads with -inf; TF ignores them)
            total, winner = float("-inf"), None
            for value, at in zip(
                values, positions
            ):  # row-major; a strict > keeps the first of a tie
                if value is not None and (winner is None or value > total):
                    total, winner = value, at
            return Cell(i, j, positions, values, (), (), total, 1, total, winner)
        total = sum(real)
        divisor = len(real)
        if (
            self.count_include_pad and self.padding != "same"
        ):  # PyTorch: pads count, ceil overhang never
            height, width = len(self.image), len(self.image[0])
            top, bottom, left, right = self.pads
            divisor = sum(
                -top <= r < height + bottom and -left <= c < width + right for r, c in positions
            )
        return Cell(i, j, positions, values, (), (), total, divisor, total / divisor)

    def output(self) -> list[list[float]]:
        """The whole output, each cell computed as ``cell`` shows it."""
        return [
            [self.cell(i, j).value for j in range(self.output_hw[1])]
            for i in range(self.output_hw[0])
        ]

    def indices(self) -> list[list[int | None]]:
        """Max pooling: each window's argmax as the flat index ``r*W + c`` in the unpadded input
        (PyTorch's ``return_indices``); None for a (dilated) window that holds only padding.

        >>> by_hand_pool([[1, 3, 2, 0], [4, 6, 1, 2], [0, 2, 5, 3], [1, 2, 2, 4]], "max").indices()
        [[5, 2], [9, 10]]
        """
        width = len(self.image[0])
        winners = (
            (self.cell(i, j).winner for j in range(self.output_hw[1]))
            for i in range(self.output_hw[0])
        )
        return [[None if at is None else at[0] * width + at[1] for at in row] for row in winners]

    def routed_ones(self) -> list[list[int]]:
        """Max pooling's backward pass for a gradient of ones on the output
        (``d sum(output) / d input``): each window's 1 goes to its argmax, every other cell gets 0;
        a cell that wins several overlapping windows gets their count; a window of only padding
        routes nothing.

        >>> by_hand_pool([[1, 2, 3]], "max", (1, 2), stride=(1, 1)).routed_ones()   # 2, then 3 win
        [[0, 1, 1]]
        >>> by_hand_pool([[1, 5, 3]], "max", (1, 2), stride=(1, 1)).routed_ones()   # 5 wins both
        [[0, 2, 0]]
        """
        if self.op != "max":
            raise ParameterError(
                f"only max pooling routes its gradient to an argmax, not {self.op}"
            )
        counts = [[0] * len(self.image[0]) for _ in self.image]
        for i in range(self.output_hw[0]):
            for j in range(self.output_hw[1]):
                winner = self.cell(i, j).winner
                if winner is not None:
                    counts[winner[0]][winner[1]] += 1
        return counts


SEED_IMAGE = [[1, 2, 0, 1, 3], [4, 1, 1, 0, 2], [0, 2, 3, 1, 1], [1, 0, 2, 2, 0], [3, 1, 0, 1, 2]]


def by_hand_conv(
    image: Sequence[Sequence[float]],
    weights: Sequence[Sequence[float]],
    *,
    stride: Pair = (1, 1),
    padding: PaddingSpec = "valid",
    dilation: Pair = (1, 1),
    scale: float = 1.0,
    offset: float = 0.0,
    name: str = "",
    pad_mode: str = "zeros",
) -> Worked:
    """A 2-D cross-correlation of a small matrix, as ``convcli conv`` (``pad_mode`` as its
    ``--pad-mode``).

    >>> by_hand_conv(SEED_IMAGE, [[1, 0, -1]] * 3).output()      # the seeds' vertical edges
    [[1.0, 3.0, -2.0], [-1.0, 0.0, 3.0], [-1.0, -1.0, 2.0]]
    """
    image = _check_matrix([[float(v) for v in row] for row in image], "matrix")
    weights = tuple(tuple(float(v) for v in row) for row in weights)
    size = (len(weights), len(weights[0]))
    in_hw = (len(image), len(image[0]))
    pads = geometry.resolve_padding(padding, in_hw, size, stride, dilation)
    out_hw = geometry.conv2d_output_shape(in_hw, size, stride, dilation, pads)
    axes = _axes(in_hw, size, stride, dilation, pads)
    arithmetic = _per_axis([_conv_formula(*axis, out) for axis, out in zip(axes, out_hw)])
    if min(out_hw) < 1:
        raise ShapeError(window_too_large("kernel", in_hw, size, dilation, pads, padding))
    shortfall = geometry.border_shortfall(in_hw, pads, parse_pad_mode(pad_mode))
    if shortfall:
        raise ShapeError(shortfall)
    return Worked(
        "conv",
        tuple(map(tuple, image)),
        size,
        tuple(stride),
        tuple(dilation),
        padding,
        pads,
        out_hw,
        arithmetic,
        weights,
        scale,
        offset,
        name=name,
        pad_mode=parse_pad_mode(pad_mode),
    )


def by_hand_pool(
    image: Sequence[Sequence[float]],
    mode: str,
    size: Pair = (2, 2),
    *,
    stride: Pair | None = None,
    padding: PaddingSpec = "valid",
    dilation: Pair = (1, 1),
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> Worked:
    """Max or average pooling of a small matrix, as ``convcli pool`` (PyTorch; ``same`` as Keras).

    >>> by_hand_pool([[1, 3, 2, 0], [4, 6, 1, 2], [0, 2, 5, 3], [1, 2, 2, 4]], "max").output()
    [[6.0, 2.0], [2.0, 5.0]]
    """
    if mode not in ("max", "avg"):
        raise ParameterError(f"pooling mode {mode!r} is not max or avg")
    if mode == "avg" and tuple(dilation) != (1, 1):
        raise ParameterError("average pooling takes no dilation (as PyTorch)")
    stride = tuple(size) if stride is None else tuple(stride)
    rules.pool_padding(padding, size, ceil_mode)
    image = _check_matrix([[float(v) for v in row] for row in image], "matrix")
    in_hw = (len(image), len(image[0]))
    pads = geometry.resolve_padding(padding, in_hw, size, stride, dilation)
    axes = _axes(in_hw, size, stride, dilation, pads)
    out_hw = tuple(geometry.pool_output_size(*axis, ceil_mode) for axis in axes)
    rounding = "ceil" if ceil_mode else "floor"
    arithmetic = _per_axis([_conv_formula(*axis, out, rounding) for axis, out in zip(axes, out_hw)])
    if min(out_hw) < 1:
        raise ShapeError(window_too_large("pooling window", in_hw, size, dilation, pads, padding))
    return Worked(
        mode,
        tuple(map(tuple, image)),
        tuple(size),
        stride,
        tuple(dilation),
        padding,
        pads,
        out_hw,
        arithmetic,
        count_include_pad=count_include_pad,
    )


@dataclass(frozen=True)
class Channels:
    """A convolution of a several-channel matrix with a ``(C_in, kh, kw)`` kernel (one filter of a
    bank): each channel correlated with its slice, then the sum over channels (the seeds'
    ``sum over m, n, c``), then ``/ scale + offset``.
    """

    planes: tuple[Worked, ...]
    scale: float = 1.0
    offset: float = 0.0
    name: str = ""
    out_channel: int | None = None

    @property
    def output_hw(self) -> Pair:
        return self.planes[0].output_hw

    def output(self) -> list[list[float]]:
        """Every cell: the sum over channels of each channel's sum of products.

        >>> by_hand_channels([[[1, 2]], [[10, 20]]], [[[1, 1]], [[1, -1]]]).output()
        [[-7.0]]
        """
        h, w = self.output_hw
        return [
            [
                sum(p.cell(i, j).total for p in self.planes) / self.scale + self.offset
                for j in range(w)
            ]
            for i in range(h)
        ]


def by_hand_channels(
    planes: Sequence[Sequence[Sequence[float]]],
    weights: Sequence[Sequence[Sequence[float]]],
    *,
    stride: Pair = (1, 1),
    padding: PaddingSpec = "valid",
    dilation: Pair = (1, 1),
    scale: float = 1.0,
    offset: float = 0.0,
    name: str = "",
    out_channel: int | None = None,
) -> Channels:
    """Planes (C, H, W) correlated with a ``(C, kh, kw)`` kernel and summed over channels, as
    ``convcli conv`` with a 3-D kernel (PyTorch ``conv2d`` with one filter)."""
    if len(planes) != len(weights):
        raise ShapeError(
            f"the kernel has {len(weights)} input channels and the matrix {len(planes)}"
        )
    worked = tuple(
        by_hand_conv(plane, kernel, stride=stride, padding=padding, dilation=dilation)
        for plane, kernel in zip(planes, weights)
    )
    return Channels(worked, scale, offset, name, out_channel)


def render_channels(channels: Channels, cells: Sequence[Pair]) -> str:
    """Plain text: each chosen cell worked channel by channel, then summed over the channels.

    >>> channels = by_hand_channels([[[1, 2]], [[10, 20]]], [[[1, 1]], [[1, -1]]])
    >>> print(render_channels(channels, [(0, 0)]))
    1x2x2 input, 2x1x2 kernel (C_in x kh x kw), stride 1, dilation 1, padding valid
    output size: rows: floor((1 + 0 + 0 - 1) / 1) + 1 = 1
    output size: cols: floor((2 + 0 + 0 - 2) / 1) + 1 = 1
    <BLANKLINE>
    output[0, 0]: window rows 0, columns 0..1
      channel 0:  1 2  x  1 1  =  1 2     sum 3
      channel 1:  10 20  x   1 -1  =   10 -20     sum -10
      sum over m, n, c: 3 - 10 = -7
    <BLANKLINE>
    output (1x1):
      -7
    """
    first = channels.planes[0]
    (h, w), c_in, (kh, kw) = _hw(first.image), len(channels.planes), first.size
    bank = (
        f", output channel {channels.out_channel} of the bank"
        if channels.out_channel is not None
        else ""
    )
    name = f" {channels.name!r}" if channels.name else ""
    lines = [
        f"{h}x{w}x{c_in} input, {c_in}x{kh}x{kw} kernel{name} (C_in x kh x kw){bank}, "
        f"stride {hw_text(first.stride)}, dilation {hw_text(first.dilation)}, "
        f"padding {padding_text(first.padding)}"
    ]
    lines += [f"output size: {text}" for text in first.arithmetic]
    for i, j in cells:
        parts = [plane.cell(i, j) for plane in channels.planes]
        rows = sorted({r for r, _ in parts[0].positions})
        cols = sorted({c for _, c in parts[0].positions})
        lines += [
            "",
            f"output[{i}, {j}]: window rows {_index_text(rows)}, columns {_index_text(cols)}",
        ]
        for c, (plane, cell) in enumerate(zip(channels.planes, parts)):
            window = _grid(
                [[_tap(v, plane) for v in cell.values[m * kw : (m + 1) * kw]] for m in range(kh)]
            )
            weights = _grid(
                [[number_text(v) for v in cell.weights[m * kw : (m + 1) * kw]] for m in range(kh)]
            )
            products = _grid(
                [[number_text(v) for v in cell.products[m * kw : (m + 1) * kw]] for m in range(kh)]
            )
            block = _side_by_side(
                [window, weights, products, [f" sum {number_text(cell.total)}"]], ["x", "=", ""]
            )
            lines += [f"  channel {c}:  " + block[0].lstrip()] if kh == 1 else [f"  channel {c}:"]
            lines += [] if kh == 1 else ["    " + line for line in block]
        total = sum(cell.total for cell in parts)
        result = (
            f"sum over m, n, c: {_sum_text([cell.total for cell in parts])} = {number_text(total)}"
        )
        if channels.scale != 1 or channels.offset != 0:
            result += (
                f"; / scale {number_text(channels.scale)} + offset {number_text(channels.offset)}"
                f" = {number_text(total / channels.scale + channels.offset)}"
            )
        lines.append("  " + result)
    lines += ["", f"output ({channels.output_hw[0]}x{channels.output_hw[1]}):"]
    lines += [
        "  " + line for line in _grid([[number_text(v) for v in row] for row in channels.output()])
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class Scattered:
    """A small transposed convolution by hand, as ``convcli conv --transpose`` (PyTorch
    ``conv_transpose2d``, Keras ``same``): the scatter, and the direct convolution it equals.

    Input cell (i, j) adds ``value x kernel`` at output rows ``i*s + m*d - crop[0]`` and columns
    ``j*s + n*d - crop[1]``; products landing outside ``output_hw`` are cropped by the padding;
    output padding adds rows and columns at the bottom/right where nothing may land.
    """

    image: tuple[tuple[float, ...], ...]
    weights: tuple[tuple[float, ...], ...]
    stride: Pair
    dilation: Pair
    padding: PaddingSpec
    output_padding: Pair
    crop: Pair
    output_hw: Pair
    arithmetic: tuple[str, ...]
    scale: float = 1.0
    offset: float = 0.0
    name: str = ""

    @property
    def full_hw(self) -> Pair:
        """The output before any crop: ``(i - 1)*s + d*(k - 1) + 1`` per axis."""
        size = (len(self.weights), len(self.weights[0]))
        in_hw = (len(self.image), len(self.image[0]))
        return tuple(
            geometry.transposed_output_size(*axis)
            for axis in zip(in_hw, size, self.stride, self.dilation)
        )

    def landings(self, i: int, j: int) -> tuple[tuple[int, int, float, float], ...]:
        """Where input cell (i, j) adds: (output row, output column, weight, value x weight) per
        tap.

        >>> up = by_hand_transposed([[1, 2], [3, 4]], [[1, 1], [1, 1]], stride=(2, 2))
        >>> up.landings(0, 1)[:2], up.output()[0]
        (((0, 2, 1.0, 2.0), (0, 3, 1.0, 2.0)), [1.0, 1.0, 2.0, 2.0])
        """
        (sh, sw), (dh, dw), (top, left) = self.stride, self.dilation, self.crop
        value = self.image[i][j]
        return tuple(
            (i * sh + m * dh - top, j * sw + n * dw - left, w, value * w)
            for m, row in enumerate(self.weights)
            for n, w in enumerate(row)
        )

    def sources(self, r: int, c: int) -> list[tuple[Pair, Pair]]:
        """What lands on output (r, c): the (input cell, kernel tap) of each product."""
        kw = len(self.weights[0])
        return [
            ((i, j), divmod(tap, kw))
            for i in range(len(self.image))
            for j in range(len(self.image[0]))
            for tap, (row, col, _, _) in enumerate(self.landings(i, j))
            if (row, col) == (r, c)
        ]

    def sums(self) -> dict[Pair, float]:
        """Every product added at its place, the cropped ones included (keys in output indices)."""
        sums: dict[Pair, float] = {}
        for i in range(len(self.image)):
            for j in range(len(self.image[0])):
                for row, col, _, product in self.landings(i, j):
                    sums[row, col] = sums.get((row, col), 0.0) + product
        return sums

    def output(self) -> list[list[float]]:
        """The scatter's sums inside the output (0 where nothing lands), then
        ``/ scale + offset``."""
        sums = self.sums()
        return [
            [sums.get((r, c), 0.0) / self.scale + self.offset for c in range(self.output_hw[1])]
            for r in range(self.output_hw[0])
        ]

    def direct(self) -> Worked:
        """The same output as a convolution: the input spread by the stride (``s - 1`` zeros between
        cells), padded by ``d*(k - 1) - crop`` (negative: cut), correlated with the kernel rotated
        180 degrees at stride 1.

        >>> by_hand_transposed([[1, 2], [3, 4]], [[1, 2], [3, 4]], stride=(2, 2)).direct().image
        ((1.0, 0.0, 2.0), (0.0, 0.0, 0.0), (3.0, 0.0, 4.0))
        """
        (sh, sw), (h, w) = self.stride, (len(self.image), len(self.image[0]))
        spread = [[0.0] * ((w - 1) * sw + 1) for _ in range((h - 1) * sh + 1)]
        for i, row in enumerate(self.image):
            for j, value in enumerate(row):
                spread[i * sh][j * sw] = value
        size = (len(self.weights), len(self.weights[0]))
        reach = [d * (k - 1) for k, d in zip(size, self.dilation)]
        before = [r - crop for r, crop in zip(reach, self.crop)]
        spread_hw = (len(spread), len(spread[0]))
        after = [out + r - n - b for out, r, n, b in zip(self.output_hw, reach, spread_hw, before)]
        pads = (before[0], after[0], before[1], after[1])
        axes = _axes(spread_hw, size, (1, 1), self.dilation, pads)
        arithmetic = _per_axis(
            [_conv_formula(*axis, out) for axis, out in zip(axes, self.output_hw)]
        )
        rotated = tuple(tuple(reversed(row)) for row in reversed(self.weights))
        return Worked(
            "conv",
            tuple(map(tuple, spread)),
            size,
            (1, 1),
            self.dilation,
            pads,
            pads,
            self.output_hw,
            arithmetic,
            rotated,
            self.scale,
            self.offset,
            name=self.name,
        )


def by_hand_transposed(
    image: Sequence[Sequence[float]],
    weights: Sequence[Sequence[float]],
    *,
    stride: Pair = (1, 1),
    padding: PaddingSpec = "valid",
    output_padding: Pair = (0, 0),
    dilation: Pair = (1, 1),
    scale: float = 1.0,
    offset: float = 0.0,
    name: str = "",
) -> Scattered:
    """A transposed convolution of a small matrix, checked by the engine's rules
    (``conv --transpose``).

    >>> by_hand_transposed([[1, 2], [3, 4]], [[1, 2], [3, 4]]).output()
    [[1.0, 4.0, 4.0], [6.0, 20.0, 16.0], [9.0, 24.0, 16.0]]
    """
    from convcli import engine  # its rules, so that errors read as conv --transpose's

    image = _check_matrix([[float(v) for v in row] for row in image], "matrix")
    weights = tuple(tuple(float(v) for v in row) for row in weights)
    size = (len(weights), len(weights[0]))
    in_hw = (len(image), len(image[0]))
    crop, out_hw = engine.transposed_plan(in_hw, size, stride, padding, output_padding, dilation)
    arithmetic = _transposed_formulas(
        in_hw, size, stride, dilation, padding, output_padding, out_hw
    )
    return Scattered(
        tuple(map(tuple, image)),
        weights,
        tuple(stride),
        tuple(dilation),
        padding,
        tuple(output_padding),
        tuple(crop),
        tuple(out_hw),
        arithmetic,
        scale,
        offset,
        name,
    )


def default_input_cells(scattered: Scattered) -> list[Pair]:
    """The input cells whose scatter is shown: the first and its right neighbour (or the one
    below)."""
    h, w = len(scattered.image), len(scattered.image[0])
    return [(0, 0)] + ([(0, 1)] if w > 1 else [(1, 0)] if h > 1 else [])


def default_cells(worked: Worked) -> list[Pair]:
    """The first output cell and its right neighbour (or the one below, or none)."""
    h_out, w_out = worked.output_hw
    return [(0, 0)] + ([(0, 1)] if w_out > 1 else [(1, 0)] if h_out > 1 else [])


def _grid(rows: Sequence[Sequence[str]]) -> list[str]:
    width = max((len(t) for row in rows for t in row), default=1)
    return [" ".join(t.rjust(width) for t in row) for row in rows]


def _side_by_side(blocks: Sequence[list[str]], joins: Sequence[str]) -> list[str]:
    """Blocks of lines next to each other; ``joins[k]`` sits on the middle line between k and
    k+1."""
    height = max(len(b) for b in blocks)
    widths = [max(len(line) for line in b) for b in blocks]
    lines = []
    for r in range(height):
        parts = []
        for k, block in enumerate(blocks):
            parts.append((block[r] if r < len(block) else "").ljust(widths[k]))
            if k < len(joins):
                parts.append(f"  {joins[k] if r == height // 2 else ' ' * len(joins[k])}  ")
        lines.append("".join(parts).rstrip())
    return lines


def _tap(value: float | None, worked: Worked, inside: bool = True) -> str:
    """A window value; padding is marked with a leading dot (``·0``, ``·`` where ignored, or
    ``·2`` for a border value the pad mode reads)."""
    if value is not None:
        return number_text(value) if inside else f"·{number_text(value)}"
    return "·" if worked.op == "max" or (worked.op == "avg" and not _pads_count(worked)) else "·0"


def _pads_count(worked: Worked) -> bool:
    return worked.count_include_pad and worked.padding != "same"


def _sum_text(terms: Sequence[float]) -> str:
    text = number_text(terms[0])
    for term in terms[1:]:
        text += f" - {number_text(-term)}" if term < 0 else f" + {number_text(term)}"
    return text


def _describe(worked: Worked) -> str:
    h, w = len(worked.image), len(worked.image[0])
    if worked.op == "conv":
        what = f"{shape_text(worked.size)} kernel" + (f" {worked.name!r}" if worked.name else "")
    else:
        what = f"{worked.op} pooling, {shape_text(worked.size)} window"
    pads = (
        f" ({padding_text(worked.pads)})"
        if isinstance(worked.padding, str) and any(worked.pads)
        else ""
    )
    mode = f", pad mode {worked.pad_mode}" if worked.pad_mode != "zeros" else ""
    return (
        f"{h}x{w} input, {what}, stride {hw_text(worked.stride)}, "
        f"dilation {hw_text(worked.dilation)}, "
        f"padding {padding_text(worked.padding)}{pads}{mode}"
    )


def render_by_hand(worked: Worked, cells: Sequence[Pair]) -> str:
    """Plain text: the setup, the padded input, each chosen cell worked out, then the output.

    >>> pooled = by_hand_pool([[1, 3, 2, 0], [4, 6, 1, 2], [0, 2, 5, 3], [1, 2, 2, 4]], "max")
    >>> print(render_by_hand(pooled, [(0, 0)]))                    # doctest: +NORMALIZE_WHITESPACE
    4x4 input, max pooling, 2x2 window, stride 2, dilation 1, padding valid
    output size: floor((4 + 0 + 0 - 2) / 2) + 1 = 2
    <BLANKLINE>
    output[0, 0]: window rows 0..1, columns 0..1
      1 3
      4 6
      max(1, 3, 4, 6) = 6; argmax input[1, 1], index 1*4 + 1 = 5
    <BLANKLINE>
    argmax indices (r*4 + c in the 4x4 input, as return_indices):
       5  2
       9 10
    <BLANKLINE>
    backward: a gradient of ones on the output goes to each window's argmax (d sum / d input):
      0 0 1 0
      0 1 0 0
      0 1 1 0
      0 0 0 0
    <BLANKLINE>
    output (2x2):
      6 2
      2 5
    """
    lines = [_describe(worked)]
    lines += [f"output size: {text}" for text in worked.arithmetic]
    return "\n".join(lines + _worked_lines(worked, cells))


def _worked_lines(worked: Worked, cells: Sequence[Pair]) -> list[str]:
    """The padded input, the kernel, each cell worked out, and the output."""
    lines = []
    top, bottom, left, right = worked.pads
    height, width = len(worked.image), len(worked.image[0])
    if any(worked.pads):
        lines += ["", "input with its padding (· marks padding cells):"]
        padded = [
            [
                _tap(worked.value_at(r, c), worked, worked.inside(r, c))
                for c in range(-left, width + right)
            ]
            for r in range(-top, height + bottom)
        ]
        lines += ["  " + line for line in _grid(padded)]
    if worked.op == "conv":
        kernel = _grid([[number_text(w) for w in row] for row in worked.weights])
        lines += ["", "kernel:"] + ["  " + line for line in kernel]
    kh, kw = worked.size
    for i, j in cells:
        cell = worked.cell(i, j)
        rows = sorted({r for r, _ in cell.positions})
        cols = sorted({c for _, c in cell.positions})
        lines += [
            "",
            f"output[{i}, {j}]: window rows {_index_text(rows)}, columns {_index_text(cols)}",
        ]
        taps = [_tap(v, worked, worked.inside(*at)) for v, at in zip(cell.values, cell.positions)]
        window = _grid([taps[m * kw : (m + 1) * kw] for m in range(kh)])
        if worked.op == "conv":
            weights = _grid(
                [[number_text(w) for w in cell.weights[m * kw : (m + 1) * kw]] for m in range(kh)]
            )
            products = _grid(
                [[number_text(p) for p in cell.products[m * kw : (m + 1) * kw]] for m in range(kh)]
            )
            lines += [
                "  " + line for line in _side_by_side([window, weights, products], ["x", "="])
            ]
            result = f"sum: {_sum_text(cell.products)} = {number_text(cell.total)}"
            if worked.scale != 1 or worked.offset != 0:
                result += (
                    f"; / scale {number_text(worked.scale)} + offset {number_text(worked.offset)}"
                    f" = {number_text(cell.value)}"
                )
        else:
            lines += ["  " + line for line in window]
            real = [number_text(v) for v in cell.values if v is not None]
            if worked.op == "max":
                ignored = "; padding ignored" if len(real) < len(cell.values) else ""
                result = f"max({', '.join(real)}{ignored}) = {number_text(cell.value)}"
                if cell.winner is not None:
                    (r, c), width = cell.winner, len(worked.image[0])
                    result += f"; argmax input[{r}, {c}], index {r}*{width} + {c} = {r * width + c}"
            else:
                counted = " (padding counts)" if cell.divisor > len(real) else ""
                result = (
                    f"({' + '.join(real)}) / {cell.divisor}{counted} = {number_text(cell.value)}"
                )
        lines.append("  " + result)
    if worked.op == "max":
        lines += _routing_lines(worked)
    output = worked.output()
    lines += ["", f"output ({worked.output_hw[0]}x{worked.output_hw[1]}):"]
    lines += ["  " + line for line in _grid([[number_text(v) for v in row] for row in output])]
    return lines


def _routing_lines(worked: Worked) -> list[str]:
    """Max pooling's argmax indices, and the gradient of ones routed back through them."""
    height, width = _hw(worked.image)
    indices = _grid(
        [["-" if index is None else str(index) for index in row] for row in worked.indices()]
    )
    routed = worked.routed_ones()
    lines = [
        "",
        f"argmax indices (r*{width} + c in the {height}x{width} input, as return_indices):",
    ]
    lines += ["  " + line for line in indices]
    lines += [
        "",
        (
            "backward: a gradient of ones on the output goes to each window's argmax "
            "(d sum / d input):"
        ),
    ]
    lines += ["  " + line for line in _grid([[str(count) for count in row] for row in routed])]
    if max(max(row) for row in routed) > 1:
        lines.append(
            "  (overlapping windows: a cell that wins several windows receives one 1 from each)"
        )
    return lines


def render_transposed(
    scattered: Scattered, cells: Sequence[Pair], input_cells: Sequence[Pair] | None = None
) -> str:
    """Plain text: (a) the scatter of ``input_cells`` and what lands on each of ``cells``;
    (b) the direct convolution of the spread, padded input with the rotated kernel, cell by cell.

    >>> text = render_transposed(by_hand_transposed([[1, 2], [3, 4]], [[1, 2], [3, 4]]), [(1, 1)])
    >>> print("\\n".join(text[text.index("output[1, 1] ="):].splitlines()[:2]))
    ... # doctest: +NORMALIZE_WHITESPACE
    output[1, 1] = input[0, 0] x kernel[1, 1] + input[0, 1] x kernel[1, 0]
      + input[1, 0] x kernel[0, 1] + input[1, 1] x kernel[0, 0]
      = 1*4 + 2*3 + 3*2 + 4*1 = 20
    """
    h_out, w_out = scattered.output_hw
    for i, j in cells:
        if not (0 <= i < h_out and 0 <= j < w_out):
            raise ParameterError(
                f"cell {i},{j} is outside the {h_out}x{w_out} output "
                f"(rows and columns count from 0)"
            )
    (kh, kw), height, width = (
        (len(scattered.weights), len(scattered.weights[0])),
        *_hw(scattered.image),
    )
    kernel = f"{kh}x{kw} kernel" + (f" {scattered.name!r}" if scattered.name else "")
    setup = (
        f"{height}x{width} input, {kernel}, transposed: stride {hw_text(scattered.stride)}, "
        f"padding {padding_text(scattered.padding)}, "
        f"output padding {hw_text(scattered.output_padding)}, "
        f"dilation {hw_text(scattered.dilation)}"
    )
    lines = [setup]
    lines += [f"output size: {text}" for text in scattered.arithmetic]
    lines += ["", "(a) scatter: each input cell adds value x kernel into the output"]
    weights = _grid([[number_text(w) for w in row] for row in scattered.weights])
    for i, j in input_cells or default_input_cells(scattered):
        if not (0 <= i < height and 0 <= j < width):
            raise ParameterError(f"input cell {i},{j} is outside the {height}x{width} input")
        landed = scattered.landings(i, j)
        rows, cols = [r for r, _, _, _ in landed], [c for _, c, _, _ in landed]
        where = (
            f"input[{i}, {j}] = {number_text(scattered.image[i][j])} adds to output rows "
            f"{_index_text(sorted(set(rows)))}, columns {_index_text(sorted(set(cols)))}:"
        )
        lines += ["", where]
        products = _grid(
            [[number_text(p) for _, _, _, p in landed[m * kw : (m + 1) * kw]] for m in range(kh)]
        )
        lines += [
            "  " + line
            for line in _side_by_side(
                [[number_text(scattered.image[i][j])], weights, products], ["x", "="]
            )
        ]
    sums = scattered.sums()
    rows = range(min(0, min(r for r, _ in sums)), max(h_out, max(r for r, _ in sums) + 1))
    cols = range(min(0, min(c for _, c in sums)), max(w_out, max(c for _, c in sums) + 1))
    kept = [
        [
            ("" if 0 <= r < h_out and 0 <= c < w_out else "·") + number_text(sums.get((r, c), 0.0))
            for c in cols
        ]
        for r in rows
    ]
    lines += ["", "all products added (· marks the cells the padding crops):"]
    lines += ["  " + line for line in _grid(kept)]
    for r, c in cells:
        pairs = [
            (scattered.image[i][j], scattered.weights[m][n], f"input[{i}, {j}] x kernel[{m}, {n}]")
            for (i, j), (m, n) in scattered.sources(r, c)
        ]
        named = " + ".join(name for _, _, name in pairs) or "nothing lands here"
        terms = " + ".join(f"{number_text(v)}*{number_text(w)}" for v, w, _ in pairs) or "0"
        total = sum(v * w for v, w, _ in pairs)
        lines += ["", f"output[{r}, {c}] = {named}", f"  = {terms} = {number_text(total)}"]
        if scattered.scale != 1 or scattered.offset != 0:
            lines[-1] += (
                f"; / scale {number_text(scattered.scale)} + offset {number_text(scattered.offset)}"
                f" = {number_text(scattered.output()[r][c])}"
            )
    direct = scattered.direct()
    spread = [f"{s - 1} zeros" if s != 2 else "1 zero" for s in scattered.stride]
    pads = _per_axis(
        [
            f"{d}*({k} - 1) - {crop} = {before}"
            + (f" (bottom/right {after})" if after != before else "")
            for k, d, crop, before, after in zip(
                direct.size, direct.dilation, scattered.crop, direct.pads[0::2], direct.pads[1::2]
            )
        ]
    )
    view = (
        "(b) the same as a convolution: the input spread by the stride "
        f"({', '.join(_per_axis(spread))} between cells), "
        f"padded by d*(k - 1) - p: {'; '.join(pads)}, and the kernel rotated 180 degrees, "
        "at stride 1"
    )
    lines += ["", view]
    lines += [f"output size: {text}" for text in direct.arithmetic]
    return "\n".join(lines + _worked_lines(direct, cells))


def _hw(matrix: Sequence[Sequence[Any]]) -> Pair:
    return len(matrix), len(matrix[0])


def _index_text(indices: Sequence[int]) -> str:
    """``0..2`` for a run, ``0, 2, 4`` for a dilated window."""
    if len(indices) > 1 and indices[-1] - indices[0] == len(indices) - 1:
        return f"{indices[0]}..{indices[-1]}"
    return ", ".join(str(i) for i in indices)


#: GIF colours: the cells read or written now, padding, kernel, output filled so far, a max's
#: argmax.
