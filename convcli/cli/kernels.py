"""``convcli kernels list|show``: the kernel library, and one kernel's weights and properties.

Imports neither numba nor the engine, so it answers at once; ``list`` reads the catalogue's
cache and imports neither numpy nor YAML either when no kernel file has changed. rich is
imported inside the commands. Tables and JSON go to stdout.
"""

from __future__ import annotations

import re
from dataclasses import asdict

import click

from convcli.cli.tables import check_table_or_json, print_json, show_table, table_option

kernel_path_option = click.option(
    "--kernel-path",
    "kernel_path",
    multiple=True,
    metavar="DIR",
    help="Folder of user kernels (NAME.yaml/.yml/.mat/.npy), searched before "
    "$CONVCLI_KERNEL_PATH and the built-ins; repeatable, the first given wins.",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of tables."
)


def complete_kernel(ctx: click.Context, param: click.Parameter, incomplete: str) -> list:
    """Shell completion of ``-k``: the kernel names on the search path (built-ins and the
    ``--kernel-path`` folders given before it) that start with ``incomplete``.

    Lists file names only (``kernels.search.kernel_names``): no numpy, no kernel is read.
    """
    from click.shell_completion import CompletionItem

    from convcli.errors import ConvcliError
    from convcli.kernels.search import kernel_names, search_path

    try:
        names = kernel_names(search_path(ctx.params.get("kernel_path") or ()))
    except ConvcliError:  # a --kernel-path that is not a folder: complete the others
        names = kernel_names(search_path())
    return [CompletionItem(name) for name in sorted(names) if name.startswith(incomplete)]


@click.group()
def kernels() -> None:
    """List the kernel library, or show one kernel's weights."""


@kernels.command("list")
@kernel_path_option
@json_option
@table_option
def list_kernels(kernel_path, as_json, table):
    """List every kernel: name, size, parameters, description and source.

    Names come from the --kernel-path folders, $CONVCLI_KERNEL_PATH and the built-ins (the
    first folder holding a name wins). The description is cut to its first sentence;
    'convcli kernels show NAME' gives all of it. A table on a terminal, tab-separated text
    in a pipe.
    """
    from convcli.errors import KernelError
    from convcli.kernels.catalogue import catalogue

    check_table_or_json(as_json, table)
    rows = catalogue(kernel_path)
    if as_json:
        print_json("kernels", {"kernels": [_row_json(row) for row in rows]})
    else:
        show_table(
            _catalogue_rows(rows), lambda console: _draw_catalogue(rows, console), table=table
        )
    broken = [row.name for row in rows if row.error]
    if broken:
        raise KernelError(
            f"{len(broken)} kernel file(s) could not be read: {', '.join(broken)} "
            f"(see 'convcli kernels show NAME')"
        )


@kernels.command("show")
@click.argument("spec", metavar="KERNEL", shell_complete=complete_kernel)
@kernel_path_option
@json_option
@table_option
def show(spec, kernel_path, as_json, table):
    """Show a kernel's weights, sum, zero-sum and separability.

    KERNEL is anything -k takes: NAME[:param=value,...], a .yaml/.npy/.mat file, a model
    file's tensor FILE:TENSOR, or an inline 'WxH: ...' kernel. The weights are shown as
    correlated; separable means rank 1 (by SVD), shown with its column and row factors. Also
    says where the kernel came from. On a terminal the weights are drawn as grids; in a pipe
    each row is tab-separated text.

    A model file alone (.safetensors, .pt, .pth, .ckpt, .onnx, .keras, .h5, .npz) lists its
    tensors that can serve as kernels or biases, with the -k or --bias that takes each.
    """
    from convcli.models import is_model_file

    check_table_or_json(as_json, table)
    if is_model_file(spec):
        _show_model(spec.strip(), as_json, table)
        return
    from convcli.kernels.facts import kernel_facts
    from convcli.kernels.library import resolve_kernel

    kernel = resolve_kernel(spec, kernel_path)
    facts = kernel_facts(kernel.weights)
    if as_json:
        print_json("kernel", _kernel_json(kernel, facts))
    else:
        show_table(
            _kernel_lines(kernel, facts),
            lambda console: _draw_kernel(kernel, facts, console),
            table=table,
        )


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
    return {
        "name": row.name,
        "location": row.location,
        "shape": row.shape,
        "parameters": row.parameters,
        "description": row.description,
        "source": row.source,
    }


