"""How numbers are written in traces and worked examples."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any

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
        return (
            str(value.numerator)
            if value.denominator == 1
            else f"{value.numerator}/{value.denominator}"
        )
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}"


# --------------------------------------------------------------------------------------------
