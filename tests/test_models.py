"""``-k FILE:TENSOR`` and ``--bias FILE:TENSOR``: weights of trained models in every format.

The models of ``model_zoo`` (PyTorch with random weights, and a Keras model) are written once per
session; ``convcli conv`` with their tensors must give what PyTorch's ``conv2d`` /
``conv_transpose2d`` (or the Keras layer) gives with the module's own parameters.
"""

import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import model_zoo
import numpy as np
import pytest
from conftest import refused, run
from hypothesis import given, settings
from hypothesis import strategies as st

from convcli.models import weights

os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras runs on PyTorch (the ref extra)
torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning"
)
TORCH_FORMATS = ("safetensors", "pt", "ckpt", "npz")


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    pytest.importorskip("onnx")
    pytest.importorskip("safetensors")
    return model_zoo.write_torch_models(tmp_path_factory.mktemp("zoo"))


@pytest.fixture(scope="session")
def keras_zoo(tmp_path_factory):
    pytest.importorskip("keras")
    pytest.importorskip("h5py")
    return model_zoo.write_keras_model(tmp_path_factory.mktemp("keras_zoo"))


def assert_close(actual, expected):
    """Equal within 1e-4 of the largest magnitude of the reference."""
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert np.abs(actual - expected).max() <= 1e-4 * np.abs(expected).max()


def conv_cli(tmp_path, image, *args):
    """``convcli conv`` of an (C, H, W) float image saved as .npy; the result as (C, H, W)."""
    source, out = tmp_path / "in.npy", tmp_path / "out.npy"
    np.save(source, np.ascontiguousarray(np.asarray(image, np.float32).transpose(1, 2, 0)))
    result = run("conv", source, *args, "-o", out)
    assert result.exit_code == 0, result.output
    return np.load(out).transpose(2, 0, 1)


def image(channels, seed=2, size=(12, 10)):
    return torch.rand((1, channels, *size), generator=torch.Generator().manual_seed(seed))


def parameters(saved):
    return {k: v.detach() for k, v in saved.module.state_dict().items()}


# (model, weight, bias, input channels, convcli options, torch function and its keywords)
LAYERS = [
    ("vgg", "0.weight", "0.bias", 3, [], F.conv2d, {"padding": 1}),
    ("vgg", "2.weight", "2.bias", 8, [], F.conv2d, {"padding": 1}),
    (
        "resnet",
        "conv1.weight",
        None,
        3,
        ["--stride", "2", "--padding", "1"],
        F.conv2d,
        {"stride": 2, "padding": 1},
    ),
    (
        "mobilenet",
        "0.weight",
        "0.bias",
        3,
        ["--groups", "3"],
        F.conv2d,
        {"padding": 1, "groups": 3},
    ),
    ("mobilenet", "3.weight", "3.bias", 6, [], F.conv2d, {}),
    (
        "unet",
        "up.weight",
        "up.bias",
        3,
        ["--transpose", "--stride", "2", "--padding", "valid"],
        F.conv_transpose2d,
        {"stride": 2},
    ),
]


@pytest.mark.parametrize("fmt", TORCH_FORMATS)
@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: f"{layer[0]}-{layer[1]}")
def test_a_layer_of_every_format_equals_torch(zoo, layer, fmt, tmp_path):
    model, weight, bias, channels, options, function, keywords = layer
    saved = zoo[model]
    path = saved.files[fmt]
    x = image(channels)
    args = ["-k", f"{path}:{weight}", *options] + (["--bias", f"{path}:{bias}"] if bias else [])
    params = parameters(saved)
    expected = function(x, params[weight], params[bias] if bias else None, **keywords)[0]
    assert_close(conv_cli(tmp_path, x[0], *args), expected.numpy())


@pytest.mark.parametrize("model", ["vgg", "unet"])
def test_onnx_initializers_equal_torch(zoo, model, tmp_path):
    saved = zoo[model]
    path = saved.files["onnx"]
    weight, bias = ("0.weight", "0.bias") if model == "vgg" else ("up.weight", "up.bias")
    options = [] if model == "vgg" else ["--transpose", "--stride", "2", "--padding", "valid"]
    function, keywords = (
        (F.conv2d, {"padding": 1}) if model == "vgg" else (F.conv_transpose2d, {"stride": 2})
    )
    params = parameters(saved)
    x = image(3)
    expected = function(x, params[weight], params[bias], **keywords)[0]
    actual = conv_cli(
        tmp_path, x[0], "-k", f"{path}:{weight}", "--bias", f"{path}:{bias}", *options
    )
    assert_close(actual, expected.numpy())


