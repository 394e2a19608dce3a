"""``convcli run --model``: ONNX graphs run as pipelines, every saved layer against onnxruntime
(and PyTorch), for the zoo's models and a few more built here, at several image sizes.

onnxruntime runs a test-side copy of each model whose input and output sizes are free and
whose asked-for nodes are outputs too (``onnx.helper``); convcli runs the file as written.
"""

import json
import os
import subprocess
import sys

import model_zoo
import numpy as np
import pytest
import yaml
from conftest import refused, run
from PIL import Image

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional

SIZES = [(12, 10), (9, 13), (16, 16)]
# the exporters warn of their own deprecations
pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning"
)


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    return model_zoo.write_torch_models(tmp_path_factory.mktemp("graph_zoo"))


class UpStep(nn.Module):
    """A U-Net up step fed by one input: the skip is a second transposed conv of it."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(3, 4, 2, stride=2)
        self.skip = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1)
        self.conv = nn.Conv2d(6, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(torch.cat([self.up(x), self.skip(x)], dim=1))


class ManyOps(nn.Module):
    """Strides, dilations, leaky ReLU, ceil-mode max pool, a BatchNorm after a pool (not folded
    into a conv), hard swish, Mul by a constant, sigmoid, tanh, Concat, average pool that does
    not count its padding, a transposed conv with output padding, hard sigmoid, global pool."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=(1, 2), dilation=(1, 2))
        self.bn = nn.BatchNorm2d(6)
        self.up = nn.ConvTranspose2d(12, 4, 3, stride=2, padding=1, output_padding=1)

    def forward(self, x):
        y = F.leaky_relu(self.conv(x), 0.1)
        y = F.max_pool2d(y, 3, stride=2, padding=1, ceil_mode=True)
        y = F.hardswish(self.bn(y)) * 0.5
        y = torch.cat([torch.sigmoid(y), torch.tanh(y)], 1)
        y = F.avg_pool2d(y, 3, stride=1, padding=1, count_include_pad=False)
        y = F.hardsigmoid(self.up(y))
        return F.adaptive_avg_pool2d(y, 1)


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The two models above, seeded, exported as the zoo's are."""
    folder = tmp_path_factory.mktemp("built")
    torch.manual_seed(5)
    models = {"upstep": UpStep(), "manyops": ManyOps()}
    bn = models["manyops"].bn
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    saved = {}
    for name, module in models.items():
        module.eval()
        path = folder / f"{name}.onnx"
        x = torch.rand(model_zoo.INPUT_SHAPE)
        with torch.no_grad():
            torch.onnx.export(module, (x,), str(path), dynamo=False)
        saved[name] = (module, path)
    return saved


def free_copy(path, outputs, folder):
    """A copy of the ONNX model at ``path`` whose sizes are free and whose outputs include the
    values ``outputs`` (for onnxruntime)."""
    model = onnx.load(str(path))
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        for index, name in ((2, "H"), (3, "W")):
            dims[index].Clear()
            dims[index].dim_param = name
    del model.graph.value_info[:]
    names = list(dict.fromkeys([*outputs]))
    del model.graph.output[:]
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
    copy = folder / f"free_{path.name}"
    onnx.save(model, str(copy))
    return copy


def onnxruntime_layers(path, x, outputs, folder):
    session = ort.InferenceSession(
        str(free_copy(path, outputs, folder)), providers=["CPUExecutionProvider"]
    )
    feed = {session.get_inputs()[0].name: x[None]}
    return dict(zip(outputs, (out[0] for out in session.run(outputs, feed))))


def assert_near(actual, expected):
    """Within 1e-4 of the largest magnitude."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(float(np.abs(expected).max()), 1e-6)
    assert float(np.abs(actual - expected).max()) <= 1e-4 * scale


def node_outputs(path):
    model = onnx.load(str(path))
    return {node.name: node.output[0] for node in model.graph.node if node.op_type != "Constant"}


def convcli_layers(tmp_path, model, x, *args):
    """Run ``convcli run --model`` on ``x`` (C, H, W) saved as .npy; the .npy maps it writes,
    by file name."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    image = tmp_path / "x.npy"
    np.save(image, x.transpose(1, 2, 0))
    out = tmp_path / "maps"
    result = run("run", "--model", model, image, "--out-dir", out, "--format", "npy", *args)
    assert result.exit_code == 0, result.output
    return {p.name: np.load(p).transpose(2, 0, 1) for p in out.iterdir()}


