"""Tables on stdout (or stderr): drawn by rich on a terminal, tab-separated text in a pipe, JSON.

Every command that prints a table calls ``show_table``: rich draws it when the stream is a
terminal or the user gave ``--table``; otherwise the same rows go out as tab-separated text, one
line per row, for ``grep``, ``cut`` and ``awk``. ``--json`` output goes through ``print_json``,
which names its schema (``convcli-NAME/1``). rich is imported only to draw a table.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click

#: The width of a table drawn into a pipe with ``--table`` (a terminal's width is its own),
#: unless ``$COLUMNS`` says otherwise.
PIPE_WIDTH = 200

#: ``--table``, shared by every command that prints a table.
table_option = click.option(
    "--table",
    is_flag=True,
    help="Draw the table even when stdout is not a terminal (there it is tab-separated text).",
)


def check_table_or_json(as_json: bool, table: bool) -> None:
    """A usage error when both ``--json`` and ``--table`` are given."""
    if as_json and table:
        raise click.UsageError("--json and --table exclude each other")


def drawn(table: bool = False, err: bool = False) -> bool:
    """Whether a table is drawn: ``--table``, or the stream it goes to is a terminal."""
    return table or (sys.stderr if err else sys.stdout).isatty()


def tsv(rows: Iterable[Sequence[Any]]) -> str:
    """Rows as tab-separated lines; a tab or line break inside a cell becomes a space.

    >>> tsv([["name", "size"], ["box", "3x3"], ["odd\\tcell", "two\\nlines"]]).splitlines()
    ['name\\tsize', 'box\\t3x3', 'odd cell\\ttwo lines']
    """
    return "\n".join(
        "\t".join(str(cell).replace("\t", " ").replace("\n", " ") for cell in row) for row in rows
    )


def show_table(
    rows: Iterable[Sequence[Any]],
    draw: Callable[[Any], None],
    *,
    table: bool = False,
    err: bool = False,
) -> None:
    """``draw(console)`` with a rich Console when ``drawn``, else ``rows`` as tab-separated text.

    ``rows`` are the plain cells (a header row first); ``draw`` prints the rich rendering of the
    same data on the console it is given.
    """
    if not drawn(table, err):
        click.echo(tsv(rows), err=err)
        return
    from rich.console import Console

    console = Console(stderr=err, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=err, highlight=False, width=PIPE_WIDTH)
    draw(console)


def print_json(schema: str, body: dict, *, err: bool = False) -> None:
    """``body`` as indented JSON, led by ``"schema": "convcli-SCHEMA/1"``."""
    import json

    click.echo(json.dumps({"schema": f"convcli-{schema}/1", **body}, indent=2), err=err)
