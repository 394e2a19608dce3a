"""Running a pipeline's steps: the maps between steps and the work of each op on arrays.

``apply(step, maps)`` runs one checked step (``schema.Step``) on ``Maps``: the (C, H, W) values
with their white level, which maps are signed, their montage labels and the argmax of named max
pool steps.

>>> import numpy as np
>>> from convcli.pipeline.schema import parse_pipeline
>>> pipe = parse_pipeline(["relu", {"op": "pool", "mode": "max", "size": 2}])
>>> pipe.run(Maps(np.array([[[-1, 2], [3, -4]]], np.float32), 255.0)).data.tolist()
[[[3.0]]]
"""

from __future__ import annotations

import math
from collections import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from convcli.errors import ShapeError
from convcli.layers.spec import RUN_ACTIVATIONS
from convcli.layers.spec import Layer as Step


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
    def numbers(cls, count: int) -> Labels:
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

    def select(self, channels: Sequence[int]) -> Labels:
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
    white: float | None = None
    signed: Flags | None = None
    labels: Labels | None = None
    pools: dict = field(default_factory=dict)
    source: str = ""

    @property
    def flags(self) -> Flags:
        import numpy as np

        return self.signed if self.signed is not None else Flags(np.zeros(len(self.data), bool))


def _conv(step: Step, maps: Maps) -> Maps:
    """Convolve with each kernel and stack the maps (as ``conv -k a -k b``)."""
    import numpy as np

    from convcli import engine, limits
    from convcli.render import mapping

    p, transposed = step.params, step.op == "transposed"
    kernels, bias = p["kernel"], p["bias"]
    layout = engine.as_transposed_weight if transposed else engine.as_conv_weight
    layers = [
        layout(k.weights / k.scale, maps.data.shape[0], p["groups"], copy=False) for k in kernels
    ]
    counts = [w.shape[1] * g if transposed else w.shape[0] for w, g in layers]
    if bias is not None and len(kernels) > 1 and len(bias) not in (1, sum(counts)):
        raise ShapeError(
            f"bias has {len(bias)} values, the {len(kernels)} kernels give {sum(counts)} "
            f"channels (give 1 or {sum(counts)})"
        )
    if p["combine"]:
        combined_count(kernels, counts)
    starts = np.cumsum([0] + counts)
    stack, signed = [], []
    for kernel, (weight, groups), count, start in zip(kernels, layers, counts, starts):
        if p["combine"] and stack:  # the next kernel's maps beside the combined ones so far
            limits.check_arrays(
                f"{step.op} --combine {p['combine']}",
                held=maps.data.nbytes + stack[0].nbytes,
                next_kernel_maps=stack[0].shape,
            )
        part = (
            bias
            if bias is None or len(bias) == 1 or len(kernels) == 1
            else bias[start : start + count]
        )
        # the layer's 4-D weight and groups, as laid out above (a 2-D kernel is not copied again)
        if transposed:
            out = engine.conv_transpose2d(
                maps.data,
                weight,
                part,
                stride=p["stride"],
                padding=p["padding"],
                output_padding=p["output_padding"],
                dilation=p["dilation"],
                groups=groups,
                flip=p["flip"],
            )
        else:
            out = engine.conv2d(
                maps.data,
                weight,
                part,
                stride=p["stride"],
                padding=p["padding"],
                dilation=p["dilation"],
                groups=groups,
                pad_mode=p["pad_mode"],
                flip=p["flip"],
            )
        if stack and out.shape[1:] != stack[0].shape[1:]:
            sizes = [f"{m.shape[1]}x{m.shape[2]}" for m in (stack[0], out)]
            raise ShapeError(
                f"kernel {kernels[0].name!r} gives {sizes[0]} maps, {kernel.name!r} gives "
                f"{sizes[1]}; stacked kernels must give the same output size"
            )
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
        flags = (
            np.zeros(counts[0], bool)
            if p["combine"] == "magnitude"
            else np.logical_and.reduce(signed)
        )
        name = f"{p['combine']}({', '.join(kernel.name for kernel in kernels)})"
        return replace(maps, data=stack[0], signed=Flags(flags), labels=Labels([(name, counts[0])]))
    if len(stack) > 1:
        limits.check_arrays(
            f"{step.op} with {len(stack)} kernels",
            held=sum(a.nbytes for a in stack),
            stacked_maps=(sum(counts), *stack[0].shape[1:]),
        )
    data = stack[0] if len(stack) == 1 else np.concatenate(stack)
    named = f"{step.name}: " if step.name else ""  # a named pipeline step: "features: sobel_x"
    labels = Labels(
        [(named + (kernel.spec or kernel.name), count) for kernel, count in zip(kernels, counts)]
    )
    return replace(maps, data=data, signed=Flags(np.concatenate(signed)), labels=labels)


def combined_count(kernels: Sequence[Any], counts: Sequence[int]) -> int:
    """The maps ``--combine`` makes: as many as each kernel gives, which must be the same.

    >>> combined_count([None, None], [3, 3])
    3
    """
    if len(set(counts)) > 1:
        odd, other = next((k, n) for k, n in zip(kernels, counts) if n != counts[0])
        raise ShapeError(
            f"combine needs kernels giving the same number of maps: {kernels[0].name!r} "
            f"gives {counts[0]}, {odd.name!r} gives {other}"
        )
    return counts[0]


