"""How a transposed convolution is computed: as a convolution of the spread-out input, or by
a matrix product and a scatter-add (col2im) when the work is small.

``engine.conv_transpose2d`` checks the arguments and resolves the output size and the crop
(padding, ``same`` alignment), then calls ``conv_transpose``. Input pixel (i, j) through tap
(m, n) lands on full-output cell (i*s_h + m*d_h, j*s_w + n*d_w); ``out`` cell (y, z) is full
cell (y + crop_top, z + crop_left), and full cells outside ``out`` are dropped.

- ``spread``: the input spread out by the stride (s - 1 zeros between pixels), correlated
  with the kernel rotated 180 degrees and its channel axes swapped (``correlation``, which
  chooses its method by the work: numpy for small work, no Numba import; ``numpy`` and
  ``numba`` force one). Most of its multiply-adds meet zeros (3 in 4 at stride 2), and it
  still wins in the SIMD kernel: 16->16 at 256^2, 4x4, stride 2: 17 ms against 40 ms by
  ``gemm`` (PyTorch: 9 ms); a 3-channel depthwise one at 1024^2, 20 ms (PyTorch: 157 ms).
  The spread input is about as large as the output. At dilation 1 and a stride above 1 it
  is never made: each phase of the stride (the output cells ``r + s*q`` of each axis) is
  the input correlated with the taps that land there (``_phases``), none meeting a zero.
- ``gemm``: per group and band of input rows, one BLAS product gives every tap's
  contribution, ``(C_out/g * kh * kw, C_in/g) @ (C_in/g, rows * W)``; each tap's plane is
  then added onto its strided place in the output. Chosen when the work is too small to be
  worth loading Numba (``correlation.numpy_takes``) for 8 or more input channels per group
  or input planes of 128^2 and more (``GEMM_CHANNELS``, ``GEMM_PIXELS``).

A band of a big image's map (``runtime.band_of`` with the whole input's rows) takes the method
the whole input would, and ``gemm`` keeps the whole input's bands of rows, so that each output
value adds its products in the same order and the band has the whole map's bytes.

>>> x = np.array([[[1, 2], [3, 4]]], np.float32)
>>> ones = np.ones((1, 1, 2, 2), np.float32)
>>> conv_transpose(x, ones, 1, (2, 2), (1, 1), (0, 0), (4, 4), "gemm")[0]
array([[1., 1., 2., 2.],
       [1., 1., 2., 2.],
       [3., 3., 4., 4.],
       [3., 3., 4., 4.]], dtype=float32)
"""

from __future__ import annotations

import numpy as np

from convcli import limits, runtime
from convcli.engine.correlation import numpy_takes

#: Bytes of tap planes per band of input rows in the ``gemm`` method.
BAND_BYTES = 16 << 20
#: Input channels per group, or pixels per input plane, from which the ``gemm`` method is
#: chosen for small work; below both, one correlation of all channels costs less than a loop
#: over groups (measured, 3-channel depthwise, 2x2 stride 2: 512^2 17 ms spread, 10 ms gemm;
#: 128^2 0.9 and 0.4 ms; 64 channels of 32^2, 3x3: 2.1 and 2.5 ms).
GEMM_CHANNELS, GEMM_PIXELS = 8, 1 << 14


def conv_transpose(
    image, weight, groups, stride, dilation, crop, out_hw, method: str | None = None
) -> np.ndarray:
    """Transposed convolution of ``image`` (C_in, H, W) float32 with ``weight``
    (C_in, C_out/g, kh, kw).

    Arguments are checked and resolved by ``engine.conv_transpose2d``; returns
    ``(C_out, *out_hw)`` float32 without bias.
    """
    in_per_group = weight.shape[0] // groups
    whole_rows, first_row = runtime.map_input() or (image.shape[1], 0)  # a band: the whole's
    method = method or choose_method(weight, groups, (whole_rows, image.shape[2]))
    if method in ("spread", "numpy", "numba"):
        return _spread(
            image,
            weight,
            groups,
            stride,
            dilation,
            crop,
            out_hw,
            None if method == "spread" else method,
        )
    if method != "gemm":
        raise ValueError(f"unknown transposed-convolution method {method!r}")
    out_shape = (weight.shape[1] * groups,) + tuple(out_hw)
    out = np.zeros(out_shape, np.float32)
    for g in range(groups):
        inputs = slice(g * in_per_group, (g + 1) * in_per_group)
        outputs = slice(g * weight.shape[1], (g + 1) * weight.shape[1])
        _scatter_group(
            image[inputs], weight[inputs], stride, dilation, crop, out[outputs], first_row
        )
    return out


