"""How pooling is computed: numpy for work too small to pay for loading Numba, else ``_jit``.

``engine.max_pool2d`` and ``engine.avg_pool2d`` check the arguments and resolve the window,
then call ``max_pool`` or ``avg_pool`` here. The method is chosen from the call's work with the
same rule as convolutions (``correlation.numpy_takes``):

- ``numpy``: in bands of output rows, each band padded into a buffer (``-inf`` for max pooling,
  zeros for average pooling, which the divisor then leaves out or counts as PyTorch does), then
  one vectorised pass per window row and one per window column. No Numba import: a 512x512
  image is pooled in milliseconds in a process that never pays Numba's start-up.
  Max pooling with indices goes tap by tap over every window of a band at once, keeping the
  best value and its flat index as ``_jit`` does.
- ``numba``: ``_jit``'s kernels.

Both give PyTorch's values: pad cells never win a max, NaN propagates, average sums are
float64 with PyTorch's divisor (``AvgPoolKernel.cpp``).

>>> x = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3)
>>> out = np.empty((1, 2, 2), np.float32)
>>> avg_pool(x, out, (3, 3), (2, 2), (1, 1, 1, 1), True, "numpy")
>>> (out * 9).round().tolist()                      # window sums, each divided by 9
[[[12.0, 16.0], [24.0, 28.0]]]
"""

from __future__ import annotations

import numpy as np

from convcli.engine.correlation import numpy_takes

#: Bytes of one band's padded buffer in the numpy method.
BAND_BYTES = 4 << 20
METHODS = ("numpy", "numba")


def choose_method(channels: int, out_hw, size) -> str:
    """``numpy`` for work numpy takes (one compare or add per window cell), else ``numba``.

    >>> choose_method(3, (256, 256), (2, 2)), choose_method(64, (4096, 4096), (3, 3))
    ('numpy', 'numba')
    """
    work = channels * out_hw[0] * out_hw[1] * size[0] * size[1]
    return "numpy" if numpy_takes(work) else "numba"


def max_pool(image, out, indices, size, stride, dilation, pads, method: str | None = None) -> None:
    """Fill ``out`` (and ``indices``, when not ``None``) with window maxima."""
    method = _checked(method or choose_method(image.shape[0], out.shape[1:], size))
    if method == "numba":
        from convcli.engine import _jit

        _jit.max_pool2d(image, out, indices, size, stride, dilation, pads)
        return
    if indices is not None:
        _max_with_indices(image, out, indices, size, stride, dilation, pads)
        return
    for first, last, band in _bands(
        image, out.shape[1:], size, stride, dilation, pads, -np.inf, np.float32
    ):
        rows = np.empty((band.shape[0], last - first, band.shape[2]), np.float32)
        _reduce_rows(band, size[0], stride[0], dilation[0], np.maximum, rows)
        _reduce_columns(rows, size[1], stride[1], dilation[1], np.maximum, out[:, first:last])


def avg_pool(image, out, size, stride, pads, count_include_pad, method: str | None = None) -> None:
    """Fill ``out`` with window means, PyTorch's divisor (see the module docstring)."""
    method = _checked(method or choose_method(image.shape[0], out.shape[1:], size))
    if method == "numba":
        from convcli.engine import _jit

        _jit.avg_pool2d(image, out, size, stride, pads, count_include_pad)
        return
    (height, width), (h_out, w_out) = image.shape[1:], out.shape[1:]
    row_counts = _divisors(height, h_out, size[0], stride[0], pads[0], pads[1], count_include_pad)
    column_counts = _divisors(width, w_out, size[1], stride[1], pads[2], pads[3], count_include_pad)
    for first, last, band in _bands(
        image, out.shape[1:], size, stride, (1, 1), pads, 0.0, np.float64
    ):
        rows = np.empty((band.shape[0], last - first, band.shape[2]), np.float64)
        _reduce_rows(band, size[0], stride[0], 1, np.add, rows)
        sums = np.empty((band.shape[0], last - first, w_out), np.float64)
        _reduce_columns(rows, size[1], stride[1], 1, np.add, sums)
        sums /= row_counts[first:last, None] * column_counts
        out[:, first:last] = sums


