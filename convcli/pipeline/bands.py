"""Big images in bounded memory: a file job run band by band, from the decoded image to the PNG.

The whole-image path holds a float32 copy of the input and one of every step's maps (192 MB
each for a 4096^2 RGB image). For a job whose steps each read a few input rows per output
row (``conv`` with any padding and the border modes but ``circular``, ``transposed``, max and
average ``pool``, activations, ``gray``, ``select``) and whose ``--map`` looks at one value
at a time (``auto``, ``clip``, ``abs``, ``offset``), written to one 8- or 16-bit PNG,
``run_in_bands`` keeps only the decoded image (Pillow decodes it whole) and the output's
pixels whole: per band of output rows it takes the input rows the band needs, runs the steps
on them, maps the result into its rows of the pixels, then the PNG encoder writes them. Each
step's ``Window`` says which rows a band reads and runs the step on them as the whole map
would:

- a convolution reads its halo and border rows (from ``geometry`` and the pad mode, as the
  whole image would have them) and runs without row padding;
- a pool (``PoolWindow``) reads the rows its windows cover and pools them with the whole
  map's pads where the band meets the image's edge, none elsewhere: the same windows, ceil
  mode's too, and the same average divisors;
- a transposed convolution (``TransposedWindow``) reads every input row that adds onto its
  output rows, runs as the whole map does, and keeps its rows.

Each convolution, transposed convolution and pool takes the method the whole map would
(``runtime.band_of``), so the file is byte for byte the whole-image path's. A max pool whose
indices are written (``--indices``: flat indices into the whole plane, written whole as
int64) takes the whole-image path.

Whether a job goes in bands depends on its own arguments only: the image's size and the float32
maps the whole path would hold (``BANDED_BYTES``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from convcli.errors import ConvcliError
from convcli.layers.spec import RUN_ACTIVATIONS

if TYPE_CHECKING:
    import numpy as np

    from convcli.pipeline.execute import Maps

#: The whole-image path goes in bands when its float32 maps (the input's and the largest
#: step's) would take more than this.
BANDED_BYTES = 64 << 20
#: Float32 bytes of the widest maps of one band: bands of a few megabytes keep both cores busy
#: and the memory at the image, the pixels and a few bands.
BAND_BYTES = 4 << 20
#: Band heights are multiples of this (the engine's kernels work on pairs of rows, its bands
#: from multiples of 8 rows).
BAND_ROW_MULTIPLE = 8
#: Steps that compute each output value from the values at its own position.
ROW_LOCAL = frozenset(RUN_ACTIVATIONS) | {"gray", "select"}
#: ``--map`` modes that map each value on its own.
LOCAL_MAPS = ("auto", "clip", "abs", "offset")


@dataclass(frozen=True)
class Window:
    """How one step reads rows: output row ``r`` reads padded rows ``r * stride`` to
    ``r * stride + span - 1``, padded row ``p`` being input row ``p - top`` with the border
    filled as ``mode`` says, of an input of ``rows`` rows; ``out_rows`` rows come out.
    Row-local steps read their own row (stride 1, span 1, top 0). ``jit``: the whole map's
    method runs Numba's kernels (already spread over the cores).

    >>> Window(8, 8).reads(2, 5).tolist()
    [2, 3, 4]
    >>> Window(8, 8, stride=2, span=3, top=1, mode="reflect").reads(0, 2).tolist()
    [1, 0, 1, 2, 3]
    """

    rows: int
    out_rows: int
    stride: int = 1
    span: int = 1
    top: int = 0
    mode: str = "zeros"
    jit: bool = False

    def reads(self, first: int, last: int) -> np.ndarray:
        """The input row each padded row of output rows ``first:last`` reads (-1: a zero)."""
        import numpy as np

        from convcli.engine.correlation import source_index

        positions = np.arange(first * self.stride, (last - 1) * self.stride + self.span)
        return source_index(positions - self.top, self.rows, self.mode)

    @property
    def rows_per_row(self) -> int:
        """Input rows a band reads per output row, at most (its halo aside)."""
        return self.stride

    def run(self, step, maps: Maps, first: int, last: int) -> Maps:
        """``step`` on ``maps`` holding the rows that ``reads(first, last)`` names: output rows
        ``first:last``; a convolution as ``runtime.band_of`` its whole map's rows."""
        from convcli import runtime
        from convcli.pipeline.execute import apply

        if step.op != "conv":
            return apply(step, maps)
        with runtime.band_of(self.out_rows, first_row=first):
            return apply(step, maps)


