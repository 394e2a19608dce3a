"""``convcli warmup``: compile every Numba kernel and list the kernel library once, so later
runs start fast."""

from __future__ import annotations

import time

import click


@click.command()
def warmup() -> None:
    """Compile every kernel into the cache (once per machine; run it after installing).

    The cache lives in ~/.cache/convcli (or $CONVCLI_CACHE_DIR; compiled code in its numba
    folder, or $NUMBA_CACHE_DIR). Concurrent first runs are safe: compilation holds a file
    lock. Also caches the built-in kernels' catalogue for 'convcli kernels list'.
    """
    from convcli.kernels.catalogue import catalogue
    from convcli.runtime import numba_cache_dir

    start = time.perf_counter()
    from convcli.engine import _jit

    names = _jit.warm_up()
    catalogue()
    click.echo(
        f"compiled {len(names)} kernel families ({', '.join(names)}) in "
        f"{time.perf_counter() - start:.1f} s into {numba_cache_dir()}",
        err=True,
    )
