"""The receptive field of one output unit: the input pixels it depends on, as numbers and drawn.

``unit_field(trace, (row, col))`` walks the trace's layer windows back from unit (row, col) of
the last step (``geometry.input_span``, the arithmetic behind the trace's RF, jump and start
columns): the first and last input row and column the unit reads, negative or past the image
where the window lies in the padding. For stacks of convolutions and pools the window is RF
pixels wide and centred on ``start + unit * jump``; behind a transposed step or an unpool it is
the hull of the pixels whose products can land on the unit. A global pool's unit sees the
whole input (and whatever padding earlier steps read); activations, batchnorm and channel
steps keep the field. It is the hull, as the RF column: through a dilation or a later step's
padding a pixel inside it may reach the unit by no weight. The padding is where the window
reaches past the image, whatever a step's pad mode fills it with.

``draw_field`` paints it on the picture: the canvas grown by the padding the last step's units
reach (hatched gray), the unit's window tinted (over the hatching where it lies in the
padding), its centre pixel marked by a small cross. Nothing here imports numba.

>>> from convcli.explain import parse_steps, trace
>>> stack = trace((32, 32, 1), parse_steps(["conv 1 k3 s2 p1", "conv 1 k3 s2 p1"]))
>>> field = unit_field(stack, (1, 0))
>>> field.rows, field.cols
(Span(first=1, last=7, size=32), Span(first=-3, last=3, size=32))
>>> field.padding, field.centre
((0, 0, 3, 0), (4.0, 0.0))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from convcli import geometry
from convcli.errors import ParameterError, ShapeError
from convcli.geometry import Pair

#: (top, bottom, left, right) pixels outside the image.
Pads = tuple[int, int, int, int]

#: Colours: the window's tint (blended half and half), the centre mark, the padding, its hatching.
TINT, MARK, PADDING, HATCH = (255, 140, 0), (200, 0, 200), (235, 235, 235), (190, 190, 190)


class Span(NamedTuple):
    """The input pixels one unit reads along one axis: ``first..last`` of an input ``size`` long
    (before 0 or past ``size - 1``: in the padding)."""

    first: int
    last: int
    size: int

    @property
    def inside(self) -> Pair | None:
        """The part within the image, or None when the whole window is padding.

        >>> Span(-2, 3, 10).inside, Span(-5, -1, 10).inside
        ((0, 3), None)
        """
        first, last = max(self.first, 0), min(self.last, self.size - 1)
        return (first, last) if first <= last else None

    @property
    def outside(self) -> Pair:
        """Pixels of the window before the image and after it.

        >>> Span(-2, 3, 3).outside, Span(-5, -4, 10).outside
        ((2, 1), (2, 0))
        """
        return (
            max(0, min(self.last, -1) - self.first + 1),
            max(0, self.last - max(self.first, self.size) + 1),
        )


@dataclass(frozen=True)
class UnitField:
    """Output ``unit`` (row, column) of the last step and the input it depends on.

    ``reach``: the padding (top, bottom, left, right) the windows of any unit of the last step
    read: what the drawing grows the canvas by.
    """

    unit: Pair
    output: Pair
    rows: Span
    cols: Span
    reach: Pads

    @property
    def padding(self) -> Pads:
        """The unit's window outside the image: (top, bottom, left, right) pixels."""
        return self.rows.outside + self.cols.outside

    @property
    def centre(self) -> tuple[float, float]:
        """The window's centre, in input pixel indices (half-way between two for an even size)."""
        return (self.rows.first + self.rows.last) / 2, (self.cols.first + self.cols.last) / 2

    def to_dict(self) -> dict:
        inside = (self.rows.inside, self.cols.inside)
        return {
            "unit": list(self.unit),
            "output": list(self.output),
            "rows": [self.rows.first, self.rows.last],
            "columns": [self.cols.first, self.cols.last],
            "size": [self.rows.last - self.rows.first + 1, self.cols.last - self.cols.first + 1],
            "inside": None
            if None in inside
            else {"rows": list(inside[0]), "columns": list(inside[1])},
            "padding": list(self.padding),
            "centre": list(self.centre),
        }

    def lines(self) -> list[str]:
        """The field as text, under the trace.

        >>> from convcli.explain import parse_steps, trace
        >>> field = unit_field(trace((8, 8, 1), parse_steps(["conv 1 k3 p1"])), (0, 7))
        >>> print("\\n".join(field.lines()))
        field of output unit (0, 7) of the last step (8x8): input rows -1..1, columns 6..8 (3x3)
          in the 8x8 image: rows 0..1, columns 6..7; in the padding: 1 row above, 1 column right
          centre: row 0, column 7
        """
        rows, cols = self.rows, self.cols
        (row, col), (height, width) = self.unit, self.output
        size = f"{rows.last - rows.first + 1}x{cols.last - cols.first + 1}"
        lines = [
            (
                f"field of output unit ({row}, {col}) of the last step ({height}x{width}): "
                f"input rows {rows.first}..{rows.last}, columns {cols.first}..{cols.last} "
                f"({size})"
            )
        ]
        if rows.inside and cols.inside:
            image = (
                f"rows {rows.inside[0]}..{rows.inside[1]}, "
                f"columns {cols.inside[0]}..{cols.inside[1]}"
            )
        else:
            image = "nothing (the whole window is padding)"
        names = zip(
            self.padding, ("row", "row", "column", "column"), ("above", "below", "left", "right")
        )
        sides = [
            f"{count} {name}{'' if count == 1 else 's'} {where}"
            for count, name, where in names
            if count
        ]
        padded = f"; in the padding: {', '.join(sides)}" if sides else "; none in the padding"
        lines.append(f"  in the {rows.size}x{cols.size} image: {image}{padded}")
        centre = [f"{value:g}" for value in self.centre]
        lines.append(f"  centre: row {centre[0]}, column {centre[1]}")
        return lines


