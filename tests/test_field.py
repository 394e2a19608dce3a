"""`explain --field R,C` and `--field-image`: the input window of one output unit, against a
brute-force gradient in PyTorch, drawn on the picture, and through the CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import read_pixels, refused, run
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from test_cli_explain import SCHEMA, errors
from test_startup import NO_NUMBA

from convcli.explain import parse_steps, trace
from convcli.explain.field import HATCH, MARK, PADDING, canvas_shape, draw_field, unit_field


def conv(k, s=1, d=1, pads=(0, 0, 0, 0)):
    """A one-channel torch convolution, random nonzero weights, explicit (top, bottom, left,
    right) pads."""
    weight = torch.from_numpy(
        np.random.default_rng(k * 100 + s * 10 + d).normal(size=(1, 1, k, k)) + 3.0
    )
    top, bottom, left, right = pads
    return lambda x: F.conv2d(F.pad(x, (left, right, top, bottom)), weight, stride=s, dilation=d)


def maxpool(k, s):
    return lambda x: F.max_pool2d(x, k, s)


#: (steps, torch layers with the pads written out by hand, input HxW, conv only: the gradient
#: fills the window)
STACKS = {
    "conv k3 s1": (["conv 1 k3 valid"], [conv(3)], (9, 11), True),
    "conv k3 s2 p1 twice": (
        ["conv 1 k3 s2 p1", "conv 1 k3 s2 p1"],
        [conv(3, 2, pads=(1, 1, 1, 1)), conv(3, 2, pads=(1, 1, 1, 1))],
        (13, 10),
        True,
    ),
    "maxpool k2 s2 after conv": (
        ["conv 1 k3 p1", "maxpool k2 s2"],
        [conv(3, pads=(1, 1, 1, 1)), maxpool(2, 2)],
        (10, 9),
        False,
    ),
    "dilation": (
        ["conv 1 k3 valid", "conv 1 k3 d2 valid"],
        [conv(3), conv(3, d=2)],
        (12, 12),
        True,
    ),
    # the window is the hull (Distill's RF): input row 0 of unit (1, C) is reached only through
    # the second layer's padding, so the gradient leaves it empty
    "dilation with padding between": (
        ["conv 1 k3 valid", "conv 1 k3 d2 p2"],
        [conv(3), conv(3, d=2, pads=(2, 2, 2, 2))],
        (12, 12),
        False,
    ),
    "dilation alone (holes)": (["conv 1 k3 d2 valid"], [conv(3, d=2)], (9, 9), False),
    # same on 10: k4 pads 3 = 1 + 2 (the odd pixel bottom/right);
    # k3 s2 pads (5-1)*2 + 3 - 10 = 1 = 0 + 1
    "same with odd totals": (
        ["conv 1 k4 same", "conv 1 k3 s2 same"],
        [conv(4, pads=(1, 2, 1, 2)), conv(3, 2, pads=(0, 1, 0, 1))],
        (10, 10),
        True,
    ),
}


def gradient_support(layers, hw, unit):
    """Rows x columns where d output[0, 0, R, C] / d input is nonzero (float64, random input)."""
    x = torch.from_numpy(np.random.default_rng(7).normal(size=(1, 1) + hw)).requires_grad_(True)
    y = x
    for layer in layers:
        y = layer(y)
    y[0, 0, unit[0], unit[1]].backward()
    return (x.grad[0, 0] != 0).numpy(), tuple(y.shape[2:])


def window_mask(field):
    """The unit's window within the image, as a boolean (H, W) mask."""
    mask = np.zeros((field.rows.size, field.cols.size), bool)
    if field.rows.inside and field.cols.inside:
        (r0, r1), (c0, c1) = field.rows.inside, field.cols.inside
        mask[r0 : r1 + 1, c0 : c1 + 1] = True
    return mask