@dataclass(frozen=True)
class PoolWindow(Window):
    """A pooling step's ``Window``: a band reads the input rows its windows cover, and is
    pooled with its own top and bottom pads (the whole map's where the band meets the image's
    edge, else none), so that each window sits where it does in the whole map, and its
    divisor is the whole map's. ``bottom``: the bottom pad; ``width``: the output's columns;
    ``method``: the whole map's (``pooling.choose_method``).

    >>> window = PoolWindow(9, 5, stride=2, span=3, top=1, bottom=1, width=5)  # 3x3, stride 2
    >>> window.reads(0, 2).tolist(), window.pads(0, 2)
    ([0, 1, 2, 3], (1, 0))
    >>> window.reads(2, 5).tolist(), window.pads(2, 5)
    ([3, 4, 5, 6, 7, 8], (0, 1))
    """

    bottom: int = 0
    width: int = 1
    method: str = "numpy"

    def reads(self, first: int, last: int) -> np.ndarray:
        import numpy as np

        return np.arange(*self._inside(first, last))

    def pads(self, first: int, last: int) -> tuple[int, int]:
        """The band's top and bottom pads."""
        low, high = self._inside(first, last)
        return low + self.top - first * self.stride, self.bottom if high == self.rows else 0

    def _inside(self, first: int, last: int) -> tuple[int, int]:
        low = min(self.rows, max(0, first * self.stride - self.top))
        return low, max(low, min(self.rows, (last - 1) * self.stride - self.top + self.span))

    def run(self, step, maps: Maps, first: int, last: int) -> Maps:
        import numpy as np

        from convcli import limits
        from convcli.engine import pooling

        p = step.params
        shape = (len(maps.data), last - first, self.width)
        limits.check_arrays(
            f"{p['mode']} pooling",
            held=maps.data.nbytes,
            input_as_float32=maps.data.shape,
            output=shape,
        )
        image = np.ascontiguousarray(maps.data, np.float32)
        pads = (*self.pads(first, last), *p["padding"][2:])
        out = np.empty(shape, np.float32)
        if p["mode"] == "max":
            pooling.max_pool(
                image, out, None, p["size"], p["stride"], p["dilation"], pads, self.method
            )
        else:
            pooling.avg_pool(
                image, out, p["size"], p["stride"], pads, p["count_include_pad"], self.method
            )
        return replace(maps, data=out)


