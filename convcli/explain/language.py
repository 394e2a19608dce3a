"""The step language of ``convcli explain``: one layer as text or as a mapping, validated."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from convcli.errors import ParameterError
from convcli.explain.text import hw_text
from convcli.geometry import (
    PaddingSpec,
    Pair,
    padding_text,
)
from convcli.layers import rules
from convcli.layers.spec import ACTIVATIONS as LAYER_ACTIVATIONS
from convcli.layers.spec import Layer
from convcli.layers.values import (
    PAD_MODES,
    not_one_of,
    parse_count,
    parse_pad_mode,
    parse_padding,
    parse_pair,
)

#: (H, W, C), the order of ``--input 224x224x3``.
Shape = tuple[int, int, int]
Pads = tuple[int, int, int, int]


FIELDS: dict[str, tuple[str, ...]] = {
    "conv": ("filters", "kernel", "stride", "padding", "dilation", "groups", "bias", "pad_mode"),
    "depthwise": ("kernel", "stride", "padding", "dilation", "multiplier", "bias", "pad_mode"),
    "pointwise": ("filters", "stride", "groups", "bias"),
    "separable": (
        "filters",
        "kernel",
        "stride",
        "padding",
        "dilation",
        "multiplier",
        "bias",
        "pad_mode",
    ),
    "transposed": (
        "filters",
        "kernel",
        "stride",
        "padding",
        "output_padding",
        "dilation",
        "groups",
        "bias",
    ),
    "maxpool": ("kernel", "stride", "padding", "dilation", "ceil_mode"),
    "avgpool": ("kernel", "stride", "padding", "ceil_mode"),
    "globalavgpool": (),
    "globalmaxpool": (),
    "unpool": ("kernel", "stride", "padding", "output_size"),
    "activation": ("function",),
    "batchnorm": (),
    "normalise": (),
    "channels": ("filters",),
}
REQUIRED = {
    "conv": ("filters", "kernel"),
    "depthwise": ("kernel",),
    "pointwise": ("filters",),
    "separable": ("filters", "kernel"),
    "transposed": ("filters", "kernel"),
    "channels": ("filters",),
}
#: Other spellings of the kinds (compared without ``_`` and ``-``).
ALIASES = {
    "conv2d": "conv",
    "dw": "depthwise",
    "dwconv": "depthwise",
    "pw": "pointwise",
    "conv1x1": "pointwise",
    "sepconv": "separable",
    "dwsep": "separable",
    "deconv": "transposed",
    "convtranspose": "transposed",
    "convtranspose2d": "transposed",
    "upconv": "transposed",
    "max": "maxpool",
    "maxpool2d": "maxpool",
    "avg": "avgpool",
    "avgpool2d": "avgpool",
    "gap": "globalavgpool",
    "globalpool": "globalavgpool",
    "gmp": "globalmaxpool",
    "maxunpool": "unpool",
    "act": "activation",
    "bn": "batchnorm",
    "batchnorm2d": "batchnorm",
    "normalize": "normalise",
    "norm": "normalise",
}
#: Activations that may be written as the kind itself (``relu``) or as ``act relu``.
ACTIVATIONS = (
    "relu",
    "relu6",
    "leakyrelu",
    "gelu",
    "silu",
    "sigmoid",
    "tanh",
    "clip",
    "hardsigmoid",
    "hardswish",
    "abs",
)
#: Padding of conv-like steps when none is given: ``same``, as ``convcli conv``; pools: ``valid``.
CONV_KINDS = ("conv", "depthwise", "pointwise", "separable", "transposed")

_SHORT = {
    "k": "kernel",
    "s": "stride",
    "p": "padding",
    "d": "dilation",
    "g": "groups",
    "m": "multiplier",
    "op": "output_padding",
}
_SHORT_TOKEN = re.compile(r"(op|k|s|p|d|g|m)([0-9][0-9,x]*)")
_WORDS = {
    "valid": ("padding", "valid"),
    "same": ("padding", "same"),
    "full": ("padding", "full"),
    "bias": ("bias", True),
    "nobias": ("bias", False),
    "ceil": ("ceil_mode", True),
    **{mode: ("pad_mode", mode) for mode in PAD_MODES},
}
_TOKEN_HELP = {
    "filters": "N",
    "kernel": "kN",
    "stride": "sN",
    "padding": "pN|valid|same|full",
    "dilation": "dN",
    "groups": "gN",
    "multiplier": "mN",
    "output_padding": "opN",
    "bias": "bias|nobias",
    "ceil_mode": "ceil",
    "function": "NAME",
    "output_size": "output_size=H,W",
    "pad_mode": "|".join(PAD_MODES),
}

#: The conventions every trace states (also in the JSON output).
CONVENTIONS = {
    "shape": "H x W x C per step (rows, columns, channels)",
    "params": "weights C_in/groups * C_out * kh * kw, plus C_out biases; "
    "batchnorm: 2*C (scale and shift)",
    "macs": "multiply-adds of convolutions, bias excluded: C_out*H_out*W_out*(C_in/groups)*kh*kw; "
    "transposed: C_in*H_in*W_in*(C_out/groups)*kh*kw; pools and activations 0; FLOPs ~ 2*MACs",
    "receptive_field": "input pixels one output unit spans (Araujo et al., Distill 2019), "
    "the largest over units; jump: input pixels between neighbouring outputs; start: centre of "
    "output (0, 0) in input pixel indices (0 = centre of the first pixel, negative = "
    "in the padding)",
}
SCHEMA_ID = "convcli-explain/1"


class _FieldError(Exception):
    """A bad value for one field of one step; the caller names the step and the token."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


