"""Reading weights: ``.npy``, libvips ``.mat``, text grids, YAML, ImageMagick kernel strings.

Each reader returns plain data (arrays, numbers, the parsed YAML); ``library`` makes kernels of
them. ``check_weights`` validates every array once, at load time. Every problem is a one-line
``KernelError`` naming the file (``where``).

>>> parse_grid("1 2\\n3 4", "example").tolist()
[[1.0, 2.0], [3.0, 4.0]]
>>> inline_weights("2x1+1+0: 1 2")[0].tolist()
[[1.0, 2.0, 0.0]]
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from convcli import limits
from convcli.errors import KernelError

# How weights written as nested lists of grids map to the engine's shapes; ``[c_out, kh, kw]``
# (a bank of 2-D filters, one map each) becomes ``(c_out, 1, kh, kw)``.
LAYOUTS = (("kh", "kw"), ("c_in", "kh", "kw"), ("c_out", "kh", "kw"), ("c_out", "c_in", "kh", "kw"))

# WxH+X+Y: values
_INLINE = re.compile(r"\s*([0-9]+)(?:x([0-9]+))?(?:\+([0-9]+)\+([0-9]+))?\s*:(.*)\Z", re.DOTALL)
_SEPARATORS = re.compile(r'[\s,"]+')  # libvips .mat separators; grids accept the same


def check_weights(weights: np.ndarray, where: str) -> np.ndarray:
    """Validate weights once at load time: 2-D to 4-D, not empty, finite real numbers."""
    if not isinstance(weights, np.ndarray) or weights.dtype.kind not in "biuf":
        kind = getattr(weights, "dtype", type(weights).__name__)
        raise KernelError(f"{where}: weights must be real numbers, got {kind}")
    if weights.ndim not in (2, 3, 4):
        raise KernelError(f"{where}: a kernel must be 2-D, 3-D or 4-D, got shape {weights.shape}")
    if weights.size == 0:
        raise KernelError(f"{where}: the kernel is empty (shape {weights.shape})")
    limits.check_kernel_shape(weights.shape, where)
    with np.errstate(over="ignore"):
        single = np.ascontiguousarray(weights, dtype=np.float32)
    bad = np.argwhere(~np.isfinite(single))
    if len(bad):
        index = tuple(int(i) for i in bad[0])
        value = weights[index]
        problem = "finite" if not np.isfinite(value) else "within float32's range (3.4e38)"
        raise KernelError(f"{where}: weights must be {problem}, found {value} at {list(index)}")
    return single


def parse_grid(text: str, where: str) -> np.ndarray:
    """Rows on lines, values separated by spaces, commas or tabs.

    >>> parse_grid("1, 0, -1\\n2 0 -2", "example").tolist()
    [[1.0, 0.0, -1.0], [2.0, 0.0, -2.0]]
    """
    rows = [_tokens(line) for line in text.splitlines() if line.strip()]
    if not rows:
        raise KernelError(f"{where}: the kernel is empty")
    for number, row in enumerate(rows, 1):
        if len(row) != len(rows[0]):
            raise KernelError(
                f"{where}: rows must all have the same number of values "
                f"(row 1 has {len(rows[0])}, row {number} has {len(row)})"
            )
    return np.array(
        [[_number(v, f"{where}: row {i}") for v in row] for i, row in enumerate(rows, 1)]
    )


def grids(raw: Any, where: str, at: str) -> np.ndarray:
    """A grid (text), or a list of grids, or a list of lists of grids, as one array."""
    if isinstance(raw, list):
        if not raw:
            raise KernelError(f"{where}: {at} is an empty list")
        parts = [grids(item, where, f"{at}[{i}]") for i, item in enumerate(raw)]
        shapes = sorted({"x".join(map(str, p.shape)) for p in parts})
        if len(shapes) > 1:
            raise KernelError(f"{where}: the grids of {at} differ in shape ({' vs '.join(shapes)})")
        return np.stack(parts)
    if raw is None or isinstance(raw, (bool, dict)) or not isinstance(raw, (str, int, float)):
        raise KernelError(
            f"{where}: {at} must be a grid of numbers written as text "
            "(a YAML '|' block) or a list of grids"
        )
    return parse_grid(str(raw), f"{where}: {at}")


def apply_layout(weights: np.ndarray, layout: Any, where: str) -> np.ndarray:
    """Nested grids in the engine's shape, as their declared ``layout`` (one of ``LAYOUTS``) says.

    >>> apply_layout(np.ones((2, 3, 3)), ["c_out", "kh", "kw"], "bank").shape
    (2, 1, 3, 3)
    """
    if layout is None and weights.ndim == 2:
        return weights
    declared = tuple(str(v) for v in layout) if isinstance(layout, list) else None
    if declared not in LAYOUTS or len(declared) != weights.ndim:
        known = "; ".join(f"[{', '.join(v)}]" for v in LAYOUTS if len(v) == weights.ndim)
        raise KernelError(
            f"{where}: weights nested {weights.ndim - 2} list(s) deep need a layout: {known}"
        )
    return weights[:, None] if declared == ("c_out", "kh", "kw") else weights


def centre_origin(weights: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
    """Zero-pad a 2-D kernel so its ``origin`` (row, column) becomes the cell convcli centres on.

    convcli's centre of a size-k axis is cell ``(k - 1) // 2``, where ``same`` padding puts
    it (the odd pad after); ImageMagick's default origin is the same cell. Padding is minimal.

    >>> centre_origin(np.array([[1.0, 2.0, 3.0]]), (0, 0)).tolist()
    [[0.0, 1.0, 2.0, 3.0]]
    """
    pads = []
    for size, at in zip(weights.shape, origin):
        excess = (size - 1 - at) - at  # cells after the origin minus cells before it
        pads.append((max(excess - 1, 0), max(-excess, 0)))
    return np.pad(weights, pads)


def is_inline(text: str) -> bool:
    """Whether ``text`` is written as an ImageMagick kernel string (``WxH[+X+Y]: ...``).

    >>> is_inline("3x1: 1 0 -1"), is_inline("sobel:dir=y")
    (True, False)
    """
    return _INLINE.match(text) is not None


def inline_weights(text: str) -> tuple[np.ndarray, str]:
    """The weights of an ImageMagick kernel string, and its size ``WxH``.

    ``"WxH[+X+Y]: values"`` row by row, ``"N:"`` for NxN; ``-`` and ``nan`` mark cells
    outside the kernel (weight 0). A non-centre origin ``+X+Y`` (column X, row Y) is
    honoured with :func:`centre_origin`.

    >>> inline_weights("3: 0,-1,0 -1,5,-1 0,-1,0")[1]
    '3x3'
    """
    match = _INLINE.match(text)
    if match is None:
        raise KernelError(f"{text!r} is not an inline kernel 'WxH[+X+Y]: values'")
    where = f"inline kernel {limits.shorten(text.partition(':')[0].strip() + ':')!r}"
    width, height = (
        limits.parse_whole(n, f"{where}: the {side}", 0, limits.MAX_KERNEL_SIDE, KernelError)
        for n, side in ((match[1], "width"), (match[2] or match[1], "height"))
    )
    if width < 1 or height < 1:
        raise KernelError(f"{where}: width and height must be at least 1")
    cells = _tokens(match[5])
    if len(cells) != width * height:
        raise KernelError(
            f"{where}: {width}x{height} needs {width * height} values, got {len(cells)}"
        )
    values = [0.0 if v == "-" or v.lower() == "nan" else _number(v, where) for v in cells]
    weights = check_weights(np.array(values).reshape(height, width), where)
    if match[3] is not None:
        column, row = (
            limits.parse_whole(n, f"{where}: the origin", 0, error=KernelError)
            for n in (match[3], match[4])
        )
        if column >= width or row >= height:
            raise KernelError(
                f"{where}: origin +{column}+{row} is outside the {width}x{height} kernel"
            )
        weights = centre_origin(weights, (row, column))
    return weights, f"{width}x{height}"


def read_npy(path: Path, where: str) -> np.ndarray:
    """A ``.npy`` kernel, its header checked before the data is read (2-D to 4-D, not empty,
    within the kernel limits)."""
    from convcli.io.images import load_npy

    def check(shape: tuple, dtype) -> None:
        if len(shape) not in (2, 3, 4):
            raise KernelError(f"{where}: a kernel must be 2-D, 3-D or 4-D, got shape {shape}")
        if 0 in shape:
            raise KernelError(f"{where}: the kernel is empty (shape {shape})")
        limits.check_kernel_shape(shape, where)

    return load_npy(str(path), where, KernelError, check)


def read_mat(path: Path, where: str) -> tuple[np.ndarray, float, float]:
    """libvips matrix text: ``width height [scale [offset]]``, then ``height`` rows of ``width``."""
    lines = [line for line in _read_text(path, where).splitlines() if line.strip()]
    header = _tokens(lines[0]) if lines else []
    try:
        numbers = [
            limits.parse_real(v, f"{where}: the first line", KernelError, finite=False)
            for v in header
        ]
    except KernelError:
        numbers = []
    if not 2 <= len(numbers) <= 4 or not all(v.is_integer() and v >= 1 for v in numbers[:2]):
        first = lines[0].strip() if lines else ""
        raise KernelError(
            f"{where}: the first line must be 'width height [scale [offset]]', "
            f"got {limits.shorten(first)!r}"
        )
    width, height = int(numbers[0]), int(numbers[1])
    scale, offset = (numbers[2:] + [1.0, 0.0][len(numbers) - 2 :])[:2]
    if not (math.isfinite(scale) and math.isfinite(offset)) or scale == 0:
        raise KernelError(
            f"{where}: scale must be a finite non-zero number and offset finite, "
            f"got {scale:g} and {offset:g}"
        )
    if len(lines) - 1 != height:
        raise KernelError(f"{where}: the header says {height} rows, the file has {len(lines) - 1}")
    weights = parse_grid("\n".join(lines[1:]), where)
    if weights.shape[1] != width:
        raise KernelError(
            f"{where}: the header says {width} columns, the rows have {weights.shape[1]}"
        )
    return weights, scale, offset


def read_yaml(path: Path, where: str) -> Any:
    """Plain data only, size, depth and alias expansion limited: ``convcli.io.yamlsafe``."""
    from convcli.io.yamlsafe import parse_yaml_safely

    text = _read_text(path, where)
    if text.lstrip().startswith("%YAML:1.0"):
        raise KernelError(
            f"{where}: OpenCV FileStorage files are not supported; save the matrix as .npy"
        )
    return parse_yaml_safely(text, where, KernelError, str(path))


def _read_text(path: Path, where: str) -> str:
    """A text kernel file: UTF-8, at most ``limits.MAX_TEXT_BYTES``."""
    from convcli.io.yamlsafe import read_text_limited

    return read_text_limited(str(path), where, KernelError)


def _tokens(text: str) -> list[str]:
    return [v for v in _SEPARATORS.split(text) if v]


def _number(text: str, where: str) -> float:
    """A weight: any number (a non-finite one is named with its cell by ``check_weights``)."""
    return limits.parse_real(text, f"{where}:", KernelError, finite=False)
