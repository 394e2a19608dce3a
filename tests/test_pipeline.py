"""Pipelines as a library: checking a document, each op against the engine or numpy, tracing."""

import naive
import numpy as np
import pytest

from convcli import engine, explain
from convcli.errors import ConvcliError, KernelError, ParameterError, ShapeError
from convcli.pipeline import Maps, load_pipeline, make_step, parse_pipeline, trace

BAD = {  # name: (pipeline YAML, what the error says)
    "not a list": ("steps: 3", "p.yaml: steps: must be a list of at least one step"),
    "unknown top key": (
        "stpes: [relu]",
        "p.yaml: key 'stpes' is not one of steps, output, description (did you mean 'steps'?)",
    ),
    "unknown op": ("[relu, blur]", "p.yaml: step 2: op 'blur' is not one of conv, transposed"),
    "step not a mapping": (
        "[[relu]]",
        "p.yaml: step 1: expected an op name or a mapping with 'op'",
    ),
    "zero size": (
        "[gray, relu, {op: pool, size: 0}]",
        "p.yaml: step 3 (pool): size: must be at least 1, got 0",
    ),
    "float stride": (
        "[{op: conv, kernel: box, stride: 1.5}]",
        "p.yaml: step 1 (conv): stride: must be a whole number, got 1.5",
    ),
    "three strides": (
        "[{op: conv, kernel: box, stride: [1, 2, 3]}]",
        "stride: takes N or [rows, cols]",
    ),
    "bool as number": (
        "[{op: pool, size: true}]",
        "step 1 (pool): size: must be a whole number, got True",
    ),
    "unknown field": (
        "[{op: pool, kernel: 3}]",
        "p.yaml: step 1 (pool): field 'kernel' is not one of mode, "
        "size, stride, padding, dilation, ceil_mode, count_include_pad, name",
    ),
    "missing kernel": ("[{op: conv, stride: 2}]", "p.yaml: step 1 (conv): kernel: required"),
    "unknown kernel": (
        "[{op: conv, kernel: sobelx}]",
        "p.yaml: step 1 (conv): kernel: unknown kernel 'sobelx'; did you mean 'sobel_x'?",
    ),
    "bad pad mode": (
        "[{op: conv, kernel: box, pad_mode: mirror}]",
        "pad_mode: 'mirror' is not one of zeros, reflect, replicate, circular, symmetric",
    ),
    "bad padding word": (
        "[{op: conv, kernel: box, padding: half}]",
        "padding: 'half' is not one of valid, same, full",
    ),
    "negative padding": (
        "[{op: conv, kernel: box, padding: [1, -1]}]",
        "padding: must be at least 0, got -1",
    ),
    "flag not bool": (
        "[{op: conv, kernel: box, flip: 'yes please'}]",
        "flip: must be true or false",
    ),
    "bias not numbers": (
        "[{op: conv, kernel: box, bias: [1, x]}]",
        "bias: must be a finite number or a list",
    ),
    "groups of 2-D kernel": (
        "[{op: conv, kernel: box, groups: 2}]",
        "groups: applies to 4-D kernels; 'box' is 2-D",
    ),
    "pool padding too wide": (
        "[{op: pool, size: 3, padding: 2}]",
        "step 1 (pool): padding: pooling padding 2 is more than half the window 3x3",
    ),
    "avg with dilation": (
        "[{op: pool, mode: avg, dilation: 2}]",
        "step 1 (pool): dilation: does not apply to mode avg",
    ),
    "max with count_include_pad": (
        "[{op: pool, count_include_pad: false}]",
        "count_include_pad: does not apply to mode max",
    ),
    "bad mode": (
        "[{op: global_pool, mode: mean}]",
        "step 1 (global_pool): mode: 'mean' is not one of max, avg",
    ),
    "transposed full": (
        "[{op: transposed, kernel: box, padding: full}]",
        "step 1 (transposed): padding: transposed takes same, valid",
    ),
    "transposed output padding": (
        "[{op: transposed, kernel: box, stride: 2, padding: 1, output_padding: 2}]",
        "output_padding: must be smaller than the stride [2, 2]",
    ),
    "transposed pad mode": (
        "[{op: transposed, kernel: box, pad_mode: reflect}]",
        "field 'pad_mode' is not one of kernel,",
    ),
    "unpool without pool": (
        "[{op: unpool, indices: down}]",
        "step 1 (unpool): indices: names no earlier max pool step: 'down'",
    ),
    "unpool of avg pool": (
        "[{op: pool, mode: avg, name: down}, {op: unpool, indices: down}]",
        "step 2 (unpool): indices: names no earlier max pool step",
    ),
    "duplicate name": (
        "[{op: pool, name: a}, {op: relu, name: a}]",
        "step 2 (relu): name: 'a' already names step 1",
    ),
    "bad name": ("[{op: relu, name: 1st}]", "step 1 (relu): name: must be a name of letters"),
    "mean with minmax": (
        "[{op: normalise, mean: 0.5, std: 0.2}]",
        "step 1 (normalise): mean: applies to mode standard",
    ),
    "mean without std": ("[{op: normalise, mode: standard, mean: 0.5}]", "mean: needs std too"),
    "zero std": (
        "[{op: normalise, mode: standard, mean: 0, std: 0}]",
        "std: must be greater than 0, got 0",
    ),
    "negative channel": (
        "[{op: select, channels: [0, -1]}]",
        "step 1 (select): channels: must be at least 0, got -1",
    ),
    "slope on relu": (
        "[{op: relu, slope: 0.1}]",
        "step 1 (relu): field 'slope' is not one of name",
    ),
    "output option": (
        "{steps: [relu], output: {mapp: clip}}",
        "p.yaml: output: option 'mapp' is not one of map,",
    ),
    "output conflict": (
        "{steps: [relu], output: {split: true, montage: true}}",
        "p.yaml: output: split and montage exclude each other",
    ),
    "output depth": (
        "{steps: [relu], output: {depth: 12}}",
        "p.yaml: output: depth '12' is not one of 8, 16, 32f",
    ),
    "output map": (
        "{steps: [relu], output: {map: [clip]}}",
        "p.yaml: output: map: must be a word or a number",
    ),
}