#: The explain language's defaults, by its field names.
_DEFAULTS: dict[str, Any] = {
    "filters": None,
    "kernel": (1, 1),
    "stride": (1, 1),
    "padding": "valid",
    "dilation": (1, 1),
    "groups": 1,
    "multiplier": 1,
    "bias": True,
    "output_padding": (0, 0),
    "ceil_mode": False,
    "output_size": None,
    "pad_mode": "zeros",
}
#: The conv kinds' fields as a layer holds them (a conv window is its ``kernel_size``).
_CONV_FIELDS = ("filters", "kernel", "stride", "padding", "dilation", "groups", "multiplier")
#: The activation op of each way the language writes it (``leakyrelu``: ``leaky_relu``).
_ACTIVATION_OPS = {word: op for op, word in LAYER_ACTIVATIONS.items()}


def _field_name(kind: str, name: str) -> str:
    """A field of the language as the layer names it: a conv's ``kernel`` is its
    ``kernel_size``, a pool's its ``size``."""
    if name != "kernel":
        return name
    return "kernel_size" if kind in CONV_KINDS else "size"


def _layer(
    kind: str, function: str, values: Mapping[str, Any], number: int, text: str, given
) -> Layer:
    """The layer a validated step of ``kind`` describes (``values`` by the language's names)."""

    def value(name: str) -> Any:
        return values.get(name, _DEFAULTS[name])

    if kind in CONV_KINDS:
        extra = ("output_padding",) if kind == "transposed" else ("pad_mode",)
        params = {_field_name(kind, n): value(n) for n in _CONV_FIELDS + ("bias",) + extra}
        op = kind
    elif kind in ("maxpool", "avgpool"):
        op, params = "pool", {"mode": kind[:3]}
        for name in ("kernel", "stride", "padding", "dilation", "ceil_mode"):
            params[_field_name(kind, name)] = value(name)
    elif kind in ("globalavgpool", "globalmaxpool"):
        op, params = "global_pool", {"mode": kind[6:9]}
    elif kind == "unpool":
        op = "unpool"
        params = {_field_name(kind, n): value(n) for n in ("kernel", "stride", "padding")}
        params["output_size"] = value("output_size")
    elif kind == "activation":
        op, params = _ACTIVATION_OPS.get(values.get("function", ""), "activation"), {}
    elif kind == "channels":
        op, params = kind, {"filters": values["filters"]}
    else:
        op, params = kind, {}
    named = frozenset(_field_name(kind, name) for name in given)
    return Layer(op, params, number, given=named, text=text)