def test_onnx_conv_with_batchnorm_folded_in_equals_torch_conv_then_batchnorm(zoo, tmp_path):
    onnx = pytest.importorskip("onnx")
    saved = zoo["resnet"]
    path = saved.files["onnx"]
    first = next(n for n in onnx.load(str(path)).graph.node if n.op_type == "Conv")
    assert len(first.input) == 3  # the exporter folded bn1 into the conv: a weight and a bias
    x = image(3)
    block = saved.module
    expected = block.bn1(block.conv1(x)).detach()[0]
    actual = conv_cli(
        tmp_path,
        x[0],
        "-k",
        f"{path}:{first.input[1]}",
        "--bias",
        f"{path}:{first.input[2]}",
        "--padding",
        "1",
    )
    assert_close(actual, expected.numpy())


KERAS_LAYERS = {  # layer name -> (the .keras folder, input channels, convcli options)
    "conv": ("conv2d", 3, []),
    "depthwise": ("depthwise_conv2d", 4, ["--groups", "4"]),
    "up": ("conv2d_transpose", 8, ["--transpose", "--stride", "2", "--padding", "valid"]),
}


def keras_names(fmt, layer):
    """The kernel's and the bias's names in a .keras or a legacy .h5 file."""
    if fmt == "keras":
        folder = KERAS_LAYERS[layer][0]
        return f"layers/{folder}/vars/0", f"layers/{folder}/vars/1"
    return tuple(f"model_weights/{layer}/zoo/{layer}/{v}" for v in ("kernel", "bias"))


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("layer", list(KERAS_LAYERS))
def test_keras_layers_equal_keras(keras_zoo, layer, fmt, tmp_path):
    import keras

    model, files = keras_zoo
    _, channels, options = KERAS_LAYERS[layer]
    x = np.random.default_rng(3).random((1, 12, 10, channels), dtype=np.float32)
    expected = keras.ops.convert_to_numpy(model.get_layer(layer)(x))[0].transpose(2, 0, 1)
    kernel, bias = keras_names(fmt, layer)
    path = files[fmt]
    actual = conv_cli(
        tmp_path,
        x[0].transpose(2, 0, 1),
        "-k",
        f"{path}:{kernel}",
        "--bias",
        f"{path}:{bias}",
        *options,
    )
    assert_close(actual, expected)


def test_keras_listing_names_each_layout(keras_zoo):
    _, files = keras_zoo
    for fmt, path in files.items():
        result = run("kernels", "show", path, "--json")
        assert result.exit_code == 0, result.output
        rows = {t["name"]: t for t in json.loads(result.stdout)["tensors"]}
        conv, up, depthwise = (rows[keras_names(fmt, n)[0]] for n in ("conv", "up", "depthwise"))
        assert (conv["layout"], conv["shape"], conv["kernel_shape"]) == (
            "conv weight (Keras Conv2D)",
            [3, 3, 3, 4],
            [4, 3, 3, 3],
        )
        assert (up["layout"], up["kernel_shape"]) == (
            "transposed weight (Keras Conv2DTranspose)",
            [8, 3, 3, 3],
        )
        assert (depthwise["layout"], depthwise["kernel_shape"]) == (
            "depthwise (Keras)",
            [8, 1, 3, 3],
        )
        assert (
            rows[keras_names(fmt, "conv")[1]]["use"]
            == f"--bias {path}:{keras_names(fmt, 'conv')[1]}"
        )


def test_listing_shows_tensors_layouts_and_the_option_to_use(zoo):
    path = zoo["vgg"].files["safetensors"]
    result = run("kernels", "show", path)
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert lines[0] == ["name", "shape", "dtype", "layout", "kernel shape", "use"]
    rows = {line[0]: line for line in lines[1:]}
    assert rows["0.weight"] == [
        "0.weight",
        "8x3x3x3",
        "float32",
        "conv weight",
        "8x3x3x3",
        f"-k {path}:0.weight",
    ]
    assert rows["2.bias"][3:] == ["bias", "8", f"--bias {path}:2.bias"]
    listed = json.loads(run("kernels", "show", zoo["unet"].files["onnx"], "--json").stdout)
    assert listed["schema"] == "convcli-model-tensors/1"
    layouts = {t["name"]: t["layout"] for t in listed["tensors"]}
    assert layouts["up.weight"] == "transposed weight" and layouts["conv.weight"] == "conv weight"