def _max_with_indices(image, out, indices, size, stride, dilation, pads) -> None:
    """Max pooling with PyTorch's flat indices ``r*W + q``: the taps in row-major order, each
    over every window of a band at once, winning where ``v > best or isnan(v)`` (the first
    maximum, the last NaN), as ``_jit._max_pool2d``; a window with no winner keeps its first
    input-aligned tap."""
    width, w_out = image.shape[2], out.shape[2]
    (kh, kw), (sh, sw), (dh, dw) = size, stride, dilation
    columns = np.arange(w_out) * sw - pads[2]  # each window's first column, padded ones < 0
    for first, last, band in _bands(
        image, out.shape[1:], size, stride, dilation, pads, -np.inf, np.float32
    ):
        rows = np.arange(first, last) * sh - pads[0]
        best, where = out[:, first:last], indices[:, first:last]
        best[:] = -np.inf
        where[:] = _first_inside(rows, dh)[:, None] * width + _first_inside(columns, dw)
        wins = np.empty(best.shape, bool)
        for m in range(kh):
            for n in range(kw):
                values = band[
                    :,
                    m * dh : m * dh + sh * (last - first - 1) + 1 : sh,
                    n * dw : n * dw + sw * (w_out - 1) + 1 : sw,
                ]
                np.greater(values, best, out=wins)
                wins |= np.isnan(values)
                np.copyto(best, values, where=wins)
                tap = (rows + m * dh)[:, None] * width + (columns + n * dw)
                np.copyto(where, np.broadcast_to(tap, where.shape), where=wins)


def _first_inside(starts: np.ndarray, dilation: int) -> np.ndarray:
    """The first tap at or after each of ``starts`` (a window's first row or column, negative
    in the padding) that falls on the input, ``dilation`` apart.

    >>> _first_inside(np.array([-3, -1, 0, 2]), 2).tolist()
    [1, 1, 0, 2]
    """
    return starts + np.maximum(0, (dilation - 1 - starts) // dilation) * dilation


def _checked(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown pooling method {method!r} (one of {', '.join(METHODS)})")
    return method


def _bands(image, out_hw, size, stride, dilation, pads, fill, dtype):
    """Yield ``(first, last, band)``: output rows ``first:last`` and the input rows they read,
    padded on every side with ``fill`` (also past the padding, where ceil mode reaches)."""
    (height, width), (h_out, w_out) = image.shape[1:], out_hw
    top, left = pads[0], pads[2]
    span_w = (w_out - 1) * stride[1] + dilation[1] * (size[1] - 1) + 1
    reach_h = dilation[0] * (size[0] - 1) + 1
    per_band = max(1, min(h_out, BAND_BYTES // (8 * image.shape[0] * span_w * stride[0])))
    for first in range(0, h_out, per_band):
        last = min(h_out, first + per_band)
        start = first * stride[0] - top
        rows = (last - first - 1) * stride[0] + reach_h
        band = np.full((image.shape[0], rows, span_w), fill, dtype)
        r0, r1 = max(start, 0), min(start + rows, height)
        c0, c1 = max(-left, 0), min(span_w - left, width)
        if r1 > r0 and c1 > c0:
            band[:, r0 - start : r1 - start, c0 + left : c1 + left] = image[:, r0:r1, c0:c1]
        yield first, last, band


def _reduce_rows(band, k, stride, dilation, combine, out) -> None:
    """``out[:, i] = combine over m of band[:, i*stride + m*dilation]``, whole rows at a time."""
    count = out.shape[1]
    out[:] = band[:, 0 : stride * (count - 1) + 1 : stride]
    for m in range(1, k):
        start = m * dilation
        combine(out, band[:, start : start + stride * (count - 1) + 1 : stride], out=out)


def _reduce_columns(rows, k, stride, dilation, combine, out) -> None:
    """``out[..., j] = combine over n of rows[..., j*stride + n*dilation]``."""
    count = out.shape[2]
    out[:] = rows[:, :, 0 : stride * (count - 1) + 1 : stride]
    for n in range(1, k):
        start = n * dilation
        combine(out, rows[:, :, start : start + stride * (count - 1) + 1 : stride], out=out)


def _divisors(size, count, k, stride, before, after, count_include_pad) -> np.ndarray:
    """Cells each window counts along one axis: clipped to the padded extent (pads counted) or
    to the input; cells past the padding (ceil mode) never count.

    >>> _divisors(6, 4, 3, 2, 1, 1, True).tolist(), _divisors(6, 4, 3, 2, 1, 1, False).tolist()
    ([3.0, 3.0, 3.0, 2.0], [2.0, 3.0, 3.0, 1.0])
    """
    starts = np.arange(count) * stride - before
    stops = np.minimum(starts + k, size + after)
    if not count_include_pad:
        starts, stops = np.maximum(starts, 0), np.minimum(stops, size)
    return (stops - starts).astype(np.float64)
