"""The Python API (``import convcli``): every function against the plain-loop references and
PyTorch, layouts and sizes as the command line takes them, the CLI's files and pipelines, and
errors that name parameters."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import naive
import numpy as np
import pytest
from conftest import assert_matches, run
from hypothesis import assume, given
from hypothesis import strategies as st
from PIL import Image

import convcli

ROOT = Path(__file__).parent.parent
SAMPLES = ROOT / "sample_images"
SOBEL_X = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]


def _pads(padding):
    """The (top, bottom, left, right) of an int, a pair or a word's placeholder."""
    if isinstance(padding, int):
        return (padding,) * 4
    if isinstance(padding, tuple) and len(padding) == 2:
        return (padding[0],) * 2 + (padding[1],) * 2
    return padding


def _pair(value):
    return (value, value) if isinstance(value, int) else value


def _chw(image):
    return np.asarray(image, np.float64).transpose(2, 0, 1)


sizes = st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3)))


# --------------------------------------------------------------------------------------------
# import convcli


LIGHT_IMPORT = textwrap.dedent("""
    import os, sys
    before = (os.getcwd(), dict(os.environ), sys.getrecursionlimit())
    import convcli
    heavy = sorted(m for m in ("numpy", "numba", "PIL", "click", "rich", "yaml", "convcli.api")
                   if m in sys.modules)
    assert not heavy, heavy
    assert (os.getcwd(), dict(os.environ), sys.getrecursionlimit()) == before
    assert {"conv2d", "Pipeline", "explain", "ParameterError"} <= set(dir(convcli))
    print(convcli.global_pool([[1, 2], [3, 4]]).tolist())
""")


