"""`convcli conv` through Click's CliRunner and through a real process."""

import os
import subprocess
import sys

import naive
import numpy as np
import pytest
from conftest import read_pixels, run
from PIL import Image

SEED_IMAGE = [[1, 2, 0, 1, 3], [4, 1, 1, 0, 2], [0, 2, 3, 1, 1], [1, 0, 2, 2, 0], [3, 1, 0, 1, 2]]


def mode(path):
    with Image.open(path) as image:
        return image.mode


@pytest.fixture
def seed_npy(tmp_path):
    path = tmp_path / "seed.npy"
    np.save(path, np.array(SEED_IMAGE, dtype=np.uint8))
    return path


def test_seed_example_through_npy(seed_npy, tmp_path):
    out = tmp_path / "out.npy"
    result = run("conv", seed_npy, "-k", "vertical_edge", "--padding", "valid", "-o", out)
    assert result.exit_code == 0, result.output
    array = np.load(out)
    assert array.dtype == np.float32 and array.shape == (3, 3, 1)
    assert array[..., 0].tolist() == [[1, 3, -2], [-1, 0, 3], [-1, -1, 2]]


def test_npy_output_is_exact_and_channels_last(rgb_png, tmp_path):
    out = tmp_path / "o.npy"
    assert (
        run(
            "conv", rgb_png, "-k", "sobel_x", "--stride", "2", "--padding", "1", "-o", out
        ).exit_code
        == 0
    )
    pixels = read_pixels(rgb_png).astype(np.float64).transpose(2, 0, 1)
    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)
    expected = naive.conv2d(
        pixels, np.broadcast_to(sobel, (3, 1, 3, 3)), stride=(2, 2), pads=(1,) * 4, groups=3
    )
    np.testing.assert_allclose(np.load(out), expected.transpose(1, 2, 0), atol=1e-3)


def test_png_output_rounds_and_clips(rgb_png, tmp_path):
    out = tmp_path / "o.png"
    assert run("conv", rgb_png, "-k", "box", "-o", out, "--bias", "0.5").exit_code == 0
    pixels = read_pixels(rgb_png).astype(np.float64).transpose(2, 0, 1)
    blurred = naive.conv2d(
        pixels, np.full((3, 1, 3, 3), 1 / 9), pads=(1,) * 4, groups=3, bias=[0.5] * 3
    )
    written = read_pixels(out)
    assert written.shape == (12, 10, 3) and written.dtype == np.uint8
    assert (
        np.abs(written.astype(float) - np.clip(blurred, 0, 255).transpose(1, 2, 0)).max()
        <= 0.5 + 1e-3
    )


def test_gray_and_bias_per_channel_with_4d_kernel(rgb_png, tmp_path):
    kernel = tmp_path / "bank.npy"
    np.save(kernel, np.ones((2, 1, 1, 1), np.float32))
    out = tmp_path / "o.npy"
    result = run("conv", rgb_png, "--gray", "-k", kernel, "--bias", "1,2", "-o", out)
    assert result.exit_code == 0, result.output
    pixels = read_pixels(rgb_png).astype(np.float64)
    luma = pixels @ [0.299, 0.587, 0.114]
    np.testing.assert_allclose(np.load(out), np.stack([luma + 1, luma + 2], axis=2), atol=1e-3)


def test_alpha_is_kept_when_size_is_unchanged(tmp_path):
    src = tmp_path / "a.png"
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[..., 3] = np.arange(36).reshape(6, 6)
    Image.fromarray(rgba).save(src)
    out = tmp_path / "o.png"
    assert run("conv", src, "-k", "identity", "-o", out).exit_code == 0
    assert np.array_equal(read_pixels(out)[..., 3], rgba[..., 3])
    smaller = tmp_path / "s.png"
    assert run("conv", src, "-k", "identity", "--stride", "2", "-o", smaller).exit_code == 0
    assert mode(smaller) == "RGB"


