"""Pipelines: steps applied to every image, read from YAML and checked before any image is read.

``schema`` reads a pipeline file or mapping into checked steps (``parse_pipeline``,
``load_pipeline``); ``execute`` applies them to a picture's values (``Pipeline.run`` on
``Maps``); ``job`` is the work on one file (read, run, write) that ``conv``, ``pool`` and ``run``
all use, picklable for worker processes. A pipeline's layers are ``layers.spec.Layer``s, which
``explain.trace`` traces (``trace``: ``Pipeline.trace``).
"""

from convcli.pipeline.execute import Flags, Labels, Maps, combine_maps, combined_count
from convcli.pipeline.job import Job, output_files
from convcli.pipeline.output import output_settings
from convcli.pipeline.schema import (
    ACTIVATIONS,
    ALIASES,
    FIELDS,
    OUTPUT_FIELDS,
    Pipeline,
    Step,
    load_pipeline,
    make_step,
    parse_pipeline,
)


def trace(pipeline: Pipeline, shape: tuple[int, int, int], source: str = ""):
    """``pipeline.trace(shape, source)``: its ``explain.Trace`` from an (H, W, C) input."""
    return pipeline.trace(shape, source)


__all__ = [
    "ACTIVATIONS",
    "ALIASES",
    "FIELDS",
    "OUTPUT_FIELDS",
    "Flags",
    "Job",
    "Labels",
    "Maps",
    "Pipeline",
    "Step",
    "combine_maps",
    "combined_count",
    "load_pipeline",
    "make_step",
    "output_files",
    "output_settings",
    "parse_pipeline",
    "trace",
]