@pytest.mark.parametrize("name", STACKS)
def test_the_window_holds_the_gradient_of_every_unit(name):
    steps, layers, hw, fills = STACKS[name]
    result = trace(hw + (1,), parse_steps(steps))
    out_hw = result.output[:2]
    rf = result.rows[-1].receptive_field
    for unit in [(0, 0), (out_hw[0] - 1, out_hw[1] - 1), (out_hw[0] // 2, 0), (1, out_hw[1] // 2)]:
        unit = (min(unit[0], out_hw[0] - 1), min(unit[1], out_hw[1] - 1))
        support, torch_hw = gradient_support(layers, hw, unit)
        assert torch_hw == out_hw
        field = unit_field(result, unit)
        inside = window_mask(field)
        assert support.any() and not (support & ~inside).any(), (unit, field)
        if fills:
            assert (support == inside).all(), (unit, field)
        # the trace's RF, jump and start columns: RF wide, centred on start + unit * jump
        for axis, span in enumerate((field.rows, field.cols)):
            assert span.last - span.first + 1 == rf[axis].size
            assert field.centre[axis] == rf[axis].start + unit[axis] * rf[axis].jump


@given(
    layers=st.lists(
        st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 2), st.integers(0, 2)),
        min_size=1,
        max_size=3,
    ),
    size=st.integers(12, 20),
    where=st.floats(0, 1),
)
def test_the_window_of_any_conv_stack_holds_the_gradient(layers, size, where):
    steps = [f"conv 1 k{k} s{s} d{d} p{min(p, k // 2)}" for k, s, d, p in layers]
    result = trace((size, size, 1), parse_steps(steps))
    if result.error:
        return
    unit = (int(where * (result.output[0] - 1)), int((1 - where) * (result.output[1] - 1)))
    torch_layers = [conv(k, s, d, (min(p, k // 2),) * 4) for k, s, d, p in layers]
    support, torch_hw = gradient_support(torch_layers, (size, size), unit)
    assert torch_hw == result.output[:2]
    field = unit_field(result, unit)
    assert not (support & ~window_mask(field)).any(), (steps, unit, field)
    rf = result.rows[-1].receptive_field
    assert field.rows.last - field.rows.first + 1 == rf[0].size
    assert field.centre == (rf[0].start + unit[0] * rf[0].jump, rf[1].start + unit[1] * rf[1].jump)


def test_a_global_pool_sees_the_whole_input_and_the_padding_before_it():
    field = unit_field(trace((6, 7, 3), parse_steps(["conv 4 k3 p1", "relu", "gap"])), (0, 0))
    assert (field.rows.first, field.rows.last, field.cols.first, field.cols.last) == (-1, 6, -1, 7)
    assert field.padding == (1, 1, 1, 1) and field.reach == (1, 1, 1, 1)


def test_a_unit_no_product_reaches_is_one_error():
    result = trace((4, 4, 1), parse_steps(["transposed 1 k1 s2 valid"]))
    assert unit_field(result, (0, 0)).rows[:2] == (0, 0)
    with pytest.raises(Exception, match=r"output unit \(1, 1\) depends on no input pixel"):
        unit_field(result, (1, 1))


def test_a_window_all_in_the_padding():
    field = unit_field(trace((3, 3, 1), parse_steps(["conv 1 k1 p2"])), (0, 0))
    assert (
        field.rows.inside is None and field.padding == (1, 0, 1, 0) and field.reach == (2, 2, 2, 2)
    )
    assert draw_field(np.zeros((3, 3, 3), np.uint8), field)[0, 0].tolist() == list(MARK)
    assert "nothing (the whole window is padding)" in "\n".join(field.lines())


# ---- the drawing ------------------------------------------------------------------------------


def background(shape):
    """The hatched padding of an empty canvas, as the drawing paints it."""
    rows, cols = np.indices(shape)
    return np.where(((rows + cols) % 6 == 0)[:, :, None], HATCH, PADDING)


@pytest.mark.parametrize(
    "name", ["conv k3 s2 p1 twice", "same with odd totals", "maxpool k2 s2 after conv"]
)
def test_the_drawing_tints_the_window_marks_the_centre_and_grows_by_the_padding(name):
    steps, layers, hw, fills = STACKS[name]
    result = trace(hw + (1,), parse_steps(steps))
    pixels = np.random.default_rng(3).integers(0, 120, hw + (1,), dtype=np.uint8).repeat(3, axis=2)
    for unit in [(0, 0), tuple(n - 1 for n in result.output[:2])]:
        field = unit_field(result, unit)
        top, bottom, left, right = field.reach
        canvas = draw_field(pixels, field)
        assert (
            canvas.shape
            == (hw[0] + top + bottom, hw[1] + left + right, 3)
            == canvas_shape(field) + (3,)
        )
        original = background(canvas.shape[:2]).astype(np.uint8)
        original[top : top + hw[0], left : left + hw[1]] = pixels
        window = np.zeros(canvas.shape[:2], bool)
        window[
            top + field.rows.first : top + field.rows.last + 1,
            left + field.cols.first : left + field.cols.last + 1,
        ] = True
        changed = (canvas != original).any(axis=2)
        assert (changed == window).all(), (unit, field)
        centre = [int(c) + offset for c, offset in zip(field.centre, (top, left))]
        assert canvas[centre[0], centre[1]].tolist() == list(MARK)
        if fills:  # the tinted part of the image is exactly where the gradient is nonzero
            support, _ = gradient_support(layers, hw, unit)
            assert (changed[top : top + hw[0], left : left + hw[1]] == support).all()


def test_the_canvas_grows_by_the_padding_of_the_stack():
    # two 3x3 s2 p1 convs on 13x10: unit 0 reads rows/columns from -3; the last unit (3, 2) reads
    # rows up to 15 (2 past row 12) and columns up to 11 (2 past column 9)
    result = trace((13, 10, 1), parse_steps(["conv 1 k3 s2 p1", "conv 1 k3 s2 p1"]))
    field = unit_field(result, (1, 1))
    assert field.reach == (3, 3, 3, 2) and canvas_shape(field) == (19, 15)
    assert (field.rows.first, field.rows.last, field.cols.first, field.cols.last) == (1, 7, 1, 7)


# ---- through the CLI --------------------------------------------------------------------------

STACK = ["conv 8 k3 s2 p1", "conv 8 k3 s2 p1"]


@pytest.fixture
def gray_png(tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 120, (13, 10), dtype=np.uint8)).save(path)
    return path


def test_field_prints_the_window_under_the_trace():
    result = run("explain", "--input", "13x10", *STACK, "--field", "0,2")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-3:] == [
        "field of output unit (0, 2) of the last step (4x3): input rows -3..3, columns 5..11 (7x7)",
        "  in the 13x10 image: rows 0..3, columns 5..9; "
        "in the padding: 3 rows above, 2 columns right",
        "  centre: row 0, column 8",
    ]


def test_field_in_json_follows_the_schema():
    result = run("explain", "--json", "--input", "13x10", *STACK, "--field", "3,0")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert errors(document, SCHEMA) == []
    assert document["field"] == {
        "unit": [3, 0],
        "output": [4, 3],
        "rows": [9, 15],
        "columns": [-3, 3],
        "size": [7, 7],
        "inside": {"rows": [9, 12], "columns": [0, 3]},
        "padding": [0, 3, 3, 0],
        "centre": [12.0, 0.0],
    }


@pytest.mark.parametrize("unit", ["4,0", "0,3", "9,9"])
def test_a_unit_outside_the_output_is_one_error_naming_its_shape(unit, gray_png, tmp_path):
    out = tmp_path / "field.png"
    result = run("explain", "--input", gray_png, *STACK, "--field", unit, "--field-image", out)
    refused(result, 1, f"--field {unit}", "4x3 output")
    assert result.stdout == "" and not out.exists()


def test_field_image_draws_on_the_input(gray_png, tmp_path):
    out = tmp_path / "field.png"
    result = run("explain", "--input", gray_png, *STACK, "--field", "1,1", "--field-image", out)
    assert result.exit_code == 0, result.output
    drawn = read_pixels(out)
    field = unit_field(trace((13, 10, 1), parse_steps(STACK)), (1, 1))
    pixels = read_pixels(gray_png)[:, :, None].repeat(3, axis=2)
    assert drawn.shape == (19, 15, 3) and (drawn == draw_field(pixels, field)).all()
    assert drawn[3 + 4, 3 + 4].tolist() == list(
        MARK
    )  # centre (4, 4), the canvas 3 rows and columns in
    assert (
        drawn[3 + 8 : 3 + 13, 3:13] == pixels[8:]
    ).all()  # rows 8.. lie outside the window: untouched


def test_field_image_of_a_npy_input_is_stretched(tmp_path):
    np.save(tmp_path / "x.npy", np.linspace(-5, 5, 36).reshape(6, 6))
    out = tmp_path / "field.bmp"
    result = run(
        "explain",
        "--input",
        tmp_path / "x.npy",
        "conv 1 k3 valid",
        "--field",
        "0,0",
        "--field-image",
        out,
    )
    assert result.exit_code == 0, result.output
    drawn = read_pixels(out)
    assert drawn.shape == (6, 6, 3) and drawn[5, 5].tolist() == [255] * 3
    assert drawn[5, 0].tolist() == [219] * 3  # 30/35 of the way from -5 to 5
    assert drawn[0, 0].tolist() == [
        128,
        70,
        0,
    ]  # -5 is black, tinted half and half with (255, 140, 0)


def test_field_image_follows_the_overwrite_rules(gray_png, tmp_path):
    out = tmp_path / "field.png"
    out.write_bytes(b"keep")
    args = ["explain", "--input", gray_png, *STACK, "--field", "0,0", "--field-image", out]
    refused(run(*args), 1, "exists (use --overwrite")
    assert out.read_bytes() == b"keep"
    assert run(*args, "--overwrite").exit_code == 0 and read_pixels(out).shape == (19, 15, 3)
    before = gray_png.read_bytes()
    refused(
        run(
            "explain",
            "--input",
            gray_png,
            *STACK,
            "--field",
            "0,0",
            "--field-image",
            gray_png,
            "--overwrite",
        ),
        1,
        "never overwrites an input",
    )
    assert gray_png.read_bytes() == before


def test_field_image_reads_pixels_within_the_limits(gray_png, tmp_path):
    out = tmp_path / "field.png"
    result = run(
        "explain",
        "--input",
        gray_png,
        *STACK,
        "--field",
        "0,0",
        "--field-image",
        out,
        env={"CONVCLI_MAX_PIXELS": "100"},
    )
    refused(result, 1, "over the limit of 100")
    assert not out.exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (
            ["--input", "13x10", *STACK, "--field-image", "f.png"],
            "--field-image draws the field of --field",
        ),
        (["--input", "13x10", *STACK, "--field", "0,0", "--field-image", "f.png"], "is not a file"),
        (["--input", "13x10", *STACK, "--overwrite"], "--overwrite applies to --by-hand"),
        (["--input", "13x10", *STACK, "--field", "0"], None),
        (["--by-hand", "--matrix", "1,2;3,4", "-k", "box", "--field", "0,0"], "--field"),
    ],
)
def test_field_usage_errors(args, fragment, tmp_path):
    result = run("explain", *args)
    if fragment is None:  # '0' is 0,0, as every pair option reads it
        assert result.exit_code == 0 and "unit (0, 0)" in result.stdout
        return
    refused(result, 2, fragment)


def test_field_image_needs_an_image_extension(gray_png, tmp_path):
    refused(
        run(
            "explain",
            "--input",
            gray_png,
            *STACK,
            "--field",
            "0,0",
            "--field-image",
            tmp_path / "f.npy",
        ),
        1,
        "must end in one of",
    )


def test_field_image_imports_no_numba(gray_png, tmp_path):
    args = [
        "explain",
        "--input",
        str(gray_png),
        *STACK,
        "--field",
        "0,0",
        "--field-image",
        str(tmp_path / "f.png"),
    ]
    proc = subprocess.run(
        [sys.executable, "-c", NO_NUMBA, *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "f.png").exists()
