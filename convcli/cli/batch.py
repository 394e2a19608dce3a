"""The batch front end that ``conv``, ``pool`` and ``run`` share: options, progress, exit code.

Every command that processes files takes ``INPUT...`` (files, directories, glob patterns, or
``-`` for standard input), ``-o FILE|-`` or ``--out-dir DIR`` with ``--name``, and ``--jobs``.
``run_files`` checks the usage, plans and checks the whole batch before any image is read
(``batch.plan``), runs a ``pipeline.Job`` over it (``batch.run_batch``), shows progress,
reports failures as they happen and ends with a summary, an optional JSON report and the
exit code.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click

from convcli.cli.flags import record_in_flags
from convcli.cli.options import Choice, parsed
from convcli.cli.tables import print_json
from convcli.io.paths import STDIO
from convcli.io.urls import local_path
from convcli.layers.values import parse_count

#: fsspec's in-memory file system: every process has its own.
MEMORY = "memory://"
#: The most worker processes ``--jobs`` starts.
MAX_JOBS = 256

# The same names as convcli.io.images.OUTPUT_FORMATS, repeated so that --help needs no numpy.
OUTPUT_FORMATS = ("npy", "png", "tif", "tiff", "jpg", "jpeg", "bmp", "webp")

ALPHA_OPTION = click.option(
    "--alpha",
    type=Choice(["keep", "drop", "channel"]),
    default="keep",
    show_default=True,
    help="keep: process colour only, carry alpha through when the size is unchanged; drop: "
    "discard it; channel: process it as one more channel.",
)

_BATCH_OPTIONS = (
    click.option(
        "-o",
        "--output",
        metavar="FILE|-",
        help="Output file (one input): .npy (exact float32) or an image; - writes to stdout "
        "(with --format).",
    ),
    click.option(
        "--out-dir",
        metavar="DIR",
        help="One output per input in DIR (created if missing), keeping each input's path "
        "relative to the folder or pattern that found it. Inputs and DIR may be fsspec "
        "URLs (s3://bucket/in/*.png; needs convcli[dask]).",
    ),
    click.option(
        "--name",
        "name_template",
        metavar="TEMPLATE",
        help="Output names in --out-dir: {stem}, {name}, {ext} and the command's fields "
        "(conv: {kernel}; pool: {mode}; run: {pipeline}).  [default: {stem}.{ext}]",
    ),
    click.option(
        "--format",
        "out_format",
        type=Choice(OUTPUT_FORMATS),
        help="Format of -o - and {ext} in --out-dir.  [default for --out-dir: the input's "
        "extension if convcli writes it, else png]",
    ),
    click.option(
        "-r", "--recursive", is_flag=True, help="Descend into the subfolders of directory inputs."
    ),
    click.option(
        "-j",
        "--jobs",
        callback=parsed(parse_count, "jobs", 1, MAX_JOBS),
        metavar="N",
        help=f"Files processed in parallel (worker processes), at most {MAX_JOBS}.  "
        "[default: the cores; 1 for one input]",
    ),
    click.option(
        "--executor",
        type=Choice(["local", "dask"]),
        default="local",
        show_default=True,
        help="Where the files run: local (worker processes here, --jobs) or dask (a Dask "
        "cluster: --scheduler, else a local one of --jobs workers; needs "
        "convcli[dask]).",
    ),
    click.option(
        "--scheduler",
        metavar="ADDRESS",
        help="With --executor dask: the scheduler to join (tcp://HOST:PORT).  "
        "[default: $DASK_SCHEDULER_ADDRESS, else a local cluster]",
    ),
    click.option(
        "--overwrite", is_flag=True, help="Replace existing outputs (an input is never replaced)."
    ),
    click.option(
        "--skip-existing",
        is_flag=True,
        help="Keep existing outputs and skip their inputs (to resume a batch).",
    ),
    click.option(
        "-q",
        "--quiet",
        is_flag=True,
        help="No progress bar and no summary; errors are still shown.",
    ),
    click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print a JSON report on stdout: one record per input (not with -o -).",
    ),
)


@dataclass(frozen=True)
class BatchOptions:
    """The batch options of one command line."""

    output: str | None = None
    out_dir: str | None = None
    name_template: str | None = None
    out_format: str | None = None
    recursive: bool = False
    jobs: int | None = None
    executor: str = "local"
    scheduler: str | None = None
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


def run_files(
    inputs: Sequence[str],
    job,
    batch: BatchOptions,
    single: str | None = None,
    extra_outputs: Sequence[str] = (),
    **fields: str,
) -> None:
    """Plan, check, run ``job`` over ``inputs`` and report; exit 1 if any input failed.

    ``single`` names an option that takes one input only (``--explain``); ``extra_outputs``
    are more files the job writes (``pool --indices``), checked like outputs; ``fields`` fill
    the ``--name`` template.
    """
    from convcli.batch import RunOptions, plan, report, run_batch
    from convcli.io.atomic import make_folder

    ctx = click.get_current_context()
    inputs = [local_path(name) for name in inputs]  # file:// URLs are plain paths
    batch = dataclasses.replace(
        batch,
        output=batch.output and local_path(batch.output),
        out_dir=batch.out_dir and local_path(batch.out_dir),
    )
    _check_usage(ctx, inputs, batch)
    sources = plan.expand_inputs(inputs, batch.recursive, batch.out_dir)
    if single and len(sources) != 1:
        raise click.UsageError(f"{single} takes one input, got {len(sources)}", ctx)
    pairs = plan.plan_outputs(
        sources,
        batch.output,
        batch.out_dir,
        batch.name_template or "{stem}.{ext}",
        batch.out_format,
        **fields,
    )
    skip = check_outputs(pairs, job.settings, batch, extra_outputs, written=job.targets)
    if batch.executor == "dask":  # a task retried on another worker replaces what it wrote
        job = dataclasses.replace(job, overwrite=True)
    todo = len(pairs) - len(skip)
    reporter = Reporter(len(pairs), todo, batch.quiet)
    options = RunOptions(
        batch.jobs,
        batch.executor,
        batch.scheduler,
        skip=frozenset(skip),
        debug=bool(ctx.find_root().params.get("traceback")),
    )
    prepare = None if batch.out_dir is None else functools.partial(make_folder, batch.out_dir)
    start = time.perf_counter()
    try:
        records = run_batch(pairs, job, options, reporter.update, prepare)
    finally:
        reporter.close()
    if len(pairs) > 1 and not batch.quiet:
        click.echo(report.summary(records, time.perf_counter() - start), err=True)
    if batch.as_json:
        print_json("batch", report.json_report([record_in_flags(r) for r in records]))
    if any(record.status == "failed" for record in records):
        ctx.exit(1)


def check_outputs(
    pairs: Sequence[tuple[str, str]],
    settings,
    batch: BatchOptions,
    extra_outputs: Sequence[str] = (),
    extra_inputs: Sequence[str] = (),
    written: Callable[[str], Sequence[str]] = lambda target: [target],
) -> set:
    """``batch.plan.check_outputs`` with the command line's batch options."""
    from convcli.batch.plan import check_outputs as check

    return check(
        pairs,
        settings,
        out_dir=batch.out_dir,
        out_format=batch.out_format,
        overwrite=batch.overwrite,
        skip_existing=batch.skip_existing,
        extra_outputs=extra_outputs,
        extra_inputs=extra_inputs,
        written=written,
    )


