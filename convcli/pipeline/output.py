"""Output settings from option values by their long names: the one reader that the CLI's
output options, a pipeline file's ``output:`` section and ``convcli.write_image`` share."""

from __future__ import annotations

from typing import Any


def output_settings(map_mode: str = "auto", montage_grid: str | None = None, **values: Any):
    """``images.OutputSettings`` from output option values, by option name (``map_mode``,
    ``montage_grid``, ``depth``, ...); a ``ParameterError`` if they clash."""
    from convcli.io.images import OutputSettings

    grid = None
    if montage_grid is not None:
        from convcli.render.montage import parse_grid

        grid = parse_grid(montage_grid)
    return OutputSettings(map=map_mode, grid=grid, **values)
