"""``convcli explain``: shape traces of layer stacks, and small convolutions worked by hand.

Rendering only: ``convcli.explain`` computes the trace and the worked example. The trace is
JSON with ``--json``, a rich table on a terminal or with ``--table``, and tab-separated text
otherwise (for ``cut`` and ``awk``); warnings go to stderr. rich is imported only to draw a
table, and numba never: a trace starts fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import replace

import click

from convcli.cli.kernels import complete_kernel, kernel_path_option
from convcli.cli.options import Choice, parsed
from convcli.cli.tables import check_table_or_json, show_table, table_option
from convcli.errors import KernelError, OutputError, ParameterError, ShapeError
from convcli.layers.values import PAD_MODES, parse_pad_mode, parse_padding, parse_pair
from convcli.limits import parse_whole

STEP_HELP = (
    "STEP: KIND then tokens, e.g. 'conv 64 k7 s2 p3 nobias'. Kinds: conv, depthwise, pointwise, "
    "separable, transposed, maxpool, avgpool, globalavgpool, globalmaxpool, unpool, relu (and "
    "other activations), batchnorm, normalise, channels. Tokens: N (filters), kN or kHxW, sN, "
    "pN | p1,2 | p0,1,0,1 | valid | same | full, dN, gN, mN (depth multiplier), "
    "opN (output padding), bias | nobias, ceil, "
    "zeros | reflect | replicate | circular | symmetric (pad mode). "
    "Defaults: conv-like steps pad 'same' (as conv) and have a bias; pools are 2x2, 'valid', "
    "stride = window."
)


def _cells(ctx, param, values):
    try:
        return [parse_pair(value, "cell", minimum=0) for value in values]
    except ParameterError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command(epilog=STEP_HELP)
@click.argument("steps", nargs=-1, metavar="[STEP]...")
@click.option(
    "-i",
    "--input",
    "input_spec",
    metavar="HxWxC|FILE",
    help="Trace input: HxWxC (HxW for one channel), or an image or .npy file (its header only).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the trace as JSON (schema: docs/explain-schema.json).",
)
@table_option
@click.option(
    "--by-hand", is_flag=True, help="Work a small convolution or pooling out cell by cell."
)
@click.option(
    "--matrix",
    help="By hand: the input, e.g. '1,2,0;4,1,1;0,2,3' (rows split by ;; channels of a cell by |, "
    "'1|5,2|6;3|7,4|8'), or a .npy file (H, W) or (H, W, C).",
)
@click.option(
    "-k",
    "--kernel",
    shell_complete=complete_kernel,
    help="By hand: a kernel in any form conv takes (vertical_edge, k.npy, '3x3: ...'): 2-D, "
    "(C_in, kh, kw) for a matrix of C_in channels, or a (C_out, C_in, kh, kw) bank.",
)
@click.option(
    "--out-channel",
    callback=parsed(parse_whole, "out channel", 0),
    help="By hand, 4-D -k: the filter of the bank to work [default: 0].",
)
@click.option("--pool", type=Choice(["max", "avg"]), help="By hand: pool instead of convolving.")
@click.option(
    "--size",
    callback=parsed(parse_pair, "size"),
    help="By hand, --pool: window N or H,W [default: 2].",
)
@click.option(
    "--stride",
    callback=parsed(parse_pair, "stride"),
    help="By hand: N or H,W [default: 1; pools: the window].",
)
@click.option(
    "--padding",
    default="valid",
    show_default=True,
    callback=parsed(parse_padding),
    help="By hand: valid, same (TF/Keras), full, N, H,W or top,bottom,left,right.",
)
@click.option(
    "--dilation",
    default="1",
    show_default=True,
    callback=parsed(parse_pair, "dilation"),
    help="By hand: N or H,W.",
)
@click.option(
    "--pad-mode",
    callback=parsed(parse_pad_mode),
    help=f"By hand, -k: the border values, as conv's: {', '.join(PAD_MODES)}.  [default: zeros]",
)
@click.option("--ceil-mode", is_flag=True, help="By hand, --pool: PyTorch's ceil mode.")
@click.option(
    "--exclude-pad",
    is_flag=True,
    help="By hand, --pool avg: padding cells do not count in the mean.",
)
@click.option(
    "--transpose",
    is_flag=True,
    help="By hand, -k: a transposed convolution, as the scatter and as the equivalent convolution.",
)
@click.option(
    "--output-padding",
    callback=parsed(parse_pair, "output padding", 0),
    help="By hand, --transpose: rows,cols added at the bottom/right [default: 0].",
)
@click.option(
    "--cell",
    "cells",
    multiple=True,
    callback=_cells,
    metavar="ROW,COL",
    help="By hand: an output cell to work out (repeatable; default: the first and its neighbour).",
)
@click.option("--gif", help="By hand: also write an animation of the window sliding (FILE.gif).")
@click.option(
    "--frame-ms",
    default="700",
    show_default=True,
    callback=parsed(parse_whole, "frame time", 20, 60000),
    help="By hand, --gif: milliseconds each frame shows (the last holds at least 2500).",
)
@click.option(
    "--cell-px",
    default="34",
    show_default=True,
    callback=parsed(parse_whole, "cell size", 12, 96),
    help="By hand, --gif: the side of one drawn cell in pixels (the text scales with it).",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace the --gif or --field-image file if it exists."
)
@click.option(
    "--field",
    "field_unit",
    metavar="ROW,COL",
    callback=parsed(parse_pair, "--field", 0),
    help="Trace: the input pixels output unit ROW,COL of the last step depends on, under the trace "
    "(and in --json).",
)
@click.option(
    "--field-image",
    metavar="FILE",
    help="Trace, --field, --input IMAGE: draw that field on the picture (.png, .jpg, ...): "
    "the window tinted, its centre marked, the canvas grown by the padding (hatched).",
)
@click.option(
    "--pipeline",
    "pipeline_file",
    metavar="FILE.yaml",
    help="Trace the steps of a pipeline file (as 'convcli run' reads it) instead of STEPs.",
)
@click.option(
    "--model",
    "model_file",
    metavar="FILE.onnx",
    help="Trace the layers of an ONNX model (as 'convcli run --model' runs them); --input "
    "defaults to the size the model fixes.",
)
@kernel_path_option
def explain(
    steps,
    input_spec,
    as_json,
    table,
    by_hand,
    matrix,
    kernel,
    pool,
    size,
    stride,
    padding,
    dilation,
    out_channel,
    pad_mode,
    ceil_mode,
    exclude_pad,
    transpose,
    output_padding,
    cells,
    gif,
    frame_ms,
    cell_px,
    overwrite,
    field_unit,
    field_image,
    pipeline_file,
    model_file,
    kernel_path,
):
    """Trace shapes, parameters, multiply-adds and receptive fields through STEPs; or work a
    small convolution by hand.

    \b
    convcli explain --input 224x224x3 "conv 64 k7 s2 p3 nobias" "maxpool k3 s2 p1"
    convcli explain --input photo.png --pipeline examples/cnn_block.yaml
    convcli explain --input photo.png "conv 8 k3 s2" "conv 8 k3 s2" --field 5,9 \\
        --field-image field.png
    convcli explain --by-hand --matrix "1,2,0,1,3;4,1,1,0,2;0,2,3,1,1;1,0,2,2,0;3,1,0,1,2" \\
        -k vertical_edge
    """
    source = click.get_current_context().get_parameter_source
    gif_only = [
        name
        for name in ("--frame-ms", "--cell-px")
        if source(name[2:].replace("-", "_")) != click.core.ParameterSource.DEFAULT
    ]
    if gif_only and not gif:
        raise click.UsageError(f"{gif_only[0]} applies to --gif")
    if by_hand:
        if (
            steps
            or input_spec
            or as_json
            or table
            or pipeline_file
            or model_file
            or field_unit
            or field_image
        ):
            raise click.UsageError(
                "--by-hand takes --matrix and -k or --pool, not STEPs, --pipeline, --model, "
                "--input, --json, --table, --field or --field-image"
            )
        if overwrite and not gif:
            raise click.UsageError("--overwrite applies to --gif")
        if output_padding and not transpose:
            raise click.UsageError("--output-padding applies to --transpose")
        if transpose and pool:
            raise click.UsageError("--transpose applies to -k, not --pool")
        _by_hand(
            matrix,
            kernel,
            pool,
            size,
            stride,
            padding,
            dilation,
            ceil_mode,
            exclude_pad,
            cells,
            gif,
            overwrite,
            transpose,
            output_padding,
            out_channel,
            pad_mode,
            frame_ms,
            cell_px,
        )
        return
    hand_only = {
        "--matrix": matrix,
        "-k": kernel,
        "--pool": pool,
        "--size": size,
        "--stride": stride,
        "--pad-mode": pad_mode,
        "--ceil-mode": ceil_mode,
        "--exclude-pad": exclude_pad,
        "--out-channel": out_channel is not None,
        "--transpose": transpose,
        "--output-padding": output_padding,
        "--cell": cells,
        "--gif": gif,
        "--overwrite": overwrite and not field_image,
    }
    given = [name for name, value in hand_only.items() if value]
    if given:
        raise click.UsageError(f"{given[0]} applies to --by-hand")
    check_table_or_json(as_json, table)
    if steps and pipeline_file:
        raise click.UsageError("give STEPs or --pipeline FILE, not both")
    if model_file and (steps or pipeline_file):
        raise click.UsageError("--model FILE traces the model's layers: no STEPs or --pipeline")
    if model_file:
        from convcli.models.onnx_graph import model_trace_input, read_graph

        graph = read_graph(model_file)
        input_spec = input_spec or model_trace_input(graph)
    if not input_spec or not (steps or pipeline_file or model_file):
        raise click.UsageError(
            "a trace needs --input and at least one STEP or --pipeline FILE (or use --by-hand)"
        )
    if field_image:
        _check_field_image(field_image, field_unit, input_spec, overwrite)
    from convcli import explain as library

    if pipeline_file or model_file:
        from convcli.pipeline import load_pipeline, parse_pipeline, trace

        if model_file:
            pipeline = parse_pipeline(graph.document(preprocess=False)[0], model_file)
        else:
            pipeline = load_pipeline(pipeline_file, kernel_path)
    else:
        try:
            parsed_steps = library.parse_steps(steps)
        except ParameterError as exc:
            raise click.BadParameter(str(exc), param_hint="STEP") from None
    try:
        shape = library.input_shape(input_spec)
    except ParameterError as exc:
        raise click.BadParameter(str(exc), param_hint="--input") from None
    if pipeline_file or model_file:
        result = trace(pipeline, shape, source=input_spec)
    else:
        result = library.trace(shape, parsed_steps, source=input_spec)
    field = None
    if field_unit is not None and not result.error:
        from convcli.explain.field import unit_field

        field = unit_field(result, field_unit)
    if field_image and field is not None:
        _draw_field(field_image, input_spec, field)
    show_trace(result, as_json=as_json, table=table, field=field)
    if result.error:
        raise ShapeError(result.error)


def _check_field_image(path: str, field_unit, input_spec: str, overwrite: bool) -> None:
    """``--field-image``'s rules, before any work: a field, a picture to draw on, an image
    output."""
    from convcli.io import images
    from convcli.io.atomic import check_target

    if field_unit is None:
        raise click.UsageError("--field-image draws the field of --field ROW,COL: give both")
    if not os.path.isfile(input_spec):
        raise click.UsageError(
            f"--field-image draws on the --input picture; {input_spec!r} is not a file"
        )
    if images.extension(path) not in images.IMAGE_FORMATS:
        raise OutputError(
            f"--field-image {path!r} must end in one of {', '.join(images.IMAGE_FORMATS)}"
        )
    images.check_output_path(path, [input_spec])
    check_target(path, "--field-image", overwrite)


def _draw_field(path: str, input_spec: str, field) -> None:
    """Read the input's pixels (within the pixel limit, the drawing too) and write the drawing."""
    from convcli import limits
    from convcli.explain.field import canvas_shape, display_pixels, draw_field
    from convcli.io import images
    from convcli.io.atomic import atomic_write

    limits.check_pixels(*canvas_shape(field), limits.max_pixels(), "the --field-image drawing")
    picture = images.read_input(input_spec)
    canvas = draw_field(display_pixels(picture.data, picture.white), field)

    def save(handle):
        from PIL import Image

        Image.fromarray(canvas).save(handle, format=images.IMAGE_FORMATS[images.extension(path)][0])

    atomic_write(path, save)


