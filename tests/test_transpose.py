"""conv_transpose2d against the scatter-add reference, as the adjoint of conv2d, and against
PyTorch."""

import contextlib
from unittest import mock

import naive
import numpy as np
import pytest
from conftest import assert_matches
from hypothesis import given
from hypothesis import strategies as st

from convcli import engine
from convcli.engine import scatter
from convcli.errors import ParameterError, ShapeError


@pytest.mark.parametrize(
    "stride, padding, output_padding, dilation, expected",
    [
        (2, 1, 1, 1, 10),
        (2, 0, 0, 1, 11),
        (1, 0, 0, 2, 9),
        (3, 1, 2, 1, 15),
        (2, 1, 1, 2, 12),
    ],
)
def test_torch_verified_sizes(stride, padding, output_padding, dilation, expected):
    out = engine.conv_transpose2d(
        np.zeros((1, 5, 5), np.float32),
        np.ones((3, 3), np.float32),
        stride=(stride,) * 2,
        padding=(padding,) * 2,
        output_padding=(output_padding,) * 2,
        dilation=(dilation,) * 2,
    )
    assert out.shape == (1, expected, expected)


def test_impulse_scatters_the_kernel_unrotated():
    impulse = np.zeros((1, 3, 3), np.float32)
    impulse[0, 1, 1] = 1
    kernel = np.arange(1, 10, dtype=np.float32).reshape(3, 3)
    assert np.array_equal(engine.conv_transpose2d(impulse, kernel, padding=(1, 1))[0], kernel)
    assert np.array_equal(
        engine.conv_transpose2d(impulse, kernel, padding=(1, 1), flip=True)[0], kernel[::-1, ::-1]
    )


def test_same_multiplies_the_size_by_the_stride():
    x = np.random.default_rng(0).standard_normal((3, 5, 7)).astype(np.float32)
    for k in (1, 2, 3, 4, 5):
        out = engine.conv_transpose2d(x, np.ones((k, k), np.float32), stride=(2, 3), padding="same")
        assert out.shape == (3, 10, 21)


def test_output_padding_rows_hold_only_the_bias():
    out = engine.conv_transpose2d(
        np.ones((1, 2, 2), np.float32),
        np.ones((2, 2), np.float32),
        [0.5],
        stride=(2, 2),
        output_padding=(1, 1),
    )
    assert out.shape == (1, 5, 5)
    assert (
        (out[0, 4] == 0.5).all() and (out[0, :, 4] == 0.5).all() and (out[0, :4, :4] == 1.5).all()
    )


def test_kernel_layouts():
    x = np.random.default_rng(1).standard_normal((4, 3, 3)).astype(np.float32)
    per_channel = engine.conv_transpose2d(x, np.ones((2, 2), np.float32), stride=(2, 2))
    assert_matches(
        per_channel, naive.conv_transpose2d(x, np.ones((4, 1, 2, 2)), stride=(2, 2), groups=4)
    )
    summed = engine.conv_transpose2d(x, np.ones((4, 2, 2), np.float32), [1.0])
    assert_matches(summed, naive.conv_transpose2d(x, np.ones((4, 1, 2, 2)), [1.0]))
    w = np.random.default_rng(2).standard_normal((4, 3, 2, 2)).astype(np.float32)
    assert engine.conv_transpose2d(x, w, groups=2).shape == (6, 4, 4)