def field_values(layer: Layer) -> dict[str, Any]:
    """A layer's fields by the language's names (``kernel`` for a conv's size or a pool's
    window), defaults filled in: what a trace row and ``step_text`` read.

    >>> field_values(parse_step("maxpool k3 s2"))["kernel"]
    (3, 3)
    """
    p, values = layer.params, dict(_DEFAULTS)
    values.update({key: p[key] for key in _DEFAULTS if key in p})
    values["kernel"] = p.get("kernel_size", p.get("size", (1, 1)))
    if layer.op in LAYER_ACTIVATIONS:
        values["function"] = LAYER_ACTIVATIONS[layer.op]
    return values


def _kind(word: Any) -> tuple[str, str]:
    """Canonical kind and activation function of a kind word."""
    name = re.sub(r"[_\-]", "", str(word).strip().lower())
    if name in ACTIVATIONS:
        return "activation", name
    name = ALIASES.get(name, name)
    if name not in FIELDS:
        raise _FieldError("op", not_one_of("step kind", word, list(FIELDS) + list(ACTIVATIONS)))
    return name, ""


def _pair(value: Any, name: str, minimum: int = 1) -> Pair:
    """A pair as a token writes it (``k3x3``: ``x`` or ``,`` between rows and columns) or as
    data."""
    return parse_pair(
        value.lower().replace("x", ",") if isinstance(value, str) else value, name, minimum
    )


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("on", "true", "yes", "1"):
        return True
    if text in ("off", "false", "no", "0"):
        return False
    raise ParameterError(f"{name} must be on or off, got {value!r}")


def _function(value: Any, name: str) -> str:
    function = re.sub(r"[_\-]", "", str(value).strip().lower())
    if function not in ACTIVATIONS:
        raise ParameterError(not_one_of("activation", value, ACTIVATIONS))
    return function


_PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "filters": parse_count,
    "kernel": _pair,
    "stride": _pair,
    "padding": lambda value, name: parse_padding(value),
    "dilation": _pair,
    "groups": parse_count,
    "multiplier": parse_count,
    "output_padding": lambda v, n: _pair(v, n, 0),
    "bias": _flag,
    "ceil_mode": _flag,
    "function": _function,
    "output_size": _pair,
    "pad_mode": lambda value, name: parse_pad_mode(str(value)),
}


def _build(spec: Mapping[str, Any], number: int, text: str) -> Layer:
    """Validate a step mapping (``op`` plus fields) into a ``Layer``; raises ``_FieldError``."""
    kind, function = _kind(spec.get("op", ""))
    allowed = FIELDS[kind]
    for key in spec:
        if key != "op" and key not in allowed:
            takes = ", ".join(allowed) or "nothing"
            raise _FieldError(key, f"{kind} takes no {key.replace('_', ' ')} (it takes {takes})")
    for key in REQUIRED.get(kind, ()):
        if key not in spec:
            raise _FieldError(None, f"{kind} needs {key} (e.g. '{_EXAMPLES[kind]}')")
    values: dict[str, Any] = {}
    for key in allowed:
        if key in spec:
            try:
                values[key] = _PARSERS[key](spec[key], key.replace("_", " "))
            except ParameterError as exc:
                raise _FieldError(key, str(exc)) from None
    if function:
        if "function" in values:
            raise _FieldError("function", f"the activation is already {function}")
        values["function"] = function
    if kind in ("maxpool", "avgpool", "unpool"):
        values.setdefault("kernel", (2, 2))
        values.setdefault("stride", values["kernel"])
    elif kind in CONV_KINDS:
        values.setdefault("padding", "same")
    layer = _layer(kind, function, values, number, text, [k for k in spec if k != "op"])
    _check_step(layer)
    return layer


