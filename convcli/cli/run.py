"""``convcli run``, and the batch front end that ``conv`` and ``pool`` share.

Every command that processes files takes ``INPUT...`` (files, directories, glob patterns, or
``-`` for standard input), ``-o FILE|-`` or ``--out-dir DIR`` with ``--name``, and ``--jobs``.
``run_batch`` checks the whole plan before any image is read (outputs, collisions, existing
files), runs a ``pipeline.Job`` over it (``batch.Batch``), shows progress, reports failures
as they happen and ends with a summary, an optional JSON report and the exit code.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

import click

from convcli.cli.kernels import kernel_path_option
from convcli.cli.options import (Choice, command_line_output_values, input_options,
                                      output_options, parsed)
from convcli.cli.tables import print_json
from convcli.layers.values import parse_count

#: The most worker processes ``--jobs`` starts.
MAX_JOBS = 256

# The same names as convcli.io.images.OUTPUT_FORMATS, repeated so that --help needs no numpy.
OUTPUT_FORMATS = ("npy", "png", "tif", "tiff", "jpg", "jpeg", "bmp", "webp")

ALPHA_OPTION = click.option(
    "--alpha", type=Choice(["keep", "drop", "channel"]), default="keep", show_default=True,
    help="keep: process colour only, carry alpha through when the size is unchanged; drop: "
         "discard it; channel: process it as one more channel.")

_BATCH_OPTIONS = (
    click.option("-o", "--output", metavar="FILE|-",
                 help="Output file (one input): .npy (exact float32) or an image; - writes to stdout "
                      "(with --format)."),
    click.option("--out-dir", metavar="DIR",
                 help="One output per input in DIR (created if missing), keeping each input's path "
                      "relative to the folder or pattern that found it."),
    click.option("--name", "name_template", metavar="TEMPLATE",
                 help="Output names in --out-dir: {stem}, {name}, {ext} and the command's fields "
                      "(conv: {kernel}; pool: {mode}; run: {pipeline}).  [default: {stem}.{ext}]"),
    click.option("--format", "out_format", type=Choice(OUTPUT_FORMATS),
                 help="Format of -o - and {ext} in --out-dir.  [default for --out-dir: the input's "
                      "extension if convcli writes it, else png]"),
    click.option("-r", "--recursive", is_flag=True, help="Descend into the subfolders of directory inputs."),
    click.option("-j", "--jobs", callback=parsed(parse_count, "jobs", 1, MAX_JOBS), metavar="N",
                 help=f"Files processed in parallel (worker processes), at most {MAX_JOBS}.  "
                      "[default: the cores; 1 for one input]"),
    click.option("--overwrite", is_flag=True, help="Replace existing outputs (an input is never replaced)."),
    click.option("--skip-existing", is_flag=True,
                 help="Keep existing outputs and skip their inputs (to resume a batch)."),
    click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary; errors are still shown."),
    click.option("--json", "as_json", is_flag=True,
                 help="Print a JSON report on stdout: one record per input (not with -o -)."),
)


@dataclass(frozen=True)
class BatchOptions:
    """The batch options of one command line."""

    output: Optional[str] = None
    out_dir: Optional[str] = None
    name_template: Optional[str] = None
    out_format: Optional[str] = None
    recursive: bool = False
    jobs: Optional[int] = None
    overwrite: bool = False
    skip_existing: bool = False
    quiet: bool = False
    as_json: bool = False


def batch_options(command):
    """Add the batch options to a command, which receives them as ``batch`` (a BatchOptions)."""
    names = BatchOptions.__dataclass_fields__

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        kwargs["batch"] = BatchOptions(**{name: kwargs.pop(name) for name in names})
        return command(*args, **kwargs)

    for option in reversed(_BATCH_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


@click.command()
@click.argument("pipeline_file", metavar="PIPELINE.yaml")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@kernel_path_option
@ALPHA_OPTION
@batch_options
@output_options
@input_options
def run(pipeline_file, inputs, kernel_path, alpha, batch, out, reading):
    """Run the steps of PIPELINE.yaml on every INPUT (files, folders, patterns, or - for stdin).

    \b
    convcli run examples/edges.yaml photo.png -o edges.png
    convcli run examples/cnn_block.yaml photos/ -r --out-dir maps --format npy

    The pipeline is checked, and its kernels found, before any image is read. Output options
    on the command line override the file's 'output' section.
    """
    from convcli.cli.options import usage_output_settings as output_settings
    from convcli.pipeline import Job, load_pipeline

    pipeline = load_pipeline(pipeline_file, kernel_path)
    settings = out
    if pipeline.output:
        given = command_line_output_values(click.get_current_context())
        settings = output_settings(**{**pipeline.output, **given})
    job = Job(pipeline, settings, alpha, batch.out_format, batch.overwrite, read=reading)
    stem = os.path.splitext(os.path.basename(pipeline_file))[0]
    run_batch(inputs, job, batch, pipeline=stem)


# --------------------------------------------------------------------------------------------
# The batch front end


def run_batch(inputs: Sequence[str], job, batch: BatchOptions, single: Optional[str] = None,
              extra_outputs: Sequence[str] = (), **fields: str) -> None:
    """Plan, check, run ``job`` over ``inputs`` and report; exit 1 if any input failed.

    ``single`` names an option that takes one input only (``--explain``); ``extra_outputs``
    are more files the job writes (``pool --indices``), checked like outputs; ``fields`` fill
    the ``--name`` template.
    """
    from convcli import batch as planner
    from convcli.io.atomic import make_folder
    from convcli.runtime import available_cores

    ctx = click.get_current_context()
    _check_usage(ctx, inputs, batch)
    sources = planner.expand_inputs(inputs, batch.recursive, batch.out_dir)
    if single and len(sources) != 1:
        raise click.UsageError(f"{single} takes one input, got {len(sources)}", ctx)
    pairs = planner.plan_outputs(sources, batch.output, batch.out_dir, batch.name_template or "{stem}.{ext}",
                                 batch.out_format, **fields)
    skip = check_outputs(pairs, job.settings, batch, extra_outputs)
    if batch.out_dir is not None:
        make_folder(batch.out_dir)
    todo = len(pairs) - len(skip)
    jobs = min(batch.jobs or available_cores(), max(todo, 1))
    reporter = Reporter(len(pairs), todo, batch.quiet)
    start = time.perf_counter()
    try:
        debug = bool(ctx.find_root().params.get("traceback"))
        records = planner.Batch(pairs, jobs, skip, debug).run(job, reporter.update)
    finally:
        reporter.close()
    counts = {status: sum(r.status == status for r in records) for status in ("done", "skipped", "failed")}
    if len(pairs) > 1 and not batch.quiet:
        click.echo(f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed "
                   f"in {time.perf_counter() - start:.1f} s", err=True)
    if batch.as_json:
        print_json("batch", {**counts, "records": [asdict(r) for r in records]})
    if counts["failed"]:
        ctx.exit(1)


def _check_usage(ctx: click.Context, inputs: Sequence[str], batch: BatchOptions) -> None:
    from convcli.batch import STDIO

    problems = (
        (batch.overwrite and batch.skip_existing, "--overwrite and --skip-existing exclude each other"),
        (batch.output is not None and batch.out_dir is not None, "give -o/--output or --out-dir, not both"),
        (batch.output is None and batch.out_dir is None, "Missing option '-o' / '--output' or '--out-dir'."),
        (batch.name_template is not None and batch.out_dir is None, "--name applies to --out-dir"),
        (batch.as_json and batch.output == STDIO, "--json prints on stdout, where -o - writes the image"),
        (batch.output == STDIO and batch.out_format is None, "-o - (stdout) needs --format"),
        (batch.out_format is not None and batch.output not in (None, STDIO),
         "--format applies to -o - and --out-dir (the extension of -o FILE is its format)"),
        (STDIO in inputs and len(inputs) > 1, "- (stdin) must be the only input"),
        (STDIO in inputs and batch.out_dir is not None, "- (stdin) needs -o FILE or -o -, not --out-dir"),
    )
    for bad, message in problems:
        if bad:
            raise click.UsageError(message, ctx)


def check_outputs(pairs: Sequence[tuple[str, str]], settings, batch: BatchOptions,
                  extra_outputs: Sequence[str] = ()) -> set:
    """Check every output before any work; return the outputs to skip (``--skip-existing``).

    An existing output is an error unless ``--overwrite`` or ``--skip-existing``; the message
    names the first and counts the others.
    """
    from convcli.io import images
    from convcli.io.atomic import check_folder, check_target, taken
    from convcli.errors import OutputError
    from convcli.pipeline import output_files

    if batch.out_dir is not None and os.path.exists(batch.out_dir) and not os.path.isdir(batch.out_dir):
        raise OutputError(f"--out-dir {batch.out_dir!r} is a file, not a directory")
    if batch.out_dir is not None:
        check_folder(batch.out_dir)
    for source, target in pairs:
        if target != images.STDIO:
            check_target(target)
        if batch.out_dir is not None and not os.path.isdir(os.path.dirname(os.path.abspath(target))):
            images.check_output_format(target, settings)  # a folder in --out-dir: made when written
        else:
            images.check_output_path(target, [source], settings, batch.out_format)
    for path in extra_outputs:
        check_target(path)
    existing = [target for _, target in pairs if target != images.STDIO
                and any(taken(f) for f in output_files(target, settings))]
    extra_existing = [path for path in extra_outputs if taken(path)]
    if batch.skip_existing and extra_outputs:  # one input, whose outputs are kept all or none
        present = existing + extra_existing
        missing = [t for _, t in pairs if t not in existing] + sorted(set(extra_outputs) - set(extra_existing))
        if present and missing:
            raise OutputError(f"output {present[0]!r} exists but {missing[0]!r} does not; "
                              f"--skip-existing keeps only complete outputs (use --overwrite to "
                              f"make them again)")
    existing += extra_existing
    if existing and not (batch.overwrite or batch.skip_existing):
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputError(f"output {existing[0]!r} exists{more}; use --overwrite to replace or "
                          f"--skip-existing to keep")
    return set(existing) if batch.skip_existing else set()


def error_line(source: str, message: str, batch: bool) -> str:
    """``Error: message``; in a batch the input's path first, unless the message names it.

    >>> error_line("a.png", "kernel 7x7 is larger than the padded input 5x5", True)
    'Error: a.png: kernel 7x7 is larger than the padded input 5x5'
    >>> error_line("a.png", "input 'a.png' does not exist", True)
    "Error: input 'a.png' does not exist"
    """
    from convcli.limits import short_message

    named = not batch or repr(source) in message
    return short_message(f"Error: {message}" if named else f"Error: {source}: {message}")


class Reporter:
    """Failures on stderr as they happen, and a progress bar (files, rate, ETA) on stderr when
    it is a terminal, the batch has more than one file to do, and not ``quiet``."""

    def __init__(self, total: int, todo: int, quiet: bool, console: Any = None):
        self.batch = total > 1
        self.progress = None
        if not quiet and todo > 1 and (console is not None or sys.stderr.isatty()):
            self.progress, self.task = _progress_bar(todo, console)

    def update(self, record) -> None:
        if record.status == "failed":
            line = error_line(record.input, record.error, self.batch)
            if self.progress is not None:
                self.progress.console.print(line, markup=False, highlight=False)
            else:
                click.echo(line, err=True)
        if self.progress is not None:
            self.progress.advance(self.task)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _progress_bar(total: int, console: Any):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:.1f} files/s" if task.speed else "- files/s")

    progress = Progress(BarColumn(), MofNCompleteColumn(), Rate(), TimeRemainingColumn(),
                        console=console or Console(stderr=True), transient=False)
    task = progress.add_task("files", total=total)
    progress.start()
    return progress, task


def slug(specs: Sequence[str]) -> str:
    """``{kernel}`` for ``--name``: the kernels as file-name-safe text, joined by ``+``.

    >>> slug(["sobel_x", "box:size=5", "weights/bank.npy"])
    'sobel_x+box_size=5+bank'
    """
    parts = []
    for spec in specs:
        if re.search(r"\.(ya?ml|npy|mat)$", spec, re.I):
            spec = os.path.splitext(os.path.basename(spec))[0]
        parts.append(re.sub(r"[^\w.=-]+", "_", spec).strip("_") or "kernel")
    return "+".join(parts)
