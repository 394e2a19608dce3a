"""The output options through `convcli conv`: defaults people can look at, layouts, errors."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import run
from PIL import Image

from convcli.cli import options
from convcli.io import images
from convcli.render import mapping


def read_pixels(path):
    with Image.open(path) as image:
        return image.mode, np.asarray(image)


def ok(*args):
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def scene(tmp_path):
    """A horizontal gradient with a bright disc, and a flat band on the left."""
    rows, cols = np.mgrid[0:48, 0:64]
    image = np.clip(40 + cols * 2 + 80 * ((rows - 24) ** 2 + (cols - 40) ** 2 < 100), 0, 255)
    image[:, :12] = 90
    path = tmp_path / "scene.png"
    Image.fromarray(image.astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("kernel", ["sobel_x", "sobel_y", "laplacian", "vertical_edge"])
def test_zero_sum_kernel_default_is_not_blank(kernel, scene, tmp_path):
    out = tmp_path / "edges.png"
    ok("conv", scene, "-k", kernel, "--pad-mode", "replicate", "-o", out)
    mode, array = read_pixels(out)
    assert mode == "L" and array.std() > 0 and len(np.unique(array)) > 2
    assert (array[5:-5, 2:8] == 128).all()  # flat input: 0 response, shown mid-grey
    assert array.min() < 128 < array.max()  # both signs visible


def test_blur_default_keeps_brightness(tmp_path):
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((9, 9), 100, np.uint8)).save(flat)
    out = tmp_path / "blur.png"
    ok("conv", flat, "-k", "box:size=5", "--pad-mode", "replicate", "-o", out)
    assert (read_pixels(out)[1] == 100).all()


def test_zero_sum_kernel_with_bias_clips(scene, tmp_path):
    out = tmp_path / "o.png"
    ok("conv", scene, "-k", "sobel_x", "--bias", "10", "--pad-mode", "replicate", "-o", out)
    assert (
        read_pixels(out)[1][5:-5, 2:8] == 10
    ).all()  # the user's bias is the level: clip, no 128


def test_explicit_modes_through_the_cli(tmp_path):
    src = tmp_path / "raw.npy"
    np.save(src, np.array([[-100, -64, -2, 0], [2, 6, 300, 410]], np.float32))
    expected = {
        "clip": [[0, 0, 0, 0], [2, 6, 255, 255]],
        "abs": [[100, 64, 2, 0], [2, 6, 255, 255]],
        "minmax": [[0, 18, 49, 50], [51, 53, 200, 255]],
        "offset": [[28, 64, 126, 128], [130, 134, 255, 255]],
    }
    for mode, values in expected.items():
        out = tmp_path / f"{mode}.png"
        ok("conv", src, "-k", "identity", "--map", mode, "-o", out)
        assert read_pixels(out)[1].tolist() == values, mode
    ok("conv", src, "-k", "identity", "--scale", "0.5", "--offset", "100", "-o", tmp_path / "s.png")
    assert read_pixels(tmp_path / "s.png")[1].tolist() == [[50, 68, 99, 100], [101, 103, 250, 255]]


def test_nothing_wraps(tmp_path):
    src = tmp_path / "x.png"
    Image.fromarray(np.array([[0, 63, 255]], np.uint8)).save(src)
    out = tmp_path / "o.png"
    ok("conv", src, "-k", "identity", "--bias", "-126", "--map", "clip", "-o", out)
    assert read_pixels(out)[1].tolist() == [[0, 0, 129]]  # -63 is 0, never 193
    ok("conv", src, "-k", "identity", "--bias", "200", "-o", out, "--overwrite")
    assert read_pixels(out)[1].tolist() == [[200, 255, 255]]


def test_depth_option_and_sixteen_bit_signed(tmp_path):
    src = tmp_path / "g16.png"
    Image.fromarray((np.arange(30).reshape(5, 6) * 2000).astype(np.uint16)).save(src)
    out = tmp_path / "o.png"
    ok("conv", src, "-k", "sobel_x", "--pad-mode", "replicate", "-o", out)
    mode, array = read_pixels(out)
    assert (
        mode.startswith("I") and array[2, 2] == 32768 + 16000
    )  # (1+2+1) * 2 * 2000 above mid-grey
    ok("conv", src, "-k", "identity", "--depth", "8", "-o", out, "--overwrite")
    assert read_pixels(out)[0] == "L"
    ok("conv", src, "-k", "identity", "-o", tmp_path / "f.tif", "--depth", "32f")
    np.testing.assert_allclose(
        read_pixels(tmp_path / "f.tif")[1][0, :2], [0, 2000 / 65535], rtol=1e-6
    )


def test_stacked_kernels_split_montage_and_npy(scene, tmp_path):
    out = tmp_path / "maps.png"
    ok("conv", scene, "-k", "sobel_x", "-k", "sobel_y", "-k", "box", "-o", out, "--split")
    assert sorted(p.name for p in tmp_path.glob("maps_*.png")) == [
        "maps_00.png",
        "maps_01.png",
        "maps_02.png",
    ]
    flat = [read_pixels(tmp_path / f"maps_0{i}.png")[1][20, 6] for i in range(3)]
    assert flat == [128, 128, 90]  # auto per map: the two edges offset, the blur clipped

    ok("conv", scene, "-k", "sobel_x", "-k", "sobel_y", "-k", "box", "-o", tmp_path / "rgb.png")
    assert read_pixels(tmp_path / "rgb.png")[1][20, 6].tolist() == [128, 128, 90]

    ok(
        "conv",
        scene,
        "-k",
        "sobel_x",
        "-k",
        "laplacian",
        "-o",
        tmp_path / "m.png",
        "--montage",
        "--colormap",
        "coolwarm",
    )
    mode, array = read_pixels(tmp_path / "m.png")
    assert mode == "RGB" and array.shape[1] == 2 * 64 + 4

    ok("conv", scene, "-k", "sobel_x", "-k", "box", "-o", tmp_path / "m.npy", "--channels-first")
    assert np.load(tmp_path / "m.npy").shape == (2, 48, 64)


def test_stacked_kernels_with_bias_per_channel(scene, tmp_path):
    out = tmp_path / "o.npy"
    ok("conv", scene, "-k", "identity", "-k", "identity", "--bias", "1,2", "-o", out)
    array = np.load(out)
    with Image.open(scene) as image:
        source = np.asarray(image, np.float32)
    assert np.array_equal(array, np.stack([source + 1, source + 2], axis=2))


def test_colormap_single_map(scene, tmp_path):
    out = tmp_path / "c.png"
    ok("conv", scene, "-k", "box", "--colormap", "magma", "--map", "minmax", "-o", out)
    mode, array = read_pixels(out)
    assert mode == "RGB"
    colours = {tuple(p) for p in array.reshape(-1, 3).tolist()}
    assert (0, 0, 4) in colours and (252, 253, 191) in colours  # both ends of magma reached


def test_rgba_four_maps(tmp_path):
    src = tmp_path / "x.npy"
    np.save(src, np.full((3, 3, 4), 50, np.float32))
    ok("conv", src, "-k", "identity", "--rgba", "-o", tmp_path / "o.png")
    assert read_pixels(tmp_path / "o.png")[0] == "RGBA"


def test_option_names_match_the_library():
    assert options.MAP_MODES == mapping.MAP_MODES
    assert options.COLORMAPS == mapping.COLORMAPS
    assert options.DEPTHS == tuple(images.DEPTHS)


def test_options_module_does_not_import_numpy():
    code = "import sys, convcli.cli.options; print('numpy' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr


BAD = {
    "split and montage": (["--split", "--montage"], "exclude each other"),
    "map none to png": (["--map", "none"], "only float outputs"),
    "depth 16 jpeg": (["--depth", "16", "-o", "{tmp}/o.jpg"], "not available for JPEG"),
    "channels first image": (["--channels-first"], "applies to .npy"),
    "colormap three maps": (
        ["--colormap", "viridis", "-k", "sobel_y", "-k", "box"],
        "colours a single map",
    ),
    "rgba three maps": (["--rgba", "-k", "sobel_y", "-k", "box"], "needs exactly 4"),
    "rgba jpeg": (["--rgba", "-o", "{tmp}/o.jpg"], "needs a format with alpha"),
    "joint with clip": (["--joint", "--map", "clip"], "--joint applies"),
    "scale with abs": (["--scale", "2", "--map", "abs"], "apply to --map offset"),
    "bad grid": (["--montage-grid", "2x"], "not RxC"),
    "grid too small": (["--montage-grid", "1x1", "-k", "box"], "holds 1 tiles"),
    "two maps to png": (["-k", "box"], "2 feature maps do not fit one PNG image"),
    "montage npy": (["--montage", "-o", "{tmp}/o.npy"], "--montage writes images"),
    "depth npy": (["--depth", "8", "-o", "{tmp}/o.npy"], "always stores float32"),
    "16-bit tiff colour": (
        ["--depth", "16", "-k", "sobel_y", "-k", "box", "-o", "{tmp}/o.tif"],
        "16-bit TIFF holds 1 channel",
    ),
    "colormap float": (
        ["--colormap", "gray", "--depth", "32f", "-o", "{tmp}/o.tif"],
        "float output",
    ),
    "unknown colormap": (["--colormap", "jet"], "'jet' is not one of"),
    "sizes differ": (["-k", "box:size=5", "--padding", "valid"], "same output size"),
    "bias count": (["-k", "box", "--bias", "1,2,3"], "bias has 3 values"),
    "split over input": (["--split", "-o", "{tmp}/scene.png"], "never overwrites an input"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_options_are_one_line_and_write_nothing(name, scene, tmp_path):
    (tmp_path / "scene_00.png").write_bytes(scene.read_bytes())
    extra, expected = BAD[name]
    extra = [a.format(tmp=tmp_path) for a in extra]
    args = ["conv", str(tmp_path / "scene_00.png"), "-k", "sobel_x"] + extra
    if "-o" not in extra:
        args += ["-o", str(tmp_path / "o.png")]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    result = run(*args)
    assert result.exit_code in (1, 2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0], (
        result.stderr
    )
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before
