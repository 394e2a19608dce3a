"""``convcli conv``: cross-correlate images with a kernel, as a CNN Conv2d layer.

A one-step pipeline (two with ``--gray``) run by ``pipeline.Job`` over every input.
"""

from __future__ import annotations

from dataclasses import dataclass

import click

from convcli.batch.plan import slug
from convcli.cli.batch import ALPHA_OPTION, batch_options, run_files
from convcli.cli.kernels import complete_kernel, kernel_path_option
from convcli.cli.options import input_options, output_options, parsed
from convcli.layers.values import (
    COMBINE_MODES,
    PAD_MODES,
    parse_count,
    parse_floats,
    parse_pad_mode,
    parse_padding,
    parse_pair,
)


def _bias(ctx, param, value):
    """``--bias``: numbers, or a model file's 1-D tensor (read only then: --help stays light)."""
    from convcli.models import split_model_spec

    if value is not None and split_model_spec(value):
        from convcli.models.weights import read_bias

        return read_bias(value)
    return parsed(parse_floats, "bias")(ctx, param, value)


@click.command()
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option(
    "-k",
    "--kernel",
    required=True,
    multiple=True,
    shell_complete=complete_kernel,
    help="NAME or NAME:param=value,... (sobel:dir=y, gaussian:sigma=2; see 'convcli kernels "
    "list'), a .yaml/.npy/.mat file, a model file's tensor FILE:TENSOR "
    "(.safetensors, .pt, .onnx, .keras, .h5, .npz; see 'convcli kernels show "
    "FILE'), or inline '3x3: 1,0,-1 ...'. Repeat it (-k a -k b) to stack each "
    "kernel's maps as channels (same output size).",
)
@kernel_path_option
@click.option(
    "--combine",
    type=click.Choice(COMBINE_MODES, case_sensitive=False),
    help="With several -k kernels giving as many maps each: one map per channel instead of the "
    "stack, magnitude = sqrt(a^2 + b^2 + ...) (-k sobel_x -k sobel_y: edge strength), sum, "
    "or max.",
)
@click.option(
    "--stride",
    default="1",
    show_default=True,
    callback=parsed(parse_pair, "stride"),
    help="N or H,W.",
)
@click.option(
    "--padding",
    default="same",
    show_default=True,
    callback=parsed(parse_padding),
    help="valid, same (TF/Keras), full, N, H,W or top,bottom,left,right.",
)
@click.option(
    "--pad-mode",
    default="zeros",
    show_default=True,
    callback=parsed(parse_pad_mode),
    help=f"Border values: {', '.join(PAD_MODES)} (PyTorch's meanings; symmetric repeats the "
    "edge, as SciPy's reflect and ImageMagick's mirror). zeros is a CNN layer's border "
    "and frames a photo; replicate or symmetric extend the edge as photo tools do.",
)
@click.option(
    "--dilation",
    default="1",
    show_default=True,
    callback=parsed(parse_pair, "dilation"),
    help="N or H,W.",
)
@click.option(
    "--groups",
    default="1",
    show_default=True,
    callback=parsed(parse_count, "groups"),
    help="Channel groups for 4-D kernels (C_out, C_in/groups, kh, kw).",
)
@click.option("--flip", is_flag=True, help="True convolution: rotate the kernel 180 degrees.")
@click.option(
    "--transpose",
    is_flag=True,
    help="Transposed convolution (PyTorch conv_transpose2d; 4-D kernels are "
    "(C_in, C_out/groups, kh, kw)); padding: same (out = in*stride), valid, N or H,W.",
)
@click.option(
    "--output-padding",
    callback=parsed(parse_pair, "output padding", 0),
    help="With --transpose: rows,cols added at the bottom/right; below the stride or the "
    "dilation.  [default: 0]",
)
@click.option(
    "--bias",
    callback=_bias,
    help="One value, or one per output channel (comma-separated), or FILE:TENSOR, a 1-D "
    "tensor of a model file (see 'convcli kernels show FILE').",
)
@click.option("--gray", is_flag=True, help="Convert the input to one luma channel first.")
@ALPHA_OPTION
@click.option(
    "--explain",
    "show_trace",
    is_flag=True,
    help="First print the shape trace of this convolution (as 'convcli explain', on stderr; "
    "one input).",
)
@batch_options
@output_options
@input_options
def conv(
    inputs,
    kernel,
    kernel_path,
    combine,
    stride,
    padding,
    pad_mode,
    dilation,
    groups,
    flip,
    transpose,
    output_padding,
    bias,
    gray,
    alpha,
    show_trace,
    batch,
    out,
    reading,
):
    """Cross-correlate each INPUT with a kernel (as PyTorch conv2d) and write the feature maps.

    INPUT: files, folders (--recursive), glob patterns, or - for stdin. With --transpose, run
    the transposed convolution (the up-convolution) instead.

    The border is zeros by default, as in a CNN layer: on a photo that draws a frame (a blur
    darkens the edges, an edge filter finds one there). --pad-mode replicate (or symmetric)
    extends the image instead, as photo tools do.

    \b
    convcli conv photo.png -k sobel_x --pad-mode replicate -o edges.png
    convcli conv 'shots/*.jpg' -k box:size=5 --pad-mode replicate --out-dir blurred --jobs 4
    """
    if output_padding is not None and not transpose:
        raise click.UsageError("--output-padding applies only with --transpose")
    if combine and len(kernel) < 2:
        raise click.UsageError("--combine needs two or more -k kernels, whose maps it combines")
    if transpose and pad_mode != "zeros":
        raise click.UsageError(
            f"--pad-mode {pad_mode} does not apply to --transpose, which pads with zeros"
        )
    from convcli.kernels.library import resolve_kernel
    from convcli.pipeline import Job, Pipeline, make_step

    kernels = tuple(resolve_kernel(spec, kernel_path) for spec in kernel)
    common = dict(
        kernel=kernels,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        flip=flip,
        bias=bias,
        combine=combine and combine.lower(),
    )
    if transpose:
        step = make_step("transposed", 2, output_padding=output_padding or (0, 0), **common)
    else:
        step = make_step("conv", 2, pad_mode=pad_mode, **common)
    steps = (make_step("gray", 1), step) if gray else (step,)
    job = Job(
        Pipeline(steps),
        out,
        alpha,
        batch.out_format,
        batch.overwrite,
        before=ExplainConv(kernel) if show_trace else None,
        read=reading,
    )
    run_files(inputs, job, batch, single="--explain" if show_trace else None, kernel=slug(kernel))


@dataclass(frozen=True)
class ExplainConv:
    """``--explain``: before the convolution runs, its trace per kernel on stderr (picklable)."""

    specs: tuple[str, ...]

    def __call__(self, step, maps) -> None:
        if step.op not in ("conv", "transposed"):
            return
        from convcli import engine
        from convcli.cli.explain import explain_conv

        p, transposed = step.params, step.op == "transposed"
        layout = engine.as_transposed_weight if transposed else engine.as_conv_weight
        for spec, kernel in zip(self.specs, p["kernel"]):
            weight, groups = layout(
                kernel.weights / kernel.scale, maps.data.shape[0], p["groups"], copy=False
            )
            explain_conv(
                maps.data.shape,
                weight.shape,
                groups,
                stride=p["stride"],
                padding=p["padding"],
                dilation=p["dilation"],
                bias=p["bias"],
                label=spec,
                transposed=transposed,
                output_padding=p.get("output_padding", (0, 0)),
                pad_mode=p.get("pad_mode", "zeros"),
            )
