"""Shape arithmetic for convolution and pooling: pure functions, ints in, ints out.

This is the one place where output sizes, padding and receptive fields are computed; the
engine, the CLI checks and ``convcli explain`` all call it. Sizes are per axis (apply to rows
and to columns independently); a padding is a ``(before, after)`` pair, and a 2-D padding is
``(top, bottom, left, right)``.

Conventions: ``k_eff = d*(k-1) + 1`` is the dilated ("effective") kernel size.

>>> conv_output_size(5, 3)                 # the seeds' 5x5 image, 3x3 kernel, valid
3
>>> resolve_padding("same", (6, 6), (3, 3), (2, 2), (1, 1))   # TF: the odd pixel bottom/right
(0, 1, 0, 1)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from convcli.errors import ParameterError

#: A padding specification: a named rule or explicit (top, bottom, left, right) counts.
PaddingSpec = str | tuple[int, int, int, int]
Pair = tuple[int, int]

PADDING_RULES = ("valid", "same", "full")


def effective_kernel_size(kernel: int, dilation: int = 1) -> int:
    """Size covered by a dilated kernel: ``d*(k-1) + 1`` (Dumoulin & Visin, Rel. 15).

    >>> effective_kernel_size(3, 2)
    5
    """
    return dilation * (kernel - 1) + 1


def conv_output_size(
    size: int,
    kernel: int,
    stride: int = 1,
    dilation: int = 1,
    pad_before: int = 0,
    pad_after: int = 0,
) -> int:
    """Output length of a convolution: ``floor((i + p_b + p_a - d*(k-1) - 1) / s) + 1``.

    PyTorch ``Conv2d`` rule, with asymmetric padding allowed. A result below 1 means the
    (dilated) kernel does not fit in the padded input; callers turn that into an error.

    >>> conv_output_size(7, 3, stride=2, dilation=2, pad_before=1, pad_after=1)
    3
    >>> conv_output_size(224, 7, stride=2, pad_before=3, pad_after=3)   # ResNet stem
    112
    """
    return (size + pad_before + pad_after - effective_kernel_size(kernel, dilation)) // stride + 1


def same_padding(size: int, kernel: int, stride: int = 1, dilation: int = 1) -> Pair:
    """TensorFlow/Keras ``SAME`` padding ``(before, after)``: out = ceil(i/s), odd pixel after.

    ``total = max((ceil(i/s) - 1)*s + k_eff - i, 0)``, ``before = total // 2``.

    >>> same_padding(6, 3, stride=2)     # TF pads (0, 1), not PyTorch's symmetric 1
    (0, 1)
    >>> same_padding(5, 3, stride=2)
    (1, 1)
    >>> same_padding(6, 4)               # even kernel: the extra pixel goes bottom/right
    (1, 2)
    >>> same_padding(6, 3, dilation=2)
    (2, 2)
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + effective_kernel_size(kernel, dilation) - size, 0)
    return total // 2, total - total // 2


def full_padding(kernel: int, dilation: int = 1) -> Pair:
    """``full`` padding: ``d*(k-1)`` on each side, so every partial overlap is computed.

    >>> full_padding(3), full_padding(3, dilation=2)
    ((2, 2), (4, 4))
    """
    pad = effective_kernel_size(kernel, dilation) - 1
    return pad, pad


