"""The ``symmetric`` border (the edge repeated: ``b a | a b c d | d c``) against SciPy ndimage's
``reflect`` and OpenCV's ``BORDER_REFLECT`` on real images, and through conv, pipelines and explain.

Every engine method is checked against ``tests/naive.py`` in every pad mode in ``test_conv.py``.
"""

import os

import naive
import numpy as np
import pytest
from conftest import assert_matches, refused, run
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from convcli import engine, explain
from convcli.errors import ShapeError

SAMPLES = os.path.join(os.path.dirname(__file__), "..", "sample_images")


def sample(name):
    """A sample image as float32 (C, H, W)."""
    with Image.open(os.path.join(SAMPLES, name)) as image:
        pixels = np.asarray(image.convert("RGB") if image.mode == "RGBA" else image, np.float32)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1).copy()


def centred_pads(kh, kw):
    """SciPy's and OpenCV's default origin: the kernel's centre is cell (kh // 2, kw // 2)."""
    return (kh // 2, kh - 1 - kh // 2, kw // 2, kw - 1 - kw // 2)


KERNELS = {
    "sobel": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32),
    "asymmetric 4x5": np.arange(20, dtype=np.float32).reshape(4, 5) - 9.5,
    "gaussian 9x9": np.outer(*[np.exp(-0.5 * (np.arange(-4, 5) / 2.0) ** 2)] * 2).astype(
        np.float32
    ),
    "random 23x23 (fft)": np.random.default_rng(3).uniform(-1, 1, (23, 23)).astype(np.float32),
}


@pytest.mark.parametrize("image", ["camera.png", "chelsea.png"])
@pytest.mark.parametrize("name", list(KERNELS))
@pytest.mark.parametrize("method", ["numpy", "gemm", "numba", "separable", "fft"])
def test_symmetric_equals_scipy_reflect_on_images(image, name, method):
    ndimage = pytest.importorskip("scipy.ndimage")
    x, kernel = sample(image), KERNELS[name]
    if method == "separable" and np.linalg.matrix_rank(kernel) > 1:
        pytest.skip("the separable method takes kernels of rank 1")
    out = engine.conv2d(
        x, kernel, padding=centred_pads(*kernel.shape), pad_mode="symmetric", method=method
    )
    expected = np.stack(
        [
            ndimage.correlate(plane.astype(np.float64), kernel.astype(np.float64), mode="reflect")
            for plane in x
        ]
    )
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=2e-3 * np.abs(kernel).sum())


@pytest.mark.parametrize("image", ["camera.png", "chelsea.png"])
@pytest.mark.parametrize("name", list(KERNELS))
def test_symmetric_equals_opencv_border_reflect_on_images(image, name):
    cv2 = pytest.importorskip("cv2")
    x, kernel = sample(image), KERNELS[name]
    out = engine.conv2d(x, kernel, padding=centred_pads(*kernel.shape), pad_mode="symmetric")
    expected = np.stack(
        [
            cv2.filter2D(
                plane.astype(np.float64),
                -1,
                kernel.astype(np.float64),
                borderType=cv2.BORDER_REFLECT,
            )
            for plane in x
        ]
    )
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=2e-3 * np.abs(kernel).sum())


@given(
    hw=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    k=st.tuples(st.integers(1, 15), st.integers(1, 15)),
    seed=st.integers(0, 2**16),
)
def test_symmetric_fills_pads_wider_than_the_image_as_scipy(hw, k, seed):
    """No limit on the pad width: the mirrored image repeats (numpy, SciPy and OpenCV agree)."""
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (1,) + hw).astype(np.float32)
    kernel = rng.uniform(-1, 1, k).astype(np.float32)
    pads = centred_pads(*k)
    out = engine.conv2d(x, kernel, padding=pads, pad_mode="symmetric")
    assert_matches(
        out,
        ndimage.correlate(x[0].astype(np.float64), kernel.astype(np.float64), mode="reflect")[None],
    )
    assert_matches(out, naive.conv2d(x, kernel[None, None], pads=pads, mode="symmetric"))


def test_symmetric_repeats_the_edge_by_hand():
    """A 1x4 row ``a b c d`` with two pad columns a side reads ``b a | a b c d | d c``."""
    row = np.array([[[1, 10, 100, 1000]]], np.float32)
    picks = [np.eye(5, dtype=np.float32)[None, n] for n in range(5)]  # 1x5 kernels picking one tap
    columns = [
        engine.conv2d(row, kernel, padding=(0, 0, 2, 2), pad_mode="symmetric")[0, 0].tolist()
        for kernel in picks
    ]
    assert columns[0] == [10, 1, 1, 10]  # taps two to the left: b a a b
    assert columns[4] == [100, 1000, 1000, 100]  # taps two to the right: c d d c


def test_conv_pad_mode_symmetric_on_a_file(tmp_path):
    out = tmp_path / "o.npy"
    source = os.path.join(SAMPLES, "camera.png")
    result = run("conv", source, "-k", "gaussian:sigma=2", "--pad-mode", "symmetric", "-o", out)
    assert result.exit_code == 0, result.output
    x = sample("camera.png")
    ndimage = pytest.importorskip("scipy.ndimage")
    from convcli.kernels.library import resolve_kernel

    kernel = resolve_kernel("gaussian:sigma=2")
    expected = ndimage.correlate(
        x[0].astype(np.float64), kernel.weights / kernel.scale, mode="reflect"
    )
    np.testing.assert_allclose(np.load(out)[..., 0], expected, atol=1e-3)
    # a flat picture blurred stays flat to its edges: no darkened frame as with zeros
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((9, 7), 200, np.uint8)).save(flat)
    assert (
        run(
            "conv", flat, "-k", "box:size=5", "--pad-mode", "symmetric", "-o", tmp_path / "f.npy"
        ).exit_code
        == 0
    )
    np.testing.assert_allclose(np.load(tmp_path / "f.npy"), 200, atol=1e-3)