def explain_conv(
    chw: Sequence[int],
    weight_shape: Sequence[int],
    groups: int,
    *,
    stride,
    padding,
    dilation,
    bias,
    label: str,
    transposed: bool = False,
    output_padding=(0, 0),
    pad_mode: str = "zeros",
) -> None:
    """``convcli conv --explain``: the trace of one kernel's convolution, on stderr, before it runs.

    ``weight_shape`` and ``groups`` as the engine lays the kernel out (``as_conv_weight`` or
    ``as_transposed_weight``), so a 2-D kernel is one filter per channel.
    """
    from convcli import explain as library

    step = library.conv_step(
        weight_shape,
        groups,
        transposed=transposed,
        stride=stride,
        padding=padding,
        dilation=dilation,
        output_padding=output_padding,
        bias=bias is not None,
        pad_mode=pad_mode,
    )
    step = replace(step, text=f"-k {label}: {library.step_text(step)}")
    result = library.trace((chw[1], chw[2], chw[0]), [step])
    show_trace(result, err=True)
    if result.error:
        raise ShapeError(result.error)


def show_trace(
    result, *, as_json: bool = False, table: bool = False, err: bool = False, field=None
) -> None:
    """JSON, a rich table (terminal, or ``table``), or tab-separated text, then the ``field`` of
    one unit (``convcli.explain.field.UnitField``) if given; warnings on stderr."""
    if as_json:
        document = result.to_dict()
        if field is not None:
            document["field"] = field.to_dict()
        click.echo(json.dumps(document, indent=2), err=err)
        return
    show_table(
        _tsv_rows(result), lambda console: _rich_table(result, console), table=table, err=err
    )
    if field is not None:
        click.echo("\n".join(field.lines()), err=err)
    for row in result.rows:
        for note in row.warnings:
            click.secho(f"warning: step {row.label} {row.text!r}: {note}", fg="yellow", err=True)


