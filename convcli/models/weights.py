"""Tensors of model files as convcli kernels and biases: ``-k FILE:TENSOR``, ``--bias FILE:TENSOR``.

Formats (the suffix decides):

- ``.safetensors``: the ``safetensors`` package's numpy API (no PyTorch needed);
- ``.pt``/``.pth``/``.ckpt``: PyTorch state dicts, ``torch.load(..., weights_only=True)`` (never
  unpickling code), also nested as ``{"state_dict": ...}`` or ``{"model": ...}``;
- ``.onnx``: the graph's initializers (the ``onnx`` package);
- ``.keras`` (a zip holding ``model.weights.h5``) and ``.h5``: Keras weights, read with h5py;
- ``.npz``: numpy archives, ``allow_pickle=False``.

A 4-D tensor of a PyTorch, ONNX, safetensors or npz file is used as stored: ``(C_out,
C_in/groups, kh, kw)``, or ``(C_in, C_out/groups, kh, kw)`` with ``--transpose`` (PyTorch's two
layouts, which convcli's 4-D kernels follow). Keras kernels are converted: ``Conv2D`` ``(kh, kw,
C_in, C_out)`` and ``Conv2DTranspose`` ``(kh, kw, C_out, C_in)`` both by ``transpose(3, 2, 0,
1)``; ``DepthwiseConv2D`` ``(kh, kw, C, multiplier)`` becomes ``(C * multiplier, 1, kh, kw)``, to
run with ``--groups C``. BF16 and FP16 are widened to float32.

Shapes come from the file's header or index and are checked against ``convcli.limits`` before
any data is read. Every problem (missing package, unknown tensor, malformed file) is one
``KernelError`` line. The libraries are imported only when a file of their format is read.

>>> keras_shape((3, 3, 4, 2), DEPTHWISE_KERAS)
(8, 1, 3, 3)
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import json
import os
import pickle
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from convcli import limits
from convcli.errors import ConvcliError, KernelError
from convcli.io.paths import require_regular_file
from convcli.layers.values import closest
from convcli.models import split_model_spec

CONV = "conv weight"
TRANSPOSED = "transposed weight"
CONV_KERAS = "conv weight (Keras Conv2D)"
TRANSPOSED_KERAS = "transposed weight (Keras Conv2DTranspose)"
DEPTHWISE_KERAS = "depthwise (Keras)"
BIAS = "bias"
#: What each rank of tensor is called when nothing more is known of it.
PLAIN_LAYOUTS = {0: "scalar", 1: "vector", 2: "matrix", 3: "3-D"}
#: The ranks a kernel may have (as ``.npy`` kernels); a bias is 1-D.
KERNEL_RANKS = (2, 3, 4)
# Keras 3 names a layer's weights folder after its class (``layers/conv2d_transpose_1/vars/0``)
_KERAS_FOLDERS = {
    "conv2d": "Conv2D",
    "conv2d_transpose": "Conv2DTranspose",
    "depthwise_conv2d": "DepthwiseConv2D",
    "separable_conv2d": "SeparableConv2D",
}
# ... and its variables by position
_KERAS_VARIABLES = {"SeparableConv2D": ("depthwise_kernel", "pointwise_kernel", "bias")}
_INSTALL = "pip install 'convcli[models]'"


@dataclass(frozen=True)
class Tensor:
    """One tensor of a model file: its name, shape and dtype as stored, and its layout."""

    name: str
    shape: tuple
    dtype: str
    layout: str

    @property
    def kernel_shape(self) -> tuple:
        """The shape convcli uses: Keras kernels converted, the others as stored."""
        return keras_shape(self.shape, self.layout)

    def use(self, path: str) -> str:
        """The option that takes this tensor: ``-k FILE:NAME``, ``--bias FILE:NAME`` or ""."""
        if self.layout == BIAS:
            return f"--bias {path}:{self.name}"
        return f"-k {path}:{self.name}" if len(self.shape) in KERNEL_RANKS else ""


def keras_shape(shape: tuple, layout: str) -> tuple:
    """A stored shape in convcli's layout: Keras kernels ``(kh, kw, a, b)`` become
    ``(b, a, kh, kw)``, a depthwise one ``(a * b, 1, kh, kw)``; other shapes stay as they are."""
    shape = tuple(shape)
    if layout in (CONV_KERAS, TRANSPOSED_KERAS):
        return (shape[3], shape[2], shape[0], shape[1])
    if layout == DEPTHWISE_KERAS:
        return (shape[2] * shape[3], 1, shape[0], shape[1])
    return shape


def to_convcli(array: np.ndarray, layout: str) -> np.ndarray:
    """The stored array in convcli's layout (see ``keras_shape``).

    >>> to_convcli(np.arange(8.0).reshape(1, 1, 4, 2), DEPTHWISE_KERAS)[:, 0, 0, 0].tolist()
    [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    """
    if layout in (CONV_KERAS, TRANSPOSED_KERAS):
        return array.transpose(3, 2, 0, 1)
    if layout == DEPTHWISE_KERAS:  # output channel c * multiplier + m, as Keras orders them
        return array.transpose(2, 3, 0, 1).reshape(keras_shape(array.shape, layout))
    return array


def list_tensors(path: str) -> list[Tensor]:
    """Every tensor of the model file ``path``, in the file's order."""
    return list(_open(path).tensors)


def read_kernel(path: str, name: str) -> tuple[np.ndarray, Tensor]:
    """Tensor ``name`` of ``path`` as kernel weights in convcli's layout (2-D to 4-D)."""
    return _read(path, name, KERNEL_RANKS, "a kernel")


def read_bias(spec: str) -> tuple[float, ...]:
    """The 1-D tensor named by ``FILE:TENSOR``, as ``--bias`` values."""
    path, name = split_model_spec(spec) or (spec, "")
    values, _ = _read(path, name, (1,), "a bias")
    where = f"{path}:{name}"
    bad = np.flatnonzero(~np.isfinite(values.astype(np.float32)))
    if len(bad):
        raise KernelError(
            f"{where}: a bias must be finite float32 numbers, found {values[bad[0]]} at [{bad[0]}]"
        )
    return tuple(float(v) for v in values)


def _read(path: str, name: str, ranks: tuple, what: str) -> tuple[np.ndarray, Tensor]:
    model = _open(path)
    where = f"{path}:{name}"
    if not name:
        raise KernelError(
            f"{path}: name one of its tensors, {path}:TENSOR (see 'convcli kernels show {path}')"
        )
    found = {t.name: t for t in model.tensors}.get(name)
    if found is None:
        near = closest(name, [t.name for t in model.tensors])
        hint = (
            f"did you mean {near!r}?"
            if near
            else f"it holds {len(model.tensors)}; see 'convcli kernels show {path}'"
        )
        raise KernelError(f"{path}: no tensor {limits.shorten(name)!r} ({hint})")
    if len(found.shape) not in ranks:
        rank = "1-D" if ranks == (1,) else "2-D, 3-D or 4-D"
        use = found.use(path)
        hint = f"; give it to {use.split(' ')[0]}" if use else ""
        raise KernelError(
            f"{where}: {what} must be {rank}; this tensor has shape "
            f"{_size(found.shape)} ({found.layout}){hint}"
        )
    shape = found.kernel_shape
    if 0 in shape:
        raise KernelError(f"{where}: the tensor is empty (shape {_size(shape)})")
    limits.check_kernel_shape(shape, where)
    with _reading(path, model.kind):
        array = np.asarray(model.read(found))
    if array.dtype.kind not in "biuf":  # bfloat16 of ml_dtypes, float8 ...
        with _reading(path, model.kind):
            array = array.astype(np.float32)
    if array.shape != tuple(found.shape):
        raise KernelError(
            f"{where}: the file says shape {_size(found.shape)}, its data has {_size(array.shape)}"
        )
    return to_convcli(array, found.layout), found


def _size(shape) -> str:
    return "x".join(str(n) for n in shape) or "() (a scalar)"


@contextlib.contextmanager
def _reading(path: str, kind: str) -> Iterator[None]:
    """A library's exception while reading ``path`` as one ``KernelError`` line."""
    try:
        yield
    except ConvcliError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 (each library raises its own kinds on a bad file)
        raise KernelError(
            f"{path}: not a readable {kind} file ({limits.one_line(exc) or type(exc).__name__})"
        ) from None


def _require(module: str, path: str, install: str = _INSTALL):
    """Import an optional package, or one line naming what to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise KernelError(
            f"{path}: reading {os.path.splitext(path)[1]} files needs the "
            f"{module} package: {install}"
        ) from None


@dataclass
class _Model:
    """An open model file: its tensors, and how to read one (as stored)."""

    kind: str
    tensors: list
    read: object


def _open(path: str) -> _Model:
    """The model file at ``path``, opened once while it stays the same file (a model's layers
    each read their tensors from it)."""
    require_regular_file(path, "model file", KernelError)
    status = os.stat(path)
    return _open_unchanged(path, os.path.realpath(path), status.st_mtime_ns, status.st_size)


@functools.lru_cache(maxsize=2)
def _open_unchanged(path: str, real_path: str, mtime_ns: int, size: int) -> _Model:
    suffix = os.path.splitext(path)[1].lower()
    opener = {
        ".safetensors": _safetensors,
        ".onnx": _onnx,
        ".keras": _keras_zip,
        ".h5": _keras_h5,
        ".npz": _npz,
    }.get(suffix, _torch)
    return opener(path)


def _plain_layout(name: str, rank: int) -> str:
    if rank == 4:
        return CONV
    return (
        BIAS
        if rank == 1 and re.search(r"bias\Z", name, re.IGNORECASE)
        else PLAIN_LAYOUTS.get(rank, f"{rank}-D")
    )


def _safetensors(path: str) -> _Model:
    safe_open = _require("safetensors", path).safe_open
    with _reading(path, "safetensors"):
        handle = safe_open(path, framework="numpy")
        stored = {}
        for name in handle.keys():  # noqa: SIM118 (a safe_open handle, not a dict)
            part = handle.get_slice(name)
            stored[name] = (tuple(part.get_shape()), part.get_dtype())
    tensors = [
        Tensor(name, shape, _numpy_name(dtype), _plain_layout(name, len(shape)))
        for name, (shape, dtype) in stored.items()
    ]

    def read(tensor: Tensor) -> np.ndarray:
        if tensor.dtype == "bfloat16":  # numpy has no bfloat16: widen the raw bits
            return _bf16_safetensors(path, tensor)
        return handle.get_tensor(tensor.name)

    return _Model("safetensors", tensors, read)


def _numpy_name(code: str) -> str:
    """A safetensors dtype code by its numpy name: ``F16`` is ``float16``, ``BF16`` ``bfloat16``.

    >>> _numpy_name("BF16"), _numpy_name("I64"), _numpy_name("F8_E4M3"), _numpy_name("BOOL")
    ('bfloat16', 'int64', 'float8_e4m3', 'bool')
    """
    match = re.fullmatch(r"(BF|F|I|U)([0-9]+)(.*)", code)
    if match is None:
        return code.lower()
    kinds = {"BF": "bfloat", "F": "float", "I": "int", "U": "uint"}
    return kinds[match[1]] + match[2] + match[3].lower()


def _bf16_safetensors(path: str, tensor: Tensor) -> np.ndarray:
    """A BF16 tensor as float32: its 16 bits are the top half of a float32's."""
    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        begin, end = json.loads(handle.read(size))[tensor.name]["data_offsets"]
        handle.seek(8 + size + begin)
        raw = np.frombuffer(handle.read(end - begin), dtype="<u2")
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(tensor.shape)


def _torch(path: str) -> _Model:
    torch = _require("torch", path, "pip install torch")
    with _reading(path, "PyTorch"):
        try:  # mmap: shapes without reading the data
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):  # the old (pre-zip) format cannot be mapped
                raise
            loaded = _unpickle_weights_only(torch, path)
        except pickle.UnpicklingError as exc:
            raise _refused_pickle(path, exc) from None
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict):
        raise KernelError(f"{path}: holds a {type(loaded).__name__}, not a state dict of tensors")
    found = {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    tensors = [
        Tensor(
            name, tuple(t.shape), str(t.dtype).removeprefix("torch."), _plain_layout(name, t.dim())
        )
        for name, t in found.items()
    ]

    def read(tensor: Tensor) -> np.ndarray:
        value = found[tensor.name]
        return (value.float() if value.is_floating_point() else value).numpy()

    return _Model("PyTorch", tensors, read)


def _unpickle_weights_only(torch, path: str):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refused_pickle(path, exc) from None


def _refused_pickle(path: str, exc: Exception) -> KernelError:
    """torch's refusal in convcli's words (torch's own advice is to unpickle anyway)."""
    found = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\.|\n|\Z)", str(exc), re.DOTALL)
    detail = limits.one_line(found[1]) if found and found[1].strip() else "not a pickle"
    return KernelError(
        f"{path}: not a readable PyTorch file: it does not load as tensors and "
        f"plain data ({detail}), and convcli never unpickles code"
    )