def resolve_padding(
    padding: PaddingSpec,
    in_hw: Pair,
    kernel_hw: Pair,
    stride_hw: Pair = (1, 1),
    dilation_hw: Pair = (1, 1),
) -> tuple[int, int, int, int]:
    """Turn a padding spec into explicit ``(top, bottom, left, right)`` counts.

    ``valid`` is no padding, ``same`` the TF/Keras rule per axis, ``full`` ``d*(k-1)`` per
    side; an explicit tuple is returned as is.

    >>> resolve_padding("valid", (5, 5), (3, 3))
    (0, 0, 0, 0)
    >>> resolve_padding("same", (5, 8), (2, 3))        # 2x3 kernel, stride 1
    (0, 1, 1, 1)
    >>> resolve_padding("full", (5, 5), (3, 1))
    (2, 2, 0, 0)
    >>> resolve_padding((1, 2, 3, 4), (5, 5), (3, 3))
    (1, 2, 3, 4)
    """
    if isinstance(padding, tuple):
        return padding
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        rows = same_padding(in_hw[0], kernel_hw[0], stride_hw[0], dilation_hw[0])
        cols = same_padding(in_hw[1], kernel_hw[1], stride_hw[1], dilation_hw[1])
    elif padding == "full":
        rows = full_padding(kernel_hw[0], dilation_hw[0])
        cols = full_padding(kernel_hw[1], dilation_hw[1])
    else:
        raise ParameterError(
            f"padding {padding!r} is not one of {', '.join(PADDING_RULES)} or counts"
        )
    return rows + cols


def conv2d_output_shape(
    in_hw: Pair,
    kernel_hw: Pair,
    stride_hw: Pair,
    dilation_hw: Pair,
    pads: tuple[int, int, int, int],
) -> Pair:
    """``(H_out, W_out)`` of a 2-D convolution with explicit pads ``(top, bottom, left, right)``.

    >>> conv2d_output_shape((6, 6), (3, 3), (2, 2), (1, 1), (0, 1, 0, 1))
    (3, 3)
    """
    top, bottom, left, right = pads
    return (
        conv_output_size(in_hw[0], kernel_hw[0], stride_hw[0], dilation_hw[0], top, bottom),
        conv_output_size(in_hw[1], kernel_hw[1], stride_hw[1], dilation_hw[1], left, right),
    )


def transposed_output_size(
    size: int,
    kernel: int,
    stride: int = 1,
    dilation: int = 1,
    padding: int = 0,
    output_padding: int = 0,
) -> int:
    """PyTorch ``ConvTranspose2d``: ``(i-1)*s - 2p + d*(k-1) + output_padding + 1``.

    >>> [transposed_output_size(5, 3, s, d, p, op)
    ...  for s, p, op, d in [(2, 1, 1, 1), (2, 0, 0, 1), (1, 0, 0, 2), (3, 1, 2, 1), (2, 1, 1, 2)]]
    [10, 11, 9, 15, 12]
    """
    return (
        (size - 1) * stride - 2 * padding + effective_kernel_size(kernel, dilation) + output_padding
    )


def transposed_same_crop(size: int, kernel: int, stride: int = 1, dilation: int = 1) -> Pair:
    """Keras ``Conv2DTranspose(padding='same')``: crop ``(before, after)`` of the full output.

    The output is ``i*s`` long and aligned as the adjoint of a TF ``SAME`` convolution on an
    ``i*s`` input, so ``before`` is that convolution's top/left padding. ``after`` may be
    negative: the output then extends past the last product (filled with the bias).

    >>> transposed_same_crop(5, 3, 2)     # full is 11 long: keep [0, 10)
    (0, 1)
    >>> transposed_same_crop(5, 4, 2)     # full is 12 long: keep [1, 11)
    (1, 1)
    >>> transposed_same_crop(5, 1, 3)     # full is 13 long, output 15: two extra at the end
    (0, -2)
    """
    before = same_padding(size * stride, kernel, stride, dilation)[0]
    full = (size - 1) * stride + effective_kernel_size(kernel, dilation)
    return before, full - size * stride - before


def pool_output_size(
    size: int,
    kernel: int,
    stride: int,
    dilation: int = 1,
    pad_before: int = 0,
    pad_after: int = 0,
    ceil_mode: bool = False,
) -> int:
    """PyTorch pooling output length (``Pool.h: pooling_output_shape_pad_lr``).

    With ``ceil_mode`` the division rounds up, but a last window that would start in the
    right padding is dropped.

    >>> pool_output_size(5, 2, 2, pad_before=1, pad_after=1, ceil_mode=True)
    3
    >>> pool_output_size(6, 3, 2), pool_output_size(6, 3, 2, ceil_mode=True)
    (2, 3)
    """
    span = size + pad_before + pad_after - effective_kernel_size(kernel, dilation)
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad_before:
        out -= 1
    return out