def test_sixteen_bit_input_stays_sixteen_bit(tmp_path):
    src = tmp_path / "g16.png"
    values = (np.arange(64).reshape(8, 8) * 1000 + 7).astype(np.uint16)
    Image.fromarray(values).save(src)
    out = tmp_path / "o.png"
    assert run("conv", src, "-k", "identity", "-o", out).exit_code == 0
    assert np.array_equal(read_pixels(out), values)


BAD_CASES = {
    "missing input": (
        ["conv", "{tmp}/nope.png", "-k", "sobel_x", "-o", "{tmp}/o.png"],
        "does not exist",
    ),
    "corrupt image": (
        ["conv", "{tmp}/corrupt.png", "-k", "sobel_x", "-o", "{tmp}/o.png"],
        "corrupt",
    ),
    "not an image": (
        ["conv", "{tmp}/text.png", "-k", "sobel_x", "-o", "{tmp}/o.png"],
        "not an image",
    ),
    "unknown kernel": (
        ["conv", "{seed}", "-k", "sobelx", "-o", "{tmp}/o.npy"],
        "did you mean 'sobel_x'",
    ),
    "malformed kernel": (
        ["conv", "{seed}", "-k", "{tmp}/bad.yaml", "-o", "{tmp}/o.npy"],
        "same number of values",
    ),
    "kernel too large": (
        ["conv", "{seed}", "-k", "box:size=7", "--padding", "valid", "-o", "{tmp}/o.npy"],
        "kernel 7x7 is larger than the padded input 5x5",
    ),
    "stride zero": (
        ["conv", "{seed}", "-k", "sobel_x", "--stride", "0", "-o", "{tmp}/o.npy"],
        "stride",
    ),
    "dilation zero": (
        ["conv", "{seed}", "-k", "sobel_x", "--dilation", "1,0", "-o", "{tmp}/o.npy"],
        "dilation",
    ),
    "groups": (
        ["conv", "{seed}", "-k", "{tmp}/bank.npy", "--groups", "2", "-o", "{tmp}/o.npy"],
        "groups 2",
    ),
    "reflect too wide": (
        [
            "conv",
            "{seed}",
            "-k",
            "sobel_x",
            "--padding",
            "5",
            "--pad-mode",
            "reflect",
            "-o",
            "{tmp}/o.npy",
        ],
        "reflect padding of 5",
    ),
    "missing directory": (
        ["conv", "{seed}", "-k", "sobel_x", "-o", "{tmp}/no/dir/o.npy"],
        "does not exist",
    ),
    "output is input": (
        ["conv", "{seed}", "-k", "sobel_x", "-o", "{seed}"],
        "never overwrites an input",
    ),
    "unknown extension": (
        ["conv", "{seed}", "-k", "sobel_x", "-o", "{tmp}/o.xyz"],
        "known extension",
    ),
}


@pytest.mark.parametrize("name", list(BAD_CASES))
def test_bad_input_is_one_line_and_writes_nothing(name, tmp_path, seed_npy):
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (tmp_path / "text.png").write_text("hello")
    (tmp_path / "bad.yaml").write_text("name: bad\nweights: |\n  1 2 3\n  4 5\n")
    np.save(tmp_path / "bank.npy", np.ones((3, 1, 3, 3), np.float32))
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    args, expected = BAD_CASES[name]
    result = run(*[a.format(tmp=tmp_path, seed=seed_npy) for a in args])
    assert result.exit_code in (1, 2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0], (
        result.stderr
    )
    assert "Traceback" not in result.output
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def test_real_process_npy_in_and_out(seed_npy, tmp_path):
    out = tmp_path / "o.npy"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "convcli",
            "conv",
            str(seed_npy),
            "-k",
            "vertical_edge",
            "--padding",
            "valid",
            "--flip",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert np.load(out)[..., 0].tolist() == [[-1, -3, 2], [1, 0, -3], [1, 1, -2]]


def test_real_process_error_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "convcli",
            "conv",
            str(tmp_path / "none.png"),
            "-k",
            "sobel_x",
            "-o",
            str(tmp_path / "o.png"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"Error: input {str(tmp_path / 'none.png')!r} does not exist"
    assert not os.listdir(tmp_path)
