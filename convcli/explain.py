"""``convcli explain``: shape traces of CNN layer stacks, and small convolutions worked by hand.

Pure functions returning data; the command (``convcli/commands/explain.py``) renders it.
Every size comes from ``convcli.geometry``; nothing here imports numba.

1. **The step language.** ``parse_step("conv 64 k7 s2 p3 nobias", 1)`` reads one layer;
   ``step_from_dict({"op": "conv", "filters": 64, "kernel": 7, ...}, 1)`` reads the same layer
   from a pipeline's mapping (both go through one validator). Grammar::

       step   := KIND token*
       token  := N (filters) | kN | kHxW (kernel / window) | sN (stride) | dN (dilation)
               | pN | pH,W | pT,B,L,R | valid | same | full (padding) | gN (groups)
               | mN (depth multiplier) | opN (output padding) | bias | nobias | ceil
               | zeros | reflect | replicate | circular | symmetric (pad mode)
               | field=value (filters, kernel, stride, padding, dilation, groups,
                              multiplier, output_padding, bias, ceil_mode, function,
                              output_size, pad_mode)

   ``channels N`` changes the channel count only (a pipeline's ``gray`` and ``select``);
   ``unpool`` takes ``output_size=H,W``, the size of the plane the indices point into.

2. **Traces.** ``trace(shape, steps)`` gives one ``Row`` per layer: output ``(H, W, C)``, the
   size formula filled in, parameters, multiply-adds and the receptive field so far.
3. **By hand.** ``by_hand_conv`` / ``by_hand_pool`` work a small matrix cell by cell;
   ``render_by_hand`` prints it; ``animation_frames`` draws it for a GIF.

>>> t = trace((224, 224, 3), parse_steps(["conv 64 k7 s2 p3 nobias", "maxpool k3 s2 p1"]))
>>> [(row.output, row.params, row.macs) for row in t.rows]      # the ResNet-50 stem
[((112, 112, 64), 9408, 118013952), ((56, 56, 64), 0, 0)]
>>> t.rows[0].arithmetic
('floor((224 + 3 + 3 - 7) / 2) + 1 = 112',)
>>> [(rf.size, rf.jump, rf.start) for rf, _ in (row.receptive_field for row in t.rows)]
[(7, 2, 0.0), (11, 4, 0.0)]
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Callable, Mapping, Optional, Sequence

from convcli import geometry
from convcli.errors import InputError, ParameterError, ShapeError
from convcli.geometry import PaddingSpec, Pair, ReceptiveField, Window, padding_text, shape_text, window_too_large
from convcli.limits import parse_real, parse_whole, shorten
from convcli.params import PAD_MODES, not_one_of, parse_pad_mode, parse_padding, parse_pair
from convcli.paths import require_regular_file

#: (H, W, C), the order of ``--input 224x224x3``.
Shape = tuple[int, int, int]
Pads = tuple[int, int, int, int]

#: Each step kind and the fields it takes, in the order they are listed in messages.
FIELDS: dict[str, tuple[str, ...]] = {
    "conv": ("filters", "kernel", "stride", "padding", "dilation", "groups", "bias", "pad_mode"),
    "depthwise": ("kernel", "stride", "padding", "dilation", "multiplier", "bias", "pad_mode"),
    "pointwise": ("filters", "stride", "groups", "bias"),
    "separable": ("filters", "kernel", "stride", "padding", "dilation", "multiplier", "bias", "pad_mode"),
    "transposed": ("filters", "kernel", "stride", "padding", "output_padding", "dilation", "groups", "bias"),
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
    "conv2d": "conv", "dw": "depthwise", "dwconv": "depthwise", "pw": "pointwise",
    "conv1x1": "pointwise", "sepconv": "separable", "dwsep": "separable",
    "deconv": "transposed", "convtranspose": "transposed", "convtranspose2d": "transposed",
    "upconv": "transposed", "max": "maxpool", "maxpool2d": "maxpool", "avg": "avgpool",
    "avgpool2d": "avgpool", "gap": "globalavgpool", "globalpool": "globalavgpool",
    "gmp": "globalmaxpool", "maxunpool": "unpool", "act": "activation", "bn": "batchnorm",
    "batchnorm2d": "batchnorm", "normalize": "normalise", "norm": "normalise",
}
#: Activations that may be written as the kind itself (``relu``) or as ``act relu``.
ACTIVATIONS = ("relu", "relu6", "leakyrelu", "gelu", "silu", "sigmoid", "tanh", "abs")
#: Padding of conv-like steps when none is given: ``same``, as ``convcli conv``; pools: ``valid``.
CONV_KINDS = ("conv", "depthwise", "pointwise", "separable", "transposed")

_SHORT = {"k": "kernel", "s": "stride", "p": "padding", "d": "dilation", "g": "groups",
          "m": "multiplier", "op": "output_padding"}
_SHORT_TOKEN = re.compile(r"(op|k|s|p|d|g|m)([0-9][0-9,x]*)")
_WORDS = {"valid": ("padding", "valid"), "same": ("padding", "same"), "full": ("padding", "full"),
          "bias": ("bias", True), "nobias": ("bias", False), "ceil": ("ceil_mode", True),
          **{mode: ("pad_mode", mode) for mode in PAD_MODES}}
_TOKEN_HELP = {"filters": "N", "kernel": "kN", "stride": "sN", "padding": "pN|valid|same|full",
               "dilation": "dN", "groups": "gN", "multiplier": "mN", "output_padding": "opN",
               "bias": "bias|nobias", "ceil_mode": "ceil", "function": "NAME",
               "output_size": "output_size=H,W", "pad_mode": "|".join(PAD_MODES)}

#: The conventions every trace states (also in the JSON output).
CONVENTIONS = {
    "shape": "H x W x C per step (rows, columns, channels)",
    "params": "weights C_in/groups * C_out * kh * kw, plus C_out biases; batchnorm: 2*C (scale and shift)",
    "macs": "multiply-adds of convolutions, bias excluded: C_out*H_out*W_out*(C_in/groups)*kh*kw; "
            "transposed: C_in*H_in*W_in*(C_out/groups)*kh*kw; pools and activations 0; FLOPs ~ 2*MACs",
    "receptive_field": "input pixels one output unit spans (Araujo et al., Distill 2019), the largest "
                       "over units; jump: input pixels between neighbouring outputs; start: centre of "
                       "output (0, 0) in input pixel indices (0 = centre of the first pixel, negative = "
                       "in the padding)",
}
SCHEMA_ID = "convcli-explain/1"


class _FieldError(Exception):
    """A bad value for one field of one step; the caller names the step and the token."""

    def __init__(self, field: Optional[str], message: str):
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Step:
    """One layer, validated. ``stride`` of pools defaults to the window; see the module docstring."""

    kind: str
    filters: Optional[int] = None
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
    output_size: Optional[Pair] = None
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


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not re.fullmatch(r"\s*[0-9]+\s*", str(value)):
        raise ParameterError(f"{name} must be a whole number, got {shorten(repr(value))}")
    return parse_whole(value, name, minimum=1)


def _pair(value: Any, name: str, minimum: int = 1) -> Pair:
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return parse_pair(str(value).lower().replace("x", ","), name, minimum)


def _padding(value: Any, name: str) -> PaddingSpec:
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return parse_padding(str(value))


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
    "filters": _count, "kernel": _pair, "stride": _pair, "padding": _padding, "dilation": _pair,
    "groups": _count, "multiplier": _count, "output_padding": lambda v, n: _pair(v, n, 0),
    "bias": _flag, "ceil_mode": _flag, "function": _function, "output_size": _pair,
    "pad_mode": lambda value, name: parse_pad_mode(str(value)),
}


def pool_padding_rule(padding: PaddingSpec, size: Pair, ceil_mode: bool) -> None:
    """Reject pooling paddings the engine rejects: ``full``, ``same`` with ceil mode, counts > k//2.

    >>> pool_padding_rule((2, 2, 0, 0), (3, 3), False)     # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    convcli.errors.ParameterError: pooling padding 2,0 is more than half the window 3x3: at most 1 rows ...
    """
    if padding == "full" or (padding == "same" and ceil_mode):
        what = "ceil mode with padding 'same'" if padding == "same" else "padding 'full'"
        raise ParameterError(f"pooling takes no {what}; use valid, same (Keras) or counts (PyTorch)")
    if isinstance(padding, tuple) and (max(padding[:2]) > size[0] // 2 or max(padding[2:]) > size[1] // 2):
        raise ParameterError(
            f"pooling padding {padding_text(padding)} is more than half the window {shape_text(size)}: at most "
            f"{size[0] // 2} rows and {size[1] // 2} columns per side (PyTorch's limit)"
        )


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


_EXAMPLES = {"conv": "conv 64 k3", "depthwise": "depthwise k3", "pointwise": "pointwise 64",
             "separable": "separable 128 k3", "transposed": "transposed 32 k2 s2",
             "channels": "channels 1"}


def _check_step(step: Step) -> None:
    """Rules between fields, as the engine applies them (so a trace never promises more)."""
    try:
        if step.kind in ("maxpool", "avgpool"):
            pool_padding_rule(step.padding, step.kernel, step.ceil_mode)
    except ParameterError as exc:
        raise _FieldError("padding", str(exc)) from None
    if step.kind in ("transposed", "unpool"):
        rules = "same, valid, N or H,W" if step.kind == "transposed" else "valid, N or H,W"
        rejected = ("full",) if step.kind == "transposed" else ("full", "same")
        if step.padding in rejected or (
            isinstance(step.padding, tuple) and step.padding[0::2] != step.padding[1::2]
        ):
            raise _FieldError("padding", f"{step.kind} takes padding {rules} (cropped from both sides)")
    if step.kind == "transposed":
        if any(op >= max(s, d) for op, s, d in zip(step.output_padding, step.stride, step.dilation)):
            raise _FieldError("output_padding", f"output padding {hw_text(step.output_padding)} must be "
                              f"smaller than the stride ({hw_text(step.stride)}) or the dilation "
                              f"({hw_text(step.dilation)})")
        if step.padding == "same" and any(step.output_padding):
            raise _FieldError("output_padding",
                              "output padding does not apply to padding 'same' (the output is input x stride)")


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
    >>> parse_step("conv 64 k0", 2)
    Traceback (most recent call last):
    ...
    convcli.errors.ParameterError: step 2 'conv 64 k0': token 'k0': kernel must be at least 1, got '0'
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
                raise ParameterError(f"step {number} {written!r}: token {token!r}: repeats the "
                                     f"{key.replace('_', ' ')} (already {tokens[key]!r})")
            spec[key], tokens[key] = value, token
        return _build(spec, number, written)
    except _FieldError as exc:
        where = f" token {tokens[exc.field]!r}:" if exc.field in tokens else ""
        raise ParameterError(f"step {number} {written!r}:{where} {exc.message}") from None


def step_from_dict(spec: Mapping[str, Any], number: int = 1) -> Step:
    """The same step from a mapping, as a pipeline file holds it: ``op`` plus field names.

    >>> step_from_dict({"op": "conv", "filters": 64, "kernel": 7, "stride": 2, "padding": 3,
    ...                 "bias": False}) == replace(parse_step("conv 64 k7 s2 p3 nobias"), text="")
    True
    >>> step_from_dict({"op": "maxpool", "groups": 2}, 4)     # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    convcli.errors.ParameterError: step 4: field 'groups': maxpool takes no groups (it takes kernel, ...)
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

    >>> step_text(step_from_dict({"op": "transposed", "filters": 32, "kernel": [2, 2], "stride": 2}))
    'transposed 32 k2 s2 same'
    >>> step_text(step_from_dict({"op": "maxpool", "kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True}))
    'maxpool k3 s2 p1 ceil'
    """
    fields = FIELDS[step.kind]
    words = [step.function or step.kind]
    if step.filters is not None:
        words.append(str(step.filters))
    if "kernel" in fields:
        words.append(f"k{hw_text(step.kernel)}")
    if "stride" in fields and (step.stride != (1, 1) or step.kind in ("maxpool", "avgpool", "unpool")):
        words.append(f"s{hw_text(step.stride)}")
    if "padding" in fields:
        words.append(step.padding if isinstance(step.padding, str) else f"p{padding_text(step.padding)}")
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


def conv_step(weight_shape: Sequence[int], groups: int, *, transposed: bool = False,
              stride: Pair = (1, 1), padding: PaddingSpec = "same", dilation: Pair = (1, 1),
              output_padding: Pair = (0, 0), bias: bool = False, pad_mode: str = "zeros") -> Step:
    """The step of one ``convcli conv`` run, from its 4-D weight shape as the engine lays it out.

    ``(C_out, C_in/groups, kh, kw)``, or ``(C_in, C_out/groups, kh, kw)`` when ``transposed``.

    >>> conv_step((3, 1, 3, 3), 3, padding="valid").filters
    3
    """
    filters = weight_shape[1] * groups if transposed else weight_shape[0]
    step = Step(kind="transposed" if transposed else "conv", filters=filters, kernel=tuple(weight_shape[2:]),
                stride=tuple(stride), padding=padding, dilation=tuple(dilation), groups=groups, bias=bias,
                output_padding=tuple(output_padding), pad_mode=pad_mode, number=1)
    try:
        _check_step(step)
    except _FieldError as exc:
        raise ParameterError(exc.message) from None
    return step


# --------------------------------------------------------------------------------------------
# Input shapes


def parse_shape(text: str) -> Shape:
    """``HxWxC``, or ``HxW`` for one channel.

    >>> parse_shape("224x224x3"), parse_shape("28x28")
    ((224, 224, 3), (28, 28, 1))
    """
    parts = str(text).lower().replace(" ", "").split("x")
    if len(parts) not in (2, 3) or not all(re.fullmatch(r"[0-9]+", p, re.ASCII) for p in parts):
        raise ParameterError(f"input {shorten(text)!r} is not HxWxC, HxW or an existing file")
    values = [parse_whole(p, f"input {shorten(text)!r}: a size") for p in parts] + [1] * (3 - len(parts))
    if min(values) < 1:
        raise ParameterError(f"input {shorten(text)!r} must have sizes of at least 1")
    return tuple(values)


def input_shape(spec: str) -> Shape:
    """The (H, W, C) a command would see: from ``HxWxC``/``HxW`` or a file's header only.

    Images: Pillow reads the size and mode without decoding (EXIF rotation swaps H and W;
    alpha is set aside as ``convcli conv`` does by default). ``.npy``: the header, via a
    read-only memory map.
    """
    if re.fullmatch(r"[0-9\sxX]+", str(spec)) and not os.path.exists(spec):
        return parse_shape(spec)
    if not os.path.exists(spec):
        raise InputError(f"input {spec!r} is neither HxWxC nor an existing file")
    require_regular_file(spec, "input")
    if spec.lower().endswith(".npy"):
        return _npy_shape(spec)
    return _image_shape(spec)


def _npy_shape(path: str) -> Shape:
    from convcli.images import read_npy_header  # a hostile header is a clean error

    try:
        with open(path, "rb") as handle:
            shape, dtype, _ = read_npy_header(handle, f"input {path!r}")
        kind = dtype.kind
    except OSError as exc:
        raise InputError(f"input {path!r} is not a readable .npy file ({exc})") from None
    if kind not in "biuf" or len(shape) not in (2, 3) or 0 in shape:
        raise InputError(f"input {path!r} has shape {shape} of kind {kind!r}; "
                         f"expected real numbers shaped (H, W) or (H, W, C)")
    return (shape[0], shape[1], shape[2] if len(shape) == 3 else 1)


def _orientation(img) -> int:
    """The EXIF orientation tag, without decoding: a PNG's ``getexif()`` loads the pixels to
    look for an eXIf chunk after them, so for PNG only a chunk before the pixels is read."""
    if img.format != "PNG":
        return img.getexif().get(0x0112, 1)
    from PIL import Image

    exif = Image.Exif()
    if img.info.get("exif"):
        exif.load(img.info["exif"])
    return exif.get(0x0112, 1)


def _image_formats() -> list:
    """The formats ``convcli conv`` reads (``images.READ_FORMATS``), as Pillow has them."""
    from PIL import Image

    from convcli.images import READ_FORMATS

    Image.init()
    return [name for name in READ_FORMATS if name in Image.OPEN]


def _image_shape(path: str) -> Shape:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # nothing is decoded; Pillow's notes on odd metadata are not the user's problem
            warnings.simplefilter("ignore")
            with Image.open(path, formats=_image_formats()) as img:
                (width, height), mode, bands = img.size, img.mode, img.getbands()
                orientation = _orientation(img)
    except UnidentifiedImageError:
        raise InputError(f"input {path!r} is not an image Pillow can read") from None
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"input {path!r} is corrupt or too large ({exc})") from None
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees
        height, width = width, height
    channels = 3 if mode in ("P", "PA", "CMYK") else sum(b not in ("A", "a", "X") for b in bands)
    return (height, width, channels)


# --------------------------------------------------------------------------------------------
# Traces


@dataclass(frozen=True)
class Row:
    """One traced layer. ``receptive_field`` is (rows, columns) for the stack up to here."""

    number: int
    label: str
    text: str
    kind: str
    input: Shape
    output: Optional[Shape] = None
    kernel: Optional[Pair] = None
    stride: Optional[Pair] = None
    dilation: Optional[Pair] = None
    groups: Optional[int] = None
    bias: Optional[bool] = None
    padding: Optional[Pads] = None
    output_padding: Optional[Pair] = None
    arithmetic: tuple[str, ...] = ()
    params: int = 0
    macs: int = 0
    receptive_field: Optional[tuple[ReceptiveField, ReceptiveField]] = None
    warnings: tuple[str, ...] = ()
    error: Optional[str] = None

    def to_dict(self) -> dict:
        rf = self.receptive_field
        return {
            "step": self.number, "label": self.label, "text": self.text, "kind": self.kind,
            "input": list(self.input), "output": _list(self.output),
            "kernel": _list(self.kernel), "stride": _list(self.stride), "dilation": _list(self.dilation),
            "groups": self.groups, "bias": self.bias, "padding": _list(self.padding),
            "output_padding": _list(self.output_padding), "arithmetic": list(self.arithmetic),
            "params": self.params, "macs": self.macs,
            "receptive_field": None if rf is None else {
                "size": [axis.size for axis in rf],
                "jump": [_number(axis.jump) for axis in rf],
                "start": [axis.start for axis in rf],
            },
            "warnings": list(self.warnings), "error": self.error,
        }


def _list(values: Optional[Sequence[int]]) -> Optional[list[int]]:
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
    def error(self) -> Optional[str]:
        """The failing step's message, with its number and text, or None."""
        bad = next((row for row in self.rows if row.error), None)
        return None if bad is None else f"step {bad.label} {bad.text!r}: {bad.error}"

    @property
    def output(self) -> Optional[Shape]:
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
            "total": {"params": self.params, "macs": self.macs, "output": _list(self.output),
                      "receptive_field": fields[-1] if fields else None},
            "error": self.error,
        }


def trace(input_shape: Shape, steps: Sequence[Step], source: str = "") -> Trace:
    """Trace ``steps`` from an ``(H, W, C)`` input; stops at the first step that cannot run.

    >>> distill = parse_steps(["conv 1 k3 s1 p1", "conv 1 k3 s2 p1", "maxpool k2 s2", "conv 1 k3 d2 p2"])
    >>> [(row.output[0], row.receptive_field[0]) for row in trace((32, 32, 1), distill).rows]
    ... # doctest: +NORMALIZE_WHITESPACE
    [(32, ReceptiveField(size=3, jump=1, start=0.0)), (16, ReceptiveField(size=5, jump=2, start=0.0)),
     (8, ReceptiveField(size=7, jump=4, start=1.0)), (8, ReceptiveField(size=23, jump=4, start=1.0))]
    >>> trace((5, 5, 1), parse_steps(["conv 8 k7 valid"])).error
    "step 1 'conv 8 k7 valid': kernel 7x7 is larger than the padded input 5x5 (input 5x5, padding valid)"
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
                notes.append(f"the receptive field ({shape_text((rf[0].size, rf[1].size))}) is larger than "
                             f"the {shape_text(input_shape[:2])} input: outer units see padding")
            rows.append(replace(row, receptive_field=rf, warnings=tuple(notes)))
            shape = row.output
    return Trace(tuple(input_shape), tuple(rows), source, _frozen(windows))


def _frozen(windows: tuple[list[Window], list[Window]]) -> tuple[tuple[Window, ...], tuple[Window, ...]]:
    return tuple(windows[0]), tuple(windows[1])


def _layers(step: Step) -> list[tuple[str, Step]]:
    """A separable step is two layers: depthwise (no bias, as Keras) then pointwise."""
    if step.kind != "separable":
        return [(str(step.number), step)]
    depthwise = replace(step, kind="depthwise", bias=False, filters=None, text=f"{step.text} (depthwise)")
    pointwise = replace(step, kind="pointwise", kernel=(1, 1), stride=(1, 1), padding="valid", dilation=(1, 1),
                        multiplier=1, text=f"{step.text} (pointwise)")
    return [(f"{step.number}a", depthwise), (f"{step.number}b", pointwise)]


def _row(step: Step, label: str, shape: Shape) -> tuple[Row, Optional[tuple[Window, Window]]]:
    base = Row(number=step.number, label=label, text=step.text or step_text(step), kind=step.kind, input=shape)
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
        return replace(base, output=(height, width, step.filters),
                       arithmetic=(f"{channels} -> {step.filters} channels",)), None
    params = 2 * channels if step.kind == "batchnorm" else 0
    return replace(base, output=shape, arithmetic=("shape kept",), params=params), None


def _axes(in_hw: Sequence[int], kernel: Pair, stride: Pair, dilation: Pair, pads: Pads) -> list[tuple]:
    """Per axis (rows, then columns): (size, kernel, stride, dilation, pad_before, pad_after)."""
    return [(in_hw[a], kernel[a], stride[a], dilation[a], pads[2 * a], pads[2 * a + 1]) for a in (0, 1)]


def _per_axis(texts: Sequence[str]) -> tuple[str, ...]:
    return (texts[0],) if texts[0] == texts[1] else (f"rows: {texts[0]}", f"cols: {texts[1]}")


def _reach(kernel: int, dilation: int) -> str:
    """What the size formula subtracts for the kernel: ``k``, or PyTorch's ``d*(k - 1) - 1``."""
    return f"{kernel}" if dilation == 1 else f"{dilation}*({kernel} - 1) - 1"


def _conv_formula(size, kernel, stride, dilation, before, after, out, rounding="floor") -> str:
    return f"{rounding}(({size} + {before} + {after} - {_reach(kernel, dilation)}) / {stride}) + 1 = {out}"


_PLURALS = {"row": "rows", "column": "columns", "row and column": "rows and columns"}


def _fit_warnings(axes: Sequence[tuple], padding: PaddingSpec, pads: Pads, check_fit: bool = True) -> list[str]:
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
        notes.append(f"same at stride {hw_text([axis[2] for axis in axes])} pads top {pads[0]}, "
                     f"bottom {pads[1]}, left {pads[2]}, right {pads[3]} (TensorFlow: the odd pixel goes "
                     f"bottom/right); PyTorch rejects padding='same' at stride > 1 and its symmetric "
                     f"padding cannot reproduce this")
    return notes


def _conv_row(step: Step, base: Row) -> tuple[Row, Optional[tuple[Window, Window]]]:
    height, width, channels = base.input
    if step.kind == "depthwise":
        groups, c_out = channels, channels * step.multiplier
    else:
        groups, c_out = step.groups, step.filters
    base = replace(base, kernel=step.kernel, stride=step.stride, dilation=step.dilation, groups=groups,
                   bias=step.bias)
    if channels % groups or c_out % groups:
        return replace(base, error=f"groups {groups} must divide both the input channels ({channels}) "
                                   f"and the filters ({c_out})"), None
    pads = geometry.resolve_padding(step.padding, (height, width), step.kernel, step.stride, step.dilation)
    out_hw = geometry.conv2d_output_shape((height, width), step.kernel, step.stride, step.dilation, pads)
    axes = _axes((height, width), step.kernel, step.stride, step.dilation, pads)
    arithmetic = _per_axis([_conv_formula(*axis, out) for axis, out in zip(axes, out_hw)])
    base = replace(base, padding=pads, arithmetic=arithmetic)
    if min(out_hw) < 1:
        return replace(base, error=window_too_large("kernel", (height, width), step.kernel, step.dilation, pads,
                                              step.padding)), None
    shortfall = geometry.border_shortfall((height, width), pads, step.pad_mode)
    if shortfall:
        return replace(base, error=shortfall), None
    kh, kw = step.kernel
    per_output = (channels // groups) * kh * kw
    row = replace(
        base, output=out_hw + (c_out,), params=c_out * per_output + (c_out if step.bias else 0),
        macs=c_out * out_hw[0] * out_hw[1] * per_output,
        warnings=tuple(_fit_warnings(axes, step.padding, pads)),
    )
    return row, tuple(Window(k, s, d, before) for _, k, s, d, before, _ in axes)


def _transposed_row(step: Step, base: Row) -> tuple[Row, Optional[tuple[Window, Window]]]:
    height, width, channels = base.input
    groups, c_out = step.groups, step.filters
    base = replace(base, kernel=step.kernel, stride=step.stride, dilation=step.dilation, groups=groups,
                   bias=step.bias, output_padding=step.output_padding)
    if channels % groups or c_out % groups:
        return replace(base, error=f"groups {groups} must divide both the input channels ({channels}) "
                                   f"and the filters ({c_out})"), None
    axes = list(zip((height, width), step.kernel, step.stride, step.dilation))
    if step.padding == "same":  # Keras Conv2DTranspose: input x stride, aligned by a TF SAME crop
        crops = [geometry.transposed_same_crop(*axis) for axis in axes]
        out_hw = (height * step.stride[0], width * step.stride[1])
    else:
        pad = (0, 0) if step.padding == "valid" else step.padding[0::2]
        crops = [(p, p - op) for p, op in zip(pad, step.output_padding)]
        out_hw = tuple(geometry.transposed_output_size(*axis, p, op)
                       for axis, p, op in zip(axes, pad, step.output_padding))
    pads = (crops[0][0], crops[0][1], crops[1][0], crops[1][1])
    texts = _transposed_formulas((height, width), step.kernel, step.stride, step.dilation, step.padding,
                                 step.output_padding, out_hw)
    base = replace(base, padding=pads, arithmetic=texts)
    if min(out_hw) < 1:
        return replace(base, error=f"padding {padding_text(step.padding)} crops away the whole transposed "
                                   f"output (input {shape_text((height, width))}, kernel "
                                   f"{shape_text(step.kernel)})"), None
    kh, kw = step.kernel
    per_input = (c_out // groups) * kh * kw
    row = replace(base, output=out_hw + (c_out,), params=channels * per_input + (c_out if step.bias else 0),
                  macs=channels * height * width * per_input)
    return row, tuple(Window(k, s, d, crop[0], transposed=True) for (_, k, s, d), crop in zip(axes, crops))


def _transposed_formulas(in_hw: Sequence[int], kernel: Pair, stride: Pair, dilation: Pair,
                         padding: PaddingSpec, output_padding: Pair, out_hw: Sequence[int]) -> tuple[str, ...]:
    """The transposed output size filled in, per axis (PyTorch's formula, or Keras ``same``)."""
    if padding == "same":
        return _per_axis([f"{size} * {s} = {out} (Keras same)" for size, s, out in zip(in_hw, stride, out_hw)])
    pad = (0, 0) if padding == "valid" else padding[0::2]
    return _per_axis([f"({size} - 1)*{s} - 2*{p} + {d}*({k} - 1) + {op} + 1 = {out}"
                      for size, k, s, d, p, op, out in zip(in_hw, kernel, stride, dilation, pad, output_padding,
                                                           out_hw)])


def _pool_row(step: Step, base: Row) -> tuple[Row, Optional[tuple[Window, Window]]]:
    height, width, channels = base.input
    base = replace(base, kernel=step.kernel, stride=step.stride, dilation=step.dilation)
    pads = geometry.resolve_padding(step.padding, (height, width), step.kernel, step.stride, step.dilation)
    axes = _axes((height, width), step.kernel, step.stride, step.dilation, pads)
    out_hw = tuple(geometry.pool_output_size(*axis, step.ceil_mode) for axis in axes)
    texts = []
    for (size, kernel, stride, dilation, before, after), out in zip(axes, out_hw):
        rounding = "ceil" if step.ceil_mode else "floor"
        text = _conv_formula(size, kernel, stride, dilation, before, after, out, rounding)
        # ceil((x)/s) is floor((x + s - 1)/s): the count before PyTorch drops a last window
        unruled = geometry.pool_output_size(size, kernel, stride, dilation, before, after + stride - 1)
        if step.ceil_mode and out < unruled:
            text = text.replace(f" = {out}", f" - 1 = {out} (a last window may not start in the padding)")
        texts.append(text)
    base = replace(base, padding=pads, arithmetic=_per_axis(texts))
    if min(out_hw) < 1:
        error = window_too_large("pooling window", (height, width), step.kernel, step.dilation, pads, step.padding)
        return replace(base, error=error), None
    row = replace(base, output=out_hw + (channels,),
                  warnings=tuple(_fit_warnings(axes, step.padding, pads, check_fit=not step.ceil_mode)))
    return row, tuple(Window(k, s, d, before) for _, k, s, d, before, _ in axes)


def _unpool_row(step: Step, base: Row) -> tuple[Row, Optional[tuple[Window, Window]]]:
    height, width, channels = base.input
    pad = (0, 0) if step.padding == "valid" else step.padding[0::2]
    base = replace(base, kernel=step.kernel, stride=step.stride, padding=(pad[0], pad[0], pad[1], pad[1]))
    axes = list(zip((height, width), step.kernel, step.stride, pad))
    try:
        out_hw = geometry.unpool_output_shape((height, width), step.kernel, step.stride, pad, step.output_size)
    except ParameterError as exc:
        return replace(base, error=str(exc)), None
    defaults = [geometry.unpool_output_size(*axis) for axis in axes]
    texts = [f"({size} - 1)*{stride} - 2*{p} + {kernel} = {default}" + ("" if out == default else f", output_size {out}")
             for (size, kernel, stride, p), default, out in zip(axes, defaults, out_hw)]
    base = replace(base, arithmetic=_per_axis(texts))
    if min(out_hw) < 1:
        return replace(base, error=f"padding {padding_text(step.padding)} leaves no output"), None
    return replace(base, output=out_hw + (channels,)), tuple(
        Window(k, s, 1, p, transposed=True) for _, k, s, p in axes)


# --------------------------------------------------------------------------------------------
# Text helpers shared with the command


def hw_text(values: Sequence[Any]) -> str:
    """``7`` when both axes agree, else ``7x5``; fractions as ``1/2``.

    >>> hw_text((3, 3)), hw_text((3, 1)), hw_text((Fraction(1, 2), Fraction(1, 2)))
    ('3', '3x1', '1/2')
    """
    texts = [number_text(v) for v in values]
    return texts[0] if len(set(texts)) == 1 else "x".join(texts)


def number_text(value: Any) -> str:
    """A number as short as exact: ``3``, ``-1.5``, ``1/3``, ``0.3333`` (floats to 4 digits).

    >>> [number_text(v) for v in (3.0, -0.0, 2.5, Fraction(1, 3), 1 / 3, None)]
    ['3', '0', '2.5', '1/3', '0.3333', '-']
    """
    if value is None:
        return "-"
    if isinstance(value, Fraction):
        return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}"


# --------------------------------------------------------------------------------------------
# By hand

#: Largest matrix side worked by hand (the point is to read every number).
MAX_BY_HAND = 32
#: Most output cells drawn in a ``--gif`` animation (one frame each).
MAX_GIF_CELLS = 400


def parse_matrix(text: str) -> list[list[float]]:
    """Rows separated by ``;`` or new lines, values by ``,`` or spaces.

    >>> parse_matrix("1,2,0; 4 1 1")
    [[1.0, 2.0, 0.0], [4.0, 1.0, 1.0]]
    """
    return one_plane(parse_planes(text), f"matrix {shorten(text)!r}")


def parse_planes(text: str) -> list[list[list[float]]]:
    """A matrix of several channels, as planes (C, H, W): each value ``a|b|c`` holds a cell's channels.

    >>> parse_planes("1|10, 2|20; 3|30, 4|40")
    [[[1.0, 2.0], [3.0, 4.0]], [[10.0, 20.0], [30.0, 40.0]]]
    """
    rows = [r.replace(",", " ").split() for r in re.split(r"[;\n]", str(text)) if r.strip()]
    where = f"matrix {shorten(text)!r}"
    cells = [[[parse_real(v, f"{where}: value", finite=False) for v in cell.split("|")] for cell in row]
             for row in rows]
    depths = {len(cell) for row in cells for cell in row}
    if len(depths) > 1:
        raise ParameterError(f"{where}: every cell must have the same number of |-separated channels")
    planes = [[[cell[c] for cell in row] for row in cells] for c in range(max(depths, default=1))]
    return [_check_matrix(plane, where) for plane in planes]


def load_matrix(spec: str) -> list[list[float]]:
    """A small 2-D matrix from inline text (``parse_matrix``) or a ``.npy`` file ((H, W) or (H, W, 1))."""
    return one_plane(load_planes(spec), f"matrix file {spec!r}" if str(spec).lower().endswith(".npy")
                      else f"matrix {shorten(spec)!r}")


def one_plane(planes: list, where: str) -> list[list[float]]:
    """The only plane of ``planes``; several are an ``InputError`` naming ``where``."""
    if len(planes) != 1:
        raise InputError(f"{where} has {len(planes)} channels; by hand takes one here")
    return planes[0]


def load_planes(spec: str) -> list[list[list[float]]]:
    """Small planes (C, H, W) from inline text (``parse_planes``) or a ``.npy`` file ((H, W) or (H, W, C))."""
    if not str(spec).lower().endswith(".npy"):
        return parse_planes(spec)
    require_regular_file(spec, "matrix file")
    try:
        from convcli.images import load_npy  # checks the header first: no 40 GB from a tiny file

        array = load_npy(spec, f"matrix file {spec!r}")
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"matrix file {spec!r} is not a readable .npy file ({exc})") from None
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.dtype.kind not in "biuf" or array.shape[2] > MAX_BY_HAND:
        raise InputError(f"matrix file {spec!r} holds {array.dtype} {array.shape}; "
                         f"by hand takes a real (H, W) or (H, W, C) matrix")
    return [_check_matrix(plane, f"matrix file {spec!r}") for plane in array.astype(float).transpose(2, 0, 1).tolist()]


def _check_matrix(matrix: list[list[float]], where: str) -> list[list[float]]:
    if not matrix or len({len(row) for row in matrix}) != 1:
        raise ParameterError(f"{where}: rows must all have the same number of values")
    if len(matrix) > MAX_BY_HAND or len(matrix[0]) > MAX_BY_HAND:
        raise ParameterError(f"{where}: {len(matrix)}x{len(matrix[0])} is too large to work by hand "
                             f"(at most {MAX_BY_HAND}x{MAX_BY_HAND})")
    if not all(v == v and abs(v) != float("inf") for row in matrix for v in row):
        raise ParameterError(f"{where}: values must be finite")
    return matrix


@dataclass(frozen=True)
class Cell:
    """One output cell worked out: the taps of its window and how they combine.

    ``positions`` are input (row, column) indices (negative or past the end: padding);
    ``values`` are None in padding that holds nothing (zeros; pools), else the border value
    the pad mode reads; ``products`` are value x weight (conv only); ``winner`` (max pooling)
    is the (row, column) of the window's maximum: the first in row-major order on ties,
    never a padding cell.
    """

    row: int
    col: int
    positions: tuple[Pair, ...]
    values: tuple[Optional[float], ...]
    weights: tuple[float, ...]
    products: tuple[float, ...]
    total: float
    divisor: int
    value: float
    winner: Optional[Pair] = None


@dataclass(frozen=True)
class Worked:
    """A small convolution (``op="conv"``) or pooling (``"max"``, ``"avg"``) to show by hand.

    ``image`` is the unpadded matrix; ``pads`` (top, bottom, left, right) come from geometry;
    ``weights`` (conv) are used as correlated, then ``/ scale + offset`` as ``convcli conv`` does;
    ``pad_mode`` (conv) fills the padding as ``conv --pad-mode`` does.
    """

    op: str
    image: tuple[tuple[float, ...], ...]
    size: Pair
    stride: Pair
    dilation: Pair
    padding: PaddingSpec
    pads: Pads
    output_hw: Pair
    arithmetic: tuple[str, ...]
    weights: tuple[tuple[float, ...], ...] = ()
    scale: float = 1.0
    offset: float = 0.0
    count_include_pad: bool = True
    name: str = ""
    pad_mode: str = "zeros"

    def inside(self, row: int, col: int) -> bool:
        """Whether (row, col) lies in the matrix, not in its padding."""
        return 0 <= row < len(self.image) and 0 <= col < len(self.image[0])

    def value_at(self, row: int, col: int) -> Optional[float]:
        """The input value at (row, col); in the padding, the value the pad mode reads there
        (``correlate.source_index``), None for zeros.

        >>> worked = by_hand_conv([[1, 2, 3]], [[1, 1, 1]], padding=(0, 0, 2, 2), pad_mode="symmetric")
        >>> [worked.value_at(0, c) for c in range(-2, 5)]      # b a | a b c | c b
        [2.0, 1.0, 1.0, 2.0, 3.0, 3.0, 2.0]
        """
        if self.inside(row, col):
            return self.image[row][col]
        if self.pad_mode == "zeros":
            return None
        import numpy as np

        from convcli.correlate import source_index

        row, col = (int(source_index(np.array([at]), size, self.pad_mode)[0])
                    for at, size in ((row, len(self.image)), (col, len(self.image[0]))))
        return self.image[row][col]

    def cell(self, i: int, j: int) -> Cell:
        """Output cell (i, j), worked out tap by tap.

        >>> seed = by_hand_conv(SEED_IMAGE, [[1, 0, -1]] * 3)
        >>> seed.cell(0, 1).products, seed.cell(0, 1).value
        ((2.0, 0.0, -1.0, 1.0, 0.0, -0.0, 2.0, 0.0, -1.0), 3.0)
        """
        h_out, w_out = self.output_hw
        if not (0 <= i < h_out and 0 <= j < w_out):
            raise ParameterError(f"cell {i},{j} is outside the {h_out}x{w_out} output "
                                 f"(rows and columns count from 0)")
        (kh, kw), (sh, sw), (dh, dw) = self.size, self.stride, self.dilation
        top, left = self.pads[0], self.pads[2]
        positions = tuple((i * sh - top + m * dh, j * sw - left + n * dw) for m in range(kh) for n in range(kw))
        values = tuple(self.value_at(r, c) for r, c in positions)
        real = [v for v in values if v is not None]
        if self.op == "conv":
            weights = tuple(w for row in self.weights for w in row)
            products = tuple((v or 0.0) * w for v, w in zip(values, weights))
            total = sum(products)
            return Cell(i, j, positions, values, weights, products, total, 1, total / self.scale + self.offset)
        if self.op == "max":  # pad cells never win (PyTorch pads with -inf; TF ignores them)
            total, winner = float("-inf"), None
            for value, at in zip(values, positions):  # row-major; a strict > keeps the first of a tie
                if value is not None and (winner is None or value > total):
                    total, winner = value, at
            return Cell(i, j, positions, values, (), (), total, 1, total, winner)
        total = sum(real)
        divisor = len(real)
        if self.count_include_pad and self.padding != "same":  # PyTorch: pads count, ceil overhang never
            height, width = len(self.image), len(self.image[0])
            top, bottom, left, right = self.pads
            divisor = sum(-top <= r < height + bottom and -left <= c < width + right for r, c in positions)
        return Cell(i, j, positions, values, (), (), total, divisor, total / divisor)

    def output(self) -> list[list[float]]:
        """The whole output, each cell computed as ``cell`` shows it."""
        return [[self.cell(i, j).value for j in range(self.output_hw[1])] for i in range(self.output_hw[0])]

    def indices(self) -> list[list[Optional[int]]]:
        """Max pooling: each window's argmax as the flat index ``r*W + c`` in the unpadded input
        (PyTorch's ``return_indices``); None for a (dilated) window that holds only padding.

        >>> by_hand_pool([[1, 3, 2, 0], [4, 6, 1, 2], [0, 2, 5, 3], [1, 2, 2, 4]], "max").indices()
        [[5, 2], [9, 10]]
        """
        width = len(self.image[0])
        winners = ((self.cell(i, j).winner for j in range(self.output_hw[1])) for i in range(self.output_hw[0]))
        return [[None if at is None else at[0] * width + at[1] for at in row] for row in winners]

    def routed_ones(self) -> list[list[int]]:
        """Max pooling's backward pass for a gradient of ones on the output (``d sum(output) / d input``):
        each window's 1 goes to its argmax, every other cell gets 0; a cell that wins several
        overlapping windows gets their count; a window of only padding routes nothing.

        >>> by_hand_pool([[1, 2, 3]], "max", (1, 2), stride=(1, 1)).routed_ones()   # 2, then 3 win
        [[0, 1, 1]]
        >>> by_hand_pool([[1, 5, 3]], "max", (1, 2), stride=(1, 1)).routed_ones()   # 5 wins both windows
        [[0, 2, 0]]
        """
        if self.op != "max":
            raise ParameterError(f"only max pooling routes its gradient to an argmax, not {self.op}")
        counts = [[0] * len(self.image[0]) for _ in self.image]
        for i in range(self.output_hw[0]):
            for j in range(self.output_hw[1]):
                winner = self.cell(i, j).winner
                if winner is not None:
                    counts[winner[0]][winner[1]] += 1
        return counts


SEED_IMAGE = [[1, 2, 0, 1, 3], [4, 1, 1, 0, 2], [0, 2, 3, 1, 1], [1, 0, 2, 2, 0], [3, 1, 0, 1, 2]]


def by_hand_conv(image: Sequence[Sequence[float]], weights: Sequence[Sequence[float]], *, stride: Pair = (1, 1),
                 padding: PaddingSpec = "valid", dilation: Pair = (1, 1), scale: float = 1.0,
                 offset: float = 0.0, name: str = "", pad_mode: str = "zeros") -> Worked:
    """A 2-D cross-correlation of a small matrix, as ``convcli conv`` (``pad_mode`` as its
    ``--pad-mode``).

    >>> by_hand_conv(SEED_IMAGE, [[1, 0, -1]] * 3).output()      # the seeds' vertical edges
    [[1.0, 3.0, -2.0], [-1.0, 0.0, 3.0], [-1.0, -1.0, 2.0]]
    """
    image = _check_matrix([[float(v) for v in row] for row in image], "matrix")
    weights = tuple(tuple(float(v) for v in row) for row in weights)
    size = (len(weights), len(weights[0]))
    in_hw = (len(image), len(image[0]))
    pads = geometry.resolve_padding(padding, in_hw, size, stride, dilation)
    out_hw = geometry.conv2d_output_shape(in_hw, size, stride, dilation, pads)
    axes = _axes(in_hw, size, stride, dilation, pads)
    arithmetic = _per_axis([_conv_formula(*axis, out) for axis, out in zip(axes, out_hw)])
    if min(out_hw) < 1:
        raise ShapeError(window_too_large("kernel", in_hw, size, dilation, pads, padding))
    shortfall = geometry.border_shortfall(in_hw, pads, parse_pad_mode(pad_mode))
    if shortfall:
        raise ShapeError(shortfall)
    return Worked("conv", tuple(map(tuple, image)), size, tuple(stride), tuple(dilation), padding, pads, out_hw,
                  arithmetic, weights, scale, offset, name=name, pad_mode=parse_pad_mode(pad_mode))


def by_hand_pool(image: Sequence[Sequence[float]], mode: str, size: Pair = (2, 2), *,
                 stride: Optional[Pair] = None, padding: PaddingSpec = "valid", dilation: Pair = (1, 1),
                 ceil_mode: bool = False, count_include_pad: bool = True) -> Worked:
    """Max or average pooling of a small matrix, as ``convcli pool`` (PyTorch; ``same`` as Keras).

    >>> by_hand_pool([[1, 3, 2, 0], [4, 6, 1, 2], [0, 2, 5, 3], [1, 2, 2, 4]], "max").output()
    [[6.0, 2.0], [2.0, 5.0]]
    """
    if mode not in ("max", "avg"):
        raise ParameterError(f"pooling mode {mode!r} is not max or avg")
    if mode == "avg" and tuple(dilation) != (1, 1):
        raise ParameterError("average pooling takes no dilation (as PyTorch)")
    stride = tuple(size) if stride is None else tuple(stride)
    pool_padding_rule(padding, size, ceil_mode)
    image = _check_matrix([[float(v) for v in row] for row in image], "matrix")
    in_hw = (len(image), len(image[0]))
    pads = geometry.resolve_padding(padding, in_hw, size, stride, dilation)
    axes = _axes(in_hw, size, stride, dilation, pads)
    out_hw = tuple(geometry.pool_output_size(*axis, ceil_mode) for axis in axes)
    rounding = "ceil" if ceil_mode else "floor"
    arithmetic = _per_axis([_conv_formula(*axis, out, rounding) for axis, out in zip(axes, out_hw)])
    if min(out_hw) < 1:
        raise ShapeError(window_too_large("pooling window", in_hw, size, dilation, pads, padding))
    return Worked(mode, tuple(map(tuple, image)), tuple(size), stride, tuple(dilation), padding, pads, out_hw,
                  arithmetic, count_include_pad=count_include_pad)


@dataclass(frozen=True)
class Channels:
    """A convolution of a several-channel matrix with a ``(C_in, kh, kw)`` kernel (one filter of a
    bank): each channel correlated with its slice, then the sum over channels (the seeds'
    ``sum over m, n, c``), then ``/ scale + offset``.
    """

    planes: tuple[Worked, ...]
    scale: float = 1.0
    offset: float = 0.0
    name: str = ""
    out_channel: Optional[int] = None

    @property
    def output_hw(self) -> Pair:
        return self.planes[0].output_hw

    def output(self) -> list[list[float]]:
        """Every cell: the sum over channels of each channel's sum of products.

        >>> by_hand_channels([[[1, 2]], [[10, 20]]], [[[1, 1]], [[1, -1]]]).output()
        [[-7.0]]
        """
        h, w = self.output_hw
        return [[sum(p.cell(i, j).total for p in self.planes) / self.scale + self.offset for j in range(w)]
                for i in range(h)]


def by_hand_channels(planes: Sequence[Sequence[Sequence[float]]], weights: Sequence[Sequence[Sequence[float]]],
                     *, stride: Pair = (1, 1), padding: PaddingSpec = "valid", dilation: Pair = (1, 1),
                     scale: float = 1.0, offset: float = 0.0, name: str = "",
                     out_channel: Optional[int] = None) -> Channels:
    """Planes (C, H, W) correlated with a ``(C, kh, kw)`` kernel and summed over channels, as
    ``convcli conv`` with a 3-D kernel (PyTorch ``conv2d`` with one filter)."""
    if len(planes) != len(weights):
        raise ShapeError(f"the kernel has {len(weights)} input channels and the matrix {len(planes)}")
    worked = tuple(by_hand_conv(plane, kernel, stride=stride, padding=padding, dilation=dilation)
                   for plane, kernel in zip(planes, weights))
    return Channels(worked, scale, offset, name, out_channel)


def render_channels(channels: Channels, cells: Sequence[Pair]) -> str:
    """Plain text: each chosen cell worked channel by channel, then summed over the channels.

    >>> print(render_channels(by_hand_channels([[[1, 2]], [[10, 20]]], [[[1, 1]], [[1, -1]]]), [(0, 0)]))
    1x2x2 input, 2x1x2 kernel (C_in x kh x kw), stride 1, dilation 1, padding valid
    output size: rows: floor((1 + 0 + 0 - 1) / 1) + 1 = 1
    output size: cols: floor((2 + 0 + 0 - 2) / 1) + 1 = 1
    <BLANKLINE>
    output[0, 0]: window rows 0, columns 0..1
      channel 0:  1 2  x  1 1  =  1 2     sum 3
      channel 1:  10 20  x   1 -1  =   10 -20     sum -10
      sum over m, n, c: 3 - 10 = -7
    <BLANKLINE>
    output (1x1):
      -7
    """
    first = channels.planes[0]
    (h, w), c_in, (kh, kw) = _hw(first.image), len(channels.planes), first.size
    bank = f", output channel {channels.out_channel} of the bank" if channels.out_channel is not None else ""
    name = f" {channels.name!r}" if channels.name else ""
    lines = [f"{h}x{w}x{c_in} input, {c_in}x{kh}x{kw} kernel{name} (C_in x kh x kw){bank}, "
             f"stride {hw_text(first.stride)}, dilation {hw_text(first.dilation)}, "
             f"padding {padding_text(first.padding)}"]
    lines += [f"output size: {text}" for text in first.arithmetic]
    for i, j in cells:
        parts = [plane.cell(i, j) for plane in channels.planes]
        rows = sorted({r for r, _ in parts[0].positions})
        cols = sorted({c for _, c in parts[0].positions})
        lines += ["", f"output[{i}, {j}]: window rows {_index_text(rows)}, columns {_index_text(cols)}"]
        for c, (plane, cell) in enumerate(zip(channels.planes, parts)):
            window = _grid([[_tap(v, plane) for v in cell.values[m * kw:(m + 1) * kw]] for m in range(kh)])
            weights = _grid([[number_text(v) for v in cell.weights[m * kw:(m + 1) * kw]] for m in range(kh)])
            products = _grid([[number_text(v) for v in cell.products[m * kw:(m + 1) * kw]] for m in range(kh)])
            block = _side_by_side([window, weights, products, [f" sum {number_text(cell.total)}"]], ["x", "=", ""])
            lines += [f"  channel {c}:  " + block[0].lstrip()] if kh == 1 else [f"  channel {c}:"]
            lines += [] if kh == 1 else ["    " + line for line in block]
        total = sum(cell.total for cell in parts)
        result = f"sum over m, n, c: {_sum_text([cell.total for cell in parts])} = {number_text(total)}"
        if channels.scale != 1 or channels.offset != 0:
            result += (f"; / scale {number_text(channels.scale)} + offset {number_text(channels.offset)}"
                       f" = {number_text(total / channels.scale + channels.offset)}")
        lines.append("  " + result)
    lines += ["", f"output ({channels.output_hw[0]}x{channels.output_hw[1]}):"]
    lines += ["  " + line for line in _grid([[number_text(v) for v in row] for row in channels.output()])]
    return "\n".join(lines)


@dataclass(frozen=True)
class Scattered:
    """A small transposed convolution by hand, as ``convcli conv --transpose`` (PyTorch
    ``conv_transpose2d``, Keras ``same``): the scatter, and the direct convolution it equals.

    Input cell (i, j) adds ``value x kernel`` at output rows ``i*s + m*d - crop[0]`` and columns
    ``j*s + n*d - crop[1]``; products landing outside ``output_hw`` are cropped by the padding;
    output padding adds rows and columns at the bottom/right where nothing may land.
    """

    image: tuple[tuple[float, ...], ...]
    weights: tuple[tuple[float, ...], ...]
    stride: Pair
    dilation: Pair
    padding: PaddingSpec
    output_padding: Pair
    crop: Pair
    output_hw: Pair
    arithmetic: tuple[str, ...]
    scale: float = 1.0
    offset: float = 0.0
    name: str = ""

    @property
    def full_hw(self) -> Pair:
        """The output before any crop: ``(i - 1)*s + d*(k - 1) + 1`` per axis."""
        size = (len(self.weights), len(self.weights[0]))
        in_hw = (len(self.image), len(self.image[0]))
        return tuple(geometry.transposed_output_size(*axis) for axis in zip(in_hw, size, self.stride, self.dilation))

    def landings(self, i: int, j: int) -> tuple[tuple[int, int, float, float], ...]:
        """Where input cell (i, j) adds: (output row, output column, weight, value x weight) per tap.

        >>> up = by_hand_transposed([[1, 2], [3, 4]], [[1, 1], [1, 1]], stride=(2, 2))
        >>> up.landings(0, 1)[:2], up.output()[0]
        (((0, 2, 1.0, 2.0), (0, 3, 1.0, 2.0)), [1.0, 1.0, 2.0, 2.0])
        """
        (sh, sw), (dh, dw), (top, left) = self.stride, self.dilation, self.crop
        value = self.image[i][j]
        return tuple((i * sh + m * dh - top, j * sw + n * dw - left, w, value * w)
                     for m, row in enumerate(self.weights) for n, w in enumerate(row))

    def sources(self, r: int, c: int) -> list[tuple[Pair, Pair]]:
        """What lands on output (r, c): the (input cell, kernel tap) of each product."""
        kw = len(self.weights[0])
        return [((i, j), divmod(tap, kw)) for i in range(len(self.image)) for j in range(len(self.image[0]))
                for tap, (row, col, _, _) in enumerate(self.landings(i, j)) if (row, col) == (r, c)]

    def sums(self) -> dict[Pair, float]:
        """Every product added at its place, the cropped ones included (keys in output indices)."""
        sums: dict[Pair, float] = {}
        for i in range(len(self.image)):
            for j in range(len(self.image[0])):
                for row, col, _, product in self.landings(i, j):
                    sums[row, col] = sums.get((row, col), 0.0) + product
        return sums

    def output(self) -> list[list[float]]:
        """The scatter's sums inside the output (0 where nothing lands), then ``/ scale + offset``."""
        sums = self.sums()
        return [[sums.get((r, c), 0.0) / self.scale + self.offset for c in range(self.output_hw[1])]
                for r in range(self.output_hw[0])]

    def direct(self) -> Worked:
        """The same output as a convolution: the input spread by the stride (``s - 1`` zeros between
        cells), padded by ``d*(k - 1) - crop`` (negative: cut), correlated with the kernel rotated
        180 degrees at stride 1.

        >>> by_hand_transposed([[1, 2], [3, 4]], [[1, 2], [3, 4]], stride=(2, 2)).direct().image
        ((1.0, 0.0, 2.0), (0.0, 0.0, 0.0), (3.0, 0.0, 4.0))
        """
        (sh, sw), (h, w) = self.stride, (len(self.image), len(self.image[0]))
        spread = [[0.0] * ((w - 1) * sw + 1) for _ in range((h - 1) * sh + 1)]
        for i, row in enumerate(self.image):
            for j, value in enumerate(row):
                spread[i * sh][j * sw] = value
        size = (len(self.weights), len(self.weights[0]))
        reach = [d * (k - 1) for k, d in zip(size, self.dilation)]
        before = [r - crop for r, crop in zip(reach, self.crop)]
        spread_hw = (len(spread), len(spread[0]))
        after = [out + r - n - b for out, r, n, b in zip(self.output_hw, reach, spread_hw, before)]
        pads = (before[0], after[0], before[1], after[1])
        axes = _axes(spread_hw, size, (1, 1), self.dilation, pads)
        arithmetic = _per_axis([_conv_formula(*axis, out) for axis, out in zip(axes, self.output_hw)])
        rotated = tuple(tuple(reversed(row)) for row in reversed(self.weights))
        return Worked("conv", tuple(map(tuple, spread)), size, (1, 1), self.dilation, pads, pads, self.output_hw,
                      arithmetic, rotated, self.scale, self.offset, name=self.name)


def by_hand_transposed(image: Sequence[Sequence[float]], weights: Sequence[Sequence[float]], *,
                       stride: Pair = (1, 1), padding: PaddingSpec = "valid", output_padding: Pair = (0, 0),
                       dilation: Pair = (1, 1), scale: float = 1.0, offset: float = 0.0,
                       name: str = "") -> Scattered:
    """A transposed convolution of a small matrix, checked by the engine's rules (``conv --transpose``).

    >>> by_hand_transposed([[1, 2], [3, 4]], [[1, 2], [3, 4]]).output()
    [[1.0, 4.0, 4.0], [6.0, 20.0, 16.0], [9.0, 24.0, 16.0]]
    """
    from convcli import engine  # its rules, so that errors read as conv --transpose's

    image = _check_matrix([[float(v) for v in row] for row in image], "matrix")
    weights = tuple(tuple(float(v) for v in row) for row in weights)
    size = (len(weights), len(weights[0]))
    in_hw = (len(image), len(image[0]))
    crop, out_hw = engine.transposed_plan(in_hw, size, stride, padding, output_padding, dilation)
    arithmetic = _transposed_formulas(in_hw, size, stride, dilation, padding, output_padding, out_hw)
    return Scattered(tuple(map(tuple, image)), weights, tuple(stride), tuple(dilation), padding,
                     tuple(output_padding), tuple(crop), tuple(out_hw), arithmetic, scale, offset, name)


def default_input_cells(scattered: Scattered) -> list[Pair]:
    """The input cells whose scatter is shown: the first and its right neighbour (or the one below)."""
    h, w = len(scattered.image), len(scattered.image[0])
    return [(0, 0)] + ([(0, 1)] if w > 1 else [(1, 0)] if h > 1 else [])


def default_cells(worked: Worked) -> list[Pair]:
    """The first output cell and its right neighbour (or the one below, or none)."""
    h_out, w_out = worked.output_hw
    return [(0, 0)] + ([(0, 1)] if w_out > 1 else [(1, 0)] if h_out > 1 else [])


def _grid(rows: Sequence[Sequence[str]]) -> list[str]:
    width = max((len(t) for row in rows for t in row), default=1)
    return [" ".join(t.rjust(width) for t in row) for row in rows]


def _side_by_side(blocks: Sequence[list[str]], joins: Sequence[str]) -> list[str]:
    """Blocks of lines next to each other; ``joins[k]`` sits on the middle line between k and k+1."""
    height = max(len(b) for b in blocks)
    widths = [max(len(line) for line in b) for b in blocks]
    lines = []
    for r in range(height):
        parts = []
        for k, block in enumerate(blocks):
            parts.append((block[r] if r < len(block) else "").ljust(widths[k]))
            if k < len(joins):
                parts.append(f"  {joins[k] if r == height // 2 else ' ' * len(joins[k])}  ")
        lines.append("".join(parts).rstrip())
    return lines


def _tap(value: Optional[float], worked: Worked, inside: bool = True) -> str:
    """A window value; padding is marked with a leading dot (``·0``, ``·`` where ignored, or
    ``·2`` for a border value the pad mode reads)."""
    if value is not None:
        return number_text(value) if inside else f"·{number_text(value)}"
    return "·" if worked.op == "max" or (worked.op == "avg" and not _pads_count(worked)) else "·0"


def _pads_count(worked: Worked) -> bool:
    return worked.count_include_pad and worked.padding != "same"


def _sum_text(terms: Sequence[float]) -> str:
    text = number_text(terms[0])
    for term in terms[1:]:
        text += f" - {number_text(-term)}" if term < 0 else f" + {number_text(term)}"
    return text


def _describe(worked: Worked) -> str:
    h, w = len(worked.image), len(worked.image[0])
    if worked.op == "conv":
        what = f"{shape_text(worked.size)} kernel" + (f" {worked.name!r}" if worked.name else "")
    else:
        what = f"{worked.op} pooling, {shape_text(worked.size)} window"
    pads = f" ({padding_text(worked.pads)})" if isinstance(worked.padding, str) and any(worked.pads) else ""
    mode = f", pad mode {worked.pad_mode}" if worked.pad_mode != "zeros" else ""
    return (f"{h}x{w} input, {what}, stride {hw_text(worked.stride)}, dilation {hw_text(worked.dilation)}, "
            f"padding {padding_text(worked.padding)}{pads}{mode}")


def render_by_hand(worked: Worked, cells: Sequence[Pair]) -> str:
    """Plain text: the setup, the padded input, each chosen cell worked out, then the output.

    >>> print(render_by_hand(by_hand_pool([[1, 3, 2, 0], [4, 6, 1, 2], [0, 2, 5, 3], [1, 2, 2, 4]], "max"),
    ...                      [(0, 0)]))                            # doctest: +NORMALIZE_WHITESPACE
    4x4 input, max pooling, 2x2 window, stride 2, dilation 1, padding valid
    output size: floor((4 + 0 + 0 - 2) / 2) + 1 = 2
    <BLANKLINE>
    output[0, 0]: window rows 0..1, columns 0..1
      1 3
      4 6
      max(1, 3, 4, 6) = 6; argmax input[1, 1], index 1*4 + 1 = 5
    <BLANKLINE>
    argmax indices (r*4 + c in the 4x4 input, as return_indices):
       5  2
       9 10
    <BLANKLINE>
    backward: a gradient of ones on the output goes to each window's argmax (d sum / d input):
      0 0 1 0
      0 1 0 0
      0 1 1 0
      0 0 0 0
    <BLANKLINE>
    output (2x2):
      6 2
      2 5
    """
    lines = [_describe(worked)]
    lines += [f"output size: {text}" for text in worked.arithmetic]
    return "\n".join(lines + _worked_lines(worked, cells))


def _worked_lines(worked: Worked, cells: Sequence[Pair]) -> list[str]:
    """The padded input, the kernel, each cell worked out, and the output."""
    lines = []
    top, bottom, left, right = worked.pads
    height, width = len(worked.image), len(worked.image[0])
    if any(worked.pads):
        lines += ["", "input with its padding (· marks padding cells):"]
        padded = [[_tap(worked.value_at(r, c), worked, worked.inside(r, c)) for c in range(-left, width + right)]
                  for r in range(-top, height + bottom)]
        lines += ["  " + line for line in _grid(padded)]
    if worked.op == "conv":
        kernel = _grid([[number_text(w) for w in row] for row in worked.weights])
        lines += ["", "kernel:"] + ["  " + line for line in kernel]
    kh, kw = worked.size
    for i, j in cells:
        cell = worked.cell(i, j)
        rows = sorted({r for r, _ in cell.positions})
        cols = sorted({c for _, c in cell.positions})
        lines += ["", f"output[{i}, {j}]: window rows {_index_text(rows)}, columns {_index_text(cols)}"]
        taps = [_tap(v, worked, worked.inside(*at)) for v, at in zip(cell.values, cell.positions)]
        window = _grid([taps[m * kw:(m + 1) * kw] for m in range(kh)])
        if worked.op == "conv":
            weights = _grid([[number_text(w) for w in cell.weights[m * kw:(m + 1) * kw]] for m in range(kh)])
            products = _grid([[number_text(p) for p in cell.products[m * kw:(m + 1) * kw]] for m in range(kh)])
            lines += ["  " + line for line in _side_by_side([window, weights, products], ["x", "="])]
            result = f"sum: {_sum_text(cell.products)} = {number_text(cell.total)}"
            if worked.scale != 1 or worked.offset != 0:
                result += (f"; / scale {number_text(worked.scale)} + offset {number_text(worked.offset)}"
                           f" = {number_text(cell.value)}")
        else:
            lines += ["  " + line for line in window]
            real = [number_text(v) for v in cell.values if v is not None]
            if worked.op == "max":
                ignored = "; padding ignored" if len(real) < len(cell.values) else ""
                result = f"max({', '.join(real)}{ignored}) = {number_text(cell.value)}"
                if cell.winner is not None:
                    (r, c), width = cell.winner, len(worked.image[0])
                    result += f"; argmax input[{r}, {c}], index {r}*{width} + {c} = {r * width + c}"
            else:
                counted = " (padding counts)" if cell.divisor > len(real) else ""
                result = (f"({' + '.join(real)}) / {cell.divisor}{counted} = {number_text(cell.value)}")
        lines.append("  " + result)
    if worked.op == "max":
        lines += _routing_lines(worked)
    output = worked.output()
    lines += ["", f"output ({worked.output_hw[0]}x{worked.output_hw[1]}):"]
    lines += ["  " + line for line in _grid([[number_text(v) for v in row] for row in output])]
    return lines


def _routing_lines(worked: Worked) -> list[str]:
    """Max pooling's argmax indices, and the gradient of ones routed back through them."""
    height, width = _hw(worked.image)
    indices = _grid([["-" if index is None else str(index) for index in row] for row in worked.indices()])
    routed = worked.routed_ones()
    lines = ["", f"argmax indices (r*{width} + c in the {height}x{width} input, as return_indices):"]
    lines += ["  " + line for line in indices]
    lines += ["", ("backward: a gradient of ones on the output goes to each window's argmax "
                   "(d sum / d input):")]
    lines += ["  " + line for line in _grid([[str(count) for count in row] for row in routed])]
    if max(max(row) for row in routed) > 1:
        lines.append("  (overlapping windows: a cell that wins several windows receives one 1 from each)")
    return lines


def render_transposed(scattered: Scattered, cells: Sequence[Pair],
                      input_cells: Optional[Sequence[Pair]] = None) -> str:
    """Plain text: (a) the scatter of ``input_cells`` and what lands on each of ``cells``;
    (b) the direct convolution of the spread, padded input with the rotated kernel, cell by cell.

    >>> text = render_transposed(by_hand_transposed([[1, 2], [3, 4]], [[1, 2], [3, 4]]), [(1, 1)])
    >>> print("\\n".join(text[text.index("output[1, 1] ="):].splitlines()[:2]))
    output[1, 1] = input[0, 0] x kernel[1, 1] + input[0, 1] x kernel[1, 0] + input[1, 0] x kernel[0, 1] + input[1, 1] x kernel[0, 0]
      = 1*4 + 2*3 + 3*2 + 4*1 = 20
    """
    h_out, w_out = scattered.output_hw
    for i, j in cells:
        if not (0 <= i < h_out and 0 <= j < w_out):
            raise ParameterError(f"cell {i},{j} is outside the {h_out}x{w_out} output "
                                 f"(rows and columns count from 0)")
    (kh, kw), height, width = (len(scattered.weights), len(scattered.weights[0])), *_hw(scattered.image)
    kernel = f"{kh}x{kw} kernel" + (f" {scattered.name!r}" if scattered.name else "")
    setup = (f"{height}x{width} input, {kernel}, transposed: stride {hw_text(scattered.stride)}, "
             f"padding {padding_text(scattered.padding)}, output padding {hw_text(scattered.output_padding)}, "
             f"dilation {hw_text(scattered.dilation)}")
    lines = [setup]
    lines += [f"output size: {text}" for text in scattered.arithmetic]
    lines += ["", "(a) scatter: each input cell adds value x kernel into the output"]
    weights = _grid([[number_text(w) for w in row] for row in scattered.weights])
    for i, j in input_cells or default_input_cells(scattered):
        if not (0 <= i < height and 0 <= j < width):
            raise ParameterError(f"input cell {i},{j} is outside the {height}x{width} input")
        landed = scattered.landings(i, j)
        rows, cols = [r for r, _, _, _ in landed], [c for _, c, _, _ in landed]
        where = (f"input[{i}, {j}] = {number_text(scattered.image[i][j])} adds to output rows "
                 f"{_index_text(sorted(set(rows)))}, columns {_index_text(sorted(set(cols)))}:")
        lines += ["", where]
        products = _grid([[number_text(p) for _, _, _, p in landed[m * kw:(m + 1) * kw]] for m in range(kh)])
        lines += ["  " + line for line in _side_by_side([[number_text(scattered.image[i][j])], weights, products],
                                                        ["x", "="])]
    sums = scattered.sums()
    rows = range(min(0, min(r for r, _ in sums)), max(h_out, max(r for r, _ in sums) + 1))
    cols = range(min(0, min(c for _, c in sums)), max(w_out, max(c for _, c in sums) + 1))
    kept = [[("" if 0 <= r < h_out and 0 <= c < w_out else "·") + number_text(sums.get((r, c), 0.0))
             for c in cols] for r in rows]
    lines += ["", "all products added (· marks the cells the padding crops):"]
    lines += ["  " + line for line in _grid(kept)]
    for r, c in cells:
        pairs = [(scattered.image[i][j], scattered.weights[m][n], f"input[{i}, {j}] x kernel[{m}, {n}]")
                 for (i, j), (m, n) in scattered.sources(r, c)]
        named = " + ".join(name for _, _, name in pairs) or "nothing lands here"
        terms = " + ".join(f"{number_text(v)}*{number_text(w)}" for v, w, _ in pairs) or "0"
        total = sum(v * w for v, w, _ in pairs)
        lines += ["", f"output[{r}, {c}] = {named}", f"  = {terms} = {number_text(total)}"]
        if scattered.scale != 1 or scattered.offset != 0:
            lines[-1] += (f"; / scale {number_text(scattered.scale)} + offset {number_text(scattered.offset)}"
                          f" = {number_text(scattered.output()[r][c])}")
    direct = scattered.direct()
    spread = [f"{s - 1} zeros" if s != 2 else "1 zero" for s in scattered.stride]
    pads = _per_axis([f"{d}*({k} - 1) - {crop} = {before}" + (f" (bottom/right {after})" if after != before else "")
                      for k, d, crop, before, after in zip(direct.size, direct.dilation, scattered.crop,
                                                           direct.pads[0::2], direct.pads[1::2])])
    view = (f"(b) the same as a convolution: the input spread by the stride ({', '.join(_per_axis(spread))} "
            f"between cells), padded by d*(k - 1) - p: {'; '.join(pads)}, and the kernel rotated "
            f"180 degrees, at stride 1")
    lines += ["", view]
    lines += [f"output size: {text}" for text in direct.arithmetic]
    return "\n".join(lines + _worked_lines(direct, cells))


def _hw(matrix: Sequence[Sequence[Any]]) -> Pair:
    return len(matrix), len(matrix[0])


def _index_text(indices: Sequence[int]) -> str:
    """``0..2`` for a run, ``0, 2, 4`` for a dilated window."""
    if len(indices) > 1 and indices[-1] - indices[0] == len(indices) - 1:
        return f"{indices[0]}..{indices[-1]}"
    return ", ".join(str(i) for i in indices)


#: GIF colours: the cells read or written now, padding, kernel, output filled so far, a max's argmax.
_CURRENT, _PADDING, _KERNEL, _FILLED = (255, 213, 79), (230, 230, 230), (200, 230, 201), (187, 222, 251)
_WINNER = (255, 138, 101)
#: One drawn cell: its text and its fill (text starting with ``·``: padding, drawn in gray).
Square = tuple[str, Any]
#: One frame: its caption, its panels (title, rows of squares) and the signs between panels.
Scene = tuple[str, Sequence[tuple[str, Sequence[Sequence[Square]]]], Sequence[str]]


def draw_scenes(scenes: Sequence[Scene], cell_px: int = 34) -> list:
    """Pillow frames, all of one size: each scene's caption on top, then its panels side by side,
    each with its title above and a sign (``x``, ``=``) between neighbours. The caller closes them.
    """
    from PIL import Image, ImageDraw, ImageFont

    from convcli.limits import check_arrays

    font = ImageFont.load_default(size=max(8, cell_px * 2 // 5))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = measure.textbbox((0, 0), "Ag", font=font)[3] + 6
    gap, margin = max(2 * line, cell_px), 16
    widths = [[max(len(row) for row in grid) * cell_px if grid else 0 for _, grid in panels]
              for _, panels, _ in scenes]
    titles = [[max(cell_px * len(grid[0]) if grid else 0, int(measure.textlength(title, font=font)) + 4)
               for title, grid in panels] for _, panels, _ in scenes]
    spans = [[max(w, t) for w, t in zip(ws, ts)] for ws, ts in zip(widths, titles)]
    grids = max(sum(span) + gap * (len(span) - 1) for span in spans)
    caption = max(int(measure.textlength(text, font=font)) + 1 for text, _, _ in scenes)
    tallest = max(len(grid) for _, panels, _ in scenes for _, grid in panels)
    size = (2 * margin + max(grids, caption), 2 * margin + 2 * line + tallest * cell_px)
    check_arrays("the GIF", itemsize=1, frames=(len(scenes), size[1], size[0], 3))
    y0 = margin + 2 * line
    frames = []
    for (text, panels, signs), span in zip(scenes, spans):
        frame = Image.new("RGB", size, "white")
        draw = ImageDraw.Draw(frame)
        draw.text((margin, margin), text, fill="black", font=font)
        x = margin
        for k, (title, grid) in enumerate(panels):
            draw.text((x, margin + line), title, fill="black", font=font)
            for r, row in enumerate(grid):
                for c, (label, fill) in enumerate(row):
                    box = (x + c * cell_px, y0 + r * cell_px, x + (c + 1) * cell_px, y0 + (r + 1) * cell_px)
                    draw.rectangle(box, fill=fill, outline=(150, 150, 150))
                    left, upper, right, lower = draw.textbbox((0, 0), label, font=font)
                    centre = ((box[0] + box[2] - right - left) / 2, (box[1] + box[3] - lower - upper) / 2)
                    draw.text(centre, label, fill="gray" if label.startswith("·") else "black", font=font)
            x += span[k]
            if k < len(signs):  # on the middle row of the shorter neighbour
                width = draw.textlength(signs[k], font=font)
                rows = min(len(grid), len(panels[k + 1][1]))
                draw.text((x + (gap - width) / 2, y0 + (rows * cell_px - line) / 2), signs[k], fill="black",
                          font=font)
            x += gap
        frames.append(frame)
    return frames


def _check_animated(cells: int, what: str) -> None:
    if cells > MAX_GIF_CELLS:
        raise ParameterError(f"{what} has more than {MAX_GIF_CELLS} cells to animate; use a smaller matrix")


def animation_frames(worked: Worked, cell_px: int = 34) -> list:
    """Pillow frames of the window sliding over the (padded) input and filling the output.

    One frame per output cell, then the finished output. Max pooling also marks each window's
    argmax and fills a third panel, the gradient of ones routed back to the argmaxes so far.
    The caller saves and closes them.
    """
    h_out, w_out = worked.output_hw
    _check_animated(h_out * w_out, f"the {h_out}x{w_out} output")
    cells = [(i, j) for i in range(h_out) for j in range(w_out)]
    top, bottom, left, right = worked.pads
    height, width = _hw(worked.image)
    output = worked.output()
    marked = " (· padding)" if any(worked.pads) else ""
    routed = [[0] * width for _ in range(height)]
    scenes = []
    for index in range(len(cells) + 1):
        current = worked.cell(*cells[index]) if index < len(cells) else None
        taps = set(current.positions) if current else set()
        winner = current.winner if current else None
        if winner is not None:
            routed[winner[0]][winner[1]] += 1
        image = [[(_tap(worked.value_at(r, c), worked, worked.inside(r, c)),
                   _WINNER if (r, c) == winner else _CURRENT if (r, c) in taps
                   else "white" if worked.inside(r, c) else _PADDING)
                  for c in range(-left, width + right)] for r in range(-top, height + bottom)]
        panels = [("input" + marked, image)]
        if worked.op == "conv":
            panels.append(("kernel", [[(number_text(w), _KERNEL) for w in row] for row in worked.weights]))
        filled = [[(number_text(output[i][j]), _CURRENT if (i, j) == cells[min(index, len(cells) - 1)]
                    and current else _FILLED) if i * w_out + j <= index else ("", "white")
                   for j in range(w_out)] for i in range(h_out)]
        panels.append(("output", filled))
        signs = ["x", "="] if worked.op == "conv" else [f"{worked.op} ="]
        if worked.op == "max":
            panels.append(("backward: ones to argmax", [[
                (str(count), _WINNER if (r, c) == winner else _FILLED if count else "white")
                for c, count in enumerate(row)] for r, row in enumerate(routed)]))
            signs.append("grad")
        scenes.append((_frame_caption(worked, current), panels, signs))
    return draw_scenes(scenes, cell_px)


def scatter_frames(scattered: Scattered, cell_px: int = 34) -> list:
    """Pillow frames of a transposed convolution's scatter: one frame per input cell, adding
    ``value x kernel`` into the output (its cropped border shown, marked ``·``), then the output.
    """
    height, width = _hw(scattered.image)
    sums = scattered.sums()
    h_out, w_out = scattered.output_hw
    rows = range(min(0, min(r for r, _ in sums)), max(h_out, max(r for r, _ in sums) + 1))
    cols = range(min(0, min(c for _, c in sums)), max(w_out, max(c for _, c in sums) + 1))
    _check_animated(len(rows) * len(cols), f"the {len(rows)}x{len(cols)} scatter")
    kernel = ("kernel", [[(number_text(w), _KERNEL) for w in row] for row in scattered.weights])
    added: dict[Pair, float] = {}
    order = [(i, j) for i in range(height) for j in range(width)]
    scenes = []
    for index in range(len(order) + 1):
        landed = scattered.landings(*order[index]) if index < len(order) else ()
        for r, c, _, product in landed:
            added[r, c] = added.get((r, c), 0.0) + product
        now = {(r, c) for r, c, _, _ in landed}
        image = [[(number_text(v), _CURRENT if (i, j) == order[min(index, len(order) - 1)] and landed else "white")
                  for j, v in enumerate(row)] for i, row in enumerate(scattered.image)]
        out = [[(("" if 0 <= r < h_out and 0 <= c < w_out else "·") + number_text(added[r, c])
                 if (r, c) in added else "·" if not (0 <= r < h_out and 0 <= c < w_out) else "",
                 _CURRENT if (r, c) in now else _PADDING if not (0 <= r < h_out and 0 <= c < w_out)
                 else _FILLED if (r, c) in added else "white") for c in cols] for r in rows]
        if landed:
            i, j = order[index]
            value = number_text(scattered.image[i][j])
            caption = (f"output[{_index_text(sorted({r for r, _ in now}))}, "
                       f"{_index_text(sorted({c for _, c in now}))}] += input[{i}, {j}] x kernel = {value} x kernel")
        else:
            caption = f"output {h_out}x{w_out}: the sums inside the crop"
        scenes.append((caption, [("input", image), kernel, ("output (· cropped)", out)], ["x", "+="]))
    return draw_scenes(scenes, cell_px)


#: Most terms a GIF caption writes out; longer sums keep the first few and the last two.
CAPTION_TERMS = 9


def _joined(terms: Sequence[str], sign: str) -> str:
    """``terms`` joined by ``sign``, shortened to the first four, ``...`` and the last two when
    there are more than ``CAPTION_TERMS``.

    >>> _joined([f"{v}*1" for v in range(25)], " + ")
    '0*1 + 1*1 + 2*1 + 3*1 + ... + 23*1 + 24*1'
    """
    if len(terms) > CAPTION_TERMS:
        terms = [*terms[:4], "...", *terms[-2:]]
    return sign.join(terms)


def _frame_caption(worked: Worked, cell: Optional[Cell]) -> str:
    """The formula of the current cell in plain characters (a GIF frame's caption).

    >>> seed = by_hand_conv(SEED_IMAGE, [[1, 0, -1]] * 3)
    >>> _frame_caption(seed, seed.cell(0, 1))
    'output[0, 1] = 2*1 + 0*0 + 1*-1 + 1*1 + 1*0 + 0*-1 + 2*1 + 3*0 + 1*-1 = 3'
    """
    if cell is None:
        return f"output {worked.output_hw[0]}x{worked.output_hw[1]}"
    head = f"output[{cell.row}, {cell.col}] = "
    if worked.op == "conv":
        terms = _joined([f"{number_text(v or 0.0)}*{number_text(w)}" for v, w in zip(cell.values, cell.weights)],
                        " + ")
        body = f"{terms} = {number_text(cell.total)}"
        if worked.scale != 1 or worked.offset != 0:
            body += f"; / {number_text(worked.scale)} + {number_text(worked.offset)} = {number_text(cell.value)}"
    elif worked.op == "max":
        real = _joined([number_text(v) for v in cell.values if v is not None], ", ")
        body = f"max({real}) = {number_text(cell.value)}"
        if cell.winner is not None:
            body += f" at input[{cell.winner[0]}, {cell.winner[1]}]"
    else:
        real = _joined([number_text(v) for v in cell.values if v is not None], " + ")
        body = f"({real}) / {cell.divisor} = {number_text(cell.value)}"
    return head + body
