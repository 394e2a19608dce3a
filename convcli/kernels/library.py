"""Finding kernels: a spec (a name with parameters, a file, an inline string) -> a ``Kernel``.

A kernel is data: weights as correlated, plus libvips-style ``scale`` and ``offset``
(``result = correlate(x, w) / scale + offset``). ``resolve_kernel`` accepts

- ``NAME`` or ``NAME:param=value,...``: ``NAME.yaml`` (``.yml``, ``.mat``, ``.npy``) in the
  first folder of the search path that has it (``search``): ``--kernel-path`` folders, then
  ``$CONVCLI_KERNEL_PATH``, then the built-in ``kernels/``;
- a file: ``.yaml``/``.yml`` (the built-ins' schema), ``.npy`` (2-D, 3-D or 4-D), ``.mat``
  (libvips matrix: a ``width height [scale [offset]]`` line, then the rows);
- an ImageMagick kernel string ``"WxH[+X+Y]: v v v ..."`` (``"N:"`` means NxN).

The files are read by ``formats``, parameters parsed by ``params``; what is said about the
weights is ``facts``. Every problem is a one-line ``KernelError`` naming the kernel or file.
No numba and no rich here: ``convcli kernels`` must start fast.

>>> resolve_kernel("box:size=2").weights.tolist()
[[0.25, 0.25], [0.25, 0.25]]
>>> resolve_kernel("sobel:dir=y").weights[:, 1].tolist()
[-2.0, 0.0, 2.0]
>>> resolve_kernel("3x1: 1,0,-1").weights.tolist()
[[1.0, 0.0, -1.0]]
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from convcli import limits
from convcli.errors import KernelError
from convcli.io.paths import require_regular_file
from convcli.kernels.facts import is_zero_sum
from convcli.kernels.formats import (
    apply_layout,
    check_weights,
    grids,
    inline_weights,
    is_inline,
    read_mat,
    read_npy,
    read_yaml,
)
from convcli.kernels.generators import GENERATORS, gaussian_size
from convcli.kernels.params import Parameter, declare_parameters, is_finite, parse_params
from convcli.kernels.search import NAME, SUFFIXES, find_in, kernel_names, locate, search_path
from convcli.layers.values import closest
from convcli.models import is_model_file, split_model_spec

YAML_KEYS = (
    "name",
    "description",
    "source",
    "parameters",
    "generator",
    "weights",
    "layout",
    "scale",
    "offset",
    "alias",
)
ALIAS_KEYS = ("name", "description", "alias")


@dataclass(frozen=True)
class Kernel:
    """Weights (2-D, 3-D or 4-D float32, as correlated) with their libvips scale and offset.

    ``source`` cites where the weights come from (a paper, OpenCV, ImageMagick...);
    ``location`` says where convcli found them (built-in, a kernel folder, a file, inline);
    ``parameters`` are the values used and ``declared`` what the kernel accepts; ``spec`` is
    the text that named it (``sobel:dir=y``, ``bank.npy``), for montage labels ("" inline).
    """

    name: str
    weights: np.ndarray
    scale: float = 1.0
    offset: float = 0.0
    source: str = ""
    description: str = ""
    location: str = ""
    parameters: dict = field(default_factory=dict)
    declared: tuple[Parameter, ...] = ()
    spec: str = ""


def inline_kernel(text: str) -> Kernel:
    """An ImageMagick kernel string as a kernel (``formats.inline_weights``).

    >>> float(inline_kernel("3: 0,-1,0 -1,5,-1 0,-1,0").weights.sum())
    1.0
    >>> inline_kernel("2x1+1+0: 1 2").weights.tolist()
    [[1.0, 2.0, 0.0]]
    """
    weights, size = inline_weights(text)
    return Kernel(
        name=f"inline {size}",
        weights=weights,
        location="inline",
        source="ImageMagick kernel string",
    )


def resolve_kernel(spec: str, kernel_path: Sequence[str] = ()) -> Kernel:
    """A kernel from a name (with parameters), a file or an inline string (see the module).

    ``kernel_path`` lists user kernel folders searched before ``$CONVCLI_KERNEL_PATH`` and
    the built-ins; the first folder holding the name wins.
    """
    text = str(spec).strip()
    if not text:
        raise KernelError("the kernel is empty: give a name, a file or an inline kernel")
    model = split_model_spec(text) or ((text, "") if is_model_file(text) else None)
    if model:  # FILE:TENSOR, a tensor of a model file
        from convcli.models.weights import read_kernel

        weights, tensor = read_kernel(*model)
        return Kernel(
            name=tensor.name,
            weights=check_weights(weights, text),
            spec=text,
            location=f"file {model[0]}",
            source=model[0],
            description=f"{tensor.layout}, stored as {tensor.dtype} {tensor.shape}",
        )
    if text.lower().endswith(SUFFIXES):
        require_regular_file(text, "kernel file", KernelError)
        return replace(_from_file(Path(text), {}, text, f"file {text}"), spec=text)
    if is_inline(text):
        return inline_kernel(text)
    name, _, param_text = text.partition(":")
    name = name.strip()
    if not NAME.match(name):
        if os.path.lexists(text):  # /dev/zero, a named pipe: say what it is, not its suffix
            require_regular_file(text, "kernel file", KernelError)
        looks_like_a_file = any(c in name for c in "./\\")
        hint = f" (kernel files end in {', '.join(SUFFIXES)})" if looks_like_a_file else ""
        raise KernelError(f"{text!r} is not a kernel name, a kernel file or an inline kernel{hint}")
    folders = search_path(kernel_path)
    found = locate(name, folders)
    if found is None:
        names = sorted(kernel_names(folders))
        near = closest(name, names)
        hint = f"; did you mean {near!r}?" if near else f" (known: {', '.join(names)})"
        raise KernelError(f"unknown kernel {name!r}{hint}")
    path, location, label = found
    where = f"kernel {name!r}" + ("" if label == "built-in" else f" ({path})")
    kernel = _from_file(path, parse_params(param_text, where), where, location, name)
    return replace(kernel, spec=text)


def _from_file(
    path: Path, params: dict, where: str, location: str, name: str | None = None
) -> Kernel:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return _yaml_kernel(path, params, where, location, name)
    if params:
        raise KernelError(f"{where}: a {suffix} kernel takes no parameters")
    scale, offset = 1.0, 0.0
    if suffix == ".npy":
        weights = read_npy(path, where)
    else:
        weights, scale, offset = read_mat(path, where)
    return Kernel(
        name=name or path.stem,
        weights=check_weights(weights, where),
        scale=scale,
        offset=offset,
        location=location,
        source=str(path),
    )


def _yaml_kernel(
    path: Path, given: dict, where: str, location: str, name: str | None, alias_ok: bool = True
) -> Kernel:
    spec = read_yaml(path, where)
    if not isinstance(spec, dict):
        raise KernelError(f"{where}: a kernel file must be a mapping with weights or a generator")
    from convcli.io.yamlsafe import check_keys

    check_keys(spec, ALIAS_KEYS if "alias" in spec else YAML_KEYS, where, KernelError)
    if name is not None and spec.get("name", name) != name:
        raise KernelError(f"{where}: its name {spec['name']!r} differs from its file name {name!r}")
    name = str(spec.get("name", name or path.stem))
    description = " ".join(str(spec.get("description", "")).split())
    if "alias" in spec:
        return _alias(path, spec, given, where, location, name, description, alias_ok)
    parameters = declare_parameters(spec.get("parameters"), where)
    unknown = sorted(set(given) - set(parameters))
    if unknown:
        known = f"known: {', '.join(parameters)}" if parameters else "it takes none"
        raise KernelError(f"{where}: unknown parameter {unknown[0]!r} ({known})")
    values = {key: p.parse(given.get(key, p.default), where) for key, p in parameters.items()}
    if ("generator" in spec) == ("weights" in spec):
        raise KernelError(f"{where}: give either weights or a generator")
    if "generator" in spec:
        weights = _generate(spec["generator"], values, where)
    else:
        chosen = _choose(spec["weights"], parameters, values, where)
        weights = apply_layout(grids(chosen, where, "weights"), spec.get("layout"), where)
    weights = check_weights(weights, where)
    return Kernel(
        name=name,
        weights=weights,
        scale=_scale(spec.get("scale", 1), weights, where),
        offset=_finite(spec.get("offset", 0), "offset", where),
        source=" ".join(str(spec.get("source", "")).split()),
        description=description,
        location=location,
        parameters=values,
        declared=tuple(parameters.values()),
    )


def _alias(path, spec, given, where, location, name, description, alias_ok) -> Kernel:
    """``alias: "sobel:dir=x"``: another kernel of the same folder, with some parameters set."""
    target, _, param_text = (part.strip() for part in str(spec["alias"]).partition(":"))
    target_path = find_in(path.parent, target) if alias_ok and NAME.match(target) else None
    if target_path is None or target_path.suffix.lower() not in (".yaml", ".yml"):
        raise KernelError(
            f"{where}: alias {spec['alias']!r} must name a YAML kernel "
            f"(not an alias) in {path.parent}"
        )
    fixed = parse_params(param_text, where)
    for key in set(fixed) & set(given):
        raise KernelError(f"{where}: parameter {key!r} is fixed by the alias {spec['alias']!r}")
    found = _yaml_kernel(target_path, {**fixed, **given}, where, location, target, alias_ok=False)
    return replace(
        found,
        name=name,
        description=description or found.description,
        declared=tuple(p for p in found.declared if p.name not in fixed),
    )


def _generate(generator: Any, values: dict, where: str) -> np.ndarray:
    function = GENERATORS.get(str(generator))
    if function is None:
        raise KernelError(
            f"{where}: unknown generator {generator!r} (known: {', '.join(GENERATORS)})"
        )
    takes = list(inspect.signature(function).parameters)
    if sorted(takes) != sorted(values):
        raise KernelError(
            f"{where}: generator {generator!r} needs exactly the parameters {', '.join(takes)}"
        )
    try:
        side = _generated_side(values)
    except (TypeError, ValueError, OverflowError):
        raise KernelError(
            f"{where}: generator {generator!r} takes numbers, got {limits.one_line(values)}"
        ) from None
    if side > limits.MAX_KERNEL_SIDE:  # refuse before allocating side x side float64
        raise KernelError(
            f"{where}: these parameters make a kernel {side} cells wide; a kernel is "
            f"at most {limits.MAX_KERNEL_SIDE} cells per side"
        )
    try:
        with np.errstate(all="ignore"):  # overflow or 0/0 shows as non-finite weights
            return function(**values)
    except (ArithmeticError, ValueError, TypeError, MemoryError) as exc:
        raise KernelError(
            f"{where}: generator {generator!r} failed on "
            f"{limits.one_line(values)} ({limits.one_line(exc)})"
        ) from None


def _generated_side(values: dict) -> int:
    """The side of the square a generator builds: ``size`` or ``length`` when given, else the
    Gaussian rule of the largest ``sigma*`` (``kernel_generators.gaussian_size``), else 1."""
    given = [values[k] for k in ("size", "length") if values.get(k) is not None]
    sigmas = [abs(v) for k, v in values.items() if k.startswith("sigma") and v is not None]
    side = given[0] if given else gaussian_size(max(sigmas)) if sigmas else 1
    return abs(int(side))


def _choose(raw: Any, parameters: dict[str, Parameter], values: dict, where: str) -> Any:
    """Weights given per value of the kernel's one choice parameter (``dir: x`` / ``dir: y``)."""
    if not isinstance(raw, dict):
        return raw
    choice = next(iter(parameters.values())) if len(parameters) == 1 else None
    keys = {str(k) for k in raw}
    if choice is None or choice.type != "choice" or keys != {str(c) for c in choice.choices}:
        raise KernelError(
            f"{where}: weights given per value need exactly one choice parameter "
            f"with those values as choices (the weights have "
            f"{', '.join(sorted(keys))})"
        )
    return {str(k): v for k, v in raw.items()}[str(values[choice.name])]


def _finite(raw: Any, what: str, where: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not is_finite(raw):
        raise KernelError(
            f"{where}: {what} must be a finite number, got {limits.shorten(repr(raw))}"
        )
    return float(raw)


def _scale(raw: Any, weights: np.ndarray, where: str) -> float:
    """A number, or ``sum``: divide by the weights' sum, unless the kernel is zero-sum (then 1)."""
    if raw == "sum":
        return 1.0 if is_zero_sum(weights) else float(weights.sum(dtype=np.float64))
    scale = _finite(raw, "scale (a number or 'sum')", where)
    if scale == 0:
        raise KernelError(f"{where}: scale must not be 0 (the result is divided by it)")
    return scale
