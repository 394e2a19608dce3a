"""Shape traces: one row per layer with its output, formula, parameters, multiply-adds and field."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from convcli import geometry
from convcli.errors import ConvcliError, ParameterError, ShapeError
from convcli.explain.language import (
    CONVENTIONS,
    SCHEMA_ID,
    Pads,
    Shape,
    check_layer,
    field_values,
    step_text,
)
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
from convcli.layers.spec import IMAGE, JOINS, Layer

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


@dataclass(frozen=True)
class _Branch:
    """Where a path through the layers has got to: its maps' shape, its layers' windows, and
    whether it has warned of a receptive field larger than the input."""

    shape: Shape
    windows: tuple[tuple[Window, ...], tuple[Window, ...]] = ((), ())
    warned: bool = False

    @property
    def field_area(self) -> int:
        """The area of the receptive field at this point (1 at the input)."""
        rows, cols = (geometry.receptive_field(list(axis)) for axis in self.windows)
        return rows.size * cols.size


def trace(
    input_shape: Shape, layers: Sequence[Layer], source: str = "", *, named: bool = False
) -> Trace:
    """Trace ``layers`` (``layers.spec.Layer``) from an ``(H, W, C)`` input; stops at the first
    layer that cannot run.

    A layer reads the one before it, or the layers its ``sources`` number (0: the input); a
    conv layer holding resolved kernels takes its kernel size and filters from them and the
    channels it gets. A layer's receptive field is along the path to it; where branches join
    (``add``, ``concat``), along the branch whose field is the largest. ``named`` (pipelines)
    writes each row as ``NAME: step`` (the layer's name, or its op).

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
    input_shape = tuple(input_shape)
    last = _Branch(input_shape)
    branches, names, pooled = {0: last}, {0: IMAGE}, {}
    rows: list[Row] = []
    for layer in layers:
        reads = [branches[n] for n in layer.sources] if layer.sources else [last]
        try:
            base, sized = _sized(layer, reads, [names[n] for n in layer.sources], pooled)
        except ConvcliError as exc:
            error = Row(
                number=layer.number,
                label=str(layer.number),
                text=layer.name or layer.op,
                kind="channels",
                input=reads[0].shape,
                error=str(exc),
            )
            return Trace(input_shape, tuple(rows) + (error,), source, reads[0].windows)
        if sized is not layer and sized.op in ("conv", "transposed"):
            check_layer(sized)  # the engine's rules, with its sizes
        branch = base
        for label, part in _parts(layer, sized, named):
            row, pair = _row(part, label, branch.shape)
            if row.error:
                return Trace(input_shape, tuple(rows) + (row,), source, branch.windows)
            windows = branch.windows
            if pair is not None:
                windows = (windows[0] + (pair[0],), windows[1] + (pair[1],))
            rf = (
                geometry.receptive_field(list(windows[0])),
                geometry.receptive_field(list(windows[1])),
            )
            notes, warned = list(row.warnings), branch.warned
            if not warned and (rf[0].size > input_shape[0] or rf[1].size > input_shape[1]):
                warned = True
                notes.append(
                    f"the receptive field ({shape_text((rf[0].size, rf[1].size))}) is larger than "
                    f"the {shape_text(input_shape[:2])} input: outer units see padding"
                )
            rows.append(replace(row, receptive_field=rf, warnings=tuple(notes)))
            branch = _Branch(row.output, windows, warned)
        if layer.op == "pool" and layer.name:
            pooled[layer.name] = (base.shape[:2], sized)
        branches[layer.number] = last = branch
        names[layer.number] = layer.name or f"step {layer.number}"
    return Trace(input_shape, tuple(rows), source, last.windows)


def _sized(
    layer: Layer, reads: Sequence[_Branch], read_names: Sequence[str], pooled: dict
) -> tuple[_Branch, Layer]:
    """The branch a layer extends, and the layer with the sizes its trace row needs at the
    shape it gets (a conv's filters and kernel size from its kernels, a pool's stride, an
    unpool's window from its pool, the channels of ``gray``, ``select``, joins ...)."""
    shape, p = reads[0].shape, layer.params
    channels = shape[2]
    if layer.op in JOINS:
        joined = rules.joined_shapes(layer.op, [(n, b.shape) for n, b in zip(read_names, reads)])
        base = max(reads, key=lambda b: b.field_area)
        return base, Layer("channels", {"filters": joined[2]}, layer.number)
    if layer.op in ("conv", "transposed") and "kernel" in p:
        return reads[0], replace(layer, params=_kernel_sizes(layer, channels))
    if layer.op == "pool" and p["stride"] is None:
        return reads[0], replace(layer, params={**p, "stride": p["size"]})
    if layer.op == "unpool" and "indices" in p:
        in_hw, pool = pooled[p["indices"]]
        window = pool.params
        pads = geometry.resolve_padding(
            window["padding"], in_hw, window["size"], window["stride"], window["dilation"]
        )
        params = {
            "size": window["size"],
            "stride": window["stride"],
            "padding": (pads[0], pads[0], pads[2], pads[2]),
            "output_size": tuple(in_hw),
        }
        return reads[0], replace(layer, params=params)
    if layer.op == "gray":
        if channels not in (1, 3):
            raise ShapeError(f"gray needs 1 or 3 channels, the input has {channels}")
        return reads[0], Layer("channels", {"filters": 1}, layer.number)
    if layer.op == "select":
        if max(p["channels"]) >= channels:
            raise ShapeError(
                f"channel {max(p['channels'])} does not exist: the input has {channels} "
                f"(0 to {channels - 1})"
            )
        return reads[0], Layer("channels", {"filters": len(p["channels"])}, layer.number)
    if layer.op in ("mul", "stats"):  # stats reports; the maps go on as they are
        return reads[0], Layer("channels", {"filters": channels}, layer.number)
    return reads[0], layer


def _kernel_sizes(layer: Layer, channels: int) -> dict:
    """A conv layer's fields with the filter count, kernel size and groups its resolved kernels
    have on ``channels`` input channels, laid out as the engine lays them."""
    from convcli import engine

    p, transposed = layer.params, layer.op == "transposed"
    layout = engine.as_transposed_weight if transposed else engine.as_conv_weight
    weights = [layout(k.weights, channels, p["groups"], copy=False) for k in p["kernel"]]
    if len({(w.shape[2:], g) for w, g in weights}) > 1:
        raise ParameterError(
            "explain traces stacked kernels of one size and channel layout; these "
            "differ (trace each kernel on its own)"
        )
    first, groups = weights[0]
    sized = {
        "filters": sum(w.shape[1] * g if transposed else w.shape[0] for w, g in weights),
        "kernel_size": tuple(first.shape[2:]),
        "stride": p["stride"],
        "padding": p["padding"],
        "dilation": p["dilation"],
        "groups": groups,
        "multiplier": 1,
        "bias": p["bias"] is not None,
    }
    if transposed:
        sized["output_padding"] = p["output_padding"]
    else:
        sized["pad_mode"] = p["pad_mode"]
    return sized


def _parts(layer: Layer, sized: Layer, named: bool) -> list[tuple[str, Layer]]:
    """The trace rows of one layer, each (label, layer as traced): a separable layer is two,
    depthwise (no bias, as Keras) then pointwise; a conv that combines its kernels' maps is
    the conv, then its channel count after the combining."""
    if named:
        title = f"{layer.name or layer.op}: "
        parts = [(str(layer.number), replace(sized, text=title + step_text(sized)))]
        if layer.op in ("conv", "transposed") and layer.params.get("combine"):
            maps = sized.params["filters"] // len(layer.params["kernel"])
            combined = Layer("channels", {"filters": maps}, layer.number)
            parts.append(
                (
                    str(layer.number),
                    replace(combined, text=f"{title}combine {layer.params['combine']}"),
                )
            )
        return parts
    if layer.op != "separable":
        return [(str(layer.number), sized)]
    p = layer.params
    depthwise = replace(
        layer,
        op="depthwise",
        params={**p, "bias": False, "filters": None},
        text=f"{layer.text} (depthwise)",
    )
    pointwise = replace(
        layer,
        op="pointwise",
        params={
            **p,
            "kernel_size": (1, 1),
            "stride": (1, 1),
            "padding": "valid",
            "dilation": (1, 1),
            "multiplier": 1,
        },
        text=f"{layer.text} (pointwise)",
    )
    return [(f"{layer.number}a", depthwise), (f"{layer.number}b", pointwise)]


def _row(step: Layer, label: str, shape: Shape) -> tuple[Row, tuple[Window, Window] | None]:
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
        filters = step.params["filters"]
        return replace(
            base,
            output=(height, width, filters),
            arithmetic=(f"{channels} -> {filters} channels",),
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


def _conv_row(layer: Layer, base: Row) -> tuple[Row, tuple[Window, Window] | None]:
    v = field_values(layer)
    height, width, channels = base.input
    if layer.kind == "depthwise":
        groups, c_out = channels, channels * v["multiplier"]
    else:
        groups, c_out = v["groups"], v["filters"]
    base = replace(
        base,
        kernel=v["kernel"],
        stride=v["stride"],
        dilation=v["dilation"],
        groups=groups,
        bias=v["bias"],
    )
    try:
        rules.groups_divide(groups, channels, c_out)
    except rules.RuleError as exc:
        return replace(base, error=str(exc)), None
    pads = geometry.resolve_padding(
        v["padding"], (height, width), v["kernel"], v["stride"], v["dilation"]
    )
    out_hw = geometry.conv2d_output_shape(
        (height, width), v["kernel"], v["stride"], v["dilation"], pads
    )
    axes = _axes((height, width), v["kernel"], v["stride"], v["dilation"], pads)
    arithmetic = _per_axis([_conv_formula(*axis, out) for axis, out in zip(axes, out_hw)])
    base = replace(base, padding=pads, arithmetic=arithmetic)
    if min(out_hw) < 1:
        return replace(
            base,
            error=window_too_large(
                "kernel", (height, width), v["kernel"], v["dilation"], pads, v["padding"]
            ),
        ), None
    shortfall = geometry.border_shortfall((height, width), pads, v["pad_mode"])
    if shortfall:
        return replace(base, error=shortfall), None
    kh, kw = v["kernel"]
    per_output = (channels // groups) * kh * kw
    row = replace(
        base,
        output=out_hw + (c_out,),
        params=c_out * per_output + (c_out if v["bias"] else 0),
        macs=c_out * out_hw[0] * out_hw[1] * per_output,
        warnings=tuple(_fit_warnings(axes, v["padding"], pads)),
    )
    return row, tuple(Window(k, s, d, before) for _, k, s, d, before, _ in axes)


def _transposed_row(layer: Layer, base: Row) -> tuple[Row, tuple[Window, Window] | None]:
    v = field_values(layer)
    height, width, channels = base.input
    groups, c_out = v["groups"], v["filters"]
    base = replace(
        base,
        kernel=v["kernel"],
        stride=v["stride"],
        dilation=v["dilation"],
        groups=groups,
        bias=v["bias"],
        output_padding=v["output_padding"],
    )
    try:
        rules.groups_divide(groups, channels, c_out)
    except rules.RuleError as exc:
        return replace(base, error=str(exc)), None
    axes = list(zip((height, width), v["kernel"], v["stride"], v["dilation"]))
    if v["padding"] == "same":  # Keras Conv2DTranspose: input x stride, aligned by a TF SAME crop
        crops = [geometry.transposed_same_crop(*axis) for axis in axes]
        out_hw = (height * v["stride"][0], width * v["stride"][1])
    else:
        pad = (0, 0) if v["padding"] == "valid" else v["padding"][0::2]
        crops = [(p, p - op) for p, op in zip(pad, v["output_padding"])]
        out_hw = tuple(
            geometry.transposed_output_size(*axis, p, op)
            for axis, p, op in zip(axes, pad, v["output_padding"])
        )
    pads = (crops[0][0], crops[0][1], crops[1][0], crops[1][1])
    texts = _transposed_formulas(
        (height, width),
        v["kernel"],
        v["stride"],
        v["dilation"],
        v["padding"],
        v["output_padding"],
        out_hw,
    )
    base = replace(base, padding=pads, arithmetic=texts)
    if min(out_hw) < 1:
        return replace(
            base,
            error=f"padding {padding_text(v['padding'])} crops away the whole transposed "
            f"output (input {shape_text((height, width))}, kernel "
            f"{shape_text(v['kernel'])})",
        ), None
    kh, kw = v["kernel"]
    per_input = (c_out // groups) * kh * kw
    row = replace(
        base,
        output=out_hw + (c_out,),
        params=channels * per_input + (c_out if v["bias"] else 0),
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


def _pool_row(layer: Layer, base: Row) -> tuple[Row, tuple[Window, Window] | None]:
    v = field_values(layer)
    height, width, channels = base.input
    base = replace(base, kernel=v["kernel"], stride=v["stride"], dilation=v["dilation"])
    pads = geometry.resolve_padding(
        v["padding"], (height, width), v["kernel"], v["stride"], v["dilation"]
    )
    axes = _axes((height, width), v["kernel"], v["stride"], v["dilation"], pads)
    out_hw = tuple(geometry.pool_output_size(*axis, v["ceil_mode"]) for axis in axes)
    texts = []
    for (size, kernel, stride, dilation, before, after), out in zip(axes, out_hw):
        rounding = "ceil" if v["ceil_mode"] else "floor"
        text = _conv_formula(size, kernel, stride, dilation, before, after, out, rounding)
        # ceil((x)/s) is floor((x + s - 1)/s): the count before PyTorch drops a last window
        unruled = geometry.pool_output_size(
            size, kernel, stride, dilation, before, after + stride - 1
        )
        if v["ceil_mode"] and out < unruled:
            text = text.replace(
                f" = {out}", f" - 1 = {out} (a last window may not start in the padding)"
            )
        texts.append(text)
    base = replace(base, padding=pads, arithmetic=_per_axis(texts))
    if min(out_hw) < 1:
        error = window_too_large(
            "pooling window", (height, width), v["kernel"], v["dilation"], pads, v["padding"]
        )
        return replace(base, error=error), None
    row = replace(
        base,
        output=out_hw + (channels,),
        warnings=tuple(_fit_warnings(axes, v["padding"], pads, check_fit=not v["ceil_mode"])),
    )
    return row, tuple(Window(k, s, d, before) for _, k, s, d, before, _ in axes)


def _unpool_row(layer: Layer, base: Row) -> tuple[Row, tuple[Window, Window] | None]:
    v = field_values(layer)
    height, width, channels = base.input
    pad = (0, 0) if v["padding"] == "valid" else v["padding"][0::2]
    base = replace(
        base, kernel=v["kernel"], stride=v["stride"], padding=(pad[0], pad[0], pad[1], pad[1])
    )
    axes = list(zip((height, width), v["kernel"], v["stride"], pad))
    try:
        out_hw = geometry.unpool_output_shape(
            (height, width), v["kernel"], v["stride"], pad, v["output_size"]
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
        return replace(base, error=f"padding {padding_text(v['padding'])} leaves no output"), None
    return replace(base, output=out_hw + (channels,)), tuple(
        Window(k, s, 1, p, transposed=True) for _, k, s, p in axes
    )


# --------------------------------------------------------------------------------------------
