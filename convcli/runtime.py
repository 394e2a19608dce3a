"""Process-level settings that must be known before heavy imports (no numpy, no numba here)."""

from __future__ import annotations

import os


def numba_cache_dir() -> str:
    """Where compiled kernels are cached: ``$CONVCLI_CACHE_DIR`` or the user's cache folder.

    A per-user folder works when the install itself is read-only (Numba's own in-tree cache
    is then silently skipped). ``NUMBA_CACHE_DIR``, when set, wins over both.
    """
    explicit = os.environ.get("NUMBA_CACHE_DIR") or os.environ.get("CONVCLI_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "convcli", "numba")


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