def picture(size, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (3, *size)).astype(np.float32)


@pytest.mark.parametrize("name", ["vgg", "resnet", "mobilenet"])
@pytest.mark.parametrize("size", SIZES)
def test_every_layer_of_a_zoo_model_equals_onnxruntime(zoo, name, size, tmp_path):
    path = zoo[name].files["onnx"]
    outputs = node_outputs(path)
    x = picture(size)
    expected = onnxruntime_layers(path, x, list(outputs.values()), tmp_path)
    args = [arg for node in outputs for arg in ("--save", node)]
    got = convcli_layers(tmp_path, path, x, *args)
    from convcli.models.onnx_graph import step_name

    assert len(got) == len(outputs)
    for node, value in outputs.items():
        assert_near(got[f"x_{step_name(node)}.npy"], expected[value])


@pytest.mark.parametrize("size", SIZES)
def test_the_final_maps_equal_pytorch(zoo, built, size, tmp_path):
    x = picture(size, 3)
    cases = [(zoo[n].module, zoo[n].files["onnx"]) for n in ("vgg", "resnet", "mobilenet")]
    for module, path in [*cases, built["upstep"], built["manyops"]]:
        with torch.no_grad():
            expected = module(torch.from_numpy(x)[None])[0].numpy()
        (got,) = convcli_layers(tmp_path / path.stem, path, x).values()
        assert_near(got, expected)


@pytest.mark.parametrize("name", ["upstep", "manyops"])
@pytest.mark.parametrize("size", [(12, 10), (11, 7)])
def test_concat_transposed_pools_and_activations_equal_onnxruntime(built, name, size, tmp_path):
    _, path = built[name]
    outputs = node_outputs(path)
    x = picture(size, 1)
    expected = onnxruntime_layers(path, x, list(outputs.values()), tmp_path)
    from convcli.models.onnx_graph import step_name

    args = [arg for node in outputs for arg in ("--save", node)]
    got = convcli_layers(tmp_path, path, x, *args)
    for node, value in outputs.items():
        assert_near(got[f"x_{step_name(node)}.npy"], expected[value])


def helper_model(folder, nodes, initializers, shape=(1, 2, 9, 7), name="made"):
    """An ONNX model written with onnx.helper: ``nodes`` from input ``x`` to output ``y``."""
    helper = onnx.helper
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(array, key) for key, array in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def test_auto_pad_clip_hardsigmoid_and_a_constant_mul(tmp_path):
    """SAME_LOWER (the odd pixel first) and SAME_UPPER, Clip bounds as inputs, HardSigmoid with
    ONNX's defaults, Mul by a per-channel constant, GlobalMaxPool."""
    helper = onnx.helper
    rng = np.random.default_rng(4)
    weights = {
        "w": rng.uniform(-1, 1, (3, 2, 4, 3)).astype(np.float32),
        "w2": rng.uniform(-1, 1, (3, 3, 2, 2)).astype(np.float32),
        "low": np.array(-0.5, np.float32),
        "high": np.array(0.75, np.float32),
        "k": np.array([2.0, -1.0, 0.5], np.float32).reshape(1, 3, 1, 1),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], "lower", auto_pad="SAME_LOWER", strides=[2, 2]),
        helper.make_node("Conv", ["a", "w2"], ["b"], "upper", auto_pad="SAME_UPPER"),
        helper.make_node("Clip", ["b", "low", "high"], ["c"], "clip"),
        helper.make_node("HardSigmoid", ["c"], ["d"], "hsig"),
        helper.make_node("Mul", ["d", "k"], ["e"], "mul"),
        helper.make_node(
            "MaxPool", ["e"], ["f"], "pool", kernel_shape=[2, 2], auto_pad="SAME_LOWER"
        ),
        helper.make_node("GlobalMaxPool", ["f"], ["y"], "gmp"),
    ]
    path = helper_model(tmp_path, nodes, weights)
    x = picture((9, 7))[:2]
    values = ["a", "b", "c", "d", "e", "f", "y"]
    session = ort.InferenceSession(
        str(free_copy(path, values, tmp_path)), providers=["CPUExecutionProvider"]
    )
    expected = dict(zip(values, (o[0] for o in session.run(values, {"x": x[None]}))))
    names = ["lower", "upper", "clip", "hsig", "mul", "pool", "gmp"]
    got = convcli_layers(tmp_path, path, x, *[a for n in names for a in ("--save", n)])
    for name, value in zip(names, values):
        assert_near(got[f"x_{name}.npy"], expected[value])