def test_a_checkpoint_nested_under_model_and_one_tensor_shown(zoo, tmp_path):
    params = parameters(zoo["vgg"])
    path = tmp_path / "nested.pth"
    torch.save({"model": params, "optimizer": {"lr": 0.1}}, path)
    listed = json.loads(run("kernels", "show", path, "--json").stdout)
    assert {t["name"] for t in listed["tensors"]} == set(params)
    shown = run("kernels", "show", f"{path}:0.weight", "--json")
    assert shown.exit_code == 0, shown.output
    assert np.array_equal(
        np.array(json.loads(shown.stdout)["weights"], np.float32), params["0.weight"].numpy()
    )


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_weights_are_widened_to_float32(zoo, dtype, tmp_path):
    from safetensors.torch import save_file

    params = parameters(zoo["vgg"])
    half = {k: params[k].to(getattr(torch, dtype)) for k in ("0.weight", "0.bias")}
    path = tmp_path / "half.safetensors"
    save_file(half, str(path))
    x = image(3)
    expected = F.conv2d(x, half["0.weight"].float(), half["0.bias"].float(), padding=1)[0]
    np.save(tmp_path / "in.npy", x[0].numpy().transpose(1, 2, 0))
    # a process of its own: numpy there knows no bfloat16 (torch and onnx teach it in-process)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "convcli",
            "conv",
            str(tmp_path / "in.npy"),
            "-k",
            f"{path}:0.weight",
            "--bias",
            f"{path}:0.bias",
            "-o",
            str(tmp_path / "o.npy"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert_close(np.load(tmp_path / "o.npy").transpose(2, 0, 1), expected.numpy())
    assert f"\t{dtype}\t" in run("kernels", "show", path).stdout


def test_a_pipeline_reads_a_tensor_relative_to_its_file(zoo, tmp_path):
    from convcli.pipeline import load_pipeline

    path = zoo["vgg"].files["safetensors"]
    (tmp_path / "p.yaml").write_text(
        f"[{{op: conv, kernel: '{os.path.relpath(path, tmp_path)}:0.weight'}}]"
    )
    step = load_pipeline(str(tmp_path / "p.yaml")).steps[0]
    assert np.array_equal(
        step.params["kernel"][0].weights, parameters(zoo["vgg"])["0.weight"].numpy()
    )


# ---------------------------------------------------------------------------------------------
# Refusals: one line, exit 1, no file written


def refused_conv(tmp_path, *args):
    out = tmp_path / "o.npy"
    np.save(tmp_path / "x.npy", np.ones((5, 5, 3), np.float32))
    result = run("conv", tmp_path / "x.npy", *args, "-o", out)
    assert not out.exists()
    return result


def test_a_misspelt_tensor_gets_the_nearest_name(zoo, tmp_path):
    path = zoo["vgg"].files["pt"]
    refused(
        refused_conv(tmp_path, "-k", f"{path}:0.weigth"),
        1,
        "no tensor '0.weigth'",
        "did you mean '0.weight'?",
    )
    refused(run("kernels", "show", f"{path}:2.wieght"), 1, "did you mean '2.weight'?")
    refused(
        refused_conv(tmp_path, "-k", str(path)),
        1,
        "name one of its tensors",
        f"kernels show {path}",
    )


def test_a_tensor_of_the_wrong_rank_is_refused(zoo, tmp_path):
    path = zoo["vgg"].files["safetensors"]
    refused(
        refused_conv(tmp_path, "-k", f"{path}:0.bias"),
        1,
        "must be 2-D, 3-D or 4-D",
        "shape 8 (bias)",
        "--bias",
    )
    refused(
        refused_conv(tmp_path, "-k", f"{path}:0.weight", "--bias", f"{path}:0.weight"),
        1,
        "a bias must be 1-D",
        "-k",
    )


def test_a_pickle_bearing_npz_is_refused(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, w=np.array([{"a": 1}, None], dtype=object))
    refused(refused_conv(tmp_path, "-k", f"{path}:w"), 1, "never unpickles")


def test_a_pt_file_with_code_in_its_pickle_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(1, 1, 3, 3), "payload": Payload()}, path)
    refused(
        refused_conv(tmp_path, "-k", f"{path}:w"),
        1,
        "not a readable PyTorch file",
        "never unpickles code",
    )
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["safetensors", "onnx", "pt", "npz"])
def test_truncated_files_are_one_error_line(zoo, fmt, tmp_path):
    source = zoo["vgg"].files[fmt]
    path = tmp_path / f"cut.{fmt}"
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    refused(refused_conv(tmp_path, "-k", f"{path}:0.weight"), 1, str(path))


