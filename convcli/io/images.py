"""Reading inputs and writing outputs.

At the edges arrays are ``H x W x C`` (images and ``.npy`` files); inside they are ``(C, H, W)``
holding the raw stored values (0..255 for 8-bit images, 0..65535 for 16-bit, 0..1 for float
TIFF, the numbers themselves for ``.npy``) and computed on in float32, so a ``.npy`` result
equals what PyTorch or OpenCV compute on the same pixels.

Writing converts units first (the input's white level becomes the output's: 255, 65535, or
1.0 for float TIFF; ``.npy`` keeps the input's units, and a ``.npy`` input's numbers are taken
as already in the output's units), then maps values into range (``convcli.render.mapping``), then
lays channels out (one image, ``--split`` files, a ``--montage``). Every file is written to a
temporary beside its target and renamed into place, so a failed or interrupted write never
leaves a partial file.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from convcli import limits
from convcli.errors import (
    ConvcliError,
    InputError,
    LimitError,
    OutputError,
    ParameterError,
    ShapeError,
)
from convcli.io import claims as image_claims
from convcli.io import png
from convcli.io.atomic import atomic_write_all
from convcli.io.paths import STDIO, require_regular_file
from convcli.io.urls import is_url
from convcli.layers.values import not_one_of
from convcli.render import mapping

#: Image outputs by extension: Pillow's format name and, per depth, the channel counts stored
#: (2 = gray + alpha, 4 = RGBA). Every PNG is encoded by ``png.write_png``, the rest by Pillow.
IMAGE_FORMATS = {
    ".png": ("PNG", {"8": (1, 2, 3, 4), "16": (1, 2, 3, 4)}),
    ".tif": ("TIFF", {"8": (1, 2, 3, 4), "16": (1,), "32f": (1,)}),
    ".tiff": ("TIFF", {"8": (1, 2, 3, 4), "16": (1,), "32f": (1,)}),
    ".jpg": ("JPEG", {"8": (1, 3)}),
    ".jpeg": ("JPEG", {"8": (1, 3)}),
    ".bmp": ("BMP", {"8": (1, 3)}),
    ".webp": ("WEBP", {"8": (1, 3, 4)}),
}
NPY = ".npy"
#: ``--format`` values: every output extension, without its dot.
OUTPUT_FORMATS = tuple(ext[1:] for ext in (NPY, *IMAGE_FORMATS))
#: ``--depth`` values and the white level each stores.
DEPTHS = {"8": 255.0, "16": 65535.0, "32f": 1.0}
_SAVE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}}
#: The widest and tallest image each format stores: libwebp's 16383, libjpeg's 65500
#: (JPEG_MAX_DIMENSION), PNG's 2**31 - 1, BMP's signed 32-bit sizes; TIFF's 32-bit ones.
MAX_SIDE = {"PNG": 2**31 - 1, "JPEG": 65500, "WEBP": 16383, "BMP": 2**31 - 1, "TIFF": 2**32 - 1}
#: Pixel bytes a file of the format holds: classic TIFF and BMP address their data with 32
#: bits (less a margin for headers and the BMP palette).
MAX_PIXEL_BYTES = {"TIFF": 2**32 - 2**20, "BMP": 2**32 - 2**11}

#: Pillow modes converted on reading, and the white level of each stored mode.
_CONVERT = {
    "1": "L",
    "P": "RGB",
    "PA": "RGBA",
    "CMYK": "RGB",
    "YCbCr": "RGB",
    "LAB": "RGB",
    "HSV": "RGB",
    "RGBa": "RGBA",
    "La": "LA",
    "RGBX": "RGB",
}
_WHITE = {
    "L": 255.0,
    "RGB": 255.0,
    "I;16": 65535.0,
    "I;16B": 65535.0,
    "I;16L": 65535.0,
    "I;16N": 65535.0,
    "I": 65535.0,
    "F": 1.0,
}
_ALPHA_BASE = {"LA": "L", "RGBA": "RGB"}


@dataclass
class Picture:
    """An input: ``data`` (C, H, W) raw values in their stored dtype (uint8 for 8-bit images:
    a quarter of float32's memory; every operation computes in float32), and what is needed
    to write it back.

    ``white`` is the value of full white in the source encoding (255, 65535, 1.0), or None
    for ``.npy``; ``alpha`` is the (H, W) alpha plane set aside from the colour channels.
    """

    data: np.ndarray
    white: float | None = None
    alpha: np.ndarray | None = None


def extension(path: str) -> str:
    return os.path.splitext(path)[1].lower()


@dataclass(frozen=True)
class ReadOptions:
    """How inputs are read: ``--max-pixels`` and ``--frame``.

    ``max_pixels`` limits rows x columns before anything is decoded: None means
    ``$CONVCLI_MAX_PIXELS`` or 100 million (``limits.max_pixels``), 0 no limit. ``frame``
    picks the frame of an animated or multi-page file, 0 (the first) by default.
    """

    max_pixels: int | None = None
    frame: int = 0


#: Image formats read (Pillow's names), recognised by their content whatever the extension:
#: the common raster formats. Other Pillow plugins are not tried (EPS would run Ghostscript).
READ_FORMATS = (
    "PNG",
    "JPEG",
    "MPO",
    "TIFF",
    "GIF",
    "WEBP",
    "BMP",
    "DIB",
    "PPM",
    "QOI",
    "ICO",
    "JPEG2000",
    "AVIF",
    "TGA",
)
#: The first bytes of every .npy file: the content, not the extension, says what a file is.
NPY_MAGIC = b"\x93NUMPY"


def read_input(
    path: str, alpha_as_channel: bool = False, options: ReadOptions | None = None
) -> Picture:
    """Read an image (``READ_FORMATS``) or a ``.npy`` array shaped (H, W) or (H, W, C).

    What a file is comes from its first bytes, not its extension (a PNG named ``.jpg`` is read
    as a PNG). Sizes are checked on the header, before decoding: over ``options.max_pixels``
    is a ``LimitError``, as is an estimated memory need beyond what the machine has. Alpha is
    set aside in ``Picture.alpha`` unless ``alpha_as_channel``, which keeps it as the last
    channel. EXIF orientation is applied (as OpenCV's ``imread`` does); of an animated or
    multi-page file ``options.frame`` is read, the first by default.
    """
    options = options or ReadOptions()
    if path == STDIO:
        return _read_stdin(alpha_as_channel, options)
    limit = limits.max_pixels(options.max_pixels)
    if is_url(path):  # fsspec: read through one seekable handle, as a file is
        from convcli.io import urls

        with urls.open_input(path) as handle:
            return _read_open(handle, path, alpha_as_channel, limit, options.frame)
    if "\0" in str(path):
        raise InputError(f"input {path!r} contains a NUL character")
    require_regular_file(path, "input")  # a named pipe would block, a device never end
    if not os.access(path, os.R_OK):
        raise InputError(f"input {path!r} is not readable (permission denied)")
    try:
        with open(path, "rb") as handle:  # the only time the input is opened
            return _read_open(handle, path, alpha_as_channel, limit, options.frame)
    except OSError as exc:
        raise InputError(f"input {path!r} cannot be read ({exc.strerror or exc})") from None


#: Bytes read first to tell what a file is: a .npy's magic, a PNG's colour type (byte 25).
_HEAD_BYTES = 26


def _read_open(handle, path: str, alpha_as_channel: bool, limit: int, frame: int) -> Picture:
    """``read_input`` of the file ``path`` open at its start in ``handle``: dispatched by its
    first bytes to the ``.npy`` reader, the 16-bit colour PNG reader (``png``) or Pillow."""
    what = f"input {path!r}"
    head = handle.read(_HEAD_BYTES)
    handle.seek(0)
    if not head:
        raise InputError(f"{what} is empty (0 bytes)")
    if head.startswith(NPY_MAGIC):
        if frame:
            raise InputError(_frame_message(frame, f"{what} (a .npy array)", 1), names=("frame",))
        return Picture(_read_npy(handle, what, limit))
    if not frame and png.colour16(head):
        return _picture16(png.read_colour16(handle, limit, what), alpha_as_channel)
    return _read_image(handle, path, alpha_as_channel, limit, frame)


#: Bytes of standard input searched for an image's header (its size) before any more is read.
STDIN_HEADER_BYTES = 16 << 20
#: An image on standard input holds at most twice its pixels at 4 bytes a sample, plus this
#: much (metadata, colour profiles, other frames); a longer stream is refused.
STDIN_SLACK_BYTES = 16 << 20
_STDIN = "'-' (stdin)"


def _read_stdin(alpha_as_channel: bool, options: ReadOptions) -> Picture:
    """``-``: one image or ``.npy`` array from standard input (``.npy`` known by its magic bytes).

    The header is read first and checked against the pixel limit and the memory budget, as a
    file's would be; then at most the bytes that header allows (``_stdin_allowance``) are
    copied to a temporary file (removed once read) and the stream is refused if it holds
    more, so an endless stream costs bounded time, memory and disk. Errors name the input
    ``'-' (stdin)``.
    """
    import sys

    what = f"input {_STDIN}"
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:
        raise InputError(f"{what} cannot be read (standard input is closed)")
    try:
        head, allowed, too_long = _stdin_allowance(stream, what, options)
        import tempfile

        with tempfile.NamedTemporaryFile(prefix="convcli-stdin-") as spool:
            spool.write(head)
            copied = len(head)
            while True:
                chunk = stream.read(max(0, min(1 << 20, allowed + 1 - copied)))
                if not chunk:
                    break
                spool.write(chunk)
                copied += len(chunk)
                if copied > allowed:
                    raise InputError(f"{what} {too_long}")
            spool.flush()
            spool.seek(0)
            try:
                return _read_open(
                    spool,
                    spool.name,
                    alpha_as_channel,
                    limits.max_pixels(options.max_pixels),
                    options.frame,
                )
            except ConvcliError as exc:
                raise type(exc)(str(exc).replace(repr(spool.name), _STDIN)) from None
    except OSError as exc:
        raise InputError(f"{what} cannot be read ({exc.strerror or exc})") from None


def _stdin_allowance(stream, what: str, options: ReadOptions) -> tuple[bytes, int, str]:
    """The bytes read from ``stream`` to learn the input's size, how many bytes in all it may
    hold, and what a longer stream holds (for the error): a ``.npy`` exactly what its header
    says; an image (found by Pillow within ``STDIN_HEADER_BYTES``) twice its pixels at 4
    bytes a sample plus ``STDIN_SLACK_BYTES``. The pixel limit and the memory budget are
    checked here, before the body is read."""
    limit = limits.max_pixels(options.max_pixels)
    head = _read_up_to(stream, len(NPY_MAGIC))
    if head == NPY_MAGIC:
        recorder = _Recorder(stream, head)
        shape, dtype, _ = read_npy_header(recorder, what)
        _check_npy_input(shape, what, limit)
        data_bytes = math.prod(shape) * dtype.itemsize
        limits.check_memory(2 * data_bytes, f"reading {what} (shape {shape})")
        return (
            recorder.taken,
            len(recorder.taken) + data_bytes,
            f"holds more data than its .npy header says ({data_bytes:,} bytes for shape {shape})",
        )
    while True:
        size = _image_size(head)
        if size is not None:
            (width, height), bands = size
            limits.check_pixels(height, width, limit, what)
            limits.check_memory(
                height * width * (8 + 8 * bands), f"decoding {what} ({height}x{width})"
            )
            allowed = 2 * height * width * bands * 4 + STDIN_SLACK_BYTES
            return (
                head,
                allowed,
                (f"is longer than a {height}x{width} image can be (over {allowed:,} bytes)"),
            )
        more = _read_up_to(stream, min(max(len(head), 1 << 16), STDIN_HEADER_BYTES - len(head)))
        if not more:  # the whole stream: read_input says what is wrong with it
            if len(head) < STDIN_HEADER_BYTES:
                return head, len(head), ""
            raise InputError(
                f"{what} is not an image convcli reads (PNG, JPEG, TIFF, GIF, WebP, "
                f"BMP, PNM, ...) nor a .npy array (no image header in its first "
                f"{limits.format_bytes(STDIN_HEADER_BYTES)})"
            )
        head += more


def _image_size(head: bytes) -> tuple[tuple[int, int], int] | None:
    """``((width, height), bands)`` of the image whose first bytes are ``head``, if Pillow finds
    its header in them."""
    from PIL import Image

    try:
        with warnings.catch_warnings(), _pixel_limit_of_our_own(Image):
            warnings.simplefilter("ignore")
            with _pillow_open(io.BytesIO(head)) as img:
                return img.size, len(img.getbands())
    except Exception:  # not an image, or not enough of its header yet
        return None


def _pillow_open(handle):
    """Pillow's ``Image.open`` of the seekable ``handle``, trying ``READ_FORMATS`` in order.

    A PNG, the first format of the list, is opened by Pillow's PNG plugin alone (Pillow's
    ``preinit`` imports five plugins: 4 ms of a 150 ms command). Otherwise the formats that
    lead the list and come with those plugins (JPEG) are tried first; all of Pillow's plugins
    are imported (``init``: 20-40 ms) only for a file they do not open, which then tries the
    whole list. Either way the first format of the list that accepts the file opens it.
    """
    import struct

    from PIL import Image, UnidentifiedImageError

    start = handle.tell()
    if handle.read(len(png.SIGNATURE)) == png.SIGNATURE:
        from PIL import PngImagePlugin

        handle.seek(start)
        try:
            return PngImagePlugin.PngImageFile(handle)
        except (SyntaxError, IndexError, TypeError, struct.error):
            pass  # what Image.open would try the other formats after: it does so below
    handle.seek(start)
    Image.preinit()
    leading = list(itertools.takewhile(lambda name: name in Image.OPEN, READ_FORMATS))
    if leading:
        with contextlib.suppress(UnidentifiedImageError):
            return Image.open(handle, formats=leading)
    Image.init()
    return Image.open(handle, formats=[name for name in READ_FORMATS if name in Image.OPEN])


def _read_up_to(stream, count: int) -> bytes:
    """``count`` bytes of ``stream``, fewer only at its end."""
    parts, got = [], 0
    while got < count:
        part = stream.read(count - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


class _Recorder:
    """A read-only stream that keeps what it reads (after ``taken``): a ``.npy`` header read
    from standard input, to be written out again."""

    def __init__(self, stream, taken: bytes):
        self.stream, self.taken = stream, taken
        self.position = 0

    def read(self, count: int = -1) -> bytes:
        if self.position < len(self.taken):
            part = self.taken[self.position : self.position + count]
        else:
            part = _read_up_to(self.stream, count)
            self.taken += part
        self.position += len(part)
        return part


def read_npy_header(handle, what: str, error: type = InputError) -> tuple[tuple, np.dtype, bool]:
    """``(shape, dtype, fortran_order)`` of an open ``.npy`` file, left at the start of the data.

    Only real numbers (no object, structured or complex dtypes); a malformed header is a
    one-line ``error`` (numpy's parser raises half a dozen kinds on hostile headers).
    """
    try:
        version = np.lib.format.read_magic(handle)
        if version not in ((1, 0), (2, 0)):
            raise error(
                f"{what}: .npy format version {version[0]}.{version[1]} is not read "
                f"(1.0 and 2.0 are)"
            )
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(handle)
    except ConvcliError:
        raise
    except Exception as exc:  # ValueError, SyntaxError, tokenize.TokenError, RecursionError...
        raise error(f"{what}: not a readable .npy file ({limits.one_line(exc)})") from None
    _check_npy_shape(shape, dtype, what, error)
    if dtype.hasobject:
        raise error(
            f"{what}: not a readable .npy file (Object arrays cannot be loaded: "
            f"convcli never unpickles)"
        )
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise error(f"{what}: holds {dtype}; convcli reads real numbers only")
    return shape, dtype, fortran


#: Dimensions a ``.npy`` header may declare (numpy's own limit is 64).
MAX_NPY_DIMENSIONS = 32


def _check_npy_shape(shape, dtype: np.dtype, what: str, error: type) -> None:
    """Refuse a ``.npy`` shape that is not a short tuple of whole numbers >= 0 whose data fits
    in 2**63 bytes (numpy's header parser lets negative sizes and booleans through).

    >>> _check_npy_shape((-2, 4), np.dtype("<f4"), "input 'a.npy'", ValueError)
    ... # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    ValueError: input 'a.npy': the .npy header declares shape (-2, 4); sizes must be whole numbers
    >= 0
    """
    shown = limits.shorten(repr(shape), 80)
    if not isinstance(shape, tuple) or len(shape) > MAX_NPY_DIMENSIONS:
        raise error(
            f"{what}: the .npy header declares shape {shown}; at most "
            f"{MAX_NPY_DIMENSIONS} dimensions are read"
        )
    if not all(type(n) is int and n >= 0 for n in shape):
        raise error(
            f"{what}: the .npy header declares shape {shown}; sizes must be whole numbers >= 0"
        )
    if math.prod(shape) * max(dtype.itemsize, 1) >= 2**63:
        raise error(f"{what}: the .npy header declares shape {shown}, more than 2**63 bytes")


def load_npy(
    path: str,
    what: str,
    error: type = InputError,
    check: Callable[[tuple, np.dtype], None] | None = None,
) -> np.ndarray:
    """A ``.npy`` array of real numbers, its header checked before any data is read.

    Refuses what ``np.load`` would crash or stall on: object, structured or complex dtypes, a
    header promising more data than the file holds (the classic tiny file that asks for a
    40 GB array), and more than the machine's memory. ``check(shape, dtype)`` runs on the
    header first, for the caller's own limits. Errors are one line, of class ``error``,
    starting with ``what``.
    """
    try:
        with open(path, "rb") as handle:
            return read_npy(handle, what, error, check)
    except OSError as exc:
        raise error(f"{what}: not a readable .npy file ({limits.one_line(exc)})") from None


def read_npy(
    handle,
    what: str,
    error: type = InputError,
    check: Callable[[tuple, np.dtype], None] | None = None,
) -> np.ndarray:
    """``load_npy`` of the ``.npy`` file open at its start in ``handle``."""
    with _npy_errors(what, error):
        return _npy_data(handle, *_checked_npy_header(handle, what, error, check))


def _npy_data(handle, shape: tuple, dtype: np.dtype, fortran: bool) -> np.ndarray:
    """The data of a ``.npy`` file at ``handle``, whose header said ``shape``, ``dtype``, order."""
    return np.fromfile(handle, dtype=dtype, count=math.prod(shape)).reshape(
        shape, order="F" if fortran else "C"
    )


@contextlib.contextmanager
def _npy_errors(what: str, error: type):
    """A failed read of a ``.npy`` file as one line of class ``error``."""
    try:
        yield
    except (ValueError, OSError, EOFError) as exc:
        raise error(f"{what}: not a readable .npy file ({limits.one_line(exc)})") from None


def _checked_npy_header(handle, what: str, error: type, check) -> tuple[tuple, np.dtype, bool]:
    """``read_npy_header``, then ``check(shape, dtype)``, the data's size against the file's
    and its memory (the array and a copy) against the machine's."""
    shape, dtype, fortran = read_npy_header(handle, what, error)
    if check is not None:
        check(shape, dtype)
    count = math.prod(shape)
    stored = os.fstat(handle.fileno()).st_size - handle.tell()
    if count * dtype.itemsize > stored:
        raise error(
            f"{what}: truncated: the header promises {count * dtype.itemsize:,} "
            f"bytes (shape {shape}), the file holds {stored:,}"
        )
    limits.check_memory(2 * count * dtype.itemsize, f"reading {what} (shape {shape})")
    return shape, dtype, fortran


#: Bytes of a ``.npy`` input's rows read at a time and put in their (C, H, W) places.
NPY_ROW_BYTES = 4 << 20


def _read_channels_first(handle, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """The C-order ``(H, W, C)`` data at ``handle`` as ``(C, H, W)``, read a few rows at a
    time straight into place: no whole ``(H, W, C)`` copy beside the result (a 4096x4096 RGB
    float32 array is 200 MB, and fresh memory costs a page fault per 4 KiB).

    >>> stored = io.BytesIO(np.arange(12, dtype=np.float32).tobytes())
    >>> _read_channels_first(stored, (2, 2, 3), np.dtype(np.float32))[0].tolist()
    [[0.0, 3.0], [6.0, 9.0]]
    """
    height, width, channels = shape
    row_values = width * channels
    rows = min(height, max(1, NPY_ROW_BYTES // (row_values * dtype.itemsize)))
    out = np.empty((channels, height, width), dtype)
    buffer = np.empty(rows * row_values, dtype)
    for first in range(0, height, rows):
        count = min(rows, height - first)
        part = buffer[: count * row_values]
        if handle.readinto(part.view(np.uint8)) != part.nbytes:
            raise EOFError("the file ended before its data did")
        out[:, first : first + count] = part.reshape(count, width, channels).transpose(2, 0, 1)
    return out


def _check_npy_input(shape: tuple, what: str, limit: int) -> None:
    """The header checks of a ``.npy`` input: (H, W) or (H, W, C), not empty, within ``limit``."""
    if len(shape) not in (2, 3):
        raise InputError(f"{what} has shape {shape}; expected (H, W) or (H, W, C)")
    if 0 in shape:
        raise InputError(f"{what} is empty (shape {shape})")
    limits.check_pixels(shape[0], shape[1], limit, what)


def _read_npy(handle, what: str, limit: int) -> np.ndarray:
    """A ``.npy`` input as ``(C, H, W)`` in its stored dtype."""
    with _npy_errors(what, InputError):
        shape, dtype, fortran = _checked_npy_header(
            handle, what, InputError, lambda shape, dtype: _check_npy_input(shape, what, limit)
        )
        if len(shape) == 3 and not fortran:
            return _read_channels_first(handle, shape, dtype)
        array = _npy_data(handle, shape, dtype, fortran)
    if array.ndim == 2:
        array = array[:, :, None]
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def _frame_message(frame: int, what: str, count: int) -> str:
    return (
        f"frame {frame} is out of range: {what} has {count} frame{'s' * (count != 1)} "
        f"(0 to {count - 1})"
    )


@contextlib.contextmanager
def _pixel_limit_of_our_own(image_module):
    """Turn Pillow's decompression-bomb check off while reading: convcli checks the size
    itself, from the header, with its own limit and message (Pillow's would stop at 179
    million pixels whatever ``--max-pixels`` says)."""
    saved = image_module.MAX_IMAGE_PIXELS
    image_module.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        image_module.MAX_IMAGE_PIXELS = saved


def _read_image(handle, path: str, alpha_as_channel: bool, limit: int, frame: int = 0) -> Picture:
    """An image Pillow decodes, from ``handle`` open at the start of the file ``path``."""
    from PIL import Image, UnidentifiedImageError

    what = f"input {path!r}"
    try:
        with warnings.catch_warnings(), _pixel_limit_of_our_own(Image):
            # Pillow warns about odd metadata (corrupt EXIF, unknown TIFF tags): not our user's
            # problem, and not to be turned into errors by a warnings filter.
            warnings.simplefilter("ignore")
            with _pillow_open(handle) as img:
                if frame:
                    count = getattr(img, "n_frames", 1)
                    if frame >= count:
                        raise InputError(_frame_message(frame, what, count), names=("frame",))
                    img.seek(frame)
                width, height = img.size
                limits.check_pixels(height, width, limit, what)
                # decoded pixels, the EXIF-rotated and mode-converted copies, the arrays
                bands = len(img.getbands())
                limits.check_memory(
                    height * width * (8 + 8 * bands),
                    f"decoding {what} ({height}x{width} {img.mode})",
                )
                image_claims.check_plausible(img, handle, frame, what)
                img.load()
                return _picture(_upright(img), alpha_as_channel, what)
    except UnidentifiedImageError:
        raise InputError(
            f"{what} is not an image convcli reads (PNG, JPEG, TIFF, GIF, WebP, BMP, "
            f"PNM, ...) nor a .npy array"
        ) from None
    except ConvcliError:
        raise
    except MemoryError:
        raise LimitError(f"not enough memory to decode {what}") from None
    except Exception as exc:  # Pillow's decoders raise many kinds on broken files
        raise InputError(f"{what} is corrupt or truncated ({limits.one_line(exc)})") from None


def _picture16(pixels: np.ndarray, alpha_as_channel: bool) -> Picture:
    """The Picture of a 16-bit colour PNG's pixels (H, W, samples), alpha set aside or kept."""
    data = pixels.transpose(2, 0, 1)
    alpha = None
    if data.shape[0] in (2, 4) and not alpha_as_channel:  # gray+alpha, RGBA
        data, alpha = data[:-1], data[-1].astype(np.float32)
    return Picture(np.ascontiguousarray(data), 65535.0, alpha)


def _upright(img):
    """``img`` turned as its EXIF orientation says (tag removed); as stored if that is corrupt.

    Turned in place: no copy of an image that is already upright (Pillow's default copies
    it, 40 ms and 50 MB for a 4096^2 RGB image).
    """
    from PIL import ImageOps

    with contextlib.suppress(Exception):  # a broken EXIF block: the pixels themselves are fine
        ImageOps.exif_transpose(img, in_place=True)
    return img


def _picture(img, alpha_as_channel: bool, what: str) -> Picture:
    """The Picture of a decoded Pillow image: modes converted, alpha set aside or kept."""
    target = (
        "RGBA"
        if img.mode == "P" and "transparency" in img.info
        else _CONVERT.get(img.mode, img.mode)
    )
    if target != img.mode:
        img = img.convert(target)
    alpha = None
    if img.mode in _ALPHA_BASE:
        alpha = np.asarray(img.getchannel("A"), dtype=np.float32)
        img = img.convert(_ALPHA_BASE[img.mode])
    if img.mode not in _WHITE:
        raise InputError(f"{what} has pixel mode {img.mode!r}, which convcli does not read")
    data = _planes(img)  # the stored dtype: converted to float32 band by band downstream
    if alpha is not None and alpha_as_channel:
        data, alpha = np.concatenate([data, alpha[None]]), None
    return Picture(np.ascontiguousarray(data), _WHITE[img.mode], alpha)


def _planes(img) -> np.ndarray:
    """The values of a decoded Pillow image as (C, H, W) in their stored dtype, copied out in
    strips of about ``PLANE_STRIP_BYTES``: a 4096^2 RGB image peaks at Pillow's pixels and the
    planes (112 MB), not also a whole (H, W, C) copy and Pillow's bytes of it (208 MB).

    >>> from PIL import Image
    >>> _planes(Image.new("RGB", (2, 1), (1, 2, 3))).tolist()
    [[[1, 1]], [[2, 2]], [[3, 3]]]
    """
    width, height = img.size
    rows = max(1, PLANE_STRIP_BYTES // max(1, width * len(img.getbands()) * 4))
    planes = None
    for first in range(0, height, rows):
        strip = np.asarray(img.crop((0, first, width, min(height, first + rows))))
        strip = strip[None] if strip.ndim == 2 else strip.transpose(2, 0, 1)
        if planes is None:
            planes = np.empty((len(strip), height, width), strip.dtype)
        planes[:, first : first + strip.shape[1]] = strip
    return planes if planes is not None else np.asarray(img)[None]


#: Bytes of a decoded image copied out at a time (``_planes``).
PLANE_STRIP_BYTES = 4 << 20


@dataclass(frozen=True)
class OutputSettings:
    """How feature maps become files (the ``--map``, ``--depth`` and layout options).

    ``map`` is a ``mapping.MAP_MODES`` mode (``scale``/``offset`` select ``offset`` when it is
    ``auto``); ``depth`` is ``"8"``, ``"16"``, ``"32f"`` or None (derived); ``split`` writes one
    file per map, ``montage`` one grid image (``grid`` = (rows, cols) implies it); ``rgba``
    writes 4 maps as RGBA; ``channels_first`` writes ``.npy`` as (C, H, W); ``legend`` draws
    a ramp and the values it stands for beside each single map or montage tile.

    >>> OutputSettings(offset=100).map
    'offset'
    >>> OutputSettings(split=True, montage=True)
    Traceback (most recent call last):
    ...
    convcli.errors.ParameterError: split and montage exclude each other
    """

    map: str = "auto"
    scale: float | None = None
    offset: float | None = None
    joint: bool = False
    depth: str | None = None
    colormap: str | None = None
    split: bool = False
    montage: bool = False
    grid: tuple[int, int] | None = None
    rgba: bool = False
    channels_first: bool = False
    legend: bool = False

    def __post_init__(self):
        shifted = self.scale is not None or self.offset is not None
        if shifted and self.map == "auto":
            object.__setattr__(self, "map", "offset")
        if self.grid is not None:
            object.__setattr__(self, "montage", True)
        for option, value, known in (
            ("map", self.map, mapping.MAP_MODES),
            ("depth", self.depth, DEPTHS),
            ("colormap", self.colormap, mapping.COLORMAPS),
        ):
            if value is not None and value not in known:
                raise ParameterError(not_one_of(option, value, known), names=(option,))
        problems = (  # (broken, message, the parameters it names in order)
            (
                shifted and self.map != "offset",
                f"scale and offset apply to map offset, not map {self.map}",
                ("scale", "offset", "map", "map"),
            ),
            (
                shifted and not np.isfinite([self.scale or 0.0, self.offset or 0.0]).all(),
                "scale and offset must be finite numbers",
                ("scale", "offset"),
            ),
            (
                self.joint and self.map != "minmax",
                "joint applies to map minmax",
                ("joint", "map"),
            ),
            (
                self.split and self.montage,
                "split and montage exclude each other",
                ("split", "montage"),
            ),
            (
                self.rgba and (self.split or self.montage or self.colormap is not None),
                "rgba writes 4 maps as one RGBA image; not with split, montage or colormap",
                ("rgba", "split", "montage", "colormap"),
            ),
            (
                self.legend and self.rgba,
                "legend goes beside single maps; not with rgba",
                ("legend", "rgba"),
            ),
            (
                self.legend and self.map == "none",
                "legend shows the range map puts into pixels; map none keeps raw values",
                ("legend", "map", "map"),
            ),
        )
        for bad, message, names in problems:
            if bad:
                raise ParameterError(message, names=names)


def split_names(path: str, count: int) -> list[str]:
    """The files ``--split`` writes: ``stem_00.ext`` ... zero-padded to the last index (at least 2).

    >>> split_names("out/maps.png", 3)
    ['out/maps_00.png', 'out/maps_01.png', 'out/maps_02.png']
    >>> split_names("m.npy", 101)[-1]
    'm_100.npy'
    """
    stem, ext = os.path.splitext(path)
    width = max(2, len(str(count - 1)))
    return [f"{stem}_{index:0{width}d}{ext}" for index in range(count)]


def check_output_path(
    output: str,
    inputs: Sequence[str] = (),
    settings: OutputSettings | None = None,
    format: str | None = None,
) -> None:
    """Fail before any work if ``output`` cannot be written safely, or does not suit ``settings``.

    ``output`` ``-`` is standard output, in ``format`` (an ``OUTPUT_FORMATS`` name).
    """
    settings = settings or OutputSettings()
    if (
        output != STDIO
        and not settings.split
        and (output.endswith(("/", os.sep)) or os.path.isdir(output))
    ):
        raise OutputError(
            f"output {output!r} is a directory: -o names a file (--out-dir a folder of them)"
        )
    check_output_format(output, settings, format)
    if output == STDIO or is_url(output):  # an object store has no folders to check
        return
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise OutputError(f"output directory {directory!r} does not exist")
    if not os.access(directory, os.W_OK):
        raise OutputError(f"output directory {directory!r} is not writable")
    stem, ext = os.path.splitext(os.path.basename(output))
    split_file = re.compile(re.escape(stem) + r"_\d+" + re.escape(ext))
    for source in inputs:
        beside = os.path.realpath(os.path.dirname(os.path.abspath(source))) == os.path.realpath(
            directory
        )
        if settings.split and beside and split_file.fullmatch(os.path.basename(source)):
            raise OutputError(
                f"split could write over the input {source!r}; convcli never overwrites an input",
                names=("split",),
            )
        if not settings.split and (
            os.path.realpath(source) == os.path.realpath(output)
            or (
                os.path.exists(output)
                and os.path.exists(source)
                and os.path.samefile(source, output)
            )
        ):
            raise OutputError(
                f"output {output!r} is the input {source!r}; convcli never overwrites an input"
            )


def check_output_format(
    output: str, settings: OutputSettings | None = None, format: str | None = None
) -> None:
    """The checks that need no file system: a known extension (or ``format`` for ``-``) that
    suits the settings.

    >>> check_output_format("-", OutputSettings(split=True), "png")
    Traceback (most recent call last):
    ...
    convcli.errors.OutputError: split writes one file per map; output - (stdout) takes one
    """
    settings = settings or OutputSettings()
    if output == STDIO:
        if format not in OUTPUT_FORMATS:
            raise OutputError(
                f"output - (stdout) needs format, one of {', '.join(OUTPUT_FORMATS)}",
                names=("output", "format"),
            )
        if settings.split:
            raise OutputError(
                "split writes one file per map; output - (stdout) takes one",
                names=("split", "output"),
            )
        output = f"stdout.{format}"
    ext = extension(output)
    if ext != NPY and ext not in IMAGE_FORMATS:
        known = not_one_of("", ext, [NPY] + sorted(IMAGE_FORMATS))
        raise OutputError(f"output {output!r} has no known extension: {known}")
    _check_format(output, settings)


def _check_format(output: str, settings: OutputSettings) -> None:
    """The checks that need only the output's extension and the settings."""
    ext = extension(output)
    if ext == NPY:
        if settings.depth not in (None, "32f"):
            raise ParameterError(
                f"depth {settings.depth} applies to images; .npy always stores float32",
                names=("depth",),
            )
        image_only = {
            "montage": settings.montage,
            "colormap": settings.colormap,
            "rgba": settings.rgba,
            "legend": settings.legend,
        }
        for name, used in image_only.items():
            if used:
                raise ParameterError(
                    f"{name} writes images, not .npy (.npy takes split or channels_first)",
                    names=(name, "split", "channels_first"),
                )
        return
    fmt, depths = IMAGE_FORMATS[ext]
    if settings.channels_first:
        raise ParameterError("channels_first applies to .npy outputs", names=("channels_first",))
    if settings.depth is not None and settings.depth not in depths:
        raise ParameterError(
            f"depth {settings.depth} is not available for {fmt} (it stores {_depth_list(depths)})",
            names=("depth",),
        )
    if settings.rgba and not any(4 in counts for counts in depths.values()):
        raise ParameterError(
            f"rgba needs a format with alpha (.png, .tif, .webp); {fmt} has none",
            names=("rgba",),
        )
    if settings.map == "none" and ("32f" not in depths or settings.depth not in (None, "32f")):
        raise ParameterError(
            "map none keeps values unmapped, which only float outputs hold: "
            ".npy or .tif (32-bit float)",
            names=("map",),
        )
    if settings.colormap and (settings.depth == "32f" or settings.map == "none"):
        raise ParameterError(
            "colormap makes 8- or 16-bit colour, not a float output", names=("colormap",)
        )


def check_output_shape(
    output: str,
    settings: OutputSettings | None,
    shape: Sequence[int],
    white: float | None = None,
    format: str | None = None,
) -> None:
    """Before the work: refuse an output whose planned maps (H, W, C) its format cannot hold
    (too wide or tall, too many bytes), or too many maps to lay out (``limits.check_layout``);
    channel counts are the writer's to refuse, after the steps have said what is wrong with
    them.

    A montage or a legend is checked at its size (``montage.canvas_shape``); the writer
    checks every image again at its exact size, before encoding it.

    >>> check_output_shape("wide.webp", None, (10, 20000, 1))     # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    convcli.errors.OutputError: output 'wide.webp' would be 10x20000 pixels (rows x columns);
    WEBP stores at most 16383 per side (use .png, .tif or .npy)
    """
    settings = settings or OutputSettings()
    height, width, count = (int(n) for n in shape)
    if settings.split or settings.montage:
        limits.check_layout(count, "split" if settings.split else "montage")
    name = f"stdout.{format}" if output == STDIO else output
    if extension(name) == NPY:
        return
    fmt, depths = IMAGE_FORMATS[extension(name)]
    channels = 3 if settings.colormap else 1
    if not (settings.split or settings.montage):
        channels = 3 if settings.colormap else count
    if settings.montage or (settings.legend and channels == 1):
        from convcli.render.montage import canvas_shape

        tiles = count if settings.montage else 1
        height, width = canvas_shape(
            tiles, height, width, channels, settings.grid, settings.montage, settings.legend
        )[1:]
    if not any(channels in counts for counts in depths.values()):
        return  # the writer names the channel counts the format holds
    try:
        depth = _choose_depth(fmt, depths, settings, white, channels)
    except ShapeError:  # channels the format does not hold: the steps' errors come first
        return
    check_image_size(output, fmt, height, width, channels, depth)


def check_image_size(
    output: str, fmt: str, height: int, width: int, channels: int, depth: str
) -> None:
    """Refuse an image of ``height`` x ``width`` x ``channels`` at ``depth`` that ``fmt`` cannot
    store (``MAX_SIDE``, ``MAX_PIXEL_BYTES``)."""
    shown = limits.shorten(output)
    if max(height, width) > MAX_SIDE[fmt]:
        raise OutputError(
            f"output {shown!r} would be {height}x{width} pixels (rows x columns); {fmt} "
            f"stores at most {MAX_SIDE[fmt]} per side (use .png, .tif or .npy)"
        )
    n_bytes = height * width * channels * {"8": 1, "16": 2, "32f": 4}[depth]
    if n_bytes > MAX_PIXEL_BYTES.get(fmt, n_bytes):
        raise OutputError(
            f"output {shown!r} would hold {limits.format_bytes(n_bytes)} of pixels; a {fmt} "
            f"file holds at most {limits.format_bytes(MAX_PIXEL_BYTES[fmt])} (use .png or .npy)"
        )


def _check_channels(fmt: str, count: int, settings: OutputSettings) -> None:
    """The map counts one image of ``fmt`` holds (without --split or --montage)."""
    if settings.colormap and count != 1:
        raise ShapeError(
            f"colormap colours a single map; for {count} maps use split or montage",
            names=("colormap", "split", "montage"),
        )
    if settings.legend and count != 1:
        raise ShapeError(
            f"legend goes beside a single map; for {count} maps use split or montage",
            names=("legend", "split", "montage"),
        )
    if settings.rgba and count != 4:
        raise ShapeError(f"rgba needs exactly 4 feature maps, got {count}", names=("rgba",))
    if not settings.rgba and count not in (1, 3):
        raise ShapeError(
            f"{count} feature maps do not fit one {fmt} image (1 = gray, 3 = RGB, "
            f"4 = RGBA with rgba); use split, montage or a .npy output",
            names=("rgba", "split", "montage"),
        )


def _depth_list(depths: dict) -> str:
    return ", ".join("32-bit float" if d == "32f" else f"{d}-bit" for d in depths)


def write_output(
    path: str,
    maps: np.ndarray,
    white: float | None = None,
    alpha: np.ndarray | None = None,
    settings: OutputSettings | None = None,
    *,
    signed: Sequence[bool] | None = None,
    labels: Sequence[str] | None = None,
    format: str | None = None,
    in_place: bool = False,
    replace: bool = True,
) -> None:
    """Write ``maps`` (C, H, W) to ``path`` as ``settings`` say; all files or none; unless
    ``replace``, none over a file that exists (``atomic.atomic_write_all``).

    With ``in_place`` the caller is done with a float32 ``maps``, which is then mapped where
    it lies instead of in a copy (a 4096x4096 RGB map is 200 MB).

    ``path`` ``-`` writes to standard output in ``format`` (``png``, ``npy``, ...), only once
    the whole file is encoded.

    ``white`` is the input's white level (None for ``.npy`` inputs); ``alpha`` (H, W) is carried
    into single images whose format stores it at the chosen depth; ``signed`` flags the maps
    that are 0 on a flat input (``mapping.signed_maps``, for ``--map auto``); ``labels`` name
    the montage tiles (default ``0, 1, ...``). Everything is checked before any file is written.
    """
    settings = settings or OutputSettings()
    shape = np.shape(maps)
    if len(shape) != 3 or shape[0] == 0:
        raise ShapeError(f"feature maps must be (C, H, W) with C >= 1, got shape {shape}")
    check_output_format(path, settings, format)
    if settings.split or settings.montage:
        limits.check_layout(shape[0], "split" if settings.split else "montage")
    name = f"stdout.{format}" if path == STDIO else path  # its extension says the format
    _check_writer_memory(name, maps, settings, in_place, path == STDIO)
    maps = np.asarray(maps, dtype=np.float32)
    targets = split_names(path, len(maps)) if settings.split else [path]
    for target in targets:
        if os.path.isdir(target):
            raise OutputError(f"output {target!r} is a directory")
    if extension(name) == NPY:
        mode = "none" if settings.map == "auto" else settings.map
        values = mapping.map_values(maps, mode, white or 1.0, **_map_options(settings))
        arrays = [values[i : i + 1] for i in range(len(values))] if settings.split else [values]
        savers = [
            _npy_saver(a if settings.channels_first else a.transpose(1, 2, 0)) for a in arrays
        ]
    else:
        savers = _image_savers(name, maps, white, alpha, settings, signed, labels, in_place)
    if path == STDIO:
        write_stdout(savers[0])
    else:
        atomic_write_all(list(zip(targets, savers)), replace)


def _check_writer_memory(
    name: str, maps, settings: OutputSettings, in_place: bool, stdout: bool
) -> None:
    """The memory check of ``write_output``, per value of ``maps``: the float32 copy it maps
    (unless ``in_place`` on float32 maps), colours (three float32 planes per map, the
    positions looked up and a float64 plane being interpolated), the transposed ``.npy`` copy
    or the 8/16-bit pixels, and for ``-o -`` the encoded file in memory.
    """
    dtype = getattr(maps, "dtype", np.dtype(np.float32))
    copied = 0 if in_place and dtype == np.float32 else 4
    if extension(name) == NPY:
        per_value = copied + 4 + 4 * stdout
    else:
        colours = 3 if settings.colormap else 1
        sixteen = settings.depth == "16" or (settings.depth is None and dtype != np.uint8)
        pixel = 2 * colours if sixteen else colours
        per_value = copied + (28 if settings.colormap else 0) + pixel * (1 + stdout)
    limits.check_arrays(
        f"writing {limits.shorten(name)!r}",
        itemsize=per_value,
        held=getattr(maps, "nbytes", 0),
        mapped_and_encoded_maps=np.shape(maps),
    )


def write_stdout(save: Callable) -> None:
    """Encode with ``save(file)`` in memory, then write it all to standard output."""
    import io

    from convcli.io.streams import write_bytes

    encoded = io.BytesIO()
    save(encoded)
    write_bytes(encoded.getbuffer())


def _map_options(settings: OutputSettings) -> dict:
    return dict(
        scale=settings.scale,
        offset=settings.offset,
        joint=settings.joint,
        symmetric=settings.colormap in mapping.DIVERGING,
    )


def _image_savers(
    path, maps, white, alpha, settings, signed, labels, in_place=False
) -> list[Callable]:
    fmt, depths = IMAGE_FORMATS[extension(path)]
    count = len(maps)
    one_image = not (settings.split or settings.montage)
    if one_image:
        _check_channels(fmt, count, settings)
    channels = 3 if settings.colormap else (count if one_image else 1)
    depth = _choose_depth(fmt, depths, settings, white, channels)
    if not (settings.montage or settings.legend):  # checked at their exact size before drawing
        check_image_size(path, fmt, *maps.shape[1:], channels, depth)
    out_white = DEPTHS[depth]
    values, used, gain = mapped_levels(maps, white, settings, depth, signed, in_place)
    colour = _colouring(settings.colormap, out_white)
    values = colour(values).swapaxes(0, 1)
    if settings.montage or settings.legend:
        from convcli.render.montage import montage

        legend = (
            _legend(used, gain, out_white, colour, settings.colormap) if settings.legend else None
        )
        check = lambda shape: check_image_size(path, fmt, *shape[1:], shape[0], depth)  # noqa: E731
        if settings.montage:
            names = [str(i) for i in range(count)] if labels is None else list(labels)
            files = [montage(values, names, out_white, settings.grid, check, legend)]
        else:  # one map, or each --split file: a one-tile montage without a label
            files = [
                montage(
                    values[i : i + 1],
                    None,
                    out_white,
                    (1, 1),
                    check,
                    legend and replace(legend, values=legend.values[i : i + 1]),
                )
                for i in range(count)
            ]
    elif settings.split:
        files = list(values)
    else:
        files = [values[0] if settings.colormap else values[:, 0]]
        if alpha is not None and channels + 1 in depths[depth]:
            files[0] = np.concatenate([files[0], np.clip(alpha * gain, 0, out_white)[None]])
    return [_image_saver(fmt, depth, f) for f in files]


def mapped_levels(
    maps: np.ndarray,
    white: float | None,
    settings: OutputSettings,
    depth: str,
    signed: Sequence[bool] | None,
    in_place: bool = False,
) -> tuple[np.ndarray, mapping.MapRange | None, float]:
    """Float32 ``maps`` (C, H, W) in the input's units (white ``white``) as levels of an image
    of ``depth``: scaled to its white level, then ``settings.map`` applied (``mapping``).
    Returns the levels, the range the map mode used and the gain; with ``in_place`` ``maps``
    is overwritten (a band of rows gives the same levels as the whole map for the modes that
    look at one value at a time: ``auto``, ``clip``, ``abs``, ``offset``).

    >>> maps = np.array([[[-1.0, 0.0, 300.0]]], np.float32)
    >>> mapped_levels(maps, 255.0, OutputSettings(), "16", [True])[0].tolist()
    [[[32511.0, 32768.0, 65535.0]]]
    """
    out_white = DEPTHS[depth]
    gain = out_white / white if white else 1.0
    mode = "none" if settings.map == "auto" and depth == "32f" else settings.map
    scaled = maps if in_place else maps.copy()  # mapped where it lies
    if gain != 1.0:
        scaled *= np.float32(gain)
    if settings.legend and mode == "none":
        raise ParameterError(
            "legend shows the range map puts into pixels; a float output keeps "
            "raw values (give map minmax, clip, abs or offset)",
            names=("legend", "map", "map"),
        )
    values, used = mapping.map_with_range(
        scaled, mode, out_white, signed=signed, in_place=True, **_map_options(settings)
    )
    return values, used, gain


def integer_pixels(levels: np.ndarray, bits: int, out: np.ndarray | None = None) -> np.ndarray:
    """Levels (K, H, W) as 8- or 16-bit pixels (H, W, K), into ``out`` if given; ``levels``
    is overwritten (``mapping.to_integers`` in place).

    >>> integer_pixels(np.array([[[0.4, 254.6]], [[-3.0, 300.0]]], np.float32), 8).tolist()
    [[[0, 0], [255, 255]]]
    """
    if out is None:
        out = np.empty(levels.shape[1:] + levels.shape[:1], np.uint8 if bits == 8 else np.uint16)
    for channel, plane in enumerate(levels):  # straight into (H, W, K): no full-size transpose
        out[:, :, channel] = mapping.to_integers(plane, bits, in_place=True)
    return out


def single_image_depth(
    path: str, settings: OutputSettings, shape: Sequence[int], white: float | None
) -> str:
    """The depth of the one image ``write_output`` makes of maps of ``shape`` (C, H, W) at
    ``path`` (no split, montage or colormap), after the checks it makes on the format, the
    channels and the size.

    >>> single_image_depth("out.png", OutputSettings(), (3, 64, 64), 65535.0)
    '16'
    """
    check_output_format(path, settings, None)
    fmt, depths = IMAGE_FORMATS[extension(path)]
    _check_channels(fmt, shape[0], settings)
    depth = _choose_depth(fmt, depths, settings, white, shape[0])
    check_image_size(path, fmt, *shape[1:], shape[0], depth)
    return depth


def _colouring(colormap: str | None, white: float) -> Callable[[np.ndarray], np.ndarray]:
    """Levels (any shape) in ``[0, white]`` to colour planes (K, *shape): the colormap's three,
    or the levels themselves as one gray plane."""
    if colormap:
        return lambda levels: mapping.apply_colormap(levels, white, colormap)
    return lambda levels: np.asarray(levels)[None]


def _legend(
    used: mapping.MapRange, gain: float, white: float, colour: Callable, colormap: str | None
):
    """What white, the middle and black stand for in each map, in the maps' own units (those
    of a ``.npy`` output: ``used`` is in the output's units, ``gain`` times larger). The middle
    is the colormap's centre, or the mid-grey that ``--map offset`` puts 0 on (128 of 255)."""
    from convcli.render.montage import Legend

    levels = (1.0, 0.5 if colormap else mapping.mid_level(white) / white, 0.0)
    values = np.stack([used.at(level) / gain for level in levels], axis=1)
    return Legend(values, colour, used.absolute)


def _choose_depth(
    fmt: str, depths: dict, settings: OutputSettings, white: float | None, channels: int
) -> str:
    """The asked depth (which must store ``channels``), else the input's, or the next lower one
    the format stores for ``channels``: 8-bit in -> 8, 16-bit in -> 16, float in -> 32f."""
    asked = "32f" if settings.map == "none" else settings.depth
    if asked is not None:
        if channels not in depths[asked]:
            hint, names = (
                ("split, a 16-bit .png or depth 8", ("split", "depth"))
                if asked == "16"
                else ("split or a .npy output", ("split",))
            )
            raise ShapeError(
                f"a {_depth_list([asked])} {fmt} holds 1 channel, these maps need {channels}; "
                f"use {hint}",
                names=names,
            )
        return asked
    derived = "32f" if white == 1.0 else "16" if (white or 0) > 255 else "8"
    lower = ("32f", "16", "8")[("32f", "16", "8").index(derived) :]
    return next(depth for depth in lower if channels in depths.get(depth, ()))


def _npy_saver(array: np.ndarray) -> Callable:
    """A saver of ``array`` as float32 ``.npy``, the bytes ``np.save`` writes for it: a
    float32 C-contiguous array as it is, any other (the ``(H, W, C)`` view of the maps) a few
    rows at a time through one small buffer, never a whole-size copy (a 4096x4096 RGB map is
    200 MB).

    >>> maps = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    >>> written, saved = io.BytesIO(), io.BytesIO()
    >>> _npy_saver(maps.transpose(1, 2, 0))(written)
    >>> np.save(saved, maps.transpose(1, 2, 0)); written.getvalue() == saved.getvalue()
    True
    """

    def save(handle) -> None:
        if array.dtype == np.float32 and array.flags.c_contiguous:
            np.save(handle, array)
            return
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32))}
        np.lib.format.write_array_header_1_0(
            handle, header | {"fortran_order": False, "shape": array.shape}
        )
        row_values = math.prod(array.shape[1:])
        rows = min(len(array), max(1, NPY_ROW_BYTES // max(1, 4 * row_values)))
        buffer = np.empty(rows * row_values, np.float32)
        for first in range(0, len(array), rows):
            part = array[first : first + rows]
            chunk = buffer[: part.size].reshape(part.shape)
            chunk[...] = part
            handle.write(chunk.data)

    return save


def _image_saver(fmt: str, depth: str, values: np.ndarray) -> Callable:
    """A saver for one image: ``values`` (K, H, W) in the depth's range, K = 1..4."""
    if depth == "32f":
        pixels = np.ascontiguousarray(values[0], dtype=np.float32)
    else:
        pixels = integer_pixels(values, 8 if depth == "8" else 16)
        if fmt == "PNG":
            return lambda handle: png.write_png(handle, pixels)
        pixels = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels

    def save(handle):
        from PIL import Image

        Image.fromarray(pixels).save(handle, format=fmt, **_SAVE_OPTIONS.get(fmt, {}))

    return save
