"""The local executor: a batch run in this process or in a pool of worker processes."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence

from convcli import runtime
from convcli.batch import Terminated, ignore_further_sigterms
from convcli.batch.report import Record
from convcli.errors import ConvcliError

_busy = False  # in a worker: is a job running (whose temporary files a SIGTERM must clean up)?
#: Seconds an orphaned worker gives its running job to unwind before it exits regardless (a
#: compiled kernel runs to its end before the SIGTERM handler can).
ORPHAN_GRACE = 5.0


def _init_worker(threads: int, parent_alive, parents_end=None) -> None:
    """A worker: its share of the cores for Numba; SIGINT left to the parent, which stops the
    workers with SIGTERM; SIGTERM unwinds a running job (its temporaries removed), then exits.

    ``parent_alive`` is the reading end of a pipe whose only writer is the parent: it ends
    when the parent does, however it died (``_exit_with_parent``). A forked worker is given
    the writing end it inherited (``parents_end``) to close, so that the parent's stays the
    only one.
    """
    import threading

    if parents_end is not None:
        parents_end.close()
    os.environ["NUMBA_NUM_THREADS"] = str(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_terminated)
    threading.Thread(
        target=_exit_with_parent, args=(parent_alive,), name="convcli-parent-watch", daemon=True
    ).start()


def _exit_with_parent(parent_alive) -> None:
    """Wait for the end of ``parent_alive``, then stop this worker as SIGTERM does.

    A worker's parent may be the forkserver, not convcli, so ``PR_SET_PDEATHSIG`` cannot see
    a SIGKILLed convcli; and the pool's own pipes stay open in every worker. Without this, the
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
    ignore_further_sigterms()
    if _busy:
        raise Terminated()
    os._exit(143)


def _work(task: Callable[[str, str], Record], source: str, target: str) -> Record:
    """``task(source, target)`` in a worker process."""
    global _busy
    _busy = True
    try:
        return task(source, target)
    except Terminated:
        os._exit(143)
    finally:
        _busy = False


#: Imported once by the forkserver, so that every worker forked from it starts with them
#: (measured: a batch of 40 512^2 PNGs on 2 cores spent a tenth of its time importing them
#: in each worker). Nothing here imports numba: forking after its threads start would hang.
#: (Workers forked from convcli itself, ``start_method``, have whatever it imported.)
WORKER_MODULES = (
    "numpy",
    "PIL.Image",
    "PIL.PngImagePlugin",
    "convcli.io.images",
    "convcli.engine",
    "convcli.pipeline.execute",
    "convcli.pipeline.job",
    "convcli.batch.report",
)


class LocalExecutor:
    """Runs a batch on this machine: in this process, or in ``jobs`` worker processes.

    One job, or one pair, runs here. Otherwise workers are forked (``start_method``): from
    this process, or from a ``forkserver`` that has imported ``WORKER_MODULES``; they get
    ``cores // jobs`` Numba threads each; they live for the whole batch, so each compiles (or
    loads) the kernels once. On Ctrl-C or SIGTERM the workers are stopped with SIGTERM, which
    removes the temporary file of the output being written; if the parent dies without
    stopping them (SIGKILL), they stop themselves the same way.
    """

    def __init__(self, options):
        self.jobs = options.jobs or 1

    def execute(
        self, pairs: Sequence[tuple[str, str]], task: Callable[[str, str], Record]
    ) -> Iterator[Record]:
        """``task(source, target)`` of every pair; the records as they complete."""
        if self.jobs <= 1 or len(pairs) <= 1:
            return (task(source, target) for source, target in pairs)
        return self._in_workers(pairs, task)

    def _in_workers(self, pairs, task):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        threads = max(1, runtime.available_cores() // self.jobs)
        method = start_method()
        context = multiprocessing.get_context(method)
        if method == "forkserver":
            context.set_forkserver_preload(["__main__", *WORKER_MODULES])
        parent_alive, alive = context.Pipe(duplex=False)  # ``alive`` stays here until the end
        pool = ProcessPoolExecutor(  # with fork, every worker is forked at the first submit
            self.jobs,
            mp_context=context,
            initializer=_init_worker,
            initargs=(threads, parent_alive, alive if method == "fork" else None),
        )
        futures = [pool.submit(_work, task, source, target) for source, target in pairs]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BrokenProcessPool:
            _stop_workers()
            raise ConvcliError(
                "a worker process stopped unexpectedly (killed, or out of memory); "
                "outputs already written are complete"
            ) from None
        except BaseException:
            _stop_workers()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            parent_alive.close()
            alive.close()


def start_method() -> str:
    """How workers start: ``fork`` from this process on Linux while it runs no other thread
    and has not imported Numba, else from a ``forkserver``.

    A forked worker starts at once with everything this process imported (measured: 40
    512^2 PNGs on 2 cores, 0.65 s -> 0.5 s for the whole command, the forkserver's own
    start-up and imports gone). Forking is unsafe once another thread may hold a lock, and
    forking after an OpenMP-parallel Numba kernel hangs the pool: then the forkserver, a
    fresh process, forks them. The method changes how workers start, never what they compute.
    """
    import sys
    import threading

    alone = threading.active_count() == 1 and "numba" not in sys.modules
    return "fork" if sys.platform.startswith("linux") and alone else "forkserver"


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
