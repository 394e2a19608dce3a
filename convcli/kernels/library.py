"""Finding kernels: names in kernel folders, ``NAME:param=value``, files and inline strings.

A kernel is data: weights as correlated, plus libvips-style ``scale`` and ``offset``
(``result = correlate(x, w) / scale + offset``). ``resolve_kernel`` accepts

- ``NAME`` or ``NAME:param=value,...``: ``NAME.yaml`` (``.yml``, ``.mat``, ``.npy``) in the
  first folder of the search path that has it: ``--kernel-path`` folders, then
  ``$CONVCLI_KERNEL_PATH``, then the built-in ``kernels/``;
- a file: ``.yaml``/``.yml`` (the built-ins' schema), ``.npy`` (2-D, 3-D or 4-D), ``.mat``
  (libvips matrix: a ``width height [scale [offset]]`` line, then the rows);
- an ImageMagick kernel string ``"WxH[+X+Y]: v v v ..."`` (``"N:"`` means NxN).

Every problem is a one-line ``KernelError`` naming the kernel or file. No numba and no rich
here: ``convcli kernels`` must start fast.

>>> resolve_kernel("box:size=2").weights.tolist()
[[0.25, 0.25], [0.25, 0.25]]
>>> resolve_kernel("sobel:dir=y").weights[:, 1].tolist()
[-2.0, 0.0, 2.0]
>>> resolve_kernel("3x1: 1,0,-1").weights.tolist()
[[1.0, 0.0, -1.0]]
"""

from __future__ import annotations

import inspect
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from convcli import limits
from convcli.errors import KernelError
from convcli.kernels.catalogue import NAME, SUFFIXES, find_in, kernel_names, locate, search_path
from convcli.kernels.generators import GENERATORS, gaussian_size
from convcli.layers.values import closest
from convcli.models import is_model_file, split_model_spec
from convcli.io.paths import require_regular_file

# |sum| <= RELATIVE_EPS * sum(|w|) counts as zero-sum (weights are float32). ``scale: sum`` then
# keeps scale 1 instead of dividing by ~0: ImageMagick -convolve's rule (skip normalising
# when |sum| <= epsilon). The same tolerance decides rank 1 in ``kernel_facts``.
RELATIVE_EPS = 1e-6
# How weights written as nested lists of grids map to the engine's shapes; ``[c_out, kh, kw]``
# (a bank of 2-D filters, one map each) becomes ``(c_out, 1, kh, kw)``.
LAYOUTS = (("kh", "kw"), ("c_in", "kh", "kw"), ("c_out", "kh", "kw"), ("c_out", "c_in", "kh", "kw"))
YAML_KEYS = ("name", "description", "source", "parameters", "generator", "weights", "layout",
             "scale", "offset", "alias")
ALIAS_KEYS = ("name", "description", "alias")
PARAMETER_KEYS = ("type", "default", "min", "max", "exclusive_min", "odd", "choices")
PARAMETER_TYPES = ("int", "float", "choice")

_INLINE = re.compile(r"\s*([0-9]+)(?:x([0-9]+))?(?:\+([0-9]+)\+([0-9]+))?\s*:(.*)\Z", re.S)  # WxH+X+Y: values
_SEPARATORS = re.compile(r'[\s,"]+')  # libvips .mat separators; grids accept the same


