"""Reading 16-bit colour PNGs, which Pillow reduces to 8 bits (it keeps only the high byte).

Handles bit depth 16 with colour types 2 (RGB), 4 (gray + alpha) and 6 (RGBA), not interlaced:
the IDAT chunks are inflated with zlib and each row's filter (None, Sub, Up, Average, Paeth;
PNG spec section 9) is undone by a small compiled loop, since Average and Paeth depend on the
previous pixel of the same row.

>>> colour16(b"\\x89PNG\\r\\n\\x1a\\n" + bytes(4) + b"IHDR" + bytes(8) + bytes([16, 2]))
True
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from convcli.errors import InputError

SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Colour type -> samples per pixel, for the 16-bit colour types Pillow cannot keep.
_SAMPLES = {2: 3, 4: 2, 6: 4}


def colour16(header: bytes) -> bool:
    """Whether a file's first 26 bytes start a 16-bit RGB, gray+alpha or RGBA PNG."""
    return len(header) >= 26 and header[:8] == SIGNATURE and header[12:16] == b"IHDR" and (
        header[24] == 16 and header[25] in _SAMPLES)


def decode(data: bytes, what: str) -> np.ndarray:
    """The pixels of a 16-bit colour PNG as uint16 (H, W, samples), samples as stored."""
    width, height, _, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if interlace:
        raise InputError(f"{what} is an interlaced 16-bit colour PNG, which convcli does not read; "
                         f"save it without interlacing")
    samples = _SAMPLES[colour]
    stride = width * samples * 2
    try:
        raw = zlib.decompress(b"".join(_chunks(data, b"IDAT")))
    except zlib.error as exc:
        raise InputError(f"{what} is corrupt or truncated ({exc})") from None
    if len(raw) != height * (stride + 1):
        raise InputError(f"{what} is corrupt or truncated (image data has {len(raw)} bytes, "
                         f"expected {height * (stride + 1)})")
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    if rows[:, 0].max(initial=0) > 4:
        raise InputError(f"{what} is corrupt (unknown PNG row filter {rows[:, 0].max()})")
    from convcli import _jit

    pixels = np.empty((height, stride), np.uint8)
    _jit.png_unfilter(rows, samples * 2, pixels)
    return pixels.view(">u2").reshape(height, width, samples).astype(np.uint16)


def _chunks(data: bytes, kind: bytes) -> list[bytes]:
    found, position = [], len(SIGNATURE)
    while position + 8 <= len(data):
        length = struct.unpack(">I", data[position:position + 4])[0]
        name = data[position + 4:position + 8]
        if name == kind:
            found.append(data[position + 8:position + 8 + length])
        elif name == b"IEND":
            break
        position += 12 + length
    return found


def upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """``pixels`` (H, W, ...) turned as an EXIF orientation tag says (as Pillow's exif_transpose).

    >>> upright(np.array([[1, 2], [3, 4]]), 6).tolist()     # rotate 90 degrees clockwise
    [[3, 1], [4, 2]]
    """
    turns = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
             5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
             7: lambda a: a[::-1, ::-1].swapaxes(0, 1), 8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(turns[orientation](pixels)) if orientation in turns else pixels
