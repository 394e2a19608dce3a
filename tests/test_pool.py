"""Pooling, global pooling and max-unpooling against the plain-loop references and PyTorch."""

import naive
import numpy as np
import pytest
from conftest import assert_matches
from hypothesis import given
from hypothesis import strategies as st

from convcli import engine, geometry
from convcli.errors import ParameterError, ShapeError

SEED = np.array([[1, 3, 2, 0], [4, 6, 1, 2], [0, 2, 5, 3], [1, 2, 2, 4]], np.float32)[None]
ONE_TO_NINE = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3)
ONE_TO_SIXTEEN = np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4)
ONE_TO_SIX = np.arange(1, 7, dtype=np.float32).reshape(1, 1, 6)


@pytest.mark.parametrize("method", ["numpy", "numba"])
def test_seed_max_and_average_examples_are_exact(method):
    assert engine.max_pool2d(SEED, method=method).tolist() == [[[6, 2], [2, 5]]]
    assert engine.avg_pool2d(SEED, method=method).tolist() == [[[3.5, 1.25], [1.25, 3.5]]]


def test_torch_verified_average_divisors():
    # semantics.md 1.4: 3x3 1..9, k=3, s=2, p=1
    include = engine.avg_pool2d(ONE_TO_NINE, (3, 3), (2, 2), (1, 1, 1, 1))
    np.testing.assert_allclose(include[0], [[12 / 9, 16 / 9], [24 / 9, 28 / 9]], rtol=1e-6)
    exclude = engine.avg_pool2d(ONE_TO_NINE, (3, 3), (2, 2), (1, 1, 1, 1), count_include_pad=False)
    assert exclude.tolist() == [[[3, 4], [6, 7]]]


def test_torch_verified_ceil_mode_overhang_is_never_counted():
    assert engine.avg_pool2d(ONE_TO_SIX, (1, 3), (1, 2), ceil_mode=True).tolist() == [[[2, 4, 5.5]]]
    padded = (0, 0, 1, 1)
    assert engine.avg_pool2d(ONE_TO_SIX, (1, 3), (1, 2), padded, ceil_mode=True).tolist() == [
        [[1, 3, 5, 3]]
    ]
    assert engine.avg_pool2d(
        ONE_TO_SIX, (1, 3), (1, 2), padded, ceil_mode=True, count_include_pad=False
    ).tolist() == [[[1.5, 3, 5, 6]]]


@pytest.mark.parametrize(
    "size, kernel, pad, ceil_mode, expected",
    [
        (5, 2, 1, False, 3),
        (5, 2, 1, True, 3),
        (6, 3, 0, False, 2),
        (6, 3, 0, True, 3),
        (5, 2, 0, True, 3),
    ],
)
def test_torch_verified_output_sizes(size, kernel, pad, ceil_mode, expected):
    x = np.zeros((1, size, size), np.float32)
    out = engine.max_pool2d(x, (kernel, kernel), (2, 2), (pad,) * 4, ceil_mode=ceil_mode)
    assert out.shape == (1, expected, expected)


def test_torch_verified_indices():
    _, indices = engine.max_pool2d(ONE_TO_SIXTEEN, return_indices=True)
    assert indices.ravel().tolist() == [5, 7, 13, 15]
    _, indices = engine.max_pool2d(ONE_TO_SIXTEEN, padding=(1, 1, 1, 1), return_indices=True)
    assert indices.ravel().tolist() == [0, 2, 3, 8, 10, 11, 12, 14, 15]
    assert indices.dtype == np.int64


def test_keras_same_average_counts_only_real_cells():
    assert engine.avg_pool2d(ONE_TO_NINE, padding="same").tolist() == [[[3.0, 4.5], [7.5, 9.0]]]
    # count_include_pad is PyTorch's, for numeric padding; Keras 'same' never counts pads
    assert engine.avg_pool2d(ONE_TO_NINE, padding="same", count_include_pad=True)[0, 1, 1] == 9.0


def test_keras_same_max_never_picks_padding():
    out = engine.max_pool2d(np.full((1, 7, 7), -1, np.float32), (2, 2), padding="same")
    assert out.shape == (1, 4, 4) and (out == -1).all()


@pytest.mark.parametrize(
    "return_indices, method", [(True, "numba"), (True, "numpy"), (False, "numba"), (False, "numpy")]
)
def test_nan_propagates_and_pad_cells_never_win(return_indices, method):
    x = np.full((1, 5, 6), -np.inf, np.float32)
    x[0, 1, 1], x[0, 3, 4], x[0, 4, 0] = np.nan, 7, -3
    out = engine.max_pool2d(
        x, (3, 3), (2, 2), (1, 1, 1, 1), return_indices=return_indices, method=method
    )
    out = out[0] if return_indices else out
    assert np.array_equal(
        out[0], [[np.nan, np.nan, -np.inf], [np.nan, np.nan, 7], [-3, -np.inf, 7]], equal_nan=True
    )


