"""Many inputs: expanding paths, planning outputs, running jobs in parallel, reporting.

Everything that can be checked is checked before the first image is read: no two inputs may
map to one output, no output may be an input or escape ``--out-dir``, and existing outputs are
kept unless ``overwrite`` (or skipped with ``skip_existing``). One bad file does not stop the
batch: it is reported with its path and the others finish.

>>> plan_outputs(["a/x.png", "a/y.png"], out_dir="out", template="{stem}_edges.{ext}")
[('a/x.png', 'out/x_edges.png'), ('a/y.png', 'out/y_edges.png')]
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import signal
import string
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from convcli import limits, runtime
from convcli.errors import ConvcliError, InputError, OutputError
from convcli.io.paths import STDIO, is_regular_file

#: Extensions a directory scan picks up (everything Pillow commonly reads, and .npy).
INPUT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".npy", ".ppm",
                    ".pgm", ".pbm")
#: Extensions convcli writes (``images.OUTPUT_FORMATS``, repeated so that planning needs no numpy).
OUTPUT_EXTENSIONS = ("npy", "png", "tif", "tiff", "jpg", "jpeg", "bmp", "webp")
OUT_OF_MEMORY = ("out of memory: this operation needs more than the machine has "
                 "(try a smaller input, fewer maps, or a .npy output)")


@dataclass
class Source:
    """An input file and the folder its output keeps its relative path from."""

    path: str
    root: str


def expand_inputs(arguments: Sequence[str], recursive: bool = False,
                  out_dir: Optional[str] = None) -> list[Source]:
    """Files, directories (their image files; ``recursive`` descends) and glob patterns.

    A directory scan or a pattern finds regular files only (a named pipe would block the
    batch, a device never end), and nothing inside ``out_dir`` when it lies below the folder
    scanned: a batch's own outputs are not its inputs when it is run again. A file named
    explicitly is kept whatever it is (reading it says what is wrong).

    >>> [s.path for s in expand_inputs(["-"])]
    ['-']
    """
    sources: list[Source] = []
    for argument in arguments:
        if argument == STDIO:
            sources.append(Source(STDIO, ""))
        elif os.path.isdir(argument):
            found = _scan(argument, recursive, out_dir)
            if not found:
                raise InputError(f"directory {argument!r} has no image or .npy files"
                                 + ("" if recursive else " (use --recursive to descend)"))
            sources.extend(Source(path, argument) for path in found)
        elif os.path.exists(argument) or not glob.has_magic(argument):
            sources.append(Source(argument, os.path.dirname(argument)))
        else:
            searched = _fixed_folder(argument)
            matches = sorted(p for p in glob.glob(argument, recursive=True)
                             if is_regular_file(p) and not _output_below(p, out_dir, searched))
            if not matches:
                raise InputError(f"pattern {argument!r} matches no files")
            sources.extend(Source(path, os.path.dirname(path)) for path in matches)
    return sources


def _scan(directory: str, recursive: bool, out_dir: Optional[str] = None) -> list[str]:
    found = []
    for folder, subfolders, files in os.walk(directory):
        kept = (s for s in subfolders if not s.startswith(".")
                and not _output_below(os.path.join(folder, s), out_dir, directory))
        subfolders[:] = sorted(kept) if recursive else []
        paths = (os.path.join(folder, f) for f in sorted(files)
                 if f.lower().endswith(INPUT_EXTENSIONS) and not f.startswith("."))
        found.extend(path for path in paths if is_regular_file(path))
    return found


def _output_below(path: str, out_dir: Optional[str], searched: str) -> bool:
    """Whether ``path`` is in ``out_dir`` and ``out_dir`` lies strictly below ``searched``.

    >>> _output_below("in/out/a.png", "in/out", "in"), _output_below("in/a.png", "in", "in")
    (True, False)
    """
    if out_dir is None:
        return False
    searched = searched or os.curdir
    return (os.path.realpath(out_dir) != os.path.realpath(searched) and _inside(out_dir, searched)
            and _inside(path, out_dir))


def _fixed_folder(pattern: str) -> str:
    """The folder of a glob pattern before its first wildcard.

    >>> _fixed_folder("in/**/*.png"), _fixed_folder("*.png"), _fixed_folder("/*.png")
    ('in', '', '/')
    """
    parts = pattern.split(os.sep)
    fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    return os.sep.join(parts[:fixed]) or (os.sep if pattern.startswith(os.sep) else "")


def output_name(source: str, template: str, ext: Optional[str] = None, **fields: str) -> str:
    """Fill a ``--name`` template: ``{stem}``, ``{name}``, ``{ext}`` and the given fields.

    ``{ext}`` is ``ext`` if given, else the input's extension if convcli writes it, else png.

    >>> output_name("photos/cat.jpg", "{stem}_{kernel}.{ext}", kernel="sobel_x")
    'cat_sobel_x.jpg'
    >>> output_name("scans/page.gif", "{stem}.{ext}")
    'page.png'
    """
    name = os.path.basename(source)
    stem, dot_ext = os.path.splitext(name)
    own = dot_ext[1:].lower()
    values = dict(stem=stem, name=name, ext=ext or (own if own in OUTPUT_EXTENSIONS else "png"), **fields)
    try:
        check_template(template)
        filled = template.format(**values)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        known = ", ".join("{" + k + "}" for k in values)
        raise OutputError(f"--name template {limits.shorten(template)!r} is not valid "
                          f"({limits.shorten(exc, 160)}); fields: {known}") from None
    limits.check_path_length(filled, f"--name {limits.shorten(template)!r} gives")
    return filled


def check_template(template: str) -> None:
    """Refuse, before filling it, a ``--name`` template that could not make a file name: a
    width or precision over ``limits.MAX_NAME_BYTES`` (``{stem:>2000000}`` would build two
    million characters), a field inside a format spec (``{name:{stem}}``: the width would
    come from a file name), and anything but a plain field name and a spec: attributes,
    indices and conversions (``{stem.__class__}``, ``{stem!r}``) are Python, not names.
    Raises ValueError, which ``output_name`` reports.

    >>> check_template("{stem:>8}_{kernel}.{ext}")
    >>> check_template("{stem:>2000000}.png")
    Traceback (most recent call last):
    ...
    ValueError: the width or precision 2000000 in '{stem:>2000000}' is more than a file name may hold (255 bytes)
    """
    for _, field_name, spec, conversion in string.Formatter().parse(template):
        if field_name is None:
            continue
        if conversion or not re.fullmatch(r"\w+", field_name):
            shown = field_name + (f"!{conversion}" if conversion else "")
            raise ValueError(f"{{{limits.shorten(shown, 30)}}} is not a field name (a field is "
                             f"written {{stem}}, with an optional format such as {{stem:>8}})")
        if not spec:
            continue
        if "{" in spec:
            raise ValueError(f"a field inside the format spec of {{{limits.shorten(field_name)}}}")
        for digits in re.findall(r"[0-9]+", spec):
            if len(digits.lstrip("0")) > 3 or int(digits) > limits.MAX_NAME_BYTES:
                raise ValueError(f"the width or precision {limits.shorten(digits, 12)} in "
                                 f"{limits.shorten('{' + field_name + ':' + spec + '}', 30)!r} is "
                                 f"more than a file name may hold ({limits.MAX_NAME_BYTES} bytes)")


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
            name = output_name(source.path, template, ext, **fields)
            target = os.path.normpath(os.path.join(out_dir, _folder_below_root(source), name))
            if not _inside(target, out_dir):
                raise OutputError(f"output {target!r} for {source.path!r} escapes --out-dir {out_dir!r}")
            pairs.append((source.path, target))
    else:
        raise OutputError("give -o/--output FILE or --out-dir DIR")
    _check_plan(pairs)
    return pairs


def _folder_below_root(source: Source) -> str:
    """The folder of ``source`` relative to its root, which its output keeps below --out-dir.

    A bare file name has no folder part (``os.path.dirname`` is ``''``): it is the current one.

    >>> _folder_below_root(Source("a.png", "")), _folder_below_root(Source("in/b/c.png", "in"))
    ('.', 'b')
    """
    if source.path == STDIO:
        return os.curdir
    return os.path.relpath(os.path.dirname(source.path) or os.curdir, source.root or os.curdir)


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


def run_one(job: Callable[[str, str], dict], source: str, target: str, debug: bool = False,
            calls: int = 1) -> Record:
    """Run ``job(source, target)``; an error becomes a failed record, so that one bad file does
    not stop a batch. Errors that are not a ``ConvcliError`` are bugs: reported as internal
    errors, or raised with ``debug`` (``convcli --traceback``). ``calls`` is the size of the
    batch, declared to the engine (``runtime.repeated``) so that every file of it takes the
    same method."""
    start = time.perf_counter()
    record = Record(source, target)
    try:
        with runtime.repeated(calls):
            shapes = job(source, target) or {}
        record.input_shape, record.output_shape = shapes.get("input_shape"), shapes.get("output_shape")
    except ConvcliError as exc:
        record.status, record.error = "failed", str(exc)
    except MemoryError:
        record.status, record.error = "failed", OUT_OF_MEMORY
    except Exception as exc:
        if debug:
            raise
        record.status = "failed"
        record.error = (f"internal error on {source!r} ({type(exc).__name__}: {exc}); please report it "
                        f"(convcli --traceback shows where)")
    record.seconds = round(time.perf_counter() - start, 4)
    return record


class Terminated(BaseException):
    """Raised by the SIGTERM handler, so that cleanup (temporary files) runs before exit 143."""


def raise_on_sigterm() -> None:
    """From now on SIGTERM raises ``Terminated`` in this process (call it from the main thread)."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def _raise_terminated(signum, frame) -> None:
    _ignore_further_sigterms()
    raise Terminated()