def test_pipeline_pad_mode_symmetric(tmp_path):
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("steps:\n  - op: conv\n    kernel: sobel_x\n    pad_mode: Symmetric\n")
    matrix = np.arange(20, dtype=np.float32).reshape(4, 5) ** 2
    source = tmp_path / "m.npy"
    np.save(source, matrix)
    result = run("run", pipeline, source, "-o", tmp_path / "o.npy")
    assert result.exit_code == 0, result.output
    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)
    expected = naive.conv2d(matrix[None], sobel[None, None], pads=(1, 1, 1, 1), mode="symmetric")
    np.testing.assert_allclose(np.load(tmp_path / "o.npy")[..., 0], expected[0], atol=1e-3)


def test_bad_pad_mode_names_symmetric(tmp_path):
    source = os.path.join(SAMPLES, "camera.png")
    refused(
        run("conv", source, "-k", "box", "--pad-mode", "mirror", "-o", tmp_path / "o.npy"),
        2,
        "symmetric",
    )


def test_step_language_takes_pad_modes():
    step = explain.parse_step("conv 8 k3 symmetric")
    assert step.params["pad_mode"] == "symmetric"
    assert explain.step_text(step) == "conv 8 k3 same symmetric"
    depthwise = explain.step_from_dict({"op": "depthwise", "kernel": 3, "pad_mode": "Reflect"})
    assert depthwise.params["pad_mode"] == "reflect"
    # a border the mode cannot fill ends the trace, as the engine refuses it
    shapes = explain.trace(
        (4, 4, 1), explain.parse_steps(["conv 8 k9 symmetric", "conv 8 k9 reflect"])
    )
    assert shapes.rows[0].output == (4, 4, 8)
    assert shapes.error.endswith(
        "reflect padding of 4 needs more than 4 input rows, the input has 4"
    )


def test_explain_pipeline_shows_and_checks_the_pad_mode(tmp_path):
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("steps:\n  - op: conv\n    kernel: box:size=7\n    pad_mode: reflect\n")
    assert (
        "conv 1 k7 same nobias reflect"
        in run("explain", "--input", "9x9x1", "--pipeline", pipeline).output
    )
    refused(run("explain", "--input", "3x3x1", "--pipeline", pipeline), 1, "reflect padding of 3")


@given(
    hw=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    k=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    pads=st.tuples(*[st.integers(0, 5)] * 4),
    mode=st.sampled_from(naive.PAD_MODES),
    seed=st.integers(0, 999),
)
def test_by_hand_reads_the_border_values_of_every_pad_mode(hw, k, pads, mode, seed):
    rng = np.random.default_rng(seed)
    matrix, kernel = rng.integers(-9, 10, hw), rng.integers(-3, 4, k)
    expected_error = (
        hw[0] + pads[0] + pads[1] < k[0]
        or hw[1] + pads[2] + pads[3] < k[1]
        or mode == "reflect"
        and (max(pads[:2]) >= hw[0] or max(pads[2:]) >= hw[1])
        or mode == "circular"
        and (max(pads[:2]) > hw[0] or max(pads[2:]) > hw[1])
    )
    if expected_error:
        with pytest.raises(ShapeError):
            explain.by_hand_conv(matrix.tolist(), kernel.tolist(), padding=pads, pad_mode=mode)
        return
    worked = explain.by_hand_conv(matrix.tolist(), kernel.tolist(), padding=pads, pad_mode=mode)
    assert (
        worked.output()
        == naive.conv2d(matrix[None], kernel[None, None], pads=pads, mode=mode)[0].tolist()
    )


def test_by_hand_prints_the_border_values(tmp_path):
    result = run(
        "explain",
        "--by-hand",
        "--matrix",
        "1,2,0;4,1,1;0,2,3",
        "-k",
        "sobel_x",
        "--padding",
        "1",
        "--pad-mode",
        "symmetric",
        "--cell",
        "0,0",
        "--gif",
        tmp_path / "a.gif",
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].endswith("padding 1, pad mode symmetric")
    assert [line.split() for line in lines[4:9]] == [
        ["·1", "·1", "·2", "·0", "·0"],
        ["·1", "1", "2", "0", "·0"],
        ["·4", "4", "1", "1", "·1"],
        ["·0", "0", "2", "3", "·3"],
        ["·0", "·0", "·2", "·3", "·3"],
    ]
    assert "sum: -1 + 0 + 2 - 2 + 0 + 4 - 4 + 0 + 1 = 0" in result.output
    assert (tmp_path / "a.gif").stat().st_size > 0
    refused(
        run(
            "explain", "--by-hand", "--matrix", "1,2;4,1", "--pool", "max", "--pad-mode", "reflect"
        ),
        2,
        "--pad-mode applies to -k",
    )
    refused(
        run("explain", "--input", "3x3", "conv 1 k3", "--pad-mode", "reflect"),
        2,
        "--pad-mode applies to --by-hand",
    )