@dataclass(frozen=True)
class TransposedWindow(Window):
    """A transposed convolution's ``Window``: input row ``i`` adds onto output rows
    ``i * stride - top`` to ``i * stride - top + span - 1`` (``top``: the rows cropped). A
    band reads every input row that adds onto its output rows, from a row ``low`` with
    ``low * stride`` at or before its first; the step as the whole map has it then gives
    output rows from ``low * stride`` on, as many as the band needs or to the end, and the
    band keeps its own.

    >>> window = TransposedWindow(8, 16, stride=2, span=3, top=0)   # 3x3, stride 2, same
    >>> window.reads(0, 8).tolist(), window.reads(8, 16).tolist()
    ([0, 1, 2, 3], [3, 4, 5, 6, 7])
    """

    @property
    def rows_per_row(self) -> int:
        return 1

    def reads(self, first: int, last: int) -> np.ndarray:
        import numpy as np

        stride, rows = self.stride, self.rows
        low = max(0, min(first // stride, (first + self.top - self.span + 1) // stride, rows - 1))
        # every row adding onto row last - 1, and enough rows for the step to reach it
        high = max((last - 1 + self.top) // stride + 1, -(-(last - self.out_rows) // stride) + rows)
        return np.arange(low, min(rows, max(high, low + 1)))

    def run(self, step, maps: Maps, first: int, last: int) -> Maps:
        from convcli import runtime
        from convcli.pipeline.execute import apply

        low = int(self.reads(first, last)[0])
        with runtime.band_of(self.out_rows, self.rows, low):
            maps = apply(step, maps)
        start = low * self.stride
        return replace(maps, data=maps.data[:, first - start : last - start])


def run_in_bands(job: Any, picture: Any, source: str, target: str) -> dict | None:
    """Run ``job`` on the decoded ``picture`` into the PNG ``target`` band by band, and return
    the input and output shapes (H, W, C) as ``Job.process`` does; None, and nothing done,
    when the job is not one to band (see the module docstring)."""
    plan = _plan(job, picture, target)
    if plan is None:
        return None
    import numpy as np

    from convcli import limits
    from convcli.io import images, png
    from convcli.io.atomic import atomic_write_all, folder_of, make_folder

    steps, windows, shapes, depth = plan
    channels, height, width = picture.data.shape
    out_channels, out_rows, out_width = shapes[-1]
    dtype = np.uint8 if depth == "8" else np.uint16
    rows = min(out_rows, _band_rows(max(4 * c * w for c, _, w in shapes), windows))
    limits.check_arrays(
        f"writing {limits.shorten(target)!r} in bands of {rows} rows",
        itemsize=np.dtype(dtype).itemsize,
        held=picture.data.nbytes,
        pixels=(out_rows, out_width, out_channels),
    )
    pixels = np.empty((out_rows, out_width, out_channels), dtype)
    settings = job.settings or images.OutputSettings()
    try:
        _run(picture, source, steps, windows, rows, pixels, depth, settings)
    except ConvcliError:  # the whole-image path says it as it does, naming the step
        return None
    make_folder(folder_of(target))
    atomic_write_all([(target, lambda handle: png.write_png(handle, pixels))], job.overwrite)
    return {
        "input_shape": [height, width, channels],
        "output_shape": [out_rows, out_width, out_channels],
    }


def _run(picture, source, steps, windows, rows, pixels, depth, settings) -> None:
    """The steps on each band of ``rows`` output rows, mapped into its rows of ``pixels``; bands
    on the cores side by side when no step runs Numba's kernels (numpy's work is on one core),
    each in a copy of the caller's context (``runtime.repeated``, numpy's error state)."""
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from convcli.io import images
    from convcli.pipeline.execute import Maps
    from convcli.runtime import compute_threads

    def band(first: int) -> None:
        last = min(len(pixels), first + rows)
        spans = _spans(windows, first, last)
        maps = Maps(_rows_of(picture.data, windows[0], *spans[0], 0), picture.white, source=source)
        for number, (step, window) in enumerate(zip(steps, windows)):
            maps = window.run(step, maps, *spans[number])
            if number + 1 < len(steps):
                start = spans[number][0]
                wanted = _rows_of(maps.data, windows[number + 1], *spans[number + 1], start)
                maps = replace(maps, data=wanted)
        levels, _, _ = images.mapped_levels(
            np.asarray(maps.data, np.float32), maps.white, settings, depth, maps.flags, True
        )
        images.integer_pixels(levels, 8 if depth == "8" else 16, pixels[first:last])

    firsts = range(0, len(pixels), rows)
    threads = 1 if any(window.jit for window in windows) else compute_threads()
    with np.errstate(over="ignore", invalid="ignore"):  # as the whole-image path
        caller = contextvars.copy_context()
        with ThreadPoolExecutor(max(1, min(threads, len(firsts)))) as pool:
            for _ in pool.map(lambda first: caller.copy().run(band, first), firsts):
                pass


def _plan(job: Any, picture: Any, target: str) -> tuple[list, list, list, str] | None:
    """The steps (convolutions with their border rows made explicit), each step's ``Window``
    and output shape (C, H, W), and the PNG's depth, if ``job`` on ``picture`` into ``target``
    goes in bands; else None."""
    from convcli.io import images
    from convcli.io.paths import STDIO
    from convcli.io.urls import is_url

    settings = job.settings or images.OutputSettings()
    if (
        target == STDIO
        or is_url(target)
        or images.extension(target) != ".png"
        or job.indices is not None
        or job.before is not None
        or job.format is not None
        or (picture.alpha is not None and job.alpha == "keep")
        or settings.map not in LOCAL_MAPS
        or settings.split
        or settings.montage
        or settings.rgba
        or settings.legend
        or settings.colormap is not None
        or settings.depth not in (None, "8", "16")
        or picture.data.dtype.kind not in "uf"
        or not job.pipeline.steps
    ):
        return None
    channels, rows, width = picture.data.shape
    steps, windows, shapes, largest = [], [], [], 4 * picture.data.size
    for step in job.pipeline.steps:
        if step.sources:
            return None
        planned = _step_window(step, channels, rows, width)
        if planned is None:
            return None
        step, window, (channels, rows, width) = planned
        steps.append(step)
        windows.append(window)
        shapes.append((channels, rows, width))
        largest = max(largest, 4 * channels * rows * width)
    if 4 * picture.data.size + largest <= BANDED_BYTES:
        return None
    depth = images.single_image_depth(target, settings, (channels, rows, width), picture.white)
    return steps, windows, shapes, depth


def _step_window(step, channels: int, rows: int, width: int):
    """``step`` as each band runs it, its ``Window`` and its output shape (C, H, W), for an
    input of ``channels`` x ``rows`` x ``width``; None if it cannot run in bands."""
    if step.op in ROW_LOCAL:
        if step.op == "select" and max(step.params["channels"]) >= channels:
            return None  # the whole-image path says what is wrong
        count = 1 if step.op == "gray" else channels
        count = len(step.params["channels"]) if step.op == "select" else count
        return step, Window(rows, rows), (count, rows, width)
    planners = {"conv": _conv_window, "transposed": _transposed_window, "pool": _pool_window}
    if step.op not in planners or len({k.weights.shape[-2:] for k in _kernels(step)}) > 1:
        return None
    try:
        return planners[step.op](step, channels, rows, width)
    except Exception:  # noqa: BLE001 - the whole-image path says what is wrong
        return None


def _kernels(step) -> tuple:
    return step.params["kernel"] if step.op in ("conv", "transposed") else ()


def _conv_window(step, channels: int, rows: int, width: int):
    """As ``_step_window``, for a convolution: its padding rows made explicit, read with the
    border the pad mode gives."""
    from convcli import engine, geometry
    from convcli.engine.correlation import choose_method

    p = step.params
    k_hw = p["kernel"][0].weights.shape[-2:]
    stride, dilation = tuple(p["stride"]), tuple(p["dilation"])
    pads = geometry.resolve_padding(p["padding"], (rows, width), k_hw, stride, dilation)
    out_hw = geometry.conv2d_output_shape((rows, width), k_hw, stride, dilation, pads)
    engine.check_border((rows, width), pads, p["pad_mode"])
    count, methods = 0, set()
    for kernel in p["kernel"]:
        weight, groups = engine.as_conv_weight(
            kernel.weights / kernel.scale, channels, p["groups"], copy=False
        )
        methods.add(choose_method(weight, groups, out_hw, stride, dilation))
        if "fft" in methods:
            return None  # its tiles and its checks for large values are the whole map's
        count += weight.shape[0]
    if min(out_hw) < 1 or (p["pad_mode"] == "circular" and (pads[0] or pads[1])):
        return None
    if p["combine"]:
        count = weight.shape[0]
    span = geometry.effective_kernel_size(k_hw[0], dilation[0])
    jit = not methods <= {"numpy", "gemm"}
    window = Window(rows, out_hw[0], stride[0], span, pads[0], p["pad_mode"], jit)
    banded = replace(step, params={**p, "padding": (0, 0, pads[2], pads[3])})
    return banded, window, (count, *out_hw)


def _transposed_window(step, channels: int, rows: int, width: int):
    """As ``_step_window``, for a transposed convolution: the step as it is, on each band's
    input rows (``TransposedWindow``)."""
    from convcli import engine, geometry
    from convcli.engine import scatter

    p = step.params
    k_hw = p["kernel"][0].weights.shape[-2:]
    stride, dilation = tuple(p["stride"]), tuple(p["dilation"])
    crop, out_hw = engine.transposed_plan(
        (rows, width), k_hw, stride, p["padding"], p["output_padding"], dilation
    )
    count, jit = 0, False
    for kernel in p["kernel"]:
        weight, groups = engine.as_transposed_weight(
            kernel.weights / kernel.scale, channels, p["groups"], copy=False
        )
        if scatter.choose_method(weight, groups, (rows, width)) == "spread":
            method = scatter.spread_method(weight, groups, stride, dilation, crop, out_hw)
            if method == "fft":
                return None  # as for a convolution
            jit = jit or method not in ("numpy", "gemm")
        count += weight.shape[1] * groups
    if p["combine"]:
        count = weight.shape[1] * groups
    span = geometry.effective_kernel_size(k_hw[0], dilation[0])
    window = TransposedWindow(rows, out_hw[0], stride[0], span, crop[0], jit=jit)
    return step, window, (count, *out_hw)


def _pool_window(step, channels: int, rows: int, width: int):
    """As ``_step_window``, for max or average pooling: its stride, pads and divisor rule
    resolved (``PoolWindow``)."""
    from convcli import engine, geometry
    from convcli.engine import pooling

    p = step.params
    dilation = tuple(p["dilation"]) if p["mode"] == "max" else (1, 1)
    stride, pads, out_hw = engine.pool_plan(
        (rows, width), p["size"], p["stride"], p["padding"], dilation, p["ceil_mode"]
    )
    method = pooling.choose_method(channels, out_hw, p["size"])
    counts = engine.counts_pad_cells(p["padding"], p["count_include_pad"])
    params = {"stride": stride, "padding": pads, "dilation": dilation, "count_include_pad": counts}
    span = geometry.effective_kernel_size(p["size"][0], dilation[0])
    window = PoolWindow(
        rows,
        out_hw[0],
        stride[0],
        span,
        pads[0],
        jit=method == "numba",
        bottom=pads[1],
        width=out_hw[1],
        method=method,
    )
    return replace(step, params={**p, **params}), window, (channels, *out_hw)


def _band_rows(bytes_per_row: int, windows: list[Window]) -> int:
    """Output rows per band: ``BAND_BYTES`` of the widest maps, a multiple of
    ``BAND_ROW_MULTIPLE`` (strides make the first step's band taller)."""
    taller = 1
    for window in windows:
        taller *= window.rows_per_row
    rows = BAND_BYTES // max(1, bytes_per_row * taller)
    return max(BAND_ROW_MULTIPLE, rows - rows % BAND_ROW_MULTIPLE)


def _spans(windows: list[Window], first: int, last: int) -> list[tuple[int, int]]:
    """For output rows ``first:last`` of the last step, the output rows of each step its band
    computes: the rows that the next step's padded rows read (at least one)."""
    spans = [(first, last)]
    for window in reversed(windows[1:]):
        read = window.reads(*spans[0])
        read = read[read >= 0]
        low = int(read.min()) if read.size else 0
        high = int(read.max()) + 1 if read.size else 1
        spans.insert(0, (low, high))
    return spans


def _rows_of(data: np.ndarray, window: Window, first: int, last: int, start: int) -> np.ndarray:
    """The padded rows that output rows ``first:last`` of ``window``'s step read, from ``data``
    holding the rows ``start:`` of its input: border rows filled as the pad mode says."""
    import numpy as np

    reads = window.reads(first, last)
    inside = reads >= 0
    if inside.all():
        return data[:, reads - start]
    band = np.zeros((data.shape[0], len(reads), data.shape[2]), data.dtype)
    band[:, inside] = data[:, reads[inside] - start]
    return band
