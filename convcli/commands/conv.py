"""``convcli conv``: cross-correlate images with a kernel, as a CNN Conv2d layer."""

from __future__ import annotations

import click

from convcli.commands.options import parsed
from convcli.params import PAD_MODES, parse_floats, parse_pad_mode, parse_padding, parse_pair


@click.command()
@click.argument("input_path", metavar="INPUT")
@click.option("-k", "--kernel", required=True,
              help="Built-in name (sobel_x, box:size=5), or a .npy / .yaml kernel file.")
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
@click.option("--bias", callback=parsed(parse_floats, "bias"),
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
