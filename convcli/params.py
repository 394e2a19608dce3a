"""Parsing of the option strings shared by every command (and ``explain``'s step language).

Pure functions: text in, validated values out, ``ParameterError`` naming the option otherwise.

>>> parse_pair("2", "stride"), parse_pair("1,3", "dilation")
((2, 2), (1, 3))
>>> parse_padding("same"), parse_padding("2"), parse_padding("1,2"), parse_padding("0,1,2,3")
('same', (2, 2, 2, 2), (1, 1, 2, 2), (0, 1, 2, 3))
"""

from __future__ import annotations

import math

from convcli.errors import ParameterError
from convcli.geometry import PADDING_RULES, PaddingSpec

#: Border modes, with PyTorch's names (numpy's ``constant``, ``reflect``, ``edge``, ``wrap``;
#: SciPy's ``reflect`` is none of them: it repeats the edge, numpy's ``symmetric``).
PAD_MODES = ("zeros", "reflect", "replicate", "circular")


def _ints(text: str, option: str) -> list[int]:
    parts = [p.strip() for p in str(text).split(",")]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ParameterError(f"{option} {text!r} is not a whole number or comma-separated list") from None


def parse_pair(text: str, option: str, minimum: int = 1) -> tuple[int, int]:
    """``N`` or ``H,W`` as a (rows, cols) pair of ints, each at least ``minimum``.

    >>> parse_pair("0", "stride")
    Traceback (most recent call last):
    ...
    convcli.errors.ParameterError: stride must be at least 1, got '0'
    """
    values = _ints(text, option)
    if len(values) not in (1, 2):
        raise ParameterError(f"{option} takes N or H,W, got {text!r}")
    if min(values) < minimum:
        raise ParameterError(f"{option} must be at least {minimum}, got {text!r}")
    return (values[0], values[-1])


def parse_padding(text: str) -> PaddingSpec:
    """``valid``, ``same``, ``full``, or ``N``, ``H,W``, ``top,bottom,left,right`` counts >= 0."""
    word = str(text).strip().lower()
    if word in PADDING_RULES:
        return word
    values = _ints(text, "padding")
    if min(values) < 0:
        raise ParameterError(f"padding must not be negative, got {text!r}")
    if len(values) == 1:
        return (values[0],) * 4
    if len(values) == 2:
        return (values[0], values[0], values[1], values[1])
    if len(values) == 4:
        return tuple(values)
    raise ParameterError(
        f"padding {text!r} is not valid, same, full, N, H,W or top,bottom,left,right"
    )


def parse_pad_mode(text: str) -> str:
    """One of PyTorch's border names: zeros, reflect, replicate, circular."""
    mode = str(text).strip().lower()
    if mode not in PAD_MODES:
        raise ParameterError(f"pad mode {text!r} is not one of {', '.join(PAD_MODES)}")
    return mode


def parse_floats(text: str, option: str) -> tuple[float, ...]:
    """A comma-separated list of finite numbers, e.g. a bias per output channel.

    >>> parse_floats("0.5, -1", "bias")
    (0.5, -1.0)
    """
    try:
        values = tuple(float(p) for p in str(text).split(","))
    except ValueError:
        raise ParameterError(f"{option} {text!r} is not a number or comma-separated numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise ParameterError(f"{option} {text!r} must be finite")
    return values