def _kernel_json(kernel, facts) -> dict:
    factors = facts["factors"]
    return {
        "name": kernel.name,
        "location": kernel.location,
        "description": kernel.description,
        "source": kernel.source,
        "parameters": kernel.parameters,
        "declared": [{**asdict(p), "choices": list(p.choices)} for p in kernel.declared],
        "shape": list(kernel.weights.shape),
        "weights": _plain(kernel.weights),
        "scale": kernel.scale,
        "offset": kernel.offset,
        "sum": facts["sum"],
        "zero_sum": facts["zero_sum"],
        "separable": facts["separable"],
        "factors": None if factors is None else {"column": factors[0], "row": factors[1]},
    }


CATALOGUE_COLUMNS = ("name", "size", "parameters", "description", "source")


def _catalogue_cells(row, newline: str) -> list[str]:
    """One kernel's cells; ``newline`` separates the lines of a cell (a table's, or "; ")."""
    if row.error:
        return [row.name, "", "", row.error, row.location]
    where = "" if row.location.startswith("built-in") else f"{newline}from {row.location}"
    first_sentence = re.match(r".*?\.(?=\s|$)|.*", row.description)[0]
    return [
        row.name,
        _size(row.shape),
        newline.join(row.parameters),
        first_sentence,
        row.source + where,
    ]


def _catalogue_rows(rows) -> list[list[str]]:
    return [list(CATALOGUE_COLUMNS)] + [_catalogue_cells(row, "; ") for row in rows]


def _draw_catalogue(rows, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="convcli kernels (weights as correlated)", show_lines=True)
    for column in CATALOGUE_COLUMNS:
        table.add_column(column, overflow="fold", no_wrap=column in ("name", "size"))
    for row in rows:
        cells = [escape(text) for text in _catalogue_cells(row, "\n")]
        if row.error:
            cells[3] = f"[red]{cells[3]}[/]"
        table.add_row(*cells)
    console.print(table)


def _kernel_text(kernel, facts) -> tuple[list[str], list[str]]:
    """The plain lines ``kernels show`` prints before the weights and after them."""
    used = {k: "auto" if v is None else v for k, v in kernel.parameters.items()}
    values = ",".join(f"{p.name}={used[p.name]}" for p in kernel.declared)
    head = [kernel.name + (f":{values}" if values else "")]
    declared = ", ".join(p.summary() for p in kernel.declared)
    head += [
        label + text
        for label, text in (
            ("from: ", kernel.location),
            ("", kernel.description),
            ("source: ", kernel.source),
            ("parameters (default, range): ", declared),
        )
        if text
    ]
    separable = "yes" if facts["separable"] else "no"
    if facts["factors"]:
        column, row = ("[" + ", ".join(f"{v:.6g}" for v in f) + "]" for f in facts["factors"])
        separable += f": column {column} x row {row}"
    weights = kernel.weights
    tail = [
        f"shape {_size(weights.shape)}   sum {facts['sum']:.6g}   zero-sum "
        f"{'yes' if facts['zero_sum'] else 'no'}",
        f"separable (rank 1): {separable}",
        f"result = correlate(x, w) / {kernel.scale:g} + {kernel.offset:g}",
    ]
    return head, tail


