"""What happened to each input of a batch: its ``Record``, the summary and the JSON report.

One bad file does not stop a batch: ``run_one`` turns its error into a failed record, reported
with its path, and the others finish.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from convcli import runtime
from convcli.errors import ConvcliError

OUT_OF_MEMORY = (
    "out of memory: this operation needs more than the machine has "
    "(try a smaller input, fewer maps, or a .npy output)"
)
#: The statuses of a record, in the order the summary counts them.
STATUSES = ("done", "skipped", "failed")


@dataclass
class Record:
    """What happened to one input (one line of the ``--json`` report).

    ``error_names``, not a field of the report: the parameters ``error`` names
    (``ConvcliError.names``), for a front-end that writes them its own way.
    """

    input: str
    output: str
    status: str = "done"  # done | skipped | failed
    seconds: float = 0.0
    input_shape: list | None = None
    output_shape: list | None = None
    error: str | None = None
    error_names = ()  # no annotation: not a dataclass field, set per failed record


def run_one(
    job: Callable[[str, str], dict], source: str, target: str, debug: bool = False, calls: int = 1
) -> Record:
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
        record.input_shape, record.output_shape = (
            shapes.get("input_shape"),
            shapes.get("output_shape"),
        )
    except ConvcliError as exc:
        record.status, record.error, record.error_names = "failed", str(exc), exc.names
    except MemoryError:
        record.status, record.error = "failed", OUT_OF_MEMORY
    except Exception as exc:
        if debug:
            raise
        record.status = "failed"
        record.error = (
            f"internal error on {source!r} ({type(exc).__name__}: {exc}); please report it "
            f"(convcli --traceback shows where)"
        )
    record.seconds = round(time.perf_counter() - start, 4)
    return record


@dataclass(frozen=True)
class Task:
    """``run_one`` of ``job`` for one (source, target) pair, as an executor calls it: picklable
    (a module-level class holding a picklable job), so that it can be sent to workers."""

    job: Callable[[str, str], dict]
    debug: bool = False
    calls: int = 1

    def __call__(self, source: str, target: str) -> Record:
        return run_one(self.job, source, target, self.debug, self.calls)


def counts(records: Sequence[Record]) -> dict[str, int]:
    """How many records have each status.

    >>> counts([Record("a", "b"), Record("c", "d", status="failed")])
    {'done': 1, 'skipped': 0, 'failed': 1}
    """
    return {status: sum(r.status == status for r in records) for status in STATUSES}


def summary(records: Sequence[Record], seconds: float) -> str:
    """The line that ends a batch of several files.

    >>> summary([Record("a", "b")], 1.25)
    '1 done, 0 skipped, 0 failed in 1.2 s'
    """
    done = counts(records)
    return (
        f"{done['done']} done, {done['skipped']} skipped, {done['failed']} failed "
        f"in {seconds:.1f} s"
    )


def json_report(records: Sequence[Record]) -> dict:
    """The ``--json`` report: the counts and one record per input, in the order planned."""
    return {**counts(records), "records": [asdict(r) for r in records]}


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
