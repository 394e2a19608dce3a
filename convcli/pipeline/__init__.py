"""Pipelines: steps applied to every image, read from YAML and checked before any image is read.

A pipeline file is a list of steps, or a mapping with ``steps``, an optional ``output`` (the
output options of ``convcli conv``, by their long names) and an optional ``description``. A
step is a mapping with ``op`` and its fields, or just the op's name when it takes none::

    steps:
      - gray
      - op: conv
        kernel: [sobel_x, sobel_y]      # stacked: each kernel's maps become channels
        pad_mode: replicate
      - abs
    output:
      montage: true

``parse_pipeline`` checks all that does not depend on an image (fields, types, ranges, kernels,
references between steps) and raises one ``ConvcliError`` naming the file, the step and the
field. ``Pipeline.run`` applies the steps to a picture's values; ``Job`` is the work on one
file (read, run, write) that ``conv``, ``pool`` and ``run`` all use, picklable for worker
processes. ``trace`` turns a pipeline into ``convcli explain`` steps.

>>> parse_pipeline({"steps": ["gray", {"op": "pool", "size": 0}]}, "p.yaml")
Traceback (most recent call last):
...
convcli.errors.ParameterError: p.yaml: step 2 (pool): size: must be at least 1, got 0
>>> import numpy as np
>>> pipe = parse_pipeline(["relu", {"op": "pool", "mode": "max", "size": 2}])
>>> pipe.run(Maps(np.array([[[-1, 2], [3, -4]]], np.float32), 255.0)).data.tolist()
[[[3.0]]]
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections import abc
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Optional, Sequence

from convcli.errors import ConvcliError, ParameterError, ShapeError
from convcli.geometry import PADDING_RULES
from convcli.limits import MAX_OPTION_INT
from convcli.limits import short_repr as _short
from convcli.layers.values import COMBINE_MODES, PAD_MODES, not_one_of, one_of
from convcli.io.paths import require_regular_file
from convcli.io.urls import is_url
from convcli.render.stats import DEFAULT_PERCENTILES

REQUIRED = object()
POOL_MODES = ("max", "avg")
NORMALISE_MODES = ("minmax", "standard")
#: Activations and the explain kind each traces as.
ACTIVATIONS = {"relu": "relu", "leaky_relu": "leakyrelu", "abs": "abs", "sigmoid": "sigmoid", "tanh": "tanh"}
TOP_KEYS = ("steps", "output", "description")
_NAME = re.compile(r"[A-Za-z_][\w-]*\Z")


# --------------------------------------------------------------------------------------------
# Field values: each parser takes the YAML value and returns it checked, or raises a
# ParameterError whose message the caller prefixes with the file, the step and the field.


def _whole(value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(f"must be a whole number, got {_short(value)}")
    if value < minimum:
        raise ParameterError(f"must be at least {minimum}, got {_short(value)}")
    if value > MAX_OPTION_INT:
        raise ParameterError(f"must be at most {MAX_OPTION_INT}, got {_short(value)}")
    return value


def _pair(minimum: int) -> Callable[[Any], tuple[int, int]]:
    """N or [rows, cols]."""

    def parse(value: Any) -> tuple[int, int]:
        values = value if isinstance(value, list) else [value]
        if len(values) not in (1, 2):
            raise ParameterError(f"takes N or [rows, cols], got {_short(value)}")
        rows, cols = (_whole(v, minimum) for v in (values[0], values[-1]))
        return rows, cols

    return parse


def _padding(value: Any):
    """valid, same, full, N, [rows, cols] or [top, bottom, left, right]."""
    if isinstance(value, str):
        if value.strip().isalpha():
            return one_of(value, PADDING_RULES, "")
        raise ParameterError(f"must be valid, same, full, N, [rows, cols] or [top, bottom, left, right], "
                             f"got {_short(value)}")
    values = [_whole(v, 0) for v in (value if isinstance(value, list) else [value])]
    if len(values) not in (1, 2, 4):
        raise ParameterError(f"takes 1, 2 or 4 numbers, got {_short(value)}")
    if len(values) == 4:
        return tuple(values)
    return (values[0], values[0], values[-1], values[-1])


def _choice(*choices: str) -> Callable[[Any], str]:
    return lambda value: one_of(value, choices, "")


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ParameterError(f"must be true or false, got {_short(value)}")
    return value


def _text(value: Any) -> str:
    """A word or a number, as text (``depth: 8`` is ``"8"``)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ParameterError(f"must be a word or a number, got {_short(value)}")
    return str(value)


def _number(value: Any) -> float:
    # an int of 400 digits is no float (math.isfinite would overflow on it)
    if isinstance(value, bool) or not (isinstance(value, float) and math.isfinite(value)
                                       or isinstance(value, int) and abs(value) <= sys.float_info.max):
        raise ParameterError(f"must be a finite number, got {_short(value)}")
    return float(value)


