"""Standard streams: every write to stdout fails as one ``OutputError``, whatever writes it.

The console entry point calls ``guard_standard_streams`` once. From then on ``sys.stdout``
(tables, JSON, ``-o -``, Click's and rich's output alike) writes through a file whose every
failure (a full disk, a closed pipe, a closed descriptor) is ``OutputError("cannot write to
standard output (...)")``: the CLI's error handler prints it as one line and exits 1.
Standard output is then pointed at ``/dev/null``, so that nothing fails a second time when
the rest is flushed at exit. Descriptors 0, 1 and 2 that the caller closed are held by
``/dev/null``, opened the wrong way round so that reading stdin or writing stdout still fails
(``Bad file descriptor``) and no file convcli opens lands on them.

A reader that closes the pipe early (``convcli ... -o - | head -c 10``) is an error like any
other, exit 1: the output was cut short, which is never success.
"""

from __future__ import annotations

import errno
import io
import os
import sys

from convcli.errors import OutputError

STDIN, STDOUT, STDERR = 0, 1, 2


def stdout_error(exc: OSError) -> OutputError:
    """The one error for a failed write to standard output.

    >>> str(stdout_error(BrokenPipeError(errno.EPIPE, "Broken pipe")))
    'cannot write to standard output (its reader closed the pipe)'
    >>> str(stdout_error(OSError(errno.ENOSPC, "No space left on device")))
    'cannot write to standard output (No space left on device)'
    """
    reason = "its reader closed the pipe" if exc.errno == errno.EPIPE else exc.strerror or str(exc)
    return OutputError(f"cannot write to standard output ({reason})")


class _GuardedStdout(io.FileIO):
    """Descriptor 1 as a raw file whose failed writes raise ``stdout_error`` (not ``OSError``,
    which ``io.BufferedWriter`` turns into a short count after a partial write)."""

    def write(self, data) -> int:
        try:
            return super().write(data)
        except OSError as exc:
            _discard_stdout()
            raise stdout_error(exc) from None


def _discard_stdout() -> None:
    """Point descriptor 1 at ``/dev/null``: what is still buffered goes nowhere, quietly."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, STDOUT)
    os.close(null)


def _hold_if_closed(fd: int, flags: int) -> bool:
    """Open ``/dev/null`` with ``flags`` on ``fd`` if ``fd`` is closed; return whether it was."""
    try:
        os.fstat(fd)
        return False
    except OSError:
        null = os.open(os.devnull, flags)
        if null == fd:  # the lowest free descriptor: the usual case
            os.set_inheritable(fd, True)
        else:
            os.dup2(null, fd)
            os.close(null)
        return True


def guard_standard_streams() -> None:
    """Hold closed standard descriptors and make ``sys.stdout`` a guarded file (see the module)."""
    # Closed stdin and stdout stay unusable (held write-only and read-only); stderr discards.
    if _hold_if_closed(STDIN, os.O_WRONLY):
        sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(STDIN, "r", closefd=False)))
    _hold_if_closed(STDOUT, os.O_RDONLY)
    _hold_if_closed(STDERR, os.O_WRONLY)
    old = sys.stdout
    if old is not None:
        old.flush()
    text = (
        dict(encoding=old.encoding, errors=old.errors, line_buffering=old.line_buffering)
        if old is not None
        else dict(encoding="utf-8")
    )
    guarded = _GuardedStdout(STDOUT, "w", closefd=False)
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(guarded), **text)


def write_bytes(data: bytes) -> None:
    """Write ``data`` to standard output and flush it; a failure or a short write is one
    ``OutputError`` (also when the streams are not guarded: convcli used as a library)."""
    if sys.stdout is None:
        raise OutputError("cannot write to standard output (it is closed)")
    try:
        sys.stdout.flush()
        written = sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except OSError as exc:
        raise stdout_error(exc) from None
    if written is not None and written < len(data):
        raise stdout_error(BrokenPipeError(errno.EPIPE, "Broken pipe"))


def flush_stdout() -> None:
    """Flush ``sys.stdout`` (at exit: an unflushed failure would be Python's, not one line)."""
    if sys.stdout is None:
        return
    try:
        sys.stdout.flush()
    except OSError as exc:
        raise stdout_error(exc) from None
