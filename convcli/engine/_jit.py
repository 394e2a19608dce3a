"""All Numba kernels of convcli, and the one place their JIT options are set.

Kernels are small and private: they take checked, C-contiguous float32 arrays, ints and a
preallocated output, and read no globals but the SIMD width. The public wrappers in
``engine`` validate and allocate (sizes from ``geometry``); ``correlate`` hands the
convolution kernels maps of the padding they make themselves. The convolution kernels are
written in explicit SIMD vectors (``_vload`` ... ``_vfma``: Numba intrinsics for LLVM
vectors), because LLVM's loop vectoriser does not keep sums in registers across taps and
channels. Keep every ``@njit`` function in this file: Numba's cache does not notice edits
to other modules a kernel calls.

``call`` runs a kernel; the first use of a kernel in a process (cache load or compile) holds
an inter-process file lock, because concurrent first runs can corrupt Numba's cache index.
Importing this module changes nothing in the process: where Numba caches and how memory is
allocated are set by ``runtime.configure_process``, which the command line calls first.
"""

from __future__ import annotations

import contextlib
import os

import numba
import numpy as np
from llvmlite import binding as _llvm
from llvmlite import ir as _ir
from numba.core import cgutils as _cgutils
from numba.core import codegen as _codegen
from numba.extending import intrinsic as _intrinsic
from numba.extending import models as _models
from numba.extending import register_model as _register_model

from convcli.runtime import numba_cache_dir

# No 'nnan'/'ninf': NaN must propagate through sums and win max-pooling as in PyTorch.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
_SERIAL = dict(cache=True, nogil=True, fastmath=_FASTMATH)
_PARALLEL = dict(_SERIAL, parallel=True)

#: A function that adds two vectors of 16 floats, allowed 512-bit registers (LLVM otherwise
#: splits such vectors where the CPU prefers 256-bit ones).
_WIDE_ADD = """
define <16 x float> @add(<16 x float> %a, <16 x float> %b) #0 {
  %sum = fadd <16 x float> %a, %b
  ret <16 x float> %sum
}
attributes #0 = { "min-legal-vector-width"="512" }
"""


def simd_lanes(cpu_name: str | None, cpu_features: str | None) -> int:
    """Floats in one SIMD register of the CPU Numba compiles for: 16 with AVX-512, else 8
    (AVX2; elsewhere LLVM splits a vector over narrower registers).

    Numba compiles for ``$NUMBA_CPU_NAME`` (``cpu_name``; unset: the host's CPU) with the
    features ``$NUMBA_CPU_FEATURES`` lists (``cpu_features``; unset: the host's, every one
    named on or off; empty: the named CPU's own), so ``NUMBA_CPU_NAME=haswell`` alone still
    gets the host's AVX-512. Set features are left to LLVM, which is asked whether it
    compiles 16 floats into one register.

    >>> simd_lanes("haswell", ""), simd_lanes("skylake-avx512", "")
    (8, 16)
    """
    if cpu_features is None:
        return 16 if "+avx512f" in _codegen.get_host_cpu_features().split(",") else 8
    _llvm.initialize_native_target()
    _llvm.initialize_native_asmprinter()
    machine = _llvm.Target.from_default_triple().create_target_machine(
        cpu=cpu_name or _llvm.get_host_cpu_name(), features=cpu_features
    )
    return 16 if "zmm" in machine.emit_assembly(_llvm.parse_assembly(_WIDE_ADD)) else 8


#: Floats in one SIMD register of the CPU Numba compiles for (``simd_lanes``). Numba's cache
#: is kept per target CPU and features, so a kernel compiled with another width is never
#: loaded here.
LANES = simd_lanes(numba.core.config.CPU_NAME, numba.core.config.CPU_FEATURES)
#: Output columns a convolution kernel makes per pass: four vectors per map.
TILE = 4 * LANES


class _FloatVector(numba.types.Type):
    """``LANES`` float32 values in one SIMD register (LLVM ``<LANES x float>``)."""

    def __init__(self):
        super().__init__(name=f"float32x{LANES}")


_float_vector = _FloatVector()
_register_model(_FloatVector)(
    lambda dmm, fe_type: _models.PrimitiveModel(
        dmm, fe_type, _ir.VectorType(_ir.FloatType(), LANES)
    )
)


def _vector_pointer(context, builder, row_type, row, start):
    data = context.make_array(row_type)(context, builder, row).data
    return builder.bitcast(
        builder.gep(data, [start]), _ir.VectorType(_ir.FloatType(), LANES).as_pointer()
    )


def _is_row(row):
    return (
        isinstance(row, numba.types.Array)
        and row.dtype == numba.types.float32
        and row.ndim == 1
        and row.layout == "C"
    )


@_intrinsic
def _vload(typingctx, row, start):
    """``row[start:start + LANES]`` of a contiguous float32 row, as a vector (unchecked)."""
    if _is_row(row) and isinstance(start, numba.types.Integer):
        return _float_vector(row, start), lambda context, builder, sig, args: builder.load(
            _vector_pointer(context, builder, sig.args[0], *args), align=4
        )


@_intrinsic
def _vstore(typingctx, row, start, vector):
    """``row[start:start + LANES] = vector`` (unchecked)."""

    def codegen(context, builder, sig, args):
        builder.store(
            args[2], _vector_pointer(context, builder, sig.args[0], args[0], args[1]), align=4
        )
        return context.get_dummy_value()

    if _is_row(row) and isinstance(start, numba.types.Integer) and vector == _float_vector:
        return numba.types.none(row, start, vector), codegen


@_intrinsic
def _vsplat(typingctx, value):
    """A vector of ``LANES`` copies of float32 ``value``."""

    def codegen(context, builder, sig, args):
        vector_type = _ir.VectorType(_ir.FloatType(), LANES)
        first = builder.insert_element(
            _ir.Constant(vector_type, _ir.Undefined), args[0], _ir.Constant(_ir.IntType(32), 0)
        )
        return builder.shuffle_vector(
            first, first, _ir.Constant(_ir.VectorType(_ir.IntType(32), LANES), [0] * LANES)
        )

    if value == numba.types.float32:
        return _float_vector(value), codegen


@_intrinsic
def _vfma(typingctx, a, b, c):
    """``a * b + c`` lane by lane, in one fused multiply-add."""

    def codegen(context, builder, sig, args):
        vector_type = _ir.VectorType(_ir.FloatType(), LANES)
        fma = _cgutils.get_or_insert_function(
            builder.module,
            _ir.FunctionType(vector_type, [vector_type] * 3),
            f"llvm.fma.v{LANES}f32",
        )
        return builder.call(fma, args)

    if a == b == c == _float_vector:
        return _float_vector(a, b, c), codegen


@_intrinsic
def _vzero(typingctx):
    """A vector of zeros."""
    return _float_vector(), lambda context, builder, sig, args: _ir.Constant(
        _ir.VectorType(_ir.FloatType(), LANES), [0.0] * LANES
    )


