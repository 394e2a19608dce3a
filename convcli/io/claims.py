"""Whether an image file holds the pixels its header claims, checked around Pillow's decoders.

Pillow refuses most truncated files ("image file is truncated"), but two of its decoders pad
an image whose data ends early with invented pixels and report success: libjpeg fills the
blocks after a premature end marker with flat grey (a 16x16 JPEG whose header claims
4000x4000 decodes to a grey 4000x4000 image), and Pillow's GIF decoder stops at the LZW end
code and leaves the rest of the frame as it was. So:

All before decoding, in ``check_plausible``:

- the size the header claims is compared with what a file of this size can hold at the
  format's highest compression ratio (a 2 KB PNG cannot hold 10^8 pixels): nothing is
  allocated for a file that lies by that much;
- a GIF frame's LZW stream is walked (code lengths only, nothing decoded) to count the pixels
  it produces;
- a JPEG is decoded at 1/8 scale twice, once with bytes inserted after each scan's data: a
  complete scan ignores them, one that ends early decodes them, so the two results differ.

Each failure is one ``InputError`` line: "... is corrupt or truncated (...)".
"""

from __future__ import annotations

import io
import os
import re

from convcli.errors import InputError

#: The most pixels one byte of a file can hold, per format (Pillow's names), used before
#: decoding. PNG: deflate expands at most 1032:1, and a pixel takes at least 1 bit; GIF: an
#: LZW code of 12 bits stands for at most 4096 pixels; JPEG with Huffman coding: every block
#: of every MCU (at most 32x32 pixels) costs at least 1 bit; QOI: a run byte is 62 pixels;
#: PNM: 8 pixels per byte (1-bit). Formats not listed (TIFF, WebP, BMP, arithmetic-coded
#: JPEG, ...) compress without such a bound or check their data themselves.
MAX_PIXELS_PER_BYTE = {
    "PNG": 1032 * 8,
    "GIF": 4096 * 8 // 12,
    "JPEG": 32 * 32 * 8,
    "MPO": 32 * 32 * 8,
    "QOI": 62,
    "PPM": 8,
}
#: JPEG frame markers whose scans are Huffman coded (the others, C9-CB and CD-CF, arithmetic).
_HUFFMAN_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7}
#: A marker that ends a JPEG scan's entropy-coded data (not a stuffed zero, a restart or fill).
_END_OF_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
#: Bytes a complete JPEG ignores after its last scan (no 0xFF: they cannot form a marker).
_FILLER = bytes((index * 167 + 13) % 255 for index in range(256))


def check_plausible(img, handle, frame: int, what: str) -> None:
    """Refuse, before decoding, an image whose header claims more pixels than its data holds.

    ``img`` is the opened (not loaded) Pillow image, at ``frame``, of the file open in
    ``handle`` (read again here, and left where Pillow had it).
    """
    width, height = img.size
    size = os.fstat(handle.fileno()).st_size
    per_byte = MAX_PIXELS_PER_BYTE.get(img.format)
    if img.format in ("JPEG", "MPO"):
        data = _read(handle)
        frame_marker, scan_ends = jpeg_layout(data)
        per_byte = per_byte if frame_marker in _HUFFMAN_FRAMES else None
    if per_byte is not None and width * height > size * per_byte:
        raise InputError(
            f"{what} is corrupt or truncated (its header claims {height}x{width} "
            f"pixels; a {img.format} file of {size:,} bytes holds at most "
            f"{size * per_byte:,})"
        )
    if img.format in ("JPEG", "MPO") and scan_ends and not frame:
        _check_jpeg_scans(data, scan_ends, what)
    if img.format == "GIF" and img.tile:
        _check_gif_frame(img, _read(handle), what)


