"""Process-level settings that must be known before heavy imports (no numpy, no numba here)."""

from __future__ import annotations

import os


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


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def compute_threads() -> int:
    """Threads for one computation: a batch worker's share (``NUMBA_NUM_THREADS``), else all cores."""
    share = os.environ.get("NUMBA_NUM_THREADS", "")
    return int(share) if share.isdigit() and int(share) > 0 else available_cores()
