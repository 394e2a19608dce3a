"""GIF frames of worked examples: each output cell with the inputs and taps that made it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from convcli.errors import ParameterError
from convcli.explain.byhand import MAX_GIF_CELLS, Cell, Scattered, Worked, _hw, _index_text, _tap
from convcli.explain.text import number_text
from convcli.geometry import (
    Pair,
)

_CURRENT, _PADDING, _KERNEL, _FILLED = (
    (255, 213, 79),
    (230, 230, 230),
    (200, 230, 201),
    (187, 222, 251),
)
_WINNER = (255, 138, 101)
#: One drawn cell: its text and its fill (text starting with ``·``: padding, drawn in gray).
Square = tuple[str, Any]
#: One frame: its caption, its panels (title, rows of squares) and the signs between panels.
Scene = tuple[str, Sequence[tuple[str, Sequence[Sequence[Square]]]], Sequence[str]]


def draw_scenes(scenes: Sequence[Scene], cell_px: int = 34) -> list:
    """Pillow frames, all of one size: each scene's caption on top, then its panels side by side,
    each with its title above and a sign (``x``, ``=``) between neighbours. The caller closes them.
    """
    from PIL import Image, ImageDraw, ImageFont

    from convcli.limits import check_arrays

    font = ImageFont.load_default(size=max(8, cell_px * 2 // 5))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = measure.textbbox((0, 0), "Ag", font=font)[3] + 6
    gap, margin = max(2 * line, cell_px), 16
    widths = [
        [max(len(row) for row in grid) * cell_px if grid else 0 for _, grid in panels]
        for _, panels, _ in scenes
    ]
    titles = [
        [
            max(
                cell_px * len(grid[0]) if grid else 0, int(measure.textlength(title, font=font)) + 4
            )
            for title, grid in panels
        ]
        for _, panels, _ in scenes
    ]
    spans = [[max(w, t) for w, t in zip(ws, ts)] for ws, ts in zip(widths, titles)]
    grids = max(sum(span) + gap * (len(span) - 1) for span in spans)
    caption = max(int(measure.textlength(text, font=font)) + 1 for text, _, _ in scenes)
    tallest = max(len(grid) for _, panels, _ in scenes for _, grid in panels)
    size = (2 * margin + max(grids, caption), 2 * margin + 2 * line + tallest * cell_px)
    check_arrays("the GIF", itemsize=1, frames=(len(scenes), size[1], size[0], 3))
    y0 = margin + 2 * line
    frames = []
    for (text, panels, signs), span in zip(scenes, spans):
        frame = Image.new("RGB", size, "white")
        draw = ImageDraw.Draw(frame)
        draw.text((margin, margin), text, fill="black", font=font)
        x = margin
        for k, (title, grid) in enumerate(panels):
            draw.text((x, margin + line), title, fill="black", font=font)
            for r, row in enumerate(grid):
                for c, (label, fill) in enumerate(row):
                    box = (
                        x + c * cell_px,
                        y0 + r * cell_px,
                        x + (c + 1) * cell_px,
                        y0 + (r + 1) * cell_px,
                    )
                    draw.rectangle(box, fill=fill, outline=(150, 150, 150))
                    left, upper, right, lower = draw.textbbox((0, 0), label, font=font)
                    centre = (
                        (box[0] + box[2] - right - left) / 2,
                        (box[1] + box[3] - lower - upper) / 2,
                    )
                    draw.text(
                        centre, label, fill="gray" if label.startswith("·") else "black", font=font
                    )
            x += span[k]
            if k < len(signs):  # on the middle row of the shorter neighbour
                width = draw.textlength(signs[k], font=font)
                rows = min(len(grid), len(panels[k + 1][1]))
                draw.text(
                    (x + (gap - width) / 2, y0 + (rows * cell_px - line) / 2),
                    signs[k],
                    fill="black",
                    font=font,
                )
            x += gap
        frames.append(frame)
    return frames


def _check_animated(cells: int, what: str) -> None:
    if cells > MAX_GIF_CELLS:
        raise ParameterError(
            f"{what} has more than {MAX_GIF_CELLS} cells to animate; use a smaller matrix"
        )


def animation_frames(worked: Worked, cell_px: int = 34) -> list:
    """Pillow frames of the window sliding over the (padded) input and filling the output.

    One frame per output cell, then the finished output. Max pooling also marks each window's
    argmax and fills a third panel, the gradient of ones routed back to the argmaxes so far.
    The caller saves and closes them.
    """
    h_out, w_out = worked.output_hw
    _check_animated(h_out * w_out, f"the {h_out}x{w_out} output")
    cells = [(i, j) for i in range(h_out) for j in range(w_out)]
    top, bottom, left, right = worked.pads
    height, width = _hw(worked.image)
    output = worked.output()
    marked = " (· padding)" if any(worked.pads) else ""
    routed = [[0] * width for _ in range(height)]
    scenes = []
    for index in range(len(cells) + 1):
        current = worked.cell(*cells[index]) if index < len(cells) else None
        taps = set(current.positions) if current else set()
        winner = current.winner if current else None
        if winner is not None:
            routed[winner[0]][winner[1]] += 1
        image = [
            [
                (
                    _tap(worked.value_at(r, c), worked, worked.inside(r, c)),
                    _WINNER
                    if (r, c) == winner
                    else _CURRENT
                    if (r, c) in taps
                    else "white"
                    if worked.inside(r, c)
                    else _PADDING,
                )
                for c in range(-left, width + right)
            ]
            for r in range(-top, height + bottom)
        ]
        panels = [("input" + marked, image)]
        if worked.op == "conv":
            panels.append(
                ("kernel", [[(number_text(w), _KERNEL) for w in row] for row in worked.weights])
            )
        filled = [
            [
                (
                    number_text(output[i][j]),
                    _CURRENT
                    if (i, j) == cells[min(index, len(cells) - 1)] and current
                    else _FILLED,
                )
                if i * w_out + j <= index
                else ("", "white")
                for j in range(w_out)
            ]
            for i in range(h_out)
        ]
        panels.append(("output", filled))
        signs = ["x", "="] if worked.op == "conv" else [f"{worked.op} ="]
        if worked.op == "max":
            panels.append(
                (
                    "backward: ones to argmax",
                    [
                        [
                            (
                                str(count),
                                _WINNER if (r, c) == winner else _FILLED if count else "white",
                            )
                            for c, count in enumerate(row)
                        ]
                        for r, row in enumerate(routed)
                    ],
                )
            )
            signs.append("grad")
        scenes.append((_frame_caption(worked, current), panels, signs))
    return draw_scenes(scenes, cell_px)


def scatter_frames(scattered: Scattered, cell_px: int = 34) -> list:
    """Pillow frames of a transposed convolution's scatter: one frame per input cell, adding
    ``value x kernel`` into the output (its cropped border shown, marked ``·``), then the output.
    """
    height, width = _hw(scattered.image)
    sums = scattered.sums()
    h_out, w_out = scattered.output_hw
    rows = range(min(0, min(r for r, _ in sums)), max(h_out, max(r for r, _ in sums) + 1))
    cols = range(min(0, min(c for _, c in sums)), max(w_out, max(c for _, c in sums) + 1))
    _check_animated(len(rows) * len(cols), f"the {len(rows)}x{len(cols)} scatter")
    kernel = ("kernel", [[(number_text(w), _KERNEL) for w in row] for row in scattered.weights])
    added: dict[Pair, float] = {}
    order = [(i, j) for i in range(height) for j in range(width)]
    scenes = []
    for index in range(len(order) + 1):
        landed = scattered.landings(*order[index]) if index < len(order) else ()
        for r, c, _, product in landed:
            added[r, c] = added.get((r, c), 0.0) + product
        now = {(r, c) for r, c, _, _ in landed}
        image = [
            [
                (
                    number_text(v),
                    _CURRENT if (i, j) == order[min(index, len(order) - 1)] and landed else "white",
                )
                for j, v in enumerate(row)
            ]
            for i, row in enumerate(scattered.image)
        ]
        out = [
            [
                (
                    ("" if 0 <= r < h_out and 0 <= c < w_out else "·") + number_text(added[r, c])
                    if (r, c) in added
                    else "·"
                    if not (0 <= r < h_out and 0 <= c < w_out)
                    else "",
                    _CURRENT
                    if (r, c) in now
                    else _PADDING
                    if not (0 <= r < h_out and 0 <= c < w_out)
                    else _FILLED
                    if (r, c) in added
                    else "white",
                )
                for c in cols
            ]
            for r in rows
        ]
        if landed:
            i, j = order[index]
            value = number_text(scattered.image[i][j])
            caption = (
                f"output[{_index_text(sorted({r for r, _ in now}))}, "
                f"{_index_text(sorted({c for _, c in now}))}] += input[{i}, {j}] x kernel "
                f"= {value} x kernel"
            )
        else:
            caption = f"output {h_out}x{w_out}: the sums inside the crop"
        scenes.append(
            (caption, [("input", image), kernel, ("output (· cropped)", out)], ["x", "+="])
        )
    return draw_scenes(scenes, cell_px)


#: Most terms a GIF caption writes out; longer sums keep the first few and the last two.
CAPTION_TERMS = 9


def _joined(terms: Sequence[str], sign: str) -> str:
    """``terms`` joined by ``sign``, shortened to the first four, ``...`` and the last two when
    there are more than ``CAPTION_TERMS``.

    >>> _joined([f"{v}*1" for v in range(25)], " + ")
    '0*1 + 1*1 + 2*1 + 3*1 + ... + 23*1 + 24*1'
    """
    if len(terms) > CAPTION_TERMS:
        terms = [*terms[:4], "...", *terms[-2:]]
    return sign.join(terms)


def _frame_caption(worked: Worked, cell: Cell | None) -> str:
    """The formula of the current cell in plain characters (a GIF frame's caption).

    >>> from convcli.explain.byhand import SEED_IMAGE, by_hand_conv
    >>> seed = by_hand_conv(SEED_IMAGE, [[1, 0, -1]] * 3)
    >>> _frame_caption(seed, seed.cell(0, 1))
    'output[0, 1] = 2*1 + 0*0 + 1*-1 + 1*1 + 1*0 + 0*-1 + 2*1 + 3*0 + 1*-1 = 3'
    """
    if cell is None:
        return f"output {worked.output_hw[0]}x{worked.output_hw[1]}"
    head = f"output[{cell.row}, {cell.col}] = "
    if worked.op == "conv":
        terms = _joined(
            [
                f"{number_text(v or 0.0)}*{number_text(w)}"
                for v, w in zip(cell.values, cell.weights)
            ],
            " + ",
        )
        body = f"{terms} = {number_text(cell.total)}"
        if worked.scale != 1 or worked.offset != 0:
            body += (
                f"; / {number_text(worked.scale)} + {number_text(worked.offset)} "
                f"= {number_text(cell.value)}"
            )
    elif worked.op == "max":
        real = _joined([number_text(v) for v in cell.values if v is not None], ", ")
        body = f"max({real}) = {number_text(cell.value)}"
        if cell.winner is not None:
            body += f" at input[{cell.winner[0]}, {cell.winner[1]}]"
    else:
        real = _joined([number_text(v) for v in cell.values if v is not None], " + ")
        body = f"({real}) / {cell.divisor} = {number_text(cell.value)}"
    return head + body
