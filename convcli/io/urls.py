"""Inputs and outputs named by fsspec URLs (``s3://bucket/shots/*.png``, ``gs://...``,
``memory://`` in tests) beside plain paths.

Whether a name is a URL is decided here from its text alone, so that plain paths keep their
own code and never import fsspec. ``file://`` URLs are plain paths (``local_path``): they keep
the temporary + rename of ``io.atomic``. Other URLs are read through ``fsspec`` and written
whole, one object at a time (``write_whole``): an object store has no rename, and a reader
never sees part of an object.

>>> is_url("s3://bucket/a.png"), is_url("shots/a.png"), is_url("C:/a.png")
(True, False, False)
>>> local_path("file:///data/a.png"), local_path("s3://bucket/a.png")
('/data/a.png', 's3://bucket/a.png')
"""

from __future__ import annotations

import contextlib
import posixpath
import re
from collections.abc import Iterator, Sequence

from convcli.errors import ConvcliError, InputError, OutputError

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")
_FILE = "file://"
#: Bytes copied at a time from an input URL.
COPY_BYTES = 4 << 20
#: What URLs need installed.
INSTALL = "pip install 'convcli[dask]'"


def is_url(name) -> bool:
    """Whether ``name`` is a URL (``scheme://...``), judged from its text only."""
    return isinstance(name, str) and _SCHEME.match(name) is not None


def local_path(name: str) -> str:
    """A ``file://`` URL as the plain path it names; anything else unchanged."""
    return name.removeprefix(_FILE)


def filesystem(url: str):
    """``(fs, path)`` of ``url`` (fsspec's ``url_to_fs``); one ``ConvcliError`` line when
    fsspec, or the package of the URL's protocol, is missing or the URL is not valid."""
    try:
        import fsspec.core
    except ImportError:
        raise ConvcliError(f"URLs such as {url!r} need fsspec: {INSTALL}") from None
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:  # s3fs, gcsfs, ...: fsspec names the package
        raise ConvcliError(f"{url!r}: {str(exc).splitlines()[0]}") from None
    except (ValueError, TypeError, OSError) as exc:
        raise ConvcliError(f"{url!r} is not a URL fsspec can open ({exc})") from None


def expand(
    argument: str, recursive: bool, extensions: Sequence[str], out_dir: str | None = None
) -> list[tuple[str, str]]:
    """``(url, root)`` of each file a URL names: itself, a folder's files with ``extensions``
    (``recursive`` descends) or a glob pattern's files; ``root`` is the folder whose relative
    paths the outputs keep. Nothing below ``out_dir`` is found (a batch's outputs are not its
    inputs when it runs again)."""
    fs, path = filesystem(argument)
    skipped = filesystem(out_dir)[1].rstrip("/") + "/" if is_url(out_dir) else None

    def kept(found: str) -> bool:
        name = posixpath.basename(found)
        return not name.startswith(".") and not (skipped and found.startswith(skipped))

    if fs.isdir(path):
        listing = fs.find(path) if recursive else fs.ls(path, detail=False)
        found = sorted(
            p for p in listing if kept(p) and p.lower().endswith(tuple(extensions)) and fs.isfile(p)
        )
        if not found:
            raise InputError(
                f"directory {argument!r} has no image or .npy files"
                + ("" if recursive else " (use --recursive to descend)")
            )
        root = fs.unstrip_protocol(path.rstrip("/"))
        return [(fs.unstrip_protocol(p), root) for p in found]
    if not any(c in path for c in "*?["):
        return [(argument, argument.rsplit("/", 1)[0])]
    matches = sorted(
        p
        for p, info in fs.glob(path, detail=True).items()
        if info.get("type") == "file" and kept(p)
    )
    if not matches:
        raise InputError(f"pattern {argument!r} matches no files")
    return [(fs.unstrip_protocol(p), fs.unstrip_protocol(posixpath.dirname(p))) for p in matches]


def join(folder: str, *parts: str) -> str:
    """``parts`` below the URL ``folder``, normalised; None if they climb out of it.

    >>> join("s3://b/out/", "sub", "a.png"), join("s3://b/out", "..", "a.png")
    ('s3://b/out/sub/a.png', None)
    """
    below = posixpath.normpath(posixpath.join(*parts))
    if below == ".." or below.startswith(("../", "/")):
        return None
    return folder.rstrip("/") + ("" if below == "." else "/" + below)


@contextlib.contextmanager
def open_input(url: str) -> Iterator:
    """The input ``url`` copied into an unnamed temporary file, open at its start: the readers
    take a real file (its size from ``fstat``, ``.npy`` data read by ``numpy.fromfile``).
    Failing to open or read it is one ``InputError`` line."""
    import shutil
    import tempfile

    fs, path = filesystem(url)
    try:
        if fs.isdir(path):
            raise InputError(f"input {url!r} is a directory, not a file")
        with fs.open(path, "rb") as remote, tempfile.TemporaryFile() as handle:
            shutil.copyfileobj(remote, handle, COPY_BYTES)
            handle.seek(0)
            yield handle
    except FileNotFoundError:
        raise InputError(f"input {url!r} does not exist") from None
    except OSError as exc:
        raise InputError(f"input {url!r} cannot be read ({exc.strerror or exc})") from None


def exists(url: str) -> bool:
    """Whether an object (or folder) ``url`` exists."""
    fs, path = filesystem(url)
    return fs.exists(path)


def names_in(folder: str) -> list[str]:
    """The names of the files directly in the URL ``folder`` (none if it does not exist)."""
    fs, path = filesystem(folder)
    with contextlib.suppress(FileNotFoundError):
        return [posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)]
    return []


def make_folder(url: str) -> None:
    """Make the folder ``url`` where the storage has folders (object stores have none)."""
    fs, path = filesystem(url)
    try:
        fs.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder {url!r} ({exc.strerror or exc})") from None


def write_whole(url: str, data: bytes) -> None:
    """Write ``data`` as the object ``url`` in one request, or one ``OutputError`` line."""
    fs, path = filesystem(url)
    try:
        fs.pipe_file(path, data)
    except OSError as exc:
        raise OutputError(f"cannot write {url!r} ({exc.strerror or exc})") from None