@pytest.mark.parametrize("method", ["numpy", "numba"])
def test_ties_take_the_first_index_and_nan_propagates(method):
    x = np.full((1, 2, 2), 5, np.float32)
    _, indices = engine.max_pool2d(x, return_indices=True, method=method)
    assert indices.tolist() == [[[0]]]
    x = np.array([[[np.nan, 1, np.nan, 0]]], np.float32)
    out, indices = engine.max_pool2d(x, (1, 4), return_indices=True, method=method)
    assert np.isnan(out).all() and indices.tolist() == [[[2]]]  # PyTorch: the last NaN


@st.composite
def pool_cases(draw):
    channels, height, width = (
        draw(st.integers(1, 2)),
        draw(st.integers(1, 9)),
        draw(st.integers(1, 9)),
    )
    size = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(
        st.one_of(
            st.sampled_from(["valid", "same"]),
            st.tuples(*[st.integers(0, size[0] // 2)] * 2, *[st.integers(0, size[1] // 2)] * 2),
        )
    )
    ceil_mode = padding != "same" and draw(st.booleans())
    values = st.sampled_from([-2.0, -1.0, 0.0, 1.0, 3.0])  # few values: many ties
    x = np.array(
        draw(
            st.lists(values, min_size=channels * height * width, max_size=channels * height * width)
        ),
        np.float32,
    ).reshape(channels, height, width)
    x = x + np.random.default_rng(draw(st.integers(0, 99))).choice([0, 0.25], x.shape).astype(
        np.float32
    )
    return x, size, stride, dilation, padding, ceil_mode


def _fits(x, size, stride, pads, dilation, ceil_mode):
    return (
        min(
            naive.pool_size(n, k, s, d, before, after, ceil_mode)
            for n, k, s, d, before, after in zip(
                x.shape[1:], size, stride, dilation, pads[0::2], pads[1::2]
            )
        )
        >= 1
    )


@pytest.mark.parametrize("method", ["numpy", "numba"])
@given(case=pool_cases())
def test_max_pool2d_matches_naive(case, method):
    x, size, stride, dilation, padding, ceil_mode = case
    pads = naive.explicit_pads(padding, x.shape[1:], size, stride, dilation)

    def call():
        return engine.max_pool2d(x, size, stride, padding, dilation, ceil_mode, return_indices=True)

    if not _fits(x, size, stride, pads, dilation, ceil_mode):
        with pytest.raises(ShapeError):
            call()
        return
    out, indices = call()
    expected, expected_indices = naive.max_pool2d(x, size, stride, pads, dilation, ceil_mode)
    assert np.array_equal(out, expected) and np.array_equal(indices, expected_indices)
    values_only = engine.max_pool2d(x, size, stride, padding, dilation, ceil_mode, method=method)
    assert np.array_equal(values_only, expected)
    if padding == "same":
        assert out.shape[1:] == (-(-x.shape[1] // stride[0]), -(-x.shape[2] // stride[1]))


@pytest.mark.parametrize("method", ["numpy", "numba"])
@given(case=pool_cases(), count_include_pad=st.booleans())
def test_avg_pool2d_matches_naive(case, count_include_pad, method):
    x, size, stride, _, padding, ceil_mode = case
    pads = naive.explicit_pads(padding, x.shape[1:], size, stride, (1, 1))

    def call():
        return engine.avg_pool2d(
            x, size, stride, padding, ceil_mode, count_include_pad, method=method
        )

    if not _fits(x, size, stride, pads, (1, 1), ceil_mode):
        with pytest.raises(ShapeError):
            call()
        return
    include = count_include_pad and padding != "same"
    assert_matches(call(), naive.avg_pool2d(x, size, stride, pads, ceil_mode, include))


@given(pool_cases())
def test_unpooling_puts_each_maximum_back_where_it_was(case):
    x, size, stride, dilation, padding, ceil_mode = case
    pads = naive.explicit_pads(padding, x.shape[1:], size, stride, dilation)
    if not _fits(x, size, stride, pads, dilation, ceil_mode):
        return
    values, indices = engine.max_pool2d(
        x, size, stride, padding, dilation, ceil_mode, return_indices=True
    )
    if np.isinf(values).any():  # a dilated window saw no input cell: -inf, index of its first tap
        return
    restored = engine.max_unpool2d(values, indices, x.shape[1:])
    assert np.array_equal(restored, naive.max_unpool2d(values, indices, x.shape[1:]))
    recorded = np.zeros(x.shape, bool)
    for c in range(x.shape[0]):
        recorded[c].flat[indices[c].ravel()] = True
    assert np.array_equal(restored, np.where(recorded, x, 0))


def test_pool_then_unpool_round_trip_on_the_seed():
    values, indices = engine.max_pool2d(SEED, return_indices=True)
    restored = engine.max_unpool2d(
        values, indices, geometry.unpool_output_shape((2, 2), (2, 2), (2, 2))
    )
    assert restored.tolist() == [[[0, 0, 2, 0], [0, 6, 0, 0], [0, 2, 5, 0], [0, 0, 0, 0]]]
    assert np.array_equal(engine.max_pool2d(restored), values)


def test_global_pool_sums_in_float64_and_propagates_nan():
    x = np.ones((2, 64, 64), np.float32)
    x[0, 0, 0] = 2.0**24  # float32 sums lose the ones added to it
    x[1, 3, 5] = np.nan
    avg = engine.global_pool(x)
    assert (
        avg.dtype == np.float32
        and avg[0] == np.float32(x[0].astype(np.float64).mean())
        and np.isnan(avg[1])
    )
    peak = engine.global_pool(x, "max")
    assert peak[0] == 2.0**24 and np.isnan(peak[1])


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda: engine.max_pool2d(SEED, (3, 3), padding=(2, 2, 2, 2)),
            ParameterError,
            "more than half",
        ),
        (
            lambda: engine.max_pool2d(SEED, (3, 3), dilation=(2, 2), padding=(2, 2, 2, 2)),
            ParameterError,
            "half",
        ),
        (
            lambda: engine.avg_pool2d(SEED, (2, 2), padding=(0, 0, 0, 2)),
            ParameterError,
            "1 columns per side",
        ),
        (
            lambda: engine.max_pool2d(SEED, (5, 5)),
            ShapeError,
            "window 5x5 is larger than the padded input 4x4",
        ),
        (lambda: engine.max_pool2d(SEED, (2, 3), dilation=(1, 2)), ShapeError, r"dilated to 2x5"),
        (lambda: engine.avg_pool2d(SEED, (0, 2)), ParameterError, "size must be at least 1"),
        (
            lambda: engine.avg_pool2d(SEED, stride=(1, 0)),
            ParameterError,
            "stride must be at least 1",
        ),
        (lambda: engine.avg_pool2d(SEED, padding="full"), ParameterError, "no padding 'full'"),
        (
            lambda: engine.max_pool2d(SEED, padding="same", ceil_mode=True),
            ParameterError,
            "ceil mode",
        ),
        (lambda: engine.global_pool(SEED, "min"), ParameterError, "not one of avg, max"),
    ],
)
def test_pooling_rejects_bad_parameters(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_tiny_inputs():
    one = np.full((1, 1, 1), 2.0, np.float32)
    assert engine.max_pool2d(one, (1, 1)).tolist() == [[[2.0]]]
    # PyTorch ceil mode lets a window overhang an input smaller than it, if it starts inside
    assert engine.avg_pool2d(one, (3, 3), ceil_mode=True).tolist() == [[[2.0]]]
    assert engine.global_pool(one, "max").tolist() == [2.0]


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda: engine.max_unpool2d(SEED[:, :2, :2], np.zeros((1, 2, 3), np.int64), (4, 4)),
            ShapeError,
            "indices of shape 1x2x3 do not match the values 1x2x2",
        ),
        (
            lambda: engine.max_unpool2d(SEED[:, :1, :1], np.full((1, 1, 1), 16), (4, 4)),
            ShapeError,
            "index 16 lies outside the 4x4 output plane",
        ),
        (
            lambda: engine.max_unpool2d(SEED[:, :1, :1], np.full((1, 1, 1), -1), (4, 4)),
            ShapeError,
            "index -1",
        ),
        (
            lambda: engine.max_unpool2d(SEED[:, :1, :1], np.zeros((1, 1, 1)), (4, 4)),
            ParameterError,
            "integers",
        ),
        (
            lambda: geometry.unpool_output_shape((2, 2), (2, 2), (2, 2), requested=(6, 6)),
            ParameterError,
            "rows 3 to 5",
        ),
    ],
)
def test_unpooling_rejects_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.fixture(scope="module")
def F():
    return pytest.importorskip("torch").nn.functional


