"""Pipeline files: YAML or a mapping -> checked steps, before any image is read.

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
field.

>>> parse_pipeline({"steps": ["gray", {"op": "pool", "size": 0}]}, "p.yaml")
Traceback (most recent call last):
...
convcli.errors.ParameterError: p.yaml: step 2 (pool): size: must be at least 1, got 0
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from convcli.errors import ConvcliError, FieldError, ParameterError
from convcli.io.paths import require_regular_file
from convcli.layers import rules
from convcli.layers.spec import ACTIVATIONS as LAYER_ACTIVATIONS
from convcli.layers.spec import IMAGE, JOINS, RUN_ACTIVATIONS
from convcli.layers.spec import Layer as Step
from convcli.layers.values import (
    COMBINE_MODES,
    PAD_MODES,
    not_one_of,
    one_of,
    parse_count,
    parse_padding,
    parse_pair,
)
from convcli.limits import short_repr as _short
from convcli.pipeline.output import output_settings
from convcli.render.stats import DEFAULT_PERCENTILES

if TYPE_CHECKING:
    from convcli.pipeline.execute import Maps

REQUIRED = object()
POOL_MODES = ("max", "avg")
#: The activations a pipeline runs, and how the explain language writes each.
ACTIVATIONS = {op: LAYER_ACTIVATIONS[op] for op in RUN_ACTIVATIONS}
NORMALISE_MODES = ("minmax", "standard")
TOP_KEYS = ("steps", "output", "description")
_NAME = re.compile(r"[A-Za-z_][\w-]*\Z")


# --------------------------------------------------------------------------------------------
# Field values: each parser takes the YAML value and returns it checked, or raises a
# ParameterError whose message (a FieldError's detail) the caller prefixes with the file, the
# step and the field. Numbers, pairs and paddings are ``layers.values``' normalisers.


def _pair(minimum: int) -> Callable[[Any], tuple[int, int]]:
    """N or [rows, cols] (``values.parse_pair``)."""
    return lambda value: parse_pair(value, "value", minimum)


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
    if isinstance(value, bool) or not (
        isinstance(value, float)
        and math.isfinite(value)
        or isinstance(value, int)
        and abs(value) <= sys.float_info.max
    ):
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
        raise ParameterError(
            f"must be a finite number or a list of them, got {_short(value)}"
        ) from None


def _bias(value: Any) -> tuple[float, ...] | str:
    """Numbers (one or one per channel), or ``FILE:TENSOR`` kept as text (read with the kernels;
    also batchnorm's values)."""
    from convcli.models import split_model_spec

    return value if isinstance(value, str) and split_model_spec(value) else _numbers(value)


def _positive_numbers(value: Any) -> tuple[float, ...]:
    values = _numbers(value)
    if min(values) <= 0:
        raise ParameterError(f"must be greater than 0, got {_short(value)}")
    return values


def _channels(value: Any) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ParameterError("must list at least one channel, got []")
    return tuple(parse_count(v, "channel", 0) for v in values)


def _step_name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ParameterError(
            f"must be a name of letters, digits, _ and - (not starting with a digit), "
            f"got {_short(value)}"
        )
    return value


def _percentiles(value: Any) -> tuple[float, ...]:
    from convcli.render.stats import check_percentiles

    return check_percentiles(_numbers(value))


def _kernel_specs(value: Any) -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) and v.strip() for v in values):
        raise ParameterError(
            f"must be a kernel (a name, a file or an inline kernel) or a list of them, "
            f"got {_short(value)}"
        )
    return tuple(values)


