"""conv2d against the plain-loop reference, hand-pinned semantics and bad input."""

import contextlib
from unittest import mock

import naive
import numpy as np
import pytest
from conftest import WITH_IMPORTS, assert_matches, python_process
from hypothesis import given, settings
from hypothesis import strategies as st

from convcli import engine, runtime
from convcli.engine import _jit, correlation
from convcli.errors import ParameterError, ShapeError

SEED_IMAGE = np.array(
    [[1, 2, 0, 1, 3], [4, 1, 1, 0, 2], [0, 2, 3, 1, 1], [1, 0, 2, 2, 0], [3, 1, 0, 1, 2]],
    np.float32,
)
VERTICAL_EDGE = np.array([[1, 0, -1]] * 3, np.float32)


def test_seed_worked_example_is_exact():
    out = engine.conv2d(SEED_IMAGE[None], VERTICAL_EDGE, padding="valid")
    assert out.tolist() == [[[1, 3, -2], [-1, 0, 3], [-1, -1, 2]]]


def test_impulse_pins_orientation():
    impulse = np.zeros((1, 5, 5), np.float32)
    impulse[0, 2, 2] = 1
    kernel = np.arange(1, 10, dtype=np.float32).reshape(3, 3)
    assert np.array_equal(engine.conv2d(impulse, kernel)[0, 1:4, 1:4], kernel[::-1, ::-1])
    assert np.array_equal(engine.conv2d(impulse, kernel, flip=True)[0, 1:4, 1:4], kernel)


def test_powers_of_two_kernel_catches_any_offset(rng):
    # Every tap has its own power of two, so a tap read from a wrong pixel changes the sum.
    x = rng.integers(0, 4, size=(2, 9, 8)).astype(np.float32)
    kernel = (2.0 ** np.arange(12)).reshape(3, 4).astype(np.float32)
    for stride, dilation in [((1, 1), (1, 1)), ((2, 3), (1, 1)), ((1, 2), (2, 1))]:
        out = engine.conv2d(x, kernel, stride=stride, dilation=dilation, padding=(1, 2, 0, 3))
        expected = naive.conv2d(
            x,
            np.broadcast_to(kernel, (2, 1, 3, 4)),
            stride=stride,
            pads=(1, 2, 0, 3),
            dilation=dilation,
            groups=2,
        )
        assert np.array_equal(out, expected)


def test_same_with_even_kernel_pads_bottom_right():
    x = np.zeros((1, 4, 4), np.float32)
    x[0, 3, 3] = 1  # bottom-right pixel
    out = engine.conv2d(x, np.ones((2, 2), np.float32))  # pads (0, 1, 0, 1)
    assert out.shape == (1, 4, 4)
    assert out[0, 3, 3] == 1 and out[0, 2, 2] == 1  # window at (3,3) sees padding below/right


def test_same_at_stride_two_follows_tensorflow():
    x = np.arange(36, dtype=np.float32).reshape(1, 6, 6)
    out = engine.conv2d(x, np.ones((3, 3), np.float32), stride=(2, 2))
    # TF pads (0, 1): the first window covers rows 0..2 and columns 0..2
    assert out.shape == (1, 3, 3)
    assert out[0, 0, 0] == x[0, :3, :3].sum()


def test_three_d_kernel_sums_over_channels(rng):
    x = rng.standard_normal((3, 6, 7)).astype(np.float32)
    k = rng.standard_normal((3, 3, 3)).astype(np.float32)
    out = engine.conv2d(x, k, padding="valid", bias=[0.5])
    assert_matches(out, naive.conv2d(x, k[None], bias=[0.5]))


