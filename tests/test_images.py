"""convcli.io.images writing: depths, formats, units, layouts, atomic writes, goldens."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convcli.errors import OutputError, ParameterError, ShapeError
from convcli.io import atomic, images
from convcli.io.images import OutputSettings, write_output
from convcli.render import mapping

GOLDEN = Path(__file__).parent / "golden"
RAW = np.array([[[-100, -64, -2, 0], [2, 6, 300, 410]]], dtype=np.float32)
HAND = {  # the same hand-checked values as tests/test_mapping.py
    "clip": [[0, 0, 0, 0], [2, 6, 255, 255]],
    "abs": [[100, 64, 2, 0], [2, 6, 255, 255]],
    "minmax": [[0, 18, 49, 50], [51, 53, 200, 255]],
    "offset": [[28, 64, 126, 128], [130, 134, 255, 255]],
}


def pixels(path):
    with Image.open(path) as image:
        return image.mode, np.asarray(image)


def cv2_pixels(path):
    """OpenCV's reading (BGR turned to RGB), for 16-bit colour PNGs Pillow reads as 8-bit."""
    cv2 = pytest.importorskip("cv2")
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array.ndim == 3:
        array = array[..., [2, 1, 0, 3][: array.shape[2]]]
    return array


@pytest.mark.parametrize("mode", list(HAND))
def test_golden_mapping_images(mode, tmp_path):
    out = tmp_path / "o.png"
    write_output(str(out), RAW, None, settings=OutputSettings(map=mode))
    written, golden = pixels(out), pixels(GOLDEN / f"map_{mode}.png")
    assert written[0] == golden[0] == "L"
    assert np.array_equal(written[1], golden[1])
    assert written[1].tolist() == HAND[mode]


def test_golden_sixteen_bit_rgb(tmp_path):
    rgb = np.stack(
        [np.arange(8, dtype=np.float32).reshape(2, 4) * 9000 + c * 1000 for c in range(3)]
    )
    out = tmp_path / "o.png"
    write_output(str(out), rgb, 65535.0)
    expected = rgb.transpose(1, 2, 0).astype(np.uint16)
    assert np.array_equal(cv2_pixels(out), expected)
    assert np.array_equal(cv2_pixels(GOLDEN / "rgb16.png"), expected)


def test_golden_colormap(tmp_path):
    ramp = np.linspace(0, 255, 8, dtype=np.float32).reshape(1, 2, 4)
    out = tmp_path / "o.png"
    write_output(str(out), ramp, 255.0, settings=OutputSettings(colormap="viridis"))
    table = mapping.colormap_table("viridis")
    expected = mapping.to_integers(
        np.stack([np.interp(ramp[0], np.arange(256), table[:, k]) * 255 for k in range(3)], axis=2),
        8,
    )
    assert np.array_equal(pixels(out)[1], expected)
    assert np.array_equal(pixels(GOLDEN / "viridis.png")[1], expected)
    assert pixels(out)[1][0, 0].tolist() == [68, 1, 84] and pixels(out)[1][1, 3].tolist() == [
        253,
        231,
        37,
    ]


def test_float_to_sixteen_bit_to_float_within_one_step(tmp_path):
    rng = np.random.default_rng(3)
    values = rng.random((1, 9, 11), dtype=np.float32)
    values[0, 0, :3] = [0.0, 1.0, 0.5 / 65535]
    first, back = tmp_path / "a.png", tmp_path / "b.tif"
    write_output(str(first), values, 1.0)  # a float input goes to 16-bit PNG
    picture = images.read_input(str(first))
    assert picture.white == 65535.0
    write_output(str(back), picture.data, picture.white, settings=OutputSettings(depth="32f"))
    mode, again = pixels(back)
    assert mode == "F"
    assert np.abs(again - values[0]).max() <= 0.5 / 65535 + 1e-7