_EXAMPLES = {
    "conv": "conv 64 k3",
    "depthwise": "depthwise k3",
    "pointwise": "pointwise 64",
    "separable": "separable 128 k3",
    "transposed": "transposed 32 k2 s2",
    "channels": "channels 1",
}


def _check_step(layer: Layer) -> None:
    """Rules between fields, the engine's own (``layers.rules``), so a trace never promises more."""
    try:
        rules.check(layer)
    except rules.RuleError as exc:
        raise _FieldError(exc.parameter, str(exc)) from None


def check_layer(layer: Layer) -> None:
    """The rules of ``layers.rules`` on a layer built elsewhere (a pipeline's conv, once its
    kernels are sized), with the message ``step_from_dict`` gives.

    >>> check_layer(Layer("transposed", {"padding": "full"}, 2))     # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    convcli.errors.ParameterError: step 2: field 'padding': transposed takes padding same, ...
    """
    try:
        _check_step(layer)
    except _FieldError as exc:
        where = f" field {exc.field!r}:" if exc.field else ""
        raise ParameterError(f"step {layer.number}:{where} {exc.message}") from None


def _token_field(token: str, kind: str) -> tuple[str, Any]:
    """The field a token sets, and its raw value."""
    word = token.lower()
    if "=" in token:
        key, _, value = token.partition("=")
        return key.strip().lower(), value
    if word in _WORDS:
        return _WORDS[word]
    if re.fullmatch(r"[0-9]+", word):
        return "filters", word
    match = _SHORT_TOKEN.fullmatch(word)
    if match:
        return _SHORT[match.group(1)], match.group(2)
    if kind == "activation":
        return "function", word
    accepted = " ".join(_TOKEN_HELP[f] for f in FIELDS[kind]) or "no tokens"
    raise _FieldError(None, f"unknown token {token!r} ({kind} takes {accepted})")


def parse_step(text: str, number: int = 1) -> Layer:
    """One step of the step language (module docstring), e.g. ``"conv 64 k3 s2 same"``.

    Errors are ``ParameterError`` naming the step number, the step and the token.

    >>> p = parse_step("conv 64 k7 s2 p3 nobias").params
    >>> p["filters"], p["kernel_size"], p["stride"], p["padding"], p["bias"]
    (64, (7, 7), (2, 2), (3, 3, 3, 3), False)
    >>> parse_step("maxpool k3 s2 p1").params["stride"], parse_step("avgpool").params["stride"]
    ((2, 2), (2, 2))
    >>> parse_step("conv 64 k0", 2)     # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    convcli.errors.ParameterError: step 2 'conv 64 k0': token 'k0': kernel must be at least 1,
    got '0'
    """
    words = str(text).split()
    if not words:
        raise ParameterError(f"step {number} is empty")
    written = " ".join(words)
    spec: dict[str, Any] = {"op": words[0]}
    tokens = {"op": words[0]}
    try:
        kind, _ = _kind(words[0])
        for token in words[1:]:
            key, value = _token_field(token, kind)
            if key in tokens:
                raise ParameterError(
                    f"step {number} {written!r}: token {token!r}: repeats the "
                    f"{key.replace('_', ' ')} (already {tokens[key]!r})"
                )
            spec[key], tokens[key] = value, token
        return _build(spec, number, written)
    except _FieldError as exc:
        where = f" token {tokens[exc.field]!r}:" if exc.field in tokens else ""
        raise ParameterError(f"step {number} {written!r}:{where} {exc.message}") from None


