"""Writing files atomically: a temporary file beside the target, then a rename; and the rules
every output follows before any work (``check_target``, ``taken``). An output named by a URL
(``io.urls``) is encoded in memory and written as one whole object.

Whether an output exists is checked once, before any work (``check_target``, or a batch's
plan); after it, a write that must not replace (``replace=False``) puts each file in place
with a hard link, which the file system refuses where a file has appeared since: nothing is
ever replaced unasked, and no second look is needed.

No numpy here: the kernel catalogue's cache uses it too.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Sequence

from convcli import limits
from convcli.errors import OutputError
from convcli.io.urls import is_url


def atomic_write(path: str, save: Callable, replace: bool = True) -> None:
    """Call ``save(file)`` on a temporary file beside ``path``, then rename it into place
    (never over an existing file unless ``replace``: ``atomic_write_all``)."""
    atomic_write_all([(path, save)], replace)


def atomic_write_all(items: Sequence[tuple[str, Callable]], replace: bool = True) -> None:
    """Write every ``(path, save)`` to a temporary beside its path, then rename them all.

    No target changes unless every file was written; only the renames themselves (one
    ``os.replace`` each, atomic one by one) come after the point of no return. A temporary is
    listed before it is created, so an interrupt at any point removes it (``remove_temporaries``
    too, for a process that must exit at once). Outputs named by URLs are all encoded first,
    then written, each as one object, after the files.

    Unless ``replace``, a path that exists when its file is put in place is refused
    (``exists_error``), and the files this call had already put in place are removed.
    """
    if any(is_url(path) for path, _ in items):
        _write_objects(items, replace)
        return
    temporaries, placed = [], []
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
            _place(temporary, current, replace)
            placed.append(current)
            _live.discard(temporary)
    except BaseException as exc:
        for temporary in temporaries:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            _live.discard(temporary)
        for path in placed if not replace else ():  # new files of this call: all or none
            with contextlib.suppress(OSError):
                os.unlink(path)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {current!r} ({exc.strerror or exc})") from None
        raise


#: ``os.link`` failures that mean the file system has no hard links (not that the path exists).
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}


def write_cache(path: str, text: str) -> None:
    """Write a file of convcli's cache folder atomically (concurrent processes each replace it
    whole); skip it if the folder cannot be written: a cache only saves work."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
    except (OSError, OutputError):
        pass


def _place(temporary: str, path: str, replace: bool) -> None:
    """Rename ``temporary`` to ``path``; unless ``replace``, only where nothing is at ``path``:
    a hard link, which fails if ``path`` exists (dangling links included), then the temporary
    removed. A file system without hard links gets a look at ``path``, then the rename."""
    if replace:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise exists_error(path) from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if taken(path):
            raise exists_error(path) from None
        os.replace(temporary, path)
        return
    os.unlink(temporary)


def _write_objects(items: Sequence[tuple[str, Callable]], replace: bool) -> None:
    """``atomic_write_all`` of items some of which are URLs: those encoded in memory, the
    others written as files, then each URL as one whole object. Unless ``replace``, an object
    that exists is refused before anything is written (an object store has no refusing
    rename)."""
    import io

    from convcli.io import urls

    encoded = []
    for path, save in items:
        if is_url(path):
            if not replace and taken(path):
                raise exists_error(path)
            buffer = io.BytesIO()
            save(buffer)
            encoded.append((path, buffer.getvalue()))
    atomic_write_all([(path, save) for path, save in items if not is_url(path)], replace)
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


def exists_error(path: str, what: str = "output") -> OutputError:
    """The refusal of an output that exists, which only ``overwrite`` may replace.

    >>> print(exists_error("a.png"))
    output 'a.png' exists (use overwrite to replace it)
    """
    shown = limits.shorten(path)
    return OutputError(
        f"{what} {shown!r} exists (use overwrite to replace it)", names=("overwrite",)
    )


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
            raise exists_error(path, what)
        return
    ancestor = _nearest_existing(os.path.dirname(os.path.abspath(path)))
    if not os.path.isdir(ancestor):
        raise OutputError(f"{what} {shown!r}: {limits.shorten(ancestor)!r} is not a folder")
    if os.path.isdir(path):
        raise OutputError(f"{what} {shown!r} is a directory")
    if not overwrite and taken(path):
        raise exists_error(path, what)


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
