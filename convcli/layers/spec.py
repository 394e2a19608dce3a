"""The layer: one frozen type that the explain step language, the pipeline schema, the CLI
options, the Python API and imported models all build, and that ``explain`` traces and
``pipeline`` runs.

A layer is its ``op`` and its normalised field values (``params``, named as in a pipeline
file). A conv layer holds either resolved ``kernel`` objects (pipelines, CLI, API, models;
its kernel size and filter count follow from them and the input channels) or a ``filters``
count and a ``kernel_size`` (the explain language).

>>> Layer("pool", {"mode": "max", "size": (2, 2)}, 3).label, Layer("pool", {"mode": "avg"}).kind
('step 3 (pool)', 'avgpool')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Activation ops and how the explain language writes each.
ACTIVATIONS = {
    "relu": "relu",
    "relu6": "relu6",
    "leaky_relu": "leakyrelu",
    "gelu": "gelu",
    "silu": "silu",
    "abs": "abs",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "clip": "clip",
    "hardsigmoid": "hardsigmoid",
    "hardswish": "hardswish",
}
#: The activations a pipeline runs (the others are traced only).
RUN_ACTIVATIONS = (
    "relu",
    "leaky_relu",
    "abs",
    "sigmoid",
    "tanh",
    "clip",
    "hardsigmoid",
    "hardswish",
)
#: Ops that read two or more earlier layers (``inputs: [a, b]``).
JOINS = ("add", "concat")
#: Ops that change the channel count only (traced as ``channels N``).
CHANNEL_OPS = ("channels", "gray", "select", "mul", "stats") + JOINS
#: The name by which a layer reads the pipeline's input.
IMAGE = "image"


@dataclass(frozen=True)
class Layer:
    """One checked layer: its op, field values, number (from 1), name, the fields given, the
    numbers of the layers it reads (``sources``; 0: the input; empty: the layer before) and the
    text it was written as (the explain language; empty for mappings)."""

    op: str
    params: Mapping[str, Any] = field(default_factory=dict)
    number: int = 1
    name: str | None = None
    given: frozenset = field(default=frozenset(), compare=False)  # same values, same layer
    sources: tuple[int, ...] = ()
    text: str = ""

    def reads(self, previous: int) -> tuple[int, ...]:
        """The numbers of the layers whose maps this one reads (0: the input), the layer before
        it being number ``previous``.

        >>> Layer("relu", {}, 3).reads(2), Layer("add", {}, 4, sources=(0, 2)).reads(3)
        ((2,), (0, 2))
        """
        return self.sources or (previous,)

    @property
    def label(self) -> str:
        """``step 3 (pool)``, for messages."""
        return f"step {self.number} ({self.op})"

    @property
    def kind(self) -> str:
        """The word a trace row names it by: ``maxpool``, ``activation``, ``channels``, ...

        >>> Layer("leaky_relu").kind, Layer("gray").kind, Layer("global_pool", {"mode": "max"}).kind
        ('activation', 'channels', 'globalmaxpool')
        """
        if self.op == "pool":
            return f"{self.params['mode']}pool"
        if self.op == "global_pool":
            return f"global{self.params['mode']}pool"
        if self.op in ACTIVATIONS:
            return "activation"
        return "channels" if self.op in CHANNEL_OPS else self.op
