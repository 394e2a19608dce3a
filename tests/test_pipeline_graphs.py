"""Pipelines as graphs: steps that read named steps (``input:``, ``inputs:``), the joins
``add`` and ``concat``, and ``mul``, ``batchnorm``, ``clip``, ``hardsigmoid``, ``hardswish``;
each against PyTorch (the ``ref`` extra) or a formula in numpy, and ``explain``'s trace of a
graph."""

import json

import numpy as np
import pytest
import yaml
from conftest import assert_matches, refused, run
from hypothesis import given, settings
from hypothesis import strategies as st

from convcli.errors import ParameterError, ShapeError
from convcli.pipeline import Maps, parse_pipeline, trace

torch = pytest.importorskip("torch")
F = torch.nn.functional


def picture(seed, channels, size):
    return np.random.default_rng(seed).uniform(-1, 1, (channels, *size)).astype(np.float32)


def run_steps(steps, data):
    return parse_pipeline(steps, "p.yaml").run(Maps(data, 1.0)).data


def tensor(array):
    return torch.from_numpy(np.asarray(array, np.float32))[None]


def batchnorm_values(rng, channels):
    return {
        "scale": rng.uniform(0.5, 1.5, channels).tolist(),
        "bias": rng.uniform(-0.5, 0.5, channels).tolist(),
        "mean": rng.uniform(-0.5, 0.5, channels).tolist(),
        "var": rng.uniform(0.5, 2.0, channels).tolist(),
    }


def torch_batchnorm(x, values, epsilon=1e-5):
    return F.batch_norm(
        x,
        torch.tensor(values["mean"]),
        torch.tensor(values["var"]),
        torch.tensor(values["scale"]),
        torch.tensor(values["bias"]),
        training=False,
        eps=epsilon,
    )


@settings(max_examples=15)
@given(
    rows=st.integers(3, 11),
    cols=st.integers(3, 11),
    channels=st.integers(1, 4),
    seed=st.integers(0, 1000),
)
def test_a_resnet_basic_block_equals_torch(rows, cols, channels, seed, tmp_path_factory):
    """conv -> batchnorm -> relu -> conv -> batchnorm, the input added back, relu."""
    folder = tmp_path_factory.mktemp("block")
    rng = np.random.default_rng(seed)
    weights = [rng.uniform(-1, 1, (channels, channels, 3, 3)).astype(np.float32) for _ in "ab"]
    norms = [batchnorm_values(rng, channels) for _ in "ab"]
    for name, weight in zip("ab", weights):
        np.save(folder / f"{name}.npy", weight)
    steps = [
        {"op": "conv", "kernel": str(folder / "a.npy"), "padding": 1},
        {"op": "batchnorm", **norms[0]},
        "relu",
        {"op": "conv", "kernel": str(folder / "b.npy"), "padding": 1},
        {"op": "batchnorm", **norms[1], "name": "branch"},
        {"op": "add", "inputs": ["branch", "image"]},
        "relu",
    ]
    x = picture(seed, channels, (rows, cols))
    t = tensor(x)
    y = torch.relu(torch_batchnorm(F.conv2d(t, torch.from_numpy(weights[0]), padding=1), norms[0]))
    y = torch_batchnorm(F.conv2d(y, torch.from_numpy(weights[1]), padding=1), norms[1])
    assert_matches(run_steps(steps, x), torch.relu(y + t)[0].numpy())


def test_concat_stacks_an_up_step_and_a_skip_on_channels(tmp_path):
    """A U-Net up step: transposed conv 2x2 stride 2 of a pooled branch, beside the input."""
    rng = np.random.default_rng(3)
    weight = rng.uniform(-1, 1, (2, 4, 2, 2)).astype(np.float32)
    np.save(tmp_path / "up.npy", weight)
    steps = [
        {"op": "pool", "size": 2, "name": "down"},
        {"op": "transposed", "kernel": str(tmp_path / "up.npy"), "stride": 2, "padding": 0},
        {"op": "concat", "inputs": ["image", "up"]},
    ]
    steps[1]["name"] = "up"
    x = picture(4, 2, (10, 6))
    t = tensor(x)
    up = F.conv_transpose2d(F.max_pool2d(t, 2), torch.from_numpy(weight), stride=2)
    assert_matches(run_steps(steps, x), torch.cat([t, up], 1)[0].numpy())


def test_a_step_reads_a_named_step_and_unread_branches_do_not_change_the_output():
    x = picture(5, 3, (7, 9))
    steps = [
        {"op": "abs", "name": "magnitude"},
        {"op": "mul", "value": [1.0, -2.0, 0.5], "input": "image"},  # a branch
        {"op": "tanh", "input": "magnitude"},
    ]
    assert_matches(run_steps(steps, x), np.tanh(np.abs(x)))
    twice = [{"op": "add", "inputs": ["image", "image"]}]
    assert_matches(run_steps(twice, x), 2 * x)


def test_mul_clip_hardsigmoid_hardswish_equal_torch():
    x = picture(6, 3, (5, 8)) * 8
    t = tensor(x)
    per_channel = [[2.0, -1.0, 0.25]]
    cases = [
        ({"op": "mul", "value": 3.0}, t * 3),
        ({"op": "mul", "value": per_channel[0]}, t * torch.tensor(per_channel).reshape(1, 3, 1, 1)),
        ({"op": "clip", "min": 0, "max": 6}, F.relu6(t)),
        ({"op": "relu6", "min": 0, "max": 6}, F.relu6(t)),
        ({"op": "clip", "max": 1.5}, torch.clamp(t, max=1.5)),
        ("hardsigmoid", torch.clamp(0.2 * t + 0.5, 0, 1)),  # ONNX's defaults
        ({"op": "hardsigmoid", "alpha": 1 / 6, "beta": 0.5}, F.hardsigmoid(t)),
        ("hardswish", F.hardswish(t)),
    ]
    for step, expected in cases:
        assert_matches(run_steps([step], x), expected[0].numpy())


