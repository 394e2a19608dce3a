"""Public numeric operations on channels-first float32 arrays ``(C, H, W)``.

Each function validates its arguments, resolves padding and output sizes with ``geometry``,
allocates, and hands the work to ``correlate`` (convolution, band by band), ``scatter``
(transposed convolution) or ``pooling``.

Numba is loaded only when the work of a call pays for it. A loop doing the same work many
times says so with ``repeated(calls)`` (from ``convcli.runtime``), as a batch of files does:
the method then depends on the call and the declaration, never on earlier calls.

>>> import numpy as np
>>> x = np.array([[1, 2, 0, 1, 3], [4, 1, 1, 0, 2], [0, 2, 3, 1, 1],
...               [1, 0, 2, 2, 0], [3, 1, 0, 1, 2]], dtype=np.float32)[None]
>>> k = np.array([[1, 0, -1]] * 3, dtype=np.float32)
>>> conv2d(x, k, padding="valid")[0]      # the seeds' vertical-edge example
array([[ 1.,  3., -2.],
       [-1.,  0.,  3.],
       [-1., -1.,  2.]], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from convcli import geometry, limits
from convcli.engine import pooling
from convcli.engine.correlation import correlate
from convcli.engine.scatter import conv_transpose
from convcli.errors import ParameterError, ShapeError
from convcli.geometry import PaddingSpec, Pair, shape_text, window_too_large
from convcli.layers import rules
from convcli.layers.values import PAD_MODES, not_one_of
from convcli.runtime import repeated  # noqa: F401  (public: see the module docstring)


def as_conv_weight(
    kernel: np.ndarray, channels: int, groups: int = 1, *, copy: bool = True, held: int = 0
) -> tuple[np.ndarray, int]:
    """Bring a 2-D, 3-D or 4-D kernel to PyTorch's ``(C_out, C_in/groups, kh, kw)``.

    - 2-D ``(kh, kw)`` filters every channel on its own: ``groups = C``, ``C_out = C``.
    - 3-D ``(C_in, kh, kw)`` sums over the channels into one map.
    - 4-D ``(C_out, C_in/groups, kh, kw)`` is used as is.

    Returns the 4-D weight and the groups to use. ``copy=False`` returns a view (a 2-D kernel
    broadcast to every channel takes no memory): enough for shapes, and the engine lays a view
    out in memory when it runs, checked against the budget beside the ``held`` bytes of its
    input (``limits.check_memory``).

    >>> w, g = as_conv_weight(np.ones((3, 3), np.float32), channels=3)
    >>> w.shape, g
    ((3, 1, 3, 3), 3)
    """
    kernel = _kernel_array(kernel)
    if kernel.ndim == 2:
        if groups != 1:
            raise ParameterError(
                "groups applies to 4-D kernels; "
                "a 2-D kernel already filters each channel on its own",
                names=("groups",),
            )
        weight = np.broadcast_to(kernel, (channels, 1) + kernel.shape)
        return (_laid_out(weight, "conv2d", held) if copy else weight), channels
    if kernel.ndim == 3:
        if groups != 1:
            raise ParameterError(
                "groups applies to 4-D kernels; a 3-D kernel sums over all channels",
                names=("groups",),
            )
        if kernel.shape[0] != channels:
            raise ShapeError(
                f"3-D kernel {shape_text(kernel.shape)} expects {kernel.shape[0]} input channels, "
                f"the input has {channels}"
            )
        return (_laid_out(kernel[None], "conv2d", held) if copy else kernel[None]), 1
    if kernel.ndim == 4:
        c_out, c_per_group = kernel.shape[:2]
        rules.groups_divide(groups, channels, c_out, "the kernel's output channels")
        if c_per_group != channels // groups:
            raise ShapeError(
                f"4-D kernel {shape_text(kernel.shape)} expects {c_per_group * groups} "
                f"input channels with groups={groups}, the input has {channels}"
            )
        return (_laid_out(kernel, "conv2d", held) if copy else kernel), groups
    raise ShapeError(f"kernel must be 2-D, 3-D or 4-D, got shape {shape_text(kernel.shape)}")


def _laid_out(weight: np.ndarray, operation: str, held: int) -> np.ndarray:
    """``weight`` as a C-contiguous array; a copy (a kernel broadcast to every channel) is
    checked against the memory budget first."""
    if not weight.flags.c_contiguous:
        limits.check_arrays(operation, held=held, kernel_for_every_channel=weight.shape)
    return np.ascontiguousarray(weight)


def check_border(in_hw: Pair, pads: tuple[int, int, int, int], pad_mode: str) -> None:
    """Reject an unknown border mode, or pads it cannot fill (``geometry.border_shortfall``)."""
    if pad_mode not in PAD_MODES:
        raise ParameterError(not_one_of("pad mode", pad_mode, PAD_MODES))
    shortfall = geometry.border_shortfall(in_hw, pads, pad_mode)
    if shortfall:
        raise ShapeError(shortfall)


def conv2d(
    image: np.ndarray,
    kernel: np.ndarray,
    bias: Sequence[float] | None = None,
    *,
    stride: Pair = (1, 1),
    padding: PaddingSpec = "same",
    dilation: Pair = (1, 1),
    groups: int = 1,
    pad_mode: str = "zeros",
    flip: bool = False,
    method: str | None = None,
) -> np.ndarray:
    """Cross-correlate ``image`` (C, H, W) with ``kernel``, as a CNN ``Conv2d`` layer does.

    ``y[o, i, j] = b[o] + sum_{c,m,n} x_pad[c, i*s_h + m*d_h, j*s_w + n*d_w] * w[o, c, m, n]``
    with padding from ``geometry.resolve_padding`` (``same`` is TF/Keras's rule) and border
    values from ``pad_mode``. ``flip`` rotates the kernel 180 degrees (true convolution).
    ``bias`` is one value or one per output channel. Returns ``(C_out, H_out, W_out)`` float32.
    ``method`` forces one of ``correlate``'s methods (tests, benchmarks); by default the
    fastest for the work is chosen.

    >>> impulse = np.zeros((1, 3, 3), np.float32); impulse[0, 1, 1] = 1
    >>> k = np.arange(1, 10, dtype=np.float32).reshape(3, 3)
    >>> conv2d(impulse, k)[0]            # correlation returns the kernel rotated 180 degrees
    array([[9., 8., 7.],
           [6., 5., 4.],
           [3., 2., 1.]], dtype=float32)
    >>> conv2d(impulse, k, flip=True)[0].astype(int).tolist()
    [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    """
    image = _check_image(image, as_float32=False)
    _check_at_least_one(stride=stride, dilation=dilation)
    weight, groups = as_conv_weight(kernel, image.shape[0], groups, held=image.nbytes)
    weight = _flipped(weight) if flip else weight
    in_hw, k_hw = image.shape[1:], weight.shape[2:]
    pads = geometry.resolve_padding(padding, in_hw, k_hw, stride, dilation)
    out_hw = geometry.conv2d_output_shape(in_hw, k_hw, stride, dilation, pads)
    if min(out_hw) < 1:
        raise ShapeError(window_too_large("kernel", in_hw, k_hw, dilation, pads, padding))
    # at least k_eff rows of padded input; at most one float32 copy of an 8-bit input
    band_rows = geometry.effective_kernel_size(k_hw[0], dilation[0])
    band = (image.shape[0], band_rows, in_hw[1] + pads[2] + pads[3])
    converted = {} if image.dtype == np.float32 else {"input_as_float32": image.shape}
    limits.check_arrays(
        "conv2d",
        held=image.nbytes + weight.nbytes,
        output=(weight.shape[0], *out_hw),
        padded_input_band=band,
        **converted,
    )
    bias_values = _bias_vector(bias, weight.shape[0])
    check_border(in_hw, pads, pad_mode)
    out = correlate(image, weight, groups, pads, pad_mode, stride, dilation, out_hw, method)
    if bias_values is not None:
        out += bias_values[:, None, None]
    return out


def as_transposed_weight(
    kernel: np.ndarray, channels: int, groups: int = 1, *, copy: bool = True, held: int = 0
) -> tuple[np.ndarray, int]:
    """Bring a kernel to PyTorch's transposed layout ``(C_in, C_out/groups, kh, kw)``.

    - 2-D ``(kh, kw)`` filters every channel on its own: ``groups = C``, ``C_out = C``.
    - 3-D ``(C_in, kh, kw)`` sums the channels into one map, as in ``conv2d``.
    - 4-D ``(C_in, C_out/groups, kh, kw)`` is used as is.

    ``copy`` and ``held`` as in ``as_conv_weight``.

    >>> w, g = as_transposed_weight(np.ones((3, 2, 2), np.float32), channels=3)
    >>> w.shape, g
    ((3, 1, 2, 2), 1)
    """
    kernel = _kernel_array(kernel)
    if kernel.ndim in (2, 3):
        weight, groups = as_conv_weight(
            kernel, channels, groups, copy=False
        )  # (C, 1, ...) or (1, C, ...)
        weight = weight.reshape((channels, 1) + weight.shape[2:])
        return (_laid_out(weight, "transposed conv2d", held) if copy else weight), groups
    if kernel.ndim != 4:
        raise ShapeError(f"kernel must be 2-D, 3-D or 4-D, got shape {shape_text(kernel.shape)}")
    if kernel.shape[0] != channels:
        raise ShapeError(
            f"4-D transposed kernel {shape_text(kernel.shape)} (C_in, C_out/groups, kh, kw) "
            f"expects {kernel.shape[0]} input channels, the input has {channels}"
        )
    rules.groups_divide(groups, channels)
    return (_laid_out(kernel, "transposed conv2d", held) if copy else kernel), groups


def conv_transpose2d(
    image: np.ndarray,
    kernel: np.ndarray,
    bias: Sequence[float] | None = None,
    *,
    stride: Pair = (1, 1),
    padding: str | Pair = (0, 0),
    output_padding: Pair = (0, 0),
    dilation: Pair = (1, 1),
    groups: int = 1,
    flip: bool = False,
    method: str | None = None,
) -> np.ndarray:
    """Transposed convolution of ``image`` (C_in, H, W), as PyTorch ``conv_transpose2d``.

    The adjoint of ``conv2d`` with the same kernel array: each input pixel scatters
    ``x[c, i, j] * w[c, o, m, n]`` onto ``(i*s_h + m*d_h, j*s_w + n*d_w)`` of a full output
    ``(H-1)*s + d*(k-1) + 1`` long; ``padding`` (p_h, p_w) crops that on both sides and
    ``output_padding`` appends rows/columns at the bottom/right (bias only where nothing
    lands), so ``H_out = (H-1)*s - 2p + d*(k-1) + output_padding + 1``. ``padding="same"`` is
    Keras ``Conv2DTranspose``: ``H_out = H*s``, aligned by ``geometry.transposed_same_crop``.
    Kernels: see ``as_transposed_weight``. ``flip`` rotates the kernel 180 degrees.
    ``method`` forces one of ``scatter``'s methods (tests, benchmarks).

    >>> x = np.array([[[1, 2], [3, 4]]], np.float32)
    >>> conv_transpose2d(x, np.ones((2, 2), np.float32), stride=(2, 2))[0]   # each pixel -> 2x2
    array([[1., 1., 2., 2.],
           [1., 1., 2., 2.],
           [3., 3., 4., 4.],
           [3., 3., 4., 4.]], dtype=float32)
    """
    image = _check_image(image, what="transposed conv2d")
    _check_at_least_one(stride=stride, dilation=dilation)
    weight, groups = as_transposed_weight(kernel, image.shape[0], groups, held=image.nbytes)
    weight = _flipped(weight) if flip else weight
    crop, out_hw = transposed_plan(
        image.shape[1:], weight.shape[2:], stride, padding, output_padding, dilation
    )
    c_out = weight.shape[1] * groups
    bias_values = _bias_vector(bias, c_out)
    limits.check_arrays(
        "transposed conv2d", held=image.nbytes + weight.nbytes, output=(c_out, *out_hw)
    )
    out = conv_transpose(image, weight, groups, stride, dilation, crop, out_hw, method)
    if bias_values is not None:
        out += bias_values[:, None, None]
    return out


def transposed_plan(
    in_hw: Pair,
    k_hw: Pair,
    stride: Pair,
    padding: str | Pair | tuple,
    output_padding: Pair,
    dilation: Pair,
) -> tuple[Pair, Pair]:
    """Check a transposed convolution's padding rules; return the crop (top, left) of the full
    output and the output (H, W). ``conv_transpose2d`` and ``explain``'s by-hand work use it.

    >>> transposed_plan((3, 3), (3, 3), (2, 2), (1, 1), (1, 1), (1, 1))
    ((1, 1), (6, 6))
    >>> transposed_plan((3, 3), (3, 3), (2, 2), "same", (0, 0), (1, 1))    # Keras: input x stride
    ((0, 0), (6, 6))
    """
    padding = rules.cropped_padding(padding, "transposed convolution")
    rules.output_padding(output_padding, stride, dilation, padding)
    if padding == "same":
        axes = zip(in_hw, k_hw, stride, dilation)
        crop = tuple(geometry.transposed_same_crop(*axis)[0] for axis in axes)
        out_hw = (in_hw[0] * stride[0], in_hw[1] * stride[1])
    else:
        crop = padding
        axes = zip(in_hw, k_hw, stride, dilation, padding, output_padding)
        out_hw = tuple(geometry.transposed_output_size(*axis) for axis in axes)
        if min(out_hw) < 1:
            raise ShapeError(
                f"padding {shape_text(padding)} crops away the whole transposed output "
                f"(size {shape_text(out_hw)} from input {shape_text(in_hw)}, "
                f"kernel {shape_text(k_hw)})"
            )
    return crop, out_hw


def _kernel_array(kernel) -> np.ndarray:
    kernel = np.asarray(kernel, dtype=np.float32)
    if kernel.size == 0:
        raise ShapeError(f"kernel must not be empty, got shape {shape_text(kernel.shape)}")
    return kernel


def _flipped(weight: np.ndarray) -> np.ndarray:
    """The kernel rotated 180 degrees (true convolution)."""
    return np.ascontiguousarray(weight[:, :, ::-1, ::-1])


def _check_image(
    image: np.ndarray, as_float32: bool = True, what: str = "an operation"
) -> np.ndarray:
    """``image`` as a C-contiguous float32 (C, H, W) array (a copy checked against the memory
    budget, for ``what``), or of any real dtype as given."""
    image = np.asarray(image)
    if image.dtype.kind not in "biuf":
        raise ShapeError(f"image must hold real numbers, got dtype {image.dtype}")
    if image.ndim != 3:
        raise ShapeError(f"image must be (C, H, W), got shape {shape_text(image.shape)}")
    if as_float32 and not (image.dtype == np.float32 and image.flags.c_contiguous):
        limits.check_arrays(what, held=image.nbytes, input_as_float32=image.shape)
        image = np.ascontiguousarray(image, dtype=np.float32)
    return image


def _check_at_least_one(**pairs: Pair) -> None:
    for name, pair in pairs.items():
        if min(pair) < 1:
            raise ParameterError(f"{name} must be at least 1, got {pair}")


def _pool_window(
    image: np.ndarray,
    size: Pair,
    stride: Pair | None,
    padding: PaddingSpec,
    dilation: Pair,
    ceil_mode: bool,
) -> tuple[np.ndarray, Pair, tuple[int, int, int, int], Pair]:
    """Check a pooling call; return the image, the stride, the pads and the output (H, W)."""
    image = _check_image(image, what="pooling")
    return (image, *pool_plan(image.shape[1:], size, stride, padding, dilation, ceil_mode))


def pool_plan(
    in_hw: Pair,
    size: Pair,
    stride: Pair | None,
    padding: PaddingSpec,
    dilation: Pair,
    ceil_mode: bool,
) -> tuple[Pair, tuple[int, int, int, int], Pair]:
    """Check a pooling window on an ``in_hw`` input; return the stride (``size`` if None), the
    pads (top, bottom, left, right) and the output (H, W). The pooling functions and
    ``pipeline.bands`` use it.

    >>> pool_plan((5, 5), (3, 3), (2, 2), "same", (1, 1), False)
    ((2, 2), (1, 1, 1, 1), (3, 3))
    """
    stride = size if stride is None else stride
    _check_at_least_one(size=size, stride=stride, dilation=dilation)
    rules.pool_padding(padding, size, ceil_mode)
    pads = geometry.resolve_padding(padding, in_hw, size, stride, dilation)
    out_hw = tuple(
        geometry.pool_output_size(n, k, s, d, before, after, ceil_mode)
        for n, k, s, d, (before, after) in zip(in_hw, size, stride, dilation, (pads[:2], pads[2:]))
    )
    if min(out_hw) < 1:
        raise ShapeError(window_too_large("pooling window", in_hw, size, dilation, pads, padding))
    return stride, pads, out_hw


def counts_pad_cells(padding: PaddingSpec, count_include_pad: bool) -> bool:
    """Whether average pooling divides by pad cells too: PyTorch's ``count_include_pad`` for
    counts, never with ``same`` (Keras).

    >>> counts_pad_cells((1, 1, 1, 1), True), counts_pad_cells("same", True)
    (True, False)
    """
    return count_include_pad and padding != "same"


def max_pool2d(
    image: np.ndarray,
    size: Pair = (2, 2),
    stride: Pair | None = None,
    padding: PaddingSpec = "valid",
    dilation: Pair = (1, 1),
    ceil_mode: bool = False,
    return_indices: bool = False,
    method: str | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Max of each window of every channel of ``image`` (C, H, W), as PyTorch ``max_pool2d``.

    ``stride`` defaults to ``size``. Explicit ``(top, bottom, left, right)`` padding and
    ``ceil_mode`` follow PyTorch (each side at most half the window; a last window may not
    start in the bottom/right padding); ``same`` is Keras ``MaxPooling2D`` (output
    ``ceil(H/s)``, TF's split). Pad cells never win; ties go to the first cell in row-major
    order; NaN propagates. ``return_indices`` adds the int64 flat index ``r*W + q`` of each
    maximum in its unpadded input plane, as PyTorch does. ``method`` forces one of
    ``pooling``'s methods (tests, benchmarks); by default the work decides.

    >>> x = np.array([[1, 3, 2, 0], [4, 6, 1, 2], [0, 2, 5, 3], [1, 2, 2, 4]], np.float32)[None]
    >>> out, indices = max_pool2d(x, return_indices=True)     # the seeds' example
    >>> out[0].tolist(), indices[0].tolist()       # the tied 2s: row 0 wins over row 1
    ([[6.0, 2.0], [2.0, 5.0]], [[5, 2], [9, 10]])
    """
    image, stride, pads, out_hw = _pool_window(image, size, stride, padding, dilation, ceil_mode)
    if return_indices:
        limits.check_arrays(
            "max pooling",
            itemsize=12,
            held=image.nbytes,
            output_and_indices=(image.shape[0], *out_hw),
        )
    else:
        limits.check_arrays("max pooling", held=image.nbytes, output=(image.shape[0], *out_hw))
    out = np.empty((image.shape[0],) + out_hw, dtype=np.float32)
    indices = np.empty(out.shape, dtype=np.int64) if return_indices else None
    pooling.max_pool(image, out, indices, size, stride, dilation, pads, method)
    return (out, indices) if return_indices else out


def avg_pool2d(
    image: np.ndarray,
    size: Pair = (2, 2),
    stride: Pair | None = None,
    padding: PaddingSpec = "valid",
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    method: str | None = None,
) -> np.ndarray:
    """Mean of each window of every channel of ``image`` (C, H, W), as PyTorch ``avg_pool2d``.

    Windows as in ``max_pool2d`` (no dilation). With explicit padding the divisor follows
    PyTorch: pad cells count when ``count_include_pad`` (its default), cells beyond the
    padding (ceil mode) never do. With ``same`` (Keras ``AveragePooling2D``) pad cells never
    count, whatever ``count_include_pad`` says. ``method`` as in ``max_pool2d``.

    >>> x = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3)
    >>> avg_pool2d(x, padding="same")[0].tolist()               # Keras: (3+6)/2, not /4
    [[3.0, 4.5], [7.5, 9.0]]
    >>> avg_pool2d(x, (3, 3), (2, 2), (1, 1, 1, 1), count_include_pad=False)[0].tolist()
    [[3.0, 4.0], [6.0, 7.0]]
    """
    image, stride, pads, out_hw = _pool_window(image, size, stride, padding, (1, 1), ceil_mode)
    limits.check_arrays("average pooling", held=image.nbytes, output=(image.shape[0], *out_hw))
    out = np.empty((image.shape[0],) + out_hw, dtype=np.float32)
    pooling.avg_pool(
        image, out, size, stride, pads, counts_pad_cells(padding, count_include_pad), method
    )
    return out


#: Global pooling modes and the reduction each applies to a whole channel plane.
GLOBAL_POOL_MODES = ("avg", "max")


def global_pool(image: np.ndarray, mode: str = "avg") -> np.ndarray:
    """One value per channel of ``image`` (C, H, W): its mean (summed in float64) or its max.

    As PyTorch ``adaptive_avg_pool2d(x, 1)`` / ``adaptive_max_pool2d(x, 1)``; NaN propagates.

    >>> global_pool(np.arange(8, dtype=np.float32).reshape(2, 2, 2), "avg").tolist()
    [1.5, 5.5]
    """
    image = _check_image(image, what="global pooling")
    if mode not in GLOBAL_POOL_MODES:
        raise ParameterError(not_one_of("global pooling mode", mode, GLOBAL_POOL_MODES))
    if mode == "max":
        return image.max(axis=(1, 2))
    return image.mean(axis=(1, 2), dtype=np.float64).astype(np.float32)


def max_unpool2d(image: np.ndarray, indices: np.ndarray, output_hw: Pair) -> np.ndarray:
    """Put every value of ``image`` (C, H, W) back at its flat index, as PyTorch ``max_unpool2d``.

    ``indices`` (C, H, W) are flat positions ``r*W_out + q`` in an ``output_hw`` plane, as
    ``max_pool2d(..., return_indices=True)`` records them; every other cell is 0. Sizes:
    ``geometry.unpool_output_shape``.

    >>> image = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    >>> values, where = max_pool2d(image, return_indices=True)
    >>> max_unpool2d(values, where, (4, 4))[0]
    array([[ 0.,  0.,  0.,  0.],
           [ 0.,  5.,  0.,  7.],
           [ 0.,  0.,  0.,  0.],
           [ 0., 13.,  0., 15.]], dtype=float32)
    """
    image = _check_image(image, what="max unpooling")
    indices = np.asarray(indices)
    if indices.shape != image.shape:
        raise ShapeError(
            f"indices of shape {shape_text(indices.shape)} do not match the values "
            f"{shape_text(image.shape)} (channels x rows x columns)"
        )
    if indices.dtype.kind not in "iu":
        raise ParameterError(f"indices must be integers, got dtype {indices.dtype}")
    _check_at_least_one(output_hw=output_hw)
    plane = output_hw[0] * output_hw[1]
    if indices.size and (indices.min() < 0 or indices.max() >= plane):
        bad = indices.min() if indices.min() < 0 else indices.max()
        raise ShapeError(
            f"index {bad} lies outside the {shape_text(output_hw)} output plane (0 to {plane - 1})"
        )
    channels = image.shape[0]
    limits.check_arrays(
        "max unpooling", held=image.nbytes + indices.nbytes, output=(channels, *output_hw)
    )
    out = np.zeros((channels, plane), dtype=np.float32)
    out[np.arange(channels)[:, None], indices.reshape(channels, -1)] = image.reshape(channels, -1)
    return out.reshape((channels,) + tuple(output_hw))


#: ITU-R 601-2 luma weights, as Pillow's RGB -> L conversion (but without rounding).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def luma(image: np.ndarray) -> np.ndarray:
    """One luma channel from a (C, H, W) image: RGB is weighted, one channel is kept as is.

    >>> luma(np.array([[[100.0]], [[100.0]], [[100.0]]], np.float32)).tolist()
    [[[100.0]]]
    """
    if image.shape[0] == 1:
        return image
    if image.shape[0] != 3:
        raise ShapeError(
            f"gray needs 1 or 3 channels, the input has {image.shape[0]}", names=("gray",)
        )
    limits.check_arrays(
        "gray", held=image.nbytes, input_as_float32=image.shape, output=(1, *image.shape[1:])
    )
    weights = np.asarray(LUMA_WEIGHTS, dtype=np.float32)
    return np.tensordot(weights, image, axes=1)[None].astype(np.float32, copy=False)


def _bias_vector(bias: Sequence[float] | None, channels: int) -> np.ndarray | None:
    """One bias value for every channel, or exactly one per channel."""
    if bias is None:
        return None
    values = np.asarray(bias, dtype=np.float32).reshape(-1)
    if values.size == 1:
        return np.full(channels, values[0], dtype=np.float32)
    if values.size != channels:
        raise ShapeError(
            f"bias has {values.size} values, the output has {channels} channels "
            f"(give 1 or {channels})"
        )
    return values
