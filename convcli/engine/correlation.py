"""How a convolution is computed: in bands of output rows, with the fastest method for the work.

``engine.conv2d`` checks the arguments and resolves the shapes, then calls ``correlate``. The
padded input is never built whole: each band of output rows gets its own padded slice of the
input (border values from the pad mode), so memory stays at the input, the output and a few
megabytes. The method is chosen once per call (``choose_method``):

- ``numpy``: one vectorised multiply-add per kernel tap, in bands small enough for the cache;
  a depthwise kernel of rank 1 on large channels as a row pass and a column pass (as
  ``separable``). No compilation and no Numba import, which costs about 0.5 s, so it wins
  end to end for small work (``numpy_takes``: the work of one call times the calls declared
  by ``runtime.repeated``, never the process's history).
- ``gemm``: dense layers (many channels): each band is unfolded (im2col) and multiplied by
  the weights with one BLAS matrix product per group. Chosen for work too small to be worth
  loading Numba (the SIMD kernel is 1.1-9x faster at every size and depth measured).
- ``separable``: a depthwise kernel of rank 1 (box, Gaussian, Sobel) as a row pass and then a
  column pass, ``kh + kw`` instead of ``kh * kw`` taps per pixel; only for kernels of 7x7
  and up (17x17 and up when strided or dilated). At stride 1 both passes run block by block
  in one kernel (``_jit._depthwise``), the row pass's output staying in cache.
- ``winograd``: a dense 3x3 layer at stride 1 without dilation, with many channels
  (``winograd_takes``), by Winograd's F(2x2, 3x3) (``_jit._winograd``): 16 multiply-adds per
  2x2 block of outputs, input channel and map instead of 36.
- ``fft``: a depthwise kernel of full rank, 22x22 and up (19x19 when dilated), at stride 1,
  by FFT (``scipy.fft``) in tiles (overlap-save), the tiles spread over the cores.
  Its float32 rounding is relative to the largest values in a tile, not to each output.
  Smaller depthwise kernels at stride 1 go by FFT too where loading Numba would cost more
  than the FFT's extra time (``fft_spares_numba``: one 15x15 call on 4096^2x3, not a batch
  of them), by the same rule of the declared calls as ``numpy``.
- ``numba``: SIMD kernels (``_jit``): one for depthwise kernels at stride 1
  (``has_depthwise_kernel``), one for everything else. They pad a float32 image block by
  block themselves instead of going through bands.

Every method computes the same cross-correlation; the tests check each against
``tests/naive.py``.

>>> x = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
>>> w = np.ones((1, 1, 3, 3), np.float32)
>>> correlate(x, w, 1, (1, 1, 1, 1), "replicate", (2, 2), (1, 1), (2, 2), "numpy")[0]
array([[15., 30.],
       [75., 90.]], dtype=float32)

(The first window, with the border replicated, is 0+0+1 + 0+0+1 + 4+4+5 = 15.)
"""

from __future__ import annotations

import functools

import numpy as np

from convcli import runtime
from convcli.runtime import compute_threads