_CONV = {
    "kernel": (_kernel_specs, REQUIRED),
    "stride": (_pair(1), (1, 1)),
    "padding": (parse_padding, "same"),
    "dilation": (_pair(1), (1, 1)),
    "groups": (lambda v: parse_count(v, "groups"), 1),
    "flip": (_flag, False),
    "bias": (_bias, None),
    "combine": (_choice(*COMBINE_MODES), None),
}
#: Each op and its fields: (parser, default). Every step also takes ``name``.
FIELDS: dict[str, dict[str, tuple[Callable, Any]]] = {
    "conv": {**_CONV, "pad_mode": (_choice(*PAD_MODES), "zeros")},
    "transposed": {**_CONV, "output_padding": (_pair(0), (0, 0))},
    "pool": {
        "mode": (_choice(*POOL_MODES), "max"),
        "size": (_pair(1), (2, 2)),
        "stride": (_pair(1), None),
        "padding": (parse_padding, "valid"),
        "dilation": (_pair(1), (1, 1)),
        "ceil_mode": (_flag, False),
        "count_include_pad": (_flag, True),
    },
    "global_pool": {"mode": (_choice(*POOL_MODES), "max")},
    "unpool": {"indices": (_step_name, REQUIRED)},
    **{name: {} for name in ACTIVATIONS},
    "leaky_relu": {"slope": (_number, 0.01)},
    # ONNX Clip (ReLU6 is min 0, max 6); HardSigmoid max(0, min(1, alpha*x + beta))
    "clip": {"min": (_number, None), "max": (_number, None)},
    "hardsigmoid": {"alpha": (_number, 0.2), "beta": (_number, 0.5)},
    "add": {},
    "concat": {},
    "mul": {"value": (_numbers, REQUIRED)},
    # inference: scale * (x - mean) / sqrt(var + epsilon) + bias, per channel
    "batchnorm": {
        "scale": (_bias, (1.0,)),
        "bias": (_bias, (0.0,)),
        "mean": (_bias, REQUIRED),
        "var": (_bias, REQUIRED),
        "epsilon": (_number, 1e-5),
    },
    "normalise": {
        "mode": (_choice(*NORMALISE_MODES), "minmax"),
        "mean": (_numbers, None),
        "std": (_positive_numbers, None),
    },
    "gray": {},
    "select": {"channels": (_channels, REQUIRED)},
    "stats": {"percentiles": (_percentiles, DEFAULT_PERCENTILES)},
}
#: Other spellings of ops (compared after lower-casing and turning ``-`` into ``_``).
ALIASES = {
    "normalize": "normalise",
    "grey": "gray",
    "leakyrelu": "leaky_relu",
    "conv_transpose": "transposed",
    "relu6": "clip",
    "hard_sigmoid": "hardsigmoid",
    "hard_swish": "hardswish",
    "batch_norm": "batchnorm",
    "batchnormalization": "batchnorm",
    "multiply": "mul",
}
#: Every step may also name the step(s) it reads (by default the one before it).
STEP_KEYS = ("op", "name", "input", "inputs")
#: The ``output`` section: its keys (the long option names) and the option each one sets.
#: Names (map, depth, colormap, montage_grid) are checked with the others by OutputSettings.
OUTPUT_FIELDS = {
    "map": ("map_mode", _text),
    "scale": ("scale", _number),
    "offset": ("offset", _number),
    "joint": ("joint", _flag),
    "depth": ("depth", _text),
    "colormap": ("colormap", _text),
    "split": ("split", _flag),
    "montage": ("montage", _flag),
    "montage_grid": ("montage_grid", _text),
    "legend": ("legend", _flag),
    "rgba": ("rgba", _flag),
    "channels_first": ("channels_first", _flag),
}


def make_step(op: str, number: int = 1, name: str | None = None, **params: Any) -> Step:
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

    def run(
        self,
        maps: Maps,
        before: Callable[[Step, Maps], None] | None = None,
        after: Callable[[Step, Maps], None] | None = None,
    ) -> Maps:
        """Apply every step to the maps it reads; ``before(step, maps)`` is called ahead of each
        (``conv --explain``) with the (first) maps it reads, ``after(step, maps)`` with the maps
        it gives (``run --model --save``). The last step's maps are returned; those of other
        steps are let go once no later step reads them.

        Errors name the step when the pipeline came from a file.
        """
        from convcli.pipeline.execute import apply, join

        reads = self.reads()
        last_reader = {number: step.number for step in self.steps for number in reads[step.number]}
        held = {0: maps}
        for step in self.steps:
            try:
                inputs = [held[number] for number in reads[step.number]]
                if before is not None:
                    before(step, inputs[0])
                if step.op in JOINS:
                    names = [self.source_name(number) for number in reads[step.number]]
                    result = join(step, inputs, names)
                else:
                    result = apply(step, inputs[0])
                if after is not None:
                    after(step, result)
            except ConvcliError as exc:
                if not self.source:
                    raise
                raise type(exc)(f"{step.label}: {exc}") from None
            del inputs
            for number in set(reads[step.number]):
                if last_reader[number] == step.number:
                    del held[number]
            if step.number in last_reader or step is self.steps[-1]:
                held[step.number] = result
            del result  # maps no step reads (a branch that goes nowhere) go now
        return held[self.steps[-1].number]

    def trace(self, shape: tuple[int, int, int], source: str = ""):
        """The ``explain.Trace`` of these layers from an (H, W, C) input (``explain.trace``
        with each row named by its step), using the real kernels.

        >>> t = parse_pipeline(["gray", {"op": "conv", "kernel": ["sobel_x", "sobel_y"]}, "relu",
        ...                     {"op": "pool", "size": 2}]).trace((32, 32, 3))
        >>> [(row.text, row.output) for row in t.rows]     # doctest: +NORMALIZE_WHITESPACE
        [('gray: channels 1', (32, 32, 1)), ('conv: conv 2 k3 same nobias', (32, 32, 2)),
         ('relu: relu', (32, 32, 2)), ('pool: maxpool k2 s2 valid', (16, 16, 2))]
        >>> block = parse_pipeline([{"op": "conv", "kernel": "box:size=5", "name": "blur"},
        ...                         {"op": "concat", "inputs": ["image", "blur"]}])
        >>> [(row.output, row.receptive_field[0].size) for row in block.trace((8, 8, 1)).rows]
        [((8, 8, 1), 5), ((8, 8, 2), 5)]
        """
        from convcli.explain.trace import trace

        return trace(shape, self.steps, source, named=True)

    def reads(self) -> dict[int, tuple[int, ...]]:
        """Per step number, the numbers of the steps it reads (0: the input).

        >>> Pipeline((Step("gray", {}, 2), Step("add", {}, 3, sources=(0, 2)))).reads()
        {2: (0,), 3: (0, 2)}
        """
        previous = [0] + [step.number for step in self.steps]
        return {step.number: step.reads(before) for step, before in zip(self.steps, previous)}

    def source_name(self, number: int) -> str:
        """How messages name the maps of step ``number`` (0: the input).

        >>> Pipeline((Step("relu", {}, 1, "act"), Step("abs", {}, 2))).source_name(2)
        'step 2'
        """
        step = next((step for step in self.steps if step.number == number), None)
        return IMAGE if step is None else step.name or f"step {number}"


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