DEPTH_CASES = [  # (input white, extension, channels, expected Pillow mode or 16-bit RGB marker)
    (255.0, ".png", 1, "L"),
    (255.0, ".tif", 3, "RGB"),
    (65535.0, ".png", 1, "I;16"),
    (65535.0, ".tif", 1, "I;16"),
    (65535.0, ".jpg", 1, "L"),
    (65535.0, ".tif", 3, "RGB"),  # 16-bit TIFF holds one channel: falls back to 8-bit
    (65535.0, ".png", 3, "rgb16"),
    (1.0, ".tif", 1, "F"),
    (1.0, ".png", 1, "I;16"),
    (1.0, ".webp", 3, "RGB"),
    (None, ".png", 1, "L"),
    (None, ".tif", 1, "L"),
]


@pytest.mark.parametrize("white, ext, channels, expected", DEPTH_CASES)
def test_derived_depth(white, ext, channels, expected, tmp_path):
    out = tmp_path / f"o{ext}"
    write_output(str(out), np.full((channels, 4, 4), (white or 255.0) / 2, np.float32), white)
    if expected == "rgb16":
        assert cv2_pixels(out).dtype == np.uint16
    else:
        assert pixels(out)[0] == expected


def test_units_follow_white_levels(tmp_path):
    maps = np.array([[[0.0, 1.0, 128.0, 255.0]]], np.float32)
    write_output(str(tmp_path / "a.png"), maps, 255.0, settings=OutputSettings(depth="16"))
    assert pixels(tmp_path / "a.png")[1].tolist() == [[0, 257, 32896, 65535]]
    write_output(str(tmp_path / "b.tif"), maps, 255.0, settings=OutputSettings(depth="32f"))
    np.testing.assert_allclose(
        pixels(tmp_path / "b.tif")[1], [[0, 1 / 255, 128 / 255, 1]], rtol=1e-6
    )
    sixteen = np.array([[[0.0, 257.0, 32896.0, 65535.0]]], np.float32)
    write_output(str(tmp_path / "c.png"), sixteen, 65535.0, settings=OutputSettings(depth="8"))
    assert pixels(tmp_path / "c.png")[1].tolist() == [[0, 1, 128, 255]]
    write_output(str(tmp_path / "d.npy"), sixteen, 65535.0)  # .npy keeps the input's units
    assert np.load(tmp_path / "d.npy")[..., 0].tolist() == [[0, 257, 32896, 65535]]


def test_sixteen_bit_signed_map_centres_on_32768(tmp_path):
    maps = np.array([[[-1.0, 0.0, 1.0]]], np.float32)
    write_output(str(tmp_path / "o.png"), maps, 65535.0, signed=[True])
    assert pixels(tmp_path / "o.png")[1].tolist() == [[32767, 32768, 32769]]


def test_float_tiff_keeps_negatives_with_map_none_by_default(tmp_path):
    out = tmp_path / "o.tif"
    write_output(str(out), RAW, 255.0, settings=OutputSettings(depth="32f"))
    np.testing.assert_allclose(pixels(out)[1], RAW[0] / 255, rtol=1e-6)
    write_output(str(out), RAW, 255.0, settings=OutputSettings(map="clip", depth="32f"))
    assert pixels(out)[1].max() == 1.0 and pixels(out)[1].min() == 0.0


def test_npy_layouts_and_mapping(tmp_path):
    maps = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 5
    write_output(str(tmp_path / "a.npy"), maps)
    assert np.array_equal(np.load(tmp_path / "a.npy"), maps.transpose(1, 2, 0))
    write_output(str(tmp_path / "b.npy"), maps, settings=OutputSettings(channels_first=True))
    assert np.array_equal(np.load(tmp_path / "b.npy"), maps)
    write_output(str(tmp_path / "c.npy"), maps, 255.0, settings=OutputSettings(map="clip"))
    assert np.load(tmp_path / "c.npy").min() == 0
    write_output(
        str(tmp_path / "s.npy"), maps, settings=OutputSettings(split=True, channels_first=True)
    )
    assert [np.load(tmp_path / f"s_0{i}.npy").shape for i in range(2)] == [(1, 3, 4)] * 2
    assert np.array_equal(np.load(tmp_path / "s_01.npy")[0], maps[1])