def _onnx(path: str) -> _Model:
    onnx = _require("onnx", path)
    limits.check_memory(2 * os.path.getsize(path), f"reading {path}")
    with _reading(path, "ONNX"):
        model = onnx.load(path, load_external_data=False)
        roles = {}
        for node in model.graph.node:
            if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
                roles[node.input[1]] = CONV if node.op_type == "Conv" else TRANSPOSED
                if len(node.input) > 2:
                    roles[node.input[2]] = BIAS
        found = {init.name: init for init in model.graph.initializer}
        tensors = [
            Tensor(
                name,
                tuple(int(d) for d in init.dims),
                str(onnx.helper.tensor_dtype_to_np_dtype(init.data_type)),
                roles.get(name) or _plain_layout(name, len(init.dims)),
            )
            for name, init in found.items()
        ]

    def read(tensor: Tensor) -> np.ndarray:
        initializer = found[tensor.name]
        if initializer.data_location == onnx.TensorProto.EXTERNAL:
            raise KernelError(
                f"{path}:{tensor.name}: the tensor's data is in another file "
                "(ONNX external data), which convcli does not read"
            )
        return onnx.numpy_helper.to_array(initializer)

    return _Model("ONNX", tensors, read)


def _npz(path: str) -> _Model:
    from convcli.io.images import read_npy_header

    with _reading(path, ".npz"):
        archive = zipfile.ZipFile(path)
        members = [m for m in archive.namelist() if m.endswith(".npy")]
    tensors = []
    for member in members:
        name = member[: -len(".npy")]
        with _reading(path, ".npz"), archive.open(member) as handle:
            shape, dtype, _ = read_npy_header(handle, f"{path}:{name}", KernelError)
        tensors.append(Tensor(name, tuple(shape), str(dtype), _plain_layout(name, len(shape))))

    def read(tensor: Tensor) -> np.ndarray:
        with archive.open(tensor.name + ".npy") as handle:
            return np.lib.format.read_array(handle, allow_pickle=False)

    return _Model(".npz", tensors, read)