@dataclass(frozen=True)
class Parameter:
    """A declared kernel parameter: ``int``, ``float`` or ``choice``, its default and range.

    >>> size = Parameter("size", "int", 3, min=1, max=255, odd=True)
    >>> size.parse("5", "box"), size.summary()
    (5, 'size=3 odd [1, 255]')
    >>> Parameter("sigma", "float", 1.0, exclusive_min=0).summary()
    'sigma=1.0 (0, inf)'
    """

    name: str
    type: str
    default: Any = None
    min: Optional[float] = None
    max: Optional[float] = None
    exclusive_min: Optional[float] = None
    odd: bool = False
    choices: tuple = ()

    def parse(self, raw: Any, where: str) -> Any:
        """The value of ``raw`` (text from ``NAME:key=value`` or a YAML default), checked."""
        if raw is None:
            return None  # a default of null: the generator's default rule (e.g. size from sigma)
        text = str(raw).strip()
        shown = limits.shorten(text)
        if self.type == "choice":
            for choice in self.choices:
                if str(choice) == text:
                    return choice
            raise KernelError(f"{where}: {self.name}={shown} is not one of {self._choices()}")
        # ASCII only: int() and float() would also take "２" and "1_0"
        whole = self.type == "int"
        if not (re.fullmatch(r"[+-]?[0-9]+", text, re.ASCII) if whole else limits.NUMBER.fullmatch(text)):
            kind = "a whole number" if whole else "a number"
            raise KernelError(f"{where}: {self.name}={shown!r} is not {kind}")
        if whole and len(text.lstrip("+-").lstrip("0")) > 30:  # no need to convert it
            raise KernelError(f"{where}: {self.name}={shown} is too large")
        limits.check_digits(text, f"{where}: {self.name}", KernelError)
        value = int(text) if whole else float(text)
        if not _is_finite(value):
            raise KernelError(f"{where}: {self.name}={shown} must be finite")
        above, low, high = self.exclusive_min, self.min, self.max
        rule = (
            f"greater than {above:g}" if above is not None and value <= above
            else f"at least {low:g}" if low is not None and value < low
            else f"at most {high:g}" if high is not None and value > high
            else "odd" if self.odd and value % 2 == 0
            else None
        )
        if rule:
            raise KernelError(f"{where}: {self.name}={shown} must be {rule}")
        return value

    def summary(self) -> str:
        """``name=default`` and the allowed values (an interval, or the choices)."""
        default = "auto" if self.default is None else self.default
        if self.type == "choice":
            return f"{self.name}={default} ({self._choices()})"
        low = f"({self.exclusive_min:g}" if self.exclusive_min is not None else \
            f"[{self.min:g}" if self.min is not None else "(-inf"
        high = f"{self.max:g}]" if self.max is not None else "inf)"
        return f"{self.name}={default} {'odd ' if self.odd else ''}{low}, {high}"

    def _choices(self) -> str:
        return "|".join(str(c) for c in self.choices)


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
    declared: tuple = ()
    spec: str = ""


def is_zero_sum(weights: np.ndarray) -> bool:
    """Whether the weights sum to zero, up to ``RELATIVE_EPS`` of their absolute sum."""
    weights = np.asarray(weights, dtype=np.float64)
    return bool(abs(weights.sum()) <= RELATIVE_EPS * np.abs(weights).sum())


def kernel_facts(weights: np.ndarray) -> dict:
    """Sum, zero-sum, and separability: every 2-D slice of rank 1 (by SVD).

    For a separable 2-D kernel ``factors`` is ``(column, row)`` with ``outer(column, row) ==
    weights``: whole numbers when some scaling gives them (Sobel), else a column summing to 1
    (Gaussian); the factor with the larger sum is made positive.

    >>> facts = kernel_facts(resolve_kernel("sobel").weights)
    >>> facts["zero_sum"], facts["separable"], facts["factors"]
    (True, True, ([1.0, 2.0, 1.0], [-1.0, 0.0, 1.0]))
    """
    weights = np.asarray(weights, dtype=np.float64)
    slices = weights.reshape(-1, *weights.shape[-2:])
    singular = np.linalg.svd(slices, compute_uv=False)  # every slice at once: (slices, min(kh, kw))
    rank_one = singular.shape[1] < 2 or singular[:, 1] <= RELATIVE_EPS * singular[:, 0]
    separable = bool(np.all(rank_one))
    factors = _factors(weights) if separable and weights.ndim == 2 and weights.any() else None
    return {"sum": float(weights.sum()), "zero_sum": is_zero_sum(weights),
            "separable": separable, "factors": factors}


def _factors(weights: np.ndarray) -> tuple[list, list]:
    u, s, vt = np.linalg.svd(weights)
    column, row = u[:, 0] * s[0], vt[0]
    if max(column.sum(), row.sum(), key=abs) < 0:
        column, row = -column, -row

    def smallest(v):
        return np.abs(v)[np.abs(v) > RELATIVE_EPS * np.abs(v).max()].min()

    for unit in (smallest(column), 1 / smallest(row), column.sum() or np.abs(column).max()):
        pair = column / unit, row * unit
        if all(np.allclose(v, np.round(v), atol=1e-5) for v in pair):
            break
    return tuple((np.round(v, 6) + 0.0).tolist() for v in pair)