def test_garbage_keras_files_are_one_error_line(tmp_path):
    for name in ("junk.keras", "junk.h5"):
        (tmp_path / name).write_bytes(b"not a model" * 10)
        refused(run("kernels", "show", tmp_path / name), 1, "not a readable Keras")
    with zipfile.ZipFile(tmp_path / "empty.keras", "w") as archive:
        archive.writestr("config.json", "{}")
    refused(run("kernels", "show", tmp_path / "empty.keras"), 1, "model.weights.h5")


def test_a_kernel_beyond_the_limits_is_refused_from_the_header(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "wide.safetensors"
    save_file({"w": np.zeros((1, 1, 1, 1025), np.float32)}, str(path))
    refused(refused_conv(tmp_path, "-k", f"{path}:w"), 1, "at most 1024 cells per side")
    header = io.BytesIO()  # a header promising 2**40 weights, and no data: refused unread
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (2**20, 2**20, 1, 1)}
    )
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive:
        archive.writestr("w.npy", header.getvalue())
    refused(refused_conv(tmp_path, "-k", f"{tmp_path / 'huge.npz'}:w"), 1, "a kernel has at most")


HIDDEN = textwrap.dedent("""
    import sys
    sys.modules[sys.argv.pop(1)] = None  # as if the package were not installed
    from convcli.cli.main import main
    sys.argv[0] = "convcli"
    main()
""")


@pytest.mark.parametrize(
    "fmt, package, install",
    [
        ("safetensors", "safetensors", "pip install 'convcli[models]'"),
        ("onnx", "onnx", "pip install 'convcli[models]'"),
        ("pt", "torch", "pip install torch"),
    ],
)
def test_a_missing_package_is_named_with_what_to_install(zoo, fmt, package, install):
    path = zoo["vgg"].files[fmt]
    proc = subprocess.run(
        [sys.executable, "-c", HIDDEN, package, "kernels", "show", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: ") and install in lines[0] and package in lines[0]


# ---------------------------------------------------------------------------------------------
# Reading, for shapes and dtypes that vary


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    dtype=st.sampled_from(["float32", "float64", "float16", "int32"]),
    fmt=st.sampled_from(["safetensors", "pt", "npz"]),
    seed=st.integers(0, 100),
)
def test_any_tensor_reads_back_as_stored(tmp_path_factory, shape, dtype, fmt, seed):
    from safetensors.torch import save_file

    tensor = (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 5).to(
        getattr(torch, dtype)
    )
    path = tmp_path_factory.mktemp("one") / f"t.{fmt}"
    if fmt == "safetensors":
        save_file({"t": tensor}, str(path))
    elif fmt == "pt":
        torch.save({"t": tensor}, path)
    else:
        np.savez(path, t=tensor.numpy())
    if len(shape) == 1:
        values = weights.read_bias(f"{path}:t")
        assert values == tuple(tensor.double().tolist())
    else:
        array, found = weights.read_kernel(str(path), "t")
        assert found.shape == tuple(shape)
        assert found.layout == {4: "conv weight", 3: "3-D", 2: "matrix"}[len(shape)]
        assert np.array_equal(array.astype(np.float64), tensor.double().numpy())


LOADED = textwrap.dedent("""
    import sys
    from click.testing import CliRunner
    from convcli.cli.main import cli
    result = CliRunner().invoke(cli, sys.argv[1:])
    assert result.exit_code == 0, result.output
    print(" ".join(m for m in ("numba", "convcli.models.weights", "torch", "onnx", "h5py")
                   if m in sys.modules))
""")


@pytest.mark.parametrize(
    "args, loaded",
    [
        (["conv", "--help"], ""),
        (["kernels", "show", "{vgg}.safetensors"], "convcli.models.weights"),
        (["kernels", "show", "{vgg}.npz:0.weight"], "convcli.models.weights"),
    ],
)
def test_model_files_load_only_what_their_format_needs(zoo, args, loaded):
    stem = str(zoo["vgg"].files["npz"].with_suffix(""))
    proc = subprocess.run(
        [sys.executable, "-c", LOADED, *(a.format(vgg=stem) for a in args)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == loaded
