"""The work on one file, as ``conv``, ``pool`` and ``run`` do it: read, run the steps, write;
the output settings and the files an output may create.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from convcli.errors import ConvcliError
from convcli.io.urls import is_url

if TYPE_CHECKING:
    from convcli.pipeline.execute import Maps
    from convcli.pipeline.schema import Pipeline, Step


@dataclass(frozen=True)
class Job:
    """The work on one file, for ``conv``, ``pool`` and ``run``: read, run the steps, write.

    Picklable (a module-level class holding checked steps and settings), so ``batch.Batch`` can
    send it to worker processes. ``read`` holds the ``images.ReadOptions`` (``--max-pixels``,
    ``--frame``); ``alpha`` is ``keep`` (carried through when the size is unchanged), ``drop``
    or ``channel``; ``format`` names the output format for ``-o -``;
    ``overwrite`` allows replacing an existing output (the plan, ``batch.plan.check_outputs``,
    has checked the outputs before any work; a file that appears since is refused when the
    output is put in place, never replaced); ``indices`` also writes the argmax of the
    max pool step named ``pool`` to that ``.npy`` file; ``before`` is called ahead of each step.
    """

    pipeline: Pipeline
    settings: Any = None
    alpha: str = "keep"
    format: str | None = None
    overwrite: bool = False
    indices: str | None = None
    before: Callable[[Step, Maps], None] | None = None
    read: Any = None

    def __call__(self, source: str, target: str | None) -> dict:
        """Process ``source`` into ``target``; the input and output shapes, as (H, W, C)."""
        return self.process(source, target)[1]

    def process(self, source: str, target: str | None) -> tuple[Maps, dict]:
        """As ``__call__``, and also the final maps; ``target`` None writes nothing."""
        import numpy as np

        from convcli.io import images
        from convcli.pipeline.execute import Maps

        picture = images.read_input(
            source, alpha_as_channel=self.alpha == "channel", options=self.read
        )
        if target is not None:
            self._check_planned(target, picture)
        with np.errstate(
            over="ignore", invalid="ignore"
        ):  # float32 overflows to inf, NaN propagates (PyTorch)
            maps = self.pipeline.run(Maps(picture.data, picture.white, source=source), self.before)
            if target is not None:
                self._write(target, picture, maps)
        shapes = {"input_shape": _hwc(picture.data.shape), "output_shape": _hwc(maps.data.shape)}
        return maps, shapes

    def _check_planned(self, target: str, picture) -> None:
        """Before the steps run: the output shape ``trace`` plans must suit the output's format
        (a 20000-pixel-wide WebP is refused now, not after the work)."""
        from convcli.io import images
        from convcli.pipeline.trace import trace

        try:
            planned = trace(self.pipeline, tuple(_hwc(picture.data.shape)))
        except ConvcliError:  # the steps themselves will say what is wrong
            return
        if planned.error is None and planned.output is not None:
            images.check_output_shape(
                target, self.settings, planned.output, picture.white, self.format
            )

    def _write(self, target: str, picture, maps: Maps) -> None:
        import numpy as np

        from convcli.io import images
        from convcli.io.atomic import atomic_write, folder_of, make_folder
        from convcli.io.paths import STDIO

        if target != STDIO:
            make_folder(folder_of(target))
        carried = (
            picture.alpha
            if self.alpha == "keep" and maps.data.shape[1:] == picture.data.shape[1:]
            else None
        )
        images.write_output(
            target,
            maps.data,
            maps.white,
            carried,
            self.settings,
            in_place=True,
            signed=maps.flags,
            labels=maps.labels,
            format=self.format,
            replace=self.overwrite,
        )
        if self.indices is not None:
            where = maps.pools["pool"][0]
            atomic_write(
                self.indices, lambda f: np.save(f, where.transpose(1, 2, 0)), self.overwrite
            )


def output_files(target: str, settings) -> list[str]:
    """The files writing to ``target`` may create: ``target``, or with ``--split`` the
    ``stem_NN.ext`` files already there (their count depends on the image).

    >>> output_files("out/a.png", None)
    ['out/a.png']
    """
    if settings is None or not settings.split:
        return [target]
    stem, ext = os.path.splitext(target)
    pattern = re.compile(re.escape(os.path.basename(stem)) + r"_\d{2,}" + re.escape(ext) + r"\Z")
    if is_url(target):
        from convcli.io import urls
        from convcli.io.atomic import folder_of

        folder = folder_of(target)
        return sorted(f"{folder}/{name}" for name in urls.names_in(folder) if pattern.match(name))
    folder = os.path.dirname(target) or "."
    if not os.path.isdir(folder):
        return []
    return sorted(
        os.path.join(os.path.dirname(target), f) for f in os.listdir(folder) if pattern.match(f)
    )


def _hwc(shape: Sequence[int]) -> list[int]:
    return [int(shape[1]), int(shape[2]), int(shape[0])]
