"""Hostile and broken inputs: limits, corrupt files, frames, modes, EXIF, YAML, junk options.

Every refusal is one ``Error: ...`` line on stderr, exit 1 (bad input) or 2 (bad usage), no
traceback, and no file written. Files are made here, small: a "huge" image is a valid header
that only claims its size.
"""

import os
import struct
import zlib

import numpy as np
import pytest
from conftest import refused, run
from PIL import Image

from convcli import limits
from convcli.errors import InputError, KernelError, LimitError
from convcli.io.images import ReadOptions, read_input
from convcli.io.yamlsafe import MAX_DEPTH, MAX_NODES, check_keys, load_yaml_safely
from convcli.kernels.library import resolve_kernel

GIB = 2**30


def snapshot(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


def png_claiming(width, height):
    """A valid PNG header claiming ``width`` x ``height`` grey pixels, with one tiny IDAT."""

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def bmp_claiming(width, height):
    """A BMP header claiming ``width`` x ``height`` 24-bit pixels, with almost no pixel data."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return (
        b"BM" + struct.pack("<IHHI", 14 + len(info) + 16, 0, 0, 14 + len(info)) + info + b"\0" * 16
    )


def npy_claiming(shape, dtype="<f4"):
    """A .npy file whose header declares ``shape`` and which holds 64 bytes of data."""
    header = repr({"descr": dtype, "fortran_order": False, "shape": tuple(shape)}).encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 64


@pytest.fixture
def seed(tmp_path):
    path = tmp_path / "seed.npy"
    np.save(path, np.arange(25, dtype=np.uint8).reshape(5, 5))
    return path


@pytest.fixture
def small_png(tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(np.arange(100, dtype=np.uint8).reshape(10, 10)).save(path)
    return path


# --------------------------------------------------------------------------------------------
# Pixel limit and decompression bombs


@pytest.mark.parametrize("make, name", [(png_claiming, "bomb.png"), (bmp_claiming, "bomb.bmp")])
def test_huge_image_header_is_refused_before_decoding(make, name, tmp_path):
    (tmp_path / name).write_bytes(make(60000, 50000))
    before = snapshot(tmp_path)
    result = run("conv", tmp_path / name, "-k", "box", "-o", tmp_path / "o.png")
    refused(
        result,
        1,
        "is 50000x60000 (rows x columns) = 3,000,000,000 pixels",
        "over the limit of 100,000,000",
        "--max-pixels",
    )
    assert snapshot(tmp_path) == before


def test_pixel_limit_option_and_environment(small_png, tmp_path, monkeypatch):
    out = tmp_path / "o.npy"
    refused(
        run("conv", small_png, "-k", "box", "--max-pixels", "99", "-o", out),
        1,
        "over the limit of 99",
    )
    assert (
        run(
            "conv", small_png, "-k", "box", "--max-pixels", "100", "-o", tmp_path / "a.npy"
        ).exit_code
        == 0
    )
    monkeypatch.setenv("CONVCLI_MAX_PIXELS", "50")
    refused(run("pool", small_png, "-o", out), 1, "100 pixels, over the limit of 50")
    assert (
        run("pool", small_png, "--max-pixels", "0", "-o", tmp_path / "b.npy").exit_code == 0
    )  # no limit
    monkeypatch.setenv("CONVCLI_MAX_PIXELS", "lots")
    refused(run("pool", small_png, "-o", out), 2, "--max-pixels")
    with pytest.raises(Exception, match="CONVCLI_MAX_PIXELS"):  # the library reads it too
        read_input(str(small_png))


def test_no_limit_still_checks_memory_before_decoding(tmp_path, monkeypatch):
    (tmp_path / "bomb.png").write_bytes(png_claiming(60000, 50000))
    monkeypatch.setenv("CONVCLI_MAX_MEMORY", "1G")
    result = run(
        "conv", tmp_path / "bomb.png", "--max-pixels", "0", "-k", "box", "-o", tmp_path / "o.png"
    )
    refused(result, 1, "decoding input", "needs about", "more than the 1.0 GiB available")


def test_pillows_own_bomb_limit_neither_interferes_nor_leaks(small_png, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # Pillow would refuse 100 pixels
    assert read_input(str(small_png)).data.shape == (1, 10, 10)
    assert Image.MAX_IMAGE_PIXELS == 10


def test_npy_header_bomb_is_refused_without_allocating(tmp_path):
    (tmp_path / "bomb.npy").write_bytes(npy_claiming((100000, 100000)))
    out = tmp_path / "o.npy"
    refused(run("conv", tmp_path / "bomb.npy", "-k", "box", "-o", out), 1, "10,000,000,000 pixels")
    refused(
        run("conv", tmp_path / "bomb.npy", "--max-pixels", "0", "-k", "box", "-o", out),
        1,
        "truncated: the header promises 40,000,000,000 bytes",
        "the file holds 64",
    )
    # the other readers of .npy files: unpool indices, by-hand matrices, kernels
    np.save(tmp_path / "small.npy", np.ones((2, 2), np.float32))
    refused(
        run("unpool", tmp_path / "small.npy", "--indices", tmp_path / "bomb.npy", "-o", out),
        1,
        "truncated",
    )
    refused(
        run("explain", "--by-hand", "--matrix", tmp_path / "bomb.npy", "-k", "box"), 1, "truncated"
    )
    (tmp_path / "bank.npy").write_bytes(npy_claiming((5000, 5000, 3, 3)))
    refused(run("kernels", "show", tmp_path / "bank.npy"), 1, "at most 67,108,864 weights")


@pytest.mark.parametrize(
    "array, problem",
    [
        (np.array([[1, "a"]], dtype=object), "Object arrays cannot be loaded"),
        (np.ones((2, 2), np.complex64), "reads real numbers only"),
        (np.zeros((2, 2), dtype=[("a", "<f4")]), "reads real numbers only"),
        (np.ones(4, np.float32), "expected (H, W) or (H, W, C)"),
        (np.ones((2, 2, 2, 2), np.float32), "expected (H, W) or (H, W, C)"),
        (np.ones((0, 4), np.float32), "is empty"),
    ],
)
def test_unreadable_npy_inputs(array, problem, tmp_path):
    np.save(tmp_path / "x.npy", array, allow_pickle=True)
    refused(run("conv", tmp_path / "x.npy", "-k", "box", "-o", tmp_path / "o.npy"), 1, problem)


def test_npy_layouts_read_exactly(tmp_path):
    values = np.arange(12, dtype=np.float64).reshape(3, 4)
    for name, array in (
        ("f.npy", np.asfortranarray(values)),
        ("be.npy", values.astype(">i4")),
        ("b.npy", values > 5),
    ):
        np.save(tmp_path / name, array)
        assert np.array_equal(read_input(str(tmp_path / name)).data[0], array)
    with open(tmp_path / "v2.npy", "wb") as handle:
        np.lib.format.write_array(handle, values, version=(2, 0))
    assert np.array_equal(read_input(str(tmp_path / "v2.npy")).data[0], values)


def test_non_finite_input_values_propagate_as_in_pytorch(tmp_path):
    values = np.array([[np.nan, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, np.inf]], np.float32)
    np.save(tmp_path / "x.npy", values)
    result = run(
        "conv",
        tmp_path / "x.npy",
        "-k",
        "box:size=2",
        "--padding",
        "valid",
        "-o",
        tmp_path / "o.npy",
    )
    assert result.exit_code == 0, result.output
    out = np.load(tmp_path / "o.npy")[..., 0]
    assert np.isnan(out[0, 0]) and out[1, 2] == np.inf and out[0, 1] == 1


# --------------------------------------------------------------------------------------------
# Memory


def test_memory_estimate_refuses_a_kernel_bank_too_big(tmp_path, monkeypatch):
    np.save(tmp_path / "x.npy", np.ones((100, 100), np.float32))
    np.save(tmp_path / "bank.npy", np.ones((512, 1, 3, 3), np.float32))
    monkeypatch.setenv("CONVCLI_MAX_MEMORY", "16M")
    before = snapshot(tmp_path)
    result = run("conv", tmp_path / "x.npy", "-k", tmp_path / "bank.npy", "-o", tmp_path / "o.npy")
    refused(
        result,
        1,
        "conv2d: the output 512x100x100 and the padded input band 1x3x102 (float32) "
        "needs about 19.5 MiB",
        "left of the 16.0 MiB available beside the 57.1 KiB its inputs hold",
        "CONVCLI_MAX_MEMORY",
    )
    assert snapshot(tmp_path) == before
    monkeypatch.setenv("CONVCLI_MAX_MEMORY", "0")  # 0: no check
    assert (
        run(
            "conv", tmp_path / "x.npy", "-k", tmp_path / "bank.npy", "-o", tmp_path / "o.npy"
        ).exit_code
        == 0
    )


@pytest.mark.parametrize(
    "args, operation",
    [
        (
            ["conv", "-k", "box", "--padding", "1000000000"],
            "conv2d: the output 1x2000000003x2000000003",
        ),
        (["conv", "-k", "box", "--dilation", "1000000"], "the padded input band 1x2000001x2000005"),
        (["conv", "-k", "box", "--transpose", "--stride", "2147483647"], "transposed conv2d"),
    ],
)
def test_absurd_geometry_is_a_memory_error_not_a_crash(args, operation, seed, tmp_path):
    command, *rest = args
    result = run(command, seed, *rest, "-o", tmp_path / "o.npy")
    refused(result, 1, operation, "of memory, more than the")


def test_unpool_output_memory(seed, tmp_path):
    indices = tmp_path / "i.npy"
    np.save(indices, np.zeros((5, 5), np.int64))
    result = run(
        "unpool", seed, "--indices", indices, "--stride", "1000000", "-o", tmp_path / "o.npy"
    )
    refused(result, 1, "max unpooling: the output 1x4000002x4000002")


def test_huge_stride_or_window_is_fine_when_the_output_is_small(seed, tmp_path):
    result = run("conv", seed, "-k", "box", "--stride", "2147483647", "-o", tmp_path / "o.npy")
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "o.npy").shape == (1, 1, 1)
    # a pooling window of 2e9 padded by 1e9: the output is 5x5, and only real cells are visited
    for mode in ("max", "avg"):
        result = run(
            "pool",
            seed,
            "--mode",
            mode,
            "--size",
            "2000000001",
            "--padding",
            "1000000000",
            "--stride",
            "1",
            "-o",
            tmp_path / f"{mode}.npy",
        )
        assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "max.npy")[..., 0].tolist() == [[24] * 5] * 5


def test_memory_left_is_read_only_for_large_allocations(monkeypatch):
    monkeypatch.delenv("CONVCLI_MAX_MEMORY", raising=False)
    monkeypatch.setattr(limits, "_cgroup_room", lambda: None)
    monkeypatch.setattr(
        limits, "_meminfo", lambda field: pytest.fail("read for a small allocation")
    )
    limits.check_memory(limits.UNCHECKED_BYTES - 1, "small")
    monkeypatch.setattr(limits, "_meminfo", lambda field: limits.UNCHECKED_BYTES)
    with pytest.raises(
        LimitError, match="large needs about 64.0 MiB of memory, more than the 64.0 MiB"
    ):
        limits.check_memory(limits.UNCHECKED_BYTES + 1, "large")


def test_memory_budget_parsing(monkeypatch):
    monkeypatch.setenv("CONVCLI_MAX_MEMORY", "1.5G")
    assert limits.memory_budget() == 3 * GIB // 2
    monkeypatch.setenv("CONVCLI_MAX_MEMORY", "0")
    assert limits.memory_budget() is None
    monkeypatch.setenv("CONVCLI_MAX_MEMORY", "much")
    with pytest.raises(Exception, match="not a size in bytes"):
        limits.memory_budget()
    monkeypatch.delenv("CONVCLI_MAX_MEMORY")
    budget = limits.memory_budget()
    assert budget is None or budget > 0
    limits.check_memory(0, "nothing")


# --------------------------------------------------------------------------------------------
# Broken, empty and misnamed files


def test_zero_byte_files(tmp_path):
    for name in ("empty.png", "empty.npy", "empty.jpg"):
        (tmp_path / name).write_bytes(b"")
        refused(
            run("conv", tmp_path / name, "-k", "box", "-o", tmp_path / "o.npy"),
            1,
            "is empty (0 bytes)",
        )


@pytest.mark.parametrize(
    "fmt, ext",
    [
        ("PNG", ".png"),
        ("JPEG", ".jpg"),
        ("GIF", ".gif"),
        ("TIFF", ".tif"),
        ("WEBP", ".webp"),
        ("BMP", ".bmp"),
    ],
)
def test_truncated_images(fmt, ext, tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / f"whole{ext}"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, format=fmt)
    data = path.read_bytes()
    (tmp_path / f"cut{ext}").write_bytes(data[: len(data) // 2])
    result = run("conv", tmp_path / f"cut{ext}", "-k", "box", "-o", tmp_path / "o.npy")
    refused(result, 1, f"input '{tmp_path / f'cut{ext}'}'")
    assert not (tmp_path / "o.npy").exists()


def test_corrupt_png_chunk(tmp_path, small_png):
    data = bytearray(small_png.read_bytes())
    data[-20] ^= 0xFF  # inside the image data: a CRC error
    (tmp_path / "bad.png").write_bytes(bytes(data))
    refused(
        run("conv", tmp_path / "bad.png", "-k", "box", "-o", tmp_path / "o.npy"),
        1,
        "corrupt or truncated",
    )


def test_content_decides_not_the_extension(tmp_path, small_png):
    expected = read_input(str(small_png)).data
    for name in ("png.jpg", "png.npy", "png.tif", "png"):
        (tmp_path / name).write_bytes(small_png.read_bytes())
        assert np.array_equal(read_input(str(tmp_path / name)).data, expected)
    np.save(tmp_path / "array.npy", np.ones((3, 4), np.float32))
    (tmp_path / "array.png").write_bytes((tmp_path / "array.npy").read_bytes())
    assert read_input(str(tmp_path / "array.png")).data.shape == (1, 3, 4)
    out = tmp_path / "o.npy"
    assert run("conv", tmp_path / "png.jpg", "-k", "box", "-o", out).exit_code == 0


@pytest.mark.parametrize(
    "content",
    [
        b"hello, world\n",
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
        b"\x00" * 100,
        bytes(range(256)) * 4,
        b"<svg></svg>",
        b"GIF89a",
    ],
)
def test_non_images_are_refused(content, tmp_path):
    (tmp_path / "x.png").write_bytes(content)
    line = refused(run("conv", tmp_path / "x.png", "-k", "box", "-o", tmp_path / "o.npy"), 1)
    assert "not an image" in line or "corrupt" in line


def test_unreadable_and_special_paths(tmp_path):
    refused(run("conv", tmp_path, "-k", "box", "-o", tmp_path / "o.npy"), 1, f"{str(tmp_path)!r}")
    refused(run("conv", "nul\0.png", "-k", "box", "-o", tmp_path / "o.npy"), 2, "NUL character")
    with pytest.raises(InputError, match="NUL character"):
        read_input("a\0.png")


# --------------------------------------------------------------------------------------------
# Frames


@pytest.fixture
def animated(tmp_path):
    frames = [Image.new("RGB", (5, 3), (60 * i, 10, 200)) for i in range(3)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    return path


def test_animated_gif_first_frame_by_default_and_frame_option(animated, tmp_path):
    assert read_input(str(animated)).data[:, 0, 0].tolist() == [0, 10, 200]
    assert read_input(str(animated), options=ReadOptions(frame=2)).data[:, 0, 0].tolist() == [
        120,
        10,
        200,
    ]
    out = tmp_path / "o.npy"
    assert run("conv", animated, "-k", "identity", "--frame", "1", "-o", out).exit_code == 0
    assert np.load(out)[0, 0].tolist() == [60, 10, 200]
    refused(
        run("conv", animated, "-k", "identity", "--frame", "3", "-o", tmp_path / "x.npy"),
        1,
        "--frame 3 is out of range",
        "has 3 frames (0 to 2)",
    )


def test_multi_page_tiff_pages_of_different_sizes(tmp_path):
    pages = [Image.new("L", (4 + i, 2 + i), 50 * i) for i in range(3)]
    path = tmp_path / "pages.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    for index in range(3):
        data = read_input(str(path), options=ReadOptions(frame=index)).data
        assert data.shape == (1, 2 + index, 4 + index) and data.max() == 50 * index
    out = tmp_path / "o.npy"
    refused(
        run("pool", path, "--frame", "1", "--max-pixels", "14", "-o", out),
        1,
        "3x5 (rows x columns) = 15",
    )


def test_frame_of_single_images_and_bad_frame_values(tmp_path, small_png, seed):
    out = tmp_path / "o.npy"
    refused(
        run("conv", small_png, "-k", "box", "--frame", "1", "-o", out), 1, "has 1 frame (0 to 0)"
    )
    refused(run("conv", seed, "-k", "box", "--frame", "1", "-o", out), 1, "a .npy array")
    for bad in ("-1", "x", "\uff11", "1.5"):
        refused(run("conv", small_png, "-k", "box", "--frame", bad, "-o", out), 2, "--frame")


# --------------------------------------------------------------------------------------------
# Pixel modes


RGB = np.random.default_rng(7).integers(0, 256, (4, 6, 3), dtype=np.uint8)


def test_palette_image_reads_as_its_colours(tmp_path):
    palette = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette.save(tmp_path / "p.png")
    picture = read_input(str(tmp_path / "p.png"))
    assert picture.white == 255 and picture.alpha is None
    assert np.array_equal(picture.data.transpose(1, 2, 0), np.asarray(palette.convert("RGB")))
    palette.save(tmp_path / "pt.png", transparency=0)
    picture = read_input(str(tmp_path / "pt.png"))
    assert picture.data.shape == (3, 4, 6)
    assert np.array_equal(picture.alpha == 0, np.asarray(palette) == 0)


@pytest.mark.parametrize("ext", [".tif", ".jpg"])
def test_cmyk_reads_as_rgb(ext, tmp_path):
    cmyk = Image.fromarray(RGB).convert("CMYK")
    cmyk.save(tmp_path / f"c{ext}")
    picture = read_input(str(tmp_path / f"c{ext}"))
    assert picture.data.shape == (3, 4, 6) and picture.white == 255
    if ext == ".tif":
        assert np.array_equal(picture.data.transpose(1, 2, 0), np.asarray(cmyk.convert("RGB")))


def test_la_sets_alpha_aside_or_keeps_it(tmp_path):
    Image.fromarray(RGB[..., :2], "LA").save(tmp_path / "la.png")
    picture = read_input(str(tmp_path / "la.png"))
    assert np.array_equal(picture.data[0], RGB[..., 0]) and np.array_equal(
        picture.alpha, RGB[..., 1]
    )
    kept = read_input(str(tmp_path / "la.png"), alpha_as_channel=True)
    assert kept.data.shape == (2, 4, 6) and kept.alpha is None


def test_sixteen_bit_big_endian(tmp_path):
    values = (np.arange(24).reshape(4, 6) * 2000 + 5).astype(">u2")
    Image.frombytes("I;16B", (6, 4), values.tobytes()).save(tmp_path / "be.tif")
    with Image.open(tmp_path / "be.tif") as stored:
        assert stored.mode == "I;16B"
    picture = read_input(str(tmp_path / "be.tif"))
    assert picture.white == 65535 and np.array_equal(picture.data[0], values.astype(int))
    out = tmp_path / "o.png"
    assert run("conv", tmp_path / "be.tif", "-k", "identity", "-o", out).exit_code == 0
    with Image.open(out) as written:
        assert np.array_equal(np.asarray(written), values.astype(np.uint16))


def test_one_bit_reads_as_0_and_255(tmp_path):
    Image.fromarray(RGB[..., 0] > 128).convert("1").save(tmp_path / "b.png")
    picture = read_input(str(tmp_path / "b.png"))
    assert picture.white == 255 and np.array_equal(
        picture.data[0], np.where(RGB[..., 0] > 128, 255, 0)
    )


# --------------------------------------------------------------------------------------------
# EXIF orientation: applied, as OpenCV's imread does

ORIENTED = {  # EXIF orientation -> the stored array turned upright
    1: lambda a: a,
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: lambda a: a.T,
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).T,
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", list(ORIENTED))
def test_exif_orientation_is_applied(orientation, tmp_path):
    stored = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "o.png", exif=exif)
    assert np.array_equal(
        read_input(str(tmp_path / "o.png")).data[0], ORIENTED[orientation](stored)
    )


def test_exif_orientation_matches_opencv(tmp_path):
    cv2 = pytest.importorskip("cv2")
    stored = np.zeros((16, 24), np.uint8)
    stored[:4, :4] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "o.png", exif=exif)
    Image.fromarray(stored).save(tmp_path / "o.jpg", exif=exif, quality=100)
    assert np.array_equal(
        read_input(str(tmp_path / "o.png")).data[0],
        cv2.imread(str(tmp_path / "o.png"), cv2.IMREAD_GRAYSCALE),
    )
    ours = read_input(str(tmp_path / "o.jpg")).data[0]
    theirs = cv2.imread(str(tmp_path / "o.jpg"), cv2.IMREAD_GRAYSCALE)
    assert ours.shape == theirs.shape == (24, 16)
    assert np.abs(ours.astype(int) - theirs).max() <= 8  # two JPEG decoders


# --------------------------------------------------------------------------------------------
# Kernels


@pytest.mark.parametrize(
    "name, content, problem",
    [
        (
            "nan.npy",
            np.array([[1, np.nan]], np.float32),
            "weights must be finite, found nan at [0, 1]",
        ),
        ("empty.npy", np.zeros((0, 0), np.float32), "the kernel is empty (shape (0, 0))"),
        (
            "wide.npy",
            np.ones((1, 2000), np.float32),
            "at most 1024 cells per side, this one is 1x2000",
        ),
        ("inf.yaml", "weights: '1 inf'\n", "weights must be finite"),
        ("big.yaml", "weights: '1 1e39'\n", "within float32's range"),
        (
            "scale.yaml",
            "weights: '1'\nscale: " + "9" * 400 + "\n",
            "scale (a number or 'sum') must be a finite",
        ),
        (
            "gen.yaml",
            "generator: gaussian\nparameters:\n  sigma: {type: float, default: 1.0}\n"
            "  size: {type: int, default: 100001}\n",
            "a kernel 100001 cells wide",
        ),
        (
            "sigma.yaml",
            "generator: gaussian\nparameters:\n  sigma: {type: float, default: 1e7}\n"
            "  size: {type: int, default: null}\n",
            "a kernel 60000001 cells wide",
        ),
        (
            "bound.yaml",
            "weights: '1'\nparameters:\n  x: {type: int, default: 1, max: .inf}\n",
            "finite numbers",
        ),
        ("huge.mat", "1 1 " + "9" * 400 + "\n1\n", "scale must be a finite"),
        (
            "choice.yaml",
            "generator: box\nparameters:\n  size: {type: choice, choices: [a, b], default: a}\n",
            "generator 'box' takes numbers, got {'size': 'a'}",
        ),
        (
            "zero.yaml",
            "generator: box\nparameters:\n  size: {type: int, default: 0}\n",
            "generator 'box' failed",
        ),
    ],
)
def test_bad_kernel_files(name, content, problem, tmp_path, seed):
    path = tmp_path / name
    np.save(path, content) if isinstance(content, np.ndarray) else path.write_text(content)
    with pytest.raises((KernelError, LimitError)) as caught:
        resolve_kernel(str(path))
    assert problem in str(caught.value)
    refused(run("conv", seed, "-k", path, "-o", tmp_path / "o.npy"), 1, problem)


@pytest.mark.parametrize(
    "spec, problem",
    [
        ("0x0:", "width and height must be at least 1"),
        ("\uff13x1: 1 2 3", "is not a kernel name"),
        ("box:size=\uff13", "size='３' is not a whole number"),
        ("box:size=1_1", "is not a whole number"),
        ("box:size=" + "9" * 400, "is too large"),
        ("gaussian:sigma=" + "9" * 400, "must be finite"),
        ("gaussian:sigma=1e400", "must be finite"),
        ("box:size=-3", "must be at least 1"),
    ],
)
def test_bad_kernel_parameters(spec, problem, seed, tmp_path):
    refused(run("conv", seed, "-k", spec, "-o", tmp_path / "o.npy"), 1, problem)
    refused(run("kernels", "show", spec), 1, problem)


def test_a_kernel_over_a_limit_breaks_only_its_entry_in_the_list(tmp_path):
    np.save(tmp_path / "wide.npy", np.ones((1, 2000), np.float32))
    result = run("kernels", "list", "--kernel-path", tmp_path, "--json")
    assert result.exit_code == 1 and '"error"' in result.stdout and "1024 cells" in result.stdout


# --------------------------------------------------------------------------------------------
# YAML


def laughs(levels=9):
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nweights: *a{levels - 1}\n"


YAML_CASES = {
    "python tag": (
        "weights: !!python/object/apply:os.system ['echo pwned > {tmp}/pwned']\n",
        "unsafe or unknown YAML tag",
    ),
    "python name": ("weights: !!python/name:os.system\n", "unsafe or unknown YAML tag"),
    "billion laughs": (laughs(), f"more than {MAX_NODES:,} values once aliases are expanded"),
    "recursive alias": ("weights: &a [1, *a]\n", "refers to a collection that contains it"),
    "deep flow": (
        "weights: " + "[" * 50000 + "]" * 50000 + "\n",
        f"nested more than {MAX_DEPTH} levels",
    ),
    "deep block": (
        "".join(" " * i + "- \n" for i in range(200)),
        f"nested more than {MAX_DEPTH} levels",
    ),
    # past libyaml's own limit (1,000 levels in newer releases): still convcli's check and message
    "deeper block": ("- " * 1500 + "1\n", f"nested more than {MAX_DEPTH} levels"),
    "deep flow maps": (
        "weights: " + "{{a: " * 1500 + "1" + "}}" * 1500 + "\n",
        f"nested more than {MAX_DEPTH} levels",
    ),
    "duplicate key": ("weights: '1'\nweights: '2'\n", "line 2: the key 'weights' is given twice"),
    "unknown key": ("wieghts: '1'\n", "unknown key 'wieghts' (did you mean 'weights'?"),
    "unknown rule": (
        "weights: '1'\nparameters:\n  size:\n    type: int\n    default: 3\n    mx: 9\n",
        "parameter 'size': unknown key 'mx' (did you mean 'max'?",
    ),
    "too big": ("weights: '1'\n#" + "x" * limits.MAX_TEXT_BYTES + "\n", "1,000,000-byte limit"),
    "two documents": ("weights: '1'\n---\nweights: '2'\n", "not valid YAML"),
    "unhashable key": ("? [a, b]\n: 1\n", "unhashable"),
}


@pytest.mark.parametrize("case", list(YAML_CASES))
def test_hostile_yaml_kernels(case, tmp_path, seed):
    text, problem = YAML_CASES[case]
    path = tmp_path / "k.yaml"
    path.write_text(text.format(tmp=tmp_path))
    before = snapshot(tmp_path)
    refused(run("kernels", "show", path), 1, f"{path}: ", problem)
    refused(run("conv", seed, "-k", path, "-o", tmp_path / "o.npy"), 1, problem)
    assert snapshot(tmp_path) == before  # nothing ran, nothing written


def test_yaml_that_is_not_utf8_and_with_a_bom(tmp_path):
    (tmp_path / "latin.yaml").write_bytes("description: caf\xe9\nweights: '1'\n".encode("latin-1"))
    refused(run("kernels", "show", tmp_path / "latin.yaml"), 1, "not UTF-8 text (byte 16)")
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbfweights: '1 2'\n")
    assert resolve_kernel(str(tmp_path / "bom.yaml")).weights.tolist() == [[1.0, 2.0]]


def test_load_yaml_safely_keeps_ordinary_anchors_and_the_error_class(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("base: &b {stride: 2}\nsteps:\n  - <<: *b\n    op: conv\n")
    assert load_yaml_safely(str(path), "pipeline") == {
        "base": {"stride": 2},
        "steps": [{"stride": 2, "op": "conv"}],
    }
    path.write_text(laughs())
    with pytest.raises(KernelError, match="^pipeline 'p.yaml': line"):
        load_yaml_safely(str(path), "pipeline 'p.yaml'", KernelError)


def test_check_keys_names_the_field():
    with pytest.raises(
        InputError, match=r"^step 3 \(pool\): unknown key 'sise' \(did you mean 'size'\?"
    ):
        check_keys({"op": "pool", "sise": 2}, ("op", "size", "stride"), "step 3 (pool)")
    check_keys({"op": "pool"}, ("op", "size"), "step 1")


# --------------------------------------------------------------------------------------------
# Parameters: negative, absurd, non-numeric and unicode junk


JUNK = {  # option arguments -> (exit code, part of the message)
    "fullwidth stride": (["--stride", "\uff12"], 2, "stride '２' is not a whole number"),
    "underscore stride": (["--stride", "1_0"], 2, "is not a whole number"),
    "negative stride": (["--stride", "-1"], 2, "stride must be at least 1"),
    "huge stride": (["--stride", str(10**30)], 2, "stride must be at most 2147483647"),
    "huge negative": (["--dilation", "-" + "9" * 5000], 2, "dilation must be at least 1"),
    "huge dilation": (["--dilation", str(10**30)], 2, "dilation must be at most 2147483647"),
    "dilation too wide": (
        ["--dilation", "1000000", "--padding", "valid"],
        1,
        "(dilated to 2000001x2000001) is larger",
    ),
    "long s": (["--padding", "\u017fame"], 2, "padding 'ſame'"),
    "negative padding": (["--padding", "1,-1"], 2, "padding must not be negative"),
    "fullwidth pad mode": (["--pad-mode", "\uff5aeros"], 2, "pad mode"),
    "fullwidth bias": (["--bias", "\uff11"], 2, "bias '１' is not a number"),
    "nan bias": (["--bias", "nan"], 2, "must be finite"),
    "infinite bias": (["--bias", "1e999"], 2, "must be finite"),
    "fullwidth groups": (["--groups", "\uff12"], 2, "groups"),
    "huge groups": (["--groups", str(10**30)], 2, "groups must be at most"),
    "zero groups": (["--groups", "0"], 2, "groups must be at least 1"),
    "nan scale": (["--scale", "nan"], 2, "scale 'nan' must be finite"),
    "fullwidth offset": (["--offset", "\uff11"], 2, "offset"),
    "empty stride": (["--stride", ""], 2, "stride"),
    "surrogate": (["--padding", "\udcff"], 2, "padding"),
    "rtl override": (["--stride", "\u202e2"], 2, "stride"),
    "NUL": (["--stride", "1\0"], 2, "contains a NUL character"),
}


@pytest.mark.parametrize("case", list(JUNK))
def test_junk_options_give_one_line(case, seed, tmp_path):
    args, code, expected = JUNK[case]
    before = snapshot(tmp_path)
    refused(run("conv", seed, "-k", "box", *args, "-o", tmp_path / "o.npy"), code, expected)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "args, expected",
    [
        (["pool", "{seed}", "--size", "0", "-o", "{tmp}/o.npy"], "size must be at least 1"),
        (["pool", "{seed}", "--size", "\uff12", "-o", "{tmp}/o.npy"], "is not a whole number"),
        (["pool", "{seed}", "--stride", str(10**40), "-o", "{tmp}/o.npy"], "at most 2147483647"),
        (
            ["unpool", "{seed}", "--indices", "{seed}", "--output-size", "-5", "-o", "{tmp}/o.npy"],
            "at least 1",
        ),
        (["explain", "-i", "9x9", "conv \uff16\uff14 k3"], "unknown token"),
        (["explain", "-i", "9x9", "conv 64 k\uff13"], "unknown token"),
        (["explain", "-i", "9x9", "conv 64 k" + "9" * 40], "at most 2147483647"),
    ],
)
def test_junk_in_other_commands(args, expected, seed, tmp_path):
    refused(run(*[a.format(seed=seed, tmp=tmp_path) for a in args]), 2, expected)


def test_option_value_helpers():
    assert limits.parse_whole("+7", "x") == 7
    assert limits.parse_bytes("512 MiB", "x") == 512 * 2**20
    assert limits.shorten("x" * 100, 10) == "xxxxxxx..."
    limits.check_kernel_shape((3, 1024, 1024), "k")
    with pytest.raises(LimitError):
        limits.check_kernel_shape((1, 1025), "k")


def test_out_of_memory_anyway_is_one_line(seed, tmp_path, monkeypatch):
    """If the estimate is passed but memory still runs out, the CLI says so in one line."""
    from convcli import engine

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(engine, "conv2d", exhausted)
    refused(run("conv", seed, "-k", "box", "-o", tmp_path / "o.npy"), 1, "out of memory")
    assert not os.path.exists(tmp_path / "o.npy")
