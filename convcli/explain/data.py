"""The trace as data for Python callers: ``convcli.explain(input_shape, layers)``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from convcli.errors import ParameterError
from convcli.explain.language import parse_step, step_from_dict
from convcli.explain.trace import trace
from convcli.layers.spec import Layer
from convcli.layers.values import numbers_text


def _input_shape(input_shape: Any) -> tuple[int, int, int]:
    from convcli.io.probe import input_shape as probed
    from convcli.io.probe import parse_shape

    if isinstance(input_shape, (str, os.PathLike)):
        return probed(os.fspath(input_shape))
    text = numbers_text(input_shape, "input_shape", "(H, W) or (H, W, C)")
    return parse_shape(text.replace(",", "x"))


def explain(input_shape: Any, layers: Any = ()):
    """The shape trace ``convcli explain`` prints, as data (``explain.Trace``).

    ``input_shape`` is (H, W) or (H, W, C), ``"HxWxC"``, or an image or ``.npy`` file (its
    header only); ``layers`` are step strings (``"conv 64 k7 s2 p3"``), mappings
    (``{"op": "conv", "filters": 64, "kernel": 7}``) or a ``Pipeline``. Each row has the
    output shape, the size arithmetic, parameters, multiply-adds and the receptive field;
    ``to_dict()`` is the JSON of ``convcli explain --json`` (its ``source``: ``input_shape``
    when given as text or a path). A step that cannot run ends the
    trace with its ``error``.

    Examples
    --------
    >>> trace = explain((224, 224, 3), ["conv 64 k7 s2 p3 nobias", "maxpool k3 s2 p1"])
    >>> [(row.output, row.params, row.macs) for row in trace.rows]
    [((112, 112, 64), 9408, 118013952), ((56, 56, 64), 0, 0)]
    >>> trace.rows[-1].receptive_field[0].size
    11
    """
    from convcli.pipeline.schema import Pipeline

    shape = _input_shape(input_shape)
    source = os.fspath(input_shape) if isinstance(input_shape, (str, os.PathLike)) else ""
    checked = getattr(layers, "checked", layers)  # ``convcli.Pipeline`` holds the checked one
    if isinstance(checked, Pipeline):
        return checked.trace(shape, source)
    steps = []
    for number, layer in enumerate([layers] if isinstance(layers, str) else layers, 1):
        if isinstance(layer, str):
            steps.append(parse_step(layer, number))
        elif isinstance(layer, Mapping):
            steps.append(step_from_dict(layer, number))
        elif isinstance(layer, Layer):
            steps.append(layer)
        else:
            raise ParameterError(
                f"layers: step {number} must be a string or a mapping, got {type(layer).__name__}"
            )
    return trace(shape, steps, source)