def test_until_and_save_by_node_or_output_name_and_file_names(zoo, tmp_path):
    path = zoo["vgg"].files["onnx"]
    x = picture((12, 10))
    by_node = convcli_layers(tmp_path / "a", path, x, "--until", "/2/Conv")
    by_output = convcli_layers(tmp_path / "b", path, x, "--until", "/2/Conv_output_0")
    assert list(by_node) == list(by_output) == ["x_node_2_Conv.npy"]
    np.testing.assert_array_equal(by_node["x_node_2_Conv.npy"], by_output["x_node_2_Conv.npy"])
    two = convcli_layers(tmp_path / "c", path, x, "--save", "/1/Relu", "--save", "9")
    assert sorted(two) == ["x_node_1_Relu.npy", "x_node_4_MaxPool.npy"]
    expected = onnxruntime_layers(path, x, ["/2/Conv_output_0"], tmp_path)
    assert_near(by_node["x_node_2_Conv.npy"], expected["/2/Conv_output_0"])


def test_a_node_it_cannot_run_stops_before_any_image(zoo, tmp_path):
    helper = onnx.helper
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], "first"),
        helper.make_node("Softmax", ["a"], ["b"], "soft", axis=1),
        helper.make_node("Relu", ["b"], ["y"], "last"),
    ]
    path = helper_model(tmp_path, nodes, {})
    image = tmp_path / "never.npy"  # does not exist: the refusal comes first
    out = tmp_path / "maps"
    result = run("run", "--model", path, image, "--out-dir", out)
    refused(result, 1, "'soft' (Softmax)", "the last node it can reach is 'first'")
    assert not out.exists()
    ok = run("run", "--model", path, "--until", "first", "--export-pipeline", tmp_path / "p.yaml")
    assert ok.exit_code == 0, ok.output
    refused(
        run("run", "--model", zoo["unet"].files["onnx"], image, "--out-dir", out),
        1,
        "'/Concat' (Concat)",
        "reads the model's input 'onnx::Concat_1'",
        "'/up/ConvTranspose'",
    )
    refused(run("run", "--model", path, image, "-o", out, "--until", "sfot"), 1, "'soft'?")


def test_an_image_whose_channels_do_not_fit_is_one_line(zoo, tmp_path):
    gray = tmp_path / "gray.png"
    Image.fromarray(np.zeros((12, 10), np.uint8)).save(gray)
    out = tmp_path / "maps"
    result = run("run", "--model", zoo["vgg"].files["onnx"], gray, "--out-dir", out)
    refused(result, 1, "the image has 1 channel,", "takes 3")
    assert not any(out.glob("*")) if out.exists() else True


def test_usage(tmp_path):
    refused(run("run", "--until", "x", "p.yaml", "a.png", "-o", "b.png"), 2, "--until applies")
    refused(run("run", "p.yaml"), 2, "Missing argument 'INPUT...'")
    refused(run("run", "--model", "m.onnx", "--mean", "0.5", "a.png", "-o", "b.npy"), 2, "--std")


def test_preprocessing_is_torchvision_normalize_and_bgr(zoo, tmp_path):
    path = zoo["vgg"].files["onnx"]
    pixels = np.random.default_rng(9).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    png = tmp_path / "p.png"
    Image.fromarray(pixels).save(png)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    for order, channels in (("--rgb", [0, 1, 2]), ("--bgr", [2, 1, 0])):
        x = (pixels[..., channels] / 255.0 - mean) / std
        x = x.transpose(2, 0, 1).astype(np.float32)
        expected = onnxruntime_layers(path, x, ["9"], tmp_path)["9"]
        out = tmp_path / order
        args = ["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225", order]
        result = run("run", "--model", path, png, "--out-dir", out, "--format", "npy", *args)
        assert result.exit_code == 0, result.output
        assert_near(np.load(out / "p_node_4_MaxPool.npy").transpose(2, 0, 1), expected)


