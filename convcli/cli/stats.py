"""``convcli stats``: per-channel min, max, mean, std and percentiles of images and ``.npy`` files.

Output as every table's (``commands.tables``): JSON with ``--json``, a rich table on a terminal
or with ``--table``, tab-separated text otherwise (for ``cut`` and ``awk``).
"""

from __future__ import annotations

import click

from convcli.cli.options import input_options, parsed
from convcli.cli.tables import check_table_or_json, print_json, show_table, table_option
from convcli.render.stats import DEFAULT_PERCENTILES, parse_percentiles


@click.command()
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option(
    "--percentiles",
    default=",".join(f"{p:g}" for p in DEFAULT_PERCENTILES),
    show_default=True,
    metavar="P,P,...",
    callback=parsed(parse_percentiles),
    help="Percentiles to report, 0 to 100 (linear interpolation, as numpy.percentile and "
    "torch.quantile).",
)
@click.option(
    "-r", "--recursive", is_flag=True, help="Descend into the subfolders of directory inputs."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema convcli-stats/1).")
@table_option
@input_options
def stats(inputs, percentiles, recursive, as_json, table, reading):
    """Per-channel min, max, mean, std (population, ddof=0) and percentiles of each INPUT.

    INPUT: image or .npy files, folders, glob patterns, or - for stdin. Every stored channel is
    reported, alpha included, in the file's own units (0..255 for 8-bit images).

    \b
    convcli stats photo.png
    convcli stats maps.npy --percentiles 0.1,50,99.9 --json
    """
    from convcli.batch.plan import expand_inputs
    from convcli.io import images
    from convcli.render.stats import channel_stats

    check_table_or_json(as_json, table)
    found = []
    for source in expand_inputs(inputs, recursive):
        picture = images.read_input(source.path, alpha_as_channel=True, options=reading)
        shape = [int(n) for n in (*picture.data.shape[1:], picture.data.shape[0])]
        found.append((source.path, shape, channel_stats(picture.data, percentiles)))
    if as_json:
        print_json("stats", _document(found, percentiles))
        return
    from convcli.render.stats import header, text_rows

    rows = [header(percentiles)] + [
        line for path, _, found_rows in found for line in text_rows([path], found_rows)
    ]
    show_table(rows, lambda console: _draw(console, found, percentiles), table=table)


def _document(found, percentiles) -> dict:
    return {
        "std": "population (ddof=0)",
        "percentile_method": "linear",
        "percentiles": list(percentiles),
        "inputs": [
            {"input": path, "shape": shape, "channels": [_finite(row) for row in rows]}
            for path, shape, rows in found
        ],
    }


def _finite(row: dict):
    """A row with NaN and infinities as the strings "nan", "inf", "-inf" (JSON has no such
    numbers)."""
    import math

    def number(value: float):
        return value if math.isfinite(value) else str(value)

    return {
        key: [number(v) for v in value] if isinstance(value, list) else number(value)
        for key, value in row.items()
    }


def _draw(console, found, percentiles) -> None:
    from rich.table import Table

    from convcli.render.stats import header, text_rows

    table = Table(
        caption="std: population (ddof=0); percentiles: linear interpolation",
        caption_justify="left",
    )
    for name in header(percentiles):
        table.add_column(
            name, justify="left" if name == "input" else "right", no_wrap=name != "input"
        )
    for path, _, rows in found:
        for line in text_rows([path], rows):
            table.add_row(*line)
        table.add_section()
    console.print(table)