if numba.config.DISABLE_JIT:  # kernels as plain Python (debugging): a vector is a numpy array

    def _vload(row, start):
        return row[start : start + LANES].copy()

    def _vstore(row, start, vector):
        row[start : start + LANES] = vector

    def _vsplat(value):
        return np.full(LANES, value, np.float32)

    def _vfma(a, b, c):
        return (a * b + c).astype(np.float32)

    def _vzero():
        return np.zeros(LANES, np.float32)


@numba.njit(inline="always", **_SERIAL)
def _add_scaled(acc, w, src, count):
    """``acc[:count] += w * src[:count]``: as a separate inlined loop over a slice, LLVM
    vectorises it (measured 6-8x faster than indexing ``src[j + offset]`` in place)."""
    for j in range(count):
        acc[j] += w * src[j]


@numba.njit(inline="always", **_SERIAL)
def _fill_padded_rows(plane, rowmap, colmap, left, first, padded):
    """``padded[t]`` = row ``first + t`` of the padded ``plane`` (H, W).

    ``rowmap``/``colmap`` give the source row/column of each padded row/column, -1 for a
    zero (``correlation.source_index``); columns ``left:left + W`` are the plane's own.
    """
    width = plane.shape[1]
    for t in range(padded.shape[0]):
        line = padded[t]
        r = rowmap[first + t]
        if r < 0:
            line[:] = 0.0
            continue
        src, inner = plane[r], line[left : left + width]
        for q in range(width):  # views from 0: LLVM vectorises the copy (an offset index
            inner[q] = src[q]  # could be negative, and was not)
        for q in range(left):
            line[q] = src[colmap[q]] if colmap[q] >= 0 else 0.0
        for q in range(left + width, line.shape[0]):
            line[q] = src[colmap[q]] if colmap[q] >= 0 else 0.0


