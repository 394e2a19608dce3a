"""The command line: parse options, call the library, write results. Nothing numeric lives here.

Exit codes: 0 success; 1 an error in the input (bad file, shapes that do not fit; in a batch:
some input failed; a stdout that cannot be written, closed pipe included); 2 a usage error
(unknown option, malformed value); 130 interrupted (Ctrl-C); 143 terminated (SIGTERM). Errors
are one ``Error: ...`` line on stderr; ``convcli --traceback ...`` shows the Python traceback
instead, for debugging.
Heavy modules (numpy, numba, Pillow) are imported inside the commands that need them.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import sys
import threading

import click

from convcli.batch import Terminated, raise_on_sigterm
from convcli.batch.report import OUT_OF_MEMORY
from convcli.cli.flags import in_flags
from convcli.errors import ConvcliError
from convcli.io.streams import flush_stdout, guard_standard_streams
from convcli.runtime import configure_process


def _fail(message: str, code: int) -> int:
    from convcli.limits import short_message

    click.echo(f"Error: {short_message(message)}", err=True)
    return code


#: Each command and the module of ``convcli.cli`` that defines it under the same name. A
#: command's module is imported when the command runs (or when ``--help`` lists them all), so
#: ``convcli conv`` loads neither ``explain`` nor ``run``: start-up is paid on every call.
COMMANDS = {
    "conv": "conv",
    "pool": "pool",
    "unpool": "pool",
    "run": "run",
    "kernels": "kernels",
    "explain": "explain",
    "stats": "stats",
    "warmup": "warmup",
}


class ConvcliGroup(click.Group):
    """A group whose errors, from Click or from convcli, end in one line and an exit code, and
    whose commands are imported on first use (``COMMANDS``)."""

    def list_commands(self, ctx) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx, name: str):
        if name not in COMMANDS:
            return None
        return getattr(importlib.import_module(f"convcli.cli.{COMMANDS[name]}"), name)

    def main(self, args=None, prog_name=None, **extra):
        code = self._run(list(sys.argv[1:] if args is None else args), prog_name, extra)
        try:  # what is still buffered for stdout fails here, not in Python's own flush at exit
            flush_stdout()
        except ConvcliError as exc:
            code = code or _fail(in_flags(exc), exc.exit_code)  # an error already said is the one
        sys.exit(code)

    def _run(self, args: list, prog_name, extra: dict) -> int:
        """Run the command line; the exit code, once any error is printed as one line."""
        debug = "--traceback" in args
        for arg in args:  # a real argv cannot hold NUL; an in-process caller could pass one
            if "\0" in str(arg):
                return _fail(f"argument {str(arg)[:60]!r} contains a NUL character", 2)
        extra["standalone_mode"] = False
        try:
            code = super().main(args, prog_name or "convcli", **extra)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            return _fail(exc.format_message() + hint, exc.exit_code)
        except click.ClickException as exc:
            return _fail(exc.format_message(), exc.exit_code)
        except ConvcliError as exc:
            if debug:
                raise
            return _fail(in_flags(exc), exc.exit_code)
        except MemoryError:
            if debug:
                raise
            return _fail(OUT_OF_MEMORY, 1)
        except (KeyboardInterrupt, click.Abort):
            click.echo("Interrupted.", err=True)
            return 130
        except Terminated:
            click.echo("Terminated.", err=True)
            return 143
        return code if isinstance(code, int) else 0


@click.group(cls=ConvcliGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="convcli")
@click.option("--traceback", is_flag=True, hidden=True, help="Show Python tracebacks (debugging).")
def cli(traceback: bool) -> None:
    """Convolutions and pooling on images, exactly as CNN layers define them."""


def main() -> None:
    """Console-script entry point. SIGTERM unwinds like Ctrl-C (temporary files are removed);
    a failed write to stdout is one error line (``streams.guard_standard_streams``). The process
    is configured first (``runtime.configure_process``: Numba's cache folder, the allocator),
    and ends by ``exit_now``."""
    configure_process()
    raise_on_sigterm()
    guard_standard_streams()
    try:
        cli.main()
    except SystemExit as exc:
        exit_now(exc.code)


def exit_now(code) -> None:
    """End the process with ``code`` once the command is done, without tearing the interpreter
    down: freeing every module and object numpy, Pillow and Click made costs 12-15 ms of a
    150 ms command (measured), for nothing the operating system does not do anyway.

    What an exit must still do is done first: the ``atexit`` functions run and the standard
    streams are flushed (``ConvcliGroup.main`` has already reported a stdout that fails). A
    thread still running (a library's, not convcli's: every pool is joined) gets the ordinary
    exit, which waits for it. Only the console script ends so; in-process callers (Click's
    test runner, a library) get ``SystemExit`` as before.
    """
    if threading.active_count() > 1 or not isinstance(code, int):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a failing stdout has been reported already
            if stream is not None:
                stream.flush()
    os._exit(code)
