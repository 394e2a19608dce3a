"""Where kernel files are: the search path of kernel folders, and the file a name stands for.

The search path is the ``--kernel-path`` folders, then ``$CONVCLI_KERNEL_PATH``, then the
built-ins; a name is ``NAME.yaml`` (``.yml``, ``.mat``, ``.npy``) in the first folder that has
it. Only folder listings here (no numpy): ``library`` reads the files, ``catalogue`` lists them.

>>> locate("sobel", search_path())[2]
'built-in'
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from convcli.errors import KernelError
from convcli.io.paths import require_directory

ENV_VAR = "CONVCLI_KERNEL_PATH"
SUFFIXES = (".yaml", ".yml", ".mat", ".npy")  # the order a name is looked up in one folder
NAME = re.compile(r"[A-Za-z_][\w-]*\Z")


def library_dir() -> Path:
    """The built-in kernel folder: inside the installed wheel, or ``kernels/`` in a checkout."""
    packaged = Path(__file__).with_name("builtin")
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "kernels"


def search_path(kernel_path: Sequence[str] = ()) -> list[tuple[str, Path]]:
    """Kernel folders in lookup order, each with how it was given.

    ``kernel_path`` (``--kernel-path``, must exist), then ``$CONVCLI_KERNEL_PATH`` (split on
    ``os.pathsep``; missing folders are skipped, as in ``PATH``), then the built-ins.
    """
    for folder in kernel_path:
        require_directory(str(folder), "kernel folder", KernelError)
    from_env = [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    return (
        [("--kernel-path", Path(p)) for p in kernel_path]
        + [(ENV_VAR, p) for p in from_env if p.is_dir()]
        + [("built-in", library_dir())]
    )


def kernel_names(folders: list[tuple[str, Path]]) -> set[str]:
    """Every kernel name in ``folders``."""
    return {
        p.stem
        for _, folder in folders
        for p in kernel_files(folder)
        if p.is_file() and NAME.match(p.stem)
    }


def find_in(folder: Path, name: str) -> Path | None:
    """The file for ``name`` in ``folder`` (the first suffix of ``SUFFIXES`` that exists)."""
    for suffix in SUFFIXES:
        if (folder / (name + suffix)).is_file():
            return folder / (name + suffix)
    return None


def locate(name: str, folders: list[tuple[str, Path]]) -> tuple[Path, str, str] | None:
    """The first file for ``name``: its path, where it is (and what it overrides), its label."""
    hits = [(label, path) for label, folder in folders if (path := find_in(folder, name))]
    if not hits:
        return None
    (label, path), *shadowed = hits
    location = f"{label} {path}"
    if shadowed:
        location += f", overriding {shadowed[0][0]} {shadowed[0][1]}"
    return path, location, label


def kernel_files(folder: Path) -> list[Path]:
    """The paths in ``folder`` with a kernel suffix; an unreadable folder is a ``KernelError``."""
    try:
        names = os.listdir(folder)
    except OSError as exc:
        raise KernelError(
            f"kernel folder {str(folder)!r} cannot be read ({exc.strerror or exc})"
        ) from None
    return [folder / name for name in names if name.lower().endswith(SUFFIXES)]