def test_alpha_is_carried_where_stored(tmp_path):
    maps = np.full((1, 2, 2), 1000.0, np.float32)
    alpha = np.array([[0.0, 65535.0], [30000.0, 70000.0]], np.float32)
    write_output(str(tmp_path / "a.png"), maps, 65535.0, alpha)  # 16-bit gray + alpha, our encoder
    assert cv2_pixels(tmp_path / "a.png")[..., 3].tolist() == [[0, 65535], [30000, 65535]]
    write_output(str(tmp_path / "b.tif"), maps, 65535.0, alpha)  # 16-bit TIFF has no alpha: dropped
    assert pixels(tmp_path / "b.tif")[0] == "I;16"
    write_output(str(tmp_path / "c.png"), maps, 65535.0, alpha, OutputSettings(colormap="gray"))
    assert pixels(tmp_path / "c.png")[0] == "RGBA"  # Pillow reads 16-bit RGBA as 8-bit RGBA
    write_output(str(tmp_path / "d.jpg"), np.zeros((3, 2, 2), np.float32), 255.0, alpha / 257)
    assert pixels(tmp_path / "d.jpg")[0] == "RGB"


def test_rgba_from_four_maps(tmp_path):
    maps = np.stack([np.full((2, 2), v, np.float32) for v in (10, 20, 30, 40)])
    write_output(str(tmp_path / "o.png"), maps, 255.0, settings=OutputSettings(rgba=True))
    mode, array = pixels(tmp_path / "o.png")
    assert mode == "RGBA" and array[0, 0].tolist() == [10, 20, 30, 40]


@pytest.mark.parametrize("ext", [".bmp", ".webp", ".tif", ".png"])
def test_lossless_formats_are_exact(ext, tmp_path):
    maps = np.random.default_rng(1).integers(0, 256, (3, 5, 6)).astype(np.float32)
    out = tmp_path / f"o{ext}"
    write_output(str(out), maps, 255.0)
    assert np.array_equal(pixels(out)[1], maps.transpose(1, 2, 0))


def test_jpeg_is_close(tmp_path):
    maps = np.full((1, 16, 16), 100.0, np.float32)
    write_output(str(tmp_path / "o.jpg"), maps, 255.0)
    assert np.abs(pixels(tmp_path / "o.jpg")[1].astype(int) - 100).max() <= 1


def test_split_names_and_contents(tmp_path):
    maps = np.stack([np.full((3, 2), i * 10, np.float32) for i in range(12)])
    write_output(str(tmp_path / "maps.png"), maps, 255.0, settings=OutputSettings(split=True))
    names = sorted(os.listdir(tmp_path))
    assert names == [f"maps_{i:02d}.png" for i in range(12)]
    for i, name in enumerate(names):
        mode, array = pixels(tmp_path / name)
        assert mode == "L" and array.shape == (3, 2) and (array == i * 10).all()
    assert images.split_names("a/b.tif", 1) == ["a/b_00.tif"]


def test_split_with_colormap_and_joint(tmp_path):
    maps = np.array([[[0.0, 1.0]], [[0.0, 2.0]]], np.float32)
    settings = OutputSettings(split=True, map="minmax", joint=True, colormap="gray")
    write_output(str(tmp_path / "o.png"), maps, 255.0, settings=settings)
    assert pixels(tmp_path / "o_00.png")[1][0, :, 0].tolist() == [0, 128]  # 127.5 rounds to even
    assert pixels(tmp_path / "o_01.png")[1][0, :, 0].tolist() == [0, 255]


def test_split_float_tiffs(tmp_path):
    write_output(
        str(tmp_path / "o.tif"),
        RAW.repeat(3, axis=0),
        255.0,
        settings=OutputSettings(split=True, map="none"),
    )
    assert [pixels(tmp_path / f"o_0{i}.tif")[0] for i in range(3)] == ["F"] * 3


def test_montage_layout(tmp_path):
    tiles = np.stack([np.full((40, 40), 10 * (i + 1), np.float32) for i in range(5)])
    out = tmp_path / "m.png"
    write_output(str(out), tiles, 255.0, settings=OutputSettings(grid=(1, 5)), labels=list("abcde"))
    mode, array = pixels(out)
    assert mode == "L" and array.shape[1] == 5 * 40 + 4 * 4
    label_rows = array.shape[0] - 40
    for i in range(5):
        left = i * 44
        assert (array[label_rows:, left : left + 40] == 10 * (i + 1)).all()
        assert array[:label_rows, left : left + 40].max() > 200  # the label (anti-aliased white)
    assert (array[:, 40:44] == 0).all()  # the gap
    write_output(str(out), tiles, 255.0, settings=OutputSettings(montage=True))
    assert pixels(out)[1].shape[1] == 3 * 40 + 2 * 4  # 5 tiles -> 2 x 3


