"""The command line: parse options, call the library, write results. Nothing numeric lives here.

Exit codes: 0 success; 1 an error in the input (bad file, shapes that do not fit); 2 a usage
error (unknown option, malformed value); 130 interrupted. Errors are one ``Error: ...`` line
on stderr; ``convcli --traceback ...`` shows the Python traceback instead, for debugging.
Heavy modules (numpy, numba, Pillow) are imported inside the commands that need them.
"""

from __future__ import annotations

import sys

import click

from convcli.errors import ConvcliError, ParameterError
from convcli.params import PAD_MODES, parse_floats, parse_pad_mode, parse_padding, parse_pair


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


class ConvcliGroup(click.Group):
    """A group whose errors, from Click or from convcli, end in one line and an exit code."""

    def main(self, args=None, prog_name=None, **extra):
        args = list(sys.argv[1:] if args is None else args)
        debug = "--traceback" in args
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
        except (KeyboardInterrupt, click.Abort):
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


def _parsed(parse, *args):
    """A Click callback that turns ``parse``'s ParameterError into a usage error."""

    def callback(ctx, param, value):
        if value is None:
            return None
        try:
            return parse(value, *args)
        except ParameterError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


@click.group(cls=ConvcliGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="convcli")
@click.option("--traceback", is_flag=True, hidden=True, help="Show Python tracebacks (debugging).")
def cli(traceback: bool) -> None:
    """Convolutions and pooling on images, exactly as CNN layers define them."""


@cli.command()
@click.argument("input_path", metavar="INPUT")
@click.option("-k", "--kernel", required=True,
              help="Built-in name (sobel_x, box:size=5), or a .npy / .yaml kernel file.")
@click.option("-o", "--output", required=True, help="Output file: .npy (exact float32) or an image.")
@click.option("--stride", default="1", show_default=True, callback=_parsed(parse_pair, "stride"),
              help="N or H,W.")
@click.option("--padding", default="same", show_default=True, callback=_parsed(parse_padding),
              help="valid, same (TF/Keras), full, N, H,W or top,bottom,left,right.")
@click.option("--pad-mode", default="zeros", show_default=True, callback=_parsed(parse_pad_mode),
              help=f"Border values: {', '.join(PAD_MODES)} (PyTorch's meanings).")
@click.option("--dilation", default="1", show_default=True, callback=_parsed(parse_pair, "dilation"),
              help="N or H,W.")
@click.option("--groups", default=1, show_default=True, type=click.IntRange(min=1),
              help="Channel groups for 4-D kernels (C_out, C_in/groups, kh, kw).")
@click.option("--flip", is_flag=True, help="True convolution: rotate the kernel 180 degrees.")
@click.option("--bias", callback=_parsed(parse_floats, "bias"),
              help="One value, or one per output channel (comma-separated).")
@click.option("--gray", is_flag=True, help="Convert the input to one luma channel first.")
@click.option("--alpha", type=click.Choice(["keep", "drop", "channel"]), default="keep", show_default=True,
              help="keep: filter colour only, carry alpha through when the size is unchanged; "
                   "drop: discard it; channel: filter it as one more channel.")
def conv(input_path, kernel, output, stride, padding, pad_mode, dilation, groups, flip, bias, gray, alpha):
    """Cross-correlate INPUT with a kernel (as PyTorch conv2d) and write the feature maps."""
    from convcli import engine, images
    from convcli.kernel_library import resolve_kernel

    images.check_output_path(output, [input_path])
    picture = images.read_input(input_path, alpha_as_channel=alpha == "channel")
    data = engine.luma(picture.data) if gray else picture.data
    found = resolve_kernel(kernel)
    maps = engine.conv2d(
        data, found.weights / found.scale, bias, stride=stride, padding=padding,
        dilation=dilation, groups=groups, pad_mode=pad_mode, flip=flip,
    )
    maps += found.offset
    carried = picture.alpha if alpha == "keep" and maps.shape[1:] == data.shape[1:] else None
    images.write_output(output, maps, picture.white, carried)


def main() -> None:
    """Console-script entry point."""
    cli.main()