def _slices(weights) -> tuple[list, str]:
    """The 2-D slices shown, each with its label ("" for a 2-D kernel), and a note on the rest."""
    slices = weights.reshape(-1, *weights.shape[-2:])
    shown = []
    for index, grid in enumerate(slices[:SHOWN_SLICES]):
        out, inp = divmod(index, weights.shape[1]) if weights.ndim == 4 else (None, index)
        label = (
            ""
            if weights.ndim == 2
            else (f"input channel {inp}" if out is None else f"map {out}, input channel {inp}")
        )
        shown.append((label, grid))
    rest = len(slices) - len(shown)
    note = (
        f"(and {rest:,} more {_size(weights.shape[-2:])} slices; --json gives all of them)"
        if rest
        else ""
    )
    return shown, note


def _kernel_lines(kernel, facts) -> list[list[str]]:
    """``kernels show`` as plain lines: the text, then each weight row tab-separated."""
    head, tail = _kernel_text(kernel, facts)
    shown, note = _slices(kernel.weights)
    lines = [[line] for line in head]
    for label, grid in shown:
        lines += [[label]] if label else []
        lines += [[f"{v:.6g}" for v in row] for row in grid]
    lines += [[note]] if note else []
    return lines + [[line] for line in tail]


def _draw_kernel(kernel, facts, console) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    head, tail = _kernel_text(kernel, facts)
    name, _, values = head[0].partition(":")
    console.print(f"[bold]{escape(name)}[/]" + (f":{escape(values)}" if values else ""))
    for line in head[1:]:
        console.print(escape(line))
    shown, note = _slices(kernel.weights)
    width = max(len(f"{v:.6g}") for _, grid in shown for v in grid.ravel()) + 3
    if kernel.weights.shape[-1] * width > console.width:
        console.print(f"[dim]({_size(kernel.weights.shape)}: too wide to show here; use --json)[/]")
    else:
        for label, grid in shown:
            if label:
                console.print(label)
            table = Table(show_header=False, box=box.SQUARE, padding=(0, 1))
            for _ in range(grid.shape[1]):
                table.add_column(justify="right")
            for row in grid:
                table.add_row(*(f"{v:.6g}" for v in row))
            console.print(table)
        if note:
            console.print(f"[dim]{note}[/]")
    for line in tail:
        console.print(escape(line))


MODEL_COLUMNS = ("name", "shape", "dtype", "layout", "kernel shape", "use")


def _show_model(path: str, as_json: bool, table: bool) -> None:
    """``kernels show FILE``: the tensors of a model file of rank 1 to 4, and how to use each."""
    from convcli.models.weights import list_tensors

    tensors = list_tensors(path)
    shown = [t for t in tensors if 1 <= len(t.shape) <= 4]
    hidden = len(tensors) - len(shown)
    note = f"({hidden} other tensor(s) of rank 0 or above 4 not shown)" if hidden else ""
    if as_json:
        print_json(
            "model-tensors",
            {
                "file": path,
                "tensors": [
                    {
                        "name": t.name,
                        "shape": list(t.shape),
                        "dtype": t.dtype,
                        "layout": t.layout,
                        "kernel_shape": list(t.kernel_shape),
                        "use": t.use(path),
                    }
                    for t in shown
                ],
                "not_shown": hidden,
            },
        )
        return
    rows = [
        [t.name, _size(t.shape), t.dtype, t.layout, _size(t.kernel_shape), t.use(path)]
        for t in shown
    ]

    def draw(console) -> None:
        from rich.markup import escape
        from rich.table import Table

        drawn_table = Table(title=f"tensors of {escape(path)}")
        for column in MODEL_COLUMNS:
            drawn_table.add_column(column, overflow="fold")
        for row in rows:
            drawn_table.add_row(*(escape(cell) for cell in row))
        console.print(drawn_table)
        if note:
            console.print(f"[dim]{escape(note)}[/]")

    show_table([list(MODEL_COLUMNS)] + rows + ([[note]] if note else []), draw, table=table)
