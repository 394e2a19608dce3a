"""The Dask executor: a batch's files run on a Dask distributed cluster.

The client sends paths, never pixels: the job goes to every worker once, in a ``WorkerPlugin``
that also sets the worker up (its share of the cores for Numba, the kernels loaded), and each
task is a chunk of (source, target) pairs that the worker reads and writes itself. A window of
tasks proportional to the cluster's threads is in flight at a time, so a listing of millions
of files neither floods the scheduler nor holds every future in memory.

>>> chunk_size(10, threads=4), chunk_size(100_000, threads=4)
(1, 32)
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import uuid
from collections.abc import Callable, Iterator, Sequence

from convcli import runtime
from convcli.batch.report import Record
from convcli.errors import ConvcliError

try:
    from distributed import WorkerPlugin
except ImportError:  # without the extra, DaskExecutor says what to install
    WorkerPlugin = object

#: Seconds to wait for a scheduler (and for a local cluster's first worker).
CONNECT_TIMEOUT = 10
#: Tasks in flight per worker thread: one running and one queued behind it.
TASKS_PER_THREAD = 2
#: Most files in one task: a retried task (its worker lost) redoes at most this many.
MAX_CHUNK = 32
#: Retries of a task whose worker was lost or that raised outside a file's own failure.
RETRIES = 3
#: What to install for ``--executor dask``.
INSTALL = "pip install 'convcli[dask]'"


def chunk_size(files: int, threads: int) -> int:
    """Files per task: about four tasks per worker thread, at most ``MAX_CHUNK`` files each,
    so that a batch of many files is a few thousand tasks, not millions."""
    return max(1, min(MAX_CHUNK, math.ceil(files / (4 * max(1, threads)))))


class DaskExecutor:
    """Runs a batch on the Dask cluster at ``options.scheduler`` (or ``$DASK_SCHEDULER_ADDRESS``),
    else on a local cluster of ``options.jobs`` single-threaded worker processes, started here
    and closed at the end.

    A file that fails for its own reason is a failed record, reported once and not retried; a
    task whose worker is lost is run again on another (its outputs, written whole, are then
    written again with the same bytes: the job must accept replacing the outputs of its own
    batch, which the plan has already checked). Closing the records early cancels the queued
    tasks; the running ones finish their files, so only complete outputs are left.
    """

    def __init__(self, options):
        if WorkerPlugin is object:
            raise ConvcliError(
                f"executor dask needs Dask distributed: {INSTALL}", names=("executor",)
            ) from None
        self.scheduler = options.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None
        self.jobs = options.jobs or runtime.available_cores()
        self.cluster = None
        self.client = self._connect()

    def _connect(self):
        from distributed import Client, LocalCluster

        if self.scheduler is None:
            threads = max(1, runtime.available_cores() // self.jobs)
            self.cluster = LocalCluster(
                n_workers=self.jobs,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.CRITICAL,
                env={"NUMBA_NUM_THREADS": str(threads)},
            )
            return Client(self.cluster, set_as_default=False)
        with _quiet_dask():
            try:
                return Client(self.scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
            except (OSError, TimeoutError, ValueError, TypeError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise ConvcliError(
                    f"cannot reach the Dask scheduler {self.scheduler!r} within "
                    f"{CONNECT_TIMEOUT} s ({reason})"
                ) from None

    def execute(
        self, pairs: Sequence[tuple[str, str]], task: Callable[[str, str], Record]
    ) -> Iterator[Record]:
        """``task(source, target)`` of every pair, on the cluster; the records as chunks
        complete."""
        from distributed import as_completed

        name = f"convcli-batch-{uuid.uuid4().hex}"
        self.client.register_plugin(BatchSetup(name, task), name=name)
        threads = max(1, sum(self.client.nthreads().values()))
        size = chunk_size(len(pairs), threads)
        chunks = (list(pairs[i : i + size]) for i in range(0, len(pairs), size))
        window = as_completed(loop=self.client.loop)
        in_flight = set()

        def submit(count: int) -> None:
            for chunk in itertools.islice(chunks, count):
                future = self.client.submit(
                    run_chunk,
                    name,
                    chunk,
                    key=f"{name}-{len(in_flight)}-{uuid.uuid4().hex[:8]}",
                    retries=RETRIES,
                    pure=False,
                )
                in_flight.add(future)
                window.add(future)

        try:
            submit(TASKS_PER_THREAD * threads)
            for future in window:
                in_flight.discard(future)
                records = _records(future)
                submit(1)
                yield from records
        finally:
            with _quiet_dask():
                self.client.cancel(list(in_flight))
                with contextlib.suppress(Exception):
                    self.client.unregister_worker_plugin(name)

    def close(self) -> None:
        """Close the connection, and the local cluster if this executor started one."""
        with _quiet_dask():
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()


def _records(future) -> list[Record]:
    """The records of a finished task; a task the cluster gave up on is one ``ConvcliError``."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker as exc:
        raise ConvcliError(
            f"Dask workers kept dying on one task ({exc}); outputs already written are complete"
        ) from None


@contextlib.contextmanager
def _quiet_dask():
    """Dask's own log lines (a failed connection, a closing comm) kept off stderr for a while:
    convcli says what went wrong in one line."""
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class BatchSetup(WorkerPlugin):
    """Set up once on each worker for one batch: the job it runs (sent once, not with every
    task), Numba's thread count (the worker's share of its machine, unless set already) and
    the kernels loaded. On teardown (the batch is over, or the worker stops) temporaries of
    an output still being written are removed."""

    def __init__(self, name: str, task: Callable[[str, str], Record]):
        self.name = name
        self.task = task

    def setup(self, worker) -> None:
        threads = max(1, runtime.available_cores() // max(1, worker.state.nthreads))
        os.environ.setdefault("NUMBA_NUM_THREADS", str(threads))
        from convcli.engine import _jit  # noqa: F401  (loaded once, not per file)

    def teardown(self, worker) -> None:
        from convcli.io.atomic import remove_temporaries

        remove_temporaries()


def run_chunk(name: str, pairs: Sequence[tuple[str, str]]) -> list[Record]:
    """On a worker: the records of ``pairs``, run by the task the batch's ``BatchSetup`` holds."""
    from distributed import get_worker

    task = get_worker().plugins[name].task
    return [task(source, target) for source, target in pairs]
