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
}


@dataclass(frozen=True)
class Step:
    """One checked step: its op, its number in the file (from 1), its name, and its field values.

    ``given`` lists the fields written in the file (the others hold defaults). A conv step's
    ``kernel`` holds the resolved ``kernel_library.Kernel`` objects.
    """

    op: str
    params: Mapping[str, Any]
    number: int = 1
    name: str | None = None
    given: frozenset = frozenset()

    @property
    def label(self) -> str:
        """``step 3 (pool)``, for messages."""
        return f"step {self.number} ({self.op})"
