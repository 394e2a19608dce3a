"""``convcli pool`` and ``convcli unpool``: max/average pooling and max-unpooling, as CNN layers."""

from __future__ import annotations

import json
import math
import os

import click
from click.core import ParameterSource

from convcli.commands.options import output_options, parsed
from convcli.params import parse_padding, parse_pair

#: Options that shape a pooling window, which ``--global`` does not take.
_WINDOW_OPTIONS = ("size", "stride", "padding", "dilation", "ceil_mode", "count_include_pad", "indices")


def _refuse(ctx: click.Context, names: tuple, reason: str) -> None:
    """A usage error if any option in ``names`` was given on the command line."""
    for param in ctx.command.params:
        if param.name in names and ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE:
            raise click.UsageError(f"{'/'.join(param.opts + param.secondary_opts)} {reason}", ctx)


@click.command()
@click.argument("input_path", metavar="INPUT")
@click.option("-o", "--output",
              help="Output file: .npy (exact float32) or an image. Optional with --global.")
@click.option("--mode", type=click.Choice(["max", "avg"]), default="max", show_default=True,
              help="Maximum or mean of each window (or of each plane, with --global).")
@click.option("--size", default="2", show_default=True, callback=parsed(parse_pair, "size"),
              help="Window: N or H,W.")
@click.option("--stride", callback=parsed(parse_pair, "stride"), help="N or H,W.  [default: the size]")
@click.option("--padding", default="valid", show_default=True, callback=parsed(parse_padding),
              help="valid; same (Keras: out = ceil(in/stride), pad cells never count); or N, H,W, "
                   "top,bottom,left,right (PyTorch: each at most half the window).")
@click.option("--dilation", default="1", show_default=True, callback=parsed(parse_pair, "dilation"),
              help="Max pooling: N or H,W.")
@click.option("--ceil-mode", is_flag=True, help="Round the output size up (PyTorch; numeric padding).")
@click.option("--count-include-pad/--exclude-pad", default=True, show_default=True,
              help="Average pooling with numeric padding: divide by the window clipped to the padding "
                   "(PyTorch's default) or by its input cells only.")
@click.option("--global", "global_pool", is_flag=True,
              help="One value per channel over the whole plane: printed, and written to -o if given.")
@click.option("--json", "as_json", is_flag=True, help="With --global: print JSON instead of a table.")
@click.option("--indices", help="Max pooling: also write each window's argmax as int64 .npy (H', W', C), "
                                "flat r*W+q in the input plane (PyTorch's convention).")
@click.option("--alpha", type=click.Choice(["keep", "drop", "channel"]), default="keep", show_default=True,
              help="keep: carry alpha through when the size is unchanged; drop: discard it; "
                   "channel: pool it as one more channel.")
@output_options
def pool(input_path, output, mode, size, stride, padding, dilation, ceil_mode, count_include_pad,
         global_pool, as_json, indices, alpha, out):
    """Max or average pooling of every channel of INPUT (PyTorch max_pool2d / avg_pool2d)."""
    ctx = click.get_current_context()
    if global_pool:
        _refuse(ctx, _WINDOW_OPTIONS, "does not apply to --global, which pools whole planes")
    else:
        if output is None:
            raise click.UsageError("Missing option '-o' / '--output' (optional only with --global).", ctx)
        _refuse(ctx, ("as_json",), "applies to --global")
        _refuse(ctx, ("dilation", "indices") if mode == "avg" else ("count_include_pad",),
                f"does not apply to --mode {mode}")
    from convcli import engine, images

    if indices is not None and images.extension(indices) != images.NPY:
        raise click.BadParameter(f"{indices!r} must be a .npy file", ctx, param_hint="'--indices'")
    if output is not None:
        images.check_output_path(output, [input_path], out)
    if indices is not None:
        if output is not None and os.path.realpath(indices) == os.path.realpath(output):
            raise click.UsageError("--indices and -o must name different files", ctx)
        images.check_output_path(indices, [input_path])
    picture = images.read_input(input_path, alpha_as_channel=alpha == "channel")
    if global_pool:
        values = engine.global_pool(picture.data, mode)
        _print_values(values, mode, as_json)
        if output is not None:
            images.write_output(output, values[:, None, None], picture.white, settings=out)
        return
    if mode == "max":
        maps, where = engine.max_pool2d(
            picture.data, size, stride, padding, dilation, ceil_mode, return_indices=True
        )
    else:
        maps = engine.avg_pool2d(picture.data, size, stride, padding, ceil_mode, count_include_pad)
    carried = picture.alpha if alpha == "keep" and maps.shape[1:] == picture.data.shape[1:] else None
    images.write_output(output, maps, picture.white, carried, out)
    if indices is not None:
        import numpy as np

        images.atomic_write(indices, lambda f: np.save(f, where.transpose(1, 2, 0)))


def _print_values(values, mode: str, as_json: bool) -> None:
    """Per-channel values on stdout: a table, or JSON (non-finite values as null)."""
    # str() of a float32 is its shortest round-trip form (1.3333334, not 1.3333333730697632)
    numbers = [float(str(v)) for v in values]
    if as_json:
        finite = [v if math.isfinite(v) else None for v in numbers]
        click.echo(json.dumps({"mode": mode, "values": finite}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("channel", f"global {mode}")
    for channel, value in enumerate(values):
        table.add_row(str(channel), str(value))
    Console().print(table)


@click.command()
@click.argument("input_path", metavar="INPUT")
@click.option("--indices", required=True, help="The .npy written by 'convcli pool --indices'.")
@click.option("-o", "--output", required=True, help="Output file: .npy (exact float32) or an image.")
@click.option("--output-size", callback=parsed(parse_pair, "output size"),
              help="H,W of the plane the indices point into: the pooled input's size.  "
                   "[default: (in-1)*stride - 2*padding + size]")
@click.option("--size", default="2", show_default=True, callback=parsed(parse_pair, "size"),
              help="The pooling window: N or H,W.")
@click.option("--stride", callback=parsed(parse_pair, "stride"),
              help="The pooling stride.  [default: the size]")
@click.option("--padding", default="0", show_default=True, callback=parsed(parse_pair, "padding", 0),
              help="The pooling padding: N or H,W.")
@output_options
def unpool(input_path, indices, output, output_size, size, stride, padding, out):
    """Put every value of INPUT back where max pooling found it, zeros elsewhere (PyTorch max_unpool2d)."""
    from convcli import engine, geometry, images

    images.check_output_path(output, [input_path, indices], out)
    picture = images.read_input(input_path)
    where = _read_indices(indices)
    in_hw = picture.data.shape[1:]
    out_hw = geometry.unpool_output_shape(in_hw, size, stride or size, padding, output_size)
    images.write_output(output, engine.max_unpool2d(picture.data, where, out_hw), picture.white, settings=out)


def _read_indices(path: str):
    """The (C, H, W) int64 indices stored in a .npy file shaped (H, W) or (H, W, C)."""
    import numpy as np

    from convcli.errors import InputError

    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"indices {path!r} is not a readable .npy file ({exc})") from None
    if array.dtype.kind not in "iu" or array.ndim not in (2, 3):
        raise InputError(
            f"indices {path!r} must be integers shaped (H, W) or (H, W, C), got {array.dtype} {array.shape}"
        )
    array = array[:, :, None] if array.ndim == 2 else array
    return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.int64)