@given(case=pool_cases(), count_include_pad=st.booleans())
def test_pooling_equals_torch(F, case, count_include_pad):
    import torch

    x, size, stride, dilation, padding, ceil_mode = case
    if padding == "same" or padding[0::2] != padding[1::2]:
        padding = "valid"  # PyTorch pads symmetrically: (rows, cols)
    pad = (0, 0) if padding == "valid" else padding[0::2]
    t = torch.from_numpy(x)[None]
    try:
        values, indices = F.max_pool2d(
            t, size, stride, pad, dilation, ceil_mode, return_indices=True
        )
    except RuntimeError:  # torch rejects the shapes: so must we
        with pytest.raises(ShapeError):
            engine.max_pool2d(x, size, stride, padding, dilation, ceil_mode)
    else:
        out, where = engine.max_pool2d(
            x, size, stride, padding, dilation, ceil_mode, return_indices=True
        )
        assert np.array_equal(out, values[0].numpy()) and np.array_equal(where, indices[0].numpy())
        if dilation == (1, 1):  # torch's unpool size check ignores dilation
            unpooled = F.max_unpool2d(values, indices, size, stride, pad, x.shape[1:])[0].numpy()
            assert np.array_equal(engine.max_unpool2d(out, where, x.shape[1:]), unpooled)
    try:
        mean = F.avg_pool2d(t, size, stride, pad, ceil_mode, count_include_pad)[0].numpy()
    except RuntimeError:
        with pytest.raises(ShapeError):
            engine.avg_pool2d(x, size, stride, padding, ceil_mode, count_include_pad)
    else:
        assert_matches(
            engine.avg_pool2d(x, size, stride, padding, ceil_mode, count_include_pad), mean
        )