@st.composite
def transpose_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    channels = groups * draw(st.integers(1, 2))
    height, width = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(st.one_of(st.just("same"), st.tuples(st.integers(0, 3), st.integers(0, 3))))
    output_padding = (
        (0, 0)
        if padding == "same"
        else tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.uniform(-1, 1, (channels, height, width)).astype(np.float32)
    w = rng.uniform(-1, 1, (channels, draw(st.integers(1, 2))) + k).astype(np.float32)
    bias = list(rng.uniform(-1, 1, w.shape[1] * groups)) if draw(st.booleans()) else None
    return x, w, bias, stride, padding, output_padding, dilation, groups


@given(
    transpose_cases(), st.sampled_from([None, "gemm", "spread", "numpy", "numba"]), st.booleans()
)
def test_conv_transpose2d_matches_naive(case, method, banded):
    x, w, bias, stride, padding, output_padding, dilation, groups = case
    expected_hw = [
        (n - 1) * s - 2 * p + d * (k - 1) + op + 1
        for n, s, p, d, k, op in zip(
            x.shape[1:],
            stride,
            (0, 0) if padding == "same" else padding,
            dilation,
            w.shape[2:],
            output_padding,
        )
    ]

    def call():
        with mock.patch.object(scatter, "BAND_BYTES", 1) if banded else contextlib.nullcontext():
            return engine.conv_transpose2d(
                x,
                w,
                bias,
                stride=stride,
                padding=padding,
                output_padding=output_padding,
                dilation=dilation,
                groups=groups,
                method=method,
            )

    if padding != "same" and min(expected_hw) < 1:
        with pytest.raises(ShapeError):
            call()
        return
    assert_matches(
        call(),
        naive.conv_transpose2d(x, w, bias, stride, padding, output_padding, dilation, groups),
    )


@pytest.mark.parametrize(
    "groups, stride, padding, output_padding",
    [(1, (2, 2), (1, 1), (1, 1)), (2, (3, 1), (0, 2), (2, 0))],
)
def test_small_work_with_many_channels_takes_the_matrix_product(
    groups, stride, padding, output_padding, rng
):
    x = rng.uniform(-1, 1, (16, 9, 7)).astype(np.float32)
    w = rng.uniform(-1, 1, (16, 3, 4, 3)).astype(np.float32)
    with (
        mock.patch.object(scatter, "_scatter_group", wraps=scatter._scatter_group) as spy,
        mock.patch.object(scatter, "BAND_BYTES", 4 * 3 * 12 * 7 * 2),
    ):  # bands of 2 input rows
        out = engine.conv_transpose2d(
            x,
            w,
            [0.5] * 3 * groups,
            stride=stride,
            padding=padding,
            output_padding=output_padding,
            groups=groups,
        )
    assert spy.call_count == groups
    assert_matches(
        out,
        naive.conv_transpose2d(
            x, w, [0.5] * 3 * groups, stride, padding, output_padding, (1, 1), groups
        ),
    )


def test_small_work_on_large_planes_takes_the_matrix_product(rng):
    """A depthwise 2x upsampling of an RGB image scatters each pixel (no spread-out input with
    three zeros in four)."""
    x = rng.uniform(-1, 1, (3, 130, 129)).astype(np.float32)
    w = rng.uniform(-1, 1, (3, 1, 3, 2)).astype(np.float32)
    with mock.patch.object(scatter, "_scatter_group", wraps=scatter._scatter_group) as spy:
        out = engine.conv_transpose2d(x, w, stride=(2, 2), padding=(1, 0), groups=3)
    assert spy.call_count == 3
    assert_matches(out, naive.conv_transpose2d(x, w, None, (2, 2), (1, 0), (0, 0), (1, 1), 3))


@given(transpose_cases())
def test_transpose_is_the_adjoint_of_conv(case):
    """<conv(x), y> == <x, conv_transpose(y)> with the same kernel, stride, padding, dilation,
    groups."""
    y, w, _, stride, padding, _, dilation, groups = case
    rng = np.random.default_rng(y.size)
    if padding == "same":  # Keras: the adjoint of TF SAME on an input stride times larger
        in_hw = (y.shape[1] * stride[0], y.shape[2] * stride[1])
        conv_padding, output_padding = "same", (0, 0)
    else:  # PyTorch: output_padding picks the conv input size among those giving y's size
        in_hw = tuple(
            (n - 1) * s - 2 * p + d * (k - 1) + 1
            for n, s, p, d, k in zip(y.shape[1:], stride, padding, dilation, w.shape[2:])
        )
        output_padding = tuple(rng.integers(0, s) for s in stride)
        in_hw = tuple(n + op for n, op in zip(in_hw, output_padding))
        conv_padding = (padding[0], padding[0], padding[1], padding[1])
        if min(in_hw) < 1:
            return
    x = rng.uniform(-1, 1, (w.shape[1] * groups,) + in_hw).astype(np.float32)
    forward = engine.conv2d(
        x, w, stride=stride, padding=conv_padding, dilation=dilation, groups=groups
    )
    assert forward.shape == y.shape
    backward = engine.conv_transpose2d(
        y,
        w,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
    )
    assert backward.shape == x.shape
    lhs = np.dot(forward.ravel().astype(np.float64), y.ravel().astype(np.float64))
    rhs = np.dot(x.ravel().astype(np.float64), backward.ravel().astype(np.float64))
    assert lhs == pytest.approx(rhs, rel=1e-4, abs=1e-3)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            dict(stride=(2, 2), output_padding=(2, 0)),
            ParameterError,
            "must be smaller than the stride",
        ),
        (dict(output_padding=(0, 1)), ParameterError, "output padding 0x1"),
        (
            dict(stride=(2, 2), padding="same", output_padding=(1, 1)),
            ParameterError,
            "does not apply to padding 'same'",
        ),
        (dict(padding="full"), ParameterError, "same, valid, N or H,W"),
        (dict(padding=(0, 1, 0, 0)), ParameterError, "cropped from both sides"),
        (dict(padding=(3, 3)), ShapeError, "crops away the whole transposed output"),
        (dict(stride=(0, 1)), ParameterError, "stride must be at least 1"),
        (dict(groups=2), ParameterError, "^groups applies to 4-D kernels"),
    ],
)
def test_rejects_bad_parameters(kwargs, error, message):
    with pytest.raises(error, match=message):
        engine.conv_transpose2d(
            np.ones((1, 2, 2), np.float32), np.ones((3, 3), np.float32), **kwargs
        )


