"""What a path the user names is, decided from ``os.stat`` before anything opens it.

Every file convcli reads by name (inputs, kernel files, pipelines, matrices) must be a regular
file: opening a named pipe (FIFO) for reading blocks until a writer comes, and a device such
as ``/dev/zero`` never ends. Standard input is read only as ``-``. Directories (``--kernel-path``)
must be directories. One rule, one wording, wherever a path is checked.

>>> require_regular_file("/dev/null", "input")
Traceback (most recent call last):
...
convcli.errors.InputError: input '/dev/null' is not a regular file (a character device)
"""

from __future__ import annotations

import os
import stat

from convcli.errors import InputError

#: The path that means standard input (as an input) or standard output (as ``-o -``).
STDIO = "-"
#: What each kind of non-regular file is called in messages.
_KINDS = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def kind(mode: int) -> str:
    """What a file of ``st_mode`` ``mode`` is, as a message says it.

    >>> kind(os.stat("/").st_mode), kind(stat.S_IFIFO)
    ('a directory', 'a named pipe')
    """
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _KINDS if test(mode)), "not a file")


def is_regular_file(path: str) -> bool:
    """Whether ``path`` (symbolic links followed) is a regular file; never opens it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def require_regular_file(path: str, what: str, error: type = InputError) -> None:
    """Raise ``error`` with one line unless ``path`` is an existing regular file.

    ``what`` names the role (``input``, ``kernel file``, ``pipeline``); symbolic links are
    followed. A directory, a named pipe, a socket or a device is refused without being opened.
    """
    mode = _mode(path, what, error)
    if stat.S_ISDIR(mode):
        raise error(f"{what} {path!r} is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise error(f"{what} {path!r} is not a regular file ({kind(mode)})")


def require_directory(path: str, what: str, error: type = InputError) -> None:
    """Raise ``error`` with one line unless ``path`` is an existing directory."""
    mode = _mode(path, what, error)
    if not stat.S_ISDIR(mode):
        raise error(f"{what} {path!r} is not a directory ({kind(mode)})")


def _mode(path: str, what: str, error: type) -> int:
    try:
        return os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # a dangling link, a file used as a directory
        raise error(f"{what} {path!r} does not exist") from None
    except OSError as exc:
        raise error(f"{what} {path!r} cannot be read ({exc.strerror or exc})") from None
    except ValueError:  # a NUL character
        raise error(f"{what} {path!r} is not a valid path") from None