def unit_field(trace, unit: Pair) -> UnitField:
    """The field of output ``unit`` (row, column) of the last step of ``trace`` (an
    ``explain.Trace`` without error).

    >>> from convcli.explain import parse_steps, trace
    >>> unit_field(trace((8, 8, 1), parse_steps(["conv 1 k3 s2 p1"])), (4, 0))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    convcli.errors.ParameterError: field 4,0 is outside the last step's 4x4 output (rows 0..3, ...
    """
    height, width = trace.output[:2]
    row, col = unit
    if not (0 <= row < height and 0 <= col < width):
        raise ParameterError(
            f"field {row},{col} is outside the last step's {height}x{width} "
            f"output (rows 0..{height - 1}, columns 0..{width - 1})",
            names=("field",),
        )
    spans, reach = [], []
    for windows, index, out, size in zip(trace.windows, unit, (height, width), trace.input[:2]):
        span = geometry.input_span(windows, index)
        if span is None:
            raise ShapeError(
                f"output unit ({row}, {col}) depends on no input pixel: a transposed "
                f"step whose kernel is smaller than its stride leaves it empty"
            )
        spans.append(Span(*span, size))
        ends = [geometry.input_span(windows, 0), span, geometry.input_span(windows, out - 1)]
        ends = [end for end in ends if end]
        first, last = min(first for first, _ in ends), max(last for _, last in ends)
        reach += [max(0, -first), max(0, last - size + 1)]
    return UnitField(tuple(unit), (height, width), spans[0], spans[1], tuple(reach))


def canvas_shape(field: UnitField) -> Pair:
    """Rows and columns of the drawing: the image grown by ``field.reach``."""
    top, bottom, left, right = field.reach
    return field.rows.size + top + bottom, field.cols.size + left + right


def display_pixels(data, white: float | None):
    """8-bit RGB (H, W, 3) of an input's (C, H, W) ``data``: images by their ``white`` level,
    ``.npy`` arrays stretched min..max; three channels as colour, else the first as gray.

    >>> import numpy as np
    >>> display_pixels(np.array([[[0, 65535]]], dtype=np.uint16), 65535.0).tolist()
    [[[0, 0, 0], [255, 255, 255]]]
    """
    import numpy as np

    from convcli.render.mapping import map_values, to_integers

    planes = data[:3] if data.shape[0] == 3 else data[:1]
    values = planes.astype(np.float32)
    if white is None:
        values = map_values(values, "minmax", 255.0, joint=True)
    else:
        values *= 255.0 / white
    pixels = to_integers(values, 8).transpose(1, 2, 0)
    return np.ascontiguousarray(np.broadcast_to(pixels, pixels.shape[:2] + (3,)))


def draw_field(pixels, field: UnitField):
    """The drawing of ``field`` on 8-bit RGB ``pixels`` (H, W, 3): a new (H', W', 3) array,
    ``canvas_shape(field)``, the image at (top, left) of ``field.reach``.

    >>> import numpy as np
    >>> from convcli.explain import parse_steps, trace
    >>> field = unit_field(trace((4, 4, 1), parse_steps(["conv 1 k3 p1"])), (0, 0))
    >>> canvas = draw_field(np.zeros((4, 4, 3), np.uint8), field)
    >>> canvas.shape, canvas[1, 1].tolist(), canvas[2, 2].tolist(), canvas[4, 4].tolist()
    ((6, 6, 3), [200, 0, 200], [128, 70, 0], [0, 0, 0])
    """
    import numpy as np

    top, _, left, _ = field.reach
    canvas = np.empty(canvas_shape(field) + (3,), np.uint8)
    rows, cols = np.indices(canvas.shape[:2])
    canvas[:] = np.where(((rows + cols) % 6 == 0)[:, :, None], HATCH, PADDING)
    canvas[top : top + field.rows.size, left : left + field.cols.size] = pixels
    window = canvas[
        top + field.rows.first : top + field.rows.last + 1,
        left + field.cols.first : left + field.cols.last + 1,
    ]
    window[:] = (window.astype(np.uint16) + TINT + 1) // 2
    centre = [
        (int(np.floor(c)) - first, int(np.ceil(c)) - first)
        for c, first in zip(field.centre, (field.rows.first, field.cols.first))
    ]
    arm = max(window.shape[:2]) // 8
    (r0, r1), (c0, c1) = centre
    window[r0 : r1 + 1, max(c0 - arm, 0) : c1 + arm + 1] = MARK
    window[max(r0 - arm, 0) : r1 + arm + 1, c0 : c1 + 1] = MARK
    return canvas
