"""Finding kernels: built-in names (YAML files in ``kernels/``), ``NAME:param=value`` and files.

A kernel is data: weights as correlated, plus libvips-style ``scale`` and ``offset``
(``result = correlate(x, w) / scale + offset``). No numba here: ``convcli kernels`` must start fast.

>>> resolve_kernel("box:size=2").weights.tolist()
[[0.25, 0.25], [0.25, 0.25]]
>>> resolve_kernel("vertical_edge").weights[0].tolist()
[1.0, 0.0, -1.0]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convcli.errors import KernelError


@dataclass(frozen=True)
class Kernel:
    """Weights (2-D, 3-D or 4-D float32, as correlated) with their scale, offset and origin."""

    name: str
    weights: np.ndarray
    scale: float = 1.0
    offset: float = 0.0
    source: str = ""
    description: str = ""


def library_dir() -> Path:
    """The built-in kernel folder: inside the installed wheel, or ``kernels/`` in a checkout."""
    packaged = Path(__file__).with_name("builtin_kernels")
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "kernels"


def _box(size: int) -> np.ndarray:
    return np.full((size, size), 1.0 / (size * size))


_GENERATORS = {"box": _box}


def check_weights(weights: np.ndarray, where: str) -> np.ndarray:
    """Validate weights once at load time: 2-D to 4-D, not empty, finite real numbers."""
    if weights.dtype.kind not in "biuf":
        raise KernelError(f"{where}: weights must be real numbers, got dtype {weights.dtype}")
    if weights.ndim not in (2, 3, 4):
        raise KernelError(f"{where}: a kernel must be 2-D, 3-D or 4-D, got shape {weights.shape}")
    if weights.size == 0:
        raise KernelError(f"{where}: the kernel is empty (shape {weights.shape})")
    if not np.all(np.isfinite(weights)):
        raise KernelError(f"{where}: weights must be finite (found NaN or inf)")
    return np.ascontiguousarray(weights, dtype=np.float32)


def _parse_grid(text: str, where: str) -> np.ndarray:
    rows = [line.replace(",", " ").split() for line in str(text).strip().splitlines() if line.strip()]
    if not rows or len({len(r) for r in rows}) != 1:
        raise KernelError(f"{where}: weight rows must all have the same number of values")
    try:
        return np.array([[float(v) for v in row] for row in rows])
    except ValueError as exc:
        raise KernelError(f"{where}: {exc}") from None


def _parse_params(text: str, name: str) -> dict:
    params = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise KernelError(f"kernel {name!r}: parameter {item!r} is not key=value")
        params[key.strip()] = value.strip()
    return params


def _load_yaml(path: Path, params: dict) -> Kernel:
    import yaml

    where = str(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise KernelError(f"{where}: not a readable YAML kernel ({exc})") from None
    if not isinstance(spec, dict):
        raise KernelError(f"{where}: a kernel file must be a mapping with name and weights")
    if "generator" in spec:
        declared = spec.get("parameters") or {}
        unknown = set(params) - set(declared)
        if unknown:
            raise KernelError(f"{where}: unknown parameter {sorted(unknown)[0]!r} (known: {', '.join(declared)})")
        values = {}
        for key, rule in declared.items():
            raw = params.get(key, rule.get("default"))
            try:
                value = int(raw)
            except (TypeError, ValueError):
                raise KernelError(f"{where}: parameter {key}={raw!r} is not a whole number") from None
            if not rule.get("min", value) <= value <= rule.get("max", value):
                raise KernelError(f"{where}: parameter {key}={value} is outside {rule.get('min')}..{rule.get('max')}")
            values[key] = value
        weights = _GENERATORS[spec["generator"]](**values)
    elif params:
        raise KernelError(f"{where}: kernel {spec.get('name')!r} takes no parameters")
    else:
        weights = _parse_grid(spec.get("weights", ""), where)
    return Kernel(
        name=str(spec.get("name", path.stem)),
        weights=check_weights(np.asarray(weights), where),
        scale=float(spec.get("scale", 1.0)),
        offset=float(spec.get("offset", 0.0)),
        source=where,
        description=str(spec.get("description", "")).strip(),
    )


def builtin_names() -> list[str]:
    return sorted(p.stem for p in library_dir().glob("*.yaml"))


def resolve_kernel(spec: str) -> Kernel:
    """A kernel from ``NAME``, ``NAME:param=value,...``, a ``.npy`` file or a ``.yaml`` file."""
    text = str(spec).strip()
    if text.lower().endswith(".npy"):
        if not os.path.isfile(text):
            raise KernelError(f"kernel file {text!r} does not exist")
        try:
            weights = np.load(text, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise KernelError(f"kernel file {text!r} is not a readable .npy file ({exc})") from None
        return Kernel(name=Path(text).stem, weights=check_weights(weights, text), source=text)
    if text.lower().endswith((".yaml", ".yml")):
        if not os.path.isfile(text):
            raise KernelError(f"kernel file {text!r} does not exist")
        return _load_yaml(Path(text), {})
    name, _, param_text = text.partition(":")
    path = library_dir() / f"{name}.yaml"
    if not path.is_file():
        import difflib

        close = difflib.get_close_matches(name, builtin_names(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(builtin_names())})"
        raise KernelError(f"unknown kernel {name!r}{hint}")
    return _load_yaml(path, _parse_params(param_text, name))