def unpool_output_size(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    """PyTorch ``max_unpool2d`` default output length: ``(i-1)*s - 2p + k``.

    >>> unpool_output_size(2, 2, 2)
    4
    """
    return (size - 1) * stride - 2 * padding + kernel


def unpool_output_shape(
    in_hw: Pair,
    kernel_hw: Pair,
    stride_hw: Pair,
    padding_hw: Pair = (0, 0),
    requested: Pair | None = None,
) -> Pair:
    """``(H, W)`` of PyTorch ``max_unpool2d``: the default, or ``requested`` if within ``s - 1``
    of it.

    PyTorch (``functional._unpool_output_size``) accepts ``default - s < size < default + s``:
    every input size that pools to ``in_hw``.

    >>> unpool_output_shape((2, 2), (2, 2), (2, 2))
    (4, 4)
    >>> unpool_output_shape((2, 2), (2, 2), (2, 2), requested=(5, 4))     # 5x4 pooled to 2x2
    (5, 4)
    """
    default = tuple(map(unpool_output_size, in_hw, kernel_hw, stride_hw, padding_hw))
    if requested is None:
        return default
    low = [d - s + 1 for d, s in zip(default, stride_hw)]
    high = [d + s - 1 for d, s in zip(default, stride_hw)]
    if not all(lo <= r <= hi for lo, r, hi in zip(low, requested, high)):
        raise ParameterError(
            f"output size {requested[0]}x{requested[1]} cannot come from unpooling "
            f"{in_hw[0]}x{in_hw[1]} "
            f"(window {kernel_hw[0]}x{kernel_hw[1]}, stride {stride_hw[0]}x{stride_hw[1]}, "
            f"padding {padding_hw[0]}x{padding_hw[1]}): rows {low[0]} to {high[0]}, "
            f"columns {low[1]} to {high[1]}"
        )
    return tuple(requested)


class ReceptiveField(NamedTuple):
    """Receptive field of one output unit along one axis, in input pixels.

    ``size``: pixels seen; ``jump``: input pixels between adjacent outputs (effective
    stride); ``start``: centre of the first output unit, in input pixel indices (0 is the
    centre of the first input pixel; negative values lie in the padding).
    """

    size: int = 1
    jump: int = 1
    start: float = 0.0


def receptive_field_step(
    field: ReceptiveField, kernel: int, stride: int = 1, dilation: int = 1, pad_before: int = 0
) -> ReceptiveField:
    """Receptive field after one more conv or pool layer (Araujo et al., Distill 2019).

    Forward form: ``r += (k_eff-1)*j``, ``start += ((k_eff-1)/2 - p_before)*j``, ``j *= s``.

    >>> rf = ReceptiveField()
    >>> for k, s, d, p in [(3, 1, 1, 1), (3, 2, 1, 1), (2, 2, 1, 0), (3, 1, 2, 2)]:
    ...     rf = receptive_field_step(rf, k, s, d, p)
    >>> rf        # the Distill worked trace: r=23, S=4, centre of unit 0 at pixel 1
    ReceptiveField(size=23, jump=4, start=1.0)
    """
    k_eff = effective_kernel_size(kernel, dilation)
    return ReceptiveField(
        size=field.size + (k_eff - 1) * field.jump,
        jump=field.jump * stride,
        start=field.start + ((k_eff - 1) / 2 - pad_before) * field.jump,
    )


def unread_after_last_window(
    size: int,
    kernel: int,
    stride: int = 1,
    dilation: int = 1,
    pad_before: int = 0,
    pad_after: int = 0,
) -> int:
    """Padded-input pixels after the last window, read by none: ``(i + p_b + p_a - k_eff) % s``.

    The stride "does not fit" when this exceeds ``pad_after``: real rows or columns are
    silently dropped (floor mode; meaningful when at least one window fits).

    >>> unread_after_last_window(8, 3, 2)                 # windows at 0, 2, 4: row 7 is never read
    1
    >>> unread_after_last_window(224, 7, 2, 1, 3, 3)      # ResNet stem: only a padding row
    1
    """
    return (size + pad_before + pad_after - effective_kernel_size(kernel, dilation)) % stride


class Window(NamedTuple):
    """One layer's window along one axis, as receptive-field arithmetic sees it.

    A convolution or pool reads input ``o*stride - pad_before + m*dilation`` (``m < kernel``)
    for output ``o``. A transposed convolution (``transposed=True``; also max-unpooling, whose
    value may land anywhere in its window) writes input ``i`` to output
    ``i*stride - pad_before + m*dilation``: ``pad_before`` is then the crop at the start.
    Shape-preserving layers (activations, 1x1 convolutions at stride 1) are ``Window()``.
    """

    kernel: int = 1
    stride: int = 1
    dilation: int = 1
    pad_before: int = 0
    transposed: bool = False


def input_span(windows: Sequence[Window], unit: int = 0) -> tuple[int, int] | None:
    """First and last input pixel that output ``unit`` of a stack of layers depends on.

    Distill's ``u_0``, ``v_0`` (pixel indices; negative or past the end: in the padding),
    walking back from the last layer: a convolution maps outputs ``[lo, hi]`` to inputs
    ``[lo*s - p, hi*s - p + k_eff - 1]``; a transposed layer to the first and last input
    whose products land in ``[lo, hi]``. None when the unit receives no product at all (a
    transposed kernel smaller than its stride). Dilated kernels count their whole hull.

    >>> input_span([Window(3, 2, 1, 1), Window(3, 2, 1, 1)], unit=1)   # two 3x3 s2 p1 convs
    (1, 7)
    >>> [input_span([Window(3, 2, 1, 1, transposed=True)], u) for u in range(3)]
    [(0, 0), (0, 1), (1, 1)]
    >>> input_span([Window(1, 2, transposed=True)], unit=1) is None    # odd outputs get nothing
    True
    """
    lo, hi = unit, unit
    for window in reversed(windows):
        if not window.transposed:
            reach = effective_kernel_size(window.kernel, window.dilation) - 1
            lo, hi = (
                lo * window.stride - window.pad_before,
                hi * window.stride - window.pad_before + reach,
            )
            continue
        firsts, lasts = [], []
        for m in range(window.kernel):
            shift = m * window.dilation - window.pad_before  # input i lands on output i*s + shift
            first = lo + (shift - lo) % window.stride
            last = hi - (hi - shift) % window.stride
            if first <= hi:
                firsts.append((first - shift) // window.stride)
                lasts.append((last - shift) // window.stride)
        if not firsts:
            return None
        lo, hi = min(firsts), max(lasts)
    return lo, hi


#: Output units examined for the largest receptive field of a stack with transposed layers.
MAX_PHASES = 4096


def receptive_field(windows: Sequence[Window]) -> ReceptiveField:
    """Receptive field of a stack of layers along one axis, transposed layers included.

    ``size``: the most input pixels one output unit spans (``input_span``; behind transposed
    layers it depends on the unit, with period ``prod(transposed strides)``, so that many
    units are examined, at most ``MAX_PHASES``); ``jump``: ``prod(strides) / prod(transposed
    strides)`` input pixels between adjacent outputs (a ``Fraction`` when the stack upsamples
    past the input); ``start``: centre of unit 0's span (None if it receives nothing).
    Without transposed layers this is ``receptive_field_step`` applied layer by layer.

    >>> receptive_field([Window(3, 1, 1, 1), Window(3, 2, 1, 1), Window(2, 2), Window(3, 1, 2, 2)])
    ReceptiveField(size=23, jump=4, start=1.0)
    >>> receptive_field([Window(2, 2), Window(2, 2, transposed=True)])     # pool 2, then up 2
    ReceptiveField(size=2, jump=1, start=0.5)
    >>> receptive_field([Window(3, 2, 1, 1, transposed=True)])             # up 2 from the input
    ReceptiveField(size=2, jump=Fraction(1, 2), start=0.0)
    """
    down = math.prod(w.stride for w in windows if not w.transposed)
    up = math.prod(w.stride for w in windows if w.transposed)
    spans = [input_span(windows, unit) for unit in range(min(up, MAX_PHASES))]
    size = max((hi - lo + 1 for lo, hi in filter(None, spans)), default=0)
    start = None if spans[0] is None else (spans[0][0] + spans[0][1]) / 2
    if down % up == 0:
        return ReceptiveField(size, down // up, start)
    from fractions import Fraction  # upsampling past the input: a jump below one pixel

    return ReceptiveField(size, Fraction(down, up), start)


def shape_text(shape: Sequence[int] | None) -> str:
    """``5x5``, ``3x7x7``; ``-`` for no shape.

    >>> shape_text((3, 7, 7)), shape_text(None)
    ('3x7x7', '-')
    """
    return "-" if shape is None else "x".join(str(v) for v in shape)


def padding_text(padding: PaddingSpec) -> str:
    """A padding spec as the user writes it: ``same``, ``3``, ``1,2`` or ``0,1,0,1``.

    >>> padding_text((1, 1, 2, 2)), padding_text((0, 1, 0, 1)), padding_text("same")
    ('1,2', '0,1,0,1', 'same')
    """
    if isinstance(padding, str):
        return padding
    if len(set(padding)) == 1:
        return str(padding[0])
    if padding[0] == padding[1] and padding[2] == padding[3]:
        return f"{padding[0]},{padding[2]}"
    return ",".join(str(p) for p in padding)


def window_too_large(
    what: str,
    in_hw: Pair,
    kernel_hw: Pair,
    dilation_hw: Pair,
    pads: tuple[int, int, int, int],
    padding: PaddingSpec,
) -> str:
    """The message for a (dilated) kernel or window that does not fit its padded input.

    >>> window_too_large("kernel", (5, 5), (3, 3), (3, 3), (0, 0, 0, 0), "valid")
    'kernel 3x3 (dilated to 7x7) is larger than the padded input 5x5 (input 5x5, padding valid)'
    """
    padded = (in_hw[0] + pads[0] + pads[1], in_hw[1] + pads[2] + pads[3])
    reach = tuple(effective_kernel_size(k, d) for k, d in zip(kernel_hw, dilation_hw))
    dilated = f" (dilated to {shape_text(reach)})" if reach != tuple(kernel_hw) else ""
    return (
        f"{what} {shape_text(kernel_hw)}{dilated} is larger than the padded input "
        f"{shape_text(padded)} (input {shape_text(in_hw)}, padding {padding_text(padding)})"
    )


def border_shortfall(in_hw: Pair, pads: tuple[int, int, int, int], pad_mode: str) -> str | None:
    """Why ``pad_mode`` cannot fill ``pads`` around an ``in_hw`` input, or None (PyTorch's limits).

    ``reflect`` needs pad < size (the mirror excludes the edge); ``circular`` needs pad <= size;
    ``zeros``, ``replicate`` and ``symmetric`` (not in PyTorch; the mirrored image repeats, as
    in numpy, SciPy and OpenCV) fill any width.

    >>> border_shortfall((9, 4), (1, 1, 4, 4), "reflect")
    'reflect padding of 4 needs more than 4 input columns, the input has 4'
    >>> border_shortfall((9, 4), (1, 1, 4, 4), "circular") is None
    True
    """
    for axis, size, (before, after) in (
        ("rows", in_hw[0], pads[:2]),
        ("columns", in_hw[1], pads[2:]),
    ):
        widest = max(before, after)
        if pad_mode == "reflect" and widest >= size:
            return (
                f"reflect padding of {widest} needs more than {widest} input {axis}, "
                f"the input has {size}"
            )
        if pad_mode == "circular" and widest > size:
            return (
                f"circular padding of {widest} needs at least {widest} input {axis}, "
                f"the input has {size}"
            )
    return None
