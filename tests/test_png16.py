"""16-bit colour PNGs keep their 16 bits (Pillow alone would keep only the high byte)."""

import numpy as np
import pytest
from click.testing import CliRunner

from convcli.io import png as png16
from convcli.cli.main import cli
from convcli.io.images import encode_png, read_input

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

    methods = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
               4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
               7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
    plane = np.arange(12, dtype=np.uint8).reshape(3, 4)
    image = Image.fromarray(plane)
    expected = np.asarray(image.transpose(methods[orientation])) if orientation in methods else plane
    assert np.array_equal(png16.upright(plane[:, :, None], orientation)[:, :, 0], expected)


def test_corrupt_data_is_one_line(tmp_path):
    data = bytearray(encode_png(sixteen_bit(4, 4, 3)))
    data[45:60] = b"\x00" * 15  # inside the compressed image data
    path = tmp_path / "bad.png"
    path.write_bytes(bytes(data))
    result = CliRunner().invoke(cli, ["conv", str(path), "-k", "box", "-o", str(tmp_path / "o.png")])
    assert result.exit_code == 1 and result.stderr.startswith("Error: ") and "Traceback" not in result.output
