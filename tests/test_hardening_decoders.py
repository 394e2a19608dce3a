"""Decoders that trust the file (issue 18, classes 1 and 2): convcli's 16-bit PNG decoder, files
whose header claims more pixels than they hold, ``.npy`` headers with impossible shapes.

Every refusal is one ``Error:`` line, exit 1, nothing written.
"""

import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from conftest import refused as refused_with
from conftest import run
from PIL import Image

from convcli.io import png as png16
from convcli.io.images import read_input

cv2 = pytest.importorskip("cv2")


def refused(result, *expected):
    return refused_with(result, 1, *expected)


def refused_by_every_command(tmp_path, name, *expected):
    for args in (["conv", tmp_path / name, "-k", "box"], ["pool", tmp_path / name]):
        refused(run(*args, "-o", tmp_path / "out.npy"), *expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


# --------------------------------------------------------------------------------------------
# 16-bit colour PNGs


def chunk(tag, data, crc=None):
    crc = zlib.crc32(tag + data) if crc is None else crc
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def ihdr(width, height, colour=2):
    return chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0))


def filtered_rows(pixels, kinds):
    """PNG rows of ``pixels`` (H, W, C) uint16, row y filtered with ``kinds[y]`` (0..4)."""
    height, width, channels = pixels.shape
    bpp = 2 * channels
    raw = pixels.astype(">u2").view(np.uint8).reshape(height, -1).astype(np.int32)
    left = np.zeros_like(raw)
    left[:, bpp:] = raw[:, :-bpp]
    up = np.zeros_like(raw)
    up[1:] = raw[:-1]
    corner = np.zeros_like(raw)
    corner[1:, bpp:] = raw[:-1, :-bpp]
    guess = left + up - corner
    to_left, to_up, to_corner = abs(guess - left), abs(guess - up), abs(guess - corner)
    paeth = np.where(
        (to_left <= to_up) & (to_left <= to_corner), left, np.where(to_up <= to_corner, up, corner)
    )
    predictions = [np.zeros_like(raw), left, up, (left + up) // 2, paeth]
    rows = [
        bytes([k]) + ((raw[y] - predictions[k][y]) % 256).astype(np.uint8).tobytes()
        for y, k in enumerate(kinds)
    ]
    return b"".join(rows)


def png16_file(pixels, kinds=None, idat=None, tail=None):
    height, width, channels = pixels.shape
    kinds = [y % 5 for y in range(height)] if kinds is None else kinds
    idat = zlib.compress(filtered_rows(pixels, kinds)) if idat is None else idat
    tail = chunk(b"IEND", b"") if tail is None else tail
    return (
        png16.SIGNATURE
        + ihdr(width, height, {2: 4, 3: 2, 4: 6}[channels])
        + chunk(b"tEXt", b"Comment\0kept")
        + chunk(b"IDAT", idat)
        + tail
    )


def opencv_reads(data):
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded.ndim == 3 and decoded.shape[2] >= 3:
        decoded = decoded[:, :, [2, 1, 0, 3][: decoded.shape[2]]]
    return decoded


@pytest.mark.parametrize("seed", range(24))
def test_every_filter_decodes_as_opencv_does_in_numpy_and_numba(seed, tmp_path):
    rng = np.random.default_rng(seed)
    height, width = rng.integers(1, 40, 2)
    channels = (3, 4)[seed % 2]
    pixels = rng.integers(0, 65536, (height, width, channels)).astype(np.uint16)
    if seed % 3 == 0:  # smooth: predictions matter
        pixels = (np.cumsum(pixels % 512, axis=1) % 65536).astype(np.uint16)
    data = png16_file(pixels, kinds=rng.integers(0, 5, height))
    assert np.array_equal(opencv_reads(data), pixels)
    (tmp_path / "x.png").write_bytes(data)
    picture = read_input(str(tmp_path / "x.png"), alpha_as_channel=True)
    assert np.array_equal(picture.data.transpose(1, 2, 0), pixels)
    from convcli.engine import _jit

    rows = np.frombuffer(
        zlib.decompress(data[data.index(b"IDAT") + 4 :][: -len(chunk(b"IEND", b"")) - 4]), np.uint8
    )
    rows = rows.reshape(height, -1)
    compiled = np.empty((height, rows.shape[1] - 1), np.uint8)
    _jit.png_unfilter(rows, 2 * channels, compiled)
    assert np.array_equal(png16.unfilter_numpy(rows, 2 * channels), compiled)


def test_gray_alpha_written_by_opencv(tmp_path):
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 65536, (31, 17, 4)).astype(np.uint16)
    assert cv2.imwrite(str(tmp_path / "x.png"), pixels)  # libpng: adaptive filters
    expected = opencv_reads((tmp_path / "x.png").read_bytes())
    picture = read_input(str(tmp_path / "x.png"), alpha_as_channel=True)
    assert np.array_equal(picture.data.transpose(1, 2, 0), expected)


