"""``convcli.explain``: the step language, shape traces, receptive fields and by-hand work.

Expected numbers are computed by hand in this file (or by brute force), never by calling the
code under test a second time; by-hand results are checked against the engine.
"""

import math
import re
from dataclasses import replace

import naive
import numpy as np
import pytest
from conftest import assert_matches
from hypothesis import assume, given
from hypothesis import strategies as st
from PIL import Image

from convcli import engine, explain, geometry
from convcli.errors import InputError, ParameterError, ShapeError
from convcli.explain import SEED_IMAGE, drawing, parse_step, parse_steps, step_from_dict, trace
from convcli.explain.language import field_values
from convcli.geometry import ReceptiveField, Window

SEED_POOL = [[1, 3, 2, 0], [4, 6, 1, 2], [0, 2, 5, 3], [1, 2, 2, 4]]
VERTICAL_EDGE = [[1, 0, -1]] * 3


# ---- the step language ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, fields",
    [
        (
            "conv 64 k7 s2 p3 nobias",
            dict(
                kind="conv",
                filters=64,
                kernel=(7, 7),
                stride=(2, 2),
                padding=(3, 3, 3, 3),
                bias=False,
            ),
        ),
        (
            "conv 8 k3x5 s1,2 p1,2 d2 g2",
            dict(
                kernel=(3, 5),
                stride=(1, 2),
                padding=(1, 1, 2, 2),
                dilation=(2, 2),
                groups=2,
                bias=True,
            ),
        ),
        ("conv 8 k3", dict(padding="same")),  # conv steps default to same, as `convcli conv`
        ("Conv2D 8 k3 valid", dict(kind="conv", padding="valid")),
        ("conv 8 k2 p0,1,0,1", dict(padding=(0, 1, 0, 1))),
        ("dw k3 m2", dict(kind="depthwise", multiplier=2, filters=None)),
        ("pointwise 32 s2", dict(kind="pointwise", filters=32, kernel=(1, 1), stride=(2, 2))),
        ("sepconv 128 k3", dict(kind="separable", filters=128)),
        (
            "deconv 32 k3 s2 p1 op1",
            dict(kind="transposed", output_padding=(1, 1), padding=(1, 1, 1, 1)),
        ),
        ("conv_transpose 32 k2 s2", dict(kind="transposed", padding="same")),
        ("maxpool", dict(kind="maxpool", kernel=(2, 2), stride=(2, 2), padding="valid")),
        ("maxpool k3 s2 p1 d2 ceil", dict(stride=(2, 2), dilation=(2, 2), ceil_mode=True)),
        ("avgpool k3", dict(kind="avgpool", stride=(3, 3))),
        ("gap", dict(kind="globalavgpool")),
        ("unpool k2", dict(kind="unpool", stride=(2, 2))),
        ("relu", dict(kind="activation", function="relu")),
        ("act leaky_relu", dict(kind="activation", function="leakyrelu")),
        ("bn", dict(kind="batchnorm")),
        (
            "conv filters=16 kernel=3x3 stride=2 padding=same bias=off",
            dict(filters=16, stride=(2, 2), bias=False),
        ),
    ],
)
def test_parse_step(text, fields):
    step = parse_step(text)
    values = {"kind": step.kind, **field_values(step)}
    assert {key: values[key] for key in fields} == fields
    assert step.text == text and step.number == 1