def _check_usage(ctx: click.Context, inputs: Sequence[str], batch: BatchOptions) -> None:
    problems = (
        (
            batch.overwrite and batch.skip_existing,
            "--overwrite and --skip-existing exclude each other",
        ),
        (
            batch.output is not None and batch.out_dir is not None,
            "give -o/--output or --out-dir, not both",
        ),
        (
            batch.output is None and batch.out_dir is None,
            "Missing option '-o' / '--output' or '--out-dir'.",
        ),
        (batch.name_template is not None and batch.out_dir is None, "--name applies to --out-dir"),
        (
            batch.as_json and batch.output == STDIO,
            "--json prints on stdout, where -o - writes the image",
        ),
        (batch.output == STDIO and batch.out_format is None, "-o - (stdout) needs --format"),
        (
            batch.out_format is not None and batch.output not in (None, STDIO),
            "--format applies to -o - and --out-dir (the extension of -o FILE is its format)",
        ),
        (
            batch.scheduler is not None and batch.executor != "dask",
            "--scheduler needs --executor dask",
        ),
        (
            batch.scheduler is not None and batch.jobs is not None,
            "--jobs sizes a local cluster; the workers of --scheduler's cluster are its own",
        ),
        (
            batch.executor == "dask" and STDIO in (*inputs, batch.output),
            "--executor dask reads and writes files, not stdin or stdout",
        ),
        (
            any(str(name).startswith(MEMORY) for name in (*inputs, batch.output, batch.out_dir))
            and (batch.executor != "local" or batch.jobs != 1),
            f"{MEMORY} lives in this process's memory: use it with --executor local -j 1",
        ),
        (STDIO in inputs and len(inputs) > 1, "- (stdin) must be the only input"),
        (
            STDIO in inputs and batch.out_dir is not None,
            "- (stdin) needs -o FILE or -o -, not --out-dir",
        ),
    )
    for bad, message in problems:
        if bad:
            raise click.UsageError(message, ctx)


class Reporter:
    """Failures on stderr as they happen, and a progress bar (files, rate, ETA) on stderr when
    it is a terminal, the batch has more than one file to do, and not ``quiet``.

    The bar (and its refreshing thread) starts with the first file done: the workers are
    started by then, forked from a process with one thread (``batch.local.start_method``).
    """

    def __init__(self, total: int, todo: int, quiet: bool, console: Any = None):
        self.batch = total > 1
        self.progress = None
        if not quiet and todo > 1 and (console is not None or sys.stderr.isatty()):
            self.progress, self.task = _progress_bar(todo, console)

    def update(self, record) -> None:
        if record.status == "failed":
            from convcli.batch.report import error_line

            line = error_line(record.input, record_in_flags(record).error, self.batch)
            if self.progress is not None:
                self.progress.console.print(line, markup=False, highlight=False)
            else:
                click.echo(line, err=True)
        if self.progress is not None:
            self.progress.start()  # the first time only: later calls do nothing
            self.progress.advance(self.task)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _progress_bar(total: int, console: Any):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:.1f} files/s" if task.speed else "- files/s")

    progress = Progress(
        BarColumn(),
        MofNCompleteColumn(),
        Rate(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=False,
    )
    return progress, progress.add_task("files", total=total)