def choose_method(weight, groups: int, in_hw) -> str:
    """``gemm`` for work numpy takes with 8 or more input channels per group or input planes
    of 128^2 and more, else ``spread``; ``weight`` (C_in, C_out/g, kh, kw), ``in_hw`` the
    input's size.

    >>> ones = np.ones((3, 1, 2, 2), np.float32)
    >>> choose_method(ones, 3, (64, 64)), choose_method(ones, 3, (512, 512))
    ('spread', 'gemm')
    """
    plane = in_hw[0] * in_hw[1]
    small = numpy_takes(plane * weight.size)
    planes = weight.shape[0] // groups >= GEMM_CHANNELS or plane >= GEMM_PIXELS
    return "gemm" if small and planes else "spread"


def swapped_weight(weight, groups: int) -> np.ndarray:
    """``weight`` (C_in, C_out/g, kh, kw) as the (C_out, C_in/g, kh, kw) kernels of a
    correlation: its channel axes swapped per group, the taps as they land (not rotated).

    >>> swapped_weight(np.arange(8, dtype=np.float32).reshape(2, 2, 1, 2), 1)[:, :, 0].tolist()
    [[[0.0, 1.0], [4.0, 5.0]], [[2.0, 3.0], [6.0, 7.0]]]
    """
    in_per_group, out_per_group, kh, kw = weight.shape[0] // groups, *weight.shape[1:]
    return (
        weight.reshape(groups, in_per_group, out_per_group, kh, kw)
        .transpose(0, 2, 1, 3, 4)
        .reshape(-1, in_per_group, kh, kw)
    )


def spread_weight(weight, groups: int) -> np.ndarray:
    """The kernel that ``spread`` correlates the spread-out input with: ``swapped_weight``
    rotated 180 degrees.

    >>> spread_weight(np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2), 2)[:, 0].tolist()
    [[[3.0, 2.0], [1.0, 0.0]], [[7.0, 6.0], [5.0, 4.0]]]
    """
    return np.ascontiguousarray(swapped_weight(weight, groups)[..., ::-1, ::-1])


