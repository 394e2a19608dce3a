"""Shape traces: one row per layer with its output, formula, parameters, multiply-adds and field."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from convcli import geometry
from convcli.errors import ParameterError
from convcli.explain.language import CONVENTIONS, SCHEMA_ID, Pads, Shape, Step, step_text
from convcli.explain.text import hw_text
from convcli.geometry import (
    PaddingSpec,
    Pair,
    ReceptiveField,
    Window,
    padding_text,
    shape_text,
    window_too_large,
)
from convcli.layers import rules

# Traces


@dataclass(frozen=True)
class Row:
    """One traced layer. ``receptive_field`` is (rows, columns) for the stack up to here."""

    number: int
    label: str
    text: str
    kind: str
    input: Shape
    output: Shape | None = None
    kernel: Pair | None = None
    stride: Pair | None = None
    dilation: Pair | None = None
    groups: int | None = None
    bias: bool | None = None
    padding: Pads | None = None
    output_padding: Pair | None = None
    arithmetic: tuple[str, ...] = ()
    params: int = 0
    macs: int = 0
    receptive_field: tuple[ReceptiveField, ReceptiveField] | None = None
    warnings: tuple[str, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict:
        rf = self.receptive_field
        return {
            "step": self.number,
            "label": self.label,
            "text": self.text,
            "kind": self.kind,
            "input": list(self.input),
            "output": _list(self.output),
            "kernel": _list(self.kernel),
            "stride": _list(self.stride),
            "dilation": _list(self.dilation),
            "groups": self.groups,
            "bias": self.bias,
            "padding": _list(self.padding),
            "output_padding": _list(self.output_padding),
            "arithmetic": list(self.arithmetic),
            "params": self.params,
            "macs": self.macs,
            "receptive_field": None
            if rf is None
            else {
                "size": [axis.size for axis in rf],
                "jump": [_number(axis.jump) for axis in rf],
                "start": [axis.start for axis in rf],
            },
            "warnings": list(self.warnings),
            "error": self.error,
        }


def _list(values: Sequence[int] | None) -> list[int] | None:
    return None if values is None else list(values)


def _number(value: Any) -> Any:
    return value if isinstance(value, int) else float(value)


@dataclass(frozen=True)
class Trace:
    """A traced stack: the input, then one ``Row`` per layer (up to the first error), and the
    layers' ``Window``s per axis (rows, columns) that its receptive fields come from."""

    input: Shape
    rows: tuple[Row, ...]
    source: str = ""
    windows: tuple[tuple[Window, ...], tuple[Window, ...]] = ((), ())

    @property
    def error(self) -> str | None:
        """The failing step's message, with its number and text, or None."""
        bad = next((row for row in self.rows if row.error), None)
        return None if bad is None else f"step {bad.label} {bad.text!r}: {bad.error}"

    @property
    def output(self) -> Shape | None:
        return self.input if not self.rows else self.rows[-1].output

    @property
    def params(self) -> int:
        return sum(row.params for row in self.rows)

    @property
    def macs(self) -> int:
        return sum(row.macs for row in self.rows)

    def to_dict(self) -> dict:
        """The JSON form (``docs/explain-schema.json``)."""
        fields = [row.to_dict()["receptive_field"] for row in self.rows if row.receptive_field]
        return {
            "schema": SCHEMA_ID,
            "input": {"shape": list(self.input), "source": self.source},
            "conventions": dict(CONVENTIONS),
            "steps": [row.to_dict() for row in self.rows],
            "total": {
                "params": self.params,
                "macs": self.macs,
                "output": _list(self.output),
                "receptive_field": fields[-1] if fields else None,
            },
            "error": self.error,
        }


