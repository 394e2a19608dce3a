"""PNG: the encoder of every PNG convcli writes, and the reader of 16-bit colour PNGs.

Writing (``write_png``, ``encode_png``): convcli encodes every PNG itself, 8 or 16 bits, 1 to
4 channels, its strips deflated on the cores in parallel.

Reading: Pillow reads PNGs but reduces 16-bit colour to 8 bits (it keeps only the high byte),
so those are decoded here (``read_colour16``); ``images`` sends every other PNG to Pillow.

Handles bit depth 16 with colour types 2 (RGB), 4 (gray + alpha) and 6 (RGBA), not interlaced.
The file is trusted for nothing: the header's size is checked (pixels, memory) before any
image data is inflated; every chunk's CRC is checked and no chunk may run past the end of the
file; the image data is inflated at most to the size the header implies (plus one byte, to
tell that it holds more) straight into one preallocated buffer, so a small file that inflates
to gigabytes costs no more memory than its header's image. Then each row's filter (None, Sub,
Up, Average, Paeth; PNG spec section 9) is undone: in numpy for small images (no Numba to
load), by a compiled loop for large ones.

>>> colour16(b"\\x89PNG\\r\\n\\x1a\\n" + bytes(4) + b"IHDR" + bytes(8) + bytes([16, 2]))
True
"""

from __future__ import annotations

import contextlib
import io
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from convcli import limits
from convcli.errors import InputError, LimitError
from convcli.runtime import compute_threads

SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Colour type -> samples per pixel, for the 16-bit colour types Pillow cannot keep.
_SAMPLES = {2: 3, 4: 2, 6: 4}
#: PNG image data is deflated by ISA-L (the ``isal`` package) at its level 2, its default:
#: measured on a box-blurred 512^2 RGB noise image 0.8 ms where zlib at level 1 (OpenCV's
#: default) took 6.4 ms (with Huffman coding only) to 16 ms, the same size; a 4096x2731 photo
#: 50 ms instead of 234 ms, 12% smaller.
PNG_LEVEL = 2
#: PNG rows are compressed in strips of about this many bytes, on the cores in parallel: small
#: enough that a 512^2 image keeps two cores busy (measured: 16-bit RGB 27 ms in 4 MiB strips,
#: 14 ms in these), large enough that restarting the compressor's dictionary costs nothing
#: (the same size within 0.01%, a smooth image 1% smaller). Fixed, so the bytes written do not
#: depend on the machine's cores.
PNG_STRIP_BYTES = 256 << 10
#: The largest chunk length the PNG spec allows (section 5.3).
_MAX_CHUNK = 2**31 - 1
#: Chunks are read and checked in pieces of this many bytes, whatever their declared length.
_PIECE = 1 << 20
#: An eXIf chunk larger than this is not kept (orientation is then taken as 1).
_MAX_EXIF = 1 << 20
#: What unfiltering one byte in numpy costs, in the multiply-adds ``correlation.numpy_takes``
#: weighs (measured: a 1024x1024 RGB image, 6 MB, 301 ms in numpy, 8 ms in Numba's loop), so
#: that the decoder loads Numba by the same rule, and for the same batches, as the engine.
UNFILTER_WORK_PER_BYTE = 100


def colour16(header: bytes) -> bool:
    """Whether a file's first 26 bytes start a 16-bit RGB, gray+alpha or RGBA PNG."""
    return (
        len(header) >= 26
        and header[:8] == SIGNATURE
        and header[12:16] == b"IHDR"
        and (header[24] == 16 and header[25] in _SAMPLES)
    )


@dataclass(frozen=True)
class Header:
    """What the IHDR chunk of a 16-bit colour PNG says."""

    width: int
    height: int
    samples: int

    @property
    def row_bytes(self) -> int:
        return self.width * self.samples * 2

    @property
    def image_bytes(self) -> int:
        """The size of the inflated image data: each row is a filter byte then the samples."""
        return self.height * (1 + self.row_bytes)