def test_decoded_once_without_pillow_or_numba(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 65536, (512, 512, 3)).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "x.png"), pixels)
    script = (
        "import sys, PIL.Image\n"
        "PIL.Image.open = None  # any use of Pillow fails\n"
        "from convcli.io.images import read_input\n"
        f"picture = read_input({str(tmp_path / 'x.png')!r})\n"
        "print(picture.data.shape, 'numba' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["(3,", "512,", "512)", "False"]


def hostile_pngs():
    pixels = np.arange(48, dtype=np.uint16).reshape(4, 4, 3) * 1000
    good = zlib.compress(filtered_rows(pixels, [0, 1, 2, 3]))
    rows = filtered_rows(pixels, [0] * 4)
    bad_idat = png16_file(pixels, idat=good)
    bad_idat = bad_idat[:-16] + bytes([bad_idat[-16] ^ 1]) + bad_idat[-15:]  # the IDAT CRC
    return {
        "bomb": (png16_file(pixels, idat=zlib.compress(bytes(50 << 20), 9)), "inflates to more"),
        "idat crc": (bad_idat, "CRC error in chunk IDAT"),
        "ihdr crc": (
            png16.SIGNATURE
            + chunk(b"IHDR", ihdr(4, 4)[8:21], 1)
            + chunk(b"IDAT", good)
            + chunk(b"IEND", b""),
            "CRC error in chunk IHDR",
        ),
        "text crc": (png16_file(pixels).replace(b"kept", b"kep!"), "CRC error in chunk tEXt"),
        "4 GB chunk": (
            png16_file(pixels, tail=struct.pack(">I", 2**32 - 1) + b"IDAT" + b"\0" * 9),
            "runs past the end of the file",
        ),
        "no IEND": (png16_file(pixels, tail=b""), "no IEND chunk"),
        "truncated IDAT": (png16_file(pixels, idat=good[:-8]), "corrupt or truncated"),
        "too little data": (png16_file(pixels, idat=zlib.compress(rows[:-1])), "expected 100"),
        "extra rows": (png16_file(pixels, idat=zlib.compress(rows + b"\0")), "inflates to more"),
        "data after the stream": (
            png16_file(pixels, idat=good + b"\x78\x9c"),
            "data after the end",
        ),
        "huge header": (
            png16.SIGNATURE + ihdr(60000, 50000) + chunk(b"IDAT", good) + chunk(b"IEND", b""),
            "over the limit",
        ),
    }


@pytest.mark.parametrize("case", sorted(hostile_pngs()))
def test_hostile_16_bit_pngs_are_one_line(case, tmp_path):
    data, message = hostile_pngs()[case]
    (tmp_path / "x.png").write_bytes(data)
    refused_by_every_command(tmp_path, "x.png", "input ", message)


def test_a_bomb_is_refused_in_small_memory(tmp_path):
    pixels = np.zeros((4, 4, 3), np.uint16)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(bytes(1 << 20)) for _ in range(400)) + compressor.flush()
    (tmp_path / "bomb.png").write_bytes(png16_file(pixels, idat=idat))  # 400 KB -> 400 MiB
    script = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run([sys.executable, '-m', 'convcli', 'conv', sys.argv[1], '-k', "
        "'box', '-o', sys.argv[2]], capture_output=True, text=True)\n"
        "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "print(done.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "bomb.png"), str(tmp_path / "o.png")],
        capture_output=True,
        text=True,
        check=True,
    )
    code, peak_kib = out.stdout.split("\n")[0].split()
    assert code == "1" and int(peak_kib) < 150_000, out.stdout
    assert out.stdout.split("\n")[1].startswith("Error: ") and not (tmp_path / "o.png").exists()


# --------------------------------------------------------------------------------------------
# Files that lie about their size


def saved(array, fmt, **options):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return bytearray(buffer.getvalue())


