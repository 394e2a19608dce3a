"""The step language of ``convcli explain``: one layer as text or as a mapping, validated."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from convcli.errors import ParameterError
from convcli.explain.text import hw_text
from convcli.geometry import (
    PaddingSpec,
    Pair,
    padding_text,
)
from convcli.layers import rules
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


@dataclass(frozen=True)
class Step:
    """One layer, validated. ``stride`` of pools defaults to the window; see the module
    docstring."""

    kind: str
    filters: int | None = None
    kernel: Pair = (1, 1)
    stride: Pair = (1, 1)
    padding: PaddingSpec = "valid"
    dilation: Pair = (1, 1)
    groups: int = 1
    multiplier: int = 1
    bias: bool = True
    output_padding: Pair = (0, 0)
    ceil_mode: bool = False
    function: str = ""
    output_size: Pair | None = None
    pad_mode: str = "zeros"
    number: int = 0
    text: str = ""


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


def _build(spec: Mapping[str, Any], number: int, text: str) -> Step:
    """Validate a step mapping (``op`` plus fields) into a ``Step``; raises ``_FieldError``."""
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
    step = Step(kind=kind, number=number, text=text, **values)
    _check_step(step)
    return step


_EXAMPLES = {
    "conv": "conv 64 k3",
    "depthwise": "depthwise k3",
    "pointwise": "pointwise 64",
    "separable": "separable 128 k3",
    "transposed": "transposed 32 k2 s2",
    "channels": "channels 1",
}


def _check_step(step: Step) -> None:
    """Rules between fields, the engine's own (``layers.rules``), so a trace never promises more."""
    try:
        if step.kind in ("maxpool", "avgpool"):
            rules.pool_padding(step.padding, step.kernel, step.ceil_mode)
        if step.kind in ("transposed", "unpool"):
            rules.cropped_padding(step.padding, step.kind, same=step.kind == "transposed")
        if step.kind == "transposed":
            rules.output_padding(step.output_padding, step.stride, step.dilation, step.padding)
    except rules.RuleError as exc:
        raise _FieldError(exc.parameter, str(exc)) from None


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


def parse_step(text: str, number: int = 1) -> Step:
    """One step of the step language (module docstring), e.g. ``"conv 64 k3 s2 same"``.

    Errors are ``ParameterError`` naming the step number, the step and the token.

    >>> step = parse_step("conv 64 k7 s2 p3 nobias")
    >>> step.kind, step.filters, step.kernel, step.stride, step.padding, step.bias
    ('conv', 64, (7, 7), (2, 2), (3, 3, 3, 3), False)
    >>> parse_step("maxpool k3 s2 p1").stride, parse_step("avgpool").stride
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


def step_from_dict(spec: Mapping[str, Any], number: int = 1) -> Step:
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


def step_text(step: Step) -> str:
    """A step written back in the step language (for steps that came from a mapping).

    >>> step_text(
    ...     step_from_dict({"op": "transposed", "filters": 32, "kernel": [2, 2], "stride": 2})
    ... )
    'transposed 32 k2 s2 same'
    >>> maxpool = {"op": "maxpool", "kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True}
    >>> step_text(step_from_dict(maxpool))
    'maxpool k3 s2 p1 ceil'
    """
    fields = FIELDS[step.kind]
    words = [step.function or step.kind]
    if step.filters is not None:
        words.append(str(step.filters))
    if "kernel" in fields:
        words.append(f"k{hw_text(step.kernel)}")
    if "stride" in fields and (
        step.stride != (1, 1) or step.kind in ("maxpool", "avgpool", "unpool")
    ):
        words.append(f"s{hw_text(step.stride)}")
    if "padding" in fields:
        words.append(
            step.padding if isinstance(step.padding, str) else f"p{padding_text(step.padding)}"
        )
    for field, prefix, default in (("dilation", "d", (1, 1)), ("output_padding", "op", (0, 0))):
        if field in fields and getattr(step, field) != default:
            words.append(f"{prefix}{hw_text(getattr(step, field))}")
    for field, prefix in (("groups", "g"), ("multiplier", "m")):
        if field in fields and getattr(step, field) != 1:
            words.append(f"{prefix}{getattr(step, field)}")
    if "bias" in fields and not step.bias:
        words.append("nobias")
    if step.ceil_mode:
        words.append("ceil")
    if step.pad_mode != "zeros":
        words.append(step.pad_mode)
    if step.output_size is not None:
        words.append(f"output_size={step.output_size[0]},{step.output_size[1]}")
    return " ".join(words)


def parse_steps(texts: Sequence[str]) -> list[Step]:
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
) -> Step:
    """The step of one ``convcli conv`` run, from its 4-D weight shape as the engine lays it out.

    ``(C_out, C_in/groups, kh, kw)``, or ``(C_in, C_out/groups, kh, kw)`` when ``transposed``.

    >>> conv_step((3, 1, 3, 3), 3, padding="valid").filters
    3
    """
    filters = weight_shape[1] * groups if transposed else weight_shape[0]
    step = Step(
        kind="transposed" if transposed else "conv",
        filters=filters,
        kernel=tuple(weight_shape[2:]),
        stride=tuple(stride),
        padding=padding,
        dilation=tuple(dilation),
        groups=groups,
        bias=bias,
        output_padding=tuple(output_padding),
        pad_mode=pad_mode,
        number=1,
    )
    try:
        _check_step(step)
    except _FieldError as exc:
        raise ParameterError(exc.message) from None
    return step
