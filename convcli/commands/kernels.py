"""``convcli kernels list|show``: the kernel library, and one kernel's weights and properties.

Imports neither numba nor the engine, so it answers at once; ``list`` reads the catalogue's
cache and imports neither numpy nor YAML either when no kernel file has changed. rich is
imported inside the commands. Tables and JSON go to stdout.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict

import click

kernel_path_option = click.option(
    "--kernel-path", "kernel_path", multiple=True, metavar="DIR",
    help="Folder of user kernels (NAME.yaml/.yml/.mat/.npy), searched before "
         "$CONVCLI_KERNEL_PATH and the built-ins; repeatable, the first given wins.",
)
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print JSON (for scripts) instead of tables.")


@click.group()
def kernels() -> None:
    """List the kernel library, or show one kernel's weights."""


@kernels.command("list")
@kernel_path_option
@json_option
def list_kernels(kernel_path, as_json):
    """List every kernel: name, size, parameters, description and source.

    Names come from the --kernel-path folders, $CONVCLI_KERNEL_PATH and the built-ins (the
    first folder holding a name wins). The description is cut to its first sentence;
    'convcli kernels show NAME' gives all of it.
    """
    from convcli.errors import KernelError
    from convcli.kernel_catalogue import catalogue

    rows = catalogue(kernel_path)
    if as_json:
        click.echo(json.dumps([_row_json(row) for row in rows], indent=2))
    else:
        _print_catalogue(rows)
    broken = [row.name for row in rows if row.error]
    if broken:
        raise KernelError(f"{len(broken)} kernel file(s) could not be read: {', '.join(broken)} "
                          f"(see 'convcli kernels show NAME')")


@kernels.command("show")
@click.argument("spec", metavar="KERNEL")
@kernel_path_option
@json_option
def show(spec, kernel_path, as_json):
    """Show a kernel's weights, sum, zero-sum and separability.

    KERNEL is anything -k takes: NAME[:param=value,...], a .yaml/.npy/.mat file, or an
    inline 'WxH: ...' kernel. The weights are shown as correlated; separable means rank 1
    (by SVD), shown with its column and row factors. Also says where the kernel came from.
    """
    from convcli.kernel_library import kernel_facts, resolve_kernel

    kernel = resolve_kernel(spec, kernel_path)
    facts = kernel_facts(kernel.weights)
    if as_json:
        click.echo(json.dumps(_kernel_json(kernel, facts), indent=2))
    else:
        _print_kernel(kernel, facts)


#: 2-D slices of a 3-D or 4-D kernel that ``kernels show`` prints; the rest are counted.
SHOWN_SLICES = 8


def _size(shape) -> str:
    return "x".join(str(n) for n in shape)


def _plain(weights) -> list:
    """Nested lists of the shortest decimals that read back as the same float32 values."""
    import numpy as np

    return np.vectorize(lambda v: float(str(v)), otypes=[float])(weights).tolist()


def _row_json(row) -> dict:
    if row.error:
        return {"name": row.name, "location": row.location, "error": row.error}
    return {"name": row.name, "location": row.location, "shape": row.shape,
            "parameters": row.parameters, "description": row.description, "source": row.source}


def _kernel_json(kernel, facts) -> dict:
    factors = facts["factors"]
    return {
        "name": kernel.name, "location": kernel.location, "description": kernel.description,
        "source": kernel.source, "parameters": kernel.parameters,
        "declared": [{**asdict(p), "choices": list(p.choices)} for p in kernel.declared],
        "shape": list(kernel.weights.shape), "weights": _plain(kernel.weights),
        "scale": kernel.scale, "offset": kernel.offset, "sum": facts["sum"],
        "zero_sum": facts["zero_sum"], "separable": facts["separable"],
        "factors": None if factors is None else {"column": factors[0], "row": factors[1]},
    }


def _print_catalogue(rows) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="convcli kernels (weights as correlated)", show_lines=True)
    for column in ("name", "size", "parameters", "description", "source"):
        table.add_column(column, overflow="fold", no_wrap=column in ("name", "size"))
    for row in rows:
        if row.error:
            table.add_row(escape(row.name), "", "", f"[red]{escape(row.error)}[/]", escape(row.location))
            continue
        where = "" if row.location.startswith("built-in") else f"\nfrom {row.location}"
        first_sentence = re.match(r".*?\.(?=\s|$)|.*", row.description)[0]
        table.add_row(*(escape(text) for text in (row.name, _size(row.shape), "\n".join(row.parameters),
                                                  first_sentence, row.source + where)))
    Console().print(table)


def _print_kernel(kernel, facts) -> None:
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False)
    used = {k: "auto" if v is None else v for k, v in kernel.parameters.items()}
    values = ",".join(f"{p.name}={used[p.name]}" for p in kernel.declared)
    console.print(f"[bold]{escape(kernel.name)}[/]" + (f":{escape(values)}" if values else ""))
    declared = ", ".join(p.summary() for p in kernel.declared)
    for label, text in (("from: ", kernel.location), ("", kernel.description),
                        ("source: ", kernel.source), ("parameters (default, range): ", declared)):
        if text:
            console.print(label + escape(text))
    weights = kernel.weights
    slices = weights.reshape(-1, *weights.shape[-2:])
    shown = slices[:SHOWN_SLICES]
    width = max(len(f"{v:.6g}") for v in shown.ravel()) + 3
    if weights.shape[-1] * width > console.width:
        console.print(f"[dim]({_size(weights.shape)}: too wide to show here; use --json)[/]")
    else:
        for index, grid in enumerate(shown):
            if weights.ndim > 2:
                out, inp = divmod(index, weights.shape[1]) if weights.ndim == 4 else (None, index)
                console.print(f"input channel {inp}" if out is None
                              else f"map {out}, input channel {inp}")
            table = Table(show_header=False, box=box.SQUARE, padding=(0, 1))
            for _ in range(grid.shape[1]):
                table.add_column(justify="right")
            for row in grid:
                table.add_row(*(f"{v:.6g}" for v in row))
            console.print(table)
        if len(slices) > len(shown):
            rest = len(slices) - len(shown)
            console.print(f"[dim](and {rest:,} more {_size(weights.shape[-2:])} slices; "
                          f"--json gives all of them)[/]")
    separable = "yes" if facts["separable"] else "no"
    if facts["factors"]:
        column, row = ("[" + ", ".join(f"{v:.6g}" for v in f) + "]" for f in facts["factors"])
        separable += f": column {column} x row {row}"
    console.print(f"shape {_size(weights.shape)}   sum {facts['sum']:.6g}   zero-sum "
                  f"{'yes' if facts['zero_sum'] else 'no'}")
    console.print(f"separable (rank 1): {separable}")
    console.print(f"result = correlate(x, w) / {kernel.scale:g} + {kernel.offset:g}")
