"""Input shapes for traces: ``HxWxC`` text, or the header of an image or ``.npy`` file."""

from __future__ import annotations

import os
import re
import warnings

from convcli.errors import InputError, ParameterError
from convcli.explain.language import Shape
from convcli.io.paths import require_regular_file
from convcli.limits import parse_whole, shorten


def parse_shape(text: str) -> Shape:
    """``HxWxC``, or ``HxW`` for one channel.

    >>> parse_shape("224x224x3"), parse_shape("28x28")
    ((224, 224, 3), (28, 28, 1))
    """
    parts = str(text).lower().replace(" ", "").split("x")
    if len(parts) not in (2, 3) or not all(re.fullmatch(r"[0-9]+", p, re.ASCII) for p in parts):
        raise ParameterError(f"input {shorten(text)!r} is not HxWxC, HxW or an existing file")
    values = [parse_whole(p, f"input {shorten(text)!r}: a size") for p in parts] + [1] * (
        3 - len(parts)
    )
    if min(values) < 1:
        raise ParameterError(f"input {shorten(text)!r} must have sizes of at least 1")
    return tuple(values)


def input_shape(spec: str) -> Shape:
    """The (H, W, C) a command would see: from ``HxWxC``/``HxW`` or a file's header only.

    Images: Pillow reads the size and mode without decoding (EXIF rotation swaps H and W;
    alpha is set aside as ``convcli conv`` does by default). ``.npy``: the header, via a
    read-only memory map.
    """
    if re.fullmatch(r"[0-9\sxX]+", str(spec)) and not os.path.exists(spec):
        return parse_shape(spec)
    if not os.path.exists(spec):
        raise InputError(f"input {spec!r} is neither HxWxC nor an existing file")
    require_regular_file(spec, "input")
    if spec.lower().endswith(".npy"):
        return _npy_shape(spec)
    return _image_shape(spec)


def _npy_shape(path: str) -> Shape:
    from convcli.io.images import read_npy_header  # a hostile header is a clean error

    try:
        with open(path, "rb") as handle:
            shape, dtype, _ = read_npy_header(handle, f"input {path!r}")
        kind = dtype.kind
    except OSError as exc:
        raise InputError(f"input {path!r} is not a readable .npy file ({exc})") from None
    if kind not in "biuf" or len(shape) not in (2, 3) or 0 in shape:
        raise InputError(
            f"input {path!r} has shape {shape} of kind {kind!r}; "
            f"expected real numbers shaped (H, W) or (H, W, C)"
        )
    return (shape[0], shape[1], shape[2] if len(shape) == 3 else 1)


def _orientation(img) -> int:
    """The EXIF orientation tag, without decoding: a PNG's ``getexif()`` loads the pixels to
    look for an eXIf chunk after them, so for PNG only a chunk before the pixels is read."""
    if img.format != "PNG":
        return img.getexif().get(0x0112, 1)
    from PIL import Image

    exif = Image.Exif()
    if img.info.get("exif"):
        exif.load(img.info["exif"])
    return exif.get(0x0112, 1)


def _image_formats() -> list:
    """The formats ``convcli conv`` reads (``images.READ_FORMATS``), as Pillow has them."""
    from PIL import Image

    from convcli.io.images import READ_FORMATS

    Image.init()
    return [name for name in READ_FORMATS if name in Image.OPEN]


def _image_shape(path: str) -> Shape:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # nothing is decoded; Pillow's notes on odd metadata are not the user's problem
            warnings.simplefilter("ignore")
            with Image.open(path, formats=_image_formats()) as img:
                (width, height), mode, bands = img.size, img.mode, img.getbands()
                orientation = _orientation(img)
    except UnidentifiedImageError:
        raise InputError(f"input {path!r} is not an image Pillow can read") from None
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"input {path!r} is corrupt or too large ({exc})") from None
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees
        height, width = width, height
    channels = 3 if mode in ("P", "PA", "CMYK") else sum(b not in ("A", "a", "X") for b in bands)
    return (height, width, channels)


# --------------------------------------------------------------------------------------------
