"""Cross-checks against Keras 3 (the ``ref`` extra, PyTorch backend); skipped without it.

Keras is the reference for ``same`` at any stride (TensorFlow's rule: out = ceil(in/s), the odd
padding pixel bottom/right) in Conv2D, Conv2DTranspose and the pooling layers.
"""

import os

import numpy as np
import pytest
from conftest import assert_matches
from hypothesis import given
from hypothesis import strategies as st

from convcli import engine

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def nchw(x):
    return x[0].transpose(2, 0, 1)


def to_numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


sizes = st.tuples(st.integers(2, 11), st.integers(2, 11))


@given(hw=sizes, k=st.integers(1, 5), stride=st.integers(1, 3), seed=st.integers(0, 1000))
def test_conv2d_same_at_any_stride_equals_keras(hw, k, stride, seed):
    x = np.random.default_rng(seed).random((1, *hw, 2), dtype=np.float32)
    layer = keras.layers.Conv2D(3, k, strides=stride, padding="same", use_bias=False)
    expected = to_numpy(layer(x))[0]
    kernel = layer.get_weights()[0].transpose(3, 2, 0, 1)  # HWIO -> OIHW
    assert_matches(
        engine.conv2d(nchw(x), kernel, stride=(stride, stride)).transpose(1, 2, 0), expected
    )


@given(hw=sizes, k=st.integers(1, 5), stride=st.integers(1, 3), seed=st.integers(0, 1000))
def test_conv2d_transpose_same_equals_keras(hw, k, stride, seed):
    x = np.random.default_rng(seed).random((1, *hw, 2), dtype=np.float32)
    layer = keras.layers.Conv2DTranspose(3, k, strides=stride, padding="same", use_bias=False)
    expected = to_numpy(layer(x))[0]
    kernel = layer.get_weights()[0].transpose(3, 2, 0, 1)  # (kh, kw, out, in) -> (in, out, kh, kw)
    out = engine.conv_transpose2d(nchw(x), kernel, stride=(stride, stride), padding="same")
    assert_matches(out.transpose(1, 2, 0), expected)


@given(hw=sizes, k=st.integers(1, 4), stride=st.integers(1, 3), seed=st.integers(0, 1000))
def test_max_pool_same_equals_keras(hw, k, stride, seed):
    x = (
        np.random.default_rng(seed).random((1, *hw, 2), dtype=np.float32) - 2.0
    )  # pads must never win
    expected = to_numpy(keras.layers.MaxPooling2D(k, stride, padding="same")(x))[0]
    out = engine.max_pool2d(nchw(x), (k, k), (stride, stride), "same")
    assert_matches(out.transpose(1, 2, 0), expected)


@given(hw=sizes, k=st.integers(1, 4), stride=st.integers(1, 3), seed=st.integers(0, 1000))
def test_avg_pool_same_equals_keras_where_padding_is_symmetric(hw, k, stride, seed):
    """Padded cells never count in the mean. Keras's PyTorch backend pads an asymmetric SAME
    explicitly and then counts those zeros, unlike TensorFlow; so compare the symmetric cases
    (the asymmetric ones are pinned to TensorFlow's verified values in test_pool.py)."""
    totals = [max((-(-n // stride) - 1) * stride + k - n, 0) for n in hw]
    if any(total % 2 for total in totals):
        return
    x = np.random.default_rng(seed).random((1, *hw, 2), dtype=np.float32)
    expected = to_numpy(keras.layers.AveragePooling2D(k, stride, padding="same")(x))[0]
    out = engine.avg_pool2d(nchw(x), (k, k), (stride, stride), "same")
    assert_matches(out.transpose(1, 2, 0), expected)