#: Multiply-adds below which plain numpy beats loading Numba in a fresh process (measured:
#: numpy does ~2e9 per second here, Numba's import and first call take ~0.5 s).
NUMPY_WORK = 1_000_000_000
#: Multiply-adds so few that numpy takes them however often they are repeated.
NUMPY_WORK_TINY = 2_000_000
#: A depthwise layer runs channel by channel (each band computed straight into its place in
#: the output) when a channel has at least this many pixels; smaller channels go together,
#: so that many small maps (300,000 channels of 1x1) cost their arithmetic, not a Python
#: loop over channels.
CHANNEL_BY_CHANNEL_PIXELS = 1 << 16
#: Output values per chunk of maps in the numpy method's depthwise loop: the product of one
#: tap is held for one chunk at a time (1 MB), not for every map at once.
TAP_CHUNK_VALUES = 1 << 18
#: Bytes of padded input per band: small enough to stay in cache, large enough to keep
#: both cores busy.
BAND_BYTES = 4 << 20
MIN_BAND_ROWS = 8
#: Bytes of padded input per band in the numpy method, whose every tap is a pass over the
#: band: its products and sums then stay in the core's cache (measured: box 3x3 on a 512^2
#: channel 1.6 ms in one band, 1.0 ms in bands of 128 rows; 0.54 ms in two passes). Not for
#: a band of a larger map (``runtime.band_of``): ``pipeline.bands`` runs those side by side
#: on the cores, where numpy calls this small wait on each other for the GIL (measured: 8
#: bands of 128x4096x3 on 2 threads, 84 ms in these bands, 45 ms in ``BAND_BYTES``).
NUMPY_BAND_BYTES = 256 << 10
#: Depthwise kernels of rank 1 with at least this many taps go as a row pass and a column
#: pass; with fewer, the depthwise kernel (``has_depthwise_kernel``) is as fast (measured on
#: 4096^2x3: Gaussian 5x5 49 ms direct, 51 ms in two passes; 7x7 71 and 59 ms; 15x15 191 and
#: 64 ms). Strided or dilated kernels take the dense kernel, where two passes (in bands) win
#: from 17x17 (2048^2x3, stride 2: Gaussian 15x15 29 ms in the dense kernel, 35 ms in two
#: passes; 21x21 56 and 45 ms).
SEPARABLE_TAPS, SEPARABLE_TAPS_DENSE = 49, 289
#: Depthwise kernels of rank 1 at stride 1 whose two passes would take at least this many
#: taps (kh + kw) go through the FFT instead, whose cost hardly grows with the kernel
#: (measured on 2048^2x3 float32: Gaussian 91x91 128 ms in two passes, 243 ms by FFT;
#: 121x121 486 and 207 ms; 241x241 682 and 227 ms; a sigma-50 Gaussian, 301x301, on an
#: 8-bit image 1.4 s in two passes, 0.1 s by FFT).
SEPARABLE_SIDES_FFT = 200
#: Depthwise kernels of full rank with at least this many taps go through the FFT (measured
#: on 4096^2x3: 19x19 297 ms direct, 524 ms by FFT; 23x23 409 and 385 ms). Dilated ones
#: take the dense kernel, slower than the FFT from 19x19 (2048^2x3, dilation 2: 15x15 98 ms
#: in the dense kernel, 130 ms by FFT; 19x19 163 and 150 ms).
FFT_TAPS, FFT_TAPS_DENSE = 484, 361
#: Dense 3x3 layers at stride 1 without dilation with at least this many input channels and
#: maps per group go by Winograd's F(2x2, 3x3) (``winograd_takes``); with fewer, its
#: transforms cost more than the multiply-adds it saves (measured, 2 threads, Winograd
#: against the dense SIMD kernel with 16 and with 8 lanes: 64->64 at 256^2 13.8/20.2 and
#: 18.2/31.8 ms, 32->32 at 256^2 4.4/5.0 and 5.1/7.7 ms, 16->16 at 512^2 6.0/5.7 and
#: 7.2/9.1 ms, 16->16 at 128^2 0.70/0.42 and 0.70/0.68 ms).
WINOGRAD_CHANNELS = 32
#: What loading Numba and its cached kernels costs a fresh process more than importing
#: ``scipy.fft`` does (measured: 0.41 s and 0.14 s), in taps of the depthwise SIMD kernel
#: (7e10 multiply-adds a second here; 4096^2x3 by FFT takes what 484-528 taps do).
NUMBA_LOAD_WORK = 20_000_000_000
#: The smallest side of an FFT tile: scipy's float32 FFT costs about the same per pixel from
#: 288 to 512 here (1.2-1.7 ms for 384, forward and back); tiles grow for kernels larger than
#: a quarter of it.
FFT_TILE = 384
#: Inputs or kernels beyond this magnitude (or not finite) bypass the FFT (see ``_fft``).
FFT_SAFE_MAGNITUDE = 1e30


def source_index(positions: np.ndarray, size: int, mode: str) -> np.ndarray:
    """The input index each padded position reads, or -1 where it reads a zero.

    >>> source_index(np.arange(-2, 6), 4, "reflect").tolist()      # c b | a b c d | c b
    [2, 1, 0, 1, 2, 3, 2, 1]
    >>> source_index(np.arange(-2, 6), 4, "symmetric").tolist()    # b a | a b c d | d c
    [1, 0, 0, 1, 2, 3, 3, 2]
    >>> source_index(np.arange(-2, 6), 4, "zeros").tolist()
    [-1, -1, 0, 1, 2, 3, -1, -1]

    ``symmetric`` fills pads of any width (the mirrored image repeats, as numpy's does).
    """
    if mode == "zeros":
        return np.where((positions >= 0) & (positions < size), positions, -1)
    if mode == "replicate":
        return np.clip(positions, 0, size - 1)
    if mode == "circular":
        return positions % size
    if mode == "symmetric":  # the edge repeated: period 2 * size, the second half mirrored
        folded = positions % (2 * size)
        return np.where(folded < size, folded, 2 * size - 1 - folded)
    period = 2 * (size - 1)  # reflect, the edge not repeated
    folded = positions % period if period else np.zeros_like(positions)
    return np.where(folded < size, folded, period - folded)


