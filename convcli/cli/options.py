"""Option helpers shared by the commands."""

from __future__ import annotations

import functools

import click

from convcli.errors import ParameterError
from convcli.layers.values import not_one_of, parse_count, parse_number
from convcli.render import OUTPUT_OPTIONS


def parsed(parse, *args):
    """A Click callback running ``parse(value, *args)``; its ParameterError becomes a usage
    error."""

    def callback(ctx, param, value):
        if value is None:
            return None
        try:
            return parse(value, *args)
        except ParameterError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


class Choice(click.Choice):
    """``click.Choice`` that refuses in convcli's words (``params.not_one_of``), with the nearest
    choice: ``'minmx' is not one of auto, clip, ... (did you mean 'minmax'?)``."""

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            self.fail(not_one_of("", value, self.choices), param, ctx)


# The same names as convcli.render.mapping.MAP_MODES / COLORMAPS and convcli.io.images.DEPTHS,
# repeated here so that --help does not import numpy (a test keeps them equal).
MAP_MODES = ("auto", "clip", "abs", "minmax", "offset", "none")
COLORMAPS = ("gray", "viridis", "magma", "coolwarm")
DEPTHS = ("8", "16", "32f")

_OUTPUT_OPTIONS = (
    click.option(
        "--map",
        "map_mode",
        type=Choice(MAP_MODES),
        default="auto",
        show_default=True,
        help="Values to pixels. auto: offset for zero-sum kernels (sobel, laplacian), else "
        "clip; clip: to 0..white; abs: |y|; minmax: stretch each map to 0..white; "
        "offset: y*scale+offset; none: raw values (.npy, 32-bit float .tif).",
    ),
    click.option(
        "--scale",
        callback=parsed(parse_number, "scale"),
        help="--map offset: multiply first (implies --map offset).  [default: 1]",
    ),
    click.option(
        "--offset",
        callback=parsed(parse_number, "offset"),
        help="--map offset: add, in output units (implies --map offset).  "
        "[default: mid-grey: 128, 32768 or 0.5]",
    ),
    click.option(
        "--joint", is_flag=True, help="--map minmax: one range for all maps instead of one per map."
    ),
    click.option(
        "--depth",
        type=Choice(DEPTHS),
        help="Bits per sample: 8, 16 (PNG, TIFF) or 32f (float TIFF).  [default: the input's, "
        "as far as the format stores it]",
    ),
    click.option(
        "--colormap",
        type=Choice(COLORMAPS),
        help="Colour each single map; coolwarm is diverging (0 in the middle).",
    ),
    click.option("--split", is_flag=True, help="One file per map: OUT_00.png, OUT_01.png, ..."),
    click.option("--montage", is_flag=True, help="All maps in one grid image with labelled tiles."),
    click.option(
        "--montage-grid",
        metavar="RxC",
        help="Montage rows x columns (implies --montage).  [default: near-square]",
    ),
    click.option(
        "--legend",
        is_flag=True,
        help="Draw a grey ramp or colour bar beside the map (each montage tile), with the "
        "values white, mid-grey and black stand for.",
    ),
    click.option("--rgba", is_flag=True, help="Write exactly 4 maps as one RGBA image."),
    click.option(
        "--channels-first", is_flag=True, help=".npy output shaped (C, H, W) instead of (H, W, C)."
    ),
)


def output_options(command):
    """Add the output options to a command, which receives them as ``out`` (an OutputSettings).

    Use it under ``@click.command()``; pass ``out`` to ``images.check_output_path`` before the
    work and to ``images.write_output`` after it. Conflicting options are a usage error.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        values = {name: kwargs.pop(name) for name in OUTPUT_OPTIONS}
        kwargs["out"] = usage_output_settings(**values)
        return command(*args, **kwargs)

    for option in reversed(_OUTPUT_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def command_line_output_values(ctx: click.Context) -> dict:
    """The output options given on the command line (not defaulted), by parameter name; they
    override a pipeline file's ``output`` section."""
    from click.core import ParameterSource

    return {
        name: ctx.params[name]
        for name in OUTPUT_OPTIONS
        if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
    }


def usage_output_settings(**values):
    """``pipeline.output_settings`` of the parsed output options (a usage error if they clash)."""
    from convcli.cli.flags import in_flags
    from convcli.pipeline.output import output_settings

    try:
        return output_settings(**values)
    except ParameterError as exc:
        raise click.UsageError(in_flags(exc), click.get_current_context(silent=True)) from None


def _max_pixels(ctx, param, value):
    from convcli.limits import parse_whole

    if value is None:
        return None
    try:
        return parse_whole(value, "max pixels", minimum=0, maximum=10**15)
    except ParameterError as exc:
        raise click.BadParameter(str(exc)) from None


_INPUT_OPTIONS = (
    click.option(
        "--max-pixels",
        envvar="CONVCLI_MAX_PIXELS",
        metavar="N",
        callback=_max_pixels,
        help="Refuse inputs of more than N pixels (rows x columns), checked on the header "
        "before decoding; 0: no limit.  [default: 100000000, or $CONVCLI_MAX_PIXELS]",
    ),
    click.option(
        "--frame",
        default="0",
        show_default=True,
        metavar="N",
        callback=parsed(parse_count, "frame", 0),
        help="Frame of an animated GIF/PNG/WebP, or page of a multi-page TIFF, to read "
        "(0 = the first).",
    ),
)


def input_options(command):
    """Add ``--max-pixels`` and ``--frame`` to a command, which receives them as ``reading``
    (an ``images.ReadOptions``) to pass to ``images.read_input``."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from convcli.io.images import ReadOptions

        kwargs["reading"] = ReadOptions(
            max_pixels=kwargs.pop("max_pixels"), frame=kwargs.pop("frame")
        )
        return command(*args, **kwargs)

    for option in reversed(_INPUT_OPTIONS):
        wrapper = option(wrapper)
    return wrapper
