"""Zero padding (the CNN default) frames a photo; the Quickstart and `conv --help` steer photo
users to a border that extends the image. These tests hold what the README says of both."""

import os
import re

from conftest import read_pixels, run

CAMERA = os.path.join(os.path.dirname(__file__), os.pardir, "sample_images", "camera.png")
README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def edge_columns(path):
    """How far the first and last columns lie from mid-grey, on average (0 = no frame)."""
    pixels = read_pixels(path).astype(float)
    return abs(pixels[:, 0] - 128).mean(), abs(pixels[:, -1] - 128).mean()


def test_zero_padding_frames_a_photo_and_replicate_does_not(tmp_path):
    for mode in ("zeros", "replicate", "symmetric"):
        result = run(
            "conv", CAMERA, "-k", "sobel_x", "--pad-mode", mode, "-o", tmp_path / f"{mode}.png"
        )
        assert result.exit_code == 0, result.output
    framed = edge_columns(tmp_path / "zeros.png")
    assert min(framed) > 60  # white on the left, black on the right: the frame the README names
    assert (
        read_pixels(tmp_path / "zeros.png")[:, 0].mean()
        > 128
        > read_pixels(tmp_path / "zeros.png")[:, -1].mean()
    )
    for mode in ("replicate", "symmetric"):
        assert max(edge_columns(tmp_path / f"{mode}.png")) < 20


def test_the_quickstart_and_help_show_the_photo_border():
    with open(README, encoding="utf-8") as readme:
        quickstart = [line for line in readme if re.match(r"python3 -m venv \.venv ", line)][0]
    assert "--pad-mode replicate" in quickstart
    help_text = " ".join(run("conv", "--help").output.split())
    assert "frames a photo" in help_text and "--pad-mode replicate" in help_text