def combine_maps(combined: Any, maps: Any, mode: str) -> Any:
    """Fold one kernel's float32 ``maps`` into the ``combined`` maps of the kernels before it
    (None for the first kernel), in place: ``magnitude`` sums squares (the caller takes the
    root at the end), ``sum`` adds, ``max`` keeps the larger value (NaN propagates).

    >>> import numpy as np
    >>> gx, gy = np.array([3.0, -1.0], np.float32), np.array([-4.0, 2.0], np.float32)
    >>> squares = combine_maps(combine_maps(None, gx.copy(), "magnitude"), gy.copy(), "magnitude")
    >>> np.sqrt(squares).tolist()
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
        out = engine.avg_pool2d(
            maps.data, p["size"], p["stride"], p["padding"], p["ceil_mode"], p["count_include_pad"]
        )
        return replace(maps, data=out)
    if not step.name:  # nothing can refer to its indices (unpool names the pool it undoes)
        return replace(
            maps,
            data=engine.max_pool2d(
                maps.data, p["size"], p["stride"], p["padding"], p["dilation"], p["ceil_mode"]
            ),
        )
    out, where = engine.max_pool2d(
        maps.data,
        p["size"],
        p["stride"],
        p["padding"],
        p["dilation"],
        p["ceil_mode"],
        return_indices=True,
    )
    return replace(maps, data=out, pools={**maps.pools, step.name: (where, maps.data.shape[1:])})


def _global_pool(step: Step, maps: Maps) -> Maps:
    from convcli import engine

    return replace(maps, data=engine.global_pool(maps.data, step.params["mode"])[:, None, None])


def _unpool(step: Step, maps: Maps) -> Maps:
    from convcli import engine

    where, size = maps.pools[step.params["indices"]]
    return replace(maps, data=engine.max_unpool2d(maps.data, where, size))


def _activation(step: Step, maps: Maps) -> Maps:
    """relu, leaky_relu (slope), abs, sigmoid, tanh, clip (min, max), hardsigmoid (alpha,
    beta), hardswish: each value on its own, as PyTorch's and ONNX's.

    Computed in place on one float32 copy of the input (leaky_relu also needs a mask of the
    negative values, hardswish a float32 factor).
    """
    import numpy as np

    from convcli import limits

    p, extra = step.params, {"leaky_relu": 1, "hardswish": 4}.get(step.op, 0)
    limits.check_arrays(
        step.op,
        itemsize=4 + extra,
        held=maps.data.nbytes,
        **{"output_and_work" if extra else "output": maps.data.shape},
    )
    y = np.array(maps.data, dtype=np.float32)
    if step.op == "relu":
        np.maximum(y, 0, out=y)
    elif step.op == "leaky_relu":
        np.multiply(y, np.float32(p["slope"]), out=y, where=y < 0)
    elif step.op == "abs":
        np.abs(y, out=y)
    elif step.op == "sigmoid":  # = 1 / (1 + exp(-x)), without overflow
        y *= 0.5
        np.tanh(y, out=y)
        y *= 0.5
        y += 0.5
    elif step.op == "clip":
        if p["min"] is not None or p["max"] is not None:
            np.clip(y, p["min"], p["max"], out=y)
    elif step.op == "hardsigmoid":  # max(0, min(1, alpha * x + beta))
        y *= np.float32(p["alpha"])
        y += np.float32(p["beta"])
        np.clip(y, 0, 1, out=y)
    elif step.op == "hardswish":  # x * max(0, min(1, x / 6 + 1 / 2))
        factor = y / np.float32(6)
        factor += np.float32(0.5)
        y *= np.clip(factor, 0, 1, out=factor)
    else:
        np.tanh(y, out=y)
    keeps_sign = step.op in ("leaky_relu", "tanh", "hardswish") or (
        step.op == "clip" and (p["min"] is None or p["min"] < 0)
    )
    return replace(maps, data=y, signed=maps.flags if keeps_sign else None)


def _per_channel(values: Sequence[float], maps: Maps, what: str):
    """One value for every channel, or one per channel, as a float64 (C, 1, 1) array."""
    import numpy as np

    channels = len(maps.data)
    if len(values) not in (1, channels):
        raise ShapeError(
            f"{what} has {len(values)} values, the input has {channels} channels "
            f"(give 1 or {channels})"
        )
    return np.broadcast_to(np.asarray(values, np.float64), (channels,))[:, None, None]


def _mul(step: Step, maps: Maps) -> Maps:
    """Multiply by a constant: one value, or one per channel (ONNX ``Mul`` by an initializer)."""
    import numpy as np

    from convcli import limits

    factor = _per_channel(step.params["value"], maps, "value").astype(np.float32)
    limits.check_arrays("mul", held=maps.data.nbytes, output=maps.data.shape)
    return replace(maps, data=np.multiply(maps.data, factor, dtype=np.float32))


def _batchnorm(step: Step, maps: Maps) -> Maps:
    """Batch normalisation at inference, per channel: ``scale * (x - mean) / sqrt(var +
    epsilon) + bias`` (PyTorch ``BatchNorm2d`` in eval mode, ONNX ``BatchNormalization``),
    applied as ``x * a + b`` with ``a`` and ``b`` worked out in float64."""
    import numpy as np

    from convcli import limits

    p = step.params
    scale, bias, mean, var = (
        _per_channel(p[key], maps, key) for key in ("scale", "bias", "mean", "var")
    )
    factor = scale / np.sqrt(var + p["epsilon"])
    shift = bias - mean * factor
    limits.check_arrays("batchnorm", held=maps.data.nbytes, output=maps.data.shape)
    y = np.multiply(maps.data, factor.astype(np.float32), dtype=np.float32)
    y += shift.astype(np.float32)
    return replace(maps, data=y, signed=maps.flags if not shift.any() else None)


def join(step: Step, inputs: Sequence[Maps], names: Sequence[str]) -> Maps:
    """Run an ``add`` or ``concat`` step on the maps of the steps it reads (``names`` say which,
    for messages): ``add`` sums maps of one shape (a residual connection), ``concat`` stacks
    maps of one size on channels (a U-Net skip). The white level is the first input's.

    >>> import numpy as np
    >>> a, b = Maps(np.ones((1, 2, 2), np.float32), 255.0), Maps(np.zeros((2, 2, 2), np.float32))
    >>> list(join(Step("concat", {}), [a, b], ["image", "conv"]).labels)
    ['image', 'conv[0]', 'conv[1]']
    >>> join(Step("add", {}), [a, b], ["image", "conv"])     # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    convcli.errors.ShapeError: add needs maps of one shape (...): image gives 2x2x1, ...
    """
    import numpy as np

    from convcli import limits
    from convcli.layers import rules

    try:
        shape = rules.joined_shapes(
            step.op, [(name, _hwc_of(m.data)) for name, m in zip(names, inputs)]
        )
    except rules.RuleError as exc:
        raise ShapeError(str(exc)) from None
    first = inputs[0]
    limits.check_arrays(
        step.op, held=sum(m.data.nbytes for m in inputs), output=(shape[2], *shape[:2])
    )
    pools = {key: value for m in inputs for key, value in m.pools.items()}
    if step.op == "add":
        data = np.array(first.data, dtype=np.float32)
        for more in inputs[1:]:
            data += more.data
        signed = Flags(np.logical_and.reduce([m.flags.array for m in inputs]))
        return replace(first, data=data, signed=signed, pools=pools)
    data = np.concatenate([m.data for m in inputs], dtype=np.float32)
    signed = Flags(np.concatenate([m.flags.array for m in inputs]))
    labels = Labels([(name, len(m.data)) for name, m in zip(names, inputs)])
    return replace(first, data=data, signed=signed, labels=labels, pools=pools)


def _hwc_of(data: Any) -> tuple[int, int, int]:
    return (int(data.shape[1]), int(data.shape[2]), int(data.shape[0]))


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
    limits.check_memory(
        20 * math.prod(maps.data.shape),
        f"normalise: float64 work arrays and the output {shape} (20 bytes per value)",
        maps.data.nbytes,
    )
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
                raise ShapeError(
                    f"{key} has {len(p[key])} values, the input has {channels} channels"
                )
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
        raise ShapeError(
            f"channel {max(channels)} does not exist: the input has {count} (0 to {count - 1})"
        )
    # counted as float32: the next step or the writer makes that of 8-bit maps anyway
    limits.check_arrays(
        "select", held=maps.data.nbytes, output=(len(channels), *maps.data.shape[1:])
    )
    labels = maps.labels or Labels.numbers(count)
    return replace(
        maps,
        data=maps.data[list(channels)],
        signed=maps.flags[list(channels)],
        labels=labels.select(channels),
    )


def _stats(step: Step, maps: Maps) -> Maps:
    """Report each channel's statistics (as ``convcli stats``) on stderr, one tab-separated
    block per input and step written at once; the maps go on unchanged."""
    import click

    from convcli.render.stats import channel_stats, header, text_rows

    percentiles = step.params["percentiles"]
    lines = [header(percentiles, ("input", "step", "channel"))]
    lines += text_rows(
        [maps.source or "-", str(step.number)], channel_stats(maps.data, percentiles)
    )
    click.echo("\n".join("\t".join(line) for line in lines), err=True)
    return maps


_APPLY: dict[str, Callable[[Step, Maps], Maps]] = {
    "conv": _conv,
    "transposed": _conv,
    "pool": _pool,
    "global_pool": _global_pool,
    "unpool": _unpool,
    **{name: _activation for name in RUN_ACTIVATIONS},
    "mul": _mul,
    "batchnorm": _batchnorm,
    "normalise": _normalise,
    "gray": _gray,
    "select": _select,
    "stats": _stats,
}


def apply(step: Step, maps: Maps) -> Maps:
    """Run one checked step that reads one step's maps on ``maps`` (``join`` runs the others)."""
    return _APPLY[step.op](step, maps)