def test_bias_per_output_channel(rng):
    x = rng.standard_normal((2, 5, 5)).astype(np.float32)
    k = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    out = engine.conv2d(x, k, bias=[1, 2, 3], padding="valid")
    assert_matches(out, naive.conv2d(x, k, bias=[1, 2, 3]))


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    kind = draw(st.sampled_from(["2d", "3d", "4d"]))
    channels = draw(st.integers(1, 3)) * (groups if kind == "4d" else 1)
    height, width = draw(st.integers(1, 14)), draw(st.integers(1, 9))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(
        st.one_of(
            st.sampled_from(["valid", "same", "full"]),
            st.tuples(*[st.integers(0, 4)] * 4),
        )
    )
    mode = draw(st.sampled_from(naive.PAD_MODES))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (channels, height, width)).astype(np.float32)
    if kind == "2d":
        kernel, groups = rng.uniform(-1, 1, (kh, kw)).astype(np.float32), 1
        weight, naive_groups = np.broadcast_to(kernel, (channels, 1, kh, kw)), channels
    elif kind == "3d":
        kernel, groups = rng.uniform(-1, 1, (channels, kh, kw)).astype(np.float32), 1
        weight, naive_groups = kernel[None], 1
    else:
        c_out = groups * draw(st.integers(1, 2))
        kernel = rng.uniform(-1, 1, (c_out, channels // groups, kh, kw)).astype(np.float32)
        weight, naive_groups = kernel, groups
    bias = draw(st.none() | st.just(list(rng.uniform(-1, 1, weight.shape[0]))))
    flip = draw(st.booleans())
    method = draw(st.sampled_from([None, "numpy", "gemm", "numba"]))
    return (
        x,
        kernel,
        weight,
        groups,
        naive_groups,
        stride,
        dilation,
        padding,
        mode,
        bias,
        flip,
        method,
    )


def one_row_bands():
    """Every output row its own band, so band edges and their padding are exercised, and every
    map its own chunk in the numpy method's depthwise loop."""
    return mock.patch.multiple(
        correlation, BAND_BYTES=1, NUMPY_BAND_BYTES=1, MIN_BAND_ROWS=1, TAP_CHUNK_VALUES=1
    )


@given(conv_cases(), st.booleans())
def test_conv2d_matches_naive(case, banded):
    x, kernel, weight, groups, naive_groups, stride, dilation, padding, mode, bias, flip, method = (
        case
    )
    k_hw = weight.shape[2:]
    pads = naive.explicit_pads(padding, x.shape[1:], k_hw, stride, dilation)
    h_out = (x.shape[1] + pads[0] + pads[1] - dilation[0] * (k_hw[0] - 1) - 1) // stride[0] + 1
    w_out = (x.shape[2] + pads[2] + pads[3] - dilation[1] * (k_hw[1] - 1) - 1) // stride[1] + 1
    bad_border = (
        mode == "reflect" and (max(pads[:2]) >= x.shape[1] or max(pads[2:]) >= x.shape[2])
    ) or (mode == "circular" and (max(pads[:2]) > x.shape[1] or max(pads[2:]) > x.shape[2]))

    def call():
        with one_row_bands() if banded else contextlib.nullcontext():
            return engine.conv2d(
                x,
                kernel,
                bias,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                pad_mode=mode,
                flip=flip,
                method=method,
            )

    if h_out < 1 or w_out < 1 or bad_border:
        with pytest.raises(ShapeError):
            call()
        return
    used = weight[:, :, ::-1, ::-1] if flip else weight
    assert_matches(call(), naive.conv2d(x, used, bias, stride, pads, dilation, naive_groups, mode))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(stride=(0, 1)), ParameterError),
        (dict(dilation=(1, 0)), ParameterError),
        (dict(padding="valid", dilation=(3, 3)), ShapeError),
        (dict(padding=(0, 0, 4, 4), pad_mode="reflect"), ShapeError),
        (dict(pad_mode="mirror"), ParameterError),
        (dict(padding="huge"), ParameterError),
    ],
)
def test_rejects_bad_parameters(kwargs, error):
    with pytest.raises(error):
        engine.conv2d(np.ones((1, 4, 4), np.float32), np.ones((3, 3), np.float32), **kwargs)


def test_rejects_groups_that_do_not_divide():
    with pytest.raises(ParameterError, match="groups 2 must divide"):
        engine.conv2d(np.ones((3, 4, 4), np.float32), np.ones((2, 1, 3, 3), np.float32), groups=2)


def test_rejects_kernel_channel_mismatch():
    with pytest.raises(ShapeError, match="expects 2 input channels"):
        engine.conv2d(np.ones((3, 4, 4), np.float32), np.ones((2, 3, 3), np.float32))


def test_names_shapes_when_kernel_is_too_large():
    with pytest.raises(ShapeError, match=r"kernel 5x5 is larger than the padded input 3x3"):
        engine.conv2d(np.ones((1, 3, 3), np.float32), np.ones((5, 5), np.float32), padding="valid")


def test_tiny_inputs():
    one = np.full((1, 1, 1), 2.0, np.float32)
    assert engine.conv2d(one, np.full((1, 1), 3.0, np.float32)).tolist() == [[[6.0]]]
    assert engine.conv2d(one, np.ones((3, 3), np.float32)).tolist() == [[[2.0]]]  # same pads 1


@given(
    hw=st.tuples(st.integers(1, 16), st.integers(1, 12)),
    k=st.tuples(st.integers(1, 8), st.integers(1, 8)),
    stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    mode=st.sampled_from(naive.PAD_MODES),
    banded=st.booleans(),
    seed=st.integers(0, 2**16),
    method=st.sampled_from(["separable", "numpy"]),
)
def test_separable_method_matches_naive(hw, k, stride, dilation, mode, banded, seed, method):
    """Kernels of rank 1 as two passes: the separable method, and the numpy method's passes
    (here on channels of any size), each checked to have run as passes."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (2,) + hw).astype(np.float32)
    kernel = np.outer(rng.uniform(-1, 1, k[0]), rng.uniform(-1, 1, k[1])).astype(np.float32)
    pads = (k[0] // 2, k[0] // 2, k[1] // 2, k[1] // 2)
    if (
        mode == "reflect"
        and (pads[0] >= hw[0] or pads[2] >= hw[1])
        or mode == "circular"
        and (pads[0] > hw[0] or pads[2] > hw[1])
    ):
        return
    if any(n + 2 * (kk // 2) < d * (kk - 1) + 1 for n, kk, d in zip(hw, k, dilation)):
        return  # the dilated kernel does not fit: covered by the shape tests
    expected = naive.conv2d(
        x, np.broadcast_to(kernel, (2, 1) + k), None, stride, pads, dilation, 2, mode
    )
    with (
        one_row_bands() if banded else contextlib.nullcontext(),
        mock.patch.object(correlation, "CHANNEL_BY_CHANNEL_PIXELS", 1),
        mock.patch.object(correlation, "_separable", wraps=correlation._separable) as passes,
        mock.patch.object(_jit, "separable_padding", wraps=_jit.separable_padding) as padding,
    ):
        out = engine.conv2d(
            x,
            kernel,
            stride=stride,
            padding=pads,
            dilation=dilation,
            pad_mode=mode,
            method=method,
        )
    assert_matches(out, expected)
    as_passes = passes.called or padding.called
    assert as_passes == (method == "separable" or min(k) > 1)


@given(
    hw=st.tuples(st.integers(1, 13), st.integers(1, 13)),
    channels=st.integers(1, 5),
    maps=st.integers(8, 11),  # 16 lanes take 8 maps a pass
    groups=st.sampled_from([1, 2]),
    pads=st.tuples(*[st.integers(0, 2)] * 4),
    mode=st.sampled_from(naive.PAD_MODES),
    seed=st.integers(0, 2**16),
)
def test_winograd_method_matches_naive(hw, channels, maps, groups, pads, mode, seed):
    """Winograd's F(2x2, 3x3), with any border, odd sizes (blocks past the edge) and groups."""
    rng = np.random.default_rng(seed)
    if any(n + a + b < 3 for n, a, b in zip(hw, pads[::2], pads[1::2])):
        return  # the kernel does not fit: covered by the shape tests
    if mode == "reflect" and max(pads) >= min(hw) or mode == "circular" and max(pads) > min(hw):
        return
    x = rng.uniform(-1, 1, (channels * groups,) + hw).astype(np.float32)
    weight = rng.uniform(-1, 1, (maps * groups, channels, 3, 3)).astype(np.float32)
    out = engine.conv2d(x, weight, padding=pads, groups=groups, pad_mode=mode, method="winograd")
    assert_matches(out, naive.conv2d(x, weight, None, (1, 1), pads, (1, 1), groups, mode))


