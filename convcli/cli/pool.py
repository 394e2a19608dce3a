"""``convcli pool`` and ``convcli unpool``: max/average pooling and max-unpooling, as CNN layers.

``pool`` is a one-step pipeline run by ``pipeline.Job`` over every input.
"""

from __future__ import annotations

import math
import os

import click
from click.core import ParameterSource

from convcli.cli.batch import ALPHA_OPTION, batch_options, check_outputs, run_files
from convcli.cli.options import Choice, input_options, output_options, parsed
from convcli.cli.tables import check_table_or_json, print_json, show_table, table_option
from convcli.layers.values import parse_padding, parse_pair

#: Options that shape a pooling window, which ``--global`` does not take.
_WINDOW_OPTIONS = (
    "size",
    "stride",
    "padding",
    "dilation",
    "ceil_mode",
    "count_include_pad",
    "indices",
)
#: Batch options that ``--global`` (one input, values printed) does not take.
_BATCH_ONLY = (
    "out_dir",
    "name_template",
    "out_format",
    "recursive",
    "jobs",
    "skip_existing",
    "quiet",
)


def _refuse(ctx: click.Context, names: tuple, reason: str) -> None:
    """A usage error if any option in ``names`` was given on the command line."""
    for param in ctx.command.params:
        if (
            param.name in names
            and ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE
        ):
            raise click.UsageError(f"{'/'.join(param.opts + param.secondary_opts)} {reason}", ctx)


@click.command()
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option(
    "--mode",
    type=Choice(["max", "avg"]),
    default="max",
    show_default=True,
    help="Maximum or mean of each window (or of each plane, with --global).",
)
@click.option(
    "--size",
    default="2",
    show_default=True,
    callback=parsed(parse_pair, "size"),
    help="Window: N or H,W.",
)
@click.option(
    "--stride", callback=parsed(parse_pair, "stride"), help="N or H,W.  [default: the size]"
)
@click.option(
    "--padding",
    default="valid",
    show_default=True,
    callback=parsed(parse_padding),
    help="valid; same (Keras: out = ceil(in/stride), pad cells never count); or N, H,W, "
    "top,bottom,left,right (PyTorch: each at most half the window).",
)
@click.option(
    "--dilation",
    default="1",
    show_default=True,
    callback=parsed(parse_pair, "dilation"),
    help="Max pooling: N or H,W.",
)
@click.option(
    "--ceil-mode", is_flag=True, help="Round the output size up (PyTorch; numeric padding)."
)
@click.option(
    "--count-include-pad/--exclude-pad",
    default=True,
    show_default=True,
    help="Average pooling with numeric padding: divide by the window clipped to the padding "
    "(PyTorch's default) or by its input cells only.",
)
@click.option(
    "--global",
    "global_pool",
    is_flag=True,
    help="One value per channel over the whole plane of one INPUT: printed (a table on "
    "a terminal, tab-separated text in a pipe, JSON with --json), and written to -o "
    "if given.",
)
@table_option
@click.option(
    "--indices",
    help="Max pooling of one input: also write each window's argmax as int64 .npy "
    "(H', W', C), flat r*W+q in the input plane (PyTorch's convention).",
)
@ALPHA_OPTION
@batch_options
@output_options
@input_options
def pool(
    inputs,
    mode,
    size,
    stride,
    padding,
    dilation,
    ceil_mode,
    count_include_pad,
    global_pool,
    table,
    indices,
    alpha,
    batch,
    out,
    reading,
):
    """Max or average pooling of every channel of each INPUT (PyTorch max_pool2d / avg_pool2d).

    INPUT: files, folders (--recursive), glob patterns, or - for stdin.
    """
    from convcli.pipeline import Job, Pipeline, make_step

    ctx = click.get_current_context()
    if global_pool:
        _refuse(
            ctx,
            _WINDOW_OPTIONS + _BATCH_ONLY,
            "does not apply to --global, which pools whole planes of one input",
        )
        check_table_or_json(batch.as_json, table)
        if len(inputs) != 1 or batch.output == "-":
            raise click.UsageError(
                "--global takes one input and prints its values on stdout (-o FILE "
                "also writes them)",
                ctx,
            )
        job = Job(
            Pipeline((make_step("global_pool", mode=mode),)),
            out,
            alpha,
            overwrite=batch.overwrite,
            read=reading,
        )
        if batch.output is not None:
            check_outputs([(inputs[0], batch.output)], out, batch)
        maps, _ = job.process(inputs[0], batch.output)
        _print_values(maps.data[:, 0, 0], mode, batch.as_json, table)
        return
    if table:
        raise click.UsageError("--table applies to --global", ctx)
    if batch.output is None and batch.out_dir is None:
        raise click.UsageError(
            "Missing option '-o' / '--output' or '--out-dir' (optional only with --global).", ctx
        )
    _refuse(
        ctx,
        ("dilation", "indices") if mode == "avg" else ("count_include_pad",),
        f"does not apply to --mode {mode}",
    )
    if indices is not None:
        from convcli.io import images

        if images.extension(indices) != images.NPY:
            raise click.BadParameter(
                f"{indices!r} must be a .npy file", ctx, param_hint="'--indices'"
            )
        if batch.output is not None and os.path.realpath(indices) == os.path.realpath(batch.output):
            raise click.UsageError("--indices and -o must name different files", ctx)
        images.check_output_path(indices, inputs)
    step = make_step(
        "pool",
        name="pool" if indices else None,  # only a named pool keeps its indices
        mode=mode,
        size=size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
        count_include_pad=count_include_pad,
    )
    job = Job(
        Pipeline((step,)),
        out,
        alpha,
        batch.out_format,
        batch.overwrite,
        indices=indices,
        read=reading,
    )
    run_files(
        inputs,
        job,
        batch,
        single="--indices" if indices else None,
        extra_outputs=(indices,) if indices else (),
        mode=mode,
    )


