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
        return self.process(source, target, banded=True)[1]

    def targets(self, target: str) -> list[str]:
        """The files this job writes for the planned ``target`` (one, for this job)."""
        return [target]

    def process(
        self, source: str, target: str | None, banded: bool = False
    ) -> tuple[Maps | None, dict]:
        """As ``__call__``, and also the final maps; ``target`` None writes nothing. With
        ``banded`` a big image may go band by band (``bands``), and then no maps come back."""
        import numpy as np

        from convcli.io import images
        from convcli.pipeline.execute import Maps

        picture = images.read_input(
            source, alpha_as_channel=self.alpha == "channel", options=self.read
        )
        if target is not None:
            self._check_planned(target, picture)
            # --- big images in bounded memory (issue 20): the job band by band, if it goes so
            if banded:
                from convcli.pipeline.bands import run_in_bands

                shapes = run_in_bands(self, picture, source, target)
                if shapes is not None:
                    return None, shapes
            # --- end of the banded path
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

        try:
            planned = self.pipeline.trace(tuple(_hwc(picture.data.shape)))
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


@dataclass(frozen=True)
class LayersJob(Job):
    """The work on one file for ``run --model``: the maps of each saved layer to a file of its
    own (``layer_target``), written once every step has run.

    ``layers`` holds (step number, layer name) of the saved steps; ``channels`` the channels the
    model takes (None: any), ``model`` its path, for messages.
    """

    layers: tuple[tuple[int, str], ...] = ()
    channels: int | None = None
    model: str = ""

    def targets(self, target: str) -> list[str]:
        """One file per saved layer.

        >>> LayersJob(None, layers=((2, "conv1"), (5, "relu"))).targets("maps/cat_{layer}.png")
        ['maps/cat_conv1.png', 'maps/cat_relu.png']
        """
        return [layer_target(target, name, len(self.layers)) for _, name in self.layers]

    def process(self, source: str, target: str | None, banded: bool = False) -> tuple[Maps, dict]:
        """As ``Job.process``; the saved layers never go in bands (``banded`` is ignored)."""
        import numpy as np

        from convcli.errors import ShapeError
        from convcli.io import images
        from convcli.pipeline.execute import Maps

        picture = images.read_input(
            source, alpha_as_channel=self.alpha == "channel", options=self.read
        )
        count = len(picture.data)
        if self.channels is not None and count != self.channels:
            raise ShapeError(
                f"the image has {count} channel{'s' * (count != 1)}, the model {self.model!r} "
                f"takes {self.channels}"
            )
        targets = {}
        if target is not None:  # the files were checked when the batch was planned
            layer_files = self.targets(target)
            targets = {number: path for (number, _), path in zip(self.layers, layer_files)}
            self._check_planned(target, picture)
        kept = {}

        def keep(step: Step, maps: Maps) -> None:
            if step.number in dict(self.layers):
                kept[step.number] = maps

        with np.errstate(over="ignore", invalid="ignore"):
            maps = self.pipeline.run(Maps(picture.data, picture.white, source=source), after=keep)
            for number, path in targets.items():
                self._write(path, picture, kept[number])
        shapes = {"input_shape": _hwc(picture.data.shape), "output_shape": _hwc(maps.data.shape)}
        return maps, shapes

    def _check_planned(self, target: str, picture) -> None:
        """Before the steps run: the trace of the pipeline on this image's shape has no error
        (so that no layer is written before a later one fails)."""
        from convcli.errors import ShapeError

        planned = self.pipeline.trace(tuple(_hwc(picture.data.shape)))
        if planned.error is not None:
            raise ShapeError(planned.error)


def layer_target(target: str, layer: str, count: int) -> str:
    """The file of one saved layer: ``{layer}`` in ``target`` replaced by its name; else
    ``target`` itself for one layer, or ``stem_layer.ext`` beside it for several.

    >>> layer_target("maps/cat_{layer}.npy", "conv1", 2), layer_target("out.npy", "conv1", 1)
    ('maps/cat_conv1.npy', 'out.npy')
    >>> layer_target("out.png", "relu", 2)
    'out_relu.png'
    """
    if "{layer}" in target:
        return target.replace("{layer}", layer)
    if count == 1:
        return target
    stem, ext = os.path.splitext(target)
    return f"{stem}_{layer}{ext}"


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