def test_montage_grid_too_small(tmp_path):
    with pytest.raises(ShapeError, match="holds 2 tiles"):
        write_output(
            str(tmp_path / "m.png"),
            np.zeros((3, 4, 4), np.float32),
            255.0,
            settings=OutputSettings(grid=(1, 2)),
        )
    assert not os.listdir(tmp_path)


def test_count_errors_before_writing(tmp_path):
    out = str(tmp_path / "o.png")
    with pytest.raises(ShapeError, match="2 feature maps do not fit one PNG image"):
        write_output(out, np.zeros((2, 3, 3), np.float32), 255.0)
    with pytest.raises(ShapeError, match="^colormap colours a single map"):
        write_output(
            out, np.zeros((3, 3, 3), np.float32), 255.0, settings=OutputSettings(colormap="magma")
        )
    with pytest.raises(ShapeError, match="^rgba needs exactly 4"):
        write_output(
            out, np.zeros((3, 3, 3), np.float32), 255.0, settings=OutputSettings(rgba=True)
        )
    with pytest.raises(ShapeError, match="16-bit TIFF holds 1 channel"):
        write_output(
            str(tmp_path / "o.tif"),
            np.zeros((3, 3, 3), np.float32),
            255.0,
            settings=OutputSettings(depth="16"),
        )
    assert not os.listdir(tmp_path)


def test_split_is_all_or_nothing(tmp_path, monkeypatch):
    maps = np.zeros((3, 2, 2), np.float32)
    (tmp_path / "o_01.png").mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        write_output(str(tmp_path / "o.png"), maps, 255.0, settings=OutputSettings(split=True))
    assert sorted(os.listdir(tmp_path)) == ["o_01.png"]
    (tmp_path / "o_01.png").rmdir()

    calls = []

    def failing(handle):
        calls.append(handle)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        handle.write(b"x")

    items = [(str(tmp_path / f"f{i}"), failing) for i in range(3)]
    with pytest.raises(OutputError, match="No space left"):
        atomic.atomic_write_all(items)
    assert not os.listdir(tmp_path)  # no target, no temporary left behind


def test_atomic_write_replaces_existing(tmp_path):
    target = tmp_path / "t.bin"
    target.write_bytes(b"old")
    atomic.atomic_write(str(target), lambda handle: handle.write(b"new"))
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["t.bin"]


SETTINGS_ERRORS = [
    (dict(split=True, montage=True), "exclude each other"),
    (dict(map="clip", scale=2.0), "^scale and offset apply to map offset"),
    (dict(offset=float("nan")), "finite"),
    (dict(joint=True), "^joint applies to map minmax"),
    (dict(rgba=True, split=True), "^rgba"),
    (dict(map="wrap"), "^map 'wrap'"),
    (dict(depth="12"), "^depth '12'"),
    (dict(colormap="jet"), "^colormap 'jet'"),
]


@pytest.mark.parametrize("kwargs, message", SETTINGS_ERRORS)
def test_settings_conflicts(kwargs, message):
    with pytest.raises(ParameterError, match=message):
        OutputSettings(**kwargs)


def test_settings_implied_modes():
    assert OutputSettings(scale=0.5).map == "offset"
    assert OutputSettings(grid=(2, 2)).montage


FORMAT_ERRORS = [
    ("o.png", dict(map="none"), "only float outputs"),
    ("o.tif", dict(map="none", depth="16"), "only float outputs"),
    ("o.jpg", dict(depth="16"), "not available for JPEG"),
    ("o.png", dict(depth="32f"), "not available for PNG"),
    ("o.png", dict(channels_first=True), "applies to .npy"),
    ("o.npy", dict(depth="8"), "always stores float32"),
    ("o.npy", dict(montage=True), "^montage writes images"),
    ("o.npy", dict(colormap="gray"), "^colormap writes images"),
    ("o.jpg", dict(rgba=True), "needs a format with alpha"),
    ("o.tif", dict(colormap="gray", depth="32f"), "float output"),
]


