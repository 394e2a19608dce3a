"""The catalogue ``convcli kernels list`` shows, without numpy when nothing changed.

Every name on the search path (``search``), built by ``library`` with default parameters.
Building the catalogue reads and builds every kernel (numpy, YAML: ~0.1 s), so its rows
are remembered in ``kernel-catalogue.json`` in the cache folder, keyed by the size and
modification time of every kernel file on the search path and of convcli's own modules: a
listing whose files have not changed imports neither numpy nor YAML. A cache that cannot be
read or written is rebuilt or skipped, never an error.

>>> [row.shape for row in catalogue() if row.name in ("gaussian", "rgb_sobel")]
[[7, 7], [2, 3, 3, 3]]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from convcli.errors import ConvcliError
from convcli.io.atomic import write_cache
from convcli.kernels.search import kernel_files, kernel_names, locate, search_path
from convcli.runtime import cache_dir

CACHE_NAME = "kernel-catalogue.json"


@dataclass(frozen=True)
class Row:
    """One name on the search path as listed: its kernel at defaults, or why it failed."""

    name: str
    location: str
    shape: list = field(default_factory=list)
    parameters: list = field(default_factory=list)  # ``Parameter.summary()`` of each
    description: str = ""
    source: str = ""
    error: str = ""


def catalogue(kernel_path: Sequence[str] = ()) -> list[Row]:
    """Every name on the search path (the first folder wins), built with default parameters.

    From the cache when no file it was built from has changed; otherwise built and cached.
    """
    folders = search_path(kernel_path)
    key = _cache_key(folders)
    cache = Path(cache_dir()) / CACHE_NAME
    try:
        cached = json.loads(cache.read_text(encoding="utf-8"))
        rows = [Row(**row) for row in cached["rows"]]
        if cached["key"] == key and all(map(_well_formed, rows)):
            return rows
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache yet, or an unreadable one: build it
    rows = _build(folders, kernel_path)
    write_cache(str(cache), json.dumps({"key": key, "rows": [asdict(row) for row in rows]}))
    return rows


def _build(folders: list[tuple[str, Path]], kernel_path: Sequence[str]) -> list[Row]:
    from convcli.kernels.library import resolve_kernel

    rows = []
    for name in sorted(kernel_names(folders)):
        _, location, _ = locate(name, folders)
        try:
            kernel = resolve_kernel(name, kernel_path)
        except ConvcliError as exc:  # a kernel over a limit is broken too, not the whole list
            rows.append(Row(name, location, error=str(exc)))
            continue
        rows.append(
            Row(
                name,
                location,
                list(kernel.weights.shape),
                [p.summary() for p in kernel.declared],
                kernel.description,
                kernel.source,
            )
        )
    return rows


def _well_formed(row: Row) -> bool:
    """Whether a row read back from the cache has the types the listing prints."""
    texts = (row.name, row.location, row.description, row.source, row.error, *row.parameters)
    return (
        all(isinstance(t, str) for t in texts)
        and isinstance(row.parameters, list)
        and isinstance(row.shape, list)
        and all(type(n) is int for n in row.shape)
    )


def _cache_key(folders: list[tuple[str, Path]]) -> list:
    """The folders, and (path, size, mtime) of every kernel file in them and of convcli's code."""
    files = list(Path(__file__).resolve().parents[1].rglob("*.py"))
    for _, folder in folders:
        files += kernel_files(folder)
    key: list = [[label, str(folder)] for label, folder in folders]
    for path in sorted(files):
        try:
            stat = path.stat()
        except OSError:  # a dangling link: not a kernel, but keep it in the key
            key.append([str(path)])
            continue
        key.append([str(path), stat.st_size, stat.st_mtime_ns])
    return key