def jpeg_claiming(height, width, progressive=False, gray=False):
    rng = np.random.default_rng(1)
    data = saved(
        rng.integers(0, 256, (16, 16) if gray else (16, 16, 3), dtype=np.uint8),
        "JPEG",
        progressive=progressive,
    )
    frame = data.index(b"\xff\xc2" if progressive else b"\xff\xc0")
    data[frame + 5 : frame + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_claiming(height, width):
    data = saved(np.random.default_rng(2).integers(0, 256, (16, 16), dtype=np.uint8), "GIF")
    position = 13 + (3 << ((data[10] & 7) + 1))  # after the global colour table
    while data[position] == 0x21:  # extension blocks
        position += 2
        while data[position]:
            position += 1 + data[position]
        position += 1
    data[6:10] = data[position + 5 : position + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def png8_claiming(height, width):
    data = saved(np.zeros((16, 16), np.uint8), "PNG")
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("a.jpg", jpeg_claiming(4000, 4000), "holds at most 6,"),
        ("a2.jpg", jpeg_claiming(300, 300), "ends before the pixels its header claims"),
        ("b.jpg", jpeg_claiming(17, 16), "ends before the pixels its header claims"),
        ("c.jpg", jpeg_claiming(16, 24, gray=True), "ends before the pixels its header claims"),
        (
            "d.jpg",
            jpeg_claiming(64, 64, progressive=True),
            "ends before the pixels its header claims",
        ),
        ("e.jpg", jpeg_claiming(9999, 9999), "holds at most"),
        ("f.gif", gif_claiming(64, 64), "ends after 256 of the 4,096 pixels"),
        ("g.gif", gif_claiming(17, 16), "ends after 256 of the 272 pixels"),
        ("h.png", png8_claiming(10000, 9000), "holds at most"),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 8 else "",
)
def test_an_image_that_lies_about_its_size_is_refused(name, data, message, tmp_path):
    (tmp_path / name).write_bytes(data)
    refused_by_every_command(
        tmp_path, name, f"input '{tmp_path / name}' is corrupt or truncated", message
    )


@pytest.mark.parametrize(
    "fmt, options",
    [
        ("JPEG", {}),
        ("JPEG", {"progressive": True}),
        ("JPEG", {"subsampling": 0}),
        ("JPEG", {"restart_marker_blocks": 1}),
        ("GIF", {}),
        ("PNG", {}),
        ("WEBP", {}),
        ("BMP", {}),
        ("TIFF", {}),
        ("PPM", {}),
    ],
)
@pytest.mark.parametrize("shape", [(1, 1), (17, 33), (128, 128)])
def test_honest_files_of_every_format_still_read(fmt, options, shape, tmp_path):
    for flat in (False, True):  # flat grey is what libjpeg pads with
        array = (
            np.full(shape + (3,), 128, np.uint8)
            if flat
            else np.random.default_rng(0).integers(0, 256, shape + (3,), dtype=np.uint8)
        )
        (tmp_path / "x").write_bytes(saved(array, fmt, **options))
        assert read_input(str(tmp_path / "x")).data.shape[1:] == shape


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "TIFF", "WEBP", "BMP", "PPM"])
def test_cut_files_of_every_format_are_refused(fmt, tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = saved(array, fmt)
    (tmp_path / "x").write_bytes(data[: len(data) * 3 // 4])
    refused_by_every_command(tmp_path, "x", "corrupt or truncated")


# --------------------------------------------------------------------------------------------
# .npy headers


def npy_declaring(shape):
    header = repr({"descr": "<f4", "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 64


BAD_SHAPES = {
    (-2, 4): "sizes must be whole numbers >= 0",
    (4, 4, -1): "sizes must be whole",
    (True, 4): "sizes must be whole",
    (1,) * 40: "at most 32 dimensions",
    (2**40, 2**40, 2**40): "more than 2**63 bytes",
}


@pytest.mark.parametrize("shape", BAD_SHAPES, ids=str)
def test_impossible_npy_shapes_as_inputs(shape, tmp_path):
    (tmp_path / "x.npy").write_bytes(npy_declaring(shape))
    refused_by_every_command(tmp_path, "x.npy", "input ", BAD_SHAPES[shape])
    refused(run("explain", "--input", tmp_path / "x.npy", "conv 4 k3"), BAD_SHAPES[shape])


@pytest.mark.parametrize("shape", BAD_SHAPES, ids=str)
def test_impossible_npy_shapes_as_kernels(shape, tmp_path):
    kernels, message = tmp_path / "kernels", BAD_SHAPES[shape]
    kernels.mkdir()
    (kernels / "bad.npy").write_bytes(npy_declaring(shape))
    np.save(tmp_path / "in.npy", np.ones((8, 8), np.float32))
    (tmp_path / "p.yaml").write_text(f"steps:\n  - {{op: conv, kernel: {kernels / 'bad.npy'}}}\n")
    out = tmp_path / "out.npy"
    refused(run("conv", tmp_path / "in.npy", "-k", kernels / "bad.npy", "-o", out), message)
    refused(run("kernels", "show", kernels / "bad.npy"), message)
    refused(run("run", tmp_path / "p.yaml", tmp_path / "in.npy", "-o", out), message)
    refused(
        run("explain", "--input", tmp_path / "in.npy", "--pipeline", tmp_path / "p.yaml"), message
    )
    listed = run("kernels", "list", "--kernel-path", kernels)
    assert listed.exit_code == 1 and "Traceback" not in listed.output
    assert listed.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert not out.exists()
