"""Public numeric operations on channels-first float32 arrays ``(C, H, W)``.

Each function validates its arguments, resolves padding and output sizes with ``geometry``,
pads, allocates, and hands contiguous float32 arrays to a kernel in ``_jit``.

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

from typing import Optional, Sequence

import numpy as np

from convcli import geometry
from convcli.errors import ParameterError, ShapeError
from convcli.geometry import PaddingSpec, Pair
from convcli.params import PAD_MODES


def _format_hw(hw: Sequence[int]) -> str:
    return "x".join(str(v) for v in hw)


def as_conv_weight(kernel: np.ndarray, channels: int, groups: int = 1) -> tuple[np.ndarray, int]:
    """Bring a 2-D, 3-D or 4-D kernel to PyTorch's ``(C_out, C_in/groups, kh, kw)``.

    - 2-D ``(kh, kw)`` filters every channel on its own: ``groups = C``, ``C_out = C``.
    - 3-D ``(C_in, kh, kw)`` sums over the channels into one map.
    - 4-D ``(C_out, C_in/groups, kh, kw)`` is used as is.

    Returns the 4-D weight and the groups to use.

    >>> w, g = as_conv_weight(np.ones((3, 3), np.float32), channels=3)
    >>> w.shape, g
    ((3, 1, 3, 3), 3)
    """
    kernel = np.asarray(kernel, dtype=np.float32)
    if kernel.ndim == 2:
        if groups != 1:
            raise ParameterError(
                "--groups applies to 4-D kernels; a 2-D kernel already filters each channel on its own"
            )
        return np.ascontiguousarray(np.broadcast_to(kernel, (channels, 1) + kernel.shape)), channels
    if kernel.ndim == 3:
        if groups != 1:
            raise ParameterError("--groups applies to 4-D kernels; a 3-D kernel sums over all channels")
        if kernel.shape[0] != channels:
            raise ShapeError(
                f"3-D kernel {_format_hw(kernel.shape)} expects {kernel.shape[0]} input channels, "
                f"the input has {channels}"
            )
        return np.ascontiguousarray(kernel[None]), 1
    if kernel.ndim == 4:
        c_out, c_per_group = kernel.shape[:2]
        if groups < 1 or channels % groups or c_out % groups:
            raise ParameterError(
                f"groups {groups} must divide both the input channels ({channels}) "
                f"and the kernel's output channels ({c_out})"
            )
        if c_per_group != channels // groups:
            raise ShapeError(
                f"4-D kernel {_format_hw(kernel.shape)} expects {c_per_group * groups} input channels "
                f"with groups={groups}, the input has {channels}"
            )
        return np.ascontiguousarray(kernel), groups
    raise ShapeError(f"kernel must be 2-D, 3-D or 4-D, got shape {_format_hw(kernel.shape)}")


def check_border(in_hw: Pair, pads: tuple[int, int, int, int], pad_mode: str) -> None:
    """Reject pads that a border mode cannot fill (PyTorch's limits).

    ``reflect`` needs pad < size (the mirror excludes the edge); ``circular`` needs pad <= size.
    """
    if pad_mode not in PAD_MODES:
        raise ParameterError(f"pad mode {pad_mode!r} is not one of {', '.join(PAD_MODES)}")
    for axis, size, (before, after) in (("rows", in_hw[0], pads[:2]), ("columns", in_hw[1], pads[2:])):
        widest = max(before, after)
        if pad_mode == "reflect" and widest >= size:
            raise ShapeError(
                f"reflect padding of {widest} needs more than {widest} input {axis}, the input has {size}"
            )
        if pad_mode == "circular" and widest > size:
            raise ShapeError(
                f"circular padding of {widest} needs at least {widest} input {axis}, the input has {size}"
            )


def pad_image(image: np.ndarray, pads: tuple[int, int, int, int], pad_mode: str = "zeros") -> np.ndarray:
    """Pad a ``(C, H, W)`` array by ``(top, bottom, left, right)`` with a PyTorch border mode.

    >>> pad_image(np.arange(4, dtype=np.float32).reshape(1, 1, 4), (0, 0, 2, 2), "reflect")[0, 0]
    array([2., 1., 0., 1., 2., 3., 2., 1.], dtype=float32)
    """
    top, bottom, left, right = pads
    check_border(image.shape[1:], pads, pad_mode)
    widths = ((0, 0), (top, bottom), (left, right))
    return np.ascontiguousarray(np.pad(image, widths, mode=PAD_MODES[pad_mode]), dtype=np.float32)


def conv2d(
    image: np.ndarray,
    kernel: np.ndarray,
    bias: Optional[Sequence[float]] = None,
    *,
    stride: Pair = (1, 1),
    padding: PaddingSpec = "same",
    dilation: Pair = (1, 1),
    groups: int = 1,
    pad_mode: str = "zeros",
    flip: bool = False,
) -> np.ndarray:
    """Cross-correlate ``image`` (C, H, W) with ``kernel``, as a CNN ``Conv2d`` layer does.

    ``y[o, i, j] = b[o] + sum_{c,m,n} x_pad[c, i*s_h + m*d_h, j*s_w + n*d_w] * w[o, c, m, n]``
    with padding from ``geometry.resolve_padding`` (``same`` is TF/Keras's rule) and border
    values from ``pad_mode``. ``flip`` rotates the kernel 180 degrees (true convolution).
    ``bias`` is one value or one per output channel. Returns ``(C_out, H_out, W_out)`` float32.

    >>> impulse = np.zeros((1, 3, 3), np.float32); impulse[0, 1, 1] = 1
    >>> k = np.arange(1, 10, dtype=np.float32).reshape(3, 3)
    >>> conv2d(impulse, k)[0]            # correlation returns the kernel rotated 180 degrees
    array([[9., 8., 7.],
           [6., 5., 4.],
           [3., 2., 1.]], dtype=float32)
    >>> conv2d(impulse, k, flip=True)[0].astype(int).tolist()
    [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ShapeError(f"image must be (C, H, W), got shape {_format_hw(image.shape)}")
    for name, pair in (("stride", stride), ("dilation", dilation)):
        if min(pair) < 1:
            raise ParameterError(f"{name} must be at least 1, got {pair}")
    weight, groups = as_conv_weight(kernel, image.shape[0], groups)
    if min(weight.shape) < 1:
        raise ShapeError(f"kernel must not be empty, got shape {_format_hw(weight.shape[2:])}")
    if flip:
        weight = np.ascontiguousarray(weight[:, :, ::-1, ::-1])
    in_hw, k_hw = image.shape[1:], weight.shape[2:]
    pads = geometry.resolve_padding(padding, in_hw, k_hw, stride, dilation)
    out_hw = geometry.conv2d_output_shape(in_hw, k_hw, stride, dilation, pads)
    if min(out_hw) < 1:
        padded = (in_hw[0] + pads[0] + pads[1], in_hw[1] + pads[2] + pads[3])
        reach = tuple(geometry.effective_kernel_size(k, d) for k, d in zip(k_hw, dilation))
        dilated = f" (dilated to {_format_hw(reach)})" if reach != tuple(k_hw) else ""
        raise ShapeError(
            f"kernel {_format_hw(k_hw)}{dilated} is larger than the padded input {_format_hw(padded)} "
            f"(input {_format_hw(in_hw)}, padding {padding})"
        )
    bias_values = _bias_vector(bias, weight.shape[0])
    xp = pad_image(image, pads, pad_mode)
    out = np.empty((weight.shape[0],) + out_hw, dtype=np.float32)
    from convcli import _jit

    _jit.conv2d_valid(xp, weight, out, stride, dilation, groups)
    if bias_values is not None:
        out += bias_values[:, None, None]
    return out


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
        raise ShapeError(f"--gray needs 1 or 3 channels, the input has {image.shape[0]}")
    weights = np.asarray(LUMA_WEIGHTS, dtype=np.float32)
    return np.tensordot(weights, image, axes=1)[None].astype(np.float32)


def _bias_vector(bias: Optional[Sequence[float]], channels: int) -> Optional[np.ndarray]:
    """One bias value for every channel, or exactly one per channel."""
    if bias is None:
        return None
    values = np.asarray(bias, dtype=np.float32).reshape(-1)
    if values.size == 1:
        return np.full(channels, values[0], dtype=np.float32)
    if values.size != channels:
        raise ShapeError(f"bias has {values.size} values, the output has {channels} channels (give 1 or {channels})")
    return values