def _numbers(value: Any) -> tuple[float, ...]:
    """One number or a list of them (one per channel)."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ParameterError("must be a number or a list of numbers, got []")
    try:
        return tuple(_number(v) for v in values)
    except ParameterError:
        raise ParameterError(f"must be a finite number or a list of them, got {_short(value)}") from None


def _positive_numbers(value: Any) -> tuple[float, ...]:
    values = _numbers(value)
    if min(values) <= 0:
        raise ParameterError(f"must be greater than 0, got {_short(value)}")
    return values


def _channels(value: Any) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ParameterError("must list at least one channel, got []")
    return tuple(_whole(v, 0) for v in values)


def _step_name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ParameterError(f"must be a name of letters, digits, _ and - (not starting with a digit), "
                             f"got {_short(value)}")
    return value


def _percentiles(value: Any) -> tuple[float, ...]:
    from convcli.render.stats import check_percentiles

    return check_percentiles(_numbers(value))


def _kernel_specs(value: Any) -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) and v.strip() for v in values):
        raise ParameterError(f"must be a kernel (a name, a file or an inline kernel) or a list of them, "
                             f"got {_short(value)}")
    return tuple(values)


_CONV = {"kernel": (_kernel_specs, REQUIRED), "stride": (_pair(1), (1, 1)), "padding": (_padding, "same"),
         "dilation": (_pair(1), (1, 1)), "groups": (lambda v: _whole(v, 1), 1), "flip": (_flag, False),
         "bias": (_numbers, None), "combine": (_choice(*COMBINE_MODES), None)}
#: Each op and its fields: (parser, default). Every step also takes ``name``.
FIELDS: dict[str, dict[str, tuple[Callable, Any]]] = {
    "conv": {**_CONV, "pad_mode": (_choice(*PAD_MODES), "zeros")},
    "transposed": {**_CONV, "output_padding": (_pair(0), (0, 0))},
    "pool": {"mode": (_choice(*POOL_MODES), "max"), "size": (_pair(1), (2, 2)), "stride": (_pair(1), None),
             "padding": (_padding, "valid"), "dilation": (_pair(1), (1, 1)), "ceil_mode": (_flag, False),
             "count_include_pad": (_flag, True)},
    "global_pool": {"mode": (_choice(*POOL_MODES), "max")},
    "unpool": {"indices": (_step_name, REQUIRED)},
    **{name: {} for name in ACTIVATIONS},
    "leaky_relu": {"slope": (_number, 0.01)},
    "normalise": {"mode": (_choice(*NORMALISE_MODES), "minmax"), "mean": (_numbers, None),
                  "std": (_positive_numbers, None)},
    "gray": {},
    "select": {"channels": (_channels, REQUIRED)},
    "stats": {"percentiles": (_percentiles, DEFAULT_PERCENTILES)},
}
#: Other spellings of ops (compared after lower-casing and turning ``-`` into ``_``).
ALIASES = {"normalize": "normalise", "grey": "gray", "leakyrelu": "leaky_relu", "conv_transpose": "transposed"}
#: The ``output`` section: its keys (the long option names) and the option each one sets.
#: Names (map, depth, colormap, montage_grid) are checked with the others by OutputSettings.
OUTPUT_FIELDS = {
    "map": ("map_mode", _text), "scale": ("scale", _number), "offset": ("offset", _number),
    "joint": ("joint", _flag), "depth": ("depth", _text), "colormap": ("colormap", _text),
    "split": ("split", _flag), "montage": ("montage", _flag), "montage_grid": ("montage_grid", _text),
    "legend": ("legend", _flag),
    "rgba": ("rgba", _flag), "channels_first": ("channels_first", _flag),
}


@dataclass(frozen=True)
class Step:
    """One checked step: its op, its number in the file (from 1), its name, and its field values.

    ``given`` lists the fields written in the file (the others hold defaults). A conv step's
    ``kernel`` holds the resolved ``kernel_library.Kernel`` objects.
    """

    op: str
    params: Mapping[str, Any]
    number: int = 1
    name: Optional[str] = None
    given: frozenset = frozenset()

    @property
    def label(self) -> str:
        """``step 3 (pool)``, for messages."""
        return f"step {self.number} ({self.op})"


def make_step(op: str, number: int = 1, name: Optional[str] = None, **params: Any) -> Step:
    """A step from values the caller has checked (the options of ``conv`` and ``pool``).

    >>> make_step("pool", size=(3, 3)).params["mode"]
    'max'
    """
    defaults = {key: default for key, (_, default) in FIELDS[op].items() if default is not REQUIRED}
    return Step(op, {**defaults, **params}, number, name, frozenset(params))


@dataclass(frozen=True)
class Pipeline:
    """Checked steps, the output options the file sets (by option name), and where it came from."""

    steps: tuple[Step, ...]
    output: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    description: str = ""

    def run(self, maps: "Maps", before: Optional[Callable[[Step, "Maps"], None]] = None) -> "Maps":
        """Apply every step; ``before(step, maps)`` is called ahead of each (``conv --explain``).

        Errors name the step when the pipeline came from a file.
        """
        for step in self.steps:
            try:
                if before is not None:
                    before(step, maps)
                maps = _APPLY[step.op](step, maps)
            except ConvcliError as exc:
                if not self.source:
                    raise
                raise type(exc)(f"{step.label}: {exc}") from None
        return maps


# --------------------------------------------------------------------------------------------
# Reading and checking


def load_pipeline(path: str, kernel_path: Sequence[str] = ()) -> Pipeline:
    """Read and check a pipeline file; kernel files named in it are relative to its folder.

    YAML is read by ``yamlsafe.load_yaml_safely``: plain data only, size and depth limited.
    """
    from convcli.io.yamlsafe import load_yaml_safely

    require_regular_file(path, "pipeline")
    document = load_yaml_safely(path, f"pipeline {path!r}")
    return parse_pipeline(document, path, kernel_path, os.path.dirname(path))


def parse_pipeline(document: Any, source: str = "pipeline", kernel_path: Sequence[str] = (),
                   folder: str = "") -> Pipeline:
    """Check a loaded pipeline document (see the module docstring); resolve its kernels.

    >>> parse_pipeline({"steps": [{"op": "pool", "kernel": 3}]}, "p.yaml")     # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    convcli.errors.ParameterError: p.yaml: step 1 (pool): field 'kernel' is not one of mode, ...
    """
    if isinstance(document, list):
        document = {"steps": document}
    if not isinstance(document, dict):
        raise ParameterError(f"{source}: a pipeline is a list of steps, or a mapping with 'steps' "
                             f"(and 'output', 'description'); got {_short(document)}")
    for key in document:
        if key not in TOP_KEYS:
            raise ParameterError(f"{source}: {not_one_of('key', key, TOP_KEYS)}")
    if not isinstance(document.get("steps"), list) or not document["steps"]:
        raise ParameterError(f"{source}: steps: must be a list of at least one step")
    description = document.get("description") or ""
    if not isinstance(description, str):
        raise ParameterError(f"{source}: description: must be text, got {_short(description)}")
    steps: list[Step] = []
    for number, spec in enumerate(document["steps"], 1):
        steps.append(_parse_step(spec, number, steps, source, kernel_path, folder))
    return Pipeline(tuple(steps), _parse_output(document.get("output"), source), source, description)


def _parse_step(spec: Any, number: int, earlier: list[Step], source: str, kernel_path: Sequence[str],
                folder: str) -> Step:
    if isinstance(spec, str):
        spec = {"op": spec}
    if not isinstance(spec, dict) or "op" not in spec:
        raise ParameterError(f"{source}: step {number}: expected an op name or a mapping with 'op', "
                             f"got {_short(spec)}")
    word = str(spec["op"]).strip().lower().replace("-", "_")
    op = ALIASES.get(word, word)
    if op not in FIELDS:
        raise ParameterError(f"{source}: step {number}: {not_one_of('op', spec['op'], FIELDS)}")
    where = f"{source}: step {number} ({op})"
    fields = FIELDS[op]
    for key in spec:
        if key not in fields and key not in ("op", "name"):
            raise ParameterError(f"{where}: {not_one_of('field', key, list(fields) + ['name'])}")
    params = {}
    for key, (parse, default) in fields.items():
        if key in spec:
            try:
                params[key] = parse(spec[key])
            except ParameterError as exc:
                raise ParameterError(f"{where}: {key}: {exc}") from None
        elif default is REQUIRED:
            raise ParameterError(f"{where}: {key}: required")
        else:
            params[key] = default
    name = None
    if "name" in spec:
        try:
            name = _step_name(spec["name"])
        except ParameterError as exc:
            raise ParameterError(f"{where}: name: {exc}") from None
        twin = next((s for s in earlier if s.name == name), None)
        if twin is not None:
            raise ParameterError(f"{where}: name: {name!r} already names step {twin.number}")
    if op in ("conv", "transposed"):
        params["kernel"] = tuple(_resolve(text, where, kernel_path, folder) for text in params["kernel"])
    step = Step(op, params, number, name, frozenset(k for k in spec if k != "op"))
    try:
        _check_rules(step, earlier)
    except _FieldError as exc:
        raise ParameterError(f"{where}: {exc.field}: {exc.message}") from None
    return step


def _resolve(text: str, where: str, kernel_path: Sequence[str], folder: str):
    from convcli.kernels.library import SUFFIXES, resolve_kernel

    spec = text.strip()
    if spec.lower().endswith(SUFFIXES) and not os.path.isabs(spec):
        spec = os.path.join(folder, spec)
    try:
        kernel = resolve_kernel(spec, kernel_path)
    except ConvcliError as exc:
        raise type(exc)(f"{where}: kernel: {exc}") from None
    return replace(kernel, spec=kernel.spec and text.strip())  # as written, not joined to the folder


class _FieldError(Exception):
    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field, self.message = field_name, message


def _check_rules(step: Step, earlier: list[Step]) -> None:
    """Rules between fields and steps that need no image."""
    p = step.params
    if step.op in ("conv", "transposed") and p["groups"] != 1:
        flat = next((k for k in p["kernel"] if k.weights.ndim != 4), None)
        if flat is not None:
            raise _FieldError("groups", f"applies to 4-D kernels; {flat.name!r} is {flat.weights.ndim}-D")
    if step.op in ("conv", "transposed") and p["combine"] and len(p["kernel"]) < 2:
        raise _FieldError("combine", "needs two or more kernels (a list), whose maps it combines")
    if step.op == "transposed":
        padding = p["padding"]
        if padding == "full" or (isinstance(padding, tuple) and padding[0::2] != padding[1::2]):
            raise _FieldError("padding", "transposed takes same, valid, N or [rows, cols] "
                                         "(cropped from both sides)")
        if any(op >= max(s, d) for op, s, d in zip(p["output_padding"], p["stride"], p["dilation"])):
            raise _FieldError("output_padding", f"must be smaller than the stride {list(p['stride'])} or the "
                                                f"dilation {list(p['dilation'])}, got {list(p['output_padding'])}")
        if padding == "same" and any(p["output_padding"]):
            raise _FieldError("output_padding", "does not apply to padding same (the output is input x stride)")
    if step.op == "pool":
        from convcli.explain import pool_padding_rule

        other = {"max": "count_include_pad", "avg": "dilation"}[p["mode"]]
        if other in step.given:
            raise _FieldError(other, f"does not apply to mode {p['mode']}")
        try:
            pool_padding_rule(p["padding"], p["size"], p["ceil_mode"])
        except ParameterError as exc:
            raise _FieldError("padding", str(exc)) from None
    if step.op == "unpool":
        pool = next((s for s in earlier if s.name == p["indices"]), None)
        if pool is None or pool.op != "pool" or pool.params["mode"] != "max":
            raise _FieldError("indices", f"names no earlier max pool step: {p['indices']!r} (give the pool "
                                         f"step a name: and mode: max)")
    if step.op == "normalise":
        fixed = [key for key in ("mean", "std") if p[key] is not None]
        if fixed and p["mode"] != "standard":
            raise _FieldError(fixed[0], "applies to mode standard")
        if len(fixed) == 1:
            raise _FieldError(fixed[0], f"needs {'std' if fixed[0] == 'mean' else 'mean'} too")


def _parse_output(section: Any, source: str) -> dict[str, Any]:
    """The ``output`` section as option values (``map`` -> ``map_mode``), checked together."""
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ParameterError(f"{source}: output: must be a mapping of output options, got {_short(section)}")
    values = {}
    for key, value in section.items():
        if key not in OUTPUT_FIELDS:
            raise ParameterError(f"{source}: output: {not_one_of('option', key, OUTPUT_FIELDS)}")
        option, parse = OUTPUT_FIELDS[key]
        try:
            values[option] = parse(value)
        except ParameterError as exc:
            raise ParameterError(f"{source}: output: {key}: {exc}") from None
    try:
        output_settings(values)
    except ParameterError as exc:
        raise ParameterError(f"{source}: output: {exc}") from None
    return values


def output_settings(values: Mapping[str, Any]):
    """``images.OutputSettings`` from output option values (``map_mode``, ``montage_grid``, ...)."""
    from convcli.io.images import OutputSettings
    from convcli.render.montage import parse_grid

    values = dict(values)
    grid = values.pop("montage_grid", None)
    return OutputSettings(map=values.pop("map_mode", "auto"), grid=None if grid is None else parse_grid(grid),
                          **values)


# --------------------------------------------------------------------------------------------
# Running


class Flags(abc.Sequence):
    """One boolean per map, held in a numpy array (a map count can be in the millions: no
    Python object per map). Equal to any sequence of the same booleans.

    >>> flags = Flags([True, False, True])
    >>> flags == (True, False, True), flags[[2, 0]] == [True, True], bool(flags[1])
    (True, True, False)
    """

    def __init__(self, values: Any):
        import numpy as np

        self.array = np.array(values, dtype=bool).reshape(-1)

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index):
        return bool(self.array[index]) if isinstance(index, int) else Flags(self.array[index])

    def __array__(self, dtype=None, copy=None):
        return self.array if dtype is None else self.array.astype(dtype)

    def __eq__(self, other: Any) -> bool:
        import numpy as np

        if isinstance(other, str) or not isinstance(other, (abc.Sequence, np.ndarray)):
            return False
        if len(other) != len(self):
            return False
        return bool(np.array_equal(self.array, np.asarray(other, dtype=bool)))

    __hash__ = None

    def __repr__(self) -> str:
        return f"Flags({self.array.tolist() if len(self) <= 8 else f'<{len(self)} maps>'})"


class Labels(abc.Sequence):
    """Montage labels, made on demand: the kernel as written (``sobel:dir=y``, after the
    pipeline step's name if it has one: ``edges: sobel:dir=y``) for a kernel's only map,
    ``spec[i]`` for its i-th, the channel number for an input's maps; ``picked`` holds the
    maps a select step kept. Equal to any sequence of the same strings.

    >>> labels = Labels((("sobel", 2), ("box", 1)))
    >>> list(labels), labels.select([2, 0]) == ("box", "sobel[0]"), Labels.numbers(3)[1]
    (['sobel[0]', 'sobel[1]', 'box'], True, '1')
    """

    def __init__(self, runs: Sequence[tuple[str, int]], picked: Any = None):
        import numpy as np

        self.runs = tuple(runs)
        self.starts = np.cumsum([0] + [count for _, count in self.runs])
        self.picked = None if picked is None else np.asarray(picked, dtype=np.int64).reshape(-1)

    @classmethod
    def numbers(cls, count: int) -> "Labels":
        """``0``, ``1``, ... for ``count`` maps that no kernel named."""
        return cls((("", count),))

    def __len__(self) -> int:
        return int(self.starts[-1]) if self.picked is None else len(self.picked)

    def __getitem__(self, index):
        import numpy as np

        if not isinstance(index, int):
            return [self[i] for i in range(len(self))[index]]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        where = index if self.picked is None else int(self.picked[index])
        run = int(np.searchsorted(self.starts, where, side="right")) - 1
        name, count = self.runs[run]
        offset = where - int(self.starts[run])
        return str(offset) if not name else name if count == 1 else f"{name}[{offset}]"

    def select(self, channels: Sequence[int]) -> "Labels":
        """The labels of the maps ``channels`` picks, in that order."""
        import numpy as np

        where = np.asarray(channels, dtype=np.int64)
        return Labels(self.runs, where if self.picked is None else self.picked[where])

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, str) or not isinstance(other, abc.Sequence) or len(other) != len(self):
            return False
        return all(a == b for a, b in zip(self, other))

    __hash__ = None

    def __repr__(self) -> str:
        return f"Labels({list(self) if len(self) <= 8 else f'<{len(self)} maps>'})"


@dataclass
class Maps:
    """The values between steps: ``data`` (C, H, W), the white level (255, 65535, 1.0; None for
    ``.npy``), which maps are signed (0 on a flat input, for ``--map auto``: ``Flags``), montage
    labels (``Labels``), and the argmax of each named max pool step with the size it pooled
    (for ``unpool``), and the input's path (for ``stats`` reports)."""

    data: Any
    white: Optional[float] = None
    signed: Optional[Flags] = None
    labels: Optional[Labels] = None
    pools: dict = field(default_factory=dict)
    source: str = ""

    @property
    def flags(self) -> Flags:
        import numpy as np

        return self.signed if self.signed is not None else Flags(np.zeros(len(self.data), bool))


def _conv(step: Step, maps: Maps) -> Maps:
    """Convolve with each kernel and stack the maps (as ``conv -k a -k b``)."""
    import numpy as np

    from convcli import limits
    from convcli import engine
    from convcli.render import mapping

    p, transposed = step.params, step.op == "transposed"
    kernels, bias = p["kernel"], p["bias"]
    layout = engine.as_transposed_weight if transposed else engine.as_conv_weight
    layers = [layout(k.weights / k.scale, maps.data.shape[0], p["groups"], copy=False) for k in kernels]
    counts = [w.shape[1] * g if transposed else w.shape[0] for w, g in layers]
    if bias is not None and len(kernels) > 1 and len(bias) not in (1, sum(counts)):
        raise ShapeError(f"bias has {len(bias)} values, the {len(kernels)} kernels give {sum(counts)} "
                         f"channels (give 1 or {sum(counts)})")
    if p["combine"]:
        combined_count(kernels, counts)
    starts = np.cumsum([0] + counts)
    stack, signed = [], []
    for kernel, (weight, groups), count, start in zip(kernels, layers, counts, starts):
        if p["combine"] and stack:  # the next kernel's maps beside the combined ones so far
            limits.check_arrays(f"{step.op} --combine {p['combine']}", held=maps.data.nbytes + stack[0].nbytes,
                                next_kernel_maps=stack[0].shape)
        part = bias if bias is None or len(bias) == 1 or len(kernels) == 1 else bias[start:start + count]
        # the layer's 4-D weight and groups, as laid out above (a 2-D kernel is not copied again)
        if transposed:
            out = engine.conv_transpose2d(maps.data, weight, part, stride=p["stride"],
                                          padding=p["padding"], output_padding=p["output_padding"],
                                          dilation=p["dilation"], groups=groups, flip=p["flip"])
        else:
            out = engine.conv2d(maps.data, weight, part, stride=p["stride"], padding=p["padding"],
                                dilation=p["dilation"], groups=groups, pad_mode=p["pad_mode"],
                                flip=p["flip"])
        if stack and out.shape[1:] != stack[0].shape[1:]:
            sizes = [f"{m.shape[1]}x{m.shape[2]}" for m in (stack[0], out)]
            raise ShapeError(f"kernel {kernels[0].name!r} gives {sizes[0]} maps, {kernel.name!r} gives "
                             f"{sizes[1]}; stacked kernels must give the same output size")
        if kernel.offset:
            out += np.float32(kernel.offset)
        if p["combine"]:
            stack = [combine_maps(stack[0] if stack else None, out, p["combine"])]
        else:
            stack.append(out)
        # the shift of every map: one value, or one per map
        shift = kernel.offset + np.asarray(0.0 if part is None else part, np.float64)
        unshifted = np.broadcast_to(shift == 0, count)
        if kernel.weights.ndim == 2:  # one kernel for every channel: its sum says it for all
            zero_sum = mapping.signed_maps(weight[:1], 1, transposed=transposed) & unshifted
        else:
            zero_sum = mapping.signed_maps(weight, groups, transposed=transposed, shift=shift)
        signed.append(zero_sum | (_fed_by_signed(maps.flags, groups, count) & unshifted))
    if p["combine"]:
        if p["combine"] == "magnitude":
            np.sqrt(stack[0], out=stack[0])
        # magnitude is never negative (--map auto clips it); a sum or max of maps that are 0
        # on a flat input is 0 there too
        flags = np.zeros(counts[0], bool) if p["combine"] == "magnitude" else np.logical_and.reduce(signed)
        name = f"{p['combine']}({', '.join(kernel.name for kernel in kernels)})"
        return replace(maps, data=stack[0], signed=Flags(flags), labels=Labels([(name, counts[0])]))
    if len(stack) > 1:
        limits.check_arrays(f"{step.op} with {len(stack)} kernels", held=sum(a.nbytes for a in stack),
                            stacked_maps=(sum(counts), *stack[0].shape[1:]))
    data = stack[0] if len(stack) == 1 else np.concatenate(stack)
    named = f"{step.name}: " if step.name else ""  # a named pipeline step: "features: sobel_x"
    labels = Labels([(named + (kernel.spec or kernel.name), count) for kernel, count in zip(kernels, counts)])
    return replace(maps, data=data, signed=Flags(np.concatenate(signed)), labels=labels)


def combined_count(kernels: Sequence[Any], counts: Sequence[int]) -> int:
    """The maps ``--combine`` makes: as many as each kernel gives, which must be the same.

    >>> combined_count([None, None], [3, 3])
    3
    """
    if len(set(counts)) > 1:
        odd, other = next((k, n) for k, n in zip(kernels, counts) if n != counts[0])
        raise ShapeError(f"combine needs kernels giving the same number of maps: {kernels[0].name!r} "
                         f"gives {counts[0]}, {odd.name!r} gives {other}")
    return counts[0]


def combine_maps(combined: Any, maps: Any, mode: str) -> Any:
    """Fold one kernel's float32 ``maps`` into the ``combined`` maps of the kernels before it
    (None for the first kernel), in place: ``magnitude`` sums squares (the caller takes the
    root at the end), ``sum`` adds, ``max`` keeps the larger value (NaN propagates).

    >>> import numpy as np
    >>> gx, gy = np.array([3.0, -1.0], np.float32), np.array([-4.0, 2.0], np.float32)
    >>> np.sqrt(combine_maps(combine_maps(None, gx.copy(), "magnitude"), gy.copy(), "magnitude")).tolist()
    [5.0, 2.2360680103302]
    >>> combine_maps(combine_maps(None, gx.copy(), "max"), gy.copy(), "max").tolist()
    [3.0, 2.0]
    """
    import numpy as np

    if mode == "magnitude":
        np.square(maps, out=maps)
    if combined is None:
        return maps
    if mode == "max":
        return np.maximum(combined, maps, out=combined)
    combined += maps
    return combined


def _fed_by_signed(flags: Sequence[bool], groups: int, count: int):
    """Per output map of a grouped layer: are all the input maps it reads signed?

    A linear map of inputs that are 0 on a flat image is 0 there too (before bias and offset).

    >>> _fed_by_signed([True, True, False], 3, 6).tolist()
    [True, True, True, True, False, False]
    """
    import numpy as np

    per_group = np.asarray(flags, bool).reshape(groups, -1).all(axis=1)
    return np.repeat(per_group, count // groups)


def _pool(step: Step, maps: Maps) -> Maps:
    from convcli import engine

    p = step.params
    if p["mode"] == "avg":
        out = engine.avg_pool2d(maps.data, p["size"], p["stride"], p["padding"], p["ceil_mode"],
                                p["count_include_pad"])
        return replace(maps, data=out)
    if not step.name:  # nothing can refer to its indices (unpool names the pool it undoes)
        return replace(maps, data=engine.max_pool2d(maps.data, p["size"], p["stride"], p["padding"], p["dilation"],
                                                    p["ceil_mode"]))
    out, where = engine.max_pool2d(maps.data, p["size"], p["stride"], p["padding"], p["dilation"],
                                   p["ceil_mode"], return_indices=True)
    return replace(maps, data=out, pools={**maps.pools, step.name: (where, maps.data.shape[1:])})


def _global_pool(step: Step, maps: Maps) -> Maps:
    from convcli import engine

    return replace(maps, data=engine.global_pool(maps.data, step.params["mode"])[:, None, None])


def _unpool(step: Step, maps: Maps) -> Maps:
    from convcli import engine

    where, size = maps.pools[step.params["indices"]]
    return replace(maps, data=engine.max_unpool2d(maps.data, where, size))


def _activation(step: Step, maps: Maps) -> Maps:
    """relu, leaky_relu (slope), abs, sigmoid, tanh: each value on its own, as PyTorch's.

    Computed in place on one float32 copy of the input (leaky_relu also needs a mask of the
    negative values).
    """
    import numpy as np

    from convcli import limits

    leaky = step.op == "leaky_relu"
    limits.check_arrays(step.op, itemsize=5 if leaky else 4, held=maps.data.nbytes,
                        **{"output_and_mask" if leaky else "output": maps.data.shape})
    y = np.array(maps.data, dtype=np.float32)
    if step.op == "relu":
        np.maximum(y, 0, out=y)
    elif leaky:
        np.multiply(y, np.float32(step.params["slope"]), out=y, where=y < 0)
    elif step.op == "abs":
        np.abs(y, out=y)
    elif step.op == "sigmoid":  # = 1 / (1 + exp(-x)), without overflow
        y *= 0.5
        np.tanh(y, out=y)
        y *= 0.5
        y += 0.5
    else:
        np.tanh(y, out=y)
    keeps_sign = step.op in ("leaky_relu", "tanh")
    return replace(maps, data=y, signed=maps.flags if keeps_sign else None)


def _normalise(step: Step, maps: Maps) -> Maps:
    """Per channel: minmax to 0..1, or standard ((x - mean) / std). The result is in units of
    white = 1 (so 1.0 is written as white).

    Fixed ``mean``/``std`` apply to the values divided by the input's white level, as
    torchvision's ``Normalize`` after ``ToTensor``. Computed in float64, in place on one copy.
    """
    import numpy as np

    from convcli import limits

    shape = "x".join(str(n) for n in maps.data.shape)
    # the float64 copy, a float64 temporary of the standard deviation, the float32 result
    limits.check_memory(20 * math.prod(maps.data.shape), f"normalise: float64 work arrays and "
                                                         f"the output {shape} (20 bytes per value)",
                        maps.data.nbytes)
    p, x = step.params, np.array(maps.data, dtype=np.float64)
    channels = len(x)
    if p["mode"] == "minmax":
        low, high = x.min(axis=(1, 2), keepdims=True), x.max(axis=(1, 2), keepdims=True)
        x -= low
        x /= np.where(high > low, high - low, 1.0)
        return replace(maps, data=x.astype(np.float32), white=1.0, signed=None)
    if p["mean"] is None:
        mean, std = x.mean(axis=(1, 2), keepdims=True), x.std(axis=(1, 2), keepdims=True)
        std = np.where(std > 0, std, 1.0)
    else:
        for key in ("mean", "std"):
            if len(p[key]) not in (1, channels):
                raise ShapeError(f"{key} has {len(p[key])} values, the input has {channels} channels")
        x /= maps.white or 1.0
        mean, std = (np.asarray(p[key], np.float64)[:, None, None] for key in ("mean", "std"))
    x -= mean
    x /= std
    signed = Flags(np.ones(channels, bool))
    return replace(maps, data=x.astype(np.float32), white=1.0, signed=signed)


def _gray(step: Step, maps: Maps) -> Maps:
    import numpy as np

    from convcli import engine

    signed = Flags([np.all(maps.flags.array)])
    return replace(maps, data=engine.luma(maps.data), signed=signed, labels=None)


def _select(step: Step, maps: Maps) -> Maps:
    from convcli import limits

    channels, count = step.params["channels"], len(maps.data)
    if max(channels) >= count:
        raise ShapeError(f"channel {max(channels)} does not exist: the input has {count} "
                         f"(0 to {count - 1})")
    # counted as float32: the next step or the writer makes that of 8-bit maps anyway
    limits.check_arrays("select", held=maps.data.nbytes, output=(len(channels), *maps.data.shape[1:]))
    labels = maps.labels or Labels.numbers(count)
    return replace(maps, data=maps.data[list(channels)], signed=maps.flags[list(channels)],
                   labels=labels.select(channels))


def _stats(step: Step, maps: Maps) -> Maps:
    """Report each channel's statistics (as ``convcli stats``) on stderr, one tab-separated
    block per input and step written at once; the maps go on unchanged."""
    import click

    from convcli.render.stats import channel_stats, header, text_rows

    percentiles = step.params["percentiles"]
    lines = [header(percentiles, ("input", "step", "channel"))]
    lines += text_rows([maps.source or "-", str(step.number)], channel_stats(maps.data, percentiles))
    click.echo("\n".join("\t".join(line) for line in lines), err=True)
    return maps


_APPLY: dict[str, Callable[[Step, Maps], Maps]] = {
    "conv": _conv, "transposed": _conv, "pool": _pool, "global_pool": _global_pool, "unpool": _unpool,
    **{name: _activation for name in ACTIVATIONS}, "normalise": _normalise, "gray": _gray, "select": _select,
    "stats": _stats,
}


@dataclass(frozen=True)
class Job:
    """The work on one file, for ``conv``, ``pool`` and ``run``: read, run the steps, write.

    Picklable (a module-level class holding checked steps and settings), so ``batch.Batch`` can
    send it to worker processes. ``read`` holds the ``images.ReadOptions`` (``--max-pixels``,
    ``--frame``); ``alpha`` is ``keep`` (carried through when the size is unchanged), ``drop``
    or ``channel``; ``format`` names the output format for ``-o -``;
    ``overwrite`` allows replacing an existing output; ``indices`` also writes the argmax of the
    max pool step named ``pool`` to that ``.npy`` file; ``before`` is called ahead of each step.
    """

    pipeline: Pipeline
    settings: Any = None
    alpha: str = "keep"
    format: Optional[str] = None
    overwrite: bool = False
    indices: Optional[str] = None
    before: Optional[Callable[[Step, Maps], None]] = None
    read: Any = None

    def __call__(self, source: str, target: Optional[str]) -> dict:
        """Process ``source`` into ``target``; the input and output shapes, as (H, W, C)."""
        return self.process(source, target)[1]

    def process(self, source: str, target: Optional[str]) -> tuple[Maps, dict]:
        """As ``__call__``, and also the final maps; ``target`` None writes nothing."""
        import numpy as np

        from convcli.io import images

        picture = images.read_input(source, alpha_as_channel=self.alpha == "channel", options=self.read)
        if target is not None:
            self._check_planned(target, picture)
        with np.errstate(over="ignore", invalid="ignore"):  # float32 overflows to inf, NaN propagates (PyTorch)
            maps = self.pipeline.run(Maps(picture.data, picture.white, source=source), self.before)
            if target is not None:
                self._write(target, picture, maps)
        shapes = {"input_shape": _hwc(picture.data.shape), "output_shape": _hwc(maps.data.shape)}
        return maps, shapes

    def _check_planned(self, target: str, picture) -> None:
        """Before the steps run: the output shape ``trace`` plans must suit the output's format
        (a 20000-pixel-wide WebP is refused now, not after the work)."""
        from convcli.io import images

        try:
            planned = trace(self.pipeline, tuple(_hwc(picture.data.shape)))
        except ConvcliError:  # the steps themselves will say what is wrong
            return
        if planned.error is None and planned.output is not None:
            images.check_output_shape(target, self.settings, planned.output, picture.white, self.format)

    def _write(self, target: str, picture, maps: Maps) -> None:
        import numpy as np

        from convcli.io import images
        from convcli.io.atomic import atomic_write, check_target, folder_of, make_folder
        from convcli.io.paths import STDIO

        if target != STDIO:  # checked before its folder is made: a refused output leaves nothing
            for path in output_files(target, self.settings) + ([self.indices] if self.indices else []):
                check_target(path, overwrite=self.overwrite)
            make_folder(folder_of(target))
        carried = picture.alpha if self.alpha == "keep" and maps.data.shape[1:] == picture.data.shape[1:] else None
        images.write_output(target, maps.data, maps.white, carried, self.settings, in_place=True, signed=maps.flags,
                            labels=maps.labels, format=self.format)
        if self.indices is not None:
            where = maps.pools["pool"][0]
            atomic_write(self.indices, lambda f: np.save(f, where.transpose(1, 2, 0)))


def output_files(target: str, settings) -> list[str]:
    """The files writing to ``target`` may create: ``target``, or with ``--split`` the
    ``stem_NN.ext`` files already there (their count depends on the image).

    >>> output_files("out/a.png", None)
    ['out/a.png']
    """
    if settings is None or not settings.split:
        return [target]
    stem, ext = os.path.splitext(target)
    pattern = re.compile(re.escape(os.path.basename(stem)) + r"_\d{2,}" + re.escape(ext) + r"\Z")
    if is_url(target):
        from convcli.io import urls
        from convcli.io.atomic import folder_of

        folder = folder_of(target)
        return sorted(f"{folder}/{name}" for name in urls.names_in(folder) if pattern.match(name))
    folder = os.path.dirname(target) or "."
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(os.path.dirname(target), f) for f in os.listdir(folder) if pattern.match(f))


def _hwc(shape: Sequence[int]) -> list[int]:
    return [int(shape[1]), int(shape[2]), int(shape[0])]


# --------------------------------------------------------------------------------------------
# Tracing with ``convcli explain``


def trace(pipeline: Pipeline, shape: tuple[int, int, int], source: str = ""):
    """The ``explain.Trace`` of ``pipeline`` from an (H, W, C) input, using the real kernels.

    Each step becomes ``explain`` steps (``step_from_dict``); a step that cannot run on the
    shape it gets (channels that do not fit) ends the trace with an error row.

    >>> t = trace(parse_pipeline(["gray", {"op": "conv", "kernel": ["sobel_x", "sobel_y"]}, "relu",
    ...                           {"op": "pool", "size": 2}]), (32, 32, 3))
    >>> [(row.text, row.output) for row in t.rows]     # doctest: +NORMALIZE_WHITESPACE
    [('gray: channels 1', (32, 32, 1)), ('conv: conv 2 k3 same nobias', (32, 32, 2)),
     ('relu: relu', (32, 32, 2)), ('pool: maxpool k2 s2 valid', (16, 16, 2))]
    """
    from convcli import explain

    steps, pooled = [], {}
    result = explain.trace(shape, [], source)
    for step in pipeline.steps:
        current = result.output
        try:
            spec = _explain_spec(step, current, pooled)
        except ConvcliError as exc:
            error = explain.Row(number=step.number, label=str(step.number), text=step.name or step.op,
                                kind="channels", input=current, error=str(exc))
            return replace(result, rows=result.rows + (error,))
        traced = explain.step_from_dict(spec, step.number)
        steps.append(replace(traced, text=f"{step.name or step.op}: {explain.step_text(traced)}"))
        if step.op in ("conv", "transposed") and step.params["combine"]:  # one map per kernel's map
            maps = spec["filters"] // len(step.params["kernel"])
            combined = explain.step_from_dict({"op": "channels", "filters": maps}, step.number)
            steps.append(replace(combined, text=f"{step.name or step.op}: combine {step.params['combine']}"))
        result = explain.trace(shape, steps, source)
        if result.error:
            return result
        if step.op == "pool" and step.name:
            pooled[step.name] = (current[:2], step)
    return result


def _explain_spec(step: Step, shape: tuple[int, int, int], pooled: dict) -> dict:
    """The ``explain.step_from_dict`` mapping of one step, given the (H, W, C) it receives."""
    p, channels = step.params, shape[2]
    from convcli import geometry
    from convcli import engine

    if step.op in ("conv", "transposed"):
        transposed = step.op == "transposed"
        layout = engine.as_transposed_weight if transposed else engine.as_conv_weight
        layers = [layout(k.weights, channels, p["groups"], copy=False) for k in p["kernel"]]
        shapes = {(w.shape[2:], g) for w, g in layers}
        if len(shapes) > 1:
            raise ParameterError("explain traces stacked kernels of one size and channel layout; these "
                                 "differ (trace each kernel on its own)")
        filters = sum(w.shape[1] * g if transposed else w.shape[0] for w, g in layers)
        spec = {"op": step.op, "filters": filters, "kernel": list(layers[0][0].shape[2:]), "groups": layers[0][1],
                "stride": list(p["stride"]), "padding": _padding_value(p["padding"]),
                "dilation": list(p["dilation"]), "bias": p["bias"] is not None}
        if transposed:
            spec["output_padding"] = list(p["output_padding"])
        else:
            spec["pad_mode"] = p["pad_mode"]
        return spec
    if step.op == "pool":
        spec = {"op": f"{p['mode']}pool", "kernel": list(p["size"]), "stride": list(p["stride"] or p["size"]),
                "padding": _padding_value(p["padding"]), "ceil_mode": p["ceil_mode"]}
        if p["mode"] == "max":
            spec["dilation"] = list(p["dilation"])
        return spec
    if step.op == "global_pool":
        return {"op": f"global{p['mode']}pool"}
    if step.op == "unpool":
        in_hw, pool = pooled[p["indices"]]
        window = pool.params
        stride = window["stride"] or window["size"]
        pads = geometry.resolve_padding(window["padding"], in_hw, window["size"], stride, window["dilation"])
        return {"op": "unpool", "kernel": list(window["size"]), "stride": list(stride),
                "padding": [pads[0], pads[2]], "output_size": list(in_hw)}
    if step.op in ACTIVATIONS:
        return {"op": ACTIVATIONS[step.op]}
    if step.op == "normalise":
        return {"op": "normalise"}
    if step.op == "stats":  # reports; the maps go on as they are
        return {"op": "channels", "filters": channels}
    if step.op == "gray":
        if channels not in (1, 3):
            raise ShapeError(f"gray needs 1 or 3 channels, the input has {channels}")
        return {"op": "channels", "filters": 1}
    if max(p["channels"]) >= channels:
        raise ShapeError(f"channel {max(p['channels'])} does not exist: the input has {channels} "
                         f"(0 to {channels - 1})")
    return {"op": "channels", "filters": len(p["channels"])}


def _padding_value(padding):
    return padding if isinstance(padding, str) else list(padding)