def test_the_exported_pipeline_gives_the_same_bytes(zoo, tmp_path):
    path = zoo["resnet"].files["onnx"]
    folder = tmp_path / "pipelines"
    folder.mkdir()
    yaml_path = folder / "resnet.yaml"
    x = picture((11, 9))
    np.save(tmp_path / "x.npy", x.transpose(1, 2, 0))
    args = ["--until", "/Add", "--mean", "0.5", "--std", "0.25"]
    result = run("run", "--model", path, "--export-pipeline", yaml_path, *args)
    assert result.exit_code == 0, result.output
    document = yaml.safe_load(yaml_path.read_text())
    relative = os.path.relpath(path, folder)
    assert document["steps"][1]["kernel"] == f"{relative}:onnx::Conv_21"
    assert document["steps"][-1]["inputs"] == ["conv2_Conv", "model_input"]
    piped = run("run", yaml_path, tmp_path / "x.npy", "-o", tmp_path / "piped.npy")
    assert piped.exit_code == 0, piped.output
    direct = convcli_layers(tmp_path / "direct", path, x, *args)
    (modelled,) = direct.values()
    assert np.load(tmp_path / "piped.npy").tobytes() == modelled.transpose(1, 2, 0).tobytes()
    explained = run("explain", "--pipeline", yaml_path, "--input", "11x9x3", "--json")
    assert explained.exit_code == 0, explained.output
    assert json.loads(explained.stdout)["total"]["output"] == [11, 9, 3]
    again = run("run", "--model", path, "--export-pipeline", yaml_path, *args)
    refused(again, 1, "exists")