def parse_pipeline(
    document: Any, source: str = "pipeline", kernel_path: Sequence[str] = (), folder: str = ""
) -> Pipeline:
    """Check a loaded pipeline document (see the module docstring); resolve its kernels.

    >>> parse_pipeline({"steps": [{"op": "pool", "kernel": 3}]}, "p.yaml")     # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    convcli.errors.ParameterError: p.yaml: step 1 (pool): field 'kernel' is not one of mode, ...
    """
    if isinstance(document, list):
        document = {"steps": document}
    if not isinstance(document, dict):
        raise ParameterError(
            f"{source}: a pipeline is a list of steps, or a mapping with 'steps' "
            f"(and 'output', 'description'); got {_short(document)}"
        )
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
    return Pipeline(
        tuple(steps), _parse_output(document.get("output"), source), source, description
    )


def _parse_step(
    spec: Any,
    number: int,
    earlier: list[Step],
    source: str,
    kernel_path: Sequence[str],
    folder: str,
) -> Step:
    if isinstance(spec, str):
        spec = {"op": spec}
    if not isinstance(spec, dict) or "op" not in spec:
        raise ParameterError(
            f"{source}: step {number}: expected an op name or a mapping with 'op', "
            f"got {_short(spec)}"
        )
    word = str(spec["op"]).strip().lower().replace("-", "_")
    op = ALIASES.get(word, word)
    if op not in FIELDS:
        raise ParameterError(f"{source}: step {number}: {not_one_of('op', spec['op'], FIELDS)}")
    where = f"{source}: step {number} ({op})"
    fields = FIELDS[op]
    for key in spec:
        if key not in fields and key not in STEP_KEYS:
            known = list(fields) + list(STEP_KEYS[1:])
            raise ParameterError(f"{where}: {not_one_of('field', key, known)}")
    params = {}
    for key, (parse, default) in fields.items():
        if key in spec:
            try:
                params[key] = parse(spec[key])
            except ParameterError as exc:
                detail = exc.detail if isinstance(exc, FieldError) else exc
                raise ParameterError(f"{where}: {key}: {detail}") from None
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
        if name == IMAGE:
            raise ParameterError(f"{where}: name: {IMAGE!r} names the pipeline's input")
        twin = next((s for s in earlier if s.name == name), None)
        if twin is not None:
            raise ParameterError(f"{where}: name: {name!r} already names step {twin.number}")
    sources = _sources(spec, op, earlier, where)
    if op in ("conv", "transposed"):
        params["kernel"] = tuple(
            _resolve(text, where, kernel_path, folder) for text in params["kernel"]
        )
    for key, value in params.items():
        if key in ("bias", "scale", "mean", "var") and isinstance(value, str):
            params[key] = _model_values(value, where, key, folder)
    given = frozenset(k for k in spec if k not in ("op", "input", "inputs"))
    step = Step(op, params, number, name, given, sources)
    try:
        _check_rules(step, earlier)
    except _FieldError as exc:
        raise ParameterError(f"{where}: {exc.field}: {exc.message}") from None
    return step


def _beside(text: str, folder: str) -> str:
    """A kernel or model file named relative to the pipeline as a path from here."""
    from convcli.kernels.library import SUFFIXES
    from convcli.models import is_model_file, split_model_spec

    spec = text.strip()
    is_file = spec.lower().endswith(SUFFIXES) or is_model_file(spec) or split_model_spec(spec)
    return os.path.join(folder, spec) if is_file and not os.path.isabs(spec) else spec


