"""Rules between a layer's parameters: pure checks, one message each, beside ``geometry``.

The engine, the pipeline schema and ``explain``'s step language call these same functions, so a
trace never promises what the engine refuses and every front-end gives the same reason. A broken
rule raises ``RuleError``, which names the parameter it blames. Its message is one template,
written in the notation of whoever reports it: in words (``str()``: the engine, ``explain``,
the CLI) or after a ``field:`` prefix with values as YAML lists (``detail``: pipeline files).

>>> output_padding((2, 2), (2, 2), (1, 1), (1, 1, 1, 1))     # doctest: +NORMALIZE_WHITESPACE
Traceback (most recent call last):
...
convcli.layers.rules.RuleError: output padding 2x2 must be smaller than the stride (2x2)
or the dilation (1x1)
>>> try:
...     output_padding((2, 2), (2, 2), (1, 1), (1, 1, 1, 1))
... except RuleError as exc:
...     print(f"{exc.parameter}: {exc.detail}")
output_padding: must be smaller than the stride [2, 2] or the dilation [1, 1], got [2, 2]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from convcli.errors import FieldError
from convcli.geometry import PaddingSpec, Pair, padding_text, shape_text


class RuleError(FieldError):
    """A broken rule: ``parameter`` is the one it blames (``output_padding``, ``groups``);
    ``str()`` is the message in words, ``detail`` the same after a field prefix.

    ``template`` may hold ``{subject}`` (the parameter and its pair ``value``, in words only),
    ``{got}`` (that value after the message, in a field only), ``{word}`` (the parameter's name
    where a field prefix does not already say it), ``{pair}`` (how a pair is written) and one
    placeholder per entry of ``values`` (pairs, written inline).
    """

    def __init__(self, parameter: str, template: str, value: Pair | None = None, **values: Pair):
        self.parameter, self.template, self.value, self.values = parameter, template, value, values
        super().__init__(parameter, self._render(fields=True), self._render(fields=False))

    def __reduce__(self):
        return _rule_error, (self.parameter, self.template, self.value, self.values)

    def _render(self, fields: bool) -> str:
        def inline(pair: Any) -> str:
            return str(list(pair)) if fields else f"({shape_text(pair)})"

        subject = got = ""
        if self.value is not None:
            subject = (
                "" if fields else f"{self.parameter.replace('_', ' ')} {shape_text(self.value)} "
            )
            got = f", got {list(self.value)}" if fields else ""
        word = "" if fields else f"{self.parameter.replace('_', ' ')} "
        pair = "[rows, cols]" if fields else "H,W"
        named = {key: inline(value) for key, value in self.values.items()}
        return self.template.format(subject=subject, got=got, word=word, pair=pair, **named)


def _rule_error(parameter: str, template: str, value: Pair | None, values: dict) -> RuleError:
    """A ``RuleError`` rebuilt from its parts (unpickling)."""
    return RuleError(parameter, template, value, **values)


def pool_padding(padding: PaddingSpec, size: Pair, ceil_mode: bool) -> None:
    """Pooling takes ``valid``, ``same`` (Keras, not with ceil mode) or counts of at most half the
    window per side (PyTorch's limit).

    >>> pool_padding((2, 2, 0, 0), (3, 3), False)     # doctest: +ELLIPSIS, +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    convcli.layers.rules.RuleError: pooling padding 2,0 is more than half the window 3x3:
    at most 1 rows ...
    """
    if padding == "full" or (padding == "same" and ceil_mode):
        what = "ceil mode with padding 'same'" if padding == "same" else "padding 'full'"
        raise RuleError(
            "padding", f"pooling takes no {what}; use valid, same (Keras) or counts (PyTorch)"
        )
    if isinstance(padding, tuple) and (
        max(padding[:2]) > size[0] // 2 or max(padding[2:]) > size[1] // 2
    ):
        raise RuleError(
            "padding",
            f"pooling padding {padding_text(padding)} is more than half the window "
            f"{shape_text(size)}: at most {size[0] // 2} rows and {size[1] // 2} columns per side "
            "(PyTorch's limit)",
        )


def cropped_padding(padding: PaddingSpec, layer: str, same: bool = True) -> Pair:
    """Transposed convolution (and unpooling, ``same=False``) crops its padding from both sides:
    ``valid``, N or H,W, and ``same`` (Keras) where it applies. Returns the (rows, cols) crop,
    or ``same`` as is.

    >>> cropped_padding((1, 1, 2, 2), "transposed"), cropped_padding("valid", "unpool", same=False)
    ((1, 2), (0, 0))
    >>> cropped_padding("full", "transposed")     # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    convcli.layers.rules.RuleError: transposed takes padding same, valid, N or H,W
    (cropped from both sides)
    """
    if padding == "valid" or (padding == "same" and same):
        return (0, 0) if padding == "valid" else padding
    if isinstance(padding, tuple) and len(padding) == 4 and padding[0::2] == padding[1::2]:
        padding = padding[0::2]
    if isinstance(padding, tuple) and len(padding) == 2 and min(padding) >= 0:
        return padding
    accepted = "same, valid" if same else "valid"
    raise RuleError(
        "padding", f"{layer} takes {{word}}{accepted}, N or {{pair}} (cropped from both sides)"
    )


def output_padding(extra: Pair, stride: Pair, dilation: Pair, padding: PaddingSpec) -> None:
    """A transposed convolution's output padding is smaller than the stride or the dilation on
    each axis (PyTorch), and none with padding ``same`` (Keras: the output is input x stride).

    >>> output_padding((1, 1), (2, 2), (1, 1), "same")     # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    convcli.layers.rules.RuleError: output padding 1x1 does not apply to padding 'same'
    (the output is input x stride)
    """
    if any(op < 0 or op >= max(s, d) for op, s, d in zip(extra, stride, dilation)):
        raise RuleError(
            "output_padding",
            "{subject}must be smaller than the stride {stride} or the dilation {dilation}{got}",
            tuple(extra),
            stride=stride,
            dilation=dilation,
        )
    if padding == "same" and any(extra):
        raise RuleError(
            "output_padding",
            "{subject}does not apply to padding 'same' (the output is input x stride){got}",
            tuple(extra),
        )


def groups_divide(
    groups: int, channels: int, outputs: int | None = None, what: str = "the filters"
) -> None:
    """Groups divide the input channels and, when given, the ``outputs`` (``what`` names them).

    >>> groups_divide(4, 6, 8)     # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    convcli.layers.rules.RuleError: groups 4 must divide both the input channels (6)
    and the filters (8)
    """
    if groups >= 1 and not channels % groups and (outputs is None or not outputs % groups):
        return
    if outputs is None:
        raise RuleError("groups", f"groups {groups} must divide the input channels ({channels})")
    raise RuleError(
        "groups",
        f"groups {groups} must divide both the input channels ({channels}) and {what} ({outputs})",
    )


def clip_bounds(low: float | None, high: float | None) -> None:
    """Clipping keeps values in [min, max] (ONNX ``Clip``; ReLU6 is 0..6): min is not above max.

    >>> clip_bounds(6.0, 0.0)
    Traceback (most recent call last):
    ...
    convcli.layers.rules.RuleError: clip min 6.0 is above max 0.0
    """
    if low is not None and high is not None and low > high:
        raise RuleError("min", f"clip {{word}}{low} is above max {high}")


def batchnorm_values(
    scale: tuple[float, ...],
    bias: tuple[float, ...],
    mean: tuple[float, ...],
    var: tuple[float, ...],
    epsilon: float,
) -> int | None:
    """Batch normalisation (inference) takes 1 value, or one per channel, for each of scale,
    bias, mean and var, all of one count, and divides by ``sqrt(var + epsilon)``, which must be
    above 0. Returns the channel count they fix (None: any).

    >>> batchnorm_values((1.0,), (0.0,), (0.0, 1.0), (1.0, 1.0), 1e-5)
    2
    >>> batchnorm_values((1.0,), (0.0,), (0.0,), (-1.0,), 1e-5)
    Traceback (most recent call last):
    ...
    convcli.layers.rules.RuleError: batchnorm var -1.0 + epsilon 1e-05 must be above 0
    """
    values = {"scale": scale, "bias": bias, "mean": mean, "var": var}
    counts = {len(v) for v in values.values()} - {1}
    if len(counts) > 1:
        sizes = ", ".join(f"{key} {len(v)}" for key, v in values.items())
        raise RuleError(
            "var" if len(var) != 1 else "mean",
            f"batchnorm values must be 1 or one per channel, the same count for all ({sizes})",
        )
    low = min(var)
    if not low + epsilon > 0:
        raise RuleError("var", f"batchnorm {{word}}{low} + epsilon {epsilon} must be above 0")
    return counts.pop() if counts else None


def joined_shapes(
    op: str, shapes: Sequence[tuple[str, tuple[int, int, int]]]
) -> tuple[int, int, int]:
    """The (H, W, C) of joining maps, given as (name of the step giving them, shape): ``add``
    needs one shape, ``concat`` (on channels) one size and adds up the channels.

    >>> joined_shapes("concat", [("up", (24, 20, 4)), ("image", (24, 20, 3))])
    (24, 20, 7)
    >>> joined_shapes("add", [("conv2", (12, 10, 8)), ("image", (12, 10, 3))])
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    convcli.layers.rules.RuleError: add needs maps of one shape ...: conv2 gives 12x10x8, image ...3
    """
    first = shapes[0][1]
    kept = 3 if op == "add" else 2
    if any(shape[:kept] != first[:kept] for _, shape in shapes):
        what = (
            "one shape (rows x columns x channels)" if op == "add" else "one size (rows x columns)"
        )
        given = ", ".join(f"{name} gives {shape_text(shape)}" for name, shape in shapes)
        raise RuleError("inputs", f"{op} needs maps of {what}: {given}")
    return first if op == "add" else (*first[:2], sum(shape[2] for _, shape in shapes))


def check(layer: Any) -> None:
    """Every rule between the fields of one ``layers.spec.Layer`` that needs no image (the
    pipeline schema, the explain language and the CLI all check their layers here).

    >>> from convcli.layers.spec import Layer
    >>> check(Layer("pool", {"mode": "max", "size": (2, 2), "padding": "full", "ceil_mode": False}))
    ... # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    convcli.layers.rules.RuleError: pooling takes no padding 'full'; use valid, same (Keras)
    or counts (PyTorch)
    """
    p = layer.params
    if layer.op == "pool":
        pool_padding(p["padding"], p["size"], p["ceil_mode"])
    if layer.op == "transposed":
        cropped_padding(p["padding"], "transposed")
        output_padding(p["output_padding"], p["stride"], p["dilation"], p["padding"])
    if layer.op == "unpool" and "padding" in p:
        cropped_padding(p["padding"], "unpool", same=False)
    if layer.op == "clip":
        clip_bounds(p.get("min"), p.get("max"))
    if layer.op == "batchnorm" and "mean" in p:
        batchnorm_values(p["scale"], p["bias"], p["mean"], p["var"], p["epsilon"])