@pytest.mark.parametrize("name", list(BAD))
def test_errors_name_the_file_step_and_field(name, tmp_path):
    text, expected = BAD[name]
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConvcliError) as caught:
        load_pipeline(str(path))
    message = str(caught.value).replace(str(path), "p.yaml")
    assert expected in message, message
    assert "\n" not in message


def test_unsafe_yaml_is_refused(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("steps:\n  - !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConvcliError, match="tag"):
        load_pipeline(str(path))


def test_kernel_files_are_relative_to_the_pipeline(tmp_path):
    (tmp_path / "k").mkdir()
    np.save(tmp_path / "k" / "w.npy", np.ones((2, 3, 1, 1), np.float32))
    (tmp_path / "p.yaml").write_text("[{op: conv, kernel: k/w.npy, padding: valid}]")
    step = load_pipeline(str(tmp_path / "p.yaml")).steps[0]
    assert step.params["kernel"][0].weights.shape == (2, 3, 1, 1)
    (tmp_path / "q.yaml").write_text("[{op: conv, kernel: k/none.npy}]")
    with pytest.raises(
        KernelError, match=r"step 1 \(conv\): kernel: kernel file .* does not exist"
    ):
        load_pipeline(str(tmp_path / "q.yaml"))


def picture(rng, channels=3, size=(9, 11)):
    return rng.integers(0, 256, (channels,) + size).astype(np.uint8)


def test_conv_options_reach_the_engine(rng):
    x = picture(rng)
    pipe = parse_pipeline(
        [
            {
                "op": "conv",
                "kernel": ["sobel_x", "box"],
                "stride": [2, 1],
                "padding": "valid",
                "dilation": 1,
                "flip": True,
                "bias": [1, 2, 3, 4, 5, 6],
                "pad_mode": "reflect",
            }
        ]
    )
    got = pipe.run(Maps(x, 255.0))
    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
    first = engine.conv2d(x, sobel, [1, 2, 3], stride=(2, 1), padding="valid", flip=True)
    assert got.data.shape[0] == 6 and np.array_equal(got.data[:3], first)
    assert got.labels == ("sobel_x[0]", "sobel_x[1]", "sobel_x[2]", "box[0]", "box[1]", "box[2]")


def test_stacked_kernels_of_different_sizes_are_refused_per_image(rng):
    pipe = parse_pipeline(
        [{"op": "conv", "kernel": ["sobel_x", "box:size=5"], "padding": "valid"}], "p.yaml"
    )
    with pytest.raises(
        ShapeError, match=r"step 1 \(conv\): kernel 'sobel_x' gives 7x9 maps, 'box' gives 5x7"
    ):
        pipe.run(Maps(picture(rng), 255.0))


def test_a_cnn_block_matches_the_naive_reference(rng, tmp_path):
    x = rng.standard_normal((2, 10, 12)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    np.save(tmp_path / "w.npy", w)
    doc = [
        {"op": "conv", "kernel": "w.npy", "bias": [0.5, -0.5, 0, 1], "stride": 1, "padding": 1},
        "relu",
        {"op": "pool", "size": 2},
    ]
    got = parse_pipeline(doc, folder=str(tmp_path)).run(Maps(x)).data
    y = np.maximum(
        naive.conv2d(x.astype(float), w.astype(float), pads=(1, 1, 1, 1), bias=[0.5, -0.5, 0, 1]), 0
    )
    expected = y.reshape(4, 5, 2, 6, 2).max(axis=(2, 4))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_transposed_pool_and_global_pool(rng):
    x = rng.standard_normal((1, 4, 4)).astype(np.float32)
    pipe = parse_pipeline(
        [
            {"op": "transposed", "kernel": "box:size=2", "stride": 2, "padding": "valid"},
            {
                "op": "pool",
                "mode": "avg",
                "size": 3,
                "stride": 2,
                "padding": 1,
                "count_include_pad": False,
                "ceil_mode": True,
            },
            {"op": "global_pool", "mode": "avg"},
        ]
    )
    up = engine.conv_transpose2d(
        x, np.full((2, 2), 0.25, np.float32), stride=(2, 2), padding="valid"
    )
    down = engine.avg_pool2d(up, (3, 3), (2, 2), (1, 1, 1, 1), True, False)
    assert np.array_equal(pipe.run(Maps(x)).data, engine.global_pool(down, "avg")[:, None, None])


def test_unpool_puts_maxima_back_in_an_odd_sized_plane():
    x = np.arange(25, dtype=np.float32).reshape(1, 5, 5)
    pipe = parse_pipeline(
        [{"op": "pool", "name": "down", "size": 2}, {"op": "unpool", "indices": "down"}]
    )
    out = pipe.run(Maps(x)).data
    assert out.shape == (1, 5, 5)  # the pooled input's size, not the default (2-1)*2+2 = 4
    kept = out != 0
    assert (
        np.array_equal(out[kept], x[kept])
        and out[0, 1, 1] == 6
        and out[0, 3, 3] == 18
        and kept.sum() == 4
    )


def test_activations_are_pytorchs():
    x = np.array([[[-1000.0, -2.0, 0.0, 3.0, 1000.0]]], np.float32)
    ops = {
        "relu": np.maximum(x, 0),
        "abs": np.abs(x),
        "tanh": np.tanh(x),
        "sigmoid": 1 / (1 + np.exp(-x.astype(np.float64).clip(-700, 700))),
        "leaky_relu": np.where(x >= 0, x, 0.01 * x),
    }
    for op, expected in ops.items():
        np.testing.assert_allclose(
            parse_pipeline([op]).run(Maps(x)).data, expected, rtol=1e-6, atol=1e-30, err_msg=op
        )
    leaky = parse_pipeline([{"op": "leaky_relu", "slope": 0.2}]).run(Maps(x)).data
    assert leaky[0, 0, :2].tolist() == [-200.0, pytest.approx(-0.4)]


def test_normalise_modes():
    x = np.stack(
        [np.arange(12, dtype=np.float32).reshape(3, 4), np.full((3, 4), 7, np.float32)]
    ).astype(np.uint8)
    minmax = parse_pipeline(["normalise"]).run(Maps(x, 255.0))
    assert minmax.white == 1.0 and minmax.data[0].min() == 0 and minmax.data[0].max() == 1
    assert (minmax.data[1] == 0).all()  # a flat channel becomes 0
    standard = parse_pipeline([{"op": "normalise", "mode": "standard"}]).run(Maps(x, 255.0)).data
    assert abs(standard[0].mean()) < 1e-6 and standard[0].std() == pytest.approx(1, rel=1e-5)
    fixed = parse_pipeline(
        [{"op": "normalise", "mode": "standard", "mean": [0.5, 0], "std": [0.25, 1]}]
    )
    got = fixed.run(Maps(x, 255.0)).data  # torchvision: Normalize(mean, std)(ToTensor()(image))
    np.testing.assert_allclose(got[0], (x[0] / 255 - 0.5) / 0.25, rtol=1e-6)
    with pytest.raises(ShapeError, match="mean has 2 values, the input has 1 channels"):
        fixed.run(Maps(x[:1], 255.0))


def test_gray_and_select(rng):
    x = picture(rng)
    got = parse_pipeline(["gray"]).run(Maps(x, 255.0)).data
    np.testing.assert_allclose(got[0], 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2], rtol=1e-5)
    picked = parse_pipeline([{"op": "select", "channels": [2, 0, 0]}]).run(Maps(x, 255.0))
    assert np.array_equal(picked.data, x[[2, 0, 0]]) and picked.labels == ("2", "0", "0")
    with pytest.raises(ShapeError, match="channel 3 does not exist: the input has 3 "):
        parse_pipeline([{"op": "select", "channels": 3}]).run(Maps(x, 255.0))


def test_signed_flags_follow_the_maps():
    """--map auto shows a map mid-grey when it is 0 on a flat input: zero-sum kernels, and
    linear steps on such maps; not after relu or abs."""
    x = np.full((1, 6, 6), 100, np.float32)
    edges = parse_pipeline(
        [{"op": "conv", "kernel": ["sobel_x", "box"]}, {"op": "conv", "kernel": "box"}]
    )
    assert edges.run(Maps(x, 255.0)).signed == (True, False)
    assert (
        parse_pipeline([{"op": "conv", "kernel": "sobel_x"}, "relu"]).run(Maps(x, 255.0)).signed
        is None
    )
    biased = parse_pipeline(
        [{"op": "conv", "kernel": "sobel_x"}, {"op": "conv", "kernel": "box", "bias": 1}]
    )
    assert biased.run(Maps(x, 255.0)).signed == (False,)


def test_make_step_fills_defaults():
    step = make_step("conv", kernel=())
    assert (step.params["padding"], step.params["pad_mode"], step.params["stride"]) == (
        "same",
        "zeros",
        (1, 1),
    )


def test_trace_uses_the_real_kernels_and_names_the_steps():
    pipe = parse_pipeline(
        [
            {"op": "conv", "kernel": "sobel_x", "stride": 2, "bias": 1},
            "gray",
            {"op": "pool", "name": "down", "size": 2},
            {"op": "unpool", "indices": "down"},
            {"op": "select", "channels": [0, 0, 0]},
        ]
    )
    result = trace(pipe, (9, 9, 3))
    assert result.error is None
    assert [row.output for row in result.rows] == [
        (5, 5, 3),
        (5, 5, 1),
        (2, 2, 1),
        (5, 5, 1),
        (5, 5, 3),
    ]
    assert (
        result.rows[0].params == 3 * 9 + 3 and result.rows[0].groups == 3
    )  # 2-D kernel: one per channel
    assert result.rows[3].text == "unpool: unpool k2 s2 p0 output_size=5,5"
    assert explain.Trace.to_dict(result)["steps"][1]["kind"] == "channels"


def test_trace_error_rows():
    pipe = parse_pipeline([{"op": "select", "channels": [0, 1]}, "gray"])
    result = trace(pipe, (8, 8, 3))
    assert result.rows[-1].error == "gray needs 1 or 3 channels, the input has 2"
    assert result.error.startswith("step 2 'gray': ")
    mixed = parse_pipeline([{"op": "conv", "kernel": ["sobel_x", "box:size=5"]}])
    assert "one size and channel layout" in trace(mixed, (8, 8, 1)).error
    too_small = parse_pipeline([{"op": "conv", "kernel": "box:size=7", "padding": "valid"}])
    assert "kernel 7x7 is larger than the padded input 5x5" in trace(too_small, (5, 5, 1)).error


def test_explain_step_language_takes_channels_and_output_size():
    steps = explain.parse_steps(["maxpool k2", "unpool k2 output_size=5,5", "channels 3"])
    result = explain.trace((5, 5, 2), steps)
    assert [row.output for row in result.rows] == [(2, 2, 2), (5, 5, 2), (5, 5, 3)]
    assert result.rows[1].arithmetic == ("(2 - 1)*2 - 2*0 + 2 = 4, output_size 5",)
    with pytest.raises(ParameterError, match="channels needs filters"):
        explain.parse_step("channels")


def test_the_schema_checks_a_pipeline_before_any_array_library_loads():
    """``schema`` is the part that reads files: checking steps that need no kernel imports neither
    numpy nor an image library (those load when ``execute`` and ``job`` run the steps)."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from convcli.pipeline.schema import parse_pipeline\n"
        "pipe = parse_pipeline(\n"
        "    ['gray', {'op': 'pool', 'size': 3, 'padding': 1}, 'relu'], 'p.yaml'\n"
        ")\n"
        "assert [s.op for s in pipe.steps] == ['gray', 'pool', 'relu']\n"
        "loaded = [m for m in ('numpy', 'numba', 'PIL') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


def test_output_settings_take_the_option_names_of_a_file_and_of_the_command_line():
    """A file's ``output`` section and the command line's output options build their settings with
    one function, by option name (``map_mode``, ``montage_grid``)."""
    from convcli.pipeline.output import output_settings

    section = parse_pipeline(
        {"steps": ["relu"], "output": {"map": "minmax", "montage_grid": "2x3"}}
    ).output
    settings = output_settings(**section)
    assert (settings.map, settings.grid) == ("minmax", output_settings(montage_grid="2x3").grid)
    with pytest.raises(ParameterError, match="^split and montage exclude each other"):
        output_settings(split=True, montage=True)
