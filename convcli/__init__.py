"""convcli: convolutions and pooling on images, exactly as CNN layers define them.

The Python API (``convcli.api``) is imported on first use, so that ``import convcli`` loads
neither numpy nor numba (the CLI's ``--help`` stays fast)::

    import convcli
    edges = convcli.conv2d(convcli.read_image("photo.png"), "sobel_x", padding="same")

``convcli.explain`` is the ``explain`` package, callable as the API's ``explain``.
"""

import importlib

#: The public names: the exception family (``convcli.errors``, the names ending in
#: ``Error``), the explain package, and the functions of ``convcli.api``.
__all__ = [
    "ConvcliError",
    "InputError",
    "KernelError",
    "LimitError",
    "OutputError",
    "ParameterError",
    "Pipeline",
    "ShapeError",
    "avg_pool2d",
    "conv2d",
    "conv_transpose2d",
    "explain",
    "global_pool",
    "kernel_info",
    "load_kernel",
    "max_pool2d",
    "max_unpool2d",
    "read_image",
    "stats",
    "write_image",
]


def __getattr__(name: str):
    if name == "explain":  # the subpackage (callable), which import sets as this attribute
        return importlib.import_module("convcli.explain")
    if name not in __all__:
        raise AttributeError(f"module 'convcli' has no attribute {name!r}")
    module = importlib.import_module("convcli.errors" if name.endswith("Error") else "convcli.api")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted({*globals(), *__all__})