def check_weights(weights: np.ndarray, where: str) -> np.ndarray:
    """Validate weights once at load time: 2-D to 4-D, not empty, finite real numbers."""
    if not isinstance(weights, np.ndarray) or weights.dtype.kind not in "biuf":
        kind = getattr(weights, "dtype", type(weights).__name__)
        raise KernelError(f"{where}: weights must be real numbers, got {kind}")
    if weights.ndim not in (2, 3, 4):
        raise KernelError(f"{where}: a kernel must be 2-D, 3-D or 4-D, got shape {weights.shape}")
    if weights.size == 0:
        raise KernelError(f"{where}: the kernel is empty (shape {weights.shape})")
    limits.check_kernel_shape(weights.shape, where)
    with np.errstate(over="ignore"):
        single = np.ascontiguousarray(weights, dtype=np.float32)
    bad = np.argwhere(~np.isfinite(single))
    if len(bad):
        index = tuple(int(i) for i in bad[0])
        value = weights[index]
        problem = "finite" if not np.isfinite(value) else "within float32's range (3.4e38)"
        raise KernelError(f"{where}: weights must be {problem}, found {value} at {list(index)}")
    return single


def parse_grid(text: str, where: str) -> np.ndarray:
    """Rows on lines, values separated by spaces, commas or tabs.

    >>> parse_grid("1, 0, -1\\n2 0 -2", "example").tolist()
    [[1.0, 0.0, -1.0], [2.0, 0.0, -2.0]]
    """
    rows = [_tokens(line) for line in text.splitlines() if line.strip()]
    if not rows:
        raise KernelError(f"{where}: the kernel is empty")
    for number, row in enumerate(rows, 1):
        if len(row) != len(rows[0]):
            raise KernelError(f"{where}: rows must all have the same number of values "
                              f"(row 1 has {len(rows[0])}, row {number} has {len(row)})")
    return np.array([[_number(v, f"{where}: row {i}") for v in row]
                     for i, row in enumerate(rows, 1)])


