"""ONNX graphs as convcli pipelines: ``convcli run --model``, ``explain --model`` and
``--export-pipeline``.

``read_graph(path)`` reads an ``.onnx`` file (the ``onnx`` package, with shape inference) into a
``ModelGraph``; ``ModelGraph.document(until, save)`` writes the nodes needed for those layers as
a pipeline document (the YAML ``convcli run`` reads), each node a step named after it, reading
the steps it reads by name, its weights referenced as ``FILE:TENSOR`` (initializer names). The
model's input is the step ``model_input``: the image divided by its white level (torchvision's
``ToTensor``), then ``(x - mean) / std`` per channel when given, after ``--bgr``'s reordering.

Nodes and the steps they become:

====================================  ====================================================
Conv                                  ``conv`` (group, dilations, pads, auto_pad VALID and
                                      SAME_UPPER; SAME_LOWER as explicit pads when the
                                      model's sizes are fixed)
ConvTranspose                         ``transposed`` (pads, output_padding, output_shape
                                      when the model's sizes are fixed)
BatchNormalization                    ``batchnorm``
Relu, LeakyRelu, Sigmoid, Tanh        ``relu``, ``leaky_relu``, ``sigmoid``, ``tanh``
Clip, HardSigmoid, HardSwish          ``clip``, ``hardsigmoid``, ``hardswish``
MaxPool, AveragePool                  ``pool`` (ceil_mode, dilations, count_include_pad)
GlobalAveragePool, GlobalMaxPool      ``global_pool``
Add, Concat (channels)                ``add``, ``concat``
Mul by a constant                     ``mul``
Identity, Dropout                     nothing (the step reads what the node reads)
====================================  ====================================================

A node outside that list, or one using a feature convcli does not run, is refused (before any
image is read) if it lies on the way to a layer asked for, naming the node, its op and the
last node convcli can reach.

>>> step_name("/layer1/0/conv1/Conv"), step_name("19"), step_name("image")
('layer1_0_conv1_Conv', 'node_19', 'node_image')
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from convcli.errors import KernelError, ParameterError
from convcli.layers.spec import IMAGE

#: The step that holds the model's input (the image after preprocessing).
MODEL_INPUT = "model_input"
#: Nodes that pass their input on unchanged at inference.
PASS_THROUGH = ("Identity", "Dropout")
_RESERVED = (IMAGE, MODEL_INPUT)


def step_name(text: str) -> str:
    """A pipeline step name for an ONNX node or value name: ``/`` and other signs become ``_``;
    a name starting with a digit, or reserved, gets ``node_`` in front."""
    name = re.sub(r"[^\w-]+", "_", text.strip("/")).strip("_")
    if not name or name[0].isdigit() or name in _RESERVED:
        name = f"node_{name}"
    return name


def model_trace_input(graph: ModelGraph) -> str | None:
    """The ``--input`` of ``explain --model`` when none is given: the model's fixed input
    size as ``HxWxC``, or None.

    >>> model_trace_input(ModelGraph("m.onnx", [], set(), {}, {"x": (1, 3, 224, 224)}, ["x"], []))
    '224x224x3'
    """
    shape = graph.input_shape
    if len(shape) != 4 or not all(isinstance(n, int) and n > 0 for n in shape[1:]):
        return None
    return f"{shape[2]}x{shape[3]}x{shape[1]}"


class _Unsupported(Exception):
    """A node convcli cannot run: the reason."""


@dataclass
class _Node:
    name: str  # the step name
    onnx_name: str
    op: str
    inputs: list
    outputs: list
    attributes: dict


@dataclass
class ModelGraph:
    """An ONNX model's graph, read: its nodes (in the file's order, which is topological),
    initializer names, constants (the arrays of Constant nodes), inferred shapes (value name
    -> tuple, None for unknown dims), the graph's inputs (the first is the image), outputs."""

    path: str
    nodes: list
    initializers: set
    constants: dict
    shapes: dict
    inputs: list
    outputs: list
    _read_constant: Any = field(default=None, repr=False)

    @property
    def input_name(self) -> str:
        """The graph input that the image feeds."""
        return self.inputs[0]

    @property
    def input_shape(self) -> tuple:
        """The model input's (N, C, H, W) as declared (None for a free size)."""
        return self.shapes.get(self.input_name, ())

    @property
    def channels(self) -> int | None:
        """The channels the model's first layers take, if the file fixes them."""
        shape = self.input_shape
        return shape[1] if len(shape) == 4 and isinstance(shape[1], int) else None

    def find(self, name: str) -> _Node:
        """The node named ``name``: by node name, output name or step name."""
        for node in self.nodes:
            if name in (node.onnx_name, node.name) or name in node.outputs:
                return node
        from convcli.layers.values import closest

        known = [n.onnx_name or n.name for n in self.nodes]
        hint = closest(name, known + [n.name for n in self.nodes])
        raise KernelError(
            f"{self.path}: no node or output {name!r}"
            + (f"; did you mean {hint!r}?" if hint else f" (nodes: {_listed(known)})")
        )

    def document(
        self,
        until: str | None = None,
        save: Sequence[str] = (),
        model_ref: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        bgr: bool = False,
        preprocess: bool = True,
    ) -> tuple[dict, list[str]]:
        """The pipeline document that runs the model up to ``until`` (a node or output name;
        default: the node giving the model's first output), and the step names of the layers
        ``save`` names (default: ``until``'s). Weights are ``model_ref:TENSOR`` (default: the
        model's path). Without ``preprocess`` the model reads the image as it is
        (``explain --model``)."""
        last = self.find(until) if until else self._output_node()
        saved = [self.find(name) for name in save] or [last]
        needed = self._needed([last])
        later = next((node for node in saved if node.name not in needed), None)
        if later is not None:
            raise ParameterError(
                f"--save {later.onnx_name!r}: the layer is not on the way to "
                f"{'--until ' + repr(until) if until else 'the output'} (save layers up to it)"
            )
        steps: list[dict] = []
        if bgr:
            steps.append({"op": "select", "channels": [2, 1, 0], "name": "bgr"})
        if preprocess:
            steps.append(
                {
                    "op": "normalise",
                    "mode": "standard",
                    "mean": list(mean or [0.0]),
                    "std": list(std or [1.0]),
                    "name": MODEL_INPUT,
                }
            )
        source = {self.input_name: MODEL_INPUT if preprocess else IMAGE}
        reached = None
        ref = model_ref or self.path
        for node in self.nodes:
            if node.name not in needed:
                continue
            try:
                reads = [source[v] for v in self._data_inputs(node)]
                if node.op in PASS_THROUGH:
                    source[node.outputs[0]] = reads[0]
                    reached = node
                    continue
                spec = _CONVERT[node.op](self, node, ref) if node.op in _CONVERT else None
                if spec is None:
                    raise _Unsupported("convcli does not run this op")
            except _Unsupported as exc:
                last_ok = f"{reached.onnx_name!r}" if reached else "none (the model's input)"
                raise KernelError(
                    f"{self.path}: node {node.onnx_name!r} ({node.op}) cannot run in convcli: "
                    f"{exc}; the last node it can reach is {last_ok}"
                ) from None
            spec = {"op": spec.pop("op"), "name": node.name, **spec}
            previous = steps[-1]["name"] if steps else IMAGE
            if len(reads) > 1:
                spec["inputs"] = reads
            elif reads[0] != previous:
                spec["input"] = reads[0]
            steps.append(spec)
            source[node.outputs[0]] = node.name
            reached = node
        return {"steps": steps}, [source[node.outputs[0]] for node in saved]

    def _output_node(self) -> _Node:
        return next(node for node in self.nodes if self.outputs[0] in node.outputs)

    def _data_inputs(self, node: _Node) -> list:
        """The values a node reads that are maps (not weights or constants); a second model
        input is refused."""
        values = []
        for value in node.inputs:
            if not value or value in self.initializers or value in self.constants:
                continue
            if value in self.inputs and value != self.input_name:
                raise _Unsupported(
                    f"it reads the model's input {value!r} (convcli feeds one image, "
                    f"as {self.input_name!r})"
                )
            values.append(value)
        if not values:
            raise _Unsupported("it reads no maps (only constants)")
        return values

    def _needed(self, targets: Sequence[_Node]) -> set:
        """The step names of the nodes the targets depend on (and the targets)."""
        producer = {value: node for node in self.nodes for value in node.outputs}
        needed, todo = set(), list(targets)
        while todo:
            node = todo.pop()
            if node.name in needed:
                continue
            needed.add(node.name)
            todo.extend(producer[v] for v in node.inputs if v in producer)
        return needed

    def constant(self, value: str):
        """The array of a constant or initializer input (small tensors: Clip bounds, Mul)."""
        if value in self.constants:
            return self.constants[value]
        return self._read_constant(value)