def trace(input_shape: Shape, steps: Sequence[Step], source: str = "") -> Trace:
    """Trace ``steps`` from an ``(H, W, C)`` input; stops at the first step that cannot run.

    >>> from convcli.explain.language import parse_steps
    >>> distill = parse_steps(
    ...     ["conv 1 k3 s1 p1", "conv 1 k3 s2 p1", "maxpool k2 s2", "conv 1 k3 d2 p2"]
    ... )
    >>> [(row.output[0], row.receptive_field[0]) for row in trace((32, 32, 1), distill).rows]
    ... # doctest: +NORMALIZE_WHITESPACE
    [(32, ReceptiveField(size=3, jump=1, start=0.0)),
     (16, ReceptiveField(size=5, jump=2, start=0.0)),
     (8, ReceptiveField(size=7, jump=4, start=1.0)),
     (8, ReceptiveField(size=23, jump=4, start=1.0))]
    >>> print(trace((5, 5, 1), parse_steps(["conv 8 k7 valid"])).error)
    ... # doctest: +NORMALIZE_WHITESPACE
    step 1 'conv 8 k7 valid': kernel 7x7 is larger than the padded input 5x5
    (input 5x5, padding valid)
    """
    rows: list[Row] = []
    windows: tuple[list[Window], list[Window]] = ([], [])
    shape, warned_rf = tuple(input_shape), False
    for step in steps:
        for label, layer in _layers(step):
            row, pair = _row(layer, label, shape)
            if row.error:
                return Trace(tuple(input_shape), tuple(rows) + (row,), source, _frozen(windows))
            if pair is not None:
                windows[0].append(pair[0])
                windows[1].append(pair[1])
            rf = (geometry.receptive_field(windows[0]), geometry.receptive_field(windows[1]))
            notes = list(row.warnings)
            if not warned_rf and (rf[0].size > input_shape[0] or rf[1].size > input_shape[1]):
                warned_rf = True
                notes.append(
                    f"the receptive field ({shape_text((rf[0].size, rf[1].size))}) is larger than "
                    f"the {shape_text(input_shape[:2])} input: outer units see padding"
                )
            rows.append(replace(row, receptive_field=rf, warnings=tuple(notes)))
            shape = row.output
    return Trace(tuple(input_shape), tuple(rows), source, _frozen(windows))


def _frozen(
    windows: tuple[list[Window], list[Window]],
) -> tuple[tuple[Window, ...], tuple[Window, ...]]:
    return tuple(windows[0]), tuple(windows[1])


def _layers(step: Step) -> list[tuple[str, Step]]:
    """A separable step is two layers: depthwise (no bias, as Keras) then pointwise."""
    if step.kind != "separable":
        return [(str(step.number), step)]
    depthwise = replace(
        step, kind="depthwise", bias=False, filters=None, text=f"{step.text} (depthwise)"
    )
    pointwise = replace(
        step,
        kind="pointwise",
        kernel=(1, 1),
        stride=(1, 1),
        padding="valid",
        dilation=(1, 1),
        multiplier=1,
        text=f"{step.text} (pointwise)",
    )
    return [(f"{step.number}a", depthwise), (f"{step.number}b", pointwise)]


def _row(step: Step, label: str, shape: Shape) -> tuple[Row, tuple[Window, Window] | None]:
    base = Row(
        number=step.number,
        label=label,
        text=step.text or step_text(step),
        kind=step.kind,
        input=shape,
    )
    if step.kind in ("conv", "depthwise", "pointwise"):
        return _conv_row(step, base)
    if step.kind == "transposed":
        return _transposed_row(step, base)
    if step.kind in ("maxpool", "avgpool"):
        return _pool_row(step, base)
    if step.kind == "unpool":
        return _unpool_row(step, base)
    height, width, channels = shape
    if step.kind in ("globalavgpool", "globalmaxpool"):
        windows = (Window(height, height), Window(width, width))
        arithmetic = (f"{height}x{width} -> 1x1 per channel",)
        return replace(base, output=(1, 1, channels), arithmetic=arithmetic), windows
    if step.kind == "channels":
        return replace(
            base,
            output=(height, width, step.filters),
            arithmetic=(f"{channels} -> {step.filters} channels",),
        ), None
    params = 2 * channels if step.kind == "batchnorm" else 0
    return replace(base, output=shape, arithmetic=("shape kept",), params=params), None


def _axes(
    in_hw: Sequence[int], kernel: Pair, stride: Pair, dilation: Pair, pads: Pads
) -> list[tuple]:
    """Per axis (rows, then columns): (size, kernel, stride, dilation, pad_before, pad_after)."""
    return [
        (in_hw[a], kernel[a], stride[a], dilation[a], pads[2 * a], pads[2 * a + 1]) for a in (0, 1)
    ]


def _per_axis(texts: Sequence[str]) -> tuple[str, ...]:
    return (texts[0],) if texts[0] == texts[1] else (f"rows: {texts[0]}", f"cols: {texts[1]}")


def _reach(kernel: int, dilation: int) -> str:
    """What the size formula subtracts for the kernel: ``k``, or PyTorch's ``d*(k - 1) - 1``."""
    return f"{kernel}" if dilation == 1 else f"{dilation}*({kernel} - 1) - 1"


def _conv_formula(size, kernel, stride, dilation, before, after, out, rounding="floor") -> str:
    return (
        f"{rounding}(({size} + {before} + {after} - {_reach(kernel, dilation)}) / {stride}) "
        f"+ 1 = {out}"
    )


_PLURALS = {"row": "rows", "column": "columns", "row and column": "rows and columns"}