def spread_method(weight, groups: int, stride, dilation, crop, out_hw) -> str:
    """The correlation method the ``spread`` path takes for a whole output of ``out_hw``: the
    spread-out input's; by phases (dilation 1, a stride above 1), the method of the phase of
    output cell (0, 0), which every phase then takes. One method for the whole map, so that a
    band of it (``runtime.band_of``), whose phases start elsewhere, takes it too.

    >>> spread_method(np.ones((3, 1, 2, 2), np.float32), 3, (2, 2), (1, 1), (0, 0), (64, 64))
    'numpy'
    """
    from convcli.engine.correlation import choose_method

    if tuple(dilation) != (1, 1) or tuple(stride) == (1, 1):
        method = choose_method(spread_weight(weight, groups), groups, out_hw, (1, 1), dilation)
    else:
        first = [c % s for c, s in zip(crop, stride)]
        taps = swapped_weight(weight, groups)[:, :, first[0] :: stride[0], first[1] :: stride[1]]
        counts = [max(1, -(-n // s)) for n, s in zip(out_hw, stride)]
        method = choose_method(np.ascontiguousarray(taps[..., ::-1, ::-1]), groups, counts)
    return "numba" if method == "winograd" else method  # Winograd's blocks: correlations only


def _spread(image, weight, groups, stride, dilation, crop, out_hw, method=None) -> np.ndarray:
    """The same as the correlation of the input spread out by the stride (s - 1 zeros between
    its pixels) with the kernel rotated 180 degrees and its channel axes swapped, which the
    engine's dense kernel computes; at dilation 1 and a stride above 1, one correlation per
    phase of the stride (``_phases``), which skips the zeros."""
    from convcli.engine.correlation import correlate

    c_in, height, width = image.shape
    kernels = swapped_weight(weight, groups)
    kh, kw = kernels.shape[2:]
    spread_hw = [(n - 1) * s + 1 for n, s in zip((height, width), stride)]
    limits.check_arrays(
        "transposed conv2d",
        held=image.nbytes + weight.nbytes,
        input_spread_by_the_stride=(c_in, *spread_hw),
        output=(len(kernels), *out_hw),
    )
    whole_hw = (runtime.map_rows() or out_hw[0], out_hw[1])  # a band: the whole map's
    method = method or spread_method(weight, groups, stride, dilation, crop, whole_hw)
    if tuple(dilation) == (1, 1) and tuple(stride) != (1, 1):
        return _phases(image, kernels, groups, stride, crop, out_hw, method)
    flipped = np.ascontiguousarray(kernels[..., ::-1, ::-1])
    before = [d * (k - 1) - c for d, k, c in zip(dilation, (kh, kw), crop)]  # negative: cropped
    after = [
        o - n - b + d * (k - 1)
        for o, n, b, d, k in zip(out_hw, spread_hw, before, dilation, (kh, kw))
    ]
    spread = np.zeros((c_in, *spread_hw), np.float32)
    spread[:, :: stride[0], :: stride[1]] = image
    spread = np.ascontiguousarray(
        spread[
            :,
            max(0, -before[0]) : spread_hw[0] - max(0, -after[0]),
            max(0, -before[1]) : spread_hw[1] - max(0, -after[1]),
        ]
    )
    pads = (max(0, before[0]), max(0, after[0]), max(0, before[1]), max(0, after[1]))
    return correlate(
        spread, flipped, groups, pads, "zeros", (1, 1), dilation, tuple(out_hw), method
    )


def _phases(image, kernels, groups, stride, crop, out_hw, method=None) -> np.ndarray:
    """The transposed convolution at dilation 1 as one correlation per phase of the stride:
    output cells ``(r_h + s_h*q, r_w + s_w*q')`` take only the taps ``a + s*t`` of one residue
    ``a`` of each axis, so each phase is the input correlated with those taps (reversed),
    and no multiply-add meets a spread-out zero (1/(s_h*s_w) of the spread input's).
    ``kernels`` is (C_out, C_in/g, kh, kw), the taps as they land (not rotated).

    Along an axis of n inputs and k taps, output ``y = s*q + r`` is full-output cell
    ``y + c`` (``c`` the crop) = ``s*(q + e) + a``; its taps are ``m = a + s*t`` for the
    ``T`` values of t with ``m < k``, on inputs ``q + e - t``: a correlation of the input,
    padded ``T - 1 - e`` before and ``Q + e - n`` after (negative: cropped), with the ``T``
    taps reversed, for the ``Q`` outputs of the phase.
    """
    from convcli.engine.correlation import correlate, rank_one_factors

    out = np.empty((kernels.shape[0],) + tuple(out_hw), np.float32)
    axes = [
        [_phase_of_axis(r, c, s, k, n, size) for r in range(s)]
        for c, s, k, n, size in zip(crop, stride, kernels.shape[2:], image.shape[1:], out_hw)
    ]
    for r_h, (a_h, taps_h, before_h, after_h, count_h) in enumerate(axes[0]):
        for r_w, (a_w, taps_w, before_w, after_w, count_w) in enumerate(axes[1]):
            rows = slice(max(0, -before_h), image.shape[1] - max(0, -after_h))
            cols = slice(max(0, -before_w), image.shape[2] - max(0, -after_w))
            inputs = image[:, rows, cols]
            phase = out[:, r_h :: stride[0], r_w :: stride[1]]
            if min(taps_h, taps_w, count_h, count_w, *inputs.shape[1:]) <= 0:
                phase[...] = 0.0  # no tap or no input lands on this phase
                continue
            taps = np.ascontiguousarray(
                kernels[:, :, a_h :: stride[0], a_w :: stride[1]][:, :, ::-1, ::-1]
            )
            taken = method  # a phase whose taps are not of rank 1 cannot go as two passes
            if method == "separable" and rank_one_factors(taps) is None:
                taken = "numba"
            pads = (max(0, before_h), max(0, after_h), max(0, before_w), max(0, after_w))
            phase[...] = correlate(
                np.ascontiguousarray(inputs),
                taps,
                groups,
                pads,
                "zeros",
                (1, 1),
                (1, 1),
                (count_h, count_w),
                taken,
            )
    return out


def _phase_of_axis(r, crop, stride, taps, inputs, size):
    """For the outputs ``r, r + stride, ...`` below ``size`` of one axis (``_phases``): the
    residue ``a`` of their taps, their number ``T``, the padding before and after the input
    and the number of outputs ``Q``.

    Outputs 1, 3, ..., 9 of 5 inputs through 4 taps at stride 2, padding 1: taps 0 and 2,
    on inputs q + 1 and q (one zero after the last input):

    >>> _phase_of_axis(1, 1, 2, 4, 5, 10)
    (0, 2, 0, 1, 5)
    """
    a, e = (r + crop) % stride, (r + crop) // stride
    count = len(range(r, size, stride))
    return (
        a,
        len(range(a, taps, stride)),
        len(range(a, taps, stride)) - 1 - e,
        count + e - inputs,
        count,
    )


def _scatter_group(image, weight, stride, dilation, crop, out, first_row: int = 0) -> None:
    """Add one group's products onto ``out``, per band of input rows; ``image`` starts at row
    ``first_row`` of the whole input, whose bands of rows (and so the order in which each
    output value adds its products) a band keeps."""
    c_in, c_out, kh, kw = weight.shape
    height, width = image.shape[1:]
    (s_h, s_w), (d_h, d_w) = stride, dilation
    taps = np.ascontiguousarray(weight.reshape(c_in, -1).T)  # (C_out * kh * kw, C_in)
    rows_per_band = max(1, BAND_BYTES // (4 * taps.shape[0] * width))
    columns = [tap_span(n * d_w - crop[1], s_w, width, out.shape[2]) for n in range(kw)]
    for start in range(-(first_row % rows_per_band), height, rows_per_band):
        first = max(0, start)
        rows = min(height, start + rows_per_band) - first
        planes = (taps @ image[:, first : first + rows].reshape(c_in, -1)).reshape(
            c_out, kh, kw, rows, width
        )
        for m in range(kh):
            i0, i1, y0 = tap_span((first * s_h) + m * d_h - crop[0], s_h, rows, out.shape[1])
            for n, (j0, j1, z0) in enumerate(columns):
                if i1 > i0 and j1 > j0:
                    out[
                        :,
                        y0 : y0 + s_h * (i1 - i0 - 1) + 1 : s_h,
                        z0 : z0 + s_w * (j1 - j0 - 1) + 1 : s_w,
                    ] += planes[:, m, n, i0:i1, j0:j1]


def tap_span(offset: int, stride: int, count: int, size: int) -> tuple[int, int, int]:
    """Inputs ``i0:i1`` of ``count`` that land inside ``[0, size)`` at ``i*stride + offset``, and
    where ``i0`` lands.

    >>> tap_span(-3, 2, 5, 4)     # inputs land on -3, -1, 1, 3, 5: inputs 2 and 3 hit 1 and 3
    (2, 4, 1)
    """
    first = max(0, -(offset // stride))
    stop = max(first, min(count, (size - 1 - offset) // stride + 1))
    return first, stop, first * stride + offset
