"""Reading inputs and writing outputs.

At the edges arrays are ``H x W x C`` (images and ``.npy`` files); inside they are ``(C, H, W)``
float32 holding the raw stored values (0..255 for 8-bit images, 0..65535 for 16-bit, the
numbers themselves for ``.npy``), so a ``.npy`` result equals what PyTorch or OpenCV compute
on the same pixels. Outputs are written to a temporary file beside the target and renamed
into place, so a failed or interrupted write never leaves a partial file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from convcli.errors import InputError, OutputError, ShapeError

#: Output formats by extension: (Pillow format name, can store 16-bit gray, can store alpha).
IMAGE_FORMATS = {
    ".png": ("PNG", True, True),
    ".tif": ("TIFF", True, True),
    ".tiff": ("TIFF", True, True),
    ".jpg": ("JPEG", False, False),
    ".jpeg": ("JPEG", False, False),
    ".bmp": ("BMP", False, False),
    ".webp": ("WEBP", False, True),
}
NPY = ".npy"

#: Pillow modes converted on reading, and the white level of each stored mode.
_CONVERT = {"1": "L", "P": "RGB", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB",
            "HSV": "RGB", "RGBa": "RGBA", "La": "LA", "RGBX": "RGB"}
_WHITE = {"L": 255.0, "RGB": 255.0, "I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0,
          "I;16N": 65535.0, "I": 65535.0, "F": 1.0}
_ALPHA_BASE = {"LA": "L", "RGBA": "RGB"}


@dataclass
class Picture:
    """An input: ``data`` (C, H, W) float32 raw values, and what is needed to write it back.

    ``white`` is the value of full white in the source encoding (255, 65535, 1.0), or None
    for ``.npy``; ``alpha`` is the (H, W) alpha plane set aside from the colour channels.
    """

    data: np.ndarray
    white: Optional[float] = None
    alpha: Optional[np.ndarray] = None


def extension(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def read_input(path: str, alpha_as_channel: bool = False) -> Picture:
    """Read an image Pillow can open, or a ``.npy`` array shaped (H, W) or (H, W, C).

    Alpha is set aside in ``Picture.alpha`` unless ``alpha_as_channel``, which keeps it as
    the last channel. EXIF orientation is applied (as OpenCV's ``imread`` does); of an
    animated or multi-page file the first frame is used.
    """
    if not os.path.exists(path):
        raise InputError(f"input {path!r} does not exist")
    if os.path.isdir(path):
        raise InputError(f"input {path!r} is a directory, not a file")
    if not os.access(path, os.R_OK):
        raise InputError(f"input {path!r} is not readable (permission denied)")
    if extension(path) == NPY:
        return Picture(_read_npy(path))
    return _read_image(path, alpha_as_channel)


def _read_npy(path: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"input {path!r} is not a readable .npy file ({exc})") from None
    if array.dtype.kind not in "biuf":
        raise InputError(f"input {path!r} has dtype {array.dtype}; convcli reads real numbers only")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise InputError(f"input {path!r} has shape {array.shape}; expected (H, W) or (H, W, C)")
    if array.size == 0:
        raise InputError(f"input {path!r} is empty (shape {array.shape})")
    return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32)


def _read_image(path: str, alpha_as_channel: bool) -> Picture:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                img = ImageOps.exif_transpose(img)
    except UnidentifiedImageError:
        raise InputError(f"input {path!r} is not an image Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"input {path!r} is too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"input {path!r} is corrupt or truncated ({exc})") from None
    target = "RGBA" if img.mode == "P" and "transparency" in img.info else _CONVERT.get(img.mode, img.mode)
    if target != img.mode:
        img = img.convert(target)
    alpha = None
    if img.mode in _ALPHA_BASE:
        alpha = np.asarray(img.getchannel("A"), dtype=np.float32)
        img = img.convert(_ALPHA_BASE[img.mode])
    if img.mode not in _WHITE:
        raise InputError(f"input {path!r} has pixel mode {img.mode!r}, which convcli does not read")
    data = np.asarray(img, dtype=np.float32)
    data = data[None] if data.ndim == 2 else data.transpose(2, 0, 1)
    if alpha is not None and alpha_as_channel:
        data, alpha = np.concatenate([data, alpha[None]]), None
    return Picture(np.ascontiguousarray(data), _WHITE[img.mode], alpha)


def check_output_path(output: str, inputs: Sequence[str] = ()) -> None:
    """Fail before any work if ``output`` cannot be written safely."""
    ext = extension(output)
    if ext != NPY and ext not in IMAGE_FORMATS:
        known = ", ".join([NPY] + sorted(IMAGE_FORMATS))
        raise OutputError(f"output {output!r} has no known extension (use one of {known})")
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise OutputError(f"output directory {directory!r} does not exist")
    if os.path.isdir(output):
        raise OutputError(f"output {output!r} is a directory")
    for source in inputs:
        if os.path.realpath(source) == os.path.realpath(output) or (
            os.path.exists(output) and os.path.exists(source) and os.path.samefile(source, output)
        ):
            raise OutputError(f"output {output!r} is the input {source!r}; convcli never overwrites an input")


def to_pixels(maps: np.ndarray, source_white: Optional[float], bits: int) -> np.ndarray:
    """Map float maps to unsigned integers of ``bits``: rescale white, round half to even, clip.

    ``source_white`` is the input's white level (None for ``.npy``: values are taken as already
    in the output's units). Clipping happens before the cast, so nothing wraps around.

    >>> to_pixels(np.array([-63.0, 2.5, 3.5, 300.0]), 255.0, 8).tolist()
    [0, 2, 4, 255]
    >>> to_pixels(np.array([255.0]), 255.0, 16).tolist()
    [65535]
    """
    white = 255.0 if bits == 8 else 65535.0
    scaled = maps * (white / source_white) if source_white else maps
    pixels = np.rint(np.nan_to_num(scaled, nan=0.0))
    return np.clip(pixels, 0, white).astype(np.uint8 if bits == 8 else np.uint16)


def write_output(path: str, maps: np.ndarray, white: Optional[float] = None, alpha: Optional[np.ndarray] = None) -> None:
    """Write ``maps`` (C, H, W) to ``path``: exact float32 ``.npy`` (H, W, C), or an image.

    Images take 1 map as grayscale, 3 as RGB; 16-bit when the input was 16-bit and the
    format stores it (PNG, TIFF); ``alpha`` (H, W) is appended where the format allows.
    """
    ext = extension(path)
    if ext == NPY:
        array = np.ascontiguousarray(maps.transpose(1, 2, 0), dtype=np.float32)
        atomic_write(path, lambda f: np.save(f, array))
        return
    fmt, has_16bit, has_alpha = IMAGE_FORMATS[ext]
    channels = maps.shape[0]
    if channels not in (1, 3):
        raise ShapeError(
            f"{channels} feature maps do not fit one {fmt} image (1 = gray, 3 = RGB); write .npy instead"
        )
    bits = 16 if (white or 0) > 255 and has_16bit and channels == 1 and alpha is None else 8
    pixels = to_pixels(maps, white, bits).transpose(1, 2, 0)
    if alpha is not None and has_alpha:
        pixels = np.concatenate([pixels, to_pixels(alpha[None], white, 8).transpose(1, 2, 0)], axis=2)
    from PIL import Image

    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    options = {"compress_level": 6} if fmt == "PNG" else {}
    atomic_write(path, lambda f: image.save(f, format=fmt, **options))


def atomic_write(path: str, save: Callable) -> None:
    """Call ``save(file)`` on a temporary file beside ``path``, then rename it into place."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, temporary = tempfile.mkstemp(prefix=".convcli-", suffix=".part", dir=directory)
    except OSError as exc:
        raise OutputError(f"cannot write in {directory!r} ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            save(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path!r} ({exc.strerror or exc})") from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