def _keras_zip(path: str) -> _Model:
    """A ``.keras`` file: a zip whose ``model.weights.h5`` holds the weights."""
    h5py = _require("h5py", path)
    with _reading(path, "Keras"):
        archive = zipfile.ZipFile(path)
        info = archive.getinfo("model.weights.h5")
        limits.check_memory(info.file_size, f"reading {path}")
        data = archive.read(info)
    with _reading(path, "Keras"):
        return _keras_weights(h5py.File(io.BytesIO(data), "r"), path, {})


def _keras_h5(path: str) -> _Model:
    """A Keras ``.h5`` file: a whole model (``model_weights`` and its config) or weights only."""
    h5py = _require("h5py", path)
    with _reading(path, "Keras .h5"):
        handle = h5py.File(path, "r")
        config = handle.attrs.get("model_config")
        classes = _layer_classes(json.loads(config)) if config is not None else {}
        return _keras_weights(handle, path, classes)


def _layer_classes(config) -> dict:
    """Layer name -> class name, from a Keras model config (nested models included)."""
    found, stack = {}, [config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            name = (
                item.get("config", {}).get("name") if isinstance(item.get("config"), dict) else None
            )
            if isinstance(item.get("class_name"), str) and isinstance(name, str):
                found.setdefault(name, item["class_name"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _keras_weights(handle, path: str, classes: dict) -> _Model:
    datasets = {}

    def collect(name: str, item) -> None:  # visititems stops at the first value returned
        if hasattr(item, "shape"):
            datasets[name] = item

    handle.visititems(collect)
    tensors = [
        Tensor(
            name, tuple(item.shape), str(item.dtype), _keras_layout(name, len(item.shape), classes)
        )
        for name, item in datasets.items()
    ]

    def read(tensor: Tensor) -> np.ndarray:
        return datasets[tensor.name][()]

    return _Model("Keras", tensors, read)


def _keras_layout(name: str, rank: int, classes: dict) -> str:
    """The layout of a Keras weight from its path: ``layers/conv2d/vars/0`` (Keras 3, named by
    class and position) or ``model_weights/c1/.../c1/kernel`` (legacy ``.h5``, by layer name)."""
    parts = name.split("/")
    if len(parts) >= 4 and parts[-2] == "vars" and parts[-4] == "layers":
        kind = _KERAS_FOLDERS.get(re.sub(r"_[0-9]+\Z", "", parts[-3]), "")
        roles = _KERAS_VARIABLES.get(kind, ("kernel", "bias") if kind else ())
        index = int(parts[-1]) if parts[-1].isdigit() else len(roles)
        role = roles[index] if index < len(roles) else ""
    else:
        role = parts[-1].partition(":")[0]
        layer = parts[1] if parts[0] == "model_weights" and len(parts) > 1 else parts[0]
        kind = classes.get(layer, "")
    if rank == 1 and role == "bias":
        return BIAS
    if rank != 4:
        return PLAIN_LAYOUTS.get(rank, f"{rank}-D")
    if role == "depthwise_kernel" or kind == "DepthwiseConv2D":
        return DEPTHWISE_KERAS
    return TRANSPOSED_KERAS if kind == "Conv2DTranspose" else CONV_KERAS