def _listed(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def read_graph(path: str) -> ModelGraph:
    """Read an ONNX model's graph (``onnx.load``, then ``onnx.shape_inference``)."""
    from convcli import limits
    from convcli.io.paths import require_regular_file
    from convcli.models.weights import _reading, _require

    require_regular_file(path, "model file", KernelError)
    if not path.lower().endswith(".onnx"):
        raise KernelError(
            f"{path}: --model takes an ONNX graph (.onnx); PyTorch and Keras weight files "
            f"carry no graph (use -k FILE:TENSOR for their kernels)"
        )
    onnx = _require("onnx", path)
    limits.check_memory(2 * os.path.getsize(path), f"reading {path}")
    with _reading(path, "ONNX"):
        model = onnx.load(path, load_external_data=False)
        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception:  # noqa: BLE001 - the shapes are a help, not a need
            pass
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    shapes = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    inputs = [i.name for i in graph.input if i.name not in initializers]
    if not inputs:
        raise KernelError(f"{path}: the graph takes no input")
    nodes, constants, taken = [], {}, set()
    for index, node in enumerate(graph.node):
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Constant" and "value" in attributes:
            constants[node.output[0]] = onnx.numpy_helper.to_array(attributes["value"])
            continue
        name = step_name(node.name or node.output[0] or f"node{index}")
        while name in taken:
            name = f"{name}_{index}"
        taken.add(name)
        nodes.append(
            _Node(
                name,
                node.name or node.output[0],
                node.op_type,
                list(node.input),
                list(node.output),
                attributes,
            )
        )

    def read_constant(value: str):
        return onnx.numpy_helper.to_array(initializers[value])

    return ModelGraph(
        path,
        nodes,
        set(initializers),
        constants,
        shapes,
        inputs,
        [o.name for o in graph.output],
        read_constant,
    )


# --------------------------------------------------------------------------------------------
# Nodes -> steps. Each converter returns a step mapping (without name and inputs) or raises
# _Unsupported with the reason.


def _ints(node: _Node, key: str, default: Sequence[int]) -> list[int]:
    return [int(v) for v in node.attributes.get(key, default)]


def _auto_pad(node: _Node) -> str:
    value = node.attributes.get("auto_pad", b"NOTSET")
    return value.decode() if isinstance(value, bytes) else str(value)


def _weight(graph: ModelGraph, node: _Node, index: int) -> str:
    value = node.inputs[index] if len(node.inputs) > index else ""
    if value and value not in graph.initializers:
        raise _Unsupported(f"its input {index} ({value!r}) is computed, not stored weights")
    return value


def _window_padding(graph: ModelGraph, node: _Node, kernel, stride, dilation) -> Any:
    """convcli's padding for a Conv or pool node's ``auto_pad`` and ``pads``."""
    mode = _auto_pad(node)
    if mode == "VALID":
        return "valid"
    if mode == "SAME_UPPER":  # the odd pixel at the end: TensorFlow's rule, convcli's 'same'
        return "same"
    if mode == "SAME_LOWER":  # the odd pixel first: explicit pads, for the model's fixed size
        from convcli import geometry

        size = graph.shapes.get(node.inputs[0], ())[2:]
        if len(size) != 2 or not all(isinstance(n, int) for n in size):
            raise _Unsupported("auto_pad SAME_LOWER needs the model's fixed input size")
        pads = [
            geometry.same_padding(n, k, s, d)[::-1]
            for n, k, s, d in zip(size, kernel, stride, dilation)
        ]
        return [pads[0][0], pads[0][1], pads[1][0], pads[1][1]]
    pads = _ints(node, "pads", [0, 0, 0, 0])
    if len(pads) != 4:
        raise _Unsupported(f"pads {pads} are not 2-D")
    return [pads[0], pads[2], pads[1], pads[3]]  # ONNX: begins, then ends


def _spatial(node: _Node, values: list[int], what: str) -> list[int]:
    if len(values) != 2:
        raise _Unsupported(f"{what} {values} are not 2-D (convcli runs 2-D layers)")
    return values


def _layer(graph: ModelGraph, node: _Node, ref: str, op: str) -> tuple[dict, list[int]]:
    """The fields a Conv and a ConvTranspose node share, as a step mapping, and the kernel's
    (rows, columns)."""
    weight = _weight(graph, node, 1)
    shape = tuple(graph.constant(weight).shape)
    kernel = _spatial(node, _ints(node, "kernel_shape", shape[2:]), "kernels")
    spec = {
        "op": op,
        "kernel": f"{ref}:{weight}",
        "stride": _spatial(node, _ints(node, "strides", [1, 1]), "strides"),
        "dilation": _spatial(node, _ints(node, "dilations", [1, 1]), "dilations"),
        "groups": int(node.attributes.get("group", 1)),
    }
    bias = _weight(graph, node, 2)
    if bias:
        spec["bias"] = f"{ref}:{bias}"
    return spec, kernel


def _conv(graph: ModelGraph, node: _Node, ref: str) -> dict:
    spec, kernel = _layer(graph, node, ref, "conv")
    padding = _window_padding(graph, node, kernel, spec["stride"], spec["dilation"])
    return {**spec, "padding": padding}


def _conv_transpose(graph: ModelGraph, node: _Node, ref: str) -> dict:
    spec, kernel = _layer(graph, node, ref, "transposed")
    stride, dilation = spec["stride"], spec["dilation"]
    extra = _spatial(node, _ints(node, "output_padding", [0, 0]), "output paddings")
    mode = _auto_pad(node)
    if "output_shape" in node.attributes or mode in ("SAME_UPPER", "SAME_LOWER"):
        size = graph.shapes.get(node.inputs[0], ())[2:]
        if len(size) != 2 or not all(isinstance(n, int) for n in size):
            raise _Unsupported("output_shape and auto_pad SAME need the model's fixed input size")
        wanted = _ints(node, "output_shape", [n * s for n, s in zip(size, stride)])[-2:]
        begins, ends = [], []
        for n, k, s, d, o, out in zip(size, kernel, stride, dilation, extra, wanted):
            total = s * (n - 1) + o + (k - 1) * d + 1 - out
            first = total // 2 if mode == "SAME_UPPER" else total - total // 2
            begins.append(first)
            ends.append(total - first)
    else:
        pads = _ints(node, "pads", [0, 0, 0, 0])
        begins, ends = pads[:2], pads[2:]
    # convcli crops p from both sides, then output_padding appends at the end
    if any(b < e for b, e in zip(begins, ends)) or min(begins + ends) < 0:
        raise _Unsupported(f"its pads crop more at the end than at the start ({begins}, {ends})")
    output_padding = [o + b - e for o, b, e in zip(extra, begins, ends)]
    return {**spec, "padding": begins, "output_padding": output_padding}


def _batchnorm(graph: ModelGraph, node: _Node, ref: str) -> dict:
    if node.attributes.get("training_mode", 0):
        raise _Unsupported("training mode (convcli runs inference)")
    spec = {"op": "batchnorm", "epsilon": float(node.attributes.get("epsilon", 1e-5))}
    for key, index in (("scale", 1), ("bias", 2), ("mean", 3), ("var", 4)):
        spec[key] = f"{ref}:{_weight(graph, node, index)}"
    return spec


def _scalar(graph: ModelGraph, node: _Node, index: int) -> float | None:
    value = node.inputs[index] if len(node.inputs) > index else ""
    if not value:
        return None
    if value not in graph.constants and value not in graph.initializers:
        raise _Unsupported(f"its input {value!r} is computed, not a constant")
    array = graph.constant(value)
    if array.size != 1:
        raise _Unsupported(f"its input {value!r} is not one number")
    return float(array.reshape(-1)[0])


def _clip(graph: ModelGraph, node: _Node, ref: str) -> dict:
    low = _scalar(graph, node, 1)
    high = _scalar(graph, node, 2)
    low = node.attributes.get("min", low)  # before opset 11, attributes
    high = node.attributes.get("max", high)
    return {"op": "clip", "min": low, "max": high}


def _pool(graph: ModelGraph, node: _Node, ref: str) -> dict:
    if len(node.outputs) > 1 and node.outputs[1]:
        raise _Unsupported("its indices output is used")
    size = _spatial(node, _ints(node, "kernel_shape", []), "kernels")
    stride = _spatial(node, _ints(node, "strides", [1, 1]), "strides")  # ONNX: 1, not the size
    dilation = _spatial(node, _ints(node, "dilations", [1, 1]), "dilations")
    spec = {
        "op": "pool",
        "mode": "max" if node.op == "MaxPool" else "avg",
        "size": size,
        "stride": stride,
        "padding": _window_padding(graph, node, size, stride, dilation),
        "ceil_mode": bool(node.attributes.get("ceil_mode", 0)),
    }
    if node.op == "MaxPool":
        spec["dilation"] = dilation
        return spec
    if dilation != [1, 1]:
        raise _Unsupported("average pooling with dilations")
    counted = bool(node.attributes.get("count_include_pad", 0))  # ONNX's default: not counted
    if counted and spec["padding"] == "same":
        raise _Unsupported(
            "auto_pad SAME with count_include_pad (convcli's same never counts pads)"
        )
    spec["count_include_pad"] = counted
    return spec


def _add(graph: ModelGraph, node: _Node, ref: str) -> dict:
    if any(value in graph.constants or value in graph.initializers for value in node.inputs):
        raise _Unsupported("it adds a constant (convcli adds maps)")
    return {"op": "add"}


def _mul(graph: ModelGraph, node: _Node, ref: str) -> dict:
    fixed = [v for v in node.inputs if v in graph.constants or v in graph.initializers]
    if len(fixed) != 1:
        raise _Unsupported("it multiplies maps by maps (convcli multiplies by a constant)")
    array = graph.constant(fixed[0])
    if array.size > 1 and (array.ndim < 3 or array.shape[-2:] != (1, 1) or array.ndim > 4):
        raise _Unsupported(f"its constant of shape {array.shape} is not one value per channel")
    return {"op": "mul", "value": [float(v) for v in array.reshape(-1)]}


def _concat(graph: ModelGraph, node: _Node, ref: str) -> dict:
    if int(node.attributes.get("axis", 1)) not in (1, -3):
        raise _Unsupported(f"it concatenates on axis {node.attributes.get('axis')}, not channels")
    return {"op": "concat"}


def _simple(op: str, **defaults: Any):
    def convert(graph: ModelGraph, node: _Node, ref: str) -> dict:
        values = {
            key: float(node.attributes.get(onnx_key, default))
            for key, (onnx_key, default) in defaults.items()
        }
        return {"op": op, **values}

    return convert


_CONVERT = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "BatchNormalization": _batchnorm,
    "Relu": _simple("relu"),
    "LeakyRelu": _simple("leaky_relu", slope=("alpha", 0.01)),
    "Sigmoid": _simple("sigmoid"),
    "Tanh": _simple("tanh"),
    "Clip": _clip,
    "HardSigmoid": _simple("hardsigmoid", alpha=("alpha", 0.2), beta=("beta", 0.5)),
    "HardSwish": _simple("hardswish"),
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalAveragePool": lambda graph, node, ref: {"op": "global_pool", "mode": "avg"},
    "GlobalMaxPool": lambda graph, node, ref: {"op": "global_pool", "mode": "max"},
    "Add": _add,
    "Mul": _mul,
    "Concat": _concat,
}
#: The ONNX ops convcli runs.
SUPPORTED_OPS = tuple(_CONVERT) + PASS_THROUGH
