"""Many inputs: a plan (``plan``), an executor that runs a job over it (``local``), and what
happened to each input (``report``).

``run_batch(pairs, job, options)`` is the library call, usable without Click: it runs a
picklable ``job(source, target) -> shapes`` over planned (source, target) pairs with the
executor ``options.executor`` names (``EXECUTORS``), and returns one ``Record`` per pair.

>>> run_batch([("in.png", "out.png")], lambda source, target: {"output_shape": [1, 1, 1]},
...           RunOptions(skip=frozenset({"out.png"})))[0].status
'skipped'
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from convcli import runtime
from convcli.batch.report import Record, Task
from convcli.errors import ParameterError

#: Executors by name: ``module:class``, imported only when chosen. The class is built with the
#: ``RunOptions`` and must be an ``Executor``.
EXECUTORS = {
    "local": "convcli.batch.local:LocalExecutor",
    "dask": "convcli.batch.dask:DaskExecutor",
}


@dataclass(frozen=True)
class RunOptions:
    """How a batch runs: ``jobs`` files at a time (None: one per core, never more than there
    are files to do), on the executor named ``executor`` (``dask``: on the cluster whose
    scheduler is at ``scheduler``, else on a local one of ``jobs`` workers); outputs in
    ``skip`` are not made (status ``skipped``); ``debug`` raises the errors that are bugs
    instead of recording them."""

    jobs: int | None = None
    executor: str = "local"
    scheduler: str | None = None
    skip: frozenset = frozenset()
    debug: bool = False


class Executor(Protocol):
    """What runs a batch's files: somewhere, in any order, some at once. An executor that
    holds something between batches (a connection, a cluster it started) also has a
    ``close()``, which ``run_batch`` calls at the end."""

    def execute(
        self, pairs: Sequence[tuple[str, str]], task: Callable[[str, str], Record]
    ) -> Iterator[Record]:
        """Yield ``task(source, target)`` of every pair as each completes. ``task`` is
        picklable and never raises for a bad file (it returns a failed record). Closing the
        iterator early (Ctrl-C, SIGTERM raising ``Terminated`` in the consumer) must stop the
        work, leaving only complete outputs."""


def make_executor(options: RunOptions) -> Executor:
    """The executor ``options.executor`` names, built with ``options``."""
    if options.executor not in EXECUTORS:
        from convcli.layers.values import not_one_of

        raise ParameterError(
            not_one_of("executor", options.executor, EXECUTORS), names=("executor",)
        )
    module, _, name = EXECUTORS[options.executor].partition(":")
    return getattr(importlib.import_module(module), name)(options)


def run_batch(
    pairs: Sequence[tuple[str, str]],
    job: Callable[[str, str], dict],
    options: RunOptions | None = None,
    progress: Callable[[Record], None] | None = None,
    prepare: Callable[[], None] | None = None,
) -> list[Record]:
    """Run ``job`` over planned (source, target) pairs; one ``Record`` per pair, in their order.

    ``progress(record)`` is called as each one finishes; ``prepare()`` once the executor is
    ready (a scheduler reached), before any file is read: a refused executor leaves nothing
    behind. Every file declares the whole batch,
    skipped files included, to the engine (``runtime.repeated``), so that it takes the same
    method, and gives the same bytes, whichever worker runs it, in whatever order, and when a
    batch is resumed with ``--skip-existing``.
    """
    options = options or RunOptions()
    done = {t: Record(s, t, status="skipped") for s, t in pairs if t in options.skip}
    todo = [(s, t) for s, t in pairs if t not in options.skip]
    jobs = min(options.jobs or runtime.available_cores(), max(len(todo), 1))
    executor = make_executor(dataclasses.replace(options, jobs=jobs))
    with contextlib.ExitStack() as held:
        if hasattr(executor, "close"):
            held.callback(executor.close)
        if prepare is not None:
            prepare()
        results = executor.execute(todo, Task(job, options.debug, len(pairs)))
        with contextlib.closing(results):  # an interrupt in ``progress`` still stops the workers
            for record in results:
                done[record.output] = record
                if progress is not None:
                    progress(record)
    return [done[target] for _, target in pairs]


class Terminated(BaseException):
    """Raised by the SIGTERM handler, so that cleanup (temporary files) runs before exit 143."""


def raise_on_sigterm() -> None:
    """From now on SIGTERM raises ``Terminated`` in this process (call it from the main thread)."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def _raise_terminated(signum, frame) -> None:
    ignore_further_sigterms()
    raise Terminated()


def ignore_further_sigterms() -> None:
    """Let the cleanup a first SIGTERM starts finish: a second one (a pool stopping its
    workers after one has exited sends its own) would otherwise interrupt it and leave a
    temporary file behind."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