def _ignore_further_sigterms() -> None:
    """Let the cleanup a first SIGTERM starts finish: a second one (a pool stopping its
    workers after one has exited sends its own) would otherwise interrupt it and leave a
    temporary file behind."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


_busy = False  # in a worker: is a job running (whose temporary files a SIGTERM must clean up)?
#: Seconds an orphaned worker gives its running job to unwind before it exits regardless (a
#: compiled kernel runs to its end before the SIGTERM handler can).
ORPHAN_GRACE = 5.0


def _init_worker(threads: int, parent_alive) -> None:
    """A worker: its share of the cores for Numba; SIGINT left to the parent, which stops the
    workers with SIGTERM; SIGTERM unwinds a running job (its temporaries removed), then exits.

    ``parent_alive`` is the reading end of a pipe whose only writer is the parent: it ends
    when the parent does, however it died (``_exit_with_parent``).
    """
    import threading

    os.environ["NUMBA_NUM_THREADS"] = str(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_terminated)
    threading.Thread(target=_exit_with_parent, args=(parent_alive,), name="convcli-parent-watch",
                     daemon=True).start()


def _exit_with_parent(parent_alive) -> None:
    """Wait for the end of ``parent_alive``, then stop this worker as SIGTERM does.

    A worker's parent is the forkserver, not convcli, so ``PR_SET_PDEATHSIG`` cannot see a
    SIGKILLed convcli; and the pool's own pipes stay open in every worker. Without this, the
    workers wait for work forever, keeping the forkserver, the resource tracker and the
    caller's stdout and stderr alive with them.
    """
    with contextlib.suppress(EOFError, OSError):
        while True:
            parent_alive.recv_bytes()
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(ORPHAN_GRACE)
    from convcli.io.atomic import remove_temporaries

    remove_temporaries()  # the job is still in compiled code: its output is given up
    os._exit(143)


def _worker_terminated(signum, frame) -> None:
    _ignore_further_sigterms()
    if _busy:
        raise Terminated()
    os._exit(143)


def _work(job: Callable[[str, str], dict], source: str, target: str, debug: bool, calls: int) -> Record:
    """``run_one`` in a worker process."""
    global _busy
    _busy = True
    try:
        return run_one(job, source, target, debug, calls)
    except Terminated:
        os._exit(143)
    finally:
        _busy = False


@dataclass
class Batch:
    """Runs one job over planned (input, output) pairs, in this process or in ``jobs`` workers.

    Pairs whose output is in ``skip`` are not run (status ``skipped``); ``debug`` raises the
    errors that are bugs instead of recording them (``run_one``). Records come back in
    the order of ``pairs``; ``progress(record)`` is called as each one finishes. Every file
    declares the whole batch, skipped files included, to the engine (``runtime.repeated``), so
    that it takes the same method, and gives the same bytes, whichever worker runs it, in
    whatever order, and when a batch is resumed with ``--skip-existing``. Workers are
    started with ``forkserver`` and get ``cores // jobs`` Numba threads each; they live for the
    whole batch, so each compiles (or loads) the kernels once. On Ctrl-C or SIGTERM the workers
    are stopped with SIGTERM, which removes the temporary file of the output being written; if
    the parent dies without stopping them (SIGKILL), they stop themselves the same way.
    """

    pairs: list[tuple[str, str]]
    jobs: int = 1
    skip: set = field(default_factory=set)
    debug: bool = False

    def run(self, job: Callable[[str, str], dict],
            progress: Optional[Callable[[Record], None]] = None) -> list[Record]:
        done = {t: Record(s, t, status="skipped") for s, t in self.pairs if t in self.skip}
        todo = [(s, t) for s, t in self.pairs if t not in self.skip]
        if self.jobs <= 1 or len(todo) <= 1:
            results = (run_one(job, source, target, self.debug, len(self.pairs)) for source, target in todo)
        else:
            results = self._run_parallel(job, todo)
        with contextlib.closing(results):  # an interrupt in ``progress`` still stops the workers
            for record in results:
                done[record.output] = record
                if progress is not None:
                    progress(record)
        return [done[target] for _, target in self.pairs]

    def _run_parallel(self, job, todo):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        # forkserver, not fork: forking after an OpenMP-parallel Numba kernel hangs the pool.
        threads = max(1, runtime.available_cores() // self.jobs)
        context = multiprocessing.get_context("forkserver")
        parent_alive, alive = context.Pipe(duplex=False)  # ``alive`` stays here until the end
        pool = ProcessPoolExecutor(self.jobs, mp_context=context, initializer=_init_worker,
                                   initargs=(threads, parent_alive))
        futures = [pool.submit(_work, job, source, target, self.debug, len(self.pairs))
                   for source, target in todo]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BrokenProcessPool:
            _stop_workers()
            raise ConvcliError("a worker process stopped unexpectedly (killed, or out of memory); "
                               "outputs already written are complete") from None
        except BaseException:
            _stop_workers()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            parent_alive.close()
            alive.close()


def _stop_workers() -> None:
    """SIGTERM every worker: a running job removes its temporary file and the worker exits.

    The pool then fails the futures not yet run (they are not cancelled first: Python 3.11's
    pool would fail on a cancelled future while shutting down after a worker died).
    """
    import multiprocessing

    workers = multiprocessing.active_children()
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.join(timeout=30)
        if worker.is_alive():
            worker.kill()