def test_batchnorm_equals_torch_and_reads_model_tensors(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(7)
    values = batchnorm_values(rng, 3)
    x = picture(8, 3, (6, 5))
    expected = torch_batchnorm(tensor(x), values, 1e-3)[0].numpy()
    assert_matches(run_steps([{"op": "batchnorm", **values, "epsilon": 1e-3}], x), expected)
    save_file(
        {k: np.asarray(v, np.float32) for k, v in values.items()}, tmp_path / "bn.safetensors"
    )
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        yaml.safe_dump(
            {
                "steps": [
                    {"op": "batchnorm", "epsilon": 1e-3}
                    | {key: f"bn.safetensors:{key}" for key in values}
                ]
            }
        )
    )
    np.save(tmp_path / "x.npy", x.transpose(1, 2, 0))
    result = run("run", pipeline, tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    assert result.exit_code == 0, result.output
    assert_matches(np.load(tmp_path / "y.npy").transpose(2, 0, 1), expected)


@pytest.mark.parametrize(
    "steps, message",
    [
        ([{"op": "add", "inputs": ["image"]}], "step 1 (add): inputs: add reads 2 or more steps"),
        (["relu", {"op": "concat"}], "step 2 (concat): inputs: required"),
        ([{"op": "relu", "input": "later"}, {"op": "abs", "name": "later"}], "names no earlier"),
        ([{"op": "relu", "inputs": ["image", "image"]}], "relu reads one step, got 2"),
        ([{"op": "relu", "input": "image", "inputs": ["image"]}], "not both"),
        ([{"op": "relu", "name": "image"}], "names the pipeline's input"),
        ([{"op": "clip", "min": 6, "max": 0}], "step 1 (clip): min: "),
        ([{"op": "batchnorm", "mean": 0, "var": -1}], "step 1 (batchnorm): var: "),
        ([{"op": "batchnorm", "mean": [0, 1], "var": [1, 1, 1]}], "the same count for all"),
        ([{"op": "mul"}], "step 1 (mul): value: required"),
        (
            [
                {"op": "pool", "name": "p"},
                {"op": "relu", "input": "image"},
                {"op": "unpool", "indices": "p"},
            ],
            "step 3 (unpool): indices: pool step 'p' is not on the path",
        ),
    ],
)
def test_graph_mistakes_are_refused_before_any_image(steps, message):
    with pytest.raises(ParameterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_pipeline(steps, "p.yaml")


def test_joined_shapes_that_differ_are_one_error_line_naming_the_step(tmp_path, rgb_png):
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        yaml.safe_dump(
            {"steps": [{"op": "pool", "name": "half"}, {"op": "add", "inputs": ["half", "image"]}]}
        )
    )
    out = tmp_path / "out.png"
    line = refused(run("run", pipeline, rgb_png, "-o", out), 1, "step 2 (add)", "half gives 6x5x3")
    assert "image gives 12x10x3" in line and not out.exists()
    with pytest.raises(ShapeError, match="concat needs maps of one size"):
        run_steps(
            [{"op": "pool", "name": "h"}, {"op": "concat", "inputs": ["h", "image"]}],
            picture(0, 1, (4, 4)),
        )


def test_explain_traces_a_graph_with_the_largest_field_over_branches(tmp_path):
    steps = [
        {"op": "conv", "kernel": "box:size=7", "name": "wide"},
        {"op": "conv", "kernel": "box:size=3", "input": "image", "name": "narrow"},
        {"op": "concat", "inputs": ["narrow", "wide", "image"]},
        {"op": "add", "inputs": ["narrow", "image"]},
    ]
    rows = trace(parse_pipeline(steps), (16, 16, 2)).rows
    assert [row.output for row in rows] == [(16, 16, 2), (16, 16, 2), (16, 16, 6), (16, 16, 2)]
    assert [row.receptive_field[0].size for row in rows] == [7, 3, 7, 3]
    assert [row.params for row in rows] == [2 * 49, 2 * 9, 0, 0]  # depthwise, no bias
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump({"steps": steps}))
    result = run("explain", "--pipeline", pipeline, "--input", "16x16x2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["total"]["output"] == [16, 16, 2]
    mismatch = [{"op": "pool", "name": "p"}, {"op": "add", "inputs": ["image", "p"]}]
    assert "add needs maps of one shape" in trace(parse_pipeline(mismatch), (8, 8, 1)).error


def test_maps_no_later_step_reads_are_let_go():
    import gc
    import weakref

    steps = [
        {"op": "abs", "name": "a"},
        {"op": "tanh", "name": "b"},  # reads a: a's maps may go after this step
        {"op": "relu", "input": "b"},
        {"op": "add", "inputs": ["b", "image"]},
    ]
    made, alive = {}, {}

    def after(step, maps):
        made[step.number] = weakref.ref(maps.data)

    def before(step, maps):
        gc.collect()
        alive[step.number] = sorted(n for n, ref in made.items() if ref() is not None)

    x = picture(2, 1, (4, 4))
    parse_pipeline(steps).run(Maps(x, 1.0), before=before, after=after)
    assert alive == {1: [], 2: [1], 3: [2], 4: [2]}
