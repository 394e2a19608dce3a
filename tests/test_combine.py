"""``--combine magnitude|sum|max``: several kernels' maps folded into one map per channel.

Against numpy combinations of the plain-loop reference, and against ``vips sobel`` when the
``vips`` command is installed.
"""

import os
import re
import shutil
import subprocess

import naive
import numpy as np
import pytest
from conftest import assert_matches, read_pixels, refused, run
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from convcli.errors import LimitError
from convcli.pipeline import Maps, parse_pipeline

SAMPLES = os.path.join(os.path.dirname(__file__), "..", "sample_images")
SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64)
SOBEL_Y = SOBEL_X.T.copy()
COMBINE = {
    "magnitude": lambda maps: np.sqrt(np.sum(np.square(maps), axis=0)),
    "sum": lambda maps: np.sum(maps, axis=0),
    "max": lambda maps: np.max(maps, axis=0),
}


def inline(kernel):
    """A kernel written inline, as ``-k`` takes it."""
    rows, cols = kernel.shape
    return f"{rows}x{cols}: " + " ".join(repr(float(v)) for v in kernel.ravel())


def naive_maps(x, kernel, pads, mode="zeros"):
    """One 2-D kernel on every channel of ``x`` (C, H, W), by the plain loops."""
    channels = x.shape[0]
    return naive.conv2d(
        x,
        np.broadcast_to(kernel, (channels, 1) + kernel.shape),
        pads=pads,
        groups=channels,
        mode=mode,
    )


@given(
    mode=st.sampled_from(list(COMBINE)),
    channels=st.integers(1, 3),
    hw=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    count=st.integers(2, 3),
    k=st.integers(1, 3),
    pad_mode=st.sampled_from(naive.PAD_MODES[3:]),
    seed=st.integers(0, 2**16),
)
def test_combined_maps_match_numpy(mode, channels, hw, count, k, pad_mode, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (channels,) + hw).astype(np.float32)
    kernels = [rng.uniform(-1, 1, (k, k)) for _ in range(count)]
    pipeline = parse_pipeline(
        [
            {
                "op": "conv",
                "kernel": [inline(w) for w in kernels],
                "combine": mode,
                "pad_mode": pad_mode,
            }
        ]
    )
    out = pipeline.run(Maps(x, None))
    pads = naive.explicit_pads("same", hw, (k, k))
    expected = COMBINE[mode](
        np.stack([naive_maps(x, w.astype(np.float32), pads, pad_mode) for w in kernels])
    )
    assert_matches(out.data, expected)
    assert len(out.labels) == channels and out.labels[0].startswith(f"{mode}(")


def test_conv_combine_magnitude_on_a_photo(tmp_path):
    """Per channel of an RGB photo, sqrt(gx^2 + gy^2); exact in .npy."""
    source, out = os.path.join(SAMPLES, "chelsea.png"), tmp_path / "m.npy"
    result = run(
        "conv", source, "-k", "sobel_x", "-k", "sobel_y", "--combine", "magnitude", "-o", out
    )
    assert result.exit_code == 0, result.output
    x = (
        read_pixels(source).astype(np.float64).transpose(2, 0, 1)[:, :40, :50]
    )  # the naive loops are slow
    pads = (1, 1, 1, 1)
    expected = np.hypot(naive_maps(x, SOBEL_X, pads), naive_maps(x, SOBEL_Y, pads))
    written = np.load(out)
    assert written.shape == (200, 300, 3)
    np.testing.assert_allclose(
        written[:39, :49], expected.transpose(1, 2, 0)[:39, :49], rtol=1e-5, atol=1e-3
    )


@pytest.mark.parametrize("mode, mid", [("magnitude", 0), ("sum", 128), ("max", 128)])
def test_map_auto_treats_magnitude_as_not_negative(mode, mid, tmp_path):
    """--map auto: a magnitude is written as it is (black = 0), a sum or a max of edge maps
    around mid-grey as the maps themselves are."""
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((6, 7), 90, np.uint8)).save(flat)
    out = tmp_path / "o.png"
    assert (
        run(
            "conv",
            flat,
            "-k",
            "sobel_x",
            "-k",
            "sobel_y",
            "--combine",
            mode,
            "--padding",
            "valid",
            "-o",
            out,
        ).exit_code
        == 0
    )
    assert np.all(read_pixels(out) == mid)


def test_pipeline_combine_is_a_field_of_the_conv_step(tmp_path):
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        "steps:\n  - gray\n  - op: conv\n    kernel: [sobel_x, sobel_y]\n    combine: max\n"
    )
    source, out = os.path.join(SAMPLES, "camera.png"), tmp_path / "o.npy"
    result = run("run", pipeline, source, "-o", out)
    assert result.exit_code == 0, result.output
    x = read_pixels(source).astype(np.float64)[None, :30, :30]
    expected = np.maximum(naive_maps(x, SOBEL_X, (1,) * 4), naive_maps(x, SOBEL_Y, (1,) * 4))[0]
    np.testing.assert_allclose(np.load(out)[:29, :29, 0], expected[:29, :29], atol=1e-3)
    trace = run("explain", "--input", "30x30x3", "--pipeline", pipeline)
    assert trace.exit_code == 0, trace.output
    rows = [line.split("\t") for line in trace.output.splitlines()]
    assert [row[1:3] for row in rows[3:5]] == [
        ["conv: conv 2 k3 same nobias", "30x30x2"],
        ["conv: combine max", "30x30x1"],
    ]