def test_importing_convcli_loads_nothing_heavy_until_a_name_is_used():
    proc = subprocess.run(
        [sys.executable, "-c", LIGHT_IMPORT],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[2.5]"


def test_every_public_name_resolves_and_errors_are_the_family():
    for name in convcli.__all__:
        assert getattr(convcli, name) is not None
    assert issubclass(convcli.ParameterError, convcli.ConvcliError)
    assert convcli.ConvcliError is __import__("convcli.errors").errors.ConvcliError
    with pytest.raises(AttributeError):
        convcli.no_such_name  # noqa: B018
    from convcli import explain  # the package, which is also the API's explain

    assert explain.trace is not None
    assert explain((8, 8), ["maxpool"]).rows[0].output == (4, 4, 1)


# --------------------------------------------------------------------------------------------
# Convolutions


@given(
    hw=st.tuples(st.integers(3, 9), st.integers(3, 9)),
    channels=st.integers(1, 3),
    k=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=sizes,
    dilation=sizes,
    padding=st.one_of(
        st.sampled_from(["valid", "same", "full"]),
        st.integers(0, 2),
        st.tuples(st.integers(0, 2), st.integers(0, 2)),
        st.tuples(*[st.integers(0, 2)] * 4),
    ),
    mode=st.sampled_from(["zeros", "replicate", "symmetric"]),
    flip=st.booleans(),
    channels_first=st.booleans(),
    seed=st.integers(0, 999),
)
def test_conv2d_matches_naive(
    hw, channels, k, stride, dilation, padding, mode, flip, channels_first, seed
):
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((*hw, channels)).astype(np.float32)
    kernel = rng.standard_normal(k).astype(np.float32)
    s, d = _pair(stride), _pair(dilation)
    pads = naive.explicit_pads(_pads(padding), hw, k, s, d)
    assume(
        all(
            (n + a + b - (dd * (kk - 1) + 1)) >= 0
            for n, a, b, kk, dd in zip(hw, (pads[0], pads[2]), (pads[1], pads[3]), k, d)
        )
    )
    weight = np.broadcast_to((kernel[::-1, ::-1] if flip else kernel), (channels, 1, *k))
    expected = naive.conv2d(_chw(image), weight, None, s, pads, d, channels, mode)
    given_image = image.transpose(2, 0, 1) if channels_first else image
    out = convcli.conv2d(
        given_image,
        kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        pad_mode=mode,
        flip=flip,
        channels_first=channels_first,
    )
    assert_matches(out if channels_first else out.transpose(2, 0, 1), expected)


def test_conv2d_four_d_kernel_groups_and_bias_match_torch(rng):
    torch = pytest.importorskip("torch")
    image = rng.standard_normal((7, 8, 4)).astype(np.float32)
    weight = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(6).astype(np.float32)
    out = convcli.conv2d(image, weight, list(bias), stride=(1, 2), padding=1, groups=2)
    expected = torch.nn.functional.conv2d(
        torch.from_numpy(_chw(image).astype(np.float32))[None],
        torch.from_numpy(weight),
        torch.from_numpy(bias),
        (1, 2),
        1,
        groups=2,
    )[0].numpy()
    assert_matches(out.transpose(2, 0, 1), expected)


def test_a_two_d_image_gives_a_two_d_map_and_ints_equal_pairs(rng):
    image = rng.standard_normal((6, 7)).astype(np.float32)
    out = convcli.conv2d(image, SOBEL_X, stride=2, padding=1, dilation=1)
    assert out.shape == (3, 4)
    assert np.array_equal(
        out, convcli.conv2d(image, SOBEL_X, stride=(2, 2), padding=(1, 1, 1, 1), dilation=(1, 1))
    )
    assert_matches(
        out, naive.conv2d(image[None], np.array(SOBEL_X)[None, None], None, (2, 2), (1,) * 4)[0]
    )


def test_kernels_by_name_array_and_file_agree(tmp_path, rng):
    image = rng.standard_normal((5, 6, 2)).astype(np.float32)
    np.save(tmp_path / "k.npy", np.array(SOBEL_X, np.float32))
    assert convcli.load_kernel("sobel_x").tolist() == SOBEL_X
    assert convcli.load_kernel(tmp_path / "k.npy").tolist() == SOBEL_X
    assert convcli.load_kernel("box", size=2).tolist() == [[0.25] * 2] * 2
    assert np.array_equal(
        convcli.load_kernel("gaussian", sigma=2), convcli.load_kernel("gaussian:sigma=2")
    )
    by_array = convcli.conv2d(image, SOBEL_X, padding="same")
    for kernel in ("sobel_x", str(tmp_path / "k.npy"), tmp_path / "k.npy", np.array(SOBEL_X)):
        assert np.array_equal(convcli.conv2d(image, kernel, padding="same"), by_array)


def test_stacked_kernels_and_combine_match_the_reference(rng):
    image = rng.standard_normal((6, 6)).astype(np.float32)
    sobel_y = np.array(SOBEL_X).T
    maps = [
        naive.conv2d(image[None], np.array(k)[None, None], None, pads=(1,) * 4)[0]
        for k in (SOBEL_X, sobel_y)
    ]
    assert_matches(
        convcli.conv2d(image, ["sobel_x", "sobel_y"], padding="same"), np.stack(maps, axis=-1)
    )
    assert_matches(
        convcli.conv2d(image, ["sobel_x", "sobel_y"], padding=1, combine="magnitude"),
        np.hypot(*maps),
    )


@given(
    hw=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    k=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=sizes,
    dilation=sizes,
    padding=st.integers(0, 1),
    output_padding=st.integers(0, 2),
    seed=st.integers(0, 999),
)
def test_conv_transpose2d_matches_torch(hw, k, stride, dilation, padding, output_padding, seed):
    torch = pytest.importorskip("torch")
    s, d = _pair(stride), _pair(dilation)
    assume(all(output_padding < max(a, b) for a, b in zip(s, d)))
    assume(
        all(
            (n - 1) * a - 2 * padding + b * (kk - 1) + output_padding + 1 >= 1
            for n, a, b, kk in zip(hw, s, d, k)
        )
    )
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((*hw, 2)).astype(np.float32)
    weight = rng.standard_normal((2, 3, *k)).astype(np.float32)
    out = convcli.conv_transpose2d(
        image,
        weight,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
    )
    expected = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(_chw(image).astype(np.float32))[None],
        torch.from_numpy(weight),
        None,
        s,
        padding,
        output_padding,
        1,
        d,
    )[0].numpy()
    assert_matches(out.transpose(2, 0, 1), expected)


# --------------------------------------------------------------------------------------------
# Pooling