def test_winograd_keeps_nan_and_infinity_where_direct_sums_put_them(rng):
    """An output whose window holds a NaN or an infinity is the direct sum's (the transforms
    would make inf - inf NaN); the others are Winograd's, untouched by them."""
    x = rng.normal(size=(4, 10, 9)).astype(np.float32)
    x[1, 3, 4], x[2, 7, 1], x[0, 0, 8] = np.inf, np.nan, -np.inf
    weight = rng.normal(size=(8, 4, 3, 3)).astype(np.float32)
    out = engine.conv2d(x, weight, padding="same", method="winograd")
    expected = naive.conv2d(x, weight, pads=(1, 1, 1, 1))
    assert np.array_equal(np.isnan(out), np.isnan(expected))
    assert np.array_equal(np.isposinf(out), np.isposinf(expected))
    assert np.array_equal(np.isneginf(out), np.isneginf(expected))
    finite = np.isfinite(expected)
    assert_matches(out[finite], expected[finite])


@pytest.mark.parametrize("first", [0, 1, 5])
def test_winograd_band_gives_the_whole_maps_bytes(first):
    """A band from an odd row of its map (``runtime.band_of``) starts its blocks of two rows
    where the whole map's start: its rows are the whole map's, byte for byte."""
    rng = np.random.default_rng(first)
    x = rng.normal(size=(3, 15, 11)).astype(np.float32)
    weight = rng.normal(size=(8, 3, 3, 3)).astype(np.float32)
    whole = engine.conv2d(x, weight, padding=(1, 1, 1, 1), method="winograd")
    last = first + 7
    rows = x[:, max(0, first - 1) : last + 1]  # the input rows the band's outputs read
    pads = (1 if first == 0 else 0, 0, 1, 1)
    with runtime.band_of(15, first_row=first):
        band = engine.conv2d(rows, weight, padding=pads, method="winograd")
    assert band.tobytes() == whole[:, first:last].tobytes()


def test_winograd_takes_wide_dense_3x3_layers_only():
    layer = np.ones((64, 64, 3, 3), np.float32)
    assert correlation.choose_method(layer, 1, (256, 256)) == "winograd"
    assert correlation.choose_method(layer, 1, (256, 256), stride=(2, 2)) != "winograd"
    assert correlation.choose_method(layer[:32, :32], 1, (1024, 1024)) == "winograd"
    assert correlation.choose_method(layer[:16, :16], 1, (1024, 1024)) == "numba"
    assert correlation.choose_method(np.ones((64, 64, 5, 5), np.float32), 1, (256, 256)) != (
        "winograd"
    )
    with pytest.raises(ValueError, match="winograd method needs 3x3 kernels"):
        engine.conv2d(np.ones((2, 8, 8), np.float32), np.ones((8, 2, 5, 5)), method="winograd")