def test_accepts_output_padding_below_the_dilation():
    out = engine.conv_transpose2d(
        np.ones((1, 2, 2), np.float32),
        np.ones((3, 3), np.float32),
        output_padding=(1, 1),
        dilation=(2, 2),
    )
    assert out.shape == (1, 7, 7)


def test_rejects_a_4d_kernel_for_other_channels():
    with pytest.raises(ShapeError, match="expects 2 input channels, the input has 3"):
        engine.conv_transpose2d(np.ones((3, 2, 2), np.float32), np.ones((2, 1, 3, 3), np.float32))


@pytest.fixture(scope="module")
def F():
    return pytest.importorskip("torch").nn.functional


@given(case=transpose_cases())
def test_conv_transpose2d_equals_torch(F, case):
    import torch

    x, w, bias, stride, padding, output_padding, dilation, groups = case
    if padding == "same":
        return
    b = None if bias is None else torch.tensor(bias, dtype=torch.float32)

    def call():
        return engine.conv_transpose2d(
            x,
            w,
            bias,
            stride=stride,
            padding=padding,
            output_padding=output_padding,
            dilation=dilation,
            groups=groups,
        )

    try:
        expected = F.conv_transpose2d(
            torch.from_numpy(x)[None],
            torch.from_numpy(w),
            b,
            stride,
            padding,
            output_padding,
            groups,
            dilation,
        )[0].numpy()
    except RuntimeError:
        expected = None
    if (
        expected is None or expected.size == 0
    ):  # torch rejects the shapes or returns nothing: we reject
        with pytest.raises(ShapeError):
            call()
        return
    np.testing.assert_allclose(call(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k, crop, padding", [(3, 0, 0), (4, 1, 1)])
def test_same_aligns_as_keras(F, k, crop, padding):
    """semantics.md 5.6: Keras 'same' at stride 2 keeps full[0:2i] for k=3 and equals torch p=1
    for k=4."""
    import torch

    x = np.random.default_rng(k).standard_normal((1, 5, 5)).astype(np.float32)
    w = np.random.default_rng(k + 1).standard_normal((1, 1, k, k)).astype(np.float32)
    full = F.conv_transpose2d(
        torch.from_numpy(x)[None], torch.from_numpy(w), stride=2, padding=padding
    )[0].numpy()
    expected = full[:, crop : crop + 10, crop : crop + 10] if padding == 0 else full
    assert_matches(engine.conv_transpose2d(x, w, stride=(2, 2), padding="same"), expected)


@pytest.mark.parametrize("method", [None, "gemm", "numpy", "numba"])
def test_a_crop_that_leaves_the_spread_input_no_rows(method):
    """One input row at stride 3, padding 1, output padding 2: the spread input is cropped
    away entirely and the output row is only where nothing lands (hypothesis found it)."""
    y = np.array([[[0.25, -0.5]]], np.float32)
    out = engine.conv_transpose2d(
        y,
        np.full((1, 1, 1, 1), 2.0, np.float32),
        stride=(3, 1),
        padding=(1, 0),
        output_padding=(2, 0),
        method=method,
    )
    expected = naive.conv_transpose2d(
        y, np.full((1, 1, 1, 1), 2.0, np.float32), None, (3, 1), (1, 0), (2, 0), (1, 1), 1
    )
    assert out.shape == (1, 1, 2)
    assert_matches(out, expected)


def test_every_phase_takes_the_whole_maps_method_and_a_full_rank_phase_no_two_passes():
    """By phases, the method of output cell (0, 0)'s phase serves every phase (a band of the
    map takes it too); a phase whose taps are not of rank 1 is not run as two passes, even
    where that phase's taps are."""
    rng = np.random.default_rng(12)
    weight = rng.normal(size=(1, 1, 14, 14)).astype(np.float32)
    weight[0, 0, ::2, ::2] = np.outer(rng.normal(size=7), rng.normal(size=7))  # rank 1
    x = rng.normal(size=(1, 200, 200)).astype(np.float32)
    with engine.repeated(1000):  # work past numpy's: the phase of (0, 0) goes in two passes
        method = scatter.spread_method(weight, 1, (2, 2), (1, 1), (0, 0), (412, 412))
        out = engine.conv_transpose2d(x, weight, stride=(2, 2))
    assert method == "separable"
    torch = pytest.importorskip("torch")
    expected = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(x)[None], torch.from_numpy(weight), stride=2
    )
    assert_matches(out, expected[0].numpy())