def test_combine_refusals(tmp_path):
    source = os.path.join(SAMPLES, "chelsea.png")
    refused(
        run("conv", source, "-k", "sobel_x", "--combine", "sum", "-o", tmp_path / "o.npy"),
        2,
        "--combine needs two or more -k kernels",
    )
    three_d = tmp_path / "k.npy"
    np.save(
        three_d, np.ones((3, 3, 3), np.float32)
    )  # sums the channels: one map, sobel_x gives three
    refused(
        run(
            "conv",
            source,
            "-k",
            "sobel_x",
            "-k",
            three_d,
            "--combine",
            "sum",
            "-o",
            tmp_path / "o.npy",
        ),
        1,
        "same number of maps",
        "gives 3",
        "gives 1",
    )
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("steps:\n  - op: conv\n    kernel: sobel_x\n    combine: magnitude\n")
    refused(
        run("run", pipeline, source, "-o", tmp_path / "o.npy"),
        1,
        "combine: needs two or more kernels",
    )
    assert not os.path.exists(tmp_path / "o.npy")


def test_combined_maps_are_counted_against_the_memory_budget(monkeypatch):
    """The combined maps so far and the next kernel's maps, beside the input: 3 x 360 KB."""
    x = np.zeros((1, 300, 300), np.float32)
    pipeline = parse_pipeline(
        [{"op": "conv", "kernel": ["sobel_x", "sobel_y"], "combine": "magnitude"}]
    )
    monkeypatch.setenv("CONVCLI_MAX_MEMORY", "1000K")
    with pytest.raises(
        LimitError, match="conv --combine magnitude: the next kernel maps 1x300x300"
    ):
        pipeline.run(Maps(x, None))
    monkeypatch.setenv("CONVCLI_MAX_MEMORY", "1200K")
    assert pipeline.run(Maps(x, None)).data.shape == (1, 300, 300)


def vips_version():
    if shutil.which("vips") is None:
        return None
    found = re.search(
        r"(\d+)\.(\d+)",
        subprocess.run(["vips", "--version"], capture_output=True, text=True, check=True).stdout,
    )
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


needs_vips = pytest.mark.skipif(vips_version() is None, reason="the vips command is not installed")


@needs_vips
@pytest.mark.parametrize("image", ["camera.png", "chelsea.png"])
def test_combine_max_equals_vips_sobel_on_8_bit_images(image, tmp_path):
    """``vips sobel`` on 8-bit images is |gx| + |gy| (its fast path: each gradient halved and
    rounded to fit a byte, then doubled; the sum clipped at 255), which is the max of the four
    signed sums +-gx +-gy: --combine max of those four kernels, within vips's rounding of 2."""
    source = os.path.join(SAMPLES, image)
    subprocess.run(["vips", "sobel", source, str(tmp_path / "v.png")], check=True)
    kernels = [inline(a * SOBEL_X + b * SOBEL_Y) for a in (1, -1) for b in (1, -1)]
    out = tmp_path / "o.npy"
    result = run(
        "conv", source, *[arg for k in kernels for arg in ("-k", k)], "--combine", "max", "-o", out
    )
    assert result.exit_code == 0, result.output
    ours = np.clip(np.load(out), 0, 255).reshape(read_pixels(source).shape)
    theirs = read_pixels(tmp_path / "v.png").astype(np.float64)
    interior = (slice(1, -1), slice(1, -1))
    assert np.abs(ours[interior] - theirs[interior]).max() <= 2


@pytest.mark.skipif(
    (vips_version() or (0, 0)) < (8, 15),
    reason="vips sobel before 8.15 computes |gx| + |gy| on every format, not the magnitude",
)
def test_combine_magnitude_equals_vips_sobel_on_float_input(tmp_path):
    """From 8.15, ``vips sobel`` on a float image is sqrt(gx^2 + gy^2) cast to 8 bits."""
    source = os.path.join(SAMPLES, "camera.png")
    subprocess.run(["vips", "cast", source, str(tmp_path / "f.v"), "float"], check=True)
    subprocess.run(["vips", "sobel", str(tmp_path / "f.v"), str(tmp_path / "v.png")], check=True)
    out = tmp_path / "o.npy"
    assert (
        run(
            "conv", source, "-k", "sobel_x", "-k", "sobel_y", "--combine", "magnitude", "-o", out
        ).exit_code
        == 0
    )
    ours, theirs = (
        np.clip(np.load(out)[..., 0], 0, 255),
        read_pixels(tmp_path / "v.png").astype(np.float64),
    )
    assert np.abs(ours[1:-1, 1:-1] - theirs[1:-1, 1:-1]).max() <= 1


def test_transposed_step_combines_too(tmp_path):
    """Each 2x2 kernel scatters every pixel (stride 2); the sum of two is one map per channel."""
    source = tmp_path / "m.npy"
    np.save(source, np.arange(12, dtype=np.float32).reshape(3, 4))
    a, b = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[0.0, -1.0], [5.0, 0.5]])
    out = tmp_path / "o.npy"
    result = run(
        "conv",
        source,
        "--transpose",
        "-k",
        inline(a),
        "-k",
        inline(b),
        "--combine",
        "sum",
        "--stride",
        "2",
        "--padding",
        "valid",
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    x = np.arange(12, dtype=np.float64).reshape(1, 3, 4)
    expected = sum(naive.conv_transpose2d(x, w[None, None], stride=(2, 2)) for w in (a, b))
    np.testing.assert_allclose(np.load(out)[..., 0], expected[0], atol=1e-4)
