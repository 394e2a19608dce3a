"""The command line: parse options, call the library, write results. Nothing numeric lives here.

Exit codes: 0 success; 1 an error in the input (bad file, shapes that do not fit; in a batch:
some input failed); 2 a usage error (unknown option, malformed value); 130 interrupted (Ctrl-C);
143 terminated (SIGTERM). Errors are one ``Error: ...`` line
on stderr; ``convcli --traceback ...`` shows the Python traceback instead, for debugging.
Heavy modules (numpy, numba, Pillow) are imported inside the commands that need them.
"""

from __future__ import annotations

import sys

import click

from convcli.batch import OUT_OF_MEMORY, Terminated, raise_on_sigterm
from convcli.errors import ConvcliError


def _fail(message: str, code: int) -> None:
    from convcli.limits import short_message

    click.echo(f"Error: {short_message(message)}", err=True)
    sys.exit(code)


class ConvcliGroup(click.Group):
    """A group whose errors, from Click or from convcli, end in one line and an exit code."""

    def main(self, args=None, prog_name=None, **extra):
        args = list(sys.argv[1:] if args is None else args)
        debug = "--traceback" in args
        for arg in args:  # a real argv cannot hold NUL; an in-process caller could pass one
            if "\0" in str(arg):
                _fail(f"argument {str(arg)[:60]!r} contains a NUL character", 2)
        extra["standalone_mode"] = False
        try:
            code = super().main(args, prog_name or "convcli", **extra)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            _fail(exc.format_message() + hint, exc.exit_code)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except ConvcliError as exc:
            if debug:
                raise
            _fail(str(exc), exc.exit_code)
        except MemoryError:
            if debug:
                raise
            _fail(OUT_OF_MEMORY, 1)
        except (KeyboardInterrupt, click.Abort):
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except Terminated:
            click.echo("Terminated.", err=True)
            sys.exit(143)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=ConvcliGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="convcli")
@click.option("--traceback", is_flag=True, hidden=True, help="Show Python tracebacks (debugging).")
def cli(traceback: bool) -> None:
    """Convolutions and pooling on images, exactly as CNN layers define them."""


def main() -> None:
    """Console-script entry point. SIGTERM unwinds like Ctrl-C (temporary files are removed)."""
    raise_on_sigterm()
    cli.main()


def _register() -> None:
    from convcli.commands import conv, explain, kernels, pool, run, warmup

    for command in (conv.conv, pool.pool, pool.unpool, run.run, kernels.kernels, explain.explain, warmup.warmup):
        cli.add_command(command)


_register()
