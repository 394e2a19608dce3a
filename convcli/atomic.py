"""Writing files atomically: a temporary file beside the target, then a rename.

No numpy here: the kernel catalogue's cache uses it too.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Callable, Sequence

from convcli.errors import OutputError


def atomic_write(path: str, save: Callable) -> None:
    """Call ``save(file)`` on a temporary file beside ``path``, then rename it into place."""
    atomic_write_all([(path, save)])


def atomic_write_all(items: Sequence[tuple[str, Callable]]) -> None:
    """Write every ``(path, save)`` to a temporary beside its path, then rename them all.

    No target changes unless every file was written; only the renames themselves (one
    ``os.replace`` each, atomic one by one) come after the point of no return.
    """
    temporaries = []
    current = None
    try:
        for current, save in items:
            directory = os.path.dirname(os.path.abspath(current))
            try:
                fd, temporary = tempfile.mkstemp(prefix=".convcli-", suffix=".part", dir=directory)
            except OSError as exc:
                raise OutputError(f"cannot write in {directory!r} ({exc.strerror})") from None
            temporaries.append(temporary)
            with os.fdopen(fd, "wb") as handle:
                save(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o666 & ~_umask())
        for (current, _), temporary in zip(items, temporaries):
            os.replace(temporary, current)
    except BaseException as exc:
        for temporary in temporaries:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {current!r} ({exc.strerror or exc})") from None
        raise


def make_folder(path: str) -> None:
    """``os.makedirs(path, exist_ok=True)``, any failure one ``OutputError`` line.

    >>> make_folder("/dev/null/maps")
    Traceback (most recent call last):
    ...
    convcli.errors.OutputError: cannot create the folder '/dev/null/maps' (Not a directory)
    """
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder {path!r} ({exc.strerror or exc})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