@pytest.mark.parametrize(
    "text, spec",
    [
        (
            "conv 64 k7 s2 p3 nobias",
            {"op": "conv", "filters": 64, "kernel": 7, "stride": 2, "padding": 3, "bias": False},
        ),
        (
            "conv 8 k3x5 p1,2 d2",
            {"op": "conv", "filters": 8, "kernel": [3, 5], "padding": "1,2", "dilation": 2},
        ),
        (
            "transposed 32 k3 s2 p1 op1",
            {
                "op": "transposed",
                "filters": 32,
                "kernel": 3,
                "stride": 2,
                "padding": 1,
                "output_padding": 1,
            },
        ),
        (
            "maxpool k3 s2 p1 ceil",
            {"op": "maxpool", "kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True},
        ),
        ("act gelu", {"op": "activation", "function": "gelu"}),
        (
            "depthwise k3 m2 same",
            {"op": "depthwise", "kernel": "3x3", "multiplier": 2, "padding": "same"},
        ),
    ],
)
def test_dict_steps_equal_token_steps(text, spec):
    assert step_from_dict(spec, 5) == replace(parse_step(text, 5), text="")


@pytest.mark.parametrize(
    "text",
    [
        "conv 64 k7 s2 p3 nobias",
        "conv 8 k3x5 s1x2 p0,1,2,3 d2 g2",
        "depthwise k5 m3 valid",
        "pointwise 16 s2",
        "separable 32 k3 s2 full",
        "transposed 8 k4 s2 p1",
        "transposed 8 k3 s2 p1 op1 d2",
        "maxpool k3 s2 p1 ceil",
        "avgpool k2 same",
        "globalmaxpool",
        "unpool k2 s2 p1",
        "gelu",
        "batchnorm",
        "normalise",
    ],
)
def test_step_text_reads_back_as_the_same_step(text):
    step = parse_step(text)
    written = explain.step_text(step)
    assert parse_step(written) == replace(step, text=written)


@pytest.mark.parametrize(
    "text, token, fragment",
    [
        ("conv k3", None, "conv needs filters"),
        ("conv 64", None, "conv needs kernel"),
        ("conv 0 k3", "'0'", "filters must be at least 1"),
        ("conv 64 k0", "'k0'", "kernel must be at least 1"),
        ("conv 64 k3 s0", "'s0'", "stride must be at least 1"),
        ("conv 64 k3 k5", "'k5'", "repeats the kernel"),
        ("conv 64 k3 x7", None, "unknown token 'x7'"),
        ("conv 64 k3 ceil", "'ceil'", "conv takes no ceil mode"),
        ("conv 64 k3 p1,2,3", "'p1,2,3'", "is not valid, same, full"),
        ("conv 64 k3 bias=maybe", "'bias=maybe'", "bias must be on or off"),
        ("conv 64 k3 colour=red", "'colour=red'", "conv takes no colour"),
        ("depthwise 8 k3", "'8'", "depthwise takes no filters"),
        ("maxpool k2 g2", "'g2'", "maxpool takes no groups"),
        ("maxpool k2 p2", "'p2'", "more than half the window"),
        ("maxpool k3 full", "'full'", "pooling takes no padding 'full'"),
        ("maxpool k3 same ceil", "'same'", "ceil mode with padding 'same'"),
        ("avgpool k3 d2", "'d2'", "avgpool takes no dilation"),
        ("transposed 8 k3 s2 op2", "'op2'", "must be smaller than the stride"),
        ("transposed 8 k3 s2 same op1", "'op1'", "does not apply to padding 'same'"),
        ("transposed 8 k3 full", "'full'", "transposed takes padding same, valid, N or H,W"),
        ("transposed 8 k3 p0,1,0,1", "'p0,1,0,1'", "cropped from both sides"),
        ("unpool k2 same", "'same'", "unpool takes padding valid, N or H,W"),
        ("relu gelu", "'gelu'", "the activation is already relu"),
        ("act swish", "'swish'", "activation 'swish' is not one of"),
        ("pool k2", "'pool'", "step kind 'pool' is not one of conv,"),
    ],
)
def test_bad_steps_name_the_step_and_the_token(text, token, fragment):
    with pytest.raises(ParameterError) as caught:
        parse_step(text, 2)
    message = str(caught.value)
    assert message.startswith(f"step 2 {text!r}:") and fragment in message, message
    if token:
        assert f"token {token}:" in message, message
    assert "\n" not in message


def test_bad_dict_step_names_the_field():
    with pytest.raises(ParameterError, match=r"^step 3: field 'kernel': kernel must be at least 1"):
        step_from_dict({"op": "conv", "filters": 4, "kernel": 0}, 3)
    with pytest.raises(ParameterError, match=r"^step 1: expected a mapping"):
        step_from_dict(["conv"], 1)


def test_empty_step():
    with pytest.raises(ParameterError, match="step 4 is empty"):
        parse_step("  ", 4)


# ---- traces: shapes, parameters and multiply-adds against tables computed by hand ------------


def table(input_shape, steps):
    rows = trace(input_shape, parse_steps(steps)).rows
    return [(row.label, row.output, row.params, row.macs) for row in rows]


def test_resnet50_stem():
    rows = table((224, 224, 3), ["conv 64 k7 s2 p3 nobias", "bn", "relu", "maxpool k3 s2 p1"])
    assert rows == [
        ("1", (112, 112, 64), 7 * 7 * 3 * 64, 112 * 112 * 64 * 3 * 7 * 7),
        ("2", (112, 112, 64), 2 * 64, 0),
        ("3", (112, 112, 64), 0, 0),
        ("4", (56, 56, 64), 0, 0),
    ]
    assert rows[0][2:] == (9408, 118_013_952)


def test_resnet50_first_bottleneck_with_projection():
    # conv2_x block 1 on 56x56x64: 1x1 64, 3x3 64, 1x1 256 (no biases, as torchvision)
    rows = table(
        (56, 56, 64), ["pointwise 64 nobias", "conv 64 k3 p1 nobias", "pointwise 256 nobias"]
    )
    assert [r[2] for r in rows] == [64 * 64, 64 * 64 * 9, 64 * 256]
    assert [r[3] for r in rows] == [56 * 56 * 64 * 64, 56 * 56 * 64 * 64 * 9, 56 * 56 * 256 * 64]


def test_small_unet_encoder_decoder():
    steps = [
        "conv 16 k3 p1",
        "relu",
        "maxpool",  # 64 -> 32
        "conv 32 k3 p1",
        "relu",
        "maxpool",  # 32 -> 16
        "conv 64 k3 p1",
        "relu",  # bottleneck
        "transposed 32 k2 s2 valid",
        "conv 32 k3 p1",  # 16 -> 32
        "transposed 16 k2 s2 valid",
        "conv 16 k3 p1",  # 32 -> 64
        "pointwise 1",
    ]
    rows = {
        label: (output, params, macs) for label, output, params, macs in table((64, 64, 1), steps)
    }
    expected = {
        "1": ((64, 64, 16), 1 * 16 * 9 + 16, 64 * 64 * 16 * 1 * 9),
        "3": ((32, 32, 16), 0, 0),
        "4": ((32, 32, 32), 16 * 32 * 9 + 32, 32 * 32 * 32 * 16 * 9),
        "6": ((16, 16, 32), 0, 0),
        "7": ((16, 16, 64), 32 * 64 * 9 + 64, 16 * 16 * 64 * 32 * 9),
        # transposed: weights (C_in, C_out, kh, kw); MACs counted on the input side
        "9": ((32, 32, 32), 64 * 32 * 4 + 32, 16 * 16 * 64 * 32 * 4),
        "10": ((32, 32, 32), 32 * 32 * 9 + 32, 32 * 32 * 32 * 32 * 9),
        "11": ((64, 64, 16), 32 * 16 * 4 + 16, 32 * 32 * 32 * 16 * 4),
        "12": ((64, 64, 16), 16 * 16 * 9 + 16, 64 * 64 * 16 * 16 * 9),
        "13": ((64, 64, 1), 16 + 1, 64 * 64 * 16),
    }
    assert {label: rows[label] for label in expected} == expected
    result = trace((64, 64, 1), parse_steps(steps))
    assert result.params == sum(p for _, p, _ in rows.values()) and result.output == (64, 64, 1)
    assert result.macs == sum(m for _, _, m in rows.values())


def test_mobilenet_separable_block_is_two_rows():
    # Keras SeparableConv2D: depthwise without bias, then pointwise with bias
    rows = table((112, 112, 32), ["separable 64 k3 s2 same"])
    assert rows == [
        ("1a", (56, 56, 32), 32 * 9, 56 * 56 * 32 * 9),
        ("1b", (56, 56, 64), 32 * 64 + 64, 56 * 56 * 64 * 32),
    ]
    assert table((10, 10, 8), ["depthwise k3 m2 nobias"]) == [
        ("1", (10, 10, 16), 16 * 9, 10 * 10 * 16 * 9)
    ]


def test_keras_same_and_transposed_same():
    rows = table(
        (7, 7, 1), ["maxpool k2 same", "avgpool k3 s2 same", "transposed 4 k3 s2 same nobias"]
    )
    assert [r[1] for r in rows] == [(4, 4, 1), (2, 2, 1), (4, 4, 4)]  # ceil(7/2), ceil(4/2), 2*2


def test_global_pool_and_shape_kept():
    rows = table((7, 7, 512), ["gap", "relu"])
    assert [r[1] for r in rows] == [(1, 1, 512), (1, 1, 512)]


# ---- receptive fields ------------------------------------------------------------------------


def test_distill_worked_trace():
    rows = trace(
        (32, 32, 1),
        parse_steps(["conv 1 k3 s1 p1", "conv 1 k3 s2 p1", "maxpool k2 s2", "conv 1 k3 d2 p2"]),
    ).rows
    assert [row.output[0] for row in rows] == [32, 16, 8, 8]
    assert [row.receptive_field[0].size for row in rows] == [3, 5, 7, 23]
    assert [row.receptive_field[0].jump for row in rows] == [1, 2, 4, 4]
    assert [row.receptive_field[0].start for row in rows] == [0, 0, 1, 1]  # Distill c_0 = 1
    assert all(row.receptive_field[0] == row.receptive_field[1] for row in rows)


conv_windows = st.lists(
    st.builds(
        Window,
        st.integers(1, 5),
        st.integers(1, 3),
        st.integers(1, 3),
        st.integers(0, 3),
        st.just(False),
    ),
    max_size=6,
)


@given(conv_windows)
def test_receptive_field_equals_the_forward_recursion_without_transposed_layers(windows):
    field = ReceptiveField()
    for w in windows:
        field = geometry.receptive_field_step(field, w.kernel, w.stride, w.dilation, w.pad_before)
    assert geometry.receptive_field(windows) == field


def dependencies(layers, size):
    """Brute force: for each output unit of a 1-D stack, the input pixels it reads, and whether
    any layer on the way read padding (a border unit, where the hull convention does not apply)."""
    units = [({i}, False) for i in range(size)]
    for w in layers:
        reach = w.dilation * (w.kernel - 1)
        if w.transposed:
            out = (size - 1) * w.stride + reach + 1 - 2 * w.pad_before
            sources = [
                [
                    (o + w.pad_before - m * w.dilation) // w.stride
                    for m in range(w.kernel)
                    if (o + w.pad_before - m * w.dilation) % w.stride == 0
                ]
                for o in range(max(out, 0))
            ]
        else:
            out = (size + 2 * w.pad_before - reach - 1) // w.stride + 1
            sources = [
                [o * w.stride - w.pad_before + m * w.dilation for m in range(w.kernel)]
                for o in range(max(out, 0))
            ]
        units = [
            (
                set().union(*(units[i][0] for i in found if 0 <= i < size)),
                any(not 0 <= i < size or units[i][1] for i in found),
            )
            for found in sources
        ]
        size = out
    return units


layer = st.one_of(
    st.builds(
        Window,
        st.integers(1, 4),
        st.integers(1, 3),
        st.integers(1, 2),
        st.integers(0, 2),
        st.just(False),
    ),
    # transposed layers without dilation and with k >= s, so that every output receives a product
    st.integers(1, 3).flatmap(
        lambda s: st.builds(
            Window, st.integers(s, 4), st.just(s), st.just(1), st.integers(0, 1), st.just(True)
        )
    ),
)


@given(st.lists(layer, min_size=1, max_size=4))
def test_input_span_matches_brute_force_dependencies(layers):
    units = dependencies(layers, 40)
    inner = [(unit, found) for unit, (found, border) in enumerate(units) if not border]
    assume(inner)
    for unit, found in inner:
        assert geometry.input_span(layers, unit) == (min(found), max(found)), (unit, found)


def test_transposed_receptive_fields():
    # pool 2 then a 2x2 stride-2 up-convolution: each output sees one pooled unit = 2 pixels
    rows = trace((16, 16, 1), parse_steps(["maxpool", "transposed 1 k2 s2 valid"])).rows
    assert rows[1].receptive_field[0] == ReceptiveField(2, 1, 0.5)
    # a 3x3 stride-2 up-convolution of the input: odd outputs see two pixels, jump 1/2
    rows = trace((8, 8, 1), parse_steps(["transposed 1 k3 s2 p1 op1"])).rows
    assert rows[0].receptive_field[0].size == 2 and str(rows[0].receptive_field[0].jump) == "1/2"


# ---- the formula text is the computation ------------------------------------------------------


def evaluate(text):
    """Evaluate 'rows: floor((5 + 1 + 1 - 3) / 2) + 1 = 3 (...)': (expression value, stated
    result)."""
    text = re.sub(r"^(rows|cols): ", "", text)
    expression, _, stated = text.partition(" = ")
    value = eval(expression, {"floor": math.floor, "ceil": math.ceil, "__builtins__": {}})
    return value, int(stated.split()[0])


spatial_steps = st.one_of(
    st.builds(
        "conv 2 k{}x{} s{} d{} p{}".format,
        st.integers(1, 4),
        st.integers(1, 4),
        st.integers(1, 3),
        st.integers(1, 2),
        st.integers(0, 2),
    ),
    st.builds(
        "conv 2 k{} s{} {}".format,
        st.integers(1, 4),
        st.integers(1, 3),
        st.sampled_from(["same", "full"]),
    ),
    st.builds(
        "transposed 2 k{} s{} p{} op{}".format,
        st.integers(1, 4),
        st.integers(2, 3),
        st.integers(0, 1),
        st.integers(0, 1),
    ),
    st.builds("transposed 2 k{} s{} same".format, st.integers(1, 4), st.integers(1, 3)),
    st.builds(
        "maxpool k{} s{} p{} d{}{}".format,
        st.integers(2, 4),
        st.integers(1, 3),
        st.integers(0, 1),
        st.integers(1, 2),
        st.sampled_from(["", " ceil"]),
    ),
    st.builds("avgpool k{} s{} same".format, st.integers(1, 4), st.integers(1, 3)),
    st.builds("unpool k{} s{} p{}".format, st.integers(2, 3), st.integers(1, 3), st.integers(0, 1)),
)


@given(st.integers(6, 20), st.integers(6, 20), spatial_steps)
def test_arithmetic_text_evaluates_to_the_output_size(h, w, text):
    row = trace((h, w, 2), [parse_step(text)]).rows[0]
    assume(row.error is None)
    sizes = row.output[:2]
    lines = row.arithmetic if len(row.arithmetic) == 2 else row.arithmetic * 2
    for line, size in zip(lines, sizes):
        assert evaluate(line) == (size, size), line


# ---- warnings and error rows ------------------------------------------------------------------


def test_stride_that_does_not_fit_says_how_many_rows_are_dropped():
    row = trace((28, 29, 1), [parse_step("conv 8 k3 s3 valid")]).rows[0]
    # rows: (28 - 3) % 3 = 1 dropped; columns: (29 - 3) % 3 = 2 dropped
    assert row.warnings == (
        "stride 3 does not fit: the last row of the input is never read ((28 + 0 + 0 - 3) % 3 = 1)",
        "stride 3 does not fit: the last 2 columns of the input are never read "
        "((29 + 0 + 0 - 3) % 3 = 2)",
    )
    both = trace((8, 8, 1), [parse_step("conv 8 k3 s2 valid")]).rows[0]
    assert both.warnings == (
        "stride 2 does not fit: the last row and column of the input are never read "
        "((8 + 0 + 0 - 3) % 2 = 1)",
    )


def test_no_warning_when_only_padding_is_dropped():
    rows = trace((224, 224, 3), parse_steps(["conv 64 k7 s2 p3", "maxpool k3 s2 p1"])).rows
    assert [row.warnings for row in rows] == [(), ()]


def test_same_at_stride_two_warns_about_asymmetry():
    asymmetric = trace((6, 6, 1), [parse_step("conv 1 k3 s2 same")]).rows[0]
    assert asymmetric.padding == (0, 1, 0, 1) and len(asymmetric.warnings) == 1
    assert "pads top 0, bottom 1, left 0, right 1" in asymmetric.warnings[0]
    assert "PyTorch rejects padding='same' at stride > 1" in asymmetric.warnings[0]
    symmetric = trace((5, 5, 1), [parse_step("conv 1 k3 s2 same")]).rows[0]
    assert symmetric.padding == (1, 1, 1, 1) and symmetric.warnings == ()


def test_receptive_field_larger_than_the_image_is_warned_once():
    rows = trace((16, 16, 1), parse_steps(["conv 1 k3 p1"] * 10)).rows
    flagged = [row.label for row in rows if any("receptive field" in w for w in row.warnings)]
    assert flagged == ["8"]  # r = 1 + 2*8 = 17 > 16
    assert "(17x17) is larger than the 16x16 input" in rows[7].warnings[0]


def test_kernel_larger_than_its_input_is_an_error_row_and_the_trace_stops():
    result = trace((10, 10, 3), parse_steps(["conv 8 k3 s2 valid", "conv 8 k7 valid", "relu"]))
    assert [row.label for row in result.rows] == ["1", "2"]
    assert result.rows[1].output is None
    assert result.error == (
        "step 2 'conv 8 k7 valid': kernel 7x7 is larger than the padded input 4x4 "
        "(input 4x4, padding valid)"
    )
    dilated = trace((5, 5, 1), [parse_step("maxpool k3 d3 s1")])
    assert (
        "pooling window 3x3 (dilated to 7x7) is larger than the padded input 5x5" in dilated.error
    )


def test_groups_that_do_not_divide_are_an_error_row():
    result = trace((8, 8, 6), [parse_step("conv 8 k3 g4")])
    assert result.error == (
        "step 1 'conv 8 k3 g4': groups 4 must divide both the input channels (6) "
        "and the filters (8)"
    )


def test_transposed_padding_that_crops_everything_is_an_error_row():
    result = trace((1, 1, 1), [parse_step("transposed 1 k1 p1")])
    assert "crops away the whole transposed output" in result.error


# ---- cross-check with PyTorch layers: shapes and parameter counts ------------------------------


@given(
    h=st.integers(5, 16),
    w=st.integers(5, 16),
    c_in=st.sampled_from([2, 4]),
    c_out=st.sampled_from([2, 6]),
    k=st.integers(1, 4),
    s=st.integers(1, 3),
    d=st.integers(1, 2),
    p=st.integers(0, 2),
    groups=st.sampled_from([1, 2]),
    bias=st.booleans(),
    kind=st.sampled_from(["conv", "transposed", "maxpool", "avgpool", "ceilmax"]),
)
def test_shapes_and_params_equal_torch_layers(h, w, c_in, c_out, k, s, d, p, groups, bias, kind):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    if kind == "conv":
        text = f"conv {c_out} k{k} s{s} d{d} p{p} g{groups}"
        layer = nn.Conv2d(c_in, c_out, k, s, p, d, groups, bias)
    elif kind == "transposed":
        op = min(p, max(s, d) - 1)
        text = f"transposed {c_out} k{k} s{s} d{d} p{p} op{op} g{groups}"
        layer = nn.ConvTranspose2d(c_in, c_out, k, s, p, op, groups, bias, d)
    else:
        assume(k >= 2 and p <= k // 2)
        ceil, bias = kind == "ceilmax", True
        text = (
            f"{'avg' if kind == 'avgpool' else 'max'}pool k{k} s{s} p{p}{' ceil' if ceil else ''}"
        )
        layer = (
            nn.AvgPool2d(k, s, p, ceil)
            if kind == "avgpool"
            else nn.MaxPool2d(k, s, p, 1, False, ceil)
        )
    result = trace((h, w, c_in), [parse_step(text + ("" if bias else " nobias"))])
    try:
        expected = layer(torch.zeros(1, c_in, h, w)).shape
    except RuntimeError:
        assert result.error is not None
        return
    assert result.error is None, result.error
    assert result.rows[0].output == (expected[2], expected[3], expected[1])
    assert result.params == sum(t.numel() for t in layer.parameters())


# ---- input shapes from files, header only -----------------------------------------------------


@pytest.mark.parametrize(
    "mode, channels", [("L", 1), ("LA", 1), ("RGB", 3), ("RGBA", 3), ("P", 3), ("I;16", 1)]
)
def test_image_header_shape(tmp_path, mode, channels):
    path = tmp_path / "a.png"
    Image.new(mode, (7, 5)).save(path)
    assert explain.input_shape(str(path)) == (5, 7, channels)


def test_image_shape_follows_exif_rotation(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 30)).save(path, exif=exif)
    assert explain.input_shape(str(path)) == (40, 30, 3)


def test_image_pixels_are_not_decoded(tmp_path):
    path = tmp_path / "truncated.png"
    Image.new("RGB", (300, 200), "red").save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header survives, the pixels do not
    assert explain.input_shape(str(path)) == (200, 300, 3)


@pytest.mark.parametrize("shape, expected", [((6, 4), (6, 4, 1)), ((6, 4, 5), (6, 4, 5))])
def test_npy_header_shape(tmp_path, shape, expected):
    path = tmp_path / "a.npy"
    np.save(path, np.zeros(shape, np.float32))
    assert explain.input_shape(str(path)) == expected


@pytest.mark.parametrize("content, fragment", [(b"hello", "not an image"), (None, "expected real")])
def test_bad_input_files(tmp_path, content, fragment):
    if content is None:
        path = tmp_path / "bad.npy"
        np.save(path, np.zeros((2, 3, 4, 5)))
    else:
        path = tmp_path / "bad.png"
        path.write_bytes(content)
    with pytest.raises(InputError, match=fragment):
        explain.input_shape(str(path))


@pytest.mark.parametrize("text", ["224x224x0", "12x", "axb"])
def test_bad_shape_text(text):
    with pytest.raises((ParameterError, InputError)):
        explain.input_shape(text)


# ---- by hand ----------------------------------------------------------------------------------


def test_seed_example_by_hand():
    worked = explain.by_hand_conv(SEED_IMAGE, VERTICAL_EDGE)
    assert worked.output() == [[1, 3, -2], [-1, 0, 3], [-1, -1, 2]]
    first = worked.cell(0, 0)
    assert first.values == (1, 2, 0, 4, 1, 1, 0, 2, 3)
    assert first.products == (1, 0, 0, 4, 0, -1, 0, 0, -3) and first.total == 1
    text = explain.render_by_hand(worked, explain.default_cells(worked))
    assert "sum: 1 + 0 + 0 + 4 + 0 - 1 + 0 + 0 - 3 = 1" in text
    assert "sum: 2 + 0 - 1 + 1 + 0 + 0 + 2 + 0 - 1 = 3" in text  # cell (0, 1), the default second
    assert text.endswith("output (3x3):\n   1  3 -2\n  -1  0  3\n  -1 -1  2")


def test_seed_pooling_by_hand():
    assert explain.by_hand_pool(SEED_POOL, "max").output() == [[6, 2], [2, 5]]
    assert explain.by_hand_pool(SEED_POOL, "avg").output() == [[3.5, 1.25], [1.25, 3.5]]
    text = explain.render_by_hand(explain.by_hand_pool(SEED_POOL, "avg"), [(0, 1)])
    assert "(2 + 0 + 1 + 2) / 4 = 1.25" in text


def test_padding_is_marked_by_hand():
    worked = explain.by_hand_conv(SEED_IMAGE, VERTICAL_EDGE, padding=(1, 1, 1, 1), stride=(2, 2))
    cell = worked.cell(0, 0)
    assert cell.positions[0] == (-1, -1) and cell.values[:4] == (None, None, None, None)
    text = explain.render_by_hand(worked, [(0, 0)])
    assert "input with its padding (· marks padding cells):" in text
    assert "·0 ·0 ·0\n" in text and "window rows -1..1, columns -1..1" in text
    pooled = explain.render_by_hand(
        explain.by_hand_pool(SEED_POOL, "max", (3, 3), stride=(2, 2), padding=(1, 1, 1, 1)),
        [(0, 0)],
    )
    assert "max(1, 3, 4, 6; padding ignored) = 6" in pooled


def test_dilated_window_lists_its_rows():
    worked = explain.by_hand_conv(SEED_IMAGE, [[1, 1], [1, 1]], dilation=(2, 2))
    assert explain.render_by_hand(worked, [(0, 0)]).count("window rows 0, 2, columns 0, 2") == 1
    assert worked.cell(0, 0).total == 1 + 0 + 0 + 3


def test_scale_and_offset_as_conv_applies_them():
    worked = explain.by_hand_conv(SEED_IMAGE, [[1, 1], [1, 1]], scale=4, offset=10)
    assert worked.cell(0, 0).value == (1 + 2 + 4 + 1) / 4 + 10
    assert "/ scale 4 + offset 10 = 12" in explain.render_by_hand(worked, [(0, 0)])


def test_cells_outside_the_output_are_rejected():
    with pytest.raises(ParameterError, match="cell 3,0 is outside the 3x3 output"):
        explain.by_hand_conv(SEED_IMAGE, VERTICAL_EDGE).cell(3, 0)


def test_by_hand_errors():
    with pytest.raises(ShapeError, match="kernel 7x1 is larger than the padded input 5x5"):
        explain.by_hand_conv(SEED_IMAGE, [[1]] * 7)
    with pytest.raises(ParameterError, match="too large to work by hand"):
        explain.by_hand_conv(np.zeros((40, 3)).tolist(), [[1]])
    with pytest.raises(ParameterError, match="same number of values"):
        explain.parse_matrix("1,2;3")
    with pytest.raises(ParameterError, match="average pooling takes no dilation"):
        explain.by_hand_pool(SEED_POOL, "avg", dilation=(2, 2))


small = st.integers(1, 7).flatmap(
    lambda h: st.integers(1, 7).flatmap(
        lambda w: st.lists(
            st.lists(st.integers(-9, 9), min_size=w, max_size=w), min_size=h, max_size=h
        )
    )
)


@given(
    matrix=small,
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
    padding=st.sampled_from(["valid", "same", "full", (1, 0, 2, 1), (1, 1, 1, 1)]),
    seed=st.integers(0, 99),
)
def test_by_hand_conv_equals_the_engine(matrix, kernel, stride, dilation, padding, seed):
    weights = np.random.default_rng(seed).integers(-3, 4, kernel).astype(float).tolist()
    try:
        worked = explain.by_hand_conv(
            matrix, weights, stride=(stride, stride), padding=padding, dilation=(dilation, dilation)
        )
    except ShapeError:
        return
    image = np.array(matrix, np.float32)[None]
    expected = engine.conv2d(
        image,
        np.array(weights, np.float32),
        stride=(stride, stride),
        padding=padding,
        dilation=(dilation, dilation),
    )[0]
    assert_matches(worked.output(), expected)
    pads = geometry.resolve_padding(
        padding, image.shape[1:], kernel, (stride, stride), (dilation, dilation)
    )
    reference = naive.conv2d(
        image,
        np.array(weights)[None, None],
        stride=(stride, stride),
        pads=pads,
        dilation=(dilation, dilation),
    )[0]
    assert_matches(worked.output(), reference)


@given(
    matrix=small,
    mode=st.sampled_from(["max", "avg"]),
    size=st.integers(1, 3),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
    pad=st.integers(0, 1),
    same=st.booleans(),
    ceil=st.booleans(),
    include=st.booleans(),
)
def test_by_hand_pooling_equals_the_engine(
    matrix, mode, size, stride, dilation, pad, same, ceil, include
):
    dilation = dilation if mode == "max" else 1
    padding = "same" if same else (min(pad, size // 2),) * 4
    ceil = ceil and not same
    options = dict(stride=(stride, stride), padding=padding, ceil_mode=ceil)
    try:
        worked = explain.by_hand_pool(
            matrix,
            mode,
            (size, size),
            dilation=(dilation, dilation),
            count_include_pad=include,
            **options,
        )
    except ShapeError:
        return
    image = np.array(matrix, np.float32)[None]
    if mode == "max":
        expected = engine.max_pool2d(image, (size, size), dilation=(dilation, dilation), **options)
    else:
        expected = engine.avg_pool2d(image, (size, size), count_include_pad=include, **options)
    assert_matches(worked.output(), expected[0])


def test_seed_max_pool_routing_by_hand():
    # seeds: "in forward pass, store index that took the max; backprop gradient is the input
    # gradient at that index"; the tied 2s of window (0, 1) go to the first in row-major order
    worked = explain.by_hand_pool(SEED_POOL, "max")
    assert worked.indices() == [[5, 2], [9, 10]]
    assert worked.routed_ones() == [[0, 0, 1, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    text = explain.render_by_hand(worked, [(0, 1)])
    assert "max(2, 0, 1, 2) = 2; argmax input[0, 2], index 0*4 + 2 = 2" in text
    assert (
        "argmax indices (r*4 + c in the 4x4 input, as return_indices):\n   5  2\n   9 10\n" in text
    )
    assert (
        "(d sum / d input):\n  0 0 1 0\n  0 1 0 0\n  0 1 1 0\n  0 0 0 0\n\noutput (2x2):"
    ) in text


def test_overlapping_windows_count_their_wins():
    worked = explain.by_hand_pool(SEED_POOL, "max", (3, 3), stride=(1, 1), padding=(1, 1, 1, 1))
    assert worked.routed_ones()[1][1] == 9  # the 6 wins every window that holds it: all nine
    text = explain.render_by_hand(worked, [(0, 0)])
    assert "a cell that wins several windows receives one 1 from each" in text
    with pytest.raises(ParameterError, match="only max pooling routes"):
        explain.by_hand_pool(SEED_POOL, "avg").routed_ones()


@given(
    matrix=st.integers(1, 6).flatmap(
        lambda h: st.integers(1, 6).flatmap(
            lambda w: st.lists(
                st.lists(st.integers(-2, 2), min_size=w, max_size=w), min_size=h, max_size=h
            )
        )
    ),
    size=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
    pad=st.integers(0, 1),
    ceil=st.booleans(),
)
def test_max_pool_routing_equals_torch_autograd_unpool_and_naive(
    matrix, size, stride, dilation, pad, ceil
):
    torch = pytest.importorskip("torch")
    pads = (min(pad, size[0] // 2),) * 2 + (min(pad, size[1] // 2),) * 2
    options = dict(
        stride=(stride, stride), padding=pads, dilation=(dilation, dilation), ceil_mode=ceil
    )
    try:
        worked = explain.by_hand_pool(matrix, "max", size, **options)
    except ShapeError:
        assume(False)
    indices = worked.indices()
    assume(all(index is not None for row in indices for index in row))  # no window of only padding
    image = np.array(matrix, np.float32)[None]
    values, expected = engine.max_pool2d(image, size, return_indices=True, **options)
    assert indices == expected[0].tolist()
    assert (
        indices
        == naive.max_pool2d(image, size, (stride, stride), pads, (dilation, dilation), ceil)[1][
            0
        ].tolist()
    )
    x = torch.tensor(np.array(matrix, np.float64))[None, None].requires_grad_()
    torch.nn.functional.max_pool2d(
        x, size, stride, pads[0::2], dilation, ceil_mode=ceil
    ).sum().backward()
    routed = np.array(worked.routed_ones())
    assert routed.tolist() == x.grad[0, 0].numpy().tolist()
    unpooled = engine.max_unpool2d(np.ones_like(values), expected, image.shape[1:])[0]
    assert ((routed > 0) == (unpooled == 1)).all() and ((unpooled == 0) | (unpooled == 1)).all()
    if stride >= max(size) and dilation == 1:  # windows never overlap: each cell wins at most once
        assert routed.tolist() == unpooled.tolist()


def test_max_pool_frames_mark_the_argmax_and_the_routed_gradient():
    frames = explain.animation_frames(explain.by_hand_pool(SEED_POOL, "max"))
    try:
        assert len(frames) == 2 * 2 + 1
        winner = [int((np.asarray(frame) == drawing._WINNER).all(axis=2).sum()) for frame in frames]
        assert all(count > 0 for count in winner[:-1]) and winner[-1] == 0
    finally:
        for frame in frames:
            frame.close()


def test_frame_captions_write_the_current_cell_in_plain_characters():
    padded = explain.by_hand_conv(
        SEED_IMAGE, VERTICAL_EDGE, padding=(1, 1, 1, 1), scale=2, offset=1
    )
    assert drawing._frame_caption(padded, padded.cell(0, 0)) == (
        "output[0, 0] = 0*1 + 0*0 + 0*-1 + 0*1 + 1*0 + 2*-1 + 0*1 + 4*0 + 1*-1 = -3; / 2 + 1 = -0.5"
    )
    large = explain.by_hand_conv(np.arange(36).reshape(6, 6).tolist(), np.ones((5, 5)).tolist())
    assert drawing._frame_caption(large, large.cell(0, 0)) == (
        "output[0, 0] = 0*1 + 1*1 + 2*1 + 3*1 + ... + 27*1 + 28*1 = 350"
    )
    pooled = explain.by_hand_pool(SEED_POOL, "avg")
    assert (
        drawing._frame_caption(pooled, pooled.cell(1, 1))
        == "output[1, 1] = (5 + 3 + 2 + 4) / 4 = 3.5"
    )
    maxed = explain.by_hand_pool(SEED_POOL, "max")
    assert (
        drawing._frame_caption(maxed, maxed.cell(0, 1))
        == "output[0, 1] = max(2, 0, 1, 2) = 2 at input[0, 2]"
    )


def test_animation_frames():
    worked = explain.by_hand_conv(SEED_IMAGE, VERTICAL_EDGE, padding=(1, 1, 1, 1))
    frames = explain.animation_frames(worked)
    try:
        assert len(frames) == 5 * 5 + 1
        assert len({frame.size for frame in frames}) == 1
        assert frames[0].tobytes() != frames[1].tobytes()
    finally:
        for frame in frames:
            frame.close()


# ---- transposed convolution by hand --------------------------------------------------------


def torch_transposed(matrix, weights, stride, padding, output_padding, dilation):
    torch = pytest.importorskip("torch")
    x = torch.tensor(np.array(matrix, np.float64))[None, None]
    w = torch.tensor(np.array(weights, np.float64))[None, None]
    return torch.nn.functional.conv_transpose2d(
        x, w, stride=stride, padding=padding, output_padding=output_padding, dilation=dilation
    )[0, 0].numpy()


def test_the_seeds_up_convolution_doubles_the_size():
    # seeds: "transpose of a stride-2 conv -> doubles spatial dimensions"; each cell becomes
    # value x kernel
    up = explain.by_hand_transposed([[1, 2], [3, 4]], [[1, 2], [3, 4]], stride=(2, 2))
    assert up.output_hw == (4, 4)
    assert up.output() == [[1, 2, 2, 4], [3, 4, 6, 8], [3, 6, 4, 8], [9, 12, 12, 16]]
    assert up.direct().output() == up.output()
    assert up.arithmetic == ("(2 - 1)*2 - 2*0 + 1*(2 - 1) + 0 + 1 = 4",)


def test_transposed_views_by_hand():
    up = explain.by_hand_transposed(
        [[1, 2], [3, 4]],
        [[1, 2], [3, 4]],
        stride=(2, 2),
        padding=(1, 1, 1, 1),
        output_padding=(1, 1),
    )
    # full output 4x4 (above), padding 1 crops a row and a column each side, output padding adds
    # one back
    assert up.output() == [[4, 6, 8], [6, 4, 8], [12, 12, 16]]
    direct = up.direct()
    assert direct.image == ((1, 0, 2), (0, 0, 0), (3, 0, 4))  # spread by the stride
    assert direct.weights == ((4, 3), (2, 1))  # rotated 180 degrees
    assert direct.pads == (0, 1, 0, 1)  # d*(k-1) - p = 0, + output padding
    text = explain.render_transposed(up, [(0, 0)])
    assert "input[0, 1] = 2 adds to output rows -1..0, columns 1..2:" in text
    assert "output[0, 0] = input[0, 0] x kernel[1, 1]\n  = 1*4 = 4" in text
    assert "padded by d*(k - 1) - p: 1*(2 - 1) - 1 = 0 (bottom/right 1)" in text
    assert "  ·1 ·2 ·2 ·4\n  ·3  4  6  8\n" in text  # the cropped products marked
    assert text.endswith("output (3x3):\n   4  6  8\n   6  4  8\n  12 12 16")


@given(
    matrix=small,
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
    pad=st.integers(0, 3),
    same=st.booleans(),
    extra=st.integers(0, 2),
    seed=st.integers(0, 99),
)
def test_by_hand_transposed_equals_torch_the_engine_and_naive(
    matrix, kernel, stride, dilation, pad, same, extra, seed
):
    weights = np.random.default_rng(seed).integers(-3, 4, kernel).astype(float).tolist()
    options = dict(
        stride=(stride, stride), dilation=(dilation, dilation), output_padding=(extra, extra)
    )
    padding = "same" if same else (pad, pad)
    try:
        up = explain.by_hand_transposed(
            matrix, weights, padding="same" if same else (pad,) * 4, **options
        )
    except (ParameterError, ShapeError) as exc:
        with pytest.raises(
            type(exc), match=re.escape(str(exc))
        ):  # the rule conv --transpose applies
            engine.conv_transpose2d(
                np.array(matrix, np.float32)[None],
                np.array(weights, np.float32),
                padding=padding,
                **options,
            )
        return
    expected = naive.conv_transpose2d(
        np.array(matrix)[None], np.array(weights)[None, None], padding=padding, **options
    )[0]
    assert_matches(up.output(), expected)
    assert_matches(up.direct().output(), expected)
    assert_matches(
        up.output(),
        engine.conv_transpose2d(
            np.array(matrix, np.float32)[None],
            np.array(weights, np.float32),
            padding=padding,
            **options,
        )[0],
    )
    if not same:
        assert_matches(up.output(), torch_transposed(matrix, weights, padding=pad, **options))
    sizes = [
        int(re.search(r"= (-?[0-9]+)", text[text.rindex("=") :]).group(1)) for text in up.arithmetic
    ]
    assert sizes == list(up.output_hw[: len(sizes)])


def test_scatter_frames():
    up = explain.by_hand_transposed(
        [[1, 2, 0], [4, 1, 1]], VERTICAL_EDGE, stride=(2, 2), padding=(1, 1, 1, 1)
    )
    frames = explain.scatter_frames(up)
    try:
        assert len(frames) == 2 * 3 + 1  # one per input cell, then the output
        assert len({frame.size for frame in frames}) == 1
        assert len({frame.tobytes() for frame in frames}) == len(frames)
    finally:
        for frame in frames:
            frame.close()


# ---- several channels by hand --------------------------------------------------------------


def test_channels_sum_over_m_n_c():
    planes = explain.parse_planes("1|10, 2|20; 3|30, 4|40")
    assert planes == [[[1, 2], [3, 4]], [[10, 20], [30, 40]]]
    worked = explain.by_hand_channels(planes, [[[1, 0], [0, 1]], [[0, 1], [-1, 0]]])
    assert worked.output() == [[(1 + 4) + (20 - 30)]]
    text = explain.render_channels(worked, [(0, 0)])
    assert (
        "  sum over m, n, c: 5 - 10 = -5" in text
        and "2x2x2 input, 2x2x2 kernel (C_in x kh x kw)" in text
    )
    with pytest.raises(ParameterError, match="same number of |-separated channels"):
        explain.parse_planes("1|2, 3")
    with pytest.raises(ShapeError, match="the kernel has 1 input channels and the matrix 2"):
        explain.by_hand_channels(planes, [[[1]]])


@given(
    channels=st.integers(1, 3),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    k=st.integers(1, 3),
    stride=st.integers(1, 2),
    dilation=st.integers(1, 2),
    pad=st.integers(0, 2),
    seed=st.integers(0, 99),
)
def test_by_hand_channels_equals_torch_and_naive(channels, h, w, k, stride, dilation, pad, seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    x, weight = (
        rng.integers(-5, 6, (channels, h, w)).astype(float),
        rng.integers(-3, 4, (channels, k, k)).astype(float),
    )
    try:
        worked = explain.by_hand_channels(
            x.tolist(),
            weight.tolist(),
            stride=(stride, stride),
            padding=(pad,) * 4,
            dilation=(dilation, dilation),
        )
    except ShapeError:
        assume(False)
    expected = torch.nn.functional.conv2d(
        torch.tensor(x)[None],
        torch.tensor(weight)[None],
        stride=stride,
        padding=pad,
        dilation=dilation,
    )[0, 0].numpy()
    assert_matches(worked.output(), expected)
    assert_matches(
        worked.output(),
        naive.conv2d(
            x, weight[None], stride=(stride, stride), pads=(pad,) * 4, dilation=(dilation, dilation)
        )[0],
    )