def read_header(handle: BinaryIO, what: str) -> Header:
    """The IHDR of the PNG ``handle`` is at the start of (CRC checked), left after it."""
    head = handle.read(33)
    if (
        len(head) < 33
        or head[:8] != SIGNATURE
        or head[12:16] != b"IHDR"
        or (struct.unpack(">I", head[8:12])[0] != 13)
    ):
        raise InputError(f"{what} is corrupt or truncated (no complete PNG header)")
    if zlib.crc32(head[12:29]) != struct.unpack(">I", head[29:33])[0]:
        raise InputError(f"{what} is corrupt (CRC error in chunk IHDR)")
    width, height, _, colour, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
    if interlace:
        raise InputError(
            f"{what} is an interlaced 16-bit colour PNG, which convcli does not read; "
            f"save it without interlacing"
        )
    if not width or not height or width > _MAX_CHUNK or height > _MAX_CHUNK:
        raise InputError(f"{what} is corrupt (PNG header says {height}x{width} pixels)")
    return Header(width, height, _SAMPLES[colour])


def decode(handle: BinaryIO, header: Header, what: str) -> tuple[np.ndarray, bytes]:
    """The pixels as uint16 (H, W, samples), samples as stored, and the eXIf chunk (or b"").

    ``handle`` is left after the IHDR by ``read_header``; the caller has checked the header's
    size against its limits. Refused with one line: a CRC error in any chunk, a chunk running
    past the end of the file, no IEND chunk, image data that is not one complete zlib stream
    of exactly ``header.image_bytes`` bytes, an unknown row filter.
    """
    raw = np.empty(header.image_bytes, np.uint8)
    inflater = zlib.decompressobj()
    filled, exif = 0, b""

    def inflate(piece: bytes) -> None:
        nonlocal filled
        while piece:
            room = header.image_bytes - filled
            out = inflater.decompress(piece, room + 1)  # one byte more tells "too much"
            if len(out) > room:
                raise InputError(
                    f"{what} is corrupt (its image data inflates to more than the "
                    f"{header.image_bytes:,} bytes its header implies)"
                )
            raw[filled : filled + len(out)] = np.frombuffer(out, np.uint8)
            filled += len(out)
            piece = inflater.unconsumed_tail

    try:
        for name, data in _chunks(
            handle,
            what,
            keep=lambda name, length: name == b"eXIf" and length <= _MAX_EXIF,
            each_piece=inflate,
        ):
            if name == b"eXIf":
                exif = data
    except zlib.error as exc:
        raise InputError(f"{what} is corrupt or truncated ({exc})") from None
    if inflater.unused_data:
        raise InputError(f"{what} is corrupt (data after the end of its compressed image data)")
    if not inflater.eof or filled != header.image_bytes:
        raise InputError(
            f"{what} is corrupt or truncated (image data has {filled:,} bytes, "
            f"expected {header.image_bytes:,})"
        )
    rows = raw.reshape(header.height, 1 + header.row_bytes)
    if rows[:, 0].max(initial=0) > 4:
        raise InputError(f"{what} is corrupt (unknown PNG row filter {rows[:, 0].max()})")
    bpp = header.samples * 2
    from convcli.engine.correlation import numpy_takes

    if numpy_takes(header.height * header.row_bytes * UNFILTER_WORK_PER_BYTE):
        pixels = unfilter_numpy(rows, bpp)
    else:
        from convcli.engine import _jit

        pixels = np.empty((header.height, header.row_bytes), np.uint8)
        _jit.png_unfilter(rows, bpp, pixels)
    return pixels.view(">u2").reshape(header.height, header.width, header.samples).astype(
        np.uint16
    ), exif


def _chunks(handle: BinaryIO, what: str, keep, each_piece):
    """Walk the chunks after IHDR up to IEND, checking each CRC; yield ``(name, data)`` of those
    ``keep(name, length)`` accepts, and pass IDAT data to ``each_piece`` as it is read."""
    start = handle.tell()
    end = handle.seek(0, 2)
    handle.seek(start)
    position = start
    while True:
        head = handle.read(8)
        if len(head) < 8:
            raise InputError(
                f"{what} is corrupt or truncated (no IEND chunk: the file ends "
                f"after {position:,} bytes)"
            )
        length, name = struct.unpack(">I", head[:4])[0], head[4:]
        shown = name.decode("ascii") if name.isalpha() else limits.shorten(repr(name)[1:], 20)
        if length > _MAX_CHUNK or position + 12 + length > end:
            raise InputError(
                f"{what} is corrupt or truncated (chunk {shown} of {length:,} bytes "
                f"runs past the end of the file)"
            )
        crc, kept = zlib.crc32(name), keep(name, length)
        pieces = []
        for offset in range(0, length, _PIECE):
            piece = handle.read(min(_PIECE, length - offset))
            crc = zlib.crc32(piece, crc)
            if name == b"IDAT":
                each_piece(piece)
            elif kept:
                pieces.append(piece)
        if struct.unpack(">I", handle.read(4))[0] != crc:
            raise InputError(f"{what} is corrupt (CRC error in chunk {shown})")
        if name == b"IEND":
            return
        if kept:
            yield name, b"".join(pieces)
        position += 12 + length


