"""Process-level settings that must be known before heavy imports (no numpy, no numba here).

Importing convcli changes nothing in the process; ``configure_process`` is the one call that
does (Numba's cache folder, the allocator), made first by the command line.
"""

from __future__ import annotations

import contextlib
import contextvars
import os

#: glibc ``mallopt`` parameters (``malloc.h``).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: ``keep_freed_blocks``'s settings: blocks under 32 MiB are not mapped; 64 MiB freed heap kept.
MMAP_THRESHOLD, TRIM_THRESHOLD = 32 << 20, 64 << 20
#: Threads of numpy's OpenBLAS in convcli's processes (``configure_process``).
BLAS_THREADS = 1


def cache_dir() -> str:
    """convcli's cache folder: ``$CONVCLI_CACHE_DIR``, else ``convcli`` in the user's cache
    folder (``$XDG_CACHE_HOME`` or ``~/.cache``).

    A per-user folder works when the install itself is read-only.
    """
    explicit = os.environ.get("CONVCLI_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "convcli")


def numba_cache_dir() -> str:
    """Where compiled kernels are cached: ``$NUMBA_CACHE_DIR``, else ``numba`` in ``cache_dir()``
    (Numba's own in-tree cache would be silently skipped in a read-only install)."""
    return os.environ.get("NUMBA_CACHE_DIR") or os.path.join(cache_dir(), "numba")


#: How many times the caller declared the work in hand is done (``repeated``).
_declared_calls = contextvars.ContextVar("convcli_declared_calls", default=1)


@contextlib.contextmanager
def repeated(calls: int):
    """Declare that the work inside is done ``calls`` times: the files of a batch, a loop.

    The engine loads Numba only when the work pays for it: the work of one call times the
    calls declared (``correlation.numpy_takes``). The method, and so every output byte, then
    depends on the call's own arguments and this declaration only, never on what the process
    did before: the first file of a batch and the thousandth take the same method, in a
    fresh process and in a warm one.

    >>> with repeated(40):
    ...     declared_calls()
    40
    >>> declared_calls()
    1
    """
    token = _declared_calls.set(max(1, int(calls)))
    try:
        yield
    finally:
        _declared_calls.reset(token)


def declared_calls() -> int:
    """The calls declared by the innermost ``repeated`` (1 outside any)."""
    return _declared_calls.get()


#: The whole map whose band the engine computes (``band_of``): its output rows, its input's
#: rows, the band's first input row and its first output row.
_whole_map = contextvars.ContextVar("convcli_whole_map", default=None)


@contextlib.contextmanager
def band_of(rows: int, input_rows: int | None = None, first_input_row: int = 0, first_row: int = 0):
    """Declare that the convolutions inside compute a band of a map of ``rows`` output rows
    (``pipeline.bands``), from its output row ``first_row``: the engine chooses the method for
    the whole map's work, so each band takes the method, and gives the bytes, that the whole
    map would (Winograd's blocks of two rows start where the whole map's do). A transposed
    convolution also declares its whole input's rows and the first of them the band reads:
    the engine chooses from the whole input, and adds up its products in the whole map's order.

    >>> with band_of(4096, first_row=8):
    ...     map_rows(), map_input(), map_first_row()
    (4096, None, 8)
    >>> with band_of(4096, 2048, 512):
    ...     map_input()
    (2048, 512)
    >>> map_rows() is None, map_first_row()
    (True, 0)
    """
    whole = (
        int(rows),
        None if input_rows is None else int(input_rows),
        int(first_input_row),
        int(first_row),
    )
    token = _whole_map.set(whole)
    try:
        yield
    finally:
        _whole_map.reset(token)


def map_rows() -> int | None:
    """The rows declared by the innermost ``band_of`` (None outside any)."""
    whole = _whole_map.get()
    return None if whole is None else whole[0]


def map_first_row() -> int:
    """The band's first output row in its whole map, declared by the innermost ``band_of``
    (0 outside any)."""
    whole = _whole_map.get()
    return 0 if whole is None else whole[3]


def map_input() -> tuple[int, int] | None:
    """The whole input's rows and the band's first input row declared by the innermost
    ``band_of`` (None outside any, or if it declared no input)."""
    whole = _whole_map.get()
    return None if whole is None or whole[1] is None else (whole[1], whole[2])


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def compute_threads() -> int:
    """Threads for one computation: a batch worker's share (``NUMBA_NUM_THREADS``), else all
    cores."""
    share = os.environ.get("NUMBA_NUM_THREADS", "").strip()
    # ASCII digits only, and few of them: "²".isdigit() is true, and int() refuses 4,300 digits
    if share.isascii() and share.isdigit() and 0 < len(share) <= 6 and int(share) > 0:
        return int(share)
    return available_cores()


def keep_freed_blocks() -> bool:
    """Ask glibc's malloc to keep freed blocks under 32 MiB for reuse instead of mapping and
    unmapping each; return whether it could.

    The SIMD kernels' worker threads allocate a buffer of a few hundred KB per block of rows,
    and mid-size outputs are a few MB: with glibc's defaults each was a fresh mapping, one
    page fault per 4 KB on every call (measured, 2 threads: a 32-channel depthwise 3x3
    stride-2 layer on 256^2 3.1-3.8 -> 1.0-1.3 ms, dense 16->16 on 512^2 9.7-14.7 ->
    8.1-9.9 ms). Arrays of 32 MiB and more are still mapped and given back when freed; up
    to 64 MiB of freed heap is kept. A no-op without glibc.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def configure_process() -> None:
    """Set up this process, and the worker processes it starts, for convcli's engine.

    Call it first, before anything imports numpy or numba (the command line does, in ``cli.main``):

    - ``$NUMBA_CACHE_DIR`` defaults to ``numba_cache_dir()``: compiled kernels are cached in
      convcli's cache folder, also for a read-only install; an explicit value is kept;
    - ``keep_freed_blocks`` for this process, and glibc's ``MALLOC_MMAP_THRESHOLD_`` and
      ``MALLOC_TRIM_THRESHOLD_`` (the same settings, read when a process starts) for the
      processes it starts;
    - ``$OPENBLAS_NUM_THREADS`` defaults to ``BLAS_THREADS``: numpy's OpenBLAS starts that
      many threads when numpy is imported, and starting one per core cost more than the
      engine's matrix products gain from it (measured, 2 cores: ``import numpy`` 0.13 s
      with 2 threads, 0.07 s with 1; the engine's BLAS products, at most ``NUMPY_WORK``
      multiply-adds or memory-bound 1x1 layers, as fast or faster on one thread and with
      the same bytes).

    Batch workers inherit all these variables (values already set are kept).

    A library that imports convcli without calling it keeps Numba's, OpenBLAS's and glibc's
    defaults.
    """
    os.environ.setdefault("NUMBA_CACHE_DIR", numba_cache_dir())
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))
    os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", str(TRIM_THRESHOLD))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(BLAS_THREADS))
    keep_freed_blocks()