def step_from_dict(spec: Mapping[str, Any], number: int = 1) -> Layer:
    """The same step from a mapping, as a pipeline file holds it: ``op`` plus field names.

    >>> from dataclasses import replace
    >>> step_from_dict({"op": "conv", "filters": 64, "kernel": 7, "stride": 2, "padding": 3,
    ...                 "bias": False}) == replace(parse_step("conv 64 k7 s2 p3 nobias"), text="")
    True
    >>> step_from_dict({"op": "maxpool", "groups": 2}, 4)
    ... # doctest: +ELLIPSIS, +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    convcli.errors.ParameterError: step 4: field 'groups': maxpool takes no groups
    (it takes kernel, ...)
    """
    if not isinstance(spec, Mapping):
        raise ParameterError(f"step {number}: expected a mapping with 'op', got {spec!r}")
    try:
        return _build({str(k).lower(): v for k, v in spec.items()}, number, "")
    except _FieldError as exc:
        where = f" field {exc.field!r}:" if exc.field else ""
        raise ParameterError(f"step {number}:{where} {exc.message}") from None


def step_text(layer: Layer) -> str:
    """A step written back in the step language (for steps that came from a mapping).

    >>> step_text(
    ...     step_from_dict({"op": "transposed", "filters": 32, "kernel": [2, 2], "stride": 2})
    ... )
    'transposed 32 k2 s2 same'
    >>> maxpool = {"op": "maxpool", "kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True}
    >>> step_text(step_from_dict(maxpool))
    'maxpool k3 s2 p1 ceil'
    """
    kind = layer.kind
    fields = FIELDS[kind]
    v = field_values(layer)
    words = [v.get("function") or kind]
    if v["filters"] is not None:
        words.append(str(v["filters"]))
    if "kernel" in fields:
        words.append(f"k{hw_text(v['kernel'])}")
    if "stride" in fields and (v["stride"] != (1, 1) or kind in ("maxpool", "avgpool", "unpool")):
        words.append(f"s{hw_text(v['stride'])}")
    if "padding" in fields:
        padding = v["padding"]
        words.append(padding if isinstance(padding, str) else f"p{padding_text(padding)}")
    for field, prefix, default in (("dilation", "d", (1, 1)), ("output_padding", "op", (0, 0))):
        if field in fields and v[field] != default:
            words.append(f"{prefix}{hw_text(v[field])}")
    for field, prefix in (("groups", "g"), ("multiplier", "m")):
        if field in fields and v[field] != 1:
            words.append(f"{prefix}{v[field]}")
    if "bias" in fields and not v["bias"]:
        words.append("nobias")
    if v["ceil_mode"]:
        words.append("ceil")
    if v["pad_mode"] != "zeros":
        words.append(v["pad_mode"])
    if v["output_size"] is not None:
        words.append(f"output_size={v['output_size'][0]},{v['output_size'][1]}")
    return " ".join(words)


def parse_steps(texts: Sequence[str]) -> list[Layer]:
    """Steps numbered from 1."""
    return [parse_step(text, number) for number, text in enumerate(texts, 1)]


def conv_step(
    weight_shape: Sequence[int],
    groups: int,
    *,
    transposed: bool = False,
    stride: Pair = (1, 1),
    padding: PaddingSpec = "same",
    dilation: Pair = (1, 1),
    output_padding: Pair = (0, 0),
    bias: bool = False,
    pad_mode: str = "zeros",
) -> Layer:
    """The layer of one ``convcli conv`` run, from its 4-D weight shape as the engine lays it out.

    ``(C_out, C_in/groups, kh, kw)``, or ``(C_in, C_out/groups, kh, kw)`` when ``transposed``.

    >>> conv_step((3, 1, 3, 3), 3, padding="valid").params["filters"]
    3
    """
    filters = weight_shape[1] * groups if transposed else weight_shape[0]
    values = {
        "filters": filters,
        "kernel": tuple(weight_shape[2:]),
        "stride": tuple(stride),
        "padding": padding,
        "dilation": tuple(dilation),
        "groups": groups,
        "bias": bias,
        "output_padding": tuple(output_padding),
        "pad_mode": pad_mode,
    }
    layer = _layer("transposed" if transposed else "conv", "", values, 1, "", ())
    try:
        _check_step(layer)
    except _FieldError as exc:
        raise ParameterError(exc.message) from None
    return layer