def centred_pads(hw, k, dilation, mode):
    """The pads that keep the size of ``hw`` for a (dilated) ``k`` kernel at stride 1, the
    extra one bottom/right; None where the border ``mode`` cannot make them."""
    pads = tuple(
        p
        for kk, d in zip(k, dilation)
        for p in (d * (kk - 1) // 2, d * (kk - 1) - d * (kk - 1) // 2)
    )
    if (
        mode == "reflect"
        and (max(pads[:2]) >= hw[0] or max(pads[2:]) >= hw[1])
        or mode == "circular"
        and (max(pads[:2]) > hw[0] or max(pads[2:]) > hw[1])
    ):
        return None
    return pads


@given(
    hw=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    k=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    dilation=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    multiplier=st.integers(1, 2),
    mode=st.sampled_from(naive.PAD_MODES),
    banded=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fft_method_matches_naive(hw, k, dilation, multiplier, mode, banded, seed):
    """Tiles of side 20 (the smallest allowed, 4 * (k - 1)), so inputs span several tiles."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (2,) + hw).astype(np.float32)
    kernel = rng.uniform(-1, 1, (2 * multiplier, 1) + k).astype(np.float32)
    pads = centred_pads(hw, k, dilation, mode)
    if pads is None:
        return
    expected = naive.conv2d(x, kernel, None, (1, 1), pads, dilation, 2, mode)
    with (
        mock.patch.object(correlation, "FFT_TILE", 20),
        one_row_bands() if banded else contextlib.nullcontext(),
    ):
        out = engine.conv2d(
            x, kernel, groups=2, padding=pads, dilation=dilation, pad_mode=mode, method="fft"
        )
    assert_matches(out, expected)


@given(
    hw=st.tuples(st.integers(1, 90), st.integers(1, 50)),
    k=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    mode=st.sampled_from(naive.PAD_MODES),
    spoiled=st.sampled_from([None, np.nan, -np.inf, 1e31]),
    threads=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_fft_bands_side_by_side_match_naive(hw, k, dilation, mode, spoiled, threads, seed):
    """One map in bands of one row of 20x20 tiles, the bands on several threads, each padding
    its own; a band holding a NaN, an infinity or a huge value goes through the SIMD kernel
    afterwards, the others stay on the FFT."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (1,) + hw).astype(np.float32)
    if spoiled is not None:
        x[0, rng.integers(hw[0]), rng.integers(hw[1])] = spoiled
    kernel = rng.uniform(-1, 1, (1, 1) + k).astype(np.float32)
    pads = centred_pads(hw, k, dilation, mode)
    if pads is None:
        return
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, as in the engine
        expected = naive.conv2d(x, kernel, None, (1, 1), pads, dilation, 1, mode)
    with (
        mock.patch.object(correlation, "FFT_TILE", 20),
        mock.patch.object(correlation, "compute_threads", lambda: threads),
        one_row_bands(),
    ):
        out = engine.conv2d(x, kernel, padding=pads, dilation=dilation, pad_mode=mode, method="fft")
    assert_matches(
        np.nan_to_num(out, posinf=9, neginf=-9),
        np.nan_to_num(expected.astype(np.float32), posinf=9, neginf=-9),
    )


@pytest.mark.parametrize("value", [np.nan, np.inf, 3e38])
def test_fft_keeps_nan_and_inf_local(value, rng):
    """A transform would smear them over a whole tile; those bands take the direct loops."""
    x = rng.uniform(-1, 1, (1, 30, 30)).astype(np.float32)
    x[0, 3, 4] = value
    kernel = rng.uniform(-1, 1, (5, 5)).astype(np.float32)
    with mock.patch.object(correlation, "FFT_TILE", 20):
        out = engine.conv2d(x, kernel, method="fft")
    assert_matches(
        np.nan_to_num(out, posinf=9, neginf=-9),
        np.nan_to_num(
            naive.conv2d(x, kernel[None, None], pads=(2, 2, 2, 2)).astype(np.float32),
            posinf=9,
            neginf=-9,
        ),
    )
    assert np.isfinite(out[0, 10:]).all()


@pytest.mark.parametrize(
    "kwargs", [dict(stride=(2, 1)), dict(kernel=np.ones((1, 2, 5, 5), np.float32))]
)
def test_fft_refuses_strides_and_dense_kernels(kwargs):
    kernel = kwargs.pop("kernel", np.eye(5, dtype=np.float32))
    with pytest.raises(ValueError, match="depthwise kernels at stride 1"):
        engine.conv2d(np.ones((2, 8, 8), np.float32), kernel, method="fft", **kwargs)


def test_methods_are_chosen_by_work():
    assert correlation.choose_method(np.ones((3, 1, 3, 3), np.float32), 3, (8, 8)) == "numpy"
    assert correlation.choose_method(np.ones((16, 16, 3, 3), np.float32), 1, (8, 8)) == "gemm"
    assert (
        correlation.choose_method(np.ones((16, 16, 3, 3), np.float32), 1, (6000, 6000)) == "numba"
    )
    assert (
        correlation.choose_method(np.ones((16, 16, 3, 3), np.float32), 1, (6000, 6000), (2, 2))
        == "numba"
    )
    assert (
        correlation.choose_method(np.ones((16, 16, 5, 5), np.float32), 1, (6000, 6000), (2, 2))
        == "numba"
    )
    assert (
        correlation.choose_method(np.ones((64, 64, 7, 7), np.float32), 1, (6000, 6000)) == "numba"
    )
    assert (
        correlation.choose_method(np.ones((64, 64, 1, 1), np.float32), 1, (6000, 6000)) == "numba"
    )
    assert correlation.choose_method(np.ones((64, 64, 1, 1), np.float32), 1, (6, 6)) == "gemm"
    big = (8000, 8000)  # 3 x 3x3 taps: 1.7e9 multiply-adds, past what numpy takes
    assert correlation.choose_method(np.ones((3, 1, 3, 3), np.float32), 3, big) == "numba"
    assert correlation.choose_method(np.ones((3, 1, 5, 5), np.float32), 3, big) == "numba"
    assert correlation.choose_method(np.ones((3, 1, 7, 7), np.float32), 3, big) == "separable"
    assert correlation.choose_method(np.ones((3, 1, 15, 15), np.float32), 3, big, (2, 2)) == "numba"
    assert (
        correlation.choose_method(np.ones((3, 1, 17, 17), np.float32), 3, big, (2, 2))
        == "separable"
    )
    assert (
        correlation.choose_method(np.ones((3, 1, 17, 17), np.float32), 3, big, (1, 1), (2, 2))
        == "separable"
    )
    assert (
        correlation.choose_method(np.arange(243, dtype=np.float32).reshape(3, 1, 9, 9) ** 2, 3, big)
        == "numba"
    )
    full_rank = np.arange(507, dtype=np.float32).reshape(3, 1, 13, 13) ** 2
    assert correlation.choose_method(full_rank, 3, big) == "numba"
    assert correlation.choose_method(full_rank, 3, big, dilation=(2, 2)) == "numba"
    assert (
        correlation.choose_method(
            np.arange(1083, dtype=np.float32).reshape(3, 1, 19, 19) ** 2, 3, big, dilation=(2, 2)
        )
        == "fft"
    )
    assert correlation.choose_method(full_rank, 3, big, stride=(2, 2)) == "numba"
    assert (
        correlation.choose_method(
            np.arange(1587, dtype=np.float32).reshape(3, 1, 23, 23) ** 2, 3, big
        )
        == "fft"
    )


@pytest.mark.parametrize("method", [None, "gemm", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_pointwise_layers_are_one_matrix_product_per_group(method, dtype, rng):
    x = rng.uniform(0, 9, (6, 5, 7)).astype(dtype)
    kernel = rng.uniform(-1, 1, (4, 3, 1, 1)).astype(np.float32)
    with mock.patch.object(correlation, "_pointwise", wraps=correlation._pointwise) as spy:
        out = engine.conv2d(x, kernel, groups=2, method=method)
    assert spy.call_count == (0 if method is None else 1)  # small work, no method given: numpy taps
    assert_matches(out, naive.conv2d(x.astype(np.float32), kernel, groups=2))


def test_separable_refuses_full_rank_kernels():
    with pytest.raises(ValueError, match="rank 1"):
        engine.conv2d(
            np.ones((1, 8, 8), np.float32), np.eye(5, dtype=np.float32), method="separable"
        )


@given(
    kh=st.integers(1, 9),
    kw=st.integers(1, 9),
    hw=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    pads=st.tuples(*[st.integers(0, 7)] * 4),
    mode=st.sampled_from(naive.PAD_MODES),
    multiplier=st.integers(1, 2),
    dtype=st.sampled_from([np.float32, np.float64]),
    block_rows=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_depthwise_numba_kernel_matches_naive(
    kh, kw, hw, pads, mode, multiplier, dtype, block_rows, seed
):
    """Depthwise kernels of any size on rows narrower than a tile: float32 images are padded
    block by block inside the kernel, other dtypes go through bands first; both against the
    reference, in blocks of a few rows."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (2,) + hw).astype(dtype)
    kernel = rng.uniform(-1, 1, (2 * multiplier, 1, kh, kw)).astype(np.float32)
    if (
        hw[0] + pads[0] + pads[1] < kh
        or hw[1] + pads[2] + pads[3] < kw
        or mode == "reflect"
        and (max(pads[:2]) >= hw[0] or max(pads[2:]) >= hw[1])
        or mode == "circular"
        and (max(pads[:2]) > hw[0] or max(pads[2:]) > hw[1])
    ):
        return  # no output, or a border the mode cannot make: covered by the shape tests
    block_bytes = 4 * (hw[1] + pads[2] + pads[3]) * (block_rows + kh - 1)
    with mock.patch.object(_jit, "BLOCK_BYTES", block_bytes):
        out = engine.conv2d(x, kernel, groups=2, padding=pads, pad_mode=mode, method="numba")
    assert_matches(out, naive.conv2d(x.astype(np.float32), kernel, pads=pads, groups=2, mode=mode))


@given(
    hw=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    k=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    groups=st.integers(1, 2),
    c_per_group=st.integers(1, 3),
    out_per_group=st.integers(1, 6),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilation=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    pads=st.tuples(*[st.integers(0, 4)] * 4),
    mode=st.sampled_from(naive.PAD_MODES),
    dtype=st.sampled_from([np.float32, np.float64]),
    block_rows=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_dense_numba_kernel_matches_naive(
    hw, k, groups, c_per_group, out_per_group, stride, dilation, pads, mode, dtype, block_rows, seed
):
    """The dense kernel (and the depthwise one at stride 1) on rows narrower than a tile: maps
    four at a time (a last group of fewer overlapping the one before), padded block by block,
    column strides through phases."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (groups * c_per_group,) + hw).astype(dtype)
    kernel = rng.uniform(-1, 1, (groups * out_per_group, c_per_group) + k).astype(np.float32)
    spans = [d * (kk - 1) + 1 for d, kk in zip(dilation, k)]
    if (
        hw[0] + pads[0] + pads[1] < spans[0]
        or hw[1] + pads[2] + pads[3] < spans[1]
        or mode == "reflect"
        and (max(pads[:2]) >= hw[0] or max(pads[2:]) >= hw[1])
        or mode == "circular"
        and (max(pads[:2]) > hw[0] or max(pads[2:]) > hw[1])
    ):
        return  # no output, or a border the mode cannot make: covered by the shape tests
    block_bytes = (
        4 * x.shape[0] * (hw[1] + pads[2] + pads[3]) * stride[0] * (block_rows + spans[0] - 1)
    )
    with mock.patch.object(_jit, "BLOCK_BYTES", block_bytes):
        out = engine.conv2d(
            x,
            kernel,
            groups=groups,
            stride=stride,
            padding=pads,
            dilation=dilation,
            pad_mode=mode,
            method="numba",
        )
    expected = naive.conv2d(
        x.astype(np.float32),
        kernel,
        stride=stride,
        pads=pads,
        dilation=dilation,
        groups=groups,
        mode=mode,
    )
    assert_matches(out, expected)


#: Output widths of one tile, of several, and with a last tile overlapping the one before.
TILED_WIDTHS = st.integers(_jit.TILE - 2, 2 * _jit.TILE + 3)


@settings(max_examples=12)
@given(
    kh=st.integers(1, 7),
    kw=st.integers(1, 7),
    height=st.integers(1, 5),
    w_out=TILED_WIDTHS,
    block_rows=st.integers(1, 3),
    method=st.sampled_from(["numba", "separable"]),
    seed=st.integers(0, 2**16),
)
def test_depthwise_numba_kernels_on_rows_of_several_tiles(
    kh, kw, height, w_out, block_rows, method, seed
):
    """Depthwise kernels (and the row and column passes of separable ones) across tiles of
    columns, in blocks of one to three rows (odd blocks make their last row again with the
    one before), two maps per channel."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (2, height, w_out)).astype(np.float32)
    kernel = rng.uniform(-1, 1, (4, 1, kh, kw)).astype(np.float32)
    if method == "separable":
        kernel = (rng.uniform(-1, 1, (4, 1, kh, 1)) * rng.uniform(-1, 1, (4, 1, 1, kw))).astype(
            np.float32
        )
    pads = ((kh - 1) // 2, kh // 2, (kw - 1) // 2, kw // 2)
    with mock.patch.object(_jit, "BLOCK_BYTES", 4 * (w_out + kw - 1) * (block_rows + kh - 1)):
        out = engine.conv2d(x, kernel, groups=2, padding=pads, pad_mode="replicate", method=method)
    assert_matches(out, naive.conv2d(x, kernel, pads=pads, groups=2, mode="replicate"))


BORDERS = st.sampled_from([0, 1, 2, 3, _jit.TILE - 1, _jit.TILE, _jit.TILE + 1])


@settings(max_examples=40)
@given(
    kh=st.integers(1, 7),
    kw=st.integers(1, 7),
    height=st.integers(2, 12),
    width=st.integers(_jit.TILE, 2 * _jit.TILE + 8),
    pads=st.tuples(st.integers(0, 3), st.integers(0, 3), BORDERS, BORDERS),
    mode=st.sampled_from(naive.PAD_MODES),
    method=st.sampled_from(["numba", "separable"]),
    block_rows=st.integers(2, 4),
    seed=st.integers(0, 2**16),
)
def test_depthwise_kernels_read_the_image_in_place(
    kh, kw, height, width, pads, mode, method, block_rows, seed
):
    """Blocks of the image's own rows read its inner columns straight from it and each
    border (up to a tile wide; wider ones pad the block in full) from a strip of one tile,
    in every pad mode; the first and last blocks reach into the padding rows."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (2, height, width)).astype(np.float32)
    kernel = rng.uniform(-1, 1, (4, 1, kh, kw)).astype(np.float32)
    if method == "separable":
        kernel = (rng.uniform(-1, 1, (4, 1, kh, 1)) * rng.uniform(-1, 1, (4, 1, 1, kw))).astype(
            np.float32
        )
    if (
        height + pads[0] + pads[1] < kh
        or mode == "reflect"
        and max(pads[2:]) >= width
        or (
            mode == "reflect"
            and max(pads[:2]) >= height
            or mode == "circular"
            and max(pads) > min(height, width)
        )
    ):
        return  # no output, or a border the mode cannot make: covered by the shape tests
    with mock.patch.object(
        _jit, "BLOCK_BYTES", 4 * (width + pads[2] + pads[3]) * (block_rows + kh - 1)
    ):
        out = engine.conv2d(x, kernel, groups=2, padding=pads, pad_mode=mode, method=method)
    assert_matches(out, naive.conv2d(x, kernel, pads=pads, groups=2, mode=mode))


@settings(max_examples=12)
@given(
    height=st.integers(1, 4),
    w_out=TILED_WIDTHS,
    k=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    c_per_group=st.integers(1, 2),
    out_per_group=st.integers(1, 6),
    stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    seed=st.integers(0, 2**16),
)
def test_dense_numba_kernel_on_rows_of_several_tiles(
    height, w_out, k, c_per_group, out_per_group, stride, dilation, seed
):
    """The dense kernel across tiles of columns, with groups of maps short of four."""
    check_same_padded_dense(height, w_out, k, 2, c_per_group, out_per_group, stride, dilation, seed)


def check_same_padded_dense(
    height, w_out, k, groups, c_per_group, out_per_group, stride, dilation, seed
):
    """The numba dense kernel with 'same' pads (``w_out`` columns of output) against naive."""
    rng = np.random.default_rng(seed)
    width = (w_out - 1) * stride[1] + 1  # with the 'same' pads below, w_out columns of output
    x = rng.uniform(-1, 1, (groups * c_per_group, height, width)).astype(np.float32)
    kernel = rng.uniform(-1, 1, (groups * out_per_group, c_per_group) + k).astype(np.float32)
    pads = tuple(
        p
        for d, kk in zip(dilation, k)
        for p in (d * (kk - 1) // 2, d * (kk - 1) - d * (kk - 1) // 2)
    )
    out = engine.conv2d(
        x, kernel, groups=groups, stride=stride, padding=pads, dilation=dilation, method="numba"
    )
    assert out.shape[2] == w_out
    assert_matches(
        out, naive.conv2d(x, kernel, stride=stride, pads=pads, dilation=dilation, groups=groups)
    )


@settings(max_examples=12)
@given(
    height=st.integers(1, 3),
    w_out=st.integers(_jit.TILE - 2, 4 * _jit.TILE + 3),
    k=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    groups=st.integers(1, 2),
    c_per_group=st.integers(2, 3),
    out_per_group=st.integers(8, 19),
    stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    seed=st.integers(0, 2**16),
)
def test_dense_numba_kernel_with_eight_maps_or_more_per_group(
    height, w_out, k, groups, c_per_group, out_per_group, stride, dilation, seed
):
    """Groups of eight maps or more (eight at a time with 16 lanes, a last eight overlapping
    the one before), across rows of whole tiles of three vectors and a rest of single vectors
    (the last overlapping the one before)."""
    check_same_padded_dense(
        height, w_out, k, groups, c_per_group, out_per_group, stride, dilation, seed
    )


@pytest.mark.parametrize("mode", naive.PAD_MODES)
@pytest.mark.parametrize("stride", [2, 3])
def test_dense_column_phases_read_every_border(mode, stride, rng):
    """Strided float32 input: each phase of each padded row is filled straight from the image,
    so every padding column (both sides, every phase) must carry the mode's value."""
    x = rng.uniform(-1, 1, (3, 5, 11)).astype(np.float32)
    kernel = rng.uniform(-1, 1, (5, 3, 3, 3)).astype(np.float32)
    pads = (2, 1, 4, 4)  # left and right pads of 4 land on every phase
    out = engine.conv2d(x, kernel, stride=(1, stride), padding=pads, pad_mode=mode, method="numba")
    assert_matches(out, naive.conv2d(x, kernel, stride=(1, stride), pads=pads, mode=mode))


@pytest.mark.parametrize("method", ["numpy", "gemm", "numba"])
def test_dense_layers_across_several_bands(method, rng):
    """Reused band buffers: partial last bands of a multi-channel output stay exact."""
    x = rng.uniform(-1, 1, (3, 29, 7)).astype(np.float32)
    kernel = rng.uniform(-1, 1, (8, 3, 3, 3)).astype(np.float32)
    with mock.patch.multiple(correlation, BAND_BYTES=1, MIN_BAND_ROWS=4):  # bands of 4 rows, then 1
        out = engine.conv2d(
            x, kernel, stride=(1, 2), padding=(1, 1, 1, 1), pad_mode="reflect", method=method
        )
    assert_matches(out, naive.conv2d(x, kernel, stride=(1, 2), pads=(1, 1, 1, 1), mode="reflect"))


@pytest.mark.parametrize("chunk", [1, 3, 1 << 18])
@pytest.mark.parametrize("multiplier", [1, 2, 3])
def test_numpy_depthwise_maps_in_chunks_match_naive(chunk, multiplier, rng):
    """The numpy method holds one tap's product for a chunk of maps: chunks of one, of a few
    (cutting through a channel's multiplier maps) and of all give the naive result."""
    x = rng.uniform(-1, 1, (4, 7, 6)).astype(np.float32)
    w = rng.uniform(-1, 1, (4 * multiplier, 1, 3, 2)).astype(np.float32)
    with mock.patch.object(correlation, "TAP_CHUNK_VALUES", chunk * 7 * 6):
        out = engine.conv2d(x, w, groups=4, padding="same", method="numpy")
    pads = naive.explicit_pads("same", x.shape[1:], (3, 2), (1, 1), (1, 1))
    assert_matches(out, naive.conv2d(x, w, None, (1, 1), pads, (1, 1), 4, "zeros"))


def arrays_from_a_child(script, tmp_path, **variables):
    """The arrays ``script`` saves to the ``.npz`` file named by its argument, run by a fresh
    Python with ``variables`` added to the environment."""
    import os

    proc = python_process(script, tmp_path / "out.npz", env={**os.environ, **variables})
    assert proc.returncode == 0, proc.stderr
    return np.load(tmp_path / "out.npz")


PLAIN_PYTHON_KERNELS = """
import sys
import numpy as np
from convcli import engine
x = np.random.default_rng(3).normal(size=(2, 7, 70)).astype(np.float32)  # wider than a tile
dense = np.random.default_rng(4).normal(size=(3, 2, 3, 2)).astype(np.float32)
depthwise = np.random.default_rng(5).normal(size=(2, 1, 3, 3)).astype(np.float32)
separable = np.einsum("ci,cj->cij", [[1, 2, 1], [1, 0, -1]], [[1, 0, -1], [1, 2, 1]])[:, None]
np.savez(sys.argv[1],
         dense=engine.conv2d(x, dense, padding="valid", stride=(1, 2), method="numba"),
         depthwise=engine.conv2d(x, depthwise, padding=(1, 1, 1, 1), pad_mode="reflect", groups=2,
                                 method="numba"),
         separable=engine.conv2d(x, separable.astype(np.float32), padding="valid", groups=2,
                                 method="separable"))
"""


def test_numba_kernels_run_as_plain_python_with_the_jit_disabled(tmp_path):
    """``NUMBA_DISABLE_JIT=1`` (debugging): the SIMD kernels run as Python, vectors as arrays."""
    out = arrays_from_a_child(PLAIN_PYTHON_KERNELS, tmp_path, NUMBA_DISABLE_JIT="1")
    x = np.random.default_rng(3).normal(size=(2, 7, 70))
    dense = np.random.default_rng(4).normal(size=(3, 2, 3, 2)).astype(np.float32)
    depthwise = np.random.default_rng(5).normal(size=(2, 1, 3, 3)).astype(np.float32)
    separable = np.einsum("ci,cj->cij", [[1, 2, 1], [1, 0, -1]], [[1, 0, -1], [1, 2, 1]])[:, None]
    assert_matches(out["dense"], naive.conv2d(x.astype(np.float32), dense, stride=(1, 2)))
    assert_matches(
        out["depthwise"],
        naive.conv2d(x.astype(np.float32), depthwise, pads=(1, 1, 1, 1), groups=2, mode="reflect"),
    )
    assert_matches(out["separable"], naive.conv2d(x.astype(np.float32), separable, groups=2))


def test_one_big_depthwise_call_goes_by_fft_rather_than_loading_numba():
    """Issue 20: a 15x15 full-rank kernel on 4096^2x3 takes 0.2 s longer by FFT than in the
    SIMD kernel, and loading Numba costs 0.3 s more than loading the FFT: one call goes by
    FFT; declared twice (a batch of two files), or on 8000^2x3, Numba's kernel pays off."""
    weight = np.random.default_rng(9).uniform(-1, 1, (3, 1, 15, 15)).astype(np.float32)
    assert correlation.choose_method(weight, 3, (4096, 4096)) == "fft"
    with engine.repeated(2):
        assert correlation.choose_method(weight, 3, (4096, 4096)) == "numba"
    assert correlation.choose_method(weight, 3, (8000, 8000)) == "numba"
    assert correlation.choose_method(weight, 3, (4096, 4096), stride=(2, 2)) == "numba"


def test_a_conv_process_that_the_fft_spares_loading_numba(tmp_path):
    """A whole ``convcli conv`` process on a 2200x2200 .npy with a 15x15 random kernel (1.1e9
    multiply-adds, past what numpy takes) never imports Numba, and matches SciPy's
    correlation with a zero border."""
    from scipy import ndimage

    rng = np.random.default_rng(10)
    x = rng.uniform(-1, 1, (2200, 2200)).astype(np.float32)
    kernel = rng.uniform(-1, 1, (15, 15)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "k.npy", kernel)
    proc = python_process(WITH_IMPORTS, "conv", "x.npy", "-k", "k.npy", "-o", "y.npy", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "numba imported" not in proc.stderr
    expected = ndimage.correlate(x.astype(np.float64), kernel.astype(np.float64), mode="constant")
    assert_matches(np.load(tmp_path / "y.npy")[:, :, 0], expected)


EMULATED_AVX2_KERNELS = """
import sys
import numpy as np
from convcli import engine
from convcli.engine import _jit
rng = np.random.default_rng(6)
x = rng.normal(size=(6, 9, 75)).astype(np.float32)  # more than two 8-lane tiles wide
dense = rng.normal(size=(5, 6, 3, 3)).astype(np.float32)  # a last group of maps overlapping
depthwise = rng.normal(size=(6, 1, 3, 3)).astype(np.float32)
transposed = rng.normal(size=(6, 4, 4, 4)).astype(np.float32)
grouped = rng.normal(size=(10, 3, 3, 3)).astype(np.float32)  # 5 maps a group: overlapping
narrow = rng.normal(size=(6, 2, 3, 3)).astype(np.float32)  # 2 maps a group, fewer than a pass
np.savez(sys.argv[1],
         lanes=_jit.LANES,
         dense=engine.conv2d(x, dense, padding=(1, 1, 1, 1), method="numba"),
         strided=engine.conv2d(x, dense, padding=(1, 1, 1, 1), stride=(2, 2), method="numba"),
         depthwise=engine.conv2d(x, depthwise, padding=(1, 1, 1, 1), groups=6, method="numba"),
         grouped=engine.conv2d(x, grouped, padding=(1, 1, 1, 1), groups=2, method="numba"),
         winograd=engine.conv2d(x, grouped, padding=(1, 1, 1, 1), groups=2, method="winograd"),
         narrow=engine.conv2d(x, narrow, padding=(2, 2, 2, 2), dilation=(2, 2), groups=3,
                              method="numba"),
         transposed=engine.conv_transpose2d(x, transposed, stride=(2, 2), padding=(1, 1),
                                            method="numba"))
"""


def test_kernels_compiled_for_an_avx2_cpu_take_its_8_lanes_and_match_naive(tmp_path):
    """``NUMBA_CPU_NAME=haswell`` with its own features (AVX2 and FMA, no AVX-512): the SIMD
    kernels are built 8 floats wide whatever the host, and give the naive results."""
    out = arrays_from_a_child(
        EMULATED_AVX2_KERNELS, tmp_path, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=""
    )
    rng = np.random.default_rng(6)
    x = rng.normal(size=(6, 9, 75)).astype(np.float32)
    dense = rng.normal(size=(5, 6, 3, 3)).astype(np.float32)
    depthwise = rng.normal(size=(6, 1, 3, 3)).astype(np.float32)
    transposed = rng.normal(size=(6, 4, 4, 4)).astype(np.float32)
    grouped = rng.normal(size=(10, 3, 3, 3)).astype(np.float32)
    narrow = rng.normal(size=(6, 2, 3, 3)).astype(np.float32)
    assert out["lanes"] == 8
    assert_matches(out["dense"], naive.conv2d(x, dense, pads=(1, 1, 1, 1)))
    assert_matches(out["strided"], naive.conv2d(x, dense, stride=(2, 2), pads=(1, 1, 1, 1)))
    assert_matches(out["depthwise"], naive.conv2d(x, depthwise, pads=(1, 1, 1, 1), groups=6))
    assert_matches(out["grouped"], naive.conv2d(x, grouped, pads=(1, 1, 1, 1), groups=2))
    assert_matches(out["winograd"], naive.conv2d(x, grouped, pads=(1, 1, 1, 1), groups=2))
    assert_matches(
        out["narrow"], naive.conv2d(x, narrow, pads=(2, 2, 2, 2), dilation=(2, 2), groups=3)
    )
    assert_matches(
        out["transposed"], naive.conv_transpose2d(x, transposed, stride=(2, 2), padding=(1, 1))
    )


@pytest.mark.parametrize("groups", [1, 2])
def test_wide_layers_by_winograd_equal_torch(groups):
    """A 128->128 3x3 layer as a network's loop runs it (``engine.repeated``): the Winograd
    method, against PyTorch's conv2d."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(groups)
    x = rng.normal(size=(128, 33, 30)).astype(np.float32)
    weight = rng.normal(size=(128, 128 // groups, 3, 3)).astype(np.float32) / 30
    with engine.repeated(1000):
        assert correlation.choose_method(weight, groups, (33, 30)) == "winograd"
        out = engine.conv2d(x, weight, padding="same", groups=groups)
    expected = torch.nn.functional.conv2d(
        torch.from_numpy(x)[None], torch.from_numpy(weight), padding=1, groups=groups
    )[0].numpy()
    assert_matches(out, expected)