def _columns(result, row, grouped: bool = True) -> list[str]:
    """output, arithmetic, params, MACs, RF, jump, start of one row (``row`` None: the input).

    ``grouped`` writes counts with thousands separators (tables), else bare (tab-separated text).
    """
    from convcli.explain import hw_text, number_text, shape_text

    if row is None:
        return [shape_text(result.input), "", "", "", "1", "1", "0"]
    rf = row.receptive_field or ()
    starts = [number_text(axis.start) for axis in rf]
    return [
        shape_text(row.output),
        f"error: {row.error}" if row.error else "; ".join(row.arithmetic),
        _count(row.params, grouped),
        _count(row.macs, grouped),
        hw_text([axis.size for axis in rf]) if rf else "",
        hw_text([axis.jump for axis in rf]) if rf else "",
        (starts[0] if len(set(starts)) == 1 else ", ".join(starts)) if rf else "",
    ]


HEADERS = ["#", "step", "output", "size arithmetic", "params", "MACs", "RF", "jump", "start"]
CAPTION = (
    "output H x W x C. MACs: multiply-adds of convolutions, bias excluded (transposed: "
    "C_in*H_in*W_in*C_out/g*kh*kw). RF: input pixels one output sees; jump: input pixels between "
    "neighbouring outputs; start: centre of output (0, 0) in input pixels (Distill 2019)."
)