def jpeg_layout(data: bytes) -> tuple[int, list[int]]:
    """``(frame marker, where each scan's data ends)`` of the first image in JPEG ``data``: the
    marker is 0 when not found, the offsets are those of the markers that end the scans (the
    last one the end-of-image marker); none when the image does not end (the decoder says so).

    >>> jpeg_layout(bytes.fromhex("ffd8 ffc0 0004 0000 ffda 0002 1234 ffd9"))
    (192, [14])
    """
    position, frame_marker, scan_ends = 2, 0, []
    while position + 2 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xD9:
            return frame_marker, scan_ends
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            position += 1 if marker == 0xFF else 2  # a fill byte, or a marker without length
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            frame_marker = marker
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if marker == 0xDA:  # the entropy-coded data runs to the next marker
            found = _END_OF_SCAN.search(data, position)
            if found is None:
                break
            position = found.start()
            scan_ends.append(position)
    return frame_marker, []


def _check_jpeg_scans(data: bytes, scan_ends: list[int], what: str) -> None:
    """Refuse a JPEG whose scans end before the image does (libjpeg pads them with grey).

    Filler bytes are put after each scan's data: a complete scan ignores them, a short one
    decodes them. Both files are decoded at 1/8 scale (DC coefficients only: cheap); the
    first scan of every JPEG holds DC coefficients, so the results differ when it is short.
    """
    from PIL import Image

    pieces, last = [], 0
    for end in scan_ends:
        pieces += [data[last:end], _FILLER]
        last = end
    filled = b"".join(pieces) + data[last:]

    def dc_image(content: bytes) -> bytes:
        with Image.open(io.BytesIO(content), formats=["JPEG", "MPO"]) as img:
            img.draft(img.mode, (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
            return img.tobytes()

    if dc_image(filled) != dc_image(data):
        raise InputError(
            f"{what} is corrupt or truncated (its image data ends before the "
            f"pixels its header claims)"
        )


def _check_gif_frame(img, data: bytes, what: str) -> None:
    _, (left, top, right, bottom), offset, args = img.tile[0]
    wanted = (right - left) * (bottom - top)
    produced = gif_pixels(data, offset, args[0], wanted)
    if produced < wanted:
        raise InputError(
            f"{what} is corrupt or truncated (its image data ends after "
            f"{produced:,} of the {wanted:,} pixels of the frame)"
        )


def gif_pixels(data: bytes, start: int, code_size: int, wanted: int) -> int:
    """How many pixels the GIF LZW stream in the sub-blocks at ``data[start:]`` produces, counted
    up to ``wanted``: only the length of each code's string is followed, nothing is decoded.

    >>> gif_pixels(bytes([2, 0x4c, 0x5c, 0]), 0, 2, 100)  # clear, 1, 1, 6 (= "11"), end
    4
    """
    stream, position = bytearray(), start
    while position < len(data) and data[position]:
        stream += data[position + 1 : position + 1 + data[position]]
        position += 1 + data[position]
    clear = 1 << code_size
    lengths = [1] * clear + [0] * (4096 - clear)
    width, next_code, previous = code_size + 1, clear + 2, -1
    produced, bits, count = 0, 0, 0
    for byte in stream:
        bits |= byte << count
        count += 8
        while count >= width:
            code = bits & ((1 << width) - 1)
            bits >>= width
            count -= width
            if code == clear:
                width, next_code, previous = code_size + 1, clear + 2, -1
                continue
            if code == clear + 1 or code > next_code or (previous < 0 and code > clear):
                return produced  # the end code, or a broken stream (the decoder says so)
            length = lengths[previous] + 1 if code == next_code else lengths[code]
            if previous >= 0 and next_code < 4096:
                lengths[next_code] = lengths[previous] + 1
                next_code += 1
                if next_code == 1 << width and width < 12:
                    width += 1
            produced += length
            previous = code
            if produced >= wanted:
                return produced
    return produced


def _read(handle) -> bytes:
    """All the bytes of the file open in ``handle``, which is left where it was."""
    position = handle.tell()
    handle.seek(0)
    try:
        return handle.read()
    finally:
        handle.seek(position)
