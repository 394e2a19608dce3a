"""Kernel parameters: the types a kernel file declares, and the ``NAME:key=value`` text.

A YAML kernel declares its parameters (``type: int``, ``float`` or ``choice``, a default, a
range); ``sobel:dir=y`` gives values as text. Numbers are read by ``convcli.limits``
(``parse_whole``, ``parse_real``); the ranges are checked here. No numpy.

>>> parse_params("sigma=2, size=7", "kernel 'gaussian'")
{'sigma': '2', 'size': '7'}
>>> declared = declare_parameters({"size": {"type": "int", "default": 3, "min": 1}}, "box.yaml")
>>> declared["size"].summary()
'size=3 [1, inf)'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from convcli import limits
from convcli.errors import KernelError

PARAMETER_KEYS = ("type", "default", "min", "max", "exclusive_min", "odd", "choices")
PARAMETER_TYPES = ("int", "float", "choice")
#: What ``limits.parse_whole`` makes of a whole number of more than 30 digits (its sign kept).
_WHOLE_LIMIT = 10**30


@dataclass(frozen=True)
class Parameter:
    """A declared kernel parameter: ``int``, ``float`` or ``choice``, its default and range.

    >>> size = Parameter("size", "int", 3, min=1, max=255, odd=True)
    >>> size.parse("5", "box"), size.summary()
    (5, 'size=3 odd [1, 255]')
    >>> Parameter("sigma", "float", 1.0, exclusive_min=0).summary()
    'sigma=1.0 (0, inf)'
    """

    name: str
    type: str
    default: Any = None
    min: float | None = None
    max: float | None = None
    exclusive_min: float | None = None
    odd: bool = False
    choices: tuple = ()

    def parse(self, raw: Any, where: str) -> Any:
        """The value of ``raw`` (text from ``NAME:key=value`` or a YAML default), checked.

        >>> Parameter("size", "int", 3, min=1).parse("0", "kernel 'box'")
        Traceback (most recent call last):
        ...
        convcli.errors.KernelError: kernel 'box': size=0 must be at least 1
        """
        if raw is None:
            return None  # a default of null: the generator's default rule (e.g. size from sigma)
        text = str(raw).strip()
        shown = limits.shorten(text)
        if self.type == "choice":
            for choice in self.choices:
                if str(choice) == text:
                    return choice
            raise KernelError(f"{where}: {self.name}={shown} is not one of {self._choices()}")
        what = f"{where}: {self.name}="  # limits joins it to the value: "size='2.5' is not ..."
        if self.type == "int":
            value = limits.parse_whole(text, what, -_WHOLE_LIMIT, _WHOLE_LIMIT, KernelError)
            if abs(value) == _WHOLE_LIMIT:  # more than 30 digits: not converted, never in range
                raise KernelError(f"{where}: {self.name}={shown} is too large")
        else:
            value = limits.parse_real(text, what, KernelError, finite=False)
        if not is_finite(value):
            raise KernelError(f"{where}: {self.name}={shown} must be finite")
        above, low, high = self.exclusive_min, self.min, self.max
        rule = (
            f"greater than {above:g}"
            if above is not None and value <= above
            else f"at least {low:g}"
            if low is not None and value < low
            else f"at most {high:g}"
            if high is not None and value > high
            else "odd"
            if self.odd and value % 2 == 0
            else None
        )
        if rule:
            raise KernelError(f"{where}: {self.name}={shown} must be {rule}")
        return value

    def summary(self) -> str:
        """``name=default`` and the allowed values (an interval, or the choices)."""
        default = "auto" if self.default is None else self.default
        if self.type == "choice":
            return f"{self.name}={default} ({self._choices()})"
        low = (
            f"({self.exclusive_min:g}"
            if self.exclusive_min is not None
            else f"[{self.min:g}"
            if self.min is not None
            else "(-inf"
        )
        high = f"{self.max:g}]" if self.max is not None else "inf)"
        return f"{self.name}={default} {'odd ' if self.odd else ''}{low}, {high}"

    def _choices(self) -> str:
        return "|".join(str(c) for c in self.choices)


def parse_params(text: str, where: str) -> dict[str, str]:
    """The ``key=value`` pairs after ``NAME:`` (comma-separated), as text; each key once."""
    params = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key:
            raise KernelError(f"{where}: parameter {item!r} is not key=value")
        if key in params:
            raise KernelError(f"{where}: parameter {key!r} is given twice")
        params[key] = value
    return params


def declare_parameters(raw: Any, where: str) -> dict[str, Parameter]:
    """The ``parameters:`` mapping of a YAML kernel, each rule checked and its default parsed."""
    from convcli.io.yamlsafe import check_keys

    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise KernelError(f"{where}: parameters must be a mapping of name to rules")
    declared = {}
    for key, rule in raw.items():
        if isinstance(rule, dict):  # "unknown key 'mx' (did you mean 'max'?" for this parameter
            check_keys(
                rule, PARAMETER_KEYS, f"{where}: parameter {limits.shorten(key)!r}", KernelError
            )
        if (
            not isinstance(rule, dict)
            or set(rule) - set(PARAMETER_KEYS)
            or rule.get("type") not in PARAMETER_TYPES
        ):
            raise KernelError(
                f"{where}: parameter {key!r} needs a type "
                f"({', '.join(PARAMETER_TYPES)}) and only the rules "
                f"{', '.join(PARAMETER_KEYS)}"
            )
        if (rule["type"] == "choice") != bool(rule.get("choices")):
            raise KernelError(
                f"{where}: parameter {key!r}: choices go with type choice, and only with it"
            )
        bounds = [rule.get(k) for k in ("min", "max", "exclusive_min")]
        if any(
            isinstance(b, bool)
            or not isinstance(b, (int, float, type(None)))
            or (b is not None and not is_finite(b))
            for b in bounds
        ):
            raise KernelError(
                f"{where}: parameter {key!r}: min, max and exclusive_min must be finite numbers"
            )
        parameter = Parameter(name=str(key), **{**rule, "choices": tuple(rule.get("choices", ()))})
        parameter.parse(parameter.default, f"{where}: the declared default")
        declared[str(key)] = parameter
    return declared


def is_finite(value: Any) -> bool:
    """Whether a number is finite as a float (an int of 400 digits is not: it overflows).

    >>> is_finite(10**400), is_finite(2.5), is_finite("x")
    (False, True, False)
    """
    try:
        return math.isfinite(float(value))
    except (OverflowError, TypeError, ValueError):
        return False