def padding_maps(hw, pads, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The source row and column of every padded row and column of an ``hw`` image (-1: a
    zero), as the SIMD kernels read them (``source_index``).

    >>> [m.tolist() for m in padding_maps((2, 3), (1, 0, 0, 1), "replicate")]
    [[0, 0, 1], [0, 1, 2, 2]]
    """
    (height, width), (top, bottom, left, right) = hw, pads
    return (
        source_index(np.arange(-top, height + bottom), height, mode),
        source_index(np.arange(-left, width + right), width, mode),
    )


def padded_band(
    image: np.ndarray, start: int, stop: int, pads, mode: str, buffer=None
) -> np.ndarray:
    """Rows ``start:stop`` of the padded image, as float32 ``(C, stop - start, W + left + right)``.

    ``buffer``, a flat float32 array at least that large, is reused instead of allocating
    (fresh memory costs a page fault per 4 KiB on first touch).

    >>> row = np.arange(1, 5, dtype=np.float32).reshape(1, 1, 4)
    >>> padded_band(row, 0, 3, (1, 1, 2, 1), "replicate")[0]
    array([[1., 1., 1., 2., 3., 4., 4.],
           [1., 1., 1., 2., 3., 4., 4.],
           [1., 1., 1., 2., 3., 4., 4.]], dtype=float32)
    """
    channels, height, width = image.shape
    top, _, left, right = pads
    shape = (channels, stop - start, left + width + right)
    band = np.empty(shape, np.float32) if buffer is None else _view(buffer, shape)
    inner = band[:, :, left : left + width]
    positions = np.arange(start - top, stop - top)
    inside = (positions >= 0) & (positions < height)
    if inside.any():
        first = int(np.argmax(inside))
        count = int(inside.sum())
        inner[:, first : first + count] = image[:, positions[first] : positions[first] + count]
    outside = np.flatnonzero(~inside)
    if outside.size:
        rows = source_index(positions[outside], height, mode)
        inner[:, outside[rows >= 0]] = image[:, rows[rows >= 0]]  # an image of no rows reads none
        inner[:, outside[rows < 0]] = 0.0
    if left or right:
        pad_columns = np.r_[0:left, left + width : left + width + right]
        columns = source_index(pad_columns - left, width, mode)
        band[:, :, pad_columns[columns >= 0]] = band[:, :, left + columns[columns >= 0]]
        band[:, :, pad_columns[columns < 0]] = 0.0
    return band


def rank_one_factors(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Column and row factors ``(C_out, kh)``, ``(C_out, kw)`` if every depthwise kernel has rank 1.

    >>> col, row = rank_one_factors(np.outer([1.0, 2.0, 1.0], [-1.0, 0.0, 1.0])[None, None])
    >>> np.allclose(np.outer(col[0], row[0]), [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    True
    """
    if weight.shape[1] != 1:
        return None
    u, s, vt = np.linalg.svd(weight[:, 0].astype(np.float64))
    if np.any(s[:, 1:] > 1e-6 * s[:, :1]):
        return None
    return (u[:, :, 0] * s[:, :1]).astype(np.float32), vt[:, 0, :].astype(np.float32)


def choose_method(weight: np.ndarray, groups: int, out_hw, stride=(1, 1), dilation=(1, 1)) -> str:
    """The method for this work: see the module docstring.

    >>> choose_method(np.ones((16, 16, 3, 3), np.float32), 1, (8, 8))
    'gemm'
    >>> choose_method(np.ones((3, 1, 3, 3), np.float32), 3, (64, 64))
    'numpy'
    >>> choose_method(np.eye(25, dtype=np.float32)[None, None], 1, (4096, 4096))
    'fft'
    >>> choose_method(np.ones((1, 1, 301, 301), np.float32), 1, (2048, 2048))  # rank 1, but large
    'fft'
    >>> choose_method(np.ones((64, 64, 3, 3), np.float32), 1, (256, 256))
    'winograd'
    """
    c_out, c_per_group, kh, kw = weight.shape
    small = numpy_takes(c_out * out_hw[0] * out_hw[1] * c_per_group * kh * kw)
    if c_out // groups >= 8 and c_per_group * kh * kw >= 9 and small:
        return "gemm"
    if small:
        return "numpy"
    if winograd_takes(weight, groups, stride, dilation):
        return "winograd"
    direct = has_depthwise_kernel(weight, stride, dilation)
    fft = c_per_group == 1 and tuple(stride) == (1, 1)
    if (
        kh * kw >= (SEPARABLE_TAPS if direct else SEPARABLE_TAPS_DENSE)
        and min(kh, kw) > 1
        and rank_one_factors(weight) is not None
    ):
        return "fft" if fft and kh + kw >= SEPARABLE_SIDES_FFT else "separable"
    if kh * kw >= (FFT_TAPS if direct else FFT_TAPS_DENSE) and fft:
        return "fft"
    if direct and fft_spares_numba(c_out * out_hw[0] * out_hw[1], kh * kw):
        return "fft"
    return "numba"


def fft_spares_numba(values: int, taps: int) -> bool:
    """Whether a depthwise kernel of fewer than ``FFT_TAPS`` taps at stride 1 goes by FFT
    because loading Numba would cost more than the FFT's extra time on ``values`` outputs.

    Per output the FFT costs about what ``FFT_TAPS`` taps of the SIMD kernel cost, so it is
    slower by ``FFT_TAPS - taps`` taps; loading Numba costs ``NUMBA_LOAD_WORK`` taps once per
    process. The calls the caller declared (``runtime.repeated``) share that load, and nothing
    else counts: the same call takes the same method in a fresh process and deep inside a
    batch.

    >>> fft_spares_numba(3 * 4096 * 4096, 15 * 15), fft_spares_numba(3 * 8000 * 8000, 13 * 13)
    (True, False)
    >>> with runtime.repeated(2):
    ...     fft_spares_numba(3 * 4096 * 4096, 15 * 15)
    False
    """
    return values * max(0, FFT_TAPS - taps) * runtime.declared_calls() < NUMBA_LOAD_WORK


def numpy_takes(work: int) -> bool:
    """Whether ``work`` multiply-adds go to numpy or BLAS rather than Numba's kernels.

    Numpy takes tiny work (``NUMPY_WORK_TINY``) always, and other work while the work of one
    call times the calls the caller declared (``runtime.repeated``: the files of a batch)
    stays within ``NUMPY_WORK``, about what loading Numba costs. Nothing else counts, so the
    same call takes the same method, and gives the same bytes, in a fresh process and deep
    inside a batch.

    >>> numpy_takes(10_000_000)
    True
    >>> with runtime.repeated(1000):
    ...     numpy_takes(10_000_000), numpy_takes(1000)
    (False, True)
    """
    return work <= NUMPY_WORK_TINY or work * runtime.declared_calls() <= NUMPY_WORK


def has_depthwise_kernel(weight, stride, dilation) -> bool:
    """Whether the engine's depthwise SIMD kernel (``_jit._depthwise``: two output rows per
    pass) takes this work: one input channel per map, stride 1, no dilation, any size.

    >>> weight = np.ones((3, 1, 9, 9))
    >>> has_depthwise_kernel(weight, (1, 1), (1, 1)), has_depthwise_kernel(weight, (2, 2), (1, 1))
    (True, False)
    """
    return weight.shape[1] == 1 and tuple(stride) == (1, 1) == tuple(dilation)


def winograd_fits(weight, groups, stride, dilation) -> bool:
    """Whether ``_jit._winograd`` can take the layer: a 3x3 kernel at stride 1 without
    dilation, and with 16 lanes (AVX-512) at least 8 maps per group (its tile of maps).

    >>> winograd_fits(np.ones((8, 4, 3, 3)), 1, (1, 1), (1, 1))
    True
    >>> winograd_fits(np.ones((8, 4, 3, 3)), 1, (2, 2), (1, 1))
    False
    """
    from convcli.engine._jit import LANES

    return (
        weight.shape[2:] == (3, 3)
        and tuple(stride) == (1, 1) == tuple(dilation)
        and weight.shape[0] // groups >= (8 if LANES == 16 else 1)
    )


def winograd_takes(weight, groups, stride, dilation) -> bool:
    """Whether a layer goes by Winograd's F(2x2, 3x3) (``_jit._winograd``) rather than the
    dense SIMD kernel: one it fits (``winograd_fits``) with ``WINOGRAD_CHANNELS`` input
    channels and maps per group or more, where its 2.25x fewer multiply-adds outweigh the
    transforms of each 4x4 block of input and 4x4 block of products.

    >>> winograd_takes(np.ones((64, 64, 3, 3)), 1, (1, 1), (1, 1))
    True
    >>> winograd_takes(np.ones((64, 8, 3, 3)), 8, (1, 1), (1, 1))  # 8 channels a group
    False
    """
    return (
        weight.shape[1] >= WINOGRAD_CHANNELS
        and weight.shape[0] // groups >= WINOGRAD_CHANNELS
        and winograd_fits(weight, groups, stride, dilation)
    )


@np.errstate(
    over="ignore", invalid="ignore"
)  # float32 overflows to inf and NaN propagates, as in PyTorch
def correlate(
    image, weight, groups, pads, pad_mode, stride, dilation, out_hw, method=None
) -> np.ndarray:
    """Cross-correlate ``image`` (C_in, H, W, any real dtype) with ``weight`` band by band.

    Arguments are already checked and resolved by ``engine.conv2d``: ``weight`` is
    ``(C_out, C_in/groups, kh, kw)`` float32, ``pads`` explicit, ``out_hw`` from ``geometry``.
    Inside ``runtime.band_of(rows)`` the call is a band of a map of ``rows`` rows, and the
    method is the one the whole map takes.
    A depthwise kernel (one map per channel) runs channel by channel, so that every band is
    computed straight into its place in the output.
    """
    whole_hw = (runtime.map_rows() or out_hw[0], out_hw[1])  # a band: the whole map's method
    method = method or choose_method(weight, groups, whole_hw, stride, dilation)
    factors = None
    if method == "separable" or method == "numpy" and _passes_pay(weight, image.shape):
        factors = rank_one_factors(weight)  # one SVD per call
    if method == "separable" and factors is None:
        raise ValueError("the separable method needs depthwise kernels of rank 1")
    if method == "fft" and (weight.shape[1] != 1 or tuple(stride) != (1, 1)):
        raise ValueError("the fft method needs depthwise kernels at stride 1")
    if method == "winograd":
        if not winograd_fits(weight, groups, stride, dilation):
            raise ValueError(
                "the winograd method needs 3x3 kernels at stride 1 without dilation "
                "(and 8 or more maps per group with 16 lanes)"
            )
        return _winograd(image, weight, groups, pads, pad_mode, out_hw)
    out = np.empty((weight.shape[0],) + tuple(out_hw), np.float32)
    if method == "separable" and has_depthwise_kernel(weight, stride, dilation):
        # the two-pass kernel reads float32 (an 8-bit image in bands went through the dense
        # kernel, 5x slower): one copy, within engine.conv2d's memory check
        image = np.ascontiguousarray(image, dtype=np.float32)
    if (
        weight.shape[2:] == (1, 1)
        and tuple(stride) == (1, 1)
        and not any(pads)
        and method in ("gemm", "numba")
    ):
        _pointwise(image, weight, groups, out)
        return out
    if (
        (
            method == "numba"
            or method == "separable"
            and has_depthwise_kernel(weight, stride, dilation)
        )
        and image.dtype == np.float32
        and image.flags.c_contiguous
    ):  # no bands: the kernel pads as it goes
        from convcli.engine import _jit

        rowmap, colmap = padding_maps(image.shape[1:], pads, pad_mode)
        left = pads[2]
        if method == "numba":
            _jit.conv2d_padding(
                image,
                weight,
                rowmap,
                colmap,
                left,
                stride,
                dilation,
                groups,
                has_depthwise_kernel(weight, stride, dilation),
                out,
            )
        else:
            _jit.separable_padding(image, *factors, rowmap, colmap, left, out)
        return out
    if (
        weight.shape[1] == 1
        and weight.shape[0] == image.shape[0] == groups
        and image.shape[1] * image.shape[2] >= CHANNEL_BY_CHANNEL_PIXELS
    ):
        for channel in range(groups):
            one = slice(channel, channel + 1)
            _correlate_bands(
                image[one],
                weight[one],
                1,
                pads,
                pad_mode,
                stride,
                dilation,
                out[one],
                method,
                factors and (factors[0][one], factors[1][one]),
            )
    else:
        _correlate_bands(
            image, weight, groups, pads, pad_mode, stride, dilation, out, method, factors
        )
    return out


def _pointwise(image, weight, groups, out) -> None:
    """A 1x1 layer at stride 1 without padding: one matrix product per group, on the image as
    it is (measured: 64->64 at 256^2 6 ms, against 11 ms in the SIMD kernel and 10 ms
    unfolded).

    >>> out = np.empty((1, 1, 2), np.float32)
    >>> image = np.array([[[1, 2]], [[3, 4]]], np.float32)
    >>> _pointwise(image, np.array([[[[1]], [[10]]]], np.float32), 1, out)
    >>> out
    array([[[31., 42.]]], dtype=float32)
    """
    c_per_group, out_per_group = weight.shape[1], weight.shape[0] // groups
    pixels = image.reshape(image.shape[0], -1)
    for g in range(groups):
        np.matmul(
            weight[g * out_per_group : (g + 1) * out_per_group, :, 0, 0],
            pixels[g * c_per_group : (g + 1) * c_per_group].astype(np.float32, copy=False),
            out=out[g * out_per_group : (g + 1) * out_per_group].reshape(out_per_group, -1),
        )


def _winograd(image, weight, groups, pads, pad_mode, out_hw) -> np.ndarray:
    """The ``winograd`` method on the whole image, padding as it goes (one float32 copy of a
    non-float32 image); a band of a bigger map (``runtime.band_of``) starts its blocks of two
    rows where the whole map's start."""
    from convcli.engine import _jit

    image = np.ascontiguousarray(image, dtype=np.float32)
    rowmap, colmap = padding_maps(image.shape[1:], pads, pad_mode)
    out = np.empty((weight.shape[0],) + tuple(out_hw), np.float32)
    _jit.winograd_padding(
        image, weight, rowmap, colmap, pads[2], runtime.map_first_row() % 2, groups, out
    )
    return out


def _correlate_bands(
    image, weight, groups, pads, pad_mode, stride, dilation, out, method, factors=None
) -> None:
    c_out, c_per_group, kh, kw = weight.shape
    (stride_h, _), (dil_h, _) = stride, dilation
    h_out, w_out = out.shape[1:]
    width = image.shape[2] + pads[2] + pads[3]
    band_bytes = (
        NUMPY_BAND_BYTES if method == "numpy" and runtime.map_rows() is None else BAND_BYTES
    )
    rows_per_band = min(
        h_out, max(MIN_BAND_ROWS, band_bytes // (4 * width * image.shape[0] * stride_h))
    )
    if method == "gemm":  # bound the unfolded band too
        rows_per_band = max(
            1, min(rows_per_band, (16 << 20) // (4 * w_out * c_per_group * kh * kw))
        )
    if method == "fft":  # whole rows of tiles
        step = fft_tile(dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)[0]
        rows_per_band = min(h_out, step * max(1, rows_per_band // step))
    compute = (
        functools.partial(
            _separable, factors=factors, taps=_numpy_taps if method == "numpy" else _numba
        )
        if factors is not None
        else _COMPUTE[method]
    )
    band_rows = (rows_per_band - 1) * stride_h + dil_h * (kh - 1) + 1
    buffer = np.empty(image.shape[0] * band_rows * width, np.float32)

    def band_at(first: int, buffer: np.ndarray) -> tuple[int, np.ndarray]:
        """The last output row (exclusive) of the band from ``first`` and its padded input."""
        last = min(h_out, first + rows_per_band)
        stop = (last - 1) * stride_h + dil_h * (kh - 1) + 1
        return last, padded_band(image, first * stride_h, stop, pads, pad_mode, buffer)

    # one map, or all rows in one band: the band's rows of the output are contiguous
    contiguous = c_out == 1 or rows_per_band == h_out
    if method == "fft" and contiguous:
        _fft_bands(band_at, range(0, h_out, rows_per_band), weight, groups, dilation, out, buffer)
        return
    target = None if contiguous else np.empty(c_out * rows_per_band * w_out, np.float32)
    for first in range(0, h_out, rows_per_band):
        last, band = band_at(first, buffer)
        if target is None:
            compute(band, weight, groups, stride, dilation, out[:, first:last])
        else:
            rows = _view(target, (c_out, last - first, w_out))
            compute(band, weight, groups, stride, dilation, rows)
            out[:, first:last] = rows


def _view(flat: np.ndarray, shape) -> np.ndarray:
    """A C-contiguous ``shape`` view on the start of a flat buffer."""
    return flat[: int(np.prod(shape))].reshape(shape)


def _window(band: np.ndarray, m: int, n: int, stride, dilation, rows: int, cols: int) -> np.ndarray:
    """The input values tap (m, n) meets for ``rows`` x ``cols`` outputs: a strided view."""
    (sh, sw), (dh, dw) = stride, dilation
    return band[
        :, m * dh : m * dh + sh * (rows - 1) + 1 : sh, n * dw : n * dw + sw * (cols - 1) + 1 : sw
    ]


def _numpy_taps(band, weight, groups, stride, dilation, out) -> None:
    c_out, c_per_group, kh, kw = weight.shape
    out_per_group = c_out // groups
    rows, cols = out.shape[1:]
    out[:] = 0.0
    if c_per_group == 1:  # each output map reads one input channel; maps in chunks
        per_chunk = max(1, TAP_CHUNK_VALUES // max(1, rows * cols))
        product = np.empty((min(c_out, per_chunk), rows, cols), np.float32)
        for first in range(0, c_out, per_chunk):
            maps = slice(first, min(c_out, first + per_chunk))
            source = (
                band[maps]
                if out_per_group == 1
                else band[np.arange(maps.start, maps.stop) // out_per_group]
            )
            scratch = product[: maps.stop - maps.start]
            for m in range(kh):
                for n in range(kw):
                    np.multiply(
                        weight[maps, 0, m, n, None, None],
                        _window(source, m, n, stride, dilation, rows, cols),
                        out=scratch,
                    )
                    out[maps] += scratch
        return
    for g in range(groups):
        maps = slice(g * out_per_group, (g + 1) * out_per_group)
        inputs = band[g * c_per_group : (g + 1) * c_per_group]
        for m in range(kh):
            for n in range(kw):
                window = _window(inputs, m, n, stride, dilation, rows, cols)
                out[maps] += np.tensordot(weight[maps, :, m, n], window, axes=1)


def _gemm(band, weight, groups, stride, dilation, out) -> None:
    c_out, c_per_group, kh, kw = weight.shape
    out_per_group = c_out // groups
    rows, cols = out.shape[1:]
    unfolded = np.empty((c_per_group, kh, kw, rows, cols), np.float32)
    for g in range(groups):
        inputs = band[g * c_per_group : (g + 1) * c_per_group]
        for m in range(kh):
            for n in range(kw):
                unfolded[:, m, n] = _window(inputs, m, n, stride, dilation, rows, cols)
        maps = slice(g * out_per_group, (g + 1) * out_per_group)
        np.matmul(
            weight[maps].reshape(out_per_group, -1),
            unfolded.reshape(c_per_group * kh * kw, -1),
            out=out[maps].reshape(out_per_group, -1),
        )


def _numba(band, weight, groups, stride, dilation, out) -> None:
    from convcli.engine import _jit

    _jit.conv2d_valid(
        band, weight, out, stride, dilation, groups, has_depthwise_kernel(weight, stride, dilation)
    )


def _separable(band, weight, groups, stride, dilation, out, factors, taps) -> None:
    """Row pass with the row factors, then column pass with the column factors, each by
    ``taps`` (``_numba``, or ``_numpy_taps`` for the numpy method).

    >>> band = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    >>> out = np.empty((1, 2, 2), np.float32)
    >>> factors = rank_one_factors(np.ones((1, 1, 3, 3), np.float32))
    >>> _separable(band, None, 1, (1, 1), (1, 1), out, factors, _numpy_taps)
    >>> np.round(out)  # each output: the sum of its 3x3 window
    array([[[45., 54.],
            [81., 90.]]], dtype=float32)
    """
    column, row = factors
    (c_out, kh), kw = column.shape, row.shape[1]
    across = np.empty((c_out, band.shape[1], out.shape[2]), np.float32)
    taps(band, row.reshape(c_out, 1, 1, kw), groups, (1, stride[1]), (1, dilation[1]), across)
    taps(across, column.reshape(c_out, 1, kh, 1), c_out, (stride[0], 1), (dilation[0], 1), out)


def _passes_pay(weight: np.ndarray, image_shape) -> bool:
    """Whether the numpy method tries a depthwise kernel as two passes (``rank_one_factors``
    decides whether it can): kernels at least 2 taps high and wide, on channels large enough
    that the saved taps outweigh one SVD per kernel.

    >>> shape = (3, 512, 512)
    >>> _passes_pay(np.ones((3, 1, 3, 3)), shape), _passes_pay(np.ones((3, 1, 1, 3)), shape)
    (True, False)
    """
    return (
        weight.shape[1] == 1
        and min(weight.shape[2:]) > 1
        and image_shape[1] * image_shape[2] >= CHANNEL_BY_CHANNEL_PIXELS
    )


def fft_tile(kh: int, kw: int) -> tuple[int, int]:
    """Output rows per full tile and the tile's side, for a (dilated) ``kh`` x ``kw`` kernel.

    A tile of side T yields T - kh + 1 rows (and T - kw + 1 columns) of output.

    >>> fft_tile(15, 15)
    (370, 384)
    >>> fft_tile(201, 3)
    (600, 800)
    """
    import scipy.fft

    side = scipy.fft.next_fast_len(max(FFT_TILE, 4 * (max(kh, kw) - 1)), real=True)
    return side - kh + 1, side


def fft_spans(count: int, step: int, k: int) -> list[tuple[int, int, int]]:
    """The tiles along one axis of ``count`` outputs: (first output, outputs, tile length).

    Full tiles give ``step`` outputs; the last one is only as long as its outputs and the
    kernel's span ``k`` need, rounded up to a fast FFT length (no transform of a nearly
    empty full tile).

    >>> fft_spans(1000, 370, 15)
    [(0, 370, 384), (370, 370, 384), (740, 260, 288)]
    """
    import scipy.fft

    return [
        (
            first,
            min(step, count - first),
            scipy.fft.next_fast_len(min(step, count - first) + k - 1, real=True),
        )
        for first in range(0, count, step)
    ]


@functools.lru_cache(maxsize=8)
def _conjugate_spectra(taps: bytes, shape, sides) -> np.ndarray:
    """conj(FFT) of each kernel, zero-filled to ``sides``: multiplying by it correlates."""
    import scipy.fft

    kernels = np.frombuffer(taps, np.float32).reshape(shape)
    return np.conj(scipy.fft.rfft2(kernels, sides))


def _fft(band, weight, groups, stride, dilation, out) -> None:
    """Overlap-save: each tile's circular correlation is exact away from its far edges.

    Transforms are ``scipy.fft``'s (pocketfft, 3-5x faster than ``numpy.fft`` on these
    tiles here). A transform spreads a NaN or an infinity over its whole tile: bands
    holding one (or values large enough to overflow a sum) go through the SIMD kernels, so
    they stay where the windows that meet them are, as in PyTorch.
    """
    if fft_takes(band, weight):
        _fft_tiles(band, weight, groups, dilation, out, compute_threads())
    else:
        _numba(band, weight, groups, stride, dilation, out)


def fft_takes(band: np.ndarray, weight: np.ndarray) -> bool:
    """Whether every value of ``band`` and ``weight`` is finite and within
    ``FFT_SAFE_MAGNITUDE`` (see ``_fft``).

    >>> fft_takes(np.ones((1, 2, 2), np.float32), np.ones((1, 1, 1, 1), np.float32))
    True
    >>> fft_takes(np.array([[[1.0, np.nan]]], np.float32), np.ones((1, 1, 1, 1), np.float32))
    False
    """
    low, high = band.min(initial=0.0), band.max(initial=0.0)  # NaN propagates: False below
    return bool(-low <= FFT_SAFE_MAGNITUDE and high <= FFT_SAFE_MAGNITUDE >= np.abs(weight).max())


def _fft_bands(band_at, starts, weight, groups, dilation, out, buffer) -> None:
    """``_fft`` of every band (``band_at(first, buffer)``: its last row and padded input),
    the bands side by side on the cores, each thread padding its own: no serial copying
    between the tiles. Bands the FFT does not take go through the SIMD kernels afterwards,
    one at a time (Numba's threads are entered from one thread)."""
    threads = min(compute_threads(), len(starts))
    buffers = [buffer] + [np.empty_like(buffer) for _ in range(threads - 1)]

    def transform(first: int) -> int | None:
        own = buffers.pop()
        try:
            last, band = band_at(first, own)
            if not fft_takes(band, weight):
                return first
            _fft_tiles(band, weight, groups, dilation, out[:, first:last], 1)
            return None
        finally:
            buffers.append(own)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        declined = [first for first in pool.map(transform, starts) if first is not None]
    for first in declined:
        last, band = band_at(first, buffer)
        _numba(band, weight, groups, (1, 1), dilation, out[:, first:last])


def _fft_tiles(band, weight, groups, dilation, out, threads: int) -> None:
    """The FFT's tiles of ``band`` into ``out``, on up to ``threads`` threads."""
    import scipy.fft

    c_out, _, kh, kw = weight.shape
    (dh, dw), rows, cols = dilation, *out.shape[1:]
    taps = np.zeros((c_out, dh * (kh - 1) + 1, dw * (kw - 1) + 1), np.float32)
    taps[:, ::dh, ::dw] = weight[:, 0]
    step_h, side = fft_tile(*taps.shape[1:])
    out_per_group = c_out // groups

    def tile(where):
        o, (i, h, side_h), (j, w, side_w) = where
        piece = band[o // out_per_group, i : i + side_h, j : j + side_w]
        spectra = _conjugate_spectra(taps.tobytes(), taps.shape, (side_h, side_w))
        out[o, i : i + h, j : j + w] = scipy.fft.irfft2(
            scipy.fft.rfft2(piece, (side_h, side_w)) * spectra[o], (side_h, side_w)
        )[:h, :w]

    tiles = [
        (o, down, across)
        for o in range(c_out)
        for down in fft_spans(rows, step_h, taps.shape[1])
        for across in fft_spans(cols, side - taps.shape[2] + 1, taps.shape[2])
    ]
    if min(threads, len(tiles)) <= 1:
        for where in tiles:
            tile(where)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(threads, len(tiles))) as pool:
        for _ in pool.map(tile, tiles):
            pass


_COMPUTE = {"numpy": _numpy_taps, "gemm": _gemm, "fft": _fft, "numba": _numba}