def _fit_warnings(
    axes: Sequence[tuple], padding: PaddingSpec, pads: Pads, check_fit: bool = True
) -> list[str]:
    """Rows/columns a stride drops, and ``same`` made asymmetric by a stride > 1."""
    notes, dropped = [], []
    for name, (size, kernel, stride, dilation, before, after) in zip(("row", "column"), axes):
        unread = geometry.unread_after_last_window(size, kernel, stride, dilation, before, after)
        k_eff = geometry.effective_kernel_size(kernel, dilation)
        if check_fit and unread > after:
            calc = f"({size} + {before} + {after} - {k_eff}) % {stride} = {unread}"
            dropped.append((name, unread - after, stride, calc))
    if len(dropped) == 2 and dropped[0][1:] == dropped[1][1:]:
        dropped = [("row and column",) + dropped[0][1:]]
    for name, lost, stride, calc in dropped:
        if lost == 1:
            what = f"the last {name} of the input {'are' if ' and ' in name else 'is'}"
        else:
            what = f"the last {lost} {_PLURALS[name]} of the input are"
        notes.append(f"stride {stride} does not fit: {what} never read ({calc})")
    strided = max(axis[2] for axis in axes) > 1
    if padding == "same" and strided and (pads[0] != pads[1] or pads[2] != pads[3]):
        notes.append(
            f"same at stride {hw_text([axis[2] for axis in axes])} pads top {pads[0]}, "
            f"bottom {pads[1]}, left {pads[2]}, right {pads[3]} (TensorFlow: the odd pixel goes "
            f"bottom/right); PyTorch rejects padding='same' at stride > 1 and its symmetric "
            f"padding cannot reproduce this"
        )
    return notes