@pytest.mark.parametrize(
    "attributes",
    [{"output_shape": [18, 14]}, {"pads": [1, 1, 0, 0]}, {"pads": [1, 0, 1, 0], "group": 2}],
)
def test_conv_transpose_output_shape_and_uneven_pads_equal_onnxruntime(attributes, tmp_path):
    """ONNX ConvTranspose may crop more at the start than at the end (output_shape decides the
    pads for the model's fixed size): convcli crops the start from both sides, then pads."""
    helper = onnx.helper
    groups = attributes.get("group", 1)
    weight = np.random.default_rng(6).uniform(-1, 1, (2, 4 // groups, 3, 3)).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], "up", strides=[2, 2], **attributes)
    path = helper_model(tmp_path, [node], {"w": weight})
    x = picture((9, 7))[:2]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (expected,) = session.run(["y"], {"x": x[None]})
    (got,) = convcli_layers(tmp_path, path, x).values()
    assert_near(got, expected[0])


def test_pads_that_crop_more_at_the_end_are_refused(tmp_path):
    weight = np.ones((2, 2, 3, 3), np.float32)
    node = onnx.helper.make_node("ConvTranspose", ["x", "w"], ["y"], "up", pads=[0, 0, 1, 1])
    path = helper_model(tmp_path, [node], {"w": weight})
    result = run("run", "--model", path, tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    refused(result, 1, "'up' (ConvTranspose)", "crop more at the end")


def inferred_shapes(path):
    """Each node's output (N, C, H, W) as ONNX shape inference gives it, by node name."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    infos = [*model.graph.value_info, *model.graph.output]
    dims = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in infos}
    return {n.name: dims[n.output[0]] for n in model.graph.node if n.op_type != "Constant"}


def initializer_sizes(path):
    return sum(int(np.prod(init.dims)) for init in onnx.load(str(path)).graph.initializer)


def torch_parameters(module):
    return sum(p.numel() for p in module.parameters())


def test_explain_model_shapes_and_parameters_equal_onnx_and_pytorch(zoo, built):
    """Shapes are ONNX shape inference's; parameters PyTorch's count (a BatchNorm counts its
    scale and bias, as torchinfo). PyTorch's exporter folds a BatchNorm that follows a conv into
    the conv's weights and bias: there the count is the ONNX file's."""
    from convcli.models.onnx_graph import step_name

    cases = {name: (zoo[name].module, zoo[name].files["onnx"]) for name in zoo if name != "unet"}
    cases.update(built)
    for name, (module, path) in cases.items():
        result = run("explain", "--model", path, "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["input"]["shape"] == [12, 10, 3]
        outputs = {row["text"].split(":")[0]: row["output"] for row in report["steps"]}
        for node, (_, c, h, w) in inferred_shapes(path).items():
            assert outputs[step_name(node)] == [h, w, c], (name, node)
        folded = name in ("resnet", "mobilenet")
        expected = initializer_sizes(path) if folded else torch_parameters(module)
        assert report["total"]["params"] == expected, name
    assert torch_parameters(zoo["vgg"].module) == initializer_sizes(zoo["vgg"].files["onnx"])


def test_explain_model_takes_another_input_and_the_largest_field_over_branches(built):
    _, path = built["upstep"]
    result = run("explain", "--model", path, "--input", "7x5x3", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["steps"]
    assert [row["output"] for row in rows] == [[14, 10, 4], [14, 10, 2], [14, 10, 6], [14, 10, 4]]
    # the concat's field is the skip's (a 3x3 transposed kernel), wider than the up step's 2x2
    fields = [row["receptive_field"]["size"] for row in rows]
    assert fields[2] == fields[1] != fields[0]


def test_explain_model_does_not_import_numba(zoo):
    script = f"""
import sys
from click.testing import CliRunner
from convcli.cli.main import cli
result = CliRunner().invoke(cli, ["explain", "--model", {str(zoo["resnet"].files["onnx"])!r}])
assert result.exit_code == 0, result.output
assert "numba" not in sys.modules, "numba was imported"
print("ok")
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_a_saved_layer_past_until_is_refused(zoo, tmp_path):
    path = zoo["vgg"].files["onnx"]
    result = run(
        "run",
        "--model",
        path,
        tmp_path / "x.npy",
        "--until",
        "/1/Relu",
        "--save",
        "9",
        "--out-dir",
        tmp_path / "maps",
    )
    refused(result, 1, "--save '/4/MaxPool': the layer is not on the way to --until '/1/Relu'")


def test_explain_model_takes_no_steps(zoo):
    path = zoo["vgg"].files["onnx"]
    refused(run("explain", "--model", path, "relu"), 2, "--model FILE traces the model's layers")


def test_existing_layer_files_are_checked_before_any_work_and_skip_existing_resumes(zoo, tmp_path):
    """The files of every saved layer are the outputs the batch plans: existing ones are refused
    before any image is read, ``--skip-existing`` skips an image whose layers are all there and
    refuses one whose layers are there in part."""
    path = zoo["vgg"].files["onnx"]
    folder = tmp_path / "in"
    folder.mkdir()
    for name, seed in (("a", 1), ("b", 2)):
        np.save(folder / f"{name}.npy", picture((12, 10), seed).transpose(1, 2, 0))
    out = tmp_path / "maps"
    save = ("--save", "/1/Relu", "--save", "/2/Conv")
    assert run("run", "--model", path, folder, "--out-dir", out, *save).exit_code == 0
    made = sorted(os.listdir(out))
    assert made == [
        "a_node_1_Relu.npy",
        "a_node_2_Conv.npy",
        "b_node_1_Relu.npy",
        "b_node_2_Conv.npy",
    ]
    first = {name: (out / name).stat().st_mtime_ns for name in made}
    refused(run("run", "--model", path, folder, "--out-dir", out, *save), 1, "exists")
    (out / "b_node_2_Conv.npy").unlink()
    message = refused(
        run("run", "--model", path, folder, "--out-dir", out, *save, "--skip-existing"), 1
    )
    assert "b_" in message and "complete" in message
    (out / "b_node_1_Relu.npy").unlink()
    result = run("run", "--model", path, folder, "--out-dir", out, *save, "--skip-existing")
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out)) == made
    for name in ("a_node_1_Relu.npy", "a_node_2_Conv.npy"):  # skipped: not written again
        assert (out / name).stat().st_mtime_ns == first[name]