def unfilter_numpy(rows: np.ndarray, bpp: int) -> np.ndarray:
    """Undo PNG row filters in numpy: ``rows`` (H, 1 + stride) filtered bytes -> (H, stride).

    A row filtered with None, Sub or Up is undone whole at once (Sub is a running sum along
    each byte of the pixel, mod 256); each run of rows filtered with Average or Paeth, which
    depend on the reconstructed byte to their left, by ``_unfilter_diagonals``.

    >>> unfilter_numpy(np.array([[1, 5, 1, 1], [2, 0, 1, 1]], np.uint8), 1).tolist()  # Sub, Up
    [[5, 6, 7], [5, 7, 8]]
    >>> unfilter_numpy(np.array([[4, 5, 1], [3, 0, 1]], np.uint8), 1).tolist()  # Paeth, Average
    [[5, 6], [2, 5]]
    """
    height, stride = rows.shape[0], rows.shape[1] - 1
    out = np.empty((height, stride), np.uint8)
    kinds = rows[:, 0]
    above = np.zeros(stride, np.uint8)  # zeros above the image
    row = 0
    while row < height:
        kind, filtered = kinds[row], rows[row, 1:]
        if kind == 0:
            out[row] = filtered
        elif kind == 1:
            np.cumsum(
                filtered.reshape(-1, bpp), axis=0, dtype=np.uint8, out=out[row].reshape(-1, bpp)
            )
        elif kind == 2:
            np.add(filtered, above, out=out[row])
        else:
            run = np.flatnonzero(kinds[row:] < 3)
            end = height if not run.size else row + int(run[0])
            out[row:end] = _unfilter_diagonals(rows[row:end], bpp, above)
            row = end - 1
        above = out[row]
        row += 1
    return out


def _unfilter_diagonals(rows: np.ndarray, bpp: int, above: np.ndarray) -> np.ndarray:
    """Undo any PNG row filters of ``rows`` below the reconstructed row ``above``.

    Each byte depends on the byte ``bpp`` to its left, the one above and the one above-left,
    so the pixels of one anti-diagonal (row + column constant) are independent: H + W - 1
    vectorised steps instead of H x W scalar ones.
    """
    height, stride = rows.shape[0], rows.shape[1] - 1
    width = stride // bpp
    filtered = rows[:, 1:].reshape(height, width, bpp).astype(np.int16)
    kinds = rows[:, 0].astype(np.int16)
    out = np.zeros((height + 1, width + 1, bpp), np.int16)  # the row above, a zero column left
    out[0, 1:] = above.reshape(width, bpp)
    for diagonal in range(height + width - 1):
        y = np.arange(max(0, diagonal - width + 1), min(height, diagonal + 1))
        x = diagonal - y
        left, up, corner = out[y + 1, x], out[y, x + 1], out[y, x]
        kind = kinds[y][:, None]
        guess = left + up - corner
        to_left, to_up, to_corner = abs(guess - left), abs(guess - up), abs(guess - corner)
        paeth = np.where(
            (to_left <= to_up) & (to_left <= to_corner),
            left,
            np.where(to_up <= to_corner, up, corner),
        )
        predicted = np.select(
            [kind == 1, kind == 2, kind == 3, kind == 4], [left, up, (left + up) >> 1, paeth], 0
        )
        out[y + 1, x + 1] = (filtered[y, x] + predicted) & 255
    return out[1:, 1:].astype(np.uint8).reshape(height, stride)


def orientation(exif: bytes) -> int:
    """The EXIF orientation in an eXIf chunk's data, 1 when absent or unreadable."""
    if not exif:
        return 1
    from PIL import Image

    try:
        tags = Image.Exif()
        tags.load(exif)
        value = tags.get(0x0112, 1)
    except Exception:  # a broken EXIF block: the pixels themselves are fine
        return 1
    return value if isinstance(value, int) else 1


def upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """``pixels`` (H, W, ...) turned as an EXIF orientation tag says (as Pillow's exif_transpose).

    >>> upright(np.array([[1, 2], [3, 4]]), 6).tolist()     # rotate 90 degrees clockwise
    [[3, 1], [4, 2]]
    """
    turns = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(turns[orientation](pixels)) if orientation in turns else pixels


