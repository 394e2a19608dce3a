"""Many inputs: expanding paths, planning outputs, running jobs in parallel, reporting.

Everything that can be checked is checked before the first image is read: no two inputs may
map to one output, no output may be an input or escape ``--out-dir``, and existing outputs are
kept unless ``overwrite`` (or skipped with ``skip_existing``). One bad file does not stop the
batch: it is reported with its path and the others finish.

>>> plan_outputs(["a/x.png", "a/y.png"], out_dir="out", template="{stem}_edges.{ext}")
[('a/x.png', 'out/x_edges.png'), ('a/y.png', 'out/y_edges.png')]
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from convcli.errors import ConvcliError, InputError, OutputError

#: Extensions a directory scan picks up (everything Pillow commonly reads, and .npy).
INPUT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".npy", ".ppm",
                    ".pgm", ".pbm")
STDIO = "-"


@dataclass
class Source:
    """An input file and the folder its output keeps its relative path from."""

    path: str
    root: str


def expand_inputs(arguments: Sequence[str], recursive: bool = False) -> list[Source]:
    """Files, directories (their image files; ``recursive`` descends) and glob patterns.

    >>> [s.path for s in expand_inputs(["-"])]
    ['-']
    """
    sources: list[Source] = []
    for argument in arguments:
        if argument == STDIO:
            sources.append(Source(STDIO, ""))
        elif os.path.isdir(argument):
            found = _scan(argument, recursive)
            if not found:
                raise InputError(f"directory {argument!r} has no image or .npy files"
                                 + ("" if recursive else " (use --recursive to descend)"))
            sources.extend(Source(path, argument) for path in found)
        elif os.path.exists(argument) or not glob.has_magic(argument):
            sources.append(Source(argument, os.path.dirname(argument)))
        else:
            matches = sorted(p for p in glob.glob(argument, recursive=True) if os.path.isfile(p))
            if not matches:
                raise InputError(f"pattern {argument!r} matches no files")
            sources.extend(Source(path, os.path.dirname(path)) for path in matches)
    return sources


def _scan(directory: str, recursive: bool) -> list[str]:
    found = []
    for folder, subfolders, files in os.walk(directory):
        subfolders[:] = sorted(s for s in subfolders if not s.startswith(".")) if recursive else []
        found.extend(os.path.join(folder, f) for f in sorted(files)
                     if f.lower().endswith(INPUT_EXTENSIONS) and not f.startswith("."))
    return found


def output_name(source: str, template: str, ext: Optional[str] = None, **fields: str) -> str:
    """Fill a ``--name`` template: ``{stem}``, ``{name}``, ``{ext}`` and the given fields.

    >>> output_name("photos/cat.jpg", "{stem}_{kernel}.{ext}", kernel="sobel_x")
    'cat_sobel_x.jpg'
    """
    name = os.path.basename(source)
    stem, dot_ext = os.path.splitext(name)
    values = dict(stem=stem, name=name, ext=(ext or dot_ext.lstrip(".") or "png"), **fields)
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        known = ", ".join("{" + k + "}" for k in values)
        raise OutputError(f"--name template {template!r} is not valid ({exc}); fields: {known}") from None


def plan_outputs(
    sources: Sequence, output: Optional[str] = None, out_dir: Optional[str] = None,
    template: str = "{stem}.{ext}", ext: Optional[str] = None, **fields: str,
) -> list[tuple[str, str]]:
    """Pair each input with its output path; raise before any work if the plan is unsafe."""
    sources = [s if isinstance(s, Source) else Source(s, os.path.dirname(s)) for s in sources]
    if output is not None and out_dir is not None:
        raise OutputError("give either -o/--output or --out-dir, not both")
    if output is not None:
        if len(sources) != 1:
            raise OutputError(f"{len(sources)} inputs need --out-dir DIR, not -o (one output file)")
        pairs = [(sources[0].path, output)]
    elif out_dir is not None:
        pairs = []
        for source in sources:
            relative = "" if source.path == STDIO else os.path.relpath(os.path.dirname(source.path), source.root or ".")
            target = os.path.normpath(os.path.join(out_dir, relative, output_name(source.path, template, ext, **fields)))
            if not _inside(target, out_dir):
                raise OutputError(f"output {target!r} for {source.path!r} escapes --out-dir {out_dir!r}")
            pairs.append((source.path, target))
    else:
        raise OutputError("give -o/--output FILE or --out-dir DIR")
    _check_plan(pairs)
    return pairs


def _inside(path: str, directory: str) -> bool:
    directory = os.path.realpath(directory)
    return os.path.commonpath([os.path.realpath(path), directory]) == directory


def _check_plan(pairs: list[tuple[str, str]]) -> None:
    seen: dict[str, str] = {}
    inputs = {os.path.realpath(i): i for i, _ in pairs if i != STDIO}
    for source, target in pairs:
        if target == STDIO:
            continue
        key = os.path.realpath(target)
        if key in seen:
            raise OutputError(f"inputs {seen[key]!r} and {source!r} would both be written to {target!r}")
        if key in inputs:
            raise OutputError(f"output {target!r} is the input {inputs[key]!r}; convcli never overwrites an input")
        seen[key] = source


def existing_outputs(pairs: list[tuple[str, str]]) -> list[str]:
    return [target for _, target in pairs if target != STDIO and os.path.exists(target)]


@dataclass
class Record:
    """What happened to one input (one line of the ``--json`` report)."""

    input: str
    output: str
    status: str = "done"  # done | skipped | failed
    seconds: float = 0.0
    input_shape: Optional[list] = None
    output_shape: Optional[list] = None
    error: Optional[str] = None


def run_one(job: Callable[[str, str], dict], source: str, target: str) -> Record:
    """Run ``job(source, target)``; a ConvcliError becomes a failed record, not an exception."""
    start = time.perf_counter()
    record = Record(source, target)
    try:
        shapes = job(source, target) or {}
        record.input_shape, record.output_shape = shapes.get("input_shape"), shapes.get("output_shape")
    except ConvcliError as exc:
        record.status, record.error = "failed", str(exc)
    except MemoryError:
        record.status, record.error = "failed", "out of memory"
    record.seconds = round(time.perf_counter() - start, 4)
    return record


def _init_worker(threads: int) -> None:
    os.environ["NUMBA_NUM_THREADS"] = str(threads)


@dataclass
class Batch:
    """Runs one job over planned (input, output) pairs, in this process or in ``jobs`` workers."""

    pairs: list[tuple[str, str]]
    jobs: int = 1
    skip: set = field(default_factory=set)

    def run(self, job: Callable[[str, str], dict], progress: Optional[Callable[[Record], None]] = None) -> list[Record]:
        records = [Record(s, t, status="skipped") for s, t in self.pairs if t in self.skip]
        todo = [(s, t) for s, t in self.pairs if t not in self.skip]
        if self.jobs <= 1 or len(todo) <= 1:
            for source, target in todo:
                records.append(run_one(job, source, target))
                progress and progress(records[-1])
            return records
        return records + self._run_parallel(job, todo, progress)

    def _run_parallel(self, job, todo, progress) -> list[Record]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # forkserver, not fork: forking after an OpenMP-parallel Numba kernel hangs the pool.
        threads = max(1, available_cores() // self.jobs)
        context = multiprocessing.get_context("forkserver")
        records = []
        with ProcessPoolExecutor(self.jobs, mp_context=context, initializer=_init_worker,
                                 initargs=(threads,)) as pool:
            futures = [pool.submit(run_one, job, source, target) for source, target in todo]
            try:
                for future in as_completed(futures):
                    records.append(future.result())
                    progress and progress(records[-1])
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        order = {target: index for index, (_, target) in enumerate(todo)}
        return sorted(records, key=lambda r: order[r.output])


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
