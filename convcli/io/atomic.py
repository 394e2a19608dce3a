"""Writing files atomically: a temporary file beside the target, then a rename; and the rules
every output follows before any work (``check_target``, ``taken``). An output named by a URL
(``io.urls``) is encoded in memory and written as one whole object.

No numpy here: the kernel catalogue's cache uses it too.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence

from convcli import limits
from convcli.errors import OutputError
from convcli.io.urls import is_url


def atomic_write(path: str, save: Callable) -> None:
    """Call ``save(file)`` on a temporary file beside ``path``, then rename it into place."""
    atomic_write_all([(path, save)])


def atomic_write_all(items: Sequence[tuple[str, Callable]]) -> None:
    """Write every ``(path, save)`` to a temporary beside its path, then rename them all.

    No target changes unless every file was written; only the renames themselves (one
    ``os.replace`` each, atomic one by one) come after the point of no return. A temporary is
    listed before it is created, so an interrupt at any point removes it (``remove_temporaries``
    too, for a process that must exit at once). Outputs named by URLs are all encoded first,
    then written, each as one object, after the files.
    """
    if any(is_url(path) for path, _ in items):
        _write_objects(items)
        return
    temporaries = []
    current = None
    try:
        for current, save in items:
            directory = os.path.dirname(os.path.abspath(current))
            fd = _create_temporary(directory, temporaries)
            temporary = temporaries[-1]
            with os.fdopen(fd, "wb") as handle:
                save(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o666 & ~_umask())
        for (current, _), temporary in zip(items, temporaries):
            os.replace(temporary, current)
            _live.discard(temporary)
    except BaseException as exc:
        for temporary in temporaries:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            _live.discard(temporary)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {current!r} ({exc.strerror or exc})") from None
        raise


def _write_objects(items: Sequence[tuple[str, Callable]]) -> None:
    """``atomic_write_all`` of items some of which are URLs: those encoded in memory, the
    others written as files, then each URL as one whole object."""
    import io

    from convcli.io import urls

    encoded = []
    for path, save in items:
        if is_url(path):
            buffer = io.BytesIO()
            save(buffer)
            encoded.append((path, buffer.getvalue()))
    atomic_write_all([(path, save) for path, save in items if not is_url(path)])
    for path, data in encoded:
        urls.write_whole(path, data)


#: Temporaries this process has listed and not yet renamed or removed.
_live: set = set()


def _create_temporary(directory: str, temporaries: list) -> int:
    """Name a ``.convcli-*.part`` file in ``directory``, list it (in ``temporaries`` and
    ``_live``), then create it: the name is listed before the file exists. Returns its fd."""
    while True:
        temporary = os.path.join(directory, f".convcli-{os.urandom(6).hex()}.part")
        temporaries.append(temporary)
        _live.add(temporary)
        try:
            return os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another file has this name: not ours to remove
            temporaries.pop()
            _live.discard(temporary)
        except OSError as exc:
            temporaries.pop()
            _live.discard(temporary)
            raise OutputError(f"cannot write in {directory!r} ({exc.strerror})") from None


def remove_temporaries() -> None:
    """Remove every temporary this process is writing (before an immediate ``os._exit``)."""
    for temporary in list(_live):
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def taken(path: str) -> bool:
    """Whether writing ``path`` would replace something: any existing path, a dangling
    symbolic link included (``os.path.exists`` follows the link and says no; the rename
    would replace the link), or an existing object of a URL. Outputs that are taken need
    ``--overwrite``.
    """
    if is_url(path):
        from convcli.io import urls

        return urls.exists(path)
    return os.path.lexists(path)


def check_target(path: str, what: str = "output", overwrite: bool = True) -> None:
    """The checks every file convcli writes goes through before any work: a path within the
    file-name limits, whose nearest existing folder really is a folder (``file.png/x.png``
    is refused here, not after the work), that is not a directory; and, unless
    ``overwrite``, not ``taken``.

    >>> check_target("/dev/null/maps.png")
    Traceback (most recent call last):
    ...
    convcli.errors.OutputError: output '/dev/null/maps.png': '/dev/null' is not a folder
    """
    limits.check_path_length(path, what)
    shown = limits.shorten(path)
    if is_url(path):  # no folders to check on an object store
        if not overwrite and taken(path):
            raise OutputError(f"{what} {shown!r} exists (use --overwrite to replace it)")
        return
    ancestor = _nearest_existing(os.path.dirname(os.path.abspath(path)))
    if not os.path.isdir(ancestor):
        raise OutputError(f"{what} {shown!r}: {limits.shorten(ancestor)!r} is not a folder")
    if os.path.isdir(path):
        raise OutputError(f"{what} {shown!r} is a directory")
    if not overwrite and taken(path):
        raise OutputError(f"{what} {shown!r} exists (use --overwrite to replace it)")


def check_folder(path: str) -> None:
    """Refuse, before any work, a folder ``make_folder`` could not create because a file
    stands where one of its folders should be; ``make_folder``'s message.

    >>> check_folder("/dev/null/maps")
    Traceback (most recent call last):
    ...
    convcli.errors.OutputError: cannot create the folder '/dev/null/maps' (Not a directory)
    """
    limits.check_path_length(path, "the folder")
    if not is_url(path) and not os.path.isdir(_nearest_existing(os.path.abspath(path))):
        raise OutputError(f"cannot create the folder {limits.shorten(path)!r} (Not a directory)")


def folder_of(path: str) -> str:
    """The folder a file or object ``path`` is written in (absolute for a plain path).

    >>> folder_of("s3://bucket/out/a.png")
    's3://bucket/out'
    """
    if is_url(path):
        return path.rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(path))


def _nearest_existing(path: str) -> str:
    """``path`` or its nearest ancestor that exists (a dangling link counts as existing)."""
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def make_folder(path: str) -> None:
    """``os.makedirs(path, exist_ok=True)``, any failure one ``OutputError`` line.

    >>> make_folder("/dev/null/maps")
    Traceback (most recent call last):
    ...
    convcli.errors.OutputError: cannot create the folder '/dev/null/maps' (Not a directory)
    """
    if is_url(path):
        from convcli.io import urls

        urls.make_folder(path)
        return
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder {path!r} ({exc.strerror or exc})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