def _print_values(values, mode: str, as_json: bool, table: bool) -> None:
    """Per-channel values on stdout: a table, tab-separated text, or JSON (non-finite as null)."""
    # str() of a float32 is its shortest round-trip form (1.3333334, not 1.3333333730697632)
    numbers = [float(str(v)) for v in values]
    if as_json:
        finite = [v if math.isfinite(v) else None for v in numbers]
        print_json("global-pool", {"mode": mode, "values": finite})
        return
    rows = [["channel", f"global {mode}"]]
    rows += [[str(channel), str(value)] for channel, value in enumerate(values)]

    def draw(console) -> None:
        from rich.table import Table

        drawn = Table(*rows[0])
        for row in rows[1:]:
            drawn.add_row(*row)
        console.print(drawn)

    show_table(rows, draw, table=table)


@click.command()
@click.argument("input_path", metavar="INPUT")
@click.option("--indices", required=True, help="The .npy written by 'convcli pool --indices'.")
@click.option(
    "-o", "--output", required=True, help="Output file: .npy (exact float32) or an image."
)
@click.option(
    "--output-size",
    callback=parsed(parse_pair, "output size"),
    help="H,W of the plane the indices point into: the pooled input's size.  "
    "[default: (in-1)*stride - 2*padding + size]",
)
@click.option(
    "--size",
    default="2",
    show_default=True,
    callback=parsed(parse_pair, "size"),
    help="The pooling window: N or H,W.",
)
@click.option(
    "--stride",
    callback=parsed(parse_pair, "stride"),
    help="The pooling stride.  [default: the size]",
)
@click.option(
    "--padding",
    default="0",
    show_default=True,
    callback=parsed(parse_pair, "padding", 0),
    help="The pooling padding: N or H,W.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace the output if it exists (an input is never replaced).",
)
@output_options
@input_options
def unpool(
    input_path, indices, output, output_size, size, stride, padding, overwrite, out, reading
):
    """Put every value of INPUT back where max pooling found it, zeros elsewhere (PyTorch
    max_unpool2d)."""
    from convcli import engine, geometry
    from convcli.cli.batch import BatchOptions
    from convcli.io import images

    check_outputs(
        [(input_path, output)],
        out,
        BatchOptions(output=output, overwrite=overwrite),
        extra_inputs=(indices,),
    )
    picture = images.read_input(input_path, options=reading)
    where = _read_indices(indices)
    in_hw = picture.data.shape[1:]
    out_hw = geometry.unpool_output_shape(in_hw, size, stride or size, padding, output_size)
    images.check_output_shape(output, out, (*out_hw, len(picture.data)), picture.white)
    images.write_output(
        output,
        engine.max_unpool2d(picture.data, where, out_hw),
        picture.white,
        settings=out,
        replace=overwrite,
    )


def _read_indices(path: str):
    """The (C, H, W) int64 indices stored in a .npy file shaped (H, W) or (H, W, C)."""
    import numpy as np

    from convcli.errors import InputError
    from convcli.io.images import load_npy
    from convcli.io.paths import require_regular_file

    if os.path.exists(path):  # a missing file is load_npy's "No such file" error
        require_regular_file(path, "indices")
    try:
        array = load_npy(path, f"indices {path!r}")
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"indices {path!r} is not a readable .npy file ({exc})") from None
    if array.dtype.kind not in "iu" or array.ndim not in (2, 3):
        raise InputError(
            f"indices {path!r} must be integers shaped (H, W) or (H, W, C), "
            f"got {array.dtype} {array.shape}"
        )
    array = array[:, :, None] if array.ndim == 2 else array
    return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.int64)