def _model_values(text: str, where: str, key: str, folder: str) -> tuple[float, ...]:
    """``bias: FILE:TENSOR`` (and batchnorm's ``scale``, ``mean``, ``var``), the file relative
    to the pipeline."""
    from convcli.models.weights import read_bias

    try:
        return read_bias(_beside(text, folder))
    except ConvcliError as exc:
        raise type(exc)(f"{where}: {key}: {exc}") from None


def _sources(spec: dict, op: str, earlier: list[Step], where: str) -> tuple[int, ...]:
    """The numbers of the steps named by ``input: NAME`` or ``inputs: [A, B]`` (0 for
    ``image``); empty when neither is given (the step reads the one before it)."""
    given = [key for key in ("input", "inputs") if key in spec]
    if len(given) == 2:
        raise ParameterError(f"{where}: inputs: give input (one step) or inputs (a list), not both")
    if not given:
        if op in JOINS:
            raise ParameterError(
                f"{where}: inputs: required: the 2 or more earlier steps (or {IMAGE}) it joins"
            )
        return ()
    key, value = given[0], spec[given[0]]
    if key == "inputs" and (not isinstance(value, list) or not value):
        raise ParameterError(f"{where}: inputs: must be a list of step names, got {_short(value)}")
    numbers = []
    for text in value if key == "inputs" else [value]:
        try:
            name = _step_name(text)
        except ParameterError as exc:
            raise ParameterError(f"{where}: {key}: {exc}") from None
        source = next((s for s in earlier if s.name == name), None)
        if name != IMAGE and source is None:
            named = [s.name for s in earlier if s.name] + [IMAGE]
            raise ParameterError(
                f"{where}: {key}: names no earlier step: {name!r} (steps read by name: "
                f"{', '.join(named)})"
            )
        numbers.append(0 if source is None else source.number)
    if op in JOINS and len(numbers) < 2:
        raise ParameterError(f"{where}: {key}: {op} reads 2 or more steps, got {len(numbers)}")
    if op not in JOINS and len(numbers) > 1:
        raise ParameterError(f"{where}: {key}: {op} reads one step, got {len(numbers)}")
    return tuple(numbers)


def ancestors(step: Step, steps: Sequence[Step]) -> set[int]:
    """The numbers of every step whose maps reach ``step`` (0: the input), ``steps`` being the
    pipeline's steps before it.

    >>> chain = [Step("relu", {}, 1), Step("abs", {}, 2, sources=(0,))]
    >>> sorted(ancestors(Step("add", {}, 3, sources=(1, 2)), chain))
    [0, 1, 2]
    """
    seen, todo = set(), list(step.reads(step.number - 1))
    while todo:
        number = todo.pop()
        if number not in seen:
            seen.add(number)
            if number:
                todo.extend(steps[number - 1].reads(number - 1))
    return seen


def _resolve(text: str, where: str, kernel_path: Sequence[str], folder: str):
    from convcli.kernels.library import resolve_kernel

    spec = _beside(text, folder)
    try:
        kernel = resolve_kernel(spec, kernel_path)
    except ConvcliError as exc:
        raise type(exc)(f"{where}: kernel: {exc}") from None
    return replace(
        kernel, spec=kernel.spec and text.strip()
    )  # as written, not joined to the folder


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
            raise _FieldError(
                "groups", f"applies to 4-D kernels; {flat.name!r} is {flat.weights.ndim}-D"
            )
    if step.op in ("conv", "transposed") and p["combine"] and len(p["kernel"]) < 2:
        raise _FieldError("combine", "needs two or more kernels (a list), whose maps it combines")
    if step.op == "pool":
        other = {"max": "count_include_pad", "avg": "dilation"}[p["mode"]]
        if other in step.given:
            raise _FieldError(other, f"does not apply to mode {p['mode']}")
    try:
        rules.check(step)
    except rules.RuleError as exc:
        raise _FieldError(exc.parameter, exc.detail) from None
    if step.op == "unpool":
        pool = next((s for s in earlier if s.name == p["indices"]), None)
        if pool is None or pool.op != "pool" or pool.params["mode"] != "max":
            raise _FieldError(
                "indices",
                f"names no earlier max pool step: {p['indices']!r} (give the pool "
                f"step a name: and mode: max)",
            )
        if pool.number not in ancestors(step, earlier):
            raise _FieldError(
                "indices", f"pool step {p['indices']!r} is not on the path to this step"
            )
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
        raise ParameterError(
            f"{source}: output: must be a mapping of output options, got {_short(section)}"
        )
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
        output_settings(**values)
    except ParameterError as exc:
        raise ParameterError(f"{source}: output: {exc}", names=exc.names) from None
    return values