@given(
    hw=st.tuples(st.integers(2, 9), st.integers(2, 9)),
    size=st.integers(1, 3),
    stride=st.integers(1, 3),
    padding=st.integers(0, 1),
    dilation=st.integers(1, 2),
    ceil_mode=st.booleans(),
    seed=st.integers(0, 999),
)
def test_max_pool2d_and_unpool_match_torch(hw, size, stride, padding, dilation, ceil_mode, seed):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    assume(padding <= size // 2 and all(n + 2 * padding >= dilation * (size - 1) + 1 for n in hw))
    image = np.random.default_rng(seed).standard_normal((*hw, 2)).astype(np.float32)
    values, indices = convcli.max_pool2d(
        image, size, stride, padding, dilation, ceil_mode, return_indices=True
    )
    t_values, t_indices = F.max_pool2d(
        torch.from_numpy(_chw(image).astype(np.float32)),
        size,
        stride,
        padding,
        dilation,
        ceil_mode,
        return_indices=True,
    )
    assert_matches(values.transpose(2, 0, 1), t_values.numpy())
    assert np.array_equal(indices.transpose(2, 0, 1), t_indices.numpy())
    assert np.array_equal(
        values,
        convcli.max_pool2d(
            image, (size, size), (stride, stride), (padding,) * 4, (dilation,) * 2, ceil_mode
        ),
    )
    if dilation == 1 and not ceil_mode:
        expected = F.max_unpool2d(
            t_values, t_indices, size, stride, padding, output_size=hw
        ).numpy()
        unpooled = convcli.max_unpool2d(
            values, indices, hw, size=size, stride=stride, padding=padding
        )
        assert_matches(unpooled.transpose(2, 0, 1), expected)


def test_max_unpool2d_default_size_and_channels_first():
    values, indices = convcli.max_pool2d(
        np.arange(16.0).reshape(1, 4, 4), 2, return_indices=True, channels_first=True
    )
    out = convcli.max_unpool2d(values, indices, channels_first=True)
    assert_matches(out, naive.max_unpool2d(values, indices, (4, 4)))


@given(
    hw=st.tuples(st.integers(2, 9), st.integers(2, 9)),
    size=sizes,
    stride=st.one_of(st.none(), sizes),
    padding=st.integers(0, 1),
    ceil_mode=st.booleans(),
    count_include_pad=st.booleans(),
    seed=st.integers(0, 999),
)
def test_avg_pool2d_matches_naive(hw, size, stride, padding, ceil_mode, count_include_pad, seed):
    k = _pair(size)
    s = k if stride is None else _pair(stride)
    assume(padding <= min(k) // 2 and all(n + 2 * padding >= kk for n, kk in zip(hw, k)))
    image = np.random.default_rng(seed).standard_normal((*hw, 3)).astype(np.float32)
    out = convcli.avg_pool2d(image, size, stride, padding, ceil_mode, count_include_pad)
    expected = naive.avg_pool2d(_chw(image), k, s, (padding,) * 4, ceil_mode, count_include_pad)
    assert_matches(out.transpose(2, 0, 1), expected)


def test_global_pool_matches_torch(rng):
    torch = pytest.importorskip("torch")
    image = rng.standard_normal((5, 4, 3)).astype(np.float32)
    t = torch.from_numpy(_chw(image).astype(np.float32))
    assert_matches(
        convcli.global_pool(image), torch.nn.functional.adaptive_avg_pool2d(t, 1).numpy().ravel()
    )
    assert_matches(
        convcli.global_pool(image, "max"),
        torch.nn.functional.adaptive_max_pool2d(t, 1).numpy().ravel(),
    )
    assert_matches(
        convcli.global_pool(image.transpose(2, 0, 1), "max", channels_first=True),
        image.max(axis=(0, 1)),
    )


# --------------------------------------------------------------------------------------------
# Files: the CLI's bytes


def test_read_image_is_the_pixels_in_both_layouts():
    with Image.open(SAMPLES / "chelsea.png") as picture:
        pixels = np.asarray(picture.convert("RGB"))
    assert np.array_equal(convcli.read_image(SAMPLES / "chelsea.png"), pixels)
    assert np.array_equal(
        convcli.read_image(str(SAMPLES / "chelsea.png"), channels_first=True),
        pixels.transpose(2, 0, 1),
    )


@pytest.mark.parametrize(
    "name, cli_options, api_options",
    [
        ("box.png", ["-k", "box:size=3"], {"white": 255}),
        (
            "edges.png",
            ["-k", "sobel_x"],
            {"signed": True},
        ),  # --map auto: zero-sum maps around mid-grey
        (
            "edges16.png",
            ["-k", "sobel_x", "--map", "abs", "--depth", "16"],
            {"map_mode": "abs", "depth": 16},
        ),
        ("maps.npy", ["-k", "sobel_x"], {}),
        (
            "montage.png",
            ["-k", "sobel_x", "--montage", "--legend"],
            {
                "montage": True,
                "legend": True,
                "signed": True,
                "labels": [f"sobel_x[{i}]" for i in range(3)],
            },
        ),
    ],
)
def test_write_image_writes_the_cli_bytes(tmp_path, name, cli_options, api_options):
    source = SAMPLES / "chelsea.png"
    cli_out, api_out = tmp_path / f"cli_{name}", tmp_path / f"api_{name}"
    result = run("conv", source, *cli_options, "--padding", "same", "-o", cli_out)
    assert result.exit_code == 0, result.output
    maps = convcli.conv2d(convcli.read_image(source), cli_options[1], padding="same")
    convcli.write_image(api_out, maps, **api_options)
    assert api_out.read_bytes() == cli_out.read_bytes()


def test_write_image_refuses_bad_options_and_leaves_no_file(tmp_path):
    target = tmp_path / "x.png"
    with pytest.raises(convcli.ParameterError, match="^split and montage"):
        convcli.write_image(target, np.zeros((2, 2, 2)), split=True, montage=True)
    with pytest.raises(convcli.ShapeError, match="signed"):
        convcli.write_image(target, np.zeros((2, 2, 2)), signed=[True, False, True])
    assert not target.exists()
    convcli.write_image(target, np.zeros((2, 2), np.uint8))
    with pytest.raises(convcli.OutputError, match="exists"):
        convcli.write_image(target, np.ones((2, 2), np.uint8), overwrite=False)
    assert np.array_equal(np.asarray(Image.open(target)), np.zeros((2, 2)))


# --------------------------------------------------------------------------------------------
# Pipelines, explain, kernels, stats: what the commands compute


def test_pipeline_equals_convcli_run(tmp_path):
    source = SAMPLES / "chelsea.png"
    shutil.copytree(ROOT / "examples" / "kernels", tmp_path / "kernels")
    for example in ("blur_pool", "cnn_block", "unpool"):
        path = ROOT / "examples" / f"{example}.yaml"
        plain = tmp_path / f"{example}.yaml"  # as the file, without its output section
        plain.write_text(path.read_text().split("output:")[0])
        out = tmp_path / f"{example}.npy"
        result = run("run", plain, source, "-o", out, "--map", "none")
        assert result.exit_code == 0, result.output
        pipe = convcli.Pipeline.from_yaml(plain)
        assert np.array_equal(pipe(convcli.read_image(source)), np.load(out)), example
    text = convcli.Pipeline.from_yaml(
        "- gray\n- {op: conv, kernel: sobel_x, padding: valid}\n- abs\n"
    )
    gray = convcli.Pipeline(["gray"])(convcli.read_image(source))
    assert gray.ndim == 3 and gray.shape[2] == 1
    assert_matches(
        text(convcli.read_image(source))[..., 0],
        np.abs(naive.conv2d(gray[None, ..., 0], np.array(SOBEL_X)[None, None])[0]),
    )


def test_pipeline_output_options_write_the_run_bytes(tmp_path):
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        "steps:\n  - {op: conv, kernel: sobel_x}\noutput:\n  map: abs\n  colormap: magma\n"
    )
    result = run("run", pipeline, SAMPLES / "camera.png", "-o", tmp_path / "cli.png")
    assert result.exit_code == 0, result.output
    pipe = convcli.Pipeline.from_yaml(str(pipeline))
    convcli.write_image(
        tmp_path / "api.png",
        pipe(convcli.read_image(SAMPLES / "camera.png")),
        **pipe.output_options,
    )
    assert (tmp_path / "api.png").read_bytes() == (tmp_path / "cli.png").read_bytes()


def test_explain_is_the_trace_of_the_cli_as_data():
    steps = ["conv 64 k7 s2 p3 nobias", "maxpool k3 s2 p1"]
    trace = convcli.explain("224x224x3", steps)
    assert [(row.output, row.params, row.macs) for row in trace.rows] == [
        ((112, 112, 64), 7 * 7 * 3 * 64, 112 * 112 * 64 * 7 * 7 * 3),
        ((56, 56, 64), 0, 0),
    ]
    assert [row.receptive_field[0].size for row in trace.rows] == [7, 7 + 2 * 2]
    assert (
        convcli.explain(
            (224, 224, 3),
            [
                {
                    "op": "conv",
                    "filters": 64,
                    "kernel": 7,
                    "stride": 2,
                    "padding": 3,
                    "bias": False,
                },
                steps[1],
            ],
        ).rows
        == trace.rows
    )
    result = run("explain", "--json", "--input", "224x224x3", *steps)
    assert json.loads(result.stdout) == trace.to_dict()
    assert convcli.explain((224, 224, 3), steps[0]).rows == trace.rows[:1]
    assert convcli.explain((5, 5), ["conv 8 k7 valid"]).error.endswith(
        "padded input 5x5 (input 5x5, padding valid)"
    )


def test_explain_of_a_pipeline_equals_convcli_explain_pipeline():
    path = ROOT / "examples" / "cnn_block.yaml"
    traced = run("explain", "--json", "--pipeline", path, "--input", SAMPLES / "chelsea.png")
    trace = convcli.explain(SAMPLES / "chelsea.png", convcli.Pipeline.from_yaml(path))
    assert json.loads(traced.stdout)["steps"] == trace.to_dict()["steps"]


def test_kernel_info_and_stats_say_what_the_commands_print(tmp_path):
    shown = json.loads(run("kernels", "show", "gaussian:sigma=1.5", "--json").stdout)
    info = convcli.kernel_info("gaussian", sigma=1.5)
    assert (info["sum"], info["zero_sum"], info["separable"]) == (
        shown["sum"],
        shown["zero_sum"],
        shown["separable"],
    )
    assert convcli.kernel_info(SOBEL_X)["factors"] == ([1.0, 2.0, 1.0], [-1.0, 0.0, 1.0])
    image = np.random.default_rng(0).integers(0, 256, (9, 7, 2)).astype(np.uint8)
    rows = convcli.stats(image, percentiles=[10, 90])
    for channel, row in enumerate(rows):
        values = image[..., channel].astype(np.float64)
        assert (row["min"], row["max"]) == (values.min(), values.max())
        np.testing.assert_allclose(
            [row["mean"], row["std"], *row["percentiles"]],
            [values.mean(), values.std(), *np.percentile(values, [10, 90])],
        )


# --------------------------------------------------------------------------------------------
# Errors name the parameter


@pytest.mark.parametrize(
    "call, error, words",
    [
        (
            lambda x: convcli.conv2d(x, SOBEL_X, stride=0),
            convcli.ParameterError,
            "stride must be at least 1",
        ),
        (
            lambda x: convcli.conv2d(x, SOBEL_X, stride=1.5),
            convcli.ParameterError,
            "stride takes N or (rows, cols)",
        ),
        (
            lambda x: convcli.conv2d(x, SOBEL_X, padding="sam"),
            convcli.ParameterError,
            "did you mean 'same'",
        ),
        (
            lambda x: convcli.conv2d(x, SOBEL_X, pad_mode="mirror"),
            convcli.ParameterError,
            "pad_mode 'mirror'",
        ),
        (
            lambda x: convcli.conv2d(x, SOBEL_X, groups=2),
            convcli.ParameterError,
            "groups applies to 4-D kernels",
        ),
        (
            lambda x: convcli.conv2d(x, SOBEL_X, bias=float("nan")),
            convcli.ParameterError,
            "bias 'nan' must be finite",
        ),
        (
            lambda x: convcli.conv2d(x, "sobel_x", combine="magnitude"),
            convcli.ParameterError,
            "combine needs two",
        ),
        (lambda x: convcli.conv2d(x, [[1, 2], [3]]), convcli.KernelError, "rectangular"),
        (lambda x: convcli.conv2d(x, "sobl_x"), convcli.KernelError, "did you mean 'sobel_x'"),
        (
            lambda x: convcli.conv2d(x[None, None], SOBEL_X),
            convcli.ShapeError,
            "image must be (H, W) or (H, W, C)",
        ),
        (
            lambda x: convcli.conv_transpose2d(x, SOBEL_X, output_padding=-1),
            convcli.ParameterError,
            "output_padding must be at least 0",
        ),
        (lambda x: convcli.max_pool2d(x, (1, 2, 3)), convcli.ParameterError, "size takes N or H,W"),
        (lambda x: convcli.avg_pool2d(x, 2, stride=True), convcli.ParameterError, "stride takes N"),
        (
            lambda x: convcli.global_pool(x, "mean"),
            convcli.ParameterError,
            "mode 'mean' is not one of avg, max",
        ),
        (
            lambda x: convcli.max_unpool2d(x, x.astype(int), size=0),
            convcli.ParameterError,
            "size must be at least 1",
        ),
        (
            lambda x: convcli.load_kernel(x, size=3),
            convcli.ParameterError,
            "apply to a kernel name",
        ),
        (
            lambda x: convcli.read_image(SAMPLES / "camera.png", alpha="keep"),
            convcli.ParameterError,
            "alpha 'keep'",
        ),
        (lambda x: convcli.explain((0, 3), []), convcli.ParameterError, "sizes of at least 1"),
        (lambda x: convcli.explain((8, 8), [3]), convcli.ParameterError, "layers: step 1"),
        (lambda x: convcli.stats(x, percentiles=[101]), convcli.ParameterError, "percentiles"),
        (
            lambda x: convcli.Pipeline([{"op": "pool", "size": 0}]),
            convcli.ParameterError,
            "step 1 (pool): size",
        ),
    ],
)
def test_errors_name_the_parameter(call, error, words):
    with pytest.raises(error) as caught:
        call(np.ones((6, 6), np.float32))
    assert words in str(caught.value)