def centre_origin(weights: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
    """Zero-pad a 2-D kernel so its ``origin`` (row, column) becomes the cell convcli centres on.

    convcli's centre of a size-k axis is cell ``(k - 1) // 2``, where ``same`` padding puts
    it (the odd pad after); ImageMagick's default origin is the same cell. Padding is minimal.

    >>> centre_origin(np.array([[1.0, 2.0, 3.0]]), (0, 0)).tolist()
    [[0.0, 1.0, 2.0, 3.0]]
    """
    pads = []
    for size, at in zip(weights.shape, origin):
        excess = (size - 1 - at) - at  # cells after the origin minus cells before it
        pads.append((max(excess - 1, 0), max(-excess, 0)))
    return np.pad(weights, pads)


def inline_kernel(text: str) -> Kernel:
    """An ImageMagick kernel string: ``"WxH[+X+Y]: values"`` row by row, ``"N:"`` for NxN.

    ``-`` and ``nan`` mark cells outside the kernel (weight 0). A non-centre origin ``+X+Y``
    (column X, row Y) is honoured with :func:`centre_origin`.

    >>> float(inline_kernel("3: 0,-1,0 -1,5,-1 0,-1,0").weights.sum())
    1.0
    >>> inline_kernel("2x1+1+0: 1 2").weights.tolist()
    [[1.0, 2.0, 0.0]]
    """
    match = _INLINE.match(text)
    if match is None:
        raise KernelError(f"{text!r} is not an inline kernel 'WxH[+X+Y]: values'")
    where = f"inline kernel {limits.shorten(text.partition(':')[0].strip() + ':')!r}"
    width, height = (limits.parse_whole(n, f"{where}: the {side}", 0, limits.MAX_KERNEL_SIDE, KernelError)
                     for n, side in ((match[1], "width"), (match[2] or match[1], "height")))
    if width < 1 or height < 1:
        raise KernelError(f"{where}: width and height must be at least 1")
    cells = _tokens(match[5])
    if len(cells) != width * height:
        raise KernelError(f"{where}: {width}x{height} needs {width * height} values, "
                          f"got {len(cells)}")
    values = [0.0 if v == "-" or v.lower() == "nan" else _number(v, where) for v in cells]
    weights = check_weights(np.array(values).reshape(height, width), where)
    if match[3] is not None:
        column, row = (limits.parse_whole(n, f"{where}: the origin", 0, error=KernelError)
                       for n in (match[3], match[4]))
        if column >= width or row >= height:
            raise KernelError(f"{where}: origin +{column}+{row} is outside the "
                              f"{width}x{height} kernel")
        weights = centre_origin(weights, (row, column))
    return Kernel(name=f"inline {width}x{height}", weights=weights, location="inline",
                  source="ImageMagick kernel string")


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
        return Kernel(name=tensor.name, weights=check_weights(weights, text), spec=text,
                      location=f"file {model[0]}", source=model[0],
                      description=f"{tensor.layout}, stored as {tensor.dtype} {tensor.shape}")
    if text.lower().endswith(SUFFIXES):
        require_regular_file(text, "kernel file", KernelError)
        return replace(_from_file(Path(text), {}, text, f"file {text}"), spec=text)
    if _INLINE.match(text):
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
    return replace(_from_file(path, _parse_params(param_text, where), where, location, name), spec=text)


def _tokens(text: str) -> list[str]:
    return [v for v in _SEPARATORS.split(text) if v]


def _number(text: str, where: str) -> float:
    """A weight: any number (a non-finite one is named with its cell by ``check_weights``)."""
    return limits.parse_real(text, f"{where}:", KernelError, finite=False)


def _parse_params(text: str, where: str) -> dict:
    params = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key:
            raise KernelError(f"{where}: parameter {item!r} is not key=value")
        if key in params:
            raise KernelError(f"{where}: parameter {key!r} is given twice")
        params[key] = value
    return params


def _from_file(path: Path, params: dict, where: str, location: str,
               name: Optional[str] = None) -> Kernel:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return _yaml_kernel(path, params, where, location, name)
    if params:
        raise KernelError(f"{where}: a {suffix} kernel takes no parameters")
    scale, offset = 1.0, 0.0
    if suffix == ".npy":
        from convcli.io.images import load_npy

        weights = load_npy(str(path), where, KernelError, _check_npy_kernel(where))
    else:
        weights, scale, offset = _read_mat(path, where)
    return Kernel(name=name or path.stem, weights=check_weights(weights, where), scale=scale,
                  offset=offset, location=location, source=str(path))


def _check_npy_kernel(where: str):
    """The header check of a .npy kernel: 2-D to 4-D, not empty, within the kernel limits."""

    def check(shape: tuple, dtype) -> None:
        if len(shape) not in (2, 3, 4):
            raise KernelError(f"{where}: a kernel must be 2-D, 3-D or 4-D, got shape {shape}")
        if 0 in shape:
            raise KernelError(f"{where}: the kernel is empty (shape {shape})")
        limits.check_kernel_shape(shape, where)

    return check


def _read_text(path: Path, where: str) -> str:
    """A text kernel file: UTF-8, at most ``limits.MAX_TEXT_BYTES``."""
    from convcli.io.yamlsafe import read_text_limited

    return read_text_limited(str(path), where, KernelError)


def _read_mat(path: Path, where: str) -> tuple[np.ndarray, float, float]:
    """libvips matrix text: ``width height [scale [offset]]``, then ``height`` rows of ``width``."""
    lines = [line for line in _read_text(path, where).splitlines() if line.strip()]
    header = _tokens(lines[0]) if lines else []
    try:
        numbers = [limits.parse_real(v, f"{where}: the first line", KernelError, finite=False)
                   for v in header]
    except KernelError:
        numbers = []
    if not 2 <= len(numbers) <= 4 or not all(v.is_integer() and v >= 1 for v in numbers[:2]):
        first = lines[0].strip() if lines else ""
        raise KernelError(f"{where}: the first line must be 'width height [scale [offset]]', "
                          f"got {limits.shorten(first)!r}")
    width, height = int(numbers[0]), int(numbers[1])
    scale, offset = (numbers[2:] + [1.0, 0.0][len(numbers) - 2:])[:2]
    if not (math.isfinite(scale) and math.isfinite(offset)) or scale == 0:
        raise KernelError(f"{where}: scale must be a finite non-zero number and offset finite, "
                          f"got {scale:g} and {offset:g}")
    if len(lines) - 1 != height:
        raise KernelError(f"{where}: the header says {height} rows, the file has {len(lines) - 1}")
    weights = parse_grid("\n".join(lines[1:]), where)
    if weights.shape[1] != width:
        raise KernelError(f"{where}: the header says {width} columns, "
                          f"the rows have {weights.shape[1]}")
    return weights, scale, offset


def _read_yaml(path: Path, where: str) -> Any:
    """Plain data only, size, depth and alias expansion limited: ``convcli.io.yamlsafe``."""
    from convcli.io.yamlsafe import parse_yaml_safely

    text = _read_text(path, where)
    if text.lstrip().startswith("%YAML:1.0"):
        raise KernelError(f"{where}: OpenCV FileStorage files are not supported; "
                          "save the matrix as .npy")
    return parse_yaml_safely(text, where, KernelError)


def _yaml_kernel(path: Path, given: dict, where: str, location: str, name: Optional[str],
                 alias_ok: bool = True) -> Kernel:
    spec = _read_yaml(path, where)
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
    parameters = _declare(spec.get("parameters"), where)
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
        weights = _layout(_grids(chosen, where, "weights"), spec.get("layout"), where)
    weights = check_weights(weights, where)
    return Kernel(
        name=name, weights=weights, scale=_scale(spec.get("scale", 1), weights, where),
        offset=_finite(spec.get("offset", 0), "offset", where),
        source=" ".join(str(spec.get("source", "")).split()), description=description,
        location=location, parameters=values, declared=tuple(parameters.values()),
    )


def _alias(path, spec, given, where, location, name, description, alias_ok) -> Kernel:
    """``alias: "sobel:dir=x"``: another kernel of the same folder, with some parameters set."""
    target, _, param_text = (part.strip() for part in str(spec["alias"]).partition(":"))
    target_path = find_in(path.parent, target) if alias_ok and NAME.match(target) else None
    if target_path is None or target_path.suffix.lower() not in (".yaml", ".yml"):
        raise KernelError(f"{where}: alias {spec['alias']!r} must name a YAML kernel "
                          f"(not an alias) in {path.parent}")
    fixed = _parse_params(param_text, where)
    for key in set(fixed) & set(given):
        raise KernelError(f"{where}: parameter {key!r} is fixed by the alias {spec['alias']!r}")
    found = _yaml_kernel(target_path, {**fixed, **given}, where, location, target, alias_ok=False)
    return replace(found, name=name, description=description or found.description,
                   declared=tuple(p for p in found.declared if p.name not in fixed))


def _declare(raw: Any, where: str) -> dict[str, Parameter]:
    from convcli.io.yamlsafe import check_keys

    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise KernelError(f"{where}: parameters must be a mapping of name to rules")
    declared = {}
    for key, rule in raw.items():
        if isinstance(rule, dict):  # "unknown key 'mx' (did you mean 'max'?" for this parameter
            check_keys(rule, PARAMETER_KEYS, f"{where}: parameter {limits.shorten(key)!r}", KernelError)
        if (not isinstance(rule, dict) or set(rule) - set(PARAMETER_KEYS)
                or rule.get("type") not in PARAMETER_TYPES):
            raise KernelError(f"{where}: parameter {key!r} needs a type "
                              f"({', '.join(PARAMETER_TYPES)}) and only the rules "
                              f"{', '.join(PARAMETER_KEYS)}")
        if (rule["type"] == "choice") != bool(rule.get("choices")):
            raise KernelError(f"{where}: parameter {key!r}: choices go with type choice, "
                              "and only with it")
        bounds = [rule.get(k) for k in ("min", "max", "exclusive_min")]
        if any(isinstance(b, bool) or not isinstance(b, (int, float, type(None)))
               or (b is not None and not _is_finite(b)) for b in bounds):
            raise KernelError(f"{where}: parameter {key!r}: min, max and exclusive_min "
                              "must be finite numbers")
        parameter = Parameter(name=str(key), **{**rule, "choices": tuple(rule.get("choices", ()))})
        parameter.parse(parameter.default, f"{where}: the declared default")
        declared[str(key)] = parameter
    return declared


def _generate(generator: Any, values: dict, where: str) -> np.ndarray:
    function = GENERATORS.get(str(generator))
    if function is None:
        raise KernelError(f"{where}: unknown generator {generator!r} "
                          f"(known: {', '.join(GENERATORS)})")
    takes = list(inspect.signature(function).parameters)
    if sorted(takes) != sorted(values):
        raise KernelError(f"{where}: generator {generator!r} needs exactly the parameters "
                          f"{', '.join(takes)}")
    try:
        side = _generated_side(values)
    except (TypeError, ValueError, OverflowError):
        raise KernelError(f"{where}: generator {generator!r} takes numbers, got "
                          f"{limits.one_line(values)}") from None
    if side > limits.MAX_KERNEL_SIDE:  # refuse before allocating side x side float64
        raise KernelError(f"{where}: these parameters make a kernel {side} cells wide; a kernel is "
                          f"at most {limits.MAX_KERNEL_SIDE} cells per side")
    try:
        with np.errstate(all="ignore"):  # overflow or 0/0 shows as non-finite weights
            return function(**values)
    except (ArithmeticError, ValueError, TypeError, MemoryError) as exc:
        raise KernelError(f"{where}: generator {generator!r} failed on "
                          f"{limits.one_line(values)} ({limits.one_line(exc)})") from None


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
        raise KernelError(f"{where}: weights given per value need exactly one choice parameter "
                          f"with those values as choices (the weights have "
                          f"{', '.join(sorted(keys))})")
    return {str(k): v for k, v in raw.items()}[str(values[choice.name])]


def _grids(raw: Any, where: str, at: str) -> np.ndarray:
    """A grid (text), or a list of grids, or a list of lists of grids, as one array."""
    if isinstance(raw, list):
        if not raw:
            raise KernelError(f"{where}: {at} is an empty list")
        parts = [_grids(item, where, f"{at}[{i}]") for i, item in enumerate(raw)]
        shapes = sorted({"x".join(map(str, p.shape)) for p in parts})
        if len(shapes) > 1:
            raise KernelError(f"{where}: the grids of {at} differ in shape ({' vs '.join(shapes)})")
        return np.stack(parts)
    if raw is None or isinstance(raw, (bool, dict)) or not isinstance(raw, (str, int, float)):
        raise KernelError(f"{where}: {at} must be a grid of numbers written as text "
                          "(a YAML '|' block) or a list of grids")
    return parse_grid(str(raw), f"{where}: {at}")


def _layout(weights: np.ndarray, layout: Any, where: str) -> np.ndarray:
    if layout is None and weights.ndim == 2:
        return weights
    declared = tuple(str(v) for v in layout) if isinstance(layout, list) else None
    if declared not in LAYOUTS or len(declared) != weights.ndim:
        known = "; ".join(f"[{', '.join(v)}]" for v in LAYOUTS if len(v) == weights.ndim)
        raise KernelError(f"{where}: weights nested {weights.ndim - 2} list(s) deep "
                          f"need a layout: {known}")
    return weights[:, None] if declared == ("c_out", "kh", "kw") else weights


def _finite(raw: Any, what: str, where: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not _is_finite(raw):
        raise KernelError(f"{where}: {what} must be a finite number, got "
                          f"{limits.shorten(repr(raw))}")
    return float(raw)


def _is_finite(value: Any) -> bool:
    """Whether a number is finite as a float (an int of 400 digits is not: it overflows)."""
    try:
        return math.isfinite(float(value))
    except (OverflowError, TypeError, ValueError):
        return False


def _scale(raw: Any, weights: np.ndarray, where: str) -> float:
    """A number, or ``sum``: divide by the weights' sum, unless the kernel is zero-sum (then 1)."""
    if raw == "sum":
        return 1.0 if is_zero_sum(weights) else float(weights.sum(dtype=np.float64))
    scale = _finite(raw, "scale (a number or 'sum')", where)
    if scale == 0:
        raise KernelError(f"{where}: scale must not be 0 (the result is divided by it)")
    return scale