def test_global_pool_equals_torch(F, rng):
    import torch

    x = rng.standard_normal((3, 7, 5)).astype(np.float32)
    t = torch.from_numpy(x)[None]
    assert_matches(engine.global_pool(x), F.adaptive_avg_pool2d(t, 1).numpy().ravel())
    assert np.array_equal(engine.global_pool(x, "max"), F.adaptive_max_pool2d(t, 1).numpy().ravel())


@pytest.mark.parametrize("band_bytes", [64, 4 << 20])
@given(case=pool_cases(), count_include_pad=st.booleans())
def test_numpy_pooling_in_bands_of_one_row_matches_naive(band_bytes, case, count_include_pad):
    """The numpy method pads band by band: bands of one output row each meet every edge case."""
    from convcli.engine import pooling

    x, size, stride, dilation, padding, ceil_mode = case
    pads = naive.explicit_pads(padding, x.shape[1:], size, stride, dilation)
    if not _fits(x, size, stride, pads, dilation, ceil_mode):
        return
    saved, pooling.BAND_BYTES = pooling.BAND_BYTES, band_bytes
    try:
        values = engine.max_pool2d(x, size, stride, padding, dilation, ceil_mode, method="numpy")
        _, where = engine.max_pool2d(
            x, size, stride, padding, dilation, ceil_mode, return_indices=True, method="numpy"
        )
        flat_pads = naive.explicit_pads(padding, x.shape[1:], size, stride, (1, 1))
        mean = None
        if _fits(x, size, stride, flat_pads, (1, 1), ceil_mode):
            mean = engine.avg_pool2d(
                x, size, stride, padding, ceil_mode, count_include_pad, method="numpy"
            )
    finally:
        pooling.BAND_BYTES = saved
    expected, expected_where = naive.max_pool2d(x, size, stride, pads, dilation, ceil_mode)
    assert np.array_equal(values, expected) and np.array_equal(where, expected_where)
    if mean is not None:
        include = count_include_pad and padding != "same"
        assert_matches(mean, naive.avg_pool2d(x, size, stride, flat_pads, ceil_mode, include))


@given(case=pool_cases(), specials=st.lists(st.sampled_from([np.nan, -np.inf, np.inf]), max_size=4))
def test_both_methods_give_naive_indices_with_nan_and_infinities(case, specials):
    x, size, stride, dilation, padding, ceil_mode = case
    pads = naive.explicit_pads(padding, x.shape[1:], size, stride, dilation)
    if not _fits(x, size, stride, pads, dilation, ceil_mode):
        return
    x = x.copy()
    for number, value in enumerate(specials):  # spread over the plane, NaN among them
        x.flat[(number * 7) % x.size] = value
    expected, expected_where = naive.max_pool2d(x, size, stride, pads, dilation, ceil_mode)
    for method in ("numpy", "numba"):
        out, where = engine.max_pool2d(
            x, size, stride, padding, dilation, ceil_mode, return_indices=True, method=method
        )
        assert np.array_equal(out, expected, equal_nan=True), method
        assert np.array_equal(where, expected_where), method