def _conv_row(step: Step, base: Row) -> tuple[Row, tuple[Window, Window] | None]:
    height, width, channels = base.input
    if step.kind == "depthwise":
        groups, c_out = channels, channels * step.multiplier
    else:
        groups, c_out = step.groups, step.filters
    base = replace(
        base,
        kernel=step.kernel,
        stride=step.stride,
        dilation=step.dilation,
        groups=groups,
        bias=step.bias,
    )
    try:
        rules.groups_divide(groups, channels, c_out)
    except rules.RuleError as exc:
        return replace(base, error=str(exc)), None
    pads = geometry.resolve_padding(
        step.padding, (height, width), step.kernel, step.stride, step.dilation
    )
    out_hw = geometry.conv2d_output_shape(
        (height, width), step.kernel, step.stride, step.dilation, pads
    )
    axes = _axes((height, width), step.kernel, step.stride, step.dilation, pads)
    arithmetic = _per_axis([_conv_formula(*axis, out) for axis, out in zip(axes, out_hw)])
    base = replace(base, padding=pads, arithmetic=arithmetic)
    if min(out_hw) < 1:
        return replace(
            base,
            error=window_too_large(
                "kernel", (height, width), step.kernel, step.dilation, pads, step.padding
            ),
        ), None
    shortfall = geometry.border_shortfall((height, width), pads, step.pad_mode)
    if shortfall:
        return replace(base, error=shortfall), None
    kh, kw = step.kernel
    per_output = (channels // groups) * kh * kw
    row = replace(
        base,
        output=out_hw + (c_out,),
        params=c_out * per_output + (c_out if step.bias else 0),
        macs=c_out * out_hw[0] * out_hw[1] * per_output,
        warnings=tuple(_fit_warnings(axes, step.padding, pads)),
    )
    return row, tuple(Window(k, s, d, before) for _, k, s, d, before, _ in axes)


def _transposed_row(step: Step, base: Row) -> tuple[Row, tuple[Window, Window] | None]:
    height, width, channels = base.input
    groups, c_out = step.groups, step.filters
    base = replace(
        base,
        kernel=step.kernel,
        stride=step.stride,
        dilation=step.dilation,
        groups=groups,
        bias=step.bias,
        output_padding=step.output_padding,
    )
    try:
        rules.groups_divide(groups, channels, c_out)
    except rules.RuleError as exc:
        return replace(base, error=str(exc)), None
    axes = list(zip((height, width), step.kernel, step.stride, step.dilation))
    if step.padding == "same":  # Keras Conv2DTranspose: input x stride, aligned by a TF SAME crop
        crops = [geometry.transposed_same_crop(*axis) for axis in axes]
        out_hw = (height * step.stride[0], width * step.stride[1])
    else:
        pad = (0, 0) if step.padding == "valid" else step.padding[0::2]
        crops = [(p, p - op) for p, op in zip(pad, step.output_padding)]
        out_hw = tuple(
            geometry.transposed_output_size(*axis, p, op)
            for axis, p, op in zip(axes, pad, step.output_padding)
        )
    pads = (crops[0][0], crops[0][1], crops[1][0], crops[1][1])
    texts = _transposed_formulas(
        (height, width),
        step.kernel,
        step.stride,
        step.dilation,
        step.padding,
        step.output_padding,
        out_hw,
    )
    base = replace(base, padding=pads, arithmetic=texts)
    if min(out_hw) < 1:
        return replace(
            base,
            error=f"padding {padding_text(step.padding)} crops away the whole transposed "
            f"output (input {shape_text((height, width))}, kernel "
            f"{shape_text(step.kernel)})",
        ), None
    kh, kw = step.kernel
    per_input = (c_out // groups) * kh * kw
    row = replace(
        base,
        output=out_hw + (c_out,),
        params=channels * per_input + (c_out if step.bias else 0),
        macs=channels * height * width * per_input,
    )
    return row, tuple(
        Window(k, s, d, crop[0], transposed=True) for (_, k, s, d), crop in zip(axes, crops)
    )


def _transposed_formulas(
    in_hw: Sequence[int],
    kernel: Pair,
    stride: Pair,
    dilation: Pair,
    padding: PaddingSpec,
    output_padding: Pair,
    out_hw: Sequence[int],
) -> tuple[str, ...]:
    """The transposed output size filled in, per axis (PyTorch's formula, or Keras ``same``)."""
    if padding == "same":
        return _per_axis(
            [f"{size} * {s} = {out} (Keras same)" for size, s, out in zip(in_hw, stride, out_hw)]
        )
    pad = (0, 0) if padding == "valid" else padding[0::2]
    return _per_axis(
        [
            f"({size} - 1)*{s} - 2*{p} + {d}*({k} - 1) + {op} + 1 = {out}"
            for size, k, s, d, p, op, out in zip(
                in_hw, kernel, stride, dilation, pad, output_padding, out_hw
            )
        ]
    )


def _pool_row(step: Step, base: Row) -> tuple[Row, tuple[Window, Window] | None]:
    height, width, channels = base.input
    base = replace(base, kernel=step.kernel, stride=step.stride, dilation=step.dilation)
    pads = geometry.resolve_padding(
        step.padding, (height, width), step.kernel, step.stride, step.dilation
    )
    axes = _axes((height, width), step.kernel, step.stride, step.dilation, pads)
    out_hw = tuple(geometry.pool_output_size(*axis, step.ceil_mode) for axis in axes)
    texts = []
    for (size, kernel, stride, dilation, before, after), out in zip(axes, out_hw):
        rounding = "ceil" if step.ceil_mode else "floor"
        text = _conv_formula(size, kernel, stride, dilation, before, after, out, rounding)
        # ceil((x)/s) is floor((x + s - 1)/s): the count before PyTorch drops a last window
        unruled = geometry.pool_output_size(
            size, kernel, stride, dilation, before, after + stride - 1
        )
        if step.ceil_mode and out < unruled:
            text = text.replace(
                f" = {out}", f" - 1 = {out} (a last window may not start in the padding)"
            )
        texts.append(text)
    base = replace(base, padding=pads, arithmetic=_per_axis(texts))
    if min(out_hw) < 1:
        error = window_too_large(
            "pooling window", (height, width), step.kernel, step.dilation, pads, step.padding
        )
        return replace(base, error=error), None
    row = replace(
        base,
        output=out_hw + (channels,),
        warnings=tuple(_fit_warnings(axes, step.padding, pads, check_fit=not step.ceil_mode)),
    )
    return row, tuple(Window(k, s, d, before) for _, k, s, d, before, _ in axes)


def _unpool_row(step: Step, base: Row) -> tuple[Row, tuple[Window, Window] | None]:
    height, width, channels = base.input
    pad = (0, 0) if step.padding == "valid" else step.padding[0::2]
    base = replace(
        base, kernel=step.kernel, stride=step.stride, padding=(pad[0], pad[0], pad[1], pad[1])
    )
    axes = list(zip((height, width), step.kernel, step.stride, pad))
    try:
        out_hw = geometry.unpool_output_shape(
            (height, width), step.kernel, step.stride, pad, step.output_size
        )
    except ParameterError as exc:
        return replace(base, error=str(exc)), None
    defaults = [geometry.unpool_output_size(*axis) for axis in axes]
    texts = [
        f"({size} - 1)*{stride} - 2*{p} + {kernel} = {default}"
        + ("" if out == default else f", output_size {out}")
        for (size, kernel, stride, p), default, out in zip(axes, defaults, out_hw)
    ]
    base = replace(base, arithmetic=_per_axis(texts))
    if min(out_hw) < 1:
        return replace(base, error=f"padding {padding_text(step.padding)} leaves no output"), None
    return replace(base, output=out_hw + (channels,)), tuple(
        Window(k, s, 1, p, transposed=True) for _, k, s, p in axes
    )


# --------------------------------------------------------------------------------------------
