"""Parsing of the option strings shared by every command (and ``explain``'s step language).

Pure functions: a value in, validated out, ``FieldError`` naming the option otherwise. The
numeric fields (``parse_pair``, ``parse_padding``, ``parse_count``) take text as an option or a
step token writes it, or data as YAML and mapping steps give it (a number, a list), and are the
one normaliser of their field for the CLI, ``explain``'s step language and pipeline files.

>>> parse_pair("2", "stride"), parse_pair("1,3", "dilation")
((2, 2), (1, 3))
>>> parse_padding("same"), parse_padding("2"), parse_padding("1,2"), parse_padding("0,1,2,3")
('same', (2, 2, 2, 2), (1, 1, 2, 2), (0, 1, 2, 3))
>>> parse_pair([1, 3], "dilation"), parse_padding([1, 2]), parse_count(3, "groups")
((1, 3), (1, 1, 2, 2), 3)

Every closed vocabulary (padding words, pad modes, map modes, colormaps, pipeline ops and fields,
explain's step kinds) is checked by ``one_of``, whose message is always the same shape:

>>> one_of("Replicat", PAD_MODES, "pad mode")     # doctest: +ELLIPSIS
Traceback (most recent call last):
...
convcli.errors.ParameterError: pad mode 'Replicat' is not one of ... (did you mean 'replicate'?)
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterable
from typing import Any

from convcli.errors import FieldError, ParameterError
from convcli.geometry import PADDING_RULES, PaddingSpec
from convcli.limits import MAX_OPTION_INT, NUMBER, parse_real, parse_whole, short_repr, shorten

#: Border modes: PyTorch's four names (numpy's ``constant``, ``reflect``, ``edge``, ``wrap``),
#: and numpy's ``symmetric``, the edge repeated, which PyTorch lacks (SciPy ndimage's
#: ``reflect``, OpenCV's ``BORDER_REFLECT``, the ``mirror`` of ImageMagick and libvips).
PAD_MODES = ("zeros", "reflect", "replicate", "circular", "symmetric")

#: How ``--combine`` folds the maps of several kernels into one map per channel: the root of
#: the sum of squares (gradient magnitude), the sum, or the largest value.
COMBINE_MODES = ("magnitude", "sum", "max")


def closest(word: Any, known: Iterable[str]) -> str | None:
    """The known word nearest to ``word`` (difflib's ratio of at least 0.6), or None.

    >>> closest("maxpol", ["conv", "maxpool", "avgpool"]), closest("blur", ["conv", "pool"])
    ('maxpool', None)
    """
    import difflib

    lowered = {str(name).lower(): name for name in known}
    found = difflib.get_close_matches(str(word).strip().lower(), list(lowered), n=1)
    return lowered[found[0]] if found else None


def not_one_of(what: str, value: Any, known: Iterable[str]) -> str:
    """``WHAT 'value' is not one of a, b, c (did you mean 'b'?)``: the one message of every
    closed vocabulary (``what`` may be empty when the caller names the option itself).

    >>> not_one_of("padding", "sam", ("valid", "same", "full"))
    "padding 'sam' is not one of valid, same, full (did you mean 'same'?)"
    """
    known = list(known)
    near = closest(value, known)
    hint = f" (did you mean {near!r}?)" if near else ""
    shown = repr(shorten(value)) if isinstance(value, str) else short_repr(value)
    return f"{what} {shown}".lstrip() + f" is not one of {', '.join(known)}{hint}"


def one_of(value: Any, known: Iterable[str], what: str) -> str:
    """``value`` stripped and lower-cased if it is one of ``known``; else a ParameterError
    (``not_one_of``).

    >>> one_of(" Same ", ("valid", "same", "full"), "padding")
    'same'
    """
    known = tuple(known)
    word = value.strip().lower() if isinstance(value, str) else None
    if word not in known:
        raise ParameterError(not_one_of(what, value, known))
    return word


def _field(option: str, parse, *args: Any) -> Any:
    """``parse(*args)``, its ``ParameterError`` worded ``option ...`` raised as a ``FieldError``."""
    try:
        return parse(*args)
    except ParameterError as exc:
        raise FieldError(option, str(exc).removeprefix(f"{option} ")) from None


def _ints(text: str, option: str) -> list[int]:
    """Whole numbers in ASCII digits (not ``２`` nor ``1_0``), each at most ``MAX_OPTION_INT``."""
    parts = [p.strip() for p in str(text).split(",")]
    if not all(re.fullmatch(r"[+-]?[0-9]+", p, re.ASCII) for p in parts):
        raise FieldError(option, f"{shorten(text)!r} is not a whole number or comma-separated list")
    values = [_field(option, parse_whole, p, option, -(10**30), 10**30) for p in parts]
    if max(values) > MAX_OPTION_INT and min(values) >= 0:
        raise FieldError(option, f"must be at most {MAX_OPTION_INT}, got {shorten(text)!r}")
    return values


def _given_ints(
    value: Any, option: str, minimum: int, lengths: tuple[int, ...], form: str
) -> list[int]:
    """Whole numbers given as data (a YAML number or list): one, or a list of one of ``lengths``
    (``form`` says which), each from ``minimum`` to ``MAX_OPTION_INT``."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(values) not in lengths:
        raise FieldError(option, f"takes {form}, got {short_repr(value)}")
    for number in values:
        if isinstance(number, bool) or not isinstance(number, int):
            raise FieldError(option, f"must be a whole number, got {short_repr(number)}")
        if not minimum <= number <= MAX_OPTION_INT:
            bound = f"at least {minimum}" if number < minimum else f"at most {MAX_OPTION_INT}"
            raise FieldError(option, f"must be {bound}, got {short_repr(number)}")
    return values


def parse_pair(value: Any, option: str, minimum: int = 1) -> tuple[int, int]:
    """``N`` or ``H,W`` (text), or N or [rows, cols] (data), as a (rows, cols) pair of ints, each
    at least ``minimum``.

    >>> parse_pair("0", "stride")
    Traceback (most recent call last):
    ...
    convcli.errors.FieldError: stride must be at least 1, got '0'
    """
    if not isinstance(value, str):
        values = _given_ints(value, option, minimum, (1, 2), "N or [rows, cols]")
        return (values[0], values[-1])
    values = _ints(value, option)
    if len(values) not in (1, 2):
        raise FieldError(option, f"takes N or H,W, got {shorten(value)!r}")
    if min(values) < minimum:
        raise FieldError(option, f"must be at least {minimum}, got {shorten(value)!r}")
    return (values[0], values[-1])


def parse_count(value: Any, option: str, minimum: int = 1, maximum: int = MAX_OPTION_INT) -> int:
    """One whole number from ``minimum`` to ``maximum`` (``--groups``, ``--frame``, ``--jobs``),
    as text or as a number.

    >>> parse_count("3", "groups")
    3
    """
    if not isinstance(value, str):
        number = _given_ints(value, option, minimum, (1,), "one number")[0]
        if number > maximum:
            raise FieldError(option, f"must be at most {maximum}, got {number}")
        return number
    return _field(option, parse_whole, value, option, minimum, maximum)


def parse_padding(value: Any) -> PaddingSpec:
    """``valid``, ``same``, ``full``, or counts >= 0: text ``N``, ``H,W``,
    ``top,bottom,left,right``, or data N, [rows, cols], [top, bottom, left, right]."""
    if not isinstance(value, str):
        values = _given_ints(value, "padding", 0, (1, 2, 4), "1, 2 or 4 numbers")
        return tuple(values) if len(values) == 4 else (values[0], values[0], values[-1], values[-1])
    word = value.strip().lower()
    if word in PADDING_RULES or word.isalpha():
        return _field("padding", one_of, value, PADDING_RULES, "padding")
    values = _ints(value, "padding")
    if min(values) < 0:
        raise FieldError("padding", f"must not be negative, got {shorten(value)!r}")
    if len(values) == 1:
        return (values[0],) * 4
    if len(values) == 2:
        return (values[0], values[0], values[1], values[1])
    if len(values) == 4:
        return tuple(values)
    raise FieldError(
        "padding", f"{shorten(value)!r} is not valid, same, full, N, H,W or top,bottom,left,right"
    )


def parse_pad_mode(text: str) -> str:
    """A border mode of ``PAD_MODES``: PyTorch's four, or numpy's ``symmetric``.

    >>> parse_pad_mode(" Symmetric ")
    'symmetric'
    """
    return one_of(str(text), PAD_MODES, "pad mode")


def parse_floats(text: str, option: str) -> tuple[float, ...]:
    """A comma-separated list of finite numbers, e.g. a bias per output channel.

    >>> parse_floats("0.5, -1", "bias")
    (0.5, -1.0)
    """
    parts = str(text).split(",")
    if not all(NUMBER.fullmatch(p) for p in parts):
        raise ParameterError(
            f"{option} {shorten(text)!r} is not a number or comma-separated numbers"
        )
    values = tuple(parse_real(p, option, finite=False) for p in parts)
    if not all(math.isfinite(v) for v in values):
        raise ParameterError(f"{option} {shorten(text)!r} must be finite")
    return values


def parse_number(text: str, option: str) -> float:
    """One finite number, written in ASCII (``--scale``, ``--offset``).

    >>> parse_number("-0.5", "offset")
    -0.5
    """
    values = parse_floats(text, option)
    if len(values) != 1:
        raise ParameterError(f"{option} takes one number, got {shorten(text)!r}")
    return values[0]


# --------------------------------------------------------------------------------------------
# Python values (the ``convcli`` API): each becomes the option text above and is read by the
# same parser, so a size, a padding or a bias follows one rule whether typed or passed.


def numbers_text(value: Any, name: str, shape: str) -> str:
    """``value`` (a whole number, or a tuple/list of them) as comma-separated option text;
    ``shape`` says what ``name`` takes, for the message.

    >>> numbers_text((224, 224, 3), "input_shape", "(H, W, C)")
    '224,224,3'
    """
    values = list(value) if isinstance(value, (tuple, list)) else [value]
    try:
        if not values or any(isinstance(v, bool) for v in values):
            raise TypeError
        return ",".join(str(operator.index(v)) for v in values)
    except TypeError:
        message = f"{name} takes {shape} (whole numbers), got {short_repr(value)}"
        raise ParameterError(message) from None


def as_pair(value: Any, name: str, minimum: int = 1) -> tuple[int, int]:
    """An int, a (rows, cols) pair or its text ``N``/``H,W`` as a (rows, cols) pair.

    >>> as_pair(2, "size"), as_pair((1, 3), "stride"), as_pair("2,1", "dilation")
    ((2, 2), (1, 3), (2, 1))
    >>> as_pair(1.5, "stride")
    Traceback (most recent call last):
    ...
    convcli.errors.ParameterError: stride takes N or (rows, cols) (whole numbers), got 1.5
    """
    text = value if isinstance(value, str) else numbers_text(value, name, "N or (rows, cols)")
    return parse_pair(text, name, minimum)


def as_padding(value: Any, name: str = "padding") -> PaddingSpec:
    """A padding word, an int, (rows, cols) or (top, bottom, left, right), as ``parse_padding``.

    >>> as_padding("Same"), as_padding(1), as_padding((1, 2)), as_padding([0, 1, 2, 3])
    ('same', (1, 1, 1, 1), (1, 1, 2, 2), (0, 1, 2, 3))
    """
    if isinstance(value, str):
        return parse_padding(value)
    takes = "valid, same, full, N, (rows, cols) or (top, bottom, left, right)"
    return parse_padding(numbers_text(value, name, takes))


def as_count(value: Any, name: str, minimum: int = 1) -> int:
    """One whole number of at least ``minimum`` (``groups``).

    >>> as_count(2, "groups")
    2
    """
    text = value if isinstance(value, str) else numbers_text(value, name, "one number")
    return parse_count(text, name, minimum)


def as_numbers(value: Any, name: str) -> tuple[float, ...]:
    """A finite number or a sequence of them, e.g. a bias per output channel.

    >>> as_numbers(0.5, "bias"), as_numbers([1, -2], "bias")
    ((0.5,), (1.0, -2.0))
    """
    values = list(value) if isinstance(value, (tuple, list)) else [value]
    try:
        if any(isinstance(v, (bool, str)) for v in values):
            raise TypeError
        text = ",".join(repr(float(v)) for v in values)
    except (TypeError, ValueError):
        message = f"{name} takes a number or a list of numbers, got {short_repr(value)}"
        raise ParameterError(message) from None
    return parse_floats(text, name)
