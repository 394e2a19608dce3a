"""Limits on what convcli reads and allocates, so that broken or hostile inputs fail fast.

Each limit is checked before the work it guards, and a breach is a one-line ``LimitError``
that names the limit and how to change it:

- **pixels** of an input (``--max-pixels``, ``$CONVCLI_MAX_PIXELS``, default 100 million), read
  from the image or ``.npy`` header before anything is decoded;
- **memory**: the arrays an operation allocates, estimated from the shapes before allocating
  and compared with the memory the machine has available (``$CONVCLI_MAX_MEMORY`` sets the
  budget instead, ``0`` turns the check off);
- **kernels**: at most ``MAX_KERNEL_SIDE`` cells per side and ``MAX_KERNEL_WEIGHTS`` weights;
- **text files** (YAML, ``.mat``): ``MAX_TEXT_BYTES``; YAML nesting depth and node count
  (aliases expanded) are limited by ``convcli.io.yamlsafe``.

Pure standard library: the commands that must start fast (``kernels``, ``explain``) import it.

>>> parse_bytes("1.5G", "budget")
1610612736
>>> format_bytes(3 * 2**30)
'3.0 GiB'
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence

from convcli.errors import LimitError, ParameterError

#: Default pixel limit (rows x columns) of an input: a 10000 x 10000 image. Pillow's own
#: decompression-bomb limit is 89 million pixels; convcli checks its own before decoding.
DEFAULT_MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "CONVCLI_MAX_PIXELS"
MAX_MEMORY_ENV = "CONVCLI_MAX_MEMORY"
#: Kernel size limits: cells per side (the library's largest, a sigma-50 Gaussian, is 401) and
#: weights in all (a 4-D bank: 256 MiB of float32).
MAX_KERNEL_SIDE = 1024
MAX_KERNEL_WEIGHTS = 2**26
#: Text kernel and pipeline files (YAML, libvips .mat): bigger kernels belong in .npy files.
MAX_TEXT_BYTES = 1_000_000
#: Feature maps ``--split`` writes as files or ``--montage`` lays out as tiles (a 128x128 grid):
#: more are written as one ``.npy``.
MAX_LAYOUT_MAPS = 16_384
#: The largest whole number an option takes (stride, dilation, padding, sizes, groups): int32's.
MAX_OPTION_INT = 2**31 - 1
#: Digits a number may be written with (option, kernel string, YAML value), counted before it is
#: converted: more than a float64 needs written out exactly (767 significant digits), far less
#: than Python's own limit (4,300 digits, a ValueError) or the time a huge string takes.
MAX_NUMBER_DIGITS = 1000
#: A decimal number in ASCII (``float`` also takes ``１`` and ``1_0``), or inf/nan.
NUMBER = re.compile(
    r"\s*[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf(?:inity)?|nan)\s*",
    re.ASCII | re.IGNORECASE,
)

#: File-name limits of Linux (NAME_MAX, PATH_MAX): bytes per path component and in a whole path.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
#: An error line's length: values are cut with ``shorten``; this bounds what is left.
MAX_MESSAGE = 1000

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def named(what: str, text: object) -> str:
    """``what`` and the value as given, shortened and quoted, for a message; a ``what`` ending in
    ``=`` (a ``key=value`` setting) takes the value without a space.

    >>> named("stride", "x"), named("kernel 'box': size=", "2.5")
    ("stride 'x'", "kernel 'box': size='2.5'")
    """
    return f"{what}{'' if what.endswith('=') else ' '}{shorten(text)!r}"


def parse_whole(
    text: str | int,
    what: str,
    minimum: int = 0,
    maximum: int = MAX_OPTION_INT,
    error: type = ParameterError,
) -> int:
    """A whole number written in ASCII digits (no ``２``, no ``1_000``), within the bounds,
    compared with them without converting a long one (Python refuses 4,300 digits and more).

    >>> parse_whole(" 12 ", "frame")
    12
    >>> parse_whole("\\uff12", "stride")
    Traceback (most recent call last):
    ...
    convcli.errors.ParameterError: stride '２' is not a whole number (ASCII digits)
    """
    value = str(text).strip()
    if not re.fullmatch(r"[+-]?[0-9]+", value, re.ASCII):
        raise error(f"{named(what, text)} is not a whole number (ASCII digits)")
    digits = value.lstrip("+-").lstrip("0")
    number = int(value) if len(digits) <= 30 else (-1 if value[0] == "-" else 1) * 10**30
    if number < minimum:
        raise error(f"{what} must be at least {minimum}, got {shorten(text)!r}")
    if number > maximum:
        raise error(f"{what} must be at most {maximum}, got {shorten(text)!r}")
    return number


def check_digits(text: str, what: str, error: type = ParameterError) -> None:
    """Refuse a number written with more than ``MAX_NUMBER_DIGITS`` digits, before converting it.

    >>> check_digits("9" * 5000, "stride")     # doctest: +ELLIPSIS, +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    convcli.errors.ParameterError: stride '999...' has 5,000 digits, more than the 1,000 a number
    may have
    """
    digits = sum(map(str.isdigit, str(text)))
    if digits > MAX_NUMBER_DIGITS:
        raise error(
            f"{named(what, text)} has {digits:,} digits, more than the "
            f"{MAX_NUMBER_DIGITS:,} a number may have"
        )


def parse_real(
    text: str | float, what: str, error: type = ParameterError, finite: bool = True
) -> float:
    """A number written in ASCII (``1.5``, ``-2e3``; ``inf`` and ``nan`` unless ``finite``),
    its digits counted (``check_digits``) before it is converted.

    >>> parse_real(" -2e3 ", "offset")
    -2000.0
    >>> parse_real("1e999999", "scale")
    Traceback (most recent call last):
    ...
    convcli.errors.ParameterError: scale '1e999999' must be finite
    """
    if not NUMBER.fullmatch(str(text)):
        raise error(f"{named(what, text)} is not a number")
    check_digits(text, what, error)
    value = float(text)
    if finite and not math.isfinite(value):
        raise error(f"{named(what, text)} must be finite")
    return value


def parse_bytes(text: str, what: str) -> int:
    """A size in bytes: a number with an optional K, M, G or T suffix (powers of 1024), at most
    2**63 bytes.

    >>> parse_bytes("9" * 400, "budget")     # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    convcli.errors.ParameterError: budget
    '999999999999999999999999999999999999999999999999999999999...' is more than 2**63 bytes
    """
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)i?B?\s*", str(text), re.ASCII | re.I)
    if match is None:
        raise ParameterError(f"{what} {shorten(text)!r} is not a size in bytes (e.g. 8G, 512M)")
    size = parse_real(match[1], what, finite=False) * _UNITS[match[2].upper()]
    if size > 2**63:
        raise ParameterError(f"{what} {shorten(text)!r} is more than 2**63 bytes")
    return int(size)


def shorten(text: object, width: int = 60) -> str:
    """``text`` as a string, cut to ``width`` characters with an ellipsis: values in messages.

    >>> shorten("9" * 100, 10)
    '9999999...'
    """
    text = str(text)
    return text if len(text) <= width else text[: width - 3] + "..."


def short_repr(value: object) -> str:
    """``repr(value)`` cut for a message (a huge int is not even turned into text whole).

    >>> short_repr("sam"), short_repr(10**100)
    ("'sam'", 'a number of more than 60 digits')
    """
    if isinstance(value, int) and not -(10**60) < value < 10**60:
        return "a number of more than 60 digits"
    return shorten(repr(value))


def one_line(text: object, width: int = 200) -> str:
    """``text`` with its white space folded to single spaces, cut to ``width``: a library's
    message (which may span lines) inside ours.

    >>> one_line("bad  value   at row 3")
    'bad value at row 3'
    """
    return shorten(" ".join(str(text).split()), width)


def short_message(message: str) -> str:
    """An error message as one short line: runs of more than 200 characters without a space
    (a value a caller did not shorten) are cut, then the whole to ``MAX_MESSAGE``.

    >>> len(short_message("bad " + "x" * 10**6))
    204
    """
    message = " ".join(str(message).splitlines())
    message = re.sub(r"\S{201,}", lambda run: shorten(run[0], 200), message)
    return shorten(message, MAX_MESSAGE)


def check_path_length(path: str, what: str = "output", names: tuple[str, ...] = ()) -> None:
    """Refuse a path longer than ``MAX_PATH_BYTES`` or with a component longer than
    ``MAX_NAME_BYTES`` (in the file system's encoding), before any work. ``names``: the
    parameters ``what`` names (``ConvcliError.names``).

    >>> check_path_length("out/" + "a" * 300 + ".png")   # doctest: +ELLIPSIS, +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    convcli.errors.OutputError: output 'out/aaa...': the name 'aaa...' is 304 bytes, more than
    the 255 a file name may have
    """
    from convcli.errors import OutputError

    encoded = os.fsencode(path)
    if len(encoded) > MAX_PATH_BYTES:
        raise OutputError(
            f"{what} {shorten(path)!r} is {len(encoded):,} bytes, more than the "
            f"{MAX_PATH_BYTES:,} a path may have",
            names=names,
        )
    for part in encoded.split(b"/"):
        if len(part) > MAX_NAME_BYTES:
            name = os.fsdecode(part)
            raise OutputError(
                f"{what} {shorten(path, 20)!r}: the name {shorten(name, 20)!r} is "
                f"{len(part):,} bytes, more than the {MAX_NAME_BYTES} a file name may have",
                names=names,
            )


# --------------------------------------------------------------------------------------------
# Pixels


def max_pixels(given: int | None = None) -> int:
    """The pixel limit: ``given`` (``--max-pixels``), else ``$CONVCLI_MAX_PIXELS``, else the
    default. 0 means no limit."""
    if given is not None:
        return given
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    return parse_whole(raw, f"${MAX_PIXELS_ENV}") if raw else DEFAULT_MAX_PIXELS


def check_pixels(height: int, width: int, limit: int, what: str) -> None:
    """Refuse an input of ``height`` x ``width`` pixels over ``limit`` (0: no limit).

    >>> check_pixels(20000, 10000, 100_000_000, "input 'big.png'")
    ... # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    convcli.errors.LimitError: input 'big.png' is 20000x10000 (rows x columns) = 200,000,000
    pixels, over the limit of 100,000,000 (raise it with --max-pixels N or $CONVCLI_MAX_PIXELS;
    0 turns it off)
    """
    if limit and height * width > limit:
        raise LimitError(
            f"{what} is {height}x{width} (rows x columns) = {height * width:,} pixels, "
            f"over the limit of {limit:,} (raise it with --max-pixels N or "
            f"${MAX_PIXELS_ENV}; 0 turns it off)"
        )


# --------------------------------------------------------------------------------------------
# Memory


def format_bytes(n_bytes: float) -> str:
    """Bytes in the largest binary unit that keeps the number at least 1."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n_bytes < 1024 or unit == "PiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    raise AssertionError("unreachable")


def _meminfo(field: str) -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """Memory left under this process's cgroup (v2, or v1) limit, if it has one."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            with open(limit_file, encoding="ascii") as handle:
                limit = handle.read().strip()
            with open(usage_file, encoding="ascii") as handle:
                usage = int(handle.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:  # v1 says "no limit" with a huge number
            return max(int(limit) - usage, 0)
    return None


def memory_budget() -> int | None:
    """Bytes an operation may allocate: ``$CONVCLI_MAX_MEMORY``, else the memory available now
    (Linux ``MemAvailable``, within the cgroup's limit), else free physical memory; None when
    unknown or turned off (``$CONVCLI_MAX_MEMORY=0``)."""
    raw = os.environ.get(MAX_MEMORY_ENV, "").strip()
    if raw:
        return parse_bytes(raw, f"${MAX_MEMORY_ENV}") or None
    available = _meminfo("MemAvailable")
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    room = _cgroup_room()
    return available if room is None else min(available, room)


#: Allocations smaller than this are not checked against the memory the system has left
#: (reading it takes about 0.3 ms, a quarter of a small convolution); ``$CONVCLI_MAX_MEMORY``
#: still applies to them.
UNCHECKED_BYTES = 64 << 20


def check_memory(n_bytes: int, what: str, held: int = 0) -> None:
    """Refuse to allocate ``n_bytes`` for ``what`` when, with the ``held`` bytes its inputs
    already take and keep while it runs, they exceed ``memory_budget()``: the budget bounds
    what an operation holds at its peak, not each allocation alone.

    ``what`` says what needs them, e.g. ``"conv2d: the output 512x10000x10000 (float32)"``.

    >>> import os; os.environ["CONVCLI_MAX_MEMORY"] = "1M"
    >>> check_memory(600_000, "x: the output 150000 (float32)", held=600_000)
    ... # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    convcli.errors.LimitError: x: the output 150000 (float32) needs about 585.9 KiB of memory,
    more than the 438.1 KiB left of the 1.0 MiB available beside the 585.9 KiB its inputs hold
    ($CONVCLI_MAX_MEMORY sets the budget, e.g. 16G, or 0 to skip this check)
    >>> del os.environ["CONVCLI_MAX_MEMORY"]
    """
    total = n_bytes + held
    if total < UNCHECKED_BYTES and not os.environ.get(MAX_MEMORY_ENV, "").strip():
        return
    budget = memory_budget()
    if budget is not None and total > budget:
        room = (
            f"the {format_bytes(max(budget - held, 0))} left of the {format_bytes(budget)} "
            f"available beside the {format_bytes(held)} its inputs hold"
            if held
            else f"the {format_bytes(budget)} available"
        )
        raise LimitError(
            f"{what} needs about {format_bytes(n_bytes)} of memory, more than {room} "
            f"(${MAX_MEMORY_ENV} sets the budget, e.g. 16G, or 0 to skip this check)"
        )


def check_arrays(operation: str, itemsize: int = 4, held: int = 0, **arrays: Sequence[int]) -> None:
    """``check_memory`` for the arrays an operation is about to allocate, given by shape, beside
    the ``held`` bytes of its inputs.

    Names are written with spaces: ``check_arrays("conv2d", padded_input=(3, 9, 9),
    output=(64, 7, 7))`` describes "the padded input 3x9x9 and the output 64x7x7".
    """
    total = itemsize * sum(math.prod(int(n) for n in shape) for shape in arrays.values())
    parts = [
        f"the {name.replace('_', ' ')} {'x'.join(str(int(n)) for n in shape)}"
        for name, shape in arrays.items()
    ]
    kinds = {1: "1 byte per value", 4: "float32", 8: "float64 or int64"}
    kind = kinds.get(itemsize, f"{itemsize} bytes per value")
    check_memory(total, f"{operation}: {' and '.join(parts)} ({kind})", held)


def check_layout(count: int, layout: str) -> None:
    """Refuse to lay ``count`` maps out as ``layout`` (``split`` files or ``montage`` tiles)
    beyond ``MAX_LAYOUT_MAPS``.

    >>> check_layout(300_000, "split")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    convcli.errors.LimitError: 300,000 feature maps are more split files than the limit of ...
    """
    if count > MAX_LAYOUT_MAPS:
        units = "files" if layout == "split" else "tiles"
        raise LimitError(
            f"{count:,} feature maps are more {layout} {units} than the limit of "
            f"{MAX_LAYOUT_MAPS:,}; write them as one .npy (output maps.npy)",
            names=(layout, "output"),
        )


# --------------------------------------------------------------------------------------------
# Kernels


def check_kernel_shape(shape: Sequence[int], where: str) -> None:
    """Refuse kernels wider or taller than ``MAX_KERNEL_SIDE`` or with more than
    ``MAX_KERNEL_WEIGHTS`` weights (from the shape alone, before reading the weights)."""
    shape = tuple(int(n) for n in shape)
    size = "x".join(map(str, shape))
    if len(shape) >= 2 and max(shape[-2:]) > MAX_KERNEL_SIDE:
        raise LimitError(
            f"{where}: a kernel is at most {MAX_KERNEL_SIDE} cells per side, this one is {size}"
        )
    if math.prod(shape) > MAX_KERNEL_WEIGHTS:
        raise LimitError(
            f"{where}: a kernel has at most {MAX_KERNEL_WEIGHTS:,} weights, "
            f"this one ({size}) has {math.prod(shape):,}"
        )
