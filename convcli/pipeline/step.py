"""The pipeline's step: one checked op with its field values (``schema`` builds it, ``execute``
runs it, ``trace`` turns it into ``explain`` rows).

>>> Step("pool", {"mode": "max", "size": (2, 2)}, 3).label
'step 3 (pool)'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Activations and the explain kind each traces as.
ACTIVATIONS = {
    "relu": "relu",
    "leaky_relu": "leakyrelu",
    "abs": "abs",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "clip": "clip",
    "hardsigmoid": "hardsigmoid",
    "hardswish": "hardswish",
}
#: Ops that read two or more earlier steps (``inputs: [a, b]``).
JOINS = ("add", "concat")
#: The name by which a step reads the pipeline's input.
IMAGE = "image"


@dataclass(frozen=True)
class Step:
    """One checked step: its op, its number in the file (from 1), its name, and its field values.

    ``given`` lists the fields written in the file (the others hold defaults). A conv step's
    ``kernel`` holds the resolved ``kernel_library.Kernel`` objects. ``sources`` holds the
    numbers of the steps it reads (0: the pipeline's input); empty, it reads the step before.
    """

    op: str
    params: Mapping[str, Any]
    number: int = 1
    name: str | None = None
    given: frozenset = frozenset()
    sources: tuple[int, ...] = ()

    def reads(self, previous: int) -> tuple[int, ...]:
        """The numbers of the steps whose maps this step reads (0: the pipeline's input), the
        step before it being number ``previous``.

        >>> Step("relu", {}, 3).reads(2), Step("add", {}, 4, sources=(0, 2)).reads(3)
        ((2,), (0, 2))
        """
        return self.sources or (previous,)

    @property
    def label(self) -> str:
        """``step 3 (pool)``, for messages."""
        return f"step {self.number} ({self.op})"
