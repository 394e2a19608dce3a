"""The shipped tiny edge finder (``models/``, trained by ``models/train_tiny.py``).

Its first layer through ``convcli conv`` equals PyTorch's ``conv2d`` with the file's weights; the
whole network through the pipeline ``models/tiny_edges.yaml`` equals onnxruntime running the
shipped ``.onnx``.
"""

from pathlib import Path

import numpy as np
import pytest
from conftest import read_pixels, refused, run

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
CAMERA = ROOT / "sample_images" / "camera.png"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def assert_close(actual, expected):
    """Equal within 1e-4 of the largest magnitude of the reference."""
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert np.abs(actual - expected).max() <= 1e-4 * np.abs(expected).max()


def test_the_shipped_files_are_small():
    for name in ("tiny_edges.safetensors", "tiny_edges.onnx"):
        assert (MODELS / name).stat().st_size < 64 * 1024


@pytest.mark.parametrize("fmt", ["safetensors", "onnx"])
def test_the_first_layer_maps_equal_torch(fmt, tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from safetensors.torch import load_file

    path = MODELS / f"tiny_edges.{fmt}"
    out = tmp_path / "maps.npy"
    result = run(
        "conv", CAMERA, "-k", f"{path}:conv1.weight", "--bias", f"{path}:conv1.bias", "-o", out
    )
    assert result.exit_code == 0, result.output
    params = load_file(str(MODELS / "tiny_edges.safetensors"))
    gray = torch.tensor(read_pixels(CAMERA), dtype=torch.float32)[None, None]
    expected = torch.nn.functional.conv2d(
        gray, params["conv1.weight"], params["conv1.bias"], padding=1
    )
    assert_close(np.load(out).transpose(2, 0, 1), expected[0].numpy())


def test_the_whole_network_as_a_pipeline_equals_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "edges.npy"
    result = run("run", MODELS / "tiny_edges.yaml", CAMERA, "-o", out)
    assert result.exit_code == 0, result.output
    session = ort.InferenceSession(
        str(MODELS / "tiny_edges.onnx"), providers=["CPUExecutionProvider"]
    )
    gray = read_pixels(CAMERA).astype(np.float32)[None, None]
    expected = session.run(None, {session.get_inputs()[0].name: gray})[0][0]
    assert_close(np.load(out).transpose(2, 0, 1), expected)


def test_a_pipeline_bias_from_a_model_file_is_checked_like_a_kernel(tmp_path):
    model = MODELS / "tiny_edges.safetensors"
    for bias, message in (
        (f"{model}:conv1.bais", "did you mean 'conv1.bias'?"),
        (f"{model}:conv1.weight", "a bias must be 1-D"),
    ):
        (tmp_path / "p.yaml").write_text(
            f"[{{op: conv, kernel: '{model}:conv1.weight', bias: '{bias}'}}]"
        )
        refused(
            run("run", tmp_path / "p.yaml", CAMERA, "-o", tmp_path / "o.npy"),
            1,
            "step 1 (conv): bias:",
            message,
        )
        assert not (tmp_path / "o.npy").exists()