def read_colour16(handle: BinaryIO, limit: int, what: str) -> np.ndarray:
    """The pixels of the 16-bit colour PNG open at the start of ``handle``: uint16 (H, W,
    samples), turned upright as its EXIF orientation says. The size in its header is checked
    against ``limit`` pixels and the memory budget before anything is inflated."""
    header = read_header(handle, what)
    limits.check_pixels(header.height, header.width, limit, what)
    # the inflated rows, the unfiltered bytes, the uint16 pixels and a turned copy
    limits.check_memory(
        2 * header.image_bytes + 4 * header.width * header.height * header.samples,
        f"decoding {what} ({header.height}x{header.width}, 16-bit, {header.samples} samples)",
    )
    try:
        pixels, exif = decode(handle, header, what)
    except MemoryError:
        raise LimitError(f"not enough memory to decode {what}") from None
    return upright(pixels, orientation(exif))


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG file bytes for (H, W, C) uint8 or uint16 pixels: C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA.

    >>> png = encode_png(np.array([[[0, 65535, 1]]], dtype=np.uint16))
    >>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n", png[24:26]     # bit depth 16, colour type 2 (RGB)
    (True, b'\\x10\\x02')
    """
    buffer = io.BytesIO()
    write_png(buffer, pixels)
    return buffer.getvalue()


def write_png(handle, pixels: np.ndarray) -> None:
    """Write ``pixels`` (as ``encode_png``) to the binary file ``handle`` as a PNG.

    convcli writes every PNG itself (Pillow cannot write 16-bit colour, and compresses on one
    core): samples big-endian, each row "Up"-filtered, deflated by ISA-L at ``PNG_LEVEL``.
    Strips of about ``PNG_STRIP_BYTES`` are filtered and deflated on the cores in parallel,
    each but the last ended by a sync flush so that together they are one zlib stream (as
    pigz does), and written as one IDAT chunk each as they finish.
    """
    from isal import isal_zlib

    height, width, channels = pixels.shape
    bits = pixels.dtype.itemsize * 8
    samples = pixels.astype(">u2", copy=False) if bits == 16 else pixels
    rows = np.ascontiguousarray(samples).view(np.uint8).reshape(height, -1)
    strip = max(1, PNG_STRIP_BYTES // rows.shape[1])

    def deflate(first: int) -> tuple[bytes, int, int]:
        last = min(height, first + strip)
        filtered = np.empty((last - first, rows.shape[1] + 1), np.uint8)
        filtered[:, 0] = 2  # filter type 2 ("Up"): each byte minus the one above it, mod 256
        filtered[0, 1:] = (
            rows[first] - rows[first - 1] if first else rows[0]
        )  # zeros above the image
        np.subtract(rows[first + 1 : last], rows[first : last - 1], out=filtered[1:, 1:])
        compressor = isal_zlib.compressobj(PNG_LEVEL, zlib.DEFLATED, -15)  # raw: one header
        data = compressor.compress(filtered) + compressor.flush(
            zlib.Z_FINISH if last == height else zlib.Z_SYNC_FLUSH
        )
        return data, zlib.adler32(filtered), filtered.size

    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    handle.write(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bits, colour_type, 0, 0, 0))
    )
    firsts = range(0, height, strip)
    checksum = zlib.adler32(b"")
    threads = min(compute_threads(), len(firsts))
    with contextlib.ExitStack() as held:
        strips = map(deflate, firsts)  # one strip, or one core (a batch worker's): here
        if threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            strips = held.enter_context(ThreadPoolExecutor(threads)).map(deflate, firsts)
        for first, (data, adler, size) in zip(firsts, strips):
            checksum = adler32_combine(checksum, adler, size)
            ending = struct.pack(">I", checksum) if first + strip >= height else b""
            handle.write(_png_chunk(b"IDAT", (b"" if first else b"\x78\x01") + data + ending))
    handle.write(_png_chunk(b"IEND", b""))


def adler32_combine(first: int, second: int, second_length: int) -> int:
    """The Adler-32 of two byte strings joined, from theirs (zlib's ``adler32_combine``).

    >>> adler32_combine(zlib.adler32(b"conv"), zlib.adler32(b"cli"), 3) == zlib.adler32(b"convcli")
    True
    """
    base = 65521
    rem = second_length % base
    low = ((first & 0xFFFF) + (second & 0xFFFF) - 1) % base
    high = (rem * (first & 0xFFFF) + (first >> 16) + (second >> 16) - rem) % base
    return low | high << 16


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
