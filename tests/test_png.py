"""convcli.io.png: the encoder of every PNG written, and 16-bit colour PNGs read with their 16 bits
(Pillow alone would keep only the high byte)."""

import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from convcli.cli.main import cli
from convcli.io import png as png16
from convcli.io.images import read_input
from convcli.io.png import encode_png

cv2 = pytest.importorskip("cv2")


def sixteen_bit(height, width, channels, seed=0):
    """A gradient plus noise: rows that favour every PNG filter (Sub, Up, Average, Paeth)."""
    rows, cols = np.mgrid[0:height, 0:width]
    base = (rows * 997 + cols * 131)[:, :, None] * np.arange(1, channels + 1)
    noise = np.random.default_rng(seed).integers(0, 4000, (height, width, channels))
    return ((base + noise) % 65536).astype(np.uint16)


@pytest.mark.parametrize("channels", [3, 4])
def test_png_written_by_opencv_reads_exactly(tmp_path, channels):
    pixels = sixteen_bit(37, 53, channels)
    path = tmp_path / "x.png"
    bgr = pixels[:, :, [2, 1, 0, 3][:channels]]
    assert cv2.imwrite(str(path), bgr)  # libpng's adaptive filtering: all five filter types
    picture = read_input(str(path))
    assert picture.white == 65535.0 and picture.data.dtype == np.uint16
    assert np.array_equal(picture.data.transpose(1, 2, 0), pixels[:, :, :3])
    if channels == 4:
        assert np.array_equal(picture.alpha, pixels[:, :, 3])


def test_gray_alpha_and_convcli_own_encoder_round_trip(tmp_path):
    pixels = sixteen_bit(9, 11, 2)
    path = tmp_path / "la.png"
    path.write_bytes(encode_png(pixels))
    picture = read_input(str(path), alpha_as_channel=True)
    assert np.array_equal(picture.data.transpose(1, 2, 0), pixels)


def test_identity_keeps_all_sixteen_bits_through_the_cli(tmp_path):
    pixels = sixteen_bit(16, 16, 3)
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    cv2.imwrite(str(src), pixels[:, :, ::-1])
    result = CliRunner().invoke(cli, ["conv", str(src), "-k", "identity", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert np.array_equal(cv2.imread(str(out), cv2.IMREAD_UNCHANGED)[:, :, ::-1], pixels)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_turns_as_pillow_does(orientation):
    from PIL import Image

    methods = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }
    plane = np.arange(12, dtype=np.uint8).reshape(3, 4)
    image = Image.fromarray(plane)
    expected = (
        np.asarray(image.transpose(methods[orientation])) if orientation in methods else plane
    )
    assert np.array_equal(png16.upright(plane[:, :, None], orientation)[:, :, 0], expected)


def test_corrupt_data_is_one_line(tmp_path):
    data = bytearray(encode_png(sixteen_bit(4, 4, 3)))
    data[45:60] = b"\x00" * 15  # inside the compressed image data
    path = tmp_path / "bad.png"
    path.write_bytes(bytes(data))
    result = CliRunner().invoke(
        cli, ["conv", str(path), "-k", "box", "-o", str(tmp_path / "o.png")]
    )
    assert (
        result.exit_code == 1
        and result.stderr.startswith("Error: ")
        and "Traceback" not in result.output
    )


def pixels(path):
    with Image.open(path) as image:
        return image.mode, np.asarray(image)


def cv2_pixels(path):
    """OpenCV's reading (BGR turned to RGB), for 16-bit colour PNGs Pillow reads as 8-bit."""
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array.ndim == 3:
        array = array[..., [2, 1, 0, 3][: array.shape[2]]]
    return array


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png_encoder_round_trips(channels, tmp_path):
    rng = np.random.default_rng(channels)
    data = rng.integers(0, 65536, (5, 7, channels), dtype=np.uint16)
    data[0, 0], data[-1, -1] = 0, 65535
    path = tmp_path / "e.png"
    path.write_bytes(encode_png(data))
    with Image.open(path) as image:
        image.verify()  # chunk CRCs and structure
    if channels == 1:
        mode, array = pixels(path)
        assert mode.startswith("I") and np.array_equal(array, data[..., 0])
    elif channels == 2:  # OpenCV expands gray + alpha to BGRA
        assert np.array_equal(cv2_pixels(path), data[..., [0, 0, 0, 1]])
    else:
        assert np.array_equal(cv2_pixels(path), data)


@pytest.mark.parametrize("channels, mode", [(1, "L"), (2, "LA"), (3, "RGB"), (4, "RGBA")])
@pytest.mark.parametrize("height", [1, 2, 7, 9, 300])
def test_png_encoder_eight_bit_strips_read_back_in_pillow(
    channels, mode, height, tmp_path, monkeypatch
):
    monkeypatch.setattr(
        png16, "PNG_STRIP_BYTES", 37 * channels * 4
    )  # strips of 4 rows, a partial last one
    data = np.random.default_rng(height).integers(0, 256, (height, 37, channels), dtype=np.uint8)
    data[height // 2 :] //= 16  # long runs too, not only noise
    path = tmp_path / "e.png"
    path.write_bytes(encode_png(data))
    with Image.open(path) as image:
        image.verify()
    read_mode, array = pixels(path)
    assert read_mode == mode and np.array_equal(array.reshape(data.shape), data)


def test_png_strips_are_one_zlib_stream(monkeypatch):
    monkeypatch.setattr(
        png16, "PNG_STRIP_BYTES", 27 * 3
    )  # 14 IDAT chunks of 3 rows (1 for the last)
    data = np.random.default_rng(1).integers(0, 256, (40, 9, 3), dtype=np.uint8)
    png = encode_png(data)
    stream, at = b"", 33
    while png[at + 4 : at + 8] == b"IDAT":
        length = int.from_bytes(png[at : at + 4], "big")
        stream, at = stream + png[at + 8 : at + 8 + length], at + 12 + length
    assert png[at + 4 : at + 8] == b"IEND" and png.count(b"IDAT") == 14
    rows = np.frombuffer(zlib.decompress(stream), np.uint8).reshape(
        40, 28
    )  # checks the Adler-32 too
    assert (rows[:, 0] == 2).all() and np.array_equal(
        np.cumsum(rows[:, 1:], axis=0, dtype=np.uint8), data.reshape(40, 27)
    )