@pytest.mark.parametrize("name, kwargs, message", FORMAT_ERRORS)
def test_format_conflicts_are_found_before_work(name, kwargs, message, tmp_path):
    with pytest.raises(ParameterError, match=message):
        images.check_output_path(str(tmp_path / name), [], OutputSettings(**kwargs))


def test_map_none_picks_float_tiff(tmp_path):
    out = tmp_path / "o.tif"
    images.check_output_path(str(out), [], OutputSettings(map="none"))
    write_output(str(out), RAW, 255.0, settings=OutputSettings(map="none"))
    assert pixels(out)[0] == "F"


def test_split_never_overwrites_an_input(tmp_path):
    source = tmp_path / "o_03.png"
    source.write_bytes(b"")
    with pytest.raises(OutputError, match="never overwrites an input"):
        images.check_output_path(str(tmp_path / "o.png"), [str(source)], OutputSettings(split=True))
    images.check_output_path(
        str(tmp_path / "o.png"), [str(tmp_path / "o_x.png")], OutputSettings(split=True)
    )


@pytest.mark.parametrize(
    "shape, dtype",
    [((37, 5, 3), np.float32), ((6, 7, 1), ">f8"), ((9, 4, 2), np.uint8), ((5, 6), np.int16)],
)
def test_npy_inputs_read_in_row_chunks_as_numpy_loads_them(shape, dtype, tmp_path, monkeypatch):
    """An (H, W, C) input goes into its (C, H, W) places a few rows at a time; here chunks of
    two rows and a short last one, byte orders and integer dtypes kept."""
    stored = (np.random.default_rng(5).uniform(-9, 99, shape)).astype(dtype)
    np.save(tmp_path / "x.npy", stored)
    monkeypatch.setattr(images, "NPY_ROW_BYTES", 2 * stored[0].nbytes)
    data = images.read_input(str(tmp_path / "x.npy")).data
    expected = np.load(tmp_path / "x.npy")
    expected = expected[:, :, None] if expected.ndim == 2 else expected
    assert data.dtype == expected.dtype and data.flags.c_contiguous
    assert np.array_equal(data, expected.transpose(2, 0, 1))


@pytest.mark.parametrize("split", [False, True])
def test_npy_outputs_are_the_bytes_numpy_saves(split, tmp_path, monkeypatch):
    maps = np.random.default_rng(6).normal(size=(3, 41, 7)).astype(np.float32)
    monkeypatch.setattr(images, "NPY_ROW_BYTES", 3 * maps[:, 0].nbytes)
    write_output(str(tmp_path / "y.npy"), maps, settings=OutputSettings(split=split))
    for name, expected in (
        [(f"y_0{i}.npy", maps[i : i + 1]) for i in range(3)] if split else [("y.npy", maps)]
    ):
        saved = tmp_path / f"saved_{name}"
        np.save(saved, expected.transpose(1, 2, 0))
        assert (tmp_path / name).read_bytes() == saved.read_bytes()


def test_npy_inputs_and_outputs_hold_no_second_copy(tmp_path):
    """Reading an (H, W, C) .npy and writing maps as one hold the array and a few megabytes,
    not a transposed whole-size copy beside it (a 4096x4096 RGB float32 array is 200 MB)."""
    import tracemalloc

    rgb = np.random.default_rng(8).random((1500, 1500, 3), np.float32)  # 27 MB
    np.save(tmp_path / "x.npy", rgb)
    tracemalloc.start()
    try:
        data = images.read_input(str(tmp_path / "x.npy")).data
        read_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        write_output(str(tmp_path / "y.npy"), data, in_place=True)
        write_peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert np.array_equal(np.load(tmp_path / "y.npy"), rgb)
    assert read_peak < rgb.nbytes + images.NPY_ROW_BYTES + (1 << 20), read_peak
    assert write_peak < images.NPY_ROW_BYTES + (1 << 20), write_peak