def _count(value: int, grouped: bool) -> str:
    return f"{value:,}" if grouped else str(value)


def _total(result, grouped: bool = True) -> list[str]:
    from convcli.explain import shape_text

    last = next((row for row in reversed(result.rows) if row.receptive_field), None)
    field = _columns(result, last)[4:] if last else _columns(result, None)[4:]
    counts = [_count(result.params, grouped), _count(result.macs, grouped)]
    return ["", "total", shape_text(result.output), ""] + counts + field


def _tsv_rows(result) -> list[list[str]]:
    lines = [HEADERS, ["0", "input"] + _columns(result, None)]
    lines += [[row.label, row.text] + _columns(result, row, grouped=False) for row in result.rows]
    lines.append(_total(result, grouped=False))
    return lines


def _rich_table(result, console) -> None:
    from rich.table import Table

    shape = "x".join(map(str, result.input))
    title = f"input {shape}" + (f" ({result.source})" if result.source not in ("", shape) else "")
    table = Table(title=title, caption=CAPTION, caption_justify="left")
    widest = max((len(line) for row in result.rows for line in row.arithmetic), default=0)
    for name in HEADERS:
        table.add_column(
            name,
            justify="right" if name in ("params", "MACs", "RF", "jump", "start") else "left",
            no_wrap=name not in ("step", "size arithmetic"),
            min_width=min(widest, 60) if name == "size arithmetic" else None,
        )
    table.add_row("0", "input", *_columns(result, None))
    for row in result.rows:
        style = "red" if row.error else "yellow" if row.warnings else None
        table.add_row(
            row.label + (" !" if row.warnings else ""),
            row.text,
            *_columns(result, row),
            style=style,
        )
    table.add_section()
    table.add_row(*_total(result), style="bold")
    console.print(table)


