"""The Python API: what ``import convcli`` gives (lazily: see ``convcli/__init__.py``).

Images are numpy arrays ``(H, W)`` or ``(H, W, C)``, as on the command line, or ``(C, H, W)``
with ``channels_first=True``; a result has the layout of its image (an ``(H, W)`` image with
a one-channel result gives ``(H, W)``). Sizes are an int or a (rows, cols) pair; padding is
``valid``, ``same``, ``full``, an int, (rows, cols) or (top, bottom, left, right); kernels
are a name (``"gaussian:sigma=2"``), a kernel file or an array. Each function normalises its
values and layout and calls the code the CLI runs (the engine, the kernel library, pipeline
steps, the image reader and writer, ``explain``): the numbers are the CLI's. Bad values raise
``convcli.errors.ConvcliError`` subclasses naming the parameter.

>>> import numpy as np
>>> image = np.array([[1, 3, 2, 0], [4, 6, 1, 2], [0, 2, 5, 3], [1, 2, 2, 4]], np.float32)
>>> max_pool2d(image, 2)                      # the seeds' example
array([[6., 2.],
       [2., 5.]], dtype=float32)
>>> conv2d(image, [[1, 0], [0, -1]], stride=2).tolist()
[[-5.0, 0.0], [-2.0, 1.0]]
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from convcli.errors import LimitError, ParameterError, ShapeError
from convcli.layers.values import (
    COMBINE_MODES,
    PAD_MODES,
    as_count,
    as_numbers,
    as_padding,
    as_pair,
    one_of,
)
from convcli.render import OUTPUT_OPTIONS
from convcli.render.stats import DEFAULT_PERCENTILES

# --------------------------------------------------------------------------------------------
# Layouts and values


def _chw(image: Any, channels_first: bool, name: str = "image") -> tuple[np.ndarray, bool]:
    """``image`` as a C-contiguous (C, H, W) array, and whether it was (H, W)."""
    array = np.asarray(image)
    if array.ndim == 2:
        return array[None], True
    if array.ndim != 3:
        layout = "(H, W) or (C, H, W)" if channels_first else "(H, W) or (H, W, C)"
        raise ShapeError(f"{name} must be {layout}, got shape {array.shape}")
    # laid out as the CLI's reader gives it, so that sums run in the same order
    return np.ascontiguousarray(array if channels_first else array.transpose(2, 0, 1)), False


def _laid_out(maps: np.ndarray, flat: bool, channels_first: bool) -> np.ndarray:
    """(C, H, W) results in the layout of the image they came from."""
    if flat and maps.shape[0] == 1:
        return maps[0]
    return maps if channels_first else np.ascontiguousarray(maps.transpose(1, 2, 0))


def _white(array: np.ndarray, white: float | None) -> float | None:
    """The white level of ``array``'s values: given, or that of its dtype (8-bit 255, 16-bit
    65535; None, as for a ``.npy`` input, otherwise)."""
    if white is not None:
        level = as_numbers(white, "white")[0]
        if level <= 0:
            raise ParameterError(f"white must be positive (255, 65535, 1.0), got {level:g}")
        return level
    return {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(array.dtype)


def _kernel(spec: Any, kernel_path: Sequence[str] = ()):
    """A ``kernels.library.Kernel`` from a name, a file, an array or a Kernel."""
    from convcli.errors import KernelError
    from convcli.kernels.library import Kernel, check_weights, resolve_kernel

    if isinstance(spec, Kernel):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        return resolve_kernel(os.fspath(spec), tuple(map(os.fspath, kernel_path)))
    try:
        weights = np.asarray(spec)
    except ValueError:  # ragged nested lists
        raise KernelError("kernel: an array kernel must be rectangular (2-D, 3-D or 4-D)") from None
    return Kernel("array", check_weights(weights, "kernel"))


def _kernels(kernel: Any, kernel_path: Sequence[str]) -> tuple:
    """One kernel, or several to stack: a list or tuple of names, files or numpy arrays."""
    many = (
        isinstance(kernel, (list, tuple))
        and kernel
        and all(isinstance(k, (str, os.PathLike, np.ndarray)) for k in kernel)
    )
    return tuple(_kernel(k, kernel_path) for k in (kernel if many else [kernel]))


def _conv_params(
    kernel, kernel_path, bias, stride, padding, dilation, groups, flip, combine
) -> dict:
    kernels = _kernels(kernel, kernel_path)
    if combine is not None:
        combine = one_of(combine, COMBINE_MODES, "combine")
        if len(kernels) < 2:
            raise ParameterError(
                "combine needs two or more kernels (a list), whose maps it combines"
            )
    groups = as_count(groups, "groups")
    flat = next((k for k in kernels if k.weights.ndim != 4), None)
    if groups != 1 and flat is not None:
        raise ParameterError(
            f"groups applies to 4-D kernels; {flat.name!r} is {flat.weights.ndim}-D"
        )
    return {
        "kernel": kernels,
        "bias": None if bias is None else as_numbers(bias, "bias"),
        "stride": as_pair(stride, "stride"),
        "padding": as_padding(padding),
        "dilation": as_pair(dilation, "dilation"),
        "groups": groups,
        "flip": bool(flip),
        "combine": combine,
    }


def _run(pipeline, image: Any, white: float | None, channels_first: bool) -> np.ndarray:
    """Run checked pipeline steps on an image, as ``pipeline.Job`` does on a file."""
    from convcli.pipeline import Maps

    chw, flat = _chw(image, channels_first)
    with np.errstate(over="ignore", invalid="ignore"):  # float32 overflows to inf, NaN propagates
        maps = pipeline.run(Maps(chw, _white(chw, white)))
    return _laid_out(maps.data, flat, channels_first)


def _steps(*steps):
    from convcli.pipeline import Pipeline as Checked

    return Checked(steps)


# --------------------------------------------------------------------------------------------
# Convolutions and pooling


def conv2d(
    image: Any,
    kernel: Any,
    bias: Any = None,
    *,
    stride: Any = 1,
    padding: Any = "valid",
    dilation: Any = 1,
    groups: int = 1,
    pad_mode: str = "zeros",
    flip: bool = False,
    combine: str | None = None,
    channels_first: bool = False,
    kernel_path: Sequence[str] = (),
) -> np.ndarray:
    """Cross-correlate ``image`` with ``kernel``, as PyTorch ``conv2d`` (``convcli conv``).

    Parameters
    ----------
    image : array_like
        ``(H, W)`` or ``(H, W, C)`` (``(C, H, W)`` with ``channels_first``).
    kernel : str, path, array_like or list of them
        A name (``"sobel_x"``, ``"gaussian:sigma=2"``), a kernel file, or weights: 2-D (each
        channel on its own), 3-D ``(C_in, kh, kw)`` (one map) or 4-D ``(C_out, C_in/groups,
        kh, kw)``. A list of names, files or numpy arrays stacks each kernel's maps.
    bias : float or sequence of float, optional
        One value, or one per output channel.
    stride, dilation : int or (int, int)
    padding : str, int or tuple
        ``valid`` (the default, as PyTorch), ``same`` (TF/Keras), ``full``, or counts.
    groups : int
        Channel groups of a 4-D kernel.
    pad_mode : {"zeros", "reflect", "replicate", "circular", "symmetric"}
    flip : bool
        Rotate the kernel 180 degrees (true convolution).
    combine : {"magnitude", "sum", "max"}, optional
        With several kernels: one map per channel instead of the stack.

    Returns
    -------
    numpy.ndarray
        float32 maps in the image's layout.

    Examples
    --------
    >>> import numpy as np
    >>> impulse = np.zeros((3, 3), np.float32); impulse[1, 1] = 1
    >>> conv2d(impulse, np.arange(1, 10).reshape(3, 3), padding="same").astype(int).tolist()
    [[9, 8, 7], [6, 5, 4], [3, 2, 1]]
    >>> conv2d(np.ones((4, 4, 3)), "box:size=3").shape
    (2, 2, 3)
    """
    from convcli.pipeline import make_step

    params = _conv_params(
        kernel, kernel_path, bias, stride, padding, dilation, groups, flip, combine
    )
    step = make_step("conv", pad_mode=one_of(pad_mode, PAD_MODES, "pad_mode"), **params)
    return _run(_steps(step), image, None, channels_first)


def conv_transpose2d(
    image: Any,
    kernel: Any,
    bias: Any = None,
    *,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    flip: bool = False,
    combine: str | None = None,
    channels_first: bool = False,
    kernel_path: Sequence[str] = (),
) -> np.ndarray:
    """Transposed convolution, as PyTorch ``conv_transpose2d`` (``convcli conv --transpose``).

    As ``conv2d``, but a 4-D kernel is ``(C_in, C_out/groups, kh, kw)``; ``padding`` is
    ``same`` (Keras: output = input x stride), ``valid``, N or (rows, cols), cropped from both
    sides; ``output_padding`` adds rows and columns at the bottom/right (below the stride or
    the dilation). Output size ``(H-1)*s - 2p + d*(k-1) + output_padding + 1``.

    Examples
    --------
    >>> conv_transpose2d([[1, 2], [3, 4]], np.ones((2, 2)), stride=2).astype(int).tolist()
    [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    """
    from convcli.pipeline import make_step

    params = _conv_params(
        kernel, kernel_path, bias, stride, padding, dilation, groups, flip, combine
    )
    step = make_step(
        "transposed", output_padding=as_pair(output_padding, "output_padding", 0), **params
    )
    return _run(_steps(step), image, None, channels_first)


def max_pool2d(
    image: Any,
    size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
    *,
    channels_first: bool = False,
) -> Any:
    """Max of each window of every channel, as PyTorch ``max_pool2d`` (``convcli pool``).

    ``stride`` defaults to ``size``. Numeric padding and ``ceil_mode`` follow PyTorch (each
    side at most half the window); ``padding="same"`` is Keras ``MaxPooling2D``. With
    ``return_indices`` also the int64 flat index ``r*W + q`` of each maximum in its input
    plane, in the same layout (``max_unpool2d`` takes them).

    Examples
    --------
    >>> x = np.array([[1, 3, 2, 0], [4, 6, 1, 2], [0, 2, 5, 3], [1, 2, 2, 4]])
    >>> values, indices = max_pool2d(x, 2, return_indices=True)
    >>> values.tolist(), indices.tolist()
    ([[6.0, 2.0], [2.0, 5.0]], [[5, 2], [9, 10]])
    """
    from convcli import engine

    chw, flat = _chw(image, channels_first)
    result = engine.max_pool2d(
        chw,
        as_pair(size, "size"),
        None if stride is None else as_pair(stride, "stride"),
        as_padding(padding),
        as_pair(dilation, "dilation"),
        bool(ceil_mode),
        bool(return_indices),
    )
    if return_indices:
        return tuple(_laid_out(part, flat, channels_first) for part in result)
    return _laid_out(result, flat, channels_first)


def avg_pool2d(
    image: Any,
    size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    *,
    channels_first: bool = False,
) -> np.ndarray:
    """Mean of each window of every channel, as PyTorch ``avg_pool2d`` (``pool --mode avg``).

    With numeric padding pad cells count in the divisor when ``count_include_pad`` (PyTorch's
    default); with ``same`` (Keras ``AveragePooling2D``) they never do.

    Examples
    --------
    >>> avg_pool2d(np.arange(1, 10).reshape(3, 3), 2, padding="same").tolist()
    [[3.0, 4.5], [7.5, 9.0]]
    """
    from convcli import engine

    chw, flat = _chw(image, channels_first)
    out = engine.avg_pool2d(
        chw,
        as_pair(size, "size"),
        None if stride is None else as_pair(stride, "stride"),
        as_padding(padding),
        bool(ceil_mode),
        bool(count_include_pad),
    )
    return _laid_out(out, flat, channels_first)


def global_pool(image: Any, mode: str = "avg", *, channels_first: bool = False) -> np.ndarray:
    """One value per channel: its mean or its max (``convcli pool --global``), shape ``(C,)``.

    Examples
    --------
    >>> global_pool(np.arange(8).reshape(2, 2, 2), "max").tolist()      # (H, W, C)
    [6.0, 7.0]
    """
    from convcli import engine

    chw, _ = _chw(image, channels_first)
    return engine.global_pool(chw, one_of(mode, engine.GLOBAL_POOL_MODES, "mode"))


def max_unpool2d(
    image: Any,
    indices: Any,
    output_size: Any = None,
    *,
    size: Any = 2,
    stride: Any = None,
    padding: Any = 0,
    channels_first: bool = False,
) -> np.ndarray:
    """Put each value back at its index, zeros elsewhere, as PyTorch ``max_unpool2d``.

    ``indices`` come from ``max_pool2d(..., return_indices=True)``, in the image's layout.
    ``output_size`` (rows, cols) is the size of the pooled plane; by default it follows from
    the window ``size``, ``stride`` (default: the size) and ``padding``, as ``convcli unpool``.

    Examples
    --------
    >>> values, indices = max_pool2d(np.arange(16).reshape(4, 4), 2, return_indices=True)
    >>> max_unpool2d(values, indices).astype(int).tolist()
    [[0, 0, 0, 0], [0, 5, 0, 7], [0, 0, 0, 0], [0, 13, 0, 15]]
    """
    from convcli import engine, geometry

    chw, flat = _chw(image, channels_first)
    where, _ = _chw(indices, channels_first, "indices")
    size = as_pair(size, "size")
    requested = None if output_size is None else as_pair(output_size, "output_size")
    out_hw = geometry.unpool_output_shape(
        chw.shape[1:],
        size,
        size if stride is None else as_pair(stride, "stride"),
        as_pair(padding, "padding", 0),
        requested,
    )
    return _laid_out(engine.max_unpool2d(chw, where, out_hw), flat, channels_first)


# --------------------------------------------------------------------------------------------
# Kernels


def _kernel_spec(spec: Any, params: Mapping[str, Any]) -> Any:
    """``spec`` with ``params`` written as the CLI's ``name:key=value,...``."""
    if not params:
        return spec
    if not isinstance(spec, str):
        raise ParameterError(
            f"kernel parameters ({', '.join(params)}) apply to a kernel name, "
            f"not to {type(spec).__name__}"
        )
    given = ",".join(f"{key}={value}" for key, value in params.items())
    return f"{spec},{given}" if ":" in spec else f"{spec}:{given}"


def load_kernel(spec: Any, *, kernel_path: Sequence[str] = (), **params: Any) -> np.ndarray:
    """The float32 weights of a kernel, as correlated (divided by the kernel's scale).

    ``spec`` is a name with optional parameters (``"gaussian:sigma=2"``, or
    ``load_kernel("gaussian", sigma=2)``), a kernel file (``.yaml``, ``.npy``, ``.mat``), an
    inline kernel (``"3x3: 1 0 -1 ..."``) or an array; ``kernel_path`` lists folders of your
    own kernels, searched first. (A libvips ``.mat`` offset is added by ``conv2d`` when the
    kernel is given to it by name or file.)

    Examples
    --------
    >>> load_kernel("sobel_x").astype(int).tolist()
    [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    >>> load_kernel("box", size=2).tolist()
    [[0.25, 0.25], [0.25, 0.25]]
    """
    kernel = _kernel(_kernel_spec(spec, params), kernel_path)
    return (kernel.weights / np.float32(kernel.scale)).astype(np.float32)


def kernel_info(spec: Any, *, kernel_path: Sequence[str] = (), **params: Any) -> dict:
    """What ``convcli kernels show`` says of a kernel: its name, description, source, the
    weights as stored with their scale and offset, their sum, whether it is zero (an edge
    detector's maps are 0 on a flat image), whether every 2-D slice is separable, and for a
    separable 2-D kernel its (column, row) factors.

    Examples
    --------
    >>> info = kernel_info("sobel_x")
    >>> info["zero_sum"], info["separable"], info["factors"]
    (True, True, ([1.0, 2.0, 1.0], [-1.0, 0.0, 1.0]))
    """
    from convcli.kernels.facts import kernel_facts

    kernel = _kernel(_kernel_spec(spec, params), kernel_path)
    return {
        "name": kernel.name,
        "description": kernel.description,
        "source": kernel.source,
        "weights": kernel.weights,
        "scale": kernel.scale,
        "offset": kernel.offset,
        "parameters": dict(kernel.parameters),
        **kernel_facts(kernel.weights),
    }


# --------------------------------------------------------------------------------------------
# Files


def read_image(
    path: Any,
    *,
    channels_first: bool = False,
    alpha: str = "drop",
    frame: int = 0,
    max_pixels: int | None = None,
) -> np.ndarray:
    """An image or ``.npy`` file as the CLI reads it, ``(H, W, C)`` (``(C, H, W)`` with
    ``channels_first``), in its stored dtype: uint8 for 8-bit images, uint16 for 16-bit,
    float32 for float TIFFs, the array's own for ``.npy``.

    ``alpha`` ``drop`` sets an alpha channel aside, ``channel`` keeps it as the last channel;
    ``frame`` picks a frame of an animated or multi-page file; ``max_pixels`` refuses larger
    images before decoding (None: ``$CONVCLI_MAX_PIXELS`` or 100 million; 0: no limit).
    """
    from convcli.io import images

    reading = images.ReadOptions(
        None if max_pixels is None else as_count(max_pixels, "max_pixels", 0),
        as_count(frame, "frame", 0),
    )
    keep = one_of(alpha, ("drop", "channel"), "alpha") == "channel"
    data = images.read_input(os.fspath(path), alpha_as_channel=keep, options=reading).data
    return data if channels_first else np.ascontiguousarray(data.transpose(1, 2, 0))


def write_image(
    path: Any,
    array: Any,
    *,
    white: float | None = None,
    signed: Any = False,
    labels: Sequence[str] | None = None,
    channels_first: bool = False,
    overwrite: bool = True,
    map_mode: str = "auto",
    scale: float | None = None,
    offset: float | None = None,
    joint: bool = False,
    depth: Any = None,
    colormap: str | None = None,
    split: bool = False,
    montage: bool = False,
    montage_grid: str | None = None,
    legend: bool = False,
    rgba: bool = False,
    npy_channels_first: bool = False,
) -> None:
    """Write maps as the CLI does: the same bytes for the same values and options; all files
    or none (each written to a temporary file and renamed).

    The extension of ``path`` says the format (``.png``, ``.tif``, ``.jpg``, ``.webp``,
    ``.bmp``, ``.npy``). ``white`` is the white level of the values: by default 65535 for a
    uint16 array, else 255 (maps of an 8-bit image); give 65535 for maps of a 16-bit image,
    1.0 for a float image's or after ``normalise``. ``signed`` (one flag, or
    one per channel) marks maps that are 0 on a flat image, which ``map_mode="auto"`` centres
    on mid-grey as ``convcli conv`` does for zero-sum kernels. ``labels`` name montage
    tiles. ``overwrite=False`` refuses an existing file. The other options are the CLI's
    output options (``--map`` is ``map_mode``; ``--channels-first`` is
    ``npy_channels_first``); see ``docs/outputs.md``.
    """
    from convcli.io import images
    from convcli.io.atomic import check_target
    from convcli.pipeline import output_files, output_settings

    values = dict(
        zip(
            OUTPUT_OPTIONS,
            (
                map_mode,
                scale,
                offset,
                joint,
                depth,
                colormap,
                split,
                montage,
                montage_grid,
                legend,
                rgba,
            ),
        )
    )
    values["depth"] = None if depth is None else str(depth)
    values["channels_first"] = npy_channels_first
    settings = output_settings(**values)
    path = os.fspath(path)
    chw, _ = _chw(array, channels_first, "array")
    if np.ndim(signed) > 1 or np.size(signed) not in (1, len(chw)):
        raise ShapeError(
            f"signed takes one flag or one per channel ({len(chw)}), got {np.shape(signed)}"
        )
    flags = np.broadcast_to(np.asarray(signed, dtype=bool).reshape(-1), len(chw))
    for target in output_files(path, settings) or [path]:
        check_target(target, overwrite=bool(overwrite))
    images.check_output_path(path, (), settings)
    images.write_output(
        path,
        chw,
        _white(chw, white) or 255.0,
        None,
        settings,
        signed=flags,
        labels=None if labels is None else [str(label) for label in labels],
    )


# --------------------------------------------------------------------------------------------
# Pipelines, explain, statistics


class Pipeline:
    """Steps read from YAML (``docs/pipelines.md``), callable on an array.

    ``Pipeline(steps)`` takes the steps as Python data (a list of op names and mappings, or a
    mapping with ``steps`` and ``output``); ``Pipeline.from_yaml`` a file or YAML text. Both
    are checked, and their kernels found, at once.

    Examples
    --------
    >>> pipe = Pipeline.from_yaml("[relu, {op: pool, mode: max, size: 2}]")
    >>> pipe([[-1, 2], [3, -4]]).tolist()
    [[3.0]]
    """

    def __init__(self, steps: Any, *, kernel_path: Sequence[str] = ()):
        from convcli.pipeline import Pipeline as Checked
        from convcli.pipeline import parse_pipeline

        self.checked = (
            steps
            if isinstance(steps, Checked)
            else parse_pipeline(
                list(steps) if isinstance(steps, tuple) else steps,
                "pipeline",
                tuple(map(os.fspath, kernel_path)),
            )
        )

    @classmethod
    def from_yaml(cls, source: Any, *, kernel_path: Sequence[str] = ()) -> Pipeline:
        """A pipeline from a file (a path, or a one-line string ending in ``.yaml``/``.yml``)
        or from YAML text; kernel files named in a file are relative to its folder."""
        from convcli import limits
        from convcli.io.yamlsafe import parse_yaml_safely
        from convcli.pipeline import load_pipeline, parse_pipeline

        is_text = isinstance(source, str) and (
            "\n" in source or not source.strip().lower().endswith((".yaml", ".yml"))
        )
        if not is_text:
            return cls(load_pipeline(os.fspath(source), tuple(map(os.fspath, kernel_path))))
        if len(source.encode("utf-8", "surrogatepass")) > limits.MAX_TEXT_BYTES:
            raise LimitError(f"pipeline text is larger than {limits.MAX_TEXT_BYTES} bytes")
        document = parse_yaml_safely(source, "pipeline", ParameterError)
        return cls(parse_pipeline(document, "pipeline", tuple(map(os.fspath, kernel_path))))

    def __call__(
        self, image: Any, *, white: float | None = None, channels_first: bool = False
    ) -> np.ndarray:
        """The maps ``convcli run`` computes for ``image`` and writes (before mapping them to
        pixels). ``white`` is the white level of the image's values, which a fixed
        ``normalise`` mean and std apply to: by default that of a uint8 or uint16 array (as
        images are read), else none (as a ``.npy`` input). After ``normalise`` the maps'
        white is 1.0 (``write_image(..., white=1.0)``)."""
        return _run(self.checked, image, white, channels_first)

    @property
    def output_options(self) -> dict:
        """The file's ``output`` section as ``write_image`` keywords."""
        renamed = {"channels_first": "npy_channels_first"}
        return {renamed.get(key, key): value for key, value in self.checked.output.items()}

    def __repr__(self) -> str:
        ops = ", ".join(step.name or step.op for step in self.checked.steps)
        return f"Pipeline([{ops}])"


def stats(
    image: Any, percentiles: Sequence[float] = DEFAULT_PERCENTILES, *, channels_first: bool = False
) -> list[dict]:
    """Per channel what ``convcli stats`` prints: ``min``, ``max``, ``mean``, ``std`` and the
    values at ``percentiles`` (a list), computed in float64 (NaN propagates).

    Examples
    --------
    >>> row = stats(np.arange(4).reshape(2, 2), percentiles=[50])[0]
    >>> row["min"], row["max"], row["mean"], row["percentiles"]
    (0.0, 3.0, 1.5, [1.5])
    """
    from convcli.render.stats import channel_stats, check_percentiles

    chw, _ = _chw(image, channels_first)
    return channel_stats(chw, check_percentiles(as_numbers(list(percentiles), "percentiles")))
