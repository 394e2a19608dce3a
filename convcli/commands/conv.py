"""``convcli conv``: cross-correlate images with a kernel, as a CNN Conv2d layer."""

from __future__ import annotations

import click

from convcli.commands.kernels import kernel_path_option
from convcli.commands.options import output_options, parsed
from convcli.params import PAD_MODES, parse_floats, parse_pad_mode, parse_padding, parse_pair


@click.command()
@click.argument("input_path", metavar="INPUT")
@click.option("-k", "--kernel", required=True, multiple=True,
              help="NAME or NAME:param=value,... (sobel:dir=y, gaussian:sigma=2; see 'convcli kernels "
                   "list'), a .yaml/.npy/.mat file, or inline '3x3: 1,0,-1 ...'. Repeat it "
                   "(-k a -k b) to stack each kernel's maps as channels (same output size).")
@kernel_path_option
@click.option("-o", "--output", required=True, help="Output file: .npy (exact float32) or an image.")
@click.option("--stride", default="1", show_default=True, callback=parsed(parse_pair, "stride"),
              help="N or H,W.")
@click.option("--padding", default="same", show_default=True, callback=parsed(parse_padding),
              help="valid, same (TF/Keras), full, N, H,W or top,bottom,left,right.")
@click.option("--pad-mode", default="zeros", show_default=True, callback=parsed(parse_pad_mode),
              help=f"Border values: {', '.join(PAD_MODES)} (PyTorch's meanings).")
@click.option("--dilation", default="1", show_default=True, callback=parsed(parse_pair, "dilation"),
              help="N or H,W.")
@click.option("--groups", default=1, show_default=True, type=click.IntRange(min=1),
              help="Channel groups for 4-D kernels (C_out, C_in/groups, kh, kw).")
@click.option("--flip", is_flag=True, help="True convolution: rotate the kernel 180 degrees.")
@click.option("--transpose", is_flag=True,
              help="Transposed convolution (PyTorch conv_transpose2d; 4-D kernels are "
                   "(C_in, C_out/groups, kh, kw)); padding: same (out = in*stride), valid, N or H,W.")
@click.option("--output-padding", callback=parsed(parse_pair, "output padding", 0),
              help="With --transpose: rows,cols added at the bottom/right; below the stride or the "
                   "dilation.  [default: 0]")
@click.option("--bias", callback=parsed(parse_floats, "bias"),
              help="One value, or one per output channel (comma-separated).")
@click.option("--gray", is_flag=True, help="Convert the input to one luma channel first.")
@click.option("--alpha", type=click.Choice(["keep", "drop", "channel"]), default="keep", show_default=True,
              help="keep: filter colour only, carry alpha through when the size is unchanged; "
                   "drop: discard it; channel: filter it as one more channel.")
@click.option("--explain", "show_trace", is_flag=True,
              help="First print the shape trace of this convolution (as 'convcli explain', on stderr).")
@output_options
def conv(input_path, kernel, kernel_path, output, stride, padding, pad_mode, dilation, groups, flip, transpose,
         output_padding, bias, gray, alpha, show_trace, out):
    """Cross-correlate INPUT with a kernel (as PyTorch conv2d) and write the feature maps.

    With --transpose, run the transposed convolution (the up-convolution) instead.
    """
    if output_padding is not None and not transpose:
        raise click.UsageError("--output-padding applies only with --transpose")
    if transpose and pad_mode != "zeros":
        raise click.UsageError(f"--pad-mode {pad_mode} does not apply to --transpose, which pads with zeros")
    import numpy as np

    from convcli import engine, images, mapping
    from convcli.errors import ShapeError
    from convcli.kernel_library import resolve_kernel

    images.check_output_path(output, [input_path], out)
    picture = images.read_input(input_path, alpha_as_channel=alpha == "channel")
    data = engine.luma(picture.data) if gray else picture.data
    kernels = [resolve_kernel(spec, kernel_path) for spec in kernel]
    shape = engine.as_transposed_weight if transpose else engine.as_conv_weight
    layers = [shape(found.weights / found.scale, data.shape[0], groups) for found in kernels]
    counts = [w.shape[1] * g if transpose else w.shape[0] for w, g in layers]
    if show_trace:
        from convcli.commands.explain import explain_conv

        for spec, (weight, used_groups) in zip(kernel, layers):
            explain_conv(data.shape, weight.shape, used_groups, stride=stride, padding=padding, dilation=dilation,
                         bias=bias, label=spec, transposed=transpose, output_padding=output_padding or (0, 0))
    if bias is not None and len(kernels) > 1 and len(bias) not in (1, sum(counts)):
        raise ShapeError(f"bias has {len(bias)} values, the {len(kernels)} kernels give {sum(counts)} "
                         f"channels (give 1 or {sum(counts)})")
    starts = np.cumsum([0] + counts)
    stack, signed, labels = [], [], []
    for found, (weight, used_groups), count, start in zip(kernels, layers, counts, starts):
        part = bias if bias is None or len(bias) == 1 or len(kernels) == 1 else bias[start:start + count]
        if transpose:
            maps = engine.conv_transpose2d(
                data, found.weights / found.scale, part, stride=stride, padding=padding,
                output_padding=output_padding or (0, 0), dilation=dilation, groups=groups, flip=flip,
            )
        else:
            maps = engine.conv2d(
                data, found.weights / found.scale, part, stride=stride, padding=padding,
                dilation=dilation, groups=groups, pad_mode=pad_mode, flip=flip,
            )
        if stack and maps.shape[1:] != stack[0].shape[1:]:
            sizes = [f"{m.shape[1]}x{m.shape[2]}" for m in (stack[0], maps)]
            raise ShapeError(f"kernel {kernels[0].name!r} gives {sizes[0]} maps, {found.name!r} gives {sizes[1]}; "
                             f"stacked kernels must give the same output size")
        stack.append(maps + found.offset)
        shift = found.offset + np.broadcast_to(0.0 if part is None else part, count)
        signed.extend(mapping.signed_maps(weight, used_groups, transposed=transpose, shift=shift))
        labels.extend([found.name] if count == 1 else [f"{found.name}[{i}]" for i in range(count)])
    maps = np.concatenate(stack)
    carried = picture.alpha if alpha == "keep" and maps.shape[1:] == data.shape[1:] else None
    images.write_output(output, maps, picture.white, carried, out, signed=signed, labels=labels)