@numba.njit(inline="always", **_SERIAL)
def _fill_phase_rows(plane, rowmap, colmap, left, first, phases):
    """``phases[t, p, q]`` = column ``q*s + p`` of row ``first + t`` of the padded ``plane``,
    for a column stride ``s = phases.shape[1]`` (maps as in ``_fill_padded_rows``)."""
    height, stride = phases.shape[0], phases.shape[1]
    width = plane.shape[1]
    for t in range(height):
        r = rowmap[first + t]
        for p in range(stride):
            line = phases[t, p]
            count = (colmap.shape[0] - p + stride - 1) // stride
            if r < 0:
                line[:] = 0.0
                continue
            src = plane[r]
            q_in = max(0, (left - p + stride - 1) // stride)  # first q with q*s + p >= left
            q_out = min(count, (left + width - p + stride - 1) // stride)
            shift = q_in * stride + p - left
            inner, own = src[shift:], line[q_in:q_out]
            if stride == 2:  # a constant stride: LLVM vectorises the copy with shuffles
                for q in range(q_out - q_in):
                    own[q] = inner[2 * q]
            else:
                for q in range(q_out - q_in):
                    line[q_in + q] = inner[q * stride]
            for q in range(q_in):
                u = colmap[q * stride + p]
                line[q] = src[u] if u >= 0 else 0.0
            for q in range(q_out, count):
                u = colmap[q * stride + p]
                line[q] = src[u] if u >= 0 else 0.0


@numba.njit(inline="always", **_SERIAL)
def _fma4(row, start, w, acc):
    """``acc`` (four vectors) plus ``w`` times the four vectors of ``row`` from ``start``."""
    scale = _vsplat(w)
    return (
        _vfma(scale, _vload(row, start), acc[0]),
        _vfma(scale, _vload(row, start + LANES), acc[1]),
        _vfma(scale, _vload(row, start + 2 * LANES), acc[2]),
        _vfma(scale, _vload(row, start + 3 * LANES), acc[3]),
    )


@numba.njit(inline="always", **_SERIAL)
def _fma4x2(row, start, w, u, acc, other):
    """``_fma4`` for two sums (weights ``w`` and ``u``) over the same values of ``row``,
    which are loaded once."""
    v0, v1 = _vload(row, start), _vload(row, start + LANES)
    v2, v3 = _vload(row, start + 2 * LANES), _vload(row, start + 3 * LANES)
    s, t = _vsplat(w), _vsplat(u)
    return (
        (_vfma(s, v0, acc[0]), _vfma(s, v1, acc[1]), _vfma(s, v2, acc[2]), _vfma(s, v3, acc[3])),
        (
            _vfma(t, v0, other[0]),
            _vfma(t, v1, other[1]),
            _vfma(t, v2, other[2]),
            _vfma(t, v3, other[3]),
        ),
    )


@numba.njit(inline="always", **_SERIAL)
def _store_tile(row, start, acc):
    """``row[start:start + len(acc) * LANES]`` = the vectors ``acc``."""
    for k in range(len(acc)):
        _vstore(row, start + k * LANES, acc[k])


@numba.njit(inline="always", **_SERIAL)
def _tile_start(tile, width, size=TILE):
    """Where tile ``tile`` of a row of ``width >= size`` outputs, in tiles of ``size``,
    starts: the last tile ends with the row, overlapping the one before (whose columns it
    stores again)."""
    return min(tile * size, width - size)


@numba.njit(**_SERIAL)
def _depthwise_rows(source, taps, out, column, width):
    """``out[i, column + j]`` = the sum of ``source[i + m, j + n] * taps[m, n]`` for every
    row of ``out`` (at least 2) and ``j < width`` (at least ``TILE``); ``source`` rows are at
    least ``width + kw - 1`` long."""
    rows = out.shape[0]
    kh, kw = taps.shape
    zero = _vzero()
    for pair in range((rows + 1) // 2):
        i = min(2 * pair, rows - 2)  # an odd last row is made again with the one before
        for tile in range((width + TILE - 1) // TILE):
            j = _tile_start(tile, width)
            upper = lower = (zero, zero, zero, zero)
            for n in range(kw):
                upper = _fma4(source[i], j + n, taps[0, n], upper)
            for m in range(1, kh):
                for n in range(kw):
                    upper, lower = _fma4x2(
                        source[i + m], j + n, taps[m, n], taps[m - 1, n], upper, lower
                    )
            for n in range(kw):
                lower = _fma4(source[i + kh], j + n, taps[kh - 1, n], lower)
            _store_tile(out[i], column + j, upper)
            _store_tile(out[i + 1], column + j, lower)


@numba.njit(inline="always", **_SERIAL)
def _padded_block(plane, rowmap, colmap, left, first, rows, kh, kw):
    """Padded rows ``first:first + rows + kh - 1`` of ``plane`` (maps as in
    ``_fill_padded_rows``), as many as ``_depthwise_rows`` reads for ``rows`` output rows of
    a kh x kw kernel: at least two, at least a tile wide (zeros past the image's rows)."""
    width = colmap.shape[0]
    padded = np.empty((max(rows, 2) + kh - 1, max(width, TILE + kw - 1)), np.float32)
    padded[:, width:] = 0.0
    padded[rows + kh - 1 :] = 0.0
    _fill_padded_rows(plane, rowmap, colmap, left, first, padded[: rows + kh - 1, :width])
    return padded


@numba.njit(**_PARALLEL)
def _depthwise(x, weight, column, rowmap, colmap, left, block_rows, out):
    """Depthwise stride-1 correlation of float32 ``x`` (C, H, W) with ``weight`` (C_out, 1,
    kh, kw), padding as it goes: each task makes a block of rows of one map, reading the
    image's own rows where they lie and gathering only the padding it needs into buffers
    that stay in cache (no padded copy of the image is ever made; ``_depthwise_block``).

    A kernel of rank 1 comes as its row factor (``weight`` 1 x kw) and its column factor
    (``column`` (C_out, kh, 1); empty otherwise): the block is passed along its rows with
    the one, then down its columns with the other.
    """
    blocks = (out.shape[1] + block_rows - 1) // block_rows
    for task in numba.prange(out.shape[0] * blocks):
        _depthwise_block(
            x,
            weight,
            column,
            rowmap,
            colmap,
            left,
            task // blocks,
            (task % blocks) * block_rows,
            block_rows,
            out,
        )


@numba.njit(**_SERIAL)
def _depthwise_block(x, weight, column, rowmap, colmap, left, o, first, block_rows, out):
    """Output rows ``first:first + block_rows`` of map ``o`` of ``_depthwise`` (fewer at the
    bottom).

    Where the block reads only the plane's own rows, its first pass reads them in place:
    the columns whose window lies inside the plane straight from it, and each border of
    ``left`` or right padding columns as a strip of one tile, gathered with its padding.
    Other blocks are padded in full first (``_padded_block``). A block of one row, or rows
    narrower than a tile, is made in a scratch block of two rows and a tile.
    ``_depthwise_rows`` is called from one place only: LLVM inlines it, and each copy costs
    seconds of compiling.
    """
    c_out, h_out, w_out = out.shape
    plane = x[o // (c_out // x.shape[0])]
    kh, kw = weight.shape[2] + max(0, column.shape[1] - 1), weight.shape[3]
    rows = min(block_rows, h_out - first)
    inner = plane.shape[1] - kw + 1  # outputs whose window lies inside the plane's columns
    in_place = rows >= 2 and w_out >= TILE
    own = (
        in_place
        and inner >= TILE
        and max(left, w_out - left - inner) <= TILE
        and _own_rows(rowmap, first, rows + kh - 1)
    )
    if own:
        source = plane[rowmap[first] : rowmap[first] + rows + kh - 1]
    else:
        source = _padded_block(plane, rowmap, colmap, left, first, rows, kh, kw)
    passes = 1 if column.shape[1] == 0 else 2
    for step in range(passes):
        if step < passes - 1:  # the row pass of a separable kernel, kept for the column pass
            target = np.empty((source.shape[0], max(w_out, TILE)), np.float32)
        elif in_place:
            target = out[o, first : first + rows]
        else:
            target = np.empty((max(rows, 2), max(w_out, TILE)), np.float32)
        taps = weight[o, 0] if step == 0 else column[o]
        in_plane = own and step == 0
        borders = (left, w_out - left - inner) if in_plane else (0, 0)
        for piece in range(3):  # the inner columns (or all of them), then each border
            if piece == 0:
                reads, at, width = (
                    (source, left, inner) if in_plane else (source, 0, target.shape[1])
                )
            elif borders[piece - 1] > 0:
                at, width = (0 if piece == 1 else w_out - TILE), TILE
                reads = _gathered_columns(source, colmap, at, TILE + taps.shape[1] - 1)
            else:
                continue
            _depthwise_rows(reads, taps, target, at, width)
        source = target
    if not in_place:
        out[o, first : first + rows] = source[:rows, :w_out]


@numba.njit(inline="always", **_SERIAL)
def _own_rows(rowmap, first, count):
    """Whether padded rows ``first:first + count`` are consecutive rows of the plane."""
    for t in range(count):
        if rowmap[first + t] != rowmap[first] + t or rowmap[first] < 0:
            return False
    return True


@numba.njit(inline="always", **_SERIAL)
def _gathered_columns(rows, colmap, start, width):
    """Padded columns ``start:start + width`` of ``rows`` (the plane's own rows; ``colmap``
    as in ``_fill_padded_rows``)."""
    strip = np.empty((rows.shape[0], width), np.float32)
    for q in range(width):
        c = colmap[start + q]
        for t in range(rows.shape[0]):
            strip[t, q] = rows[t, c] if c >= 0 else 0.0
    return strip


#: Bytes of padded rows each task of a convolution kernel keeps in cache (measured best
#: at 32 rows of 4096 for depthwise 3x3 and 7x7).
BLOCK_BYTES = 512 << 10


@numba.njit(**_PARALLEL)
def _dense(x, weight, rowmap, colmap, left, block_rows, stride, dilation, groups, out):
    """Cross-correlate float32 ``x`` (C_in, H, W) with ``weight`` (C_out, C_in/g, kh, kw) at
    any stride and dilation, padding as it goes (``rowmap``/``colmap`` as in
    ``_fill_padded_rows``), in blocks of output rows spread over the cores (``_dense_block``).
    Also takes the depthwise work ``_depthwise`` does not (strided or dilated), four maps of
    their own channels per pass (``_four_depthwise_maps``)."""
    for block in numba.prange((out.shape[1] + block_rows - 1) // block_rows):
        _dense_block(
            x,
            weight,
            rowmap,
            colmap,
            left,
            block * block_rows,
            block_rows,
            stride,
            dilation,
            groups,
            out,
        )


@numba.njit(**_SERIAL)
def _dense_block(x, weight, rowmap, colmap, left, first, block_rows, stride, dilation, groups, out):
    """Output rows ``first:first + block_rows`` of ``_dense`` (fewer at the bottom).

    Pads the block's rows of every input channel, then makes each output row four maps and
    ``TILE`` columns per pass: the 16 vector sums stay in registers across all input channels
    and taps, each input vector loaded feeds four multiply-adds, and each output is stored once.
    With 8 lanes (AVX2: 16 registers, which 16 sums, their inputs and weights overflow) a tile
    is three vectors of the four maps (``_four_maps_of_three``; see bench/results.md, "Dense
    layers on an AVX2 machine"). With 16 lanes and groups of eight maps or more, a pass makes
    eight maps of a whole row (``_eight_maps``): 24 sums in AVX-512's 32 registers, each input
    vector loaded feeding eight multiply-adds, half the loads per multiply-add of four maps of
    four vectors (a 64->64 3x3 layer at 256^2: 24 -> 20 ms). Input channels are the innermost
    loop: their rows and weights lie a fixed stride apart, so the loop is a few pointer
    increments (12-29% faster than taps innermost, whose phase and shift lookups cost as much
    as the multiply-adds). With a column stride s, each padded row is filled as its s phases
    (columns q*s + p for p < s, ``_fill_phase_rows``), so that every tap reads a contiguous
    run. A last group of fewer than four (eight) maps overlaps the one before (maps are
    stored, not added to, so making one twice is harmless). Rows narrower than a tile are made
    in a scratch block a tile wide.
    """
    (stride_h, stride_w), (dil_h, dil_w) = stride, dilation
    c_out, c_per_group = weight.shape[:2]
    rows, w_out = min(block_rows, out.shape[1] - first), out.shape[2]
    narrow = w_out < TILE
    target = np.empty((c_out, rows, TILE), np.float32) if narrow else out
    row_0 = 0 if narrow else first  # where row ``first`` goes in ``target``
    channels, width = x.shape[0], colmap.shape[0]
    out_per_group = c_out // groups
    one_channel = c_per_group == 1  # depthwise: a pass takes any four maps, each its own channel
    span, spans = (
        (c_out, 1) if one_channel else (out_per_group, groups)
    )  # a pass's maps come from one span
    kh, kw = weight.shape[2:]
    rows_in = (rows - 1) * stride_h + dil_h * (kh - 1) + 1
    count = (width + stride_w - 1) // stride_w
    phase = np.arange(kw) * dil_w % stride_w  # tap n reads phase[n] of a row, from column shift[n]
    shift = np.arange(kw) * dil_w // stride_w
    phases = np.empty((channels, rows_in, stride_w, max(count, shift[-1] + TILE)), np.float32)
    phases[:, :, :, count - 1 :] = (
        0.0  # past a phase's last column: read only for outputs never stored
    )
    for c in range(channels):
        if stride_w == 1:
            _fill_padded_rows(x[c], rowmap, colmap, left, first * stride_h, phases[c, :, 0, :width])
        else:
            _fill_phase_rows(x[c], rowmap, colmap, left, first * stride_h, phases[c, :, :, :count])
    # with 8 lanes, four maps of one group take three vectors each (``_four_maps_of_three``)
    size = 3 * LANES if LANES == 8 and not one_channel else TILE
    eight = LANES == 16 and not one_channel and span >= 8  # ``_eight_maps``
    per_pass = 8 if eight else 4
    passes = (span + per_pass - 1) // per_pass
    zero = _vzero()
    for task in range(spans * passes * rows):
        i = task % rows
        g = task // rows // passes
        last = (g + 1) * span - 1
        o0 = _first_map(g, span, per_pass, task // rows % passes)
        inputs, top, row = phases[g * c_per_group : (g + 1) * c_per_group], i * stride_h, row_0 + i
        if eight:
            _eight_maps(inputs, weight, o0, top, dil_h, phase, shift, target, row)
            continue
        o1, o2, o3 = min(o0 + 1, last), min(o0 + 2, last), min(o0 + 3, last)
        for tile in range((target.shape[2] + size - 1) // size):
            j = _tile_start(tile, target.shape[2], size)
            if one_channel:
                a, b, c, d = _four_depthwise_maps(
                    phases,
                    weight,
                    (o0, o1, o2, o3),
                    out_per_group,
                    i * stride_h,
                    dil_h,
                    j,
                    phase,
                    shift,
                )
            elif LANES == 8:
                _four_maps_of_three(
                    inputs, weight, (o0, o1, o2, o3), top, dil_h, j, phase, shift, target, row
                )
                continue
            else:  # four maps of one group: each input vector loaded feeds all four
                a = b = c = d = (zero, zero, zero, zero)
                for m in range(kh):
                    top = i * stride_h + m * dil_h
                    for n in range(kw):
                        p, at = phase[n], j + shift[n]
                        for k in range(c_per_group):
                            line = phases[g * c_per_group + k, top, p]
                            a, b = _fma4x2(line, at, weight[o0, k, m, n], weight[o1, k, m, n], a, b)
                            c, d = _fma4x2(line, at, weight[o2, k, m, n], weight[o3, k, m, n], c, d)
            _store_tile(target[o0, row_0 + i], j, a)
            _store_tile(target[o1, row_0 + i], j, b)
            _store_tile(target[o2, row_0 + i], j, c)
            _store_tile(target[o3, row_0 + i], j, d)
    if narrow:
        out[:, first : first + rows] = target[:, :, :w_out]


@numba.njit(inline="always", **_SERIAL)
def _first_map(group, span, per_pass, number):
    """The first of the ``per_pass`` maps that pass ``number`` of a group of ``span`` maps
    makes: a last pass of fewer maps overlaps the one before (maps are stored, not added to,
    so making one twice is harmless); a group of fewer maps than a pass starts at its own."""
    first = group * span
    return max(first, min(first + per_pass * number, first + span - per_pass))


@numba.njit(**_SERIAL)
def _four_maps_of_three(inputs, weight, maps, top, dil_h, j, phase, shift, target, row):
    """``_dense_block``'s tile with 8 lanes, stored in row ``row`` of the four ``maps`` of
    ``target``: four maps of one group (input channels ``inputs``) and three vectors of
    columns from ``j``, from padded row ``top`` (taps' ``phase`` and ``shift`` as there).
    The 12 sums, three input vectors and a weight fill AVX2's 16 registers; each input
    vector loaded feeds four multiply-adds. Channels are counted from 0 within ``inputs``,
    so that no index can be negative and a channel's next row is one pointer increment
    away."""
    zero = _vzero()
    a = b = c = d = (zero, zero, zero)
    o0, o1, o2, o3 = maps
    for m in range(weight.shape[2]):
        r = top + m * dil_h
        for n in range(weight.shape[3]):
            p, at = phase[n], j + shift[n]
            for k in range(weight.shape[1]):
                line = inputs[k, r, p]
                v = (_vload(line, at), _vload(line, at + LANES), _vload(line, at + 2 * LANES))
                a = _fma3(v, weight[o0, k, m, n], a)
                b = _fma3(v, weight[o1, k, m, n], b)
                c = _fma3(v, weight[o2, k, m, n], c)
                d = _fma3(v, weight[o3, k, m, n], d)
    _store_tile(target[o0, row], j, a)
    _store_tile(target[o1, row], j, b)
    _store_tile(target[o2, row], j, c)
    _store_tile(target[o3, row], j, d)


@numba.njit(**_SERIAL)
def _eight_maps(inputs, weight, o0, top, dil_h, phase, shift, target, row):
    """``_dense_block``'s row ``row`` of maps ``o0:o0 + 8`` of ``target`` with 16 lanes, all
    from one group (input channels ``inputs``), from padded row ``top`` (taps' ``phase`` and
    ``shift`` as there): in tiles of three vectors (``_eight_maps_of_three``), then the columns
    left over in tiles of one vector (``_eight_maps_of_one``), the last overlapping the one
    before."""
    width = target.shape[2]
    whole = width - width % (3 * LANES)
    for j in range(0, whole, 3 * LANES):
        sums = _eight_maps_of_three(inputs, weight, o0, top, dil_h, j, phase, shift)
        _store_eight(target, o0, row, j, sums)
    for tile in range((width - whole + LANES - 1) // LANES):
        j = min(whole + tile * LANES, width - LANES)
        sums = _eight_maps_of_one(inputs, weight, o0, top, dil_h, j, phase, shift)
        _store_eight(target, o0, row, j, sums)


@numba.njit(inline="always", **_SERIAL)
def _store_eight(target, o0, row, j, tiles):
    """Store the eight ``tiles`` at column ``j`` of row ``row`` of maps ``o0:o0 + 8``."""
    for t in range(8):
        _store_tile(target[o0 + t, row], j, tiles[t])


@numba.njit(inline="always", **_SERIAL)
def _eight_maps_of_three(inputs, weight, o0, top, dil_h, j, phase, shift):
    """The sums of columns ``j:j + 3 * LANES`` of maps ``o0:o0 + 8``: the 24 sums, three
    input vectors and a weight fill 28 of AVX-512's 32 registers; each input vector loaded
    feeds eight multiply-adds."""
    zero = _vzero()
    a = b = c = d = e = f = g = h = (zero, zero, zero)
    for m in range(weight.shape[2]):
        r = top + m * dil_h
        for n in range(weight.shape[3]):
            p, at = phase[n], j + shift[n]
            for k in range(weight.shape[1]):
                line = inputs[k, r, p]
                v = (_vload(line, at), _vload(line, at + LANES), _vload(line, at + 2 * LANES))
                a = _fma3(v, weight[o0, k, m, n], a)
                b = _fma3(v, weight[o0 + 1, k, m, n], b)
                c = _fma3(v, weight[o0 + 2, k, m, n], c)
                d = _fma3(v, weight[o0 + 3, k, m, n], d)
                e = _fma3(v, weight[o0 + 4, k, m, n], e)
                f = _fma3(v, weight[o0 + 5, k, m, n], f)
                g = _fma3(v, weight[o0 + 6, k, m, n], g)
                h = _fma3(v, weight[o0 + 7, k, m, n], h)
    return a, b, c, d, e, f, g, h


@numba.njit(inline="always", **_SERIAL)
def _eight_maps_of_one(inputs, weight, o0, top, dil_h, j, phase, shift):
    """``_eight_maps_of_three`` for one vector of columns from ``j``."""
    zero = _vzero()
    a = b = c = d = e = f = g = h = zero
    for m in range(weight.shape[2]):
        r = top + m * dil_h
        for n in range(weight.shape[3]):
            p, at = phase[n], j + shift[n]
            for k in range(weight.shape[1]):
                v = _vload(inputs[k, r, p], at)
                a = _vfma(_vsplat(weight[o0, k, m, n]), v, a)
                b = _vfma(_vsplat(weight[o0 + 1, k, m, n]), v, b)
                c = _vfma(_vsplat(weight[o0 + 2, k, m, n]), v, c)
                d = _vfma(_vsplat(weight[o0 + 3, k, m, n]), v, d)
                e = _vfma(_vsplat(weight[o0 + 4, k, m, n]), v, e)
                f = _vfma(_vsplat(weight[o0 + 5, k, m, n]), v, f)
                g = _vfma(_vsplat(weight[o0 + 6, k, m, n]), v, g)
                h = _vfma(_vsplat(weight[o0 + 7, k, m, n]), v, h)
    return (a,), (b,), (c,), (d,), (e,), (f,), (g,), (h,)


@numba.njit(inline="always", **_SERIAL)
def _fma3(values, w, acc):
    """``acc`` (three vectors) plus ``w`` times the three vectors ``values``."""
    scale = _vsplat(w)
    return (
        _vfma(scale, values[0], acc[0]),
        _vfma(scale, values[1], acc[1]),
        _vfma(scale, values[2], acc[2]),
    )


@numba.njit(**_SERIAL)
def _four_depthwise_maps(phases, weight, maps, out_per_group, top, dil_h, j, phase, shift):
    """``_dense_block``'s sums for a tile of four depthwise maps, each reading its own input
    channel (map o reads channel o // out_per_group; no load is shared), from padded row
    ``top`` and column ``j`` (taps' ``phase`` and ``shift`` as there)."""
    zero = _vzero()
    a = b = c = d = (zero, zero, zero, zero)
    o0, o1, o2, o3 = maps
    s0, s1 = phases[o0 // out_per_group], phases[o1 // out_per_group]
    s2, s3 = phases[o2 // out_per_group], phases[o3 // out_per_group]
    for m in range(weight.shape[2]):
        r = top + m * dil_h
        for n in range(weight.shape[3]):
            p, at = phase[n], j + shift[n]
            a = _fma4(s0[r, p], at, weight[o0, 0, m, n], a)
            b = _fma4(s1[r, p], at, weight[o1, 0, m, n], b)
            c = _fma4(s2[r, p], at, weight[o2, 0, m, n], c)
            d = _fma4(s3[r, p], at, weight[o3, 0, m, n], d)
    return a, b, c, d


#: Output tiles per task of ``_winograd`` (one row of tiles is cut into chunks of these): their
#: transformed inputs and products, 16 values a tile per channel, stay in the core's cache.
WINOGRAD_TILE_BYTES = 512 << 10


@numba.njit(**_PARALLEL)
def _winograd(x, weight, transformed, rowmap, colmap, left, parity, groups, chunk, out):
    """A 3x3 layer at stride 1 without dilation by Winograd's F(2x2, 3x3): each 2x2 block of
    outputs from its 4x4 block of padded input, in 16 products per input and output channel
    instead of 36 (2.25x fewer multiply-adds).

    ``weight`` is (C_out, C_in/groups, 3, 3), ``transformed`` the same weights transformed
    (``winograd_weights``), ``rowmap``/``colmap``/``left`` the padding as in
    ``_fill_padded_rows``. Blocks start at even output rows of the whole map: output row 0
    here is an odd row of it when ``parity`` is 1 (a band of a bigger map,
    ``runtime.band_of``), and its block starts one row above. Each output is computed only
    from the input its own 3x3 window reads, whatever the block's other rows hold, so a band
    gives the whole map's bytes; an output whose window holds a NaN or an infinity is added up
    directly, as the other methods do (the transforms would turn inf - inf into NaN). Tasks
    are rows of blocks cut into chunks of ``chunk`` blocks, spread over the cores
    (``_winograd_tiles``)."""
    block_rows = (out.shape[1] + parity + 1) // 2
    blocks = (out.shape[2] + 1) // 2
    chunks = (blocks + chunk - 1) // chunk
    for task in numba.prange(block_rows * chunks):
        first = task % chunks * chunk
        _winograd_tiles(
            x,
            weight,
            transformed,
            rowmap,
            colmap,
            left,
            2 * (task // chunks) - parity,
            first,
            min(blocks, first + chunk),
            groups,
            out,
        )


@numba.njit(inline="always", **_SERIAL)
def _fill_columns(src, colmap, left, start, line):
    """``line[q]`` = padded column ``start + q`` of the row ``src`` (maps as in
    ``_fill_padded_rows``; past ``colmap``'s end, a zero)."""
    width, count = src.shape[0], line.shape[0]
    inner_start = min(count, max(0, left - start))
    inner_stop = max(inner_start, min(count, left + width - start))
    for q in range(inner_start):
        u = colmap[start + q]
        line[q] = src[u] if u >= 0 else 0.0
    inner, source = line[inner_start:inner_stop], src[inner_start + start - left :]
    for q in range(inner.shape[0]):  # views from 0: no index can be negative, LLVM vectorises
        inner[q] = source[q]
    for q in range(inner_stop, count):
        column = start + q
        u = colmap[column] if column < colmap.shape[0] else -1
        line[q] = src[u] if u >= 0 else 0.0


@numba.njit(**_SERIAL)
def _winograd_tiles(x, weight, transformed, rowmap, colmap, left, top, first, last, groups, out):
    """``_winograd``'s blocks ``first:last`` of the block row at output row ``top``: the input
    blocks transformed (``V = B^T d B``), 16 products of matrices (one per cell of a block,
    by the dense kernels' tiles of maps), the products transformed back (``Y = A^T M A``)."""
    c_in, c_out = x.shape[0], out.shape[0]
    c_per_group, span = c_in // groups, c_out // groups
    count = last - first
    width = max(count, 3 * LANES)  # a row of products at least one tile of the kernels wide
    cells = np.empty((16, c_in, 1, 1, width), np.float32)
    cells[:, :, :, :, count:] = 0.0  # a row narrower than a tile: its padding is multiplied too
    rows = np.empty((4, 2 * count + 2), np.float32)
    even = np.empty((4, count + 1), np.float32)  # B^T d, its even and odd columns apart
    odd = np.empty((4, count + 1), np.float32)
    finite = np.zeros((4, 2 * count + 2), np.float32)  # NaN where a channel is not finite
    for c in range(c_in):
        for i in range(4):
            p = top + i
            r = rowmap[p] if 0 <= p < rowmap.shape[0] else -1
            if r < 0:
                rows[i] = 0.0
            else:
                _fill_columns(x[c, r], colmap, left, 2 * first, rows[i])
            _accumulate_finite(rows[i], finite[i])
        _combine_rows(rows, even, odd)
        for a in range(4):  # (B^T d) B: the columns combined
            _combine_columns(even[a], odd[a], cells, 4 * a, c, count)
    products = np.empty((16, c_out, 1, width), np.float32)
    zero = np.zeros(1, np.int64)
    per_pass = 8 if LANES == 16 else 4
    passes = (span + per_pass - 1) // per_pass
    for cell in range(16):
        for g in range(groups):
            inputs = cells[cell, g * c_per_group : (g + 1) * c_per_group]
            last_map = (g + 1) * span - 1
            for number in range(passes):
                o0 = _first_map(g, span, per_pass, number)
                if LANES == 16:
                    _eight_maps(inputs, transformed[cell], o0, 0, 1, zero, zero, products[cell], 0)
                    continue
                maps = (o0, min(o0 + 1, last_map), min(o0 + 2, last_map), min(o0 + 3, last_map))
                for tile in range((width + 3 * LANES - 1) // (3 * LANES)):
                    j = _tile_start(tile, width, 3 * LANES)
                    _four_maps_of_three(
                        inputs, transformed[cell], maps, 0, 1, j, zero, zero, products[cell], 0
                    )
    p = products  # indexed whole (C order): LLVM vectorises the loop over t
    height, columns = out.shape[1], out.shape[2]
    rows_kept = range(max(0, -top), min(2, height - top))
    start, stop = 2 * first, min(columns, 2 * last)
    blocks = np.empty((2, 2 * count), np.float32)
    for o in range(c_out):
        for t in range(count):  # Y = A^T M A, the two rows of outputs side by side
            upper_0 = p[0, o, 0, t] + p[4, o, 0, t] + p[8, o, 0, t]
            upper_1 = p[1, o, 0, t] + p[5, o, 0, t] + p[9, o, 0, t]
            upper_2 = p[2, o, 0, t] + p[6, o, 0, t] + p[10, o, 0, t]
            upper_3 = p[3, o, 0, t] + p[7, o, 0, t] + p[11, o, 0, t]
            lower_0 = p[4, o, 0, t] - p[8, o, 0, t] - p[12, o, 0, t]
            lower_1 = p[5, o, 0, t] - p[9, o, 0, t] - p[13, o, 0, t]
            lower_2 = p[6, o, 0, t] - p[10, o, 0, t] - p[14, o, 0, t]
            lower_3 = p[7, o, 0, t] - p[11, o, 0, t] - p[15, o, 0, t]
            blocks[0, 2 * t] = upper_0 + upper_1 + upper_2
            blocks[0, 2 * t + 1] = upper_1 - upper_2 - upper_3
            blocks[1, 2 * t] = lower_0 + lower_1 + lower_2
            blocks[1, 2 * t + 1] = lower_1 - lower_2 - lower_3
        for i in rows_kept:
            kept, block = out[o, top + i, start:stop], blocks[i]
            for q in range(kept.shape[0]):  # views from 0: LLVM vectorises the copy
                kept[q] = block[q]
    seen = np.float32(0.0)
    for i in range(4):
        for q in range(finite.shape[1]):
            seen += finite[i, q]
    if seen == seen:
        return
    for i in rows_kept:  # a NaN or an infinity: the outputs whose windows hold one
        for q in range(stop - start):
            window = np.float32(0.0)
            for a in range(3):
                for b in range(3):
                    window += finite[i + a, q + b]
            if window != window:
                for o in range(c_out):
                    out[o, top + i, start + q] = _window_sum(
                        x, weight, rowmap, colmap, groups, o, top + i, start + q
                    )


@numba.njit(inline="always", **_SERIAL)
def _accumulate_finite(row, finite):
    """``finite += row * 0``: NaN where ``row`` holds a NaN or an infinity."""
    for q in range(row.shape[0]):
        finite[q] += row[q] * np.float32(0.0)


@numba.njit(inline="always", **_SERIAL)
def _combine_rows(rows, even, odd):
    """``B^T d`` of four padded rows, its even and odd columns into ``even`` and ``odd``."""
    for t in range(even.shape[1]):
        q = 2 * t
        even[0, t] = rows[0, q] - rows[2, q]
        even[1, t] = rows[1, q] + rows[2, q]
        even[2, t] = rows[2, q] - rows[1, q]
        even[3, t] = rows[1, q] - rows[3, q]
        odd[0, t] = rows[0, q + 1] - rows[2, q + 1]
        odd[1, t] = rows[1, q + 1] + rows[2, q + 1]
        odd[2, t] = rows[2, q + 1] - rows[1, q + 1]
        odd[3, t] = rows[1, q + 1] - rows[3, q + 1]


@numba.njit(inline="always", **_SERIAL)
def _combine_columns(even, odd, cells, cell, c, count):
    """``(B^T d) B`` of one row of ``B^T d``: cells ``cell:cell + 4`` of channel ``c`` of each
    of ``count`` blocks."""
    first, second = cells[cell, c, 0, 0], cells[cell + 1, c, 0, 0]
    third, fourth = cells[cell + 2, c, 0, 0], cells[cell + 3, c, 0, 0]
    for t in range(count):
        first[t] = even[t] - even[t + 1]
        second[t] = odd[t] + even[t + 1]
        third[t] = even[t + 1] - odd[t]
        fourth[t] = odd[t] - odd[t + 1]


@numba.njit(**_SERIAL)
def _window_sum(x, weight, rowmap, colmap, groups, o, y, column):
    """Output ``(o, y, column)`` of a 3x3 layer at stride 1, its products added up one by one
    (maps as in ``_fill_padded_rows``)."""
    c_per_group = weight.shape[1]
    g = o // (weight.shape[0] // groups)
    total = np.float32(0.0)
    for k in range(c_per_group):
        for a in range(3):
            p = y + a
            r = rowmap[p] if p < rowmap.shape[0] else -1
            if r < 0:
                continue
            for b in range(3):
                q = column + b
                u = colmap[q] if q < colmap.shape[0] else -1
                if u >= 0:
                    total += x[g * c_per_group + k, r, u] * weight[o, k, a, b]
    return total


@numba.njit(inline="always", **_SERIAL)
def _taps_inside(start, taps, dilation, size):
    """The taps ``first <= t < stop`` of a window of ``taps`` taps ``dilation`` apart, from
    ``start``, that fall inside ``0..size - 1``: ``_taps_inside(-1, 3, 1, 4) == (1, 3)``."""
    return max(0, (dilation - 1 - start) // dilation), min(
        taps, (size - start + dilation - 1) // dilation
    )


@numba.njit(**_PARALLEL)
def _max_pool2d(x, out, indices, kh, kw, stride_h, stride_w, dil_h, dil_w, top, left):
    """Max over windows of ``x`` (C, H, W), padded implicitly (pad cells never win).

    As PyTorch's CPU kernel: ``v > best or isnan(v)`` (first maximum wins, NaN propagates),
    flat indices ``r*W + q`` into the unpadded plane; a window whose values are all -inf
    (or that sees no input cell) reports its first input-aligned tap. With an empty
    ``indices``, only the values, in two passes per output row: the max of its input rows
    column by column (a vectorised pass), then of each window's columns (of equal zeros,
    another sign of zero may then win).
    """
    channels, height, width = x.shape
    _, h_out, w_out = out.shape
    for row in numba.prange(channels * h_out):
        c = row // h_out
        i = row % h_out
        r_start = i * stride_h - top
        m_first, m_stop = _taps_inside(r_start, kh, dil_h, height)
        if indices.size == 0:
            column_max = np.full(width, -np.inf, np.float32)
            for m in range(m_first, m_stop):
                src = x[c, r_start + m * dil_h]
                for q in range(width):
                    v = src[q]
                    column_max[q] = v if v > column_max[q] or v != v else column_max[q]
        for j in range(w_out):
            q_start = j * stride_w - left
            n_first, n_stop = _taps_inside(q_start, kw, dil_w, width)
            best = np.float32(-np.inf)
            if indices.size == 0:
                for n in range(n_first, n_stop):
                    v = column_max[q_start + n * dil_w]
                    best = v if v > best or v != v else best
                out[c, i, j] = best
                continue
            best_index = (r_start + m_first * dil_h) * width + q_start + n_first * dil_w
            for m in range(m_first, m_stop):
                src = x[c, r_start + m * dil_h]
                for n in range(n_first, n_stop):
                    v = src[q_start + n * dil_w]
                    if v > best or np.isnan(v):
                        best = v
                        best_index = (r_start + m * dil_h) * width + q_start + n * dil_w
            out[c, i, j] = best
            indices[c, i, j] = best_index


@numba.njit(**_PARALLEL)
def _avg_pool2d(x, out, kh, kw, stride_h, stride_w, top, bottom, left, right, count_include_pad):
    """Mean over windows of ``x`` (C, H, W) with PyTorch's divisor (``AvgPoolKernel.cpp``).

    The divisor is the window clipped to the padded extent (``count_include_pad``) or to
    the input; cells past the padding (ceil mode) are never counted. Each output row first
    sums its input rows column by column (one vectorised pass), then adds up each window's
    columns; sums in float64.
    """
    channels, height, width = x.shape
    _, h_out, w_out = out.shape
    for row in numba.prange(channels * h_out):
        c = row // h_out
        i = row % h_out
        r0 = i * stride_h - top
        r1 = min(r0 + kh, height + bottom)
        padded_rows = r1 - r0
        r0, r1 = max(r0, 0), min(r1, height)
        column_sums = np.zeros(width, np.float64)
        for r in range(r0, r1):
            _add_scaled(column_sums, 1.0, x[c, r], width)
        dst = out[c, i]
        for j in range(w_out):
            q0 = j * stride_w - left
            q1 = min(q0 + kw, width + right)
            padded_cols = q1 - q0
            q0, q1 = max(q0, 0), min(q1, width)
            total = 0.0
            for q in range(q0, q1):
                total += column_sums[q]
            count = padded_rows * padded_cols if count_include_pad else (r1 - r0) * (q1 - q0)
            dst[j] = total / count


@numba.njit(**_SERIAL)
def _png_unfilter(rows, bpp, out):
    """Undo PNG row filters: ``rows`` (H, 1 + stride) filtered bytes, ``out`` (H, stride)."""
    height, stride = out.shape
    for y in range(height):
        kind = rows[y, 0]
        for x in range(stride):
            value = np.int32(rows[y, x + 1])
            left = np.int32(out[y, x - bpp]) if x >= bpp else np.int32(0)
            up = np.int32(out[y - 1, x]) if y > 0 else np.int32(0)
            corner = np.int32(out[y - 1, x - bpp]) if x >= bpp and y > 0 else np.int32(0)
            if kind == 1:
                value += left
            elif kind == 2:
                value += up
            elif kind == 3:
                value += (left + up) // 2
            elif kind == 4:
                guess = left + up - corner
                to_left, to_up, to_corner = abs(guess - left), abs(guess - up), abs(guess - corner)
                if to_left <= to_up and to_left <= to_corner:
                    value += left
                elif to_up <= to_corner:
                    value += up
                else:
                    value += corner
            out[y, x] = value & 255


_lock_path = os.path.join(numba_cache_dir(), ".compile.lock")
_ready: set = set()


@contextlib.contextmanager
def _compile_lock():
    """Hold the inter-process compile lock (``flock``); without ``fcntl`` (Windows), no lock:
    only concurrent first runs into an empty cache are then unsafe."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    os.makedirs(os.path.dirname(_lock_path), exist_ok=True)
    fd = os.open(_lock_path, os.O_CREAT | os.O_RDWR, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def call(kernel, *args):
    """Call a kernel; its first use in this process loads or compiles it under the lock.

    Under ``NUMBA_DISABLE_JIT=1`` kernels are plain Python functions, called as they are.
    """
    if kernel not in _ready and hasattr(kernel, "overloads"):
        signature = tuple(numba.typeof(a) for a in args)
        if signature not in kernel.overloads:
            with _compile_lock():
                kernel.compile(signature)
        _ready.add(kernel)
    return kernel(*args)


def _block_rows(row_bytes, kh, h_out, least=1):
    """Output rows per task of a convolution kernel: as many as keep its padded rows within
    ``BLOCK_BYTES``, at least ``least``, and no more than make four tasks."""
    return max(1, min(max(least, BLOCK_BYTES // row_bytes - kh + 1), -(-h_out // 4)))


def conv2d_padding(x, weight, rowmap, colmap, left, stride, dilation, groups, depthwise, out):
    """Run the SIMD kernel the caller chose on float32 ``x`` (C_in, H, W): ``_depthwise`` when
    ``depthwise`` (``correlation.has_depthwise_kernel``), else ``_dense``.

    ``rowmap``/``colmap`` are the source index of each padded row/column (-1: zero) and
    ``left`` the columns of padding before the image's own.
    """
    kh = dilation[0] * (weight.shape[2] - 1) + 1
    row_bytes = 4 * colmap.shape[0] * (1 if weight.shape[1] == 1 else x.shape[0]) * stride[0]
    block_rows = _block_rows(row_bytes, kh, out.shape[1])
    if depthwise:
        call(
            _depthwise,
            x,
            weight,
            np.empty((weight.shape[0], 0, 1), np.float32),
            rowmap,
            colmap,
            left,
            block_rows,
            out,
        )
    else:
        call(
            _dense,
            x,
            weight,
            rowmap,
            colmap,
            left,
            block_rows,
            tuple(stride),
            tuple(dilation),
            groups,
            out,
        )


def winograd_weights(weight: np.ndarray) -> np.ndarray:
    """The 3x3 kernels ``weight`` (C_out, C_in/groups, 3, 3) as ``_winograd`` multiplies them:
    ``G g G^T`` of each, its 16 cells first, as ``(16, C_out, C_in/groups, 1, 1)`` float32.

    >>> cells = winograd_weights(np.ones((1, 1, 3, 3), np.float32))
    >>> cells.shape, cells[:, 0, 0, 0, 0].reshape(4, 4).tolist()[1]
    ((16, 1, 1, 1, 1), [1.5, 2.25, 0.75, 1.5])
    """
    g = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    cells = np.einsum("am,ocmn,bn->aboc", g, weight.astype(np.float64), g)
    return np.ascontiguousarray(cells.reshape((16,) + weight.shape[:2] + (1, 1)), np.float32)


def winograd_padding(x, weight, rowmap, colmap, left, parity, groups, out):
    """Run ``_winograd`` on float32 ``x`` (C_in, H, W) for the 3x3 ``weight``: maps as in
    ``conv2d_padding``, ``parity`` 1 when output row 0 is an odd row of the whole map."""
    chunk = max(3 * LANES, WINOGRAD_TILE_BYTES // (16 * 4 * x.shape[0]))
    call(
        _winograd,
        x,
        weight,
        winograd_weights(weight),
        rowmap,
        colmap,
        left,
        parity,
        groups,
        chunk,
        out,
    )


def separable_padding(x, column, row, rowmap, colmap, left, out):
    """Run ``_depthwise`` in two passes on float32 ``x`` (C, H, W): factors ``column``
    (C_out, kh) and ``row`` (C_out, kw), maps as in ``conv2d_padding``; blocks of at least
    2*kh rows, so that the row pass over the kh - 1 rows each block shares with the next
    costs little."""
    kh = column.shape[1]
    block_rows = _block_rows(8 * colmap.shape[0], kh, out.shape[1], least=2 * kh)
    call(
        _depthwise,
        x,
        row[:, None, None, :].copy(),
        column[:, :, None].copy(),
        rowmap,
        colmap,
        left,
        block_rows,
        out,
    )


def conv2d_valid(xp, weight, out, stride, dilation, groups, depthwise):
    """Correlate padded ``xp`` into ``out``; ``stride`` and ``dilation`` are (rows, cols) pairs,
    ``depthwise`` the choice of kernel (``conv2d_padding``)."""
    conv2d_padding(
        xp,
        weight,
        np.arange(xp.shape[1]),
        np.arange(xp.shape[2]),
        0,
        stride,
        dilation,
        groups,
        depthwise,
        out,
    )


def max_pool2d(x, out, indices, size, stride, dilation, pads):
    """Run ``_max_pool2d`` (values only when ``indices`` is None); ``pads`` is (top, bottom,
    left, right), of which top/left matter."""
    indices = np.empty((0, 0, 0), np.int64) if indices is None else indices
    call(
        _max_pool2d,
        x,
        out,
        indices,
        size[0],
        size[1],
        stride[0],
        stride[1],
        dilation[0],
        dilation[1],
        pads[0],
        pads[2],
    )


def avg_pool2d(x, out, size, stride, pads, count_include_pad):
    """Run ``_avg_pool2d``; ``pads`` is (top, bottom, left, right)."""
    call(
        _avg_pool2d, x, out, size[0], size[1], stride[0], stride[1], *pads, bool(count_include_pad)
    )


def png_unfilter(rows, bpp, out):
    """Run ``_png_unfilter`` (16-bit colour PNG reading)."""
    call(_png_unfilter, rows, bpp, out)


def warm_up() -> list[str]:
    """Compile (or load from the cache) every kernel, serially; return their names.

    Runs each on tiny float32 arrays of the layouts the engine passes, so later processes
    only load the cache (milliseconds per kernel).
    """
    x = np.ones((2, 9, 9), np.float32)
    out = np.empty((2, 3, 3), np.float32)
    conv2d_valid(x, np.ones((2, 2, 3, 3), np.float32), out, (3, 3), (1, 1), 1, depthwise=False)
    conv2d_valid(
        x,
        np.ones((2, 1, 3, 3), np.float32),
        np.empty((2, 7, 7), np.float32),
        (1, 1),
        (1, 1),
        2,
        depthwise=True,
    )
    max_pool2d(x, out, np.empty((2, 3, 3), np.int64), (3, 3), (3, 3), (1, 1), (0, 0, 0, 0))
    avg_pool2d(x, out, (3, 3), (3, 3), (0, 0, 0, 0), True)
    png_unfilter(np.zeros((2, 13), np.uint8), 6, np.empty((2, 12), np.uint8))
    return ["dense", "depthwise", "max_pool2d", "avg_pool2d", "png_unfilter"]