def _by_hand(
    matrix,
    kernel,
    pool,
    size,
    stride,
    padding,
    dilation,
    ceil_mode,
    exclude_pad,
    cells,
    gif,
    overwrite=False,
    transpose=False,
    output_padding=None,
    out_channel=None,
    pad_mode=None,
    frame_ms=700,
    cell_px=34,
) -> None:
    from convcli import explain as library

    if not matrix or bool(kernel) == bool(pool):
        raise click.UsageError("--by-hand needs --matrix and one of -k or --pool")
    if kernel and (size or ceil_mode or exclude_pad):
        raise click.UsageError("--size, --ceil-mode and --exclude-pad apply to --pool")
    if pool and pad_mode:
        raise click.UsageError(
            "--pad-mode applies to -k: pooling pads with cells that never win or count"
        )
    if gif:
        _check_gif(gif, [matrix, kernel or ""], overwrite)
    try:
        planes = library.load_planes(matrix)
    except ParameterError as exc:
        raise click.BadParameter(str(exc), param_hint="--matrix") from None
    if pool or transpose:
        values = library.one_plane(planes, f"--matrix {matrix!r}")
    if pool:
        worked = library.by_hand_pool(
            values,
            pool,
            size or (2, 2),
            stride=stride,
            padding=padding,
            dilation=dilation,
            ceil_mode=ceil_mode,
            count_include_pad=not exclude_pad,
        )
    else:
        from convcli.kernels.library import resolve_kernel

        found = resolve_kernel(kernel)
        weights = _kernel_for(found.weights, len(planes), kernel, out_channel, transpose)
        options = {
            "stride": stride or (1, 1),
            "padding": padding,
            "dilation": dilation,
            "scale": found.scale,
            "offset": found.offset,
            "name": found.name,
        }
        if pad_mode and pad_mode != "zeros" and (transpose or isinstance(weights[0][0], list)):
            raise click.UsageError(
                "--pad-mode applies to a 2-D kernel on a one-channel matrix "
                "(a transposed convolution pads with zeros)"
            )
        if transpose:
            worked = library.by_hand_transposed(
                values, weights, output_padding=output_padding or (0, 0), **options
            )
        elif len(weights) and isinstance(weights[0][0], list):
            if gif:
                raise click.UsageError(
                    "--gif draws one channel; give a one-channel matrix and a 2-D kernel"
                )
            worked = library.by_hand_channels(planes, weights, out_channel=out_channel, **options)
        else:
            worked = library.by_hand_conv(
                planes[0], weights, pad_mode=pad_mode or "zeros", **options
            )
    try:
        if transpose:
            text = library.render_transposed(
                worked, cells or library.default_cells(worked.direct())
            )
        elif isinstance(worked, library.Channels):
            text = library.render_channels(worked, cells or library.default_cells(worked.planes[0]))
        else:
            text = library.render_by_hand(worked, cells or library.default_cells(worked))
    except ParameterError as exc:
        raise click.BadParameter(str(exc), param_hint="--cell") from None
    if gif:
        frames = (library.scatter_frames if transpose else library.animation_frames)(
            worked, cell_px
        )
        _write_gif(gif, frames, frame_ms)
    click.echo(text)


def _kernel_for(weights, channels: int, spec: str, out_channel, transpose: bool) -> list:
    """The 2-D kernel of a one-channel matrix, or the (C_in, kh, kw) filter of a bank."""
    if weights.ndim == 4:
        index = out_channel or 0
        if index >= weights.shape[0]:
            raise ParameterError(
                f"--out-channel {index} is outside the bank of {weights.shape[0]} filters "
                f"(0 to {weights.shape[0] - 1})"
            )
        weights = weights[index]
    elif out_channel is not None:
        raise click.UsageError("--out-channel applies to a 4-D kernel (C_out, C_in, kh, kw)")
    if weights.ndim == 3 and weights.shape[0] == channels and not transpose:
        return weights.tolist()
    if weights.ndim == 2 and channels == 1:
        return weights.tolist()
    raise KernelError(
        f"by hand takes a 2-D kernel for a one-channel matrix, or (C_in, kh, kw) and "
        f"(C_out, C_in, kh, kw) kernels whose C_in is the matrix's channels ({channels}; "
        f"transposed: one); {spec!r} has shape {'x'.join(map(str, weights.shape))}"
    )


def _check_gif(path: str, inputs: Sequence[str], overwrite: bool) -> None:
    """The rules of every output (``atomic.check_target``), before any work."""
    from convcli.io.atomic import check_target
    from convcli.limits import shorten

    if not path.lower().endswith(".gif"):
        raise OutputError(f"--gif {shorten(path)!r} must end in .gif")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise OutputError(f"output directory {shorten(directory)!r} does not exist")
    if any(
        os.path.exists(source) and os.path.realpath(source) == os.path.realpath(path)
        for source in inputs
    ):
        raise OutputError(f"output {path!r} is an input; convcli never overwrites an input")
    check_target(path, "--gif", overwrite)


def _write_gif(path: str, frames: list, pause_ms: int = 700, final_ms: int = 2500) -> None:
    from convcli.io.atomic import atomic_write

    durations = [pause_ms] * (len(frames) - 1) + [max(final_ms, pause_ms)]
    try:
        atomic_write(
            path,
            lambda f: frames[0].save(
                f, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0
            ),
        )
    finally:
        for frame in frames:
            frame.close()
