"""Cross-checks against PyTorch (installed by the ``ref`` extra); skipped without it."""

import naive
import numpy as np
import pytest
from conftest import assert_matches
from hypothesis import given
from hypothesis import strategies as st

from convcli import engine
from convcli.errors import ConvcliError

torch = pytest.importorskip("torch")
F = torch.nn.functional

TORCH_MODES = {
    "zeros": "constant",
    "reflect": "reflect",
    "replicate": "replicate",
    "circular": "circular",
}


def torch_conv(x, weight, bias, stride, pads, dilation, groups, mode):
    top, bottom, left, right = pads
    t = torch.from_numpy(x)[None]
    if any(pads):
        t = F.pad(t, (left, right, top, bottom), mode=TORCH_MODES[mode])
    b = None if bias is None else torch.tensor(bias, dtype=torch.float32)
    return F.conv2d(
        t, torch.from_numpy(np.ascontiguousarray(weight)), b, stride, 0, dilation, groups
    )[0].numpy()


@given(
    channels=st.integers(1, 2),
    groups=st.sampled_from([1, 2]),
    per_group_out=st.integers(1, 2),
    hw=st.tuples(st.integers(3, 12), st.integers(3, 12)),
    k=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pad=st.integers(0, 2),
    mode=st.sampled_from(list(TORCH_MODES)),
    with_bias=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_conv2d_equals_torch(
    channels, groups, per_group_out, hw, k, stride, dilation, pad, mode, with_bias, seed
):
    rng = np.random.default_rng(seed)
    c_in, c_out = channels * groups, per_group_out * groups
    x = rng.standard_normal((c_in,) + hw).astype(np.float32)
    w = rng.standard_normal((c_out, channels) + k).astype(np.float32)
    bias = list(rng.standard_normal(c_out)) if with_bias else None
    pads = (pad,) * 4
    if mode == "reflect" and pad >= min(hw):
        return
    try:
        expected = torch_conv(x, w, bias, stride, pads, dilation, groups, mode)
    except RuntimeError:  # torch rejects the shapes: so must we
        with pytest.raises(ConvcliError):
            engine.conv2d(
                x,
                w,
                bias,
                stride=stride,
                padding=pads,
                dilation=dilation,
                groups=groups,
                pad_mode=mode,
            )
        return
    out = engine.conv2d(
        x, w, bias, stride=stride, padding=pads, dilation=dilation, groups=groups, pad_mode=mode
    )
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


@given(
    size=st.integers(1, 13), k=st.integers(1, 5), stride=st.integers(1, 4), seed=st.integers(0, 100)
)
def test_same_at_any_stride_equals_tf_rule_through_torch(size, k, stride, seed):
    """Keras Conv2D(padding='same', strides=s) == torch conv2d on the TF-padded input."""
    x = np.random.default_rng(seed).standard_normal((1, size, size + 1)).astype(np.float32)
    w = np.random.default_rng(seed + 1).standard_normal((1, 1, k, k)).astype(np.float32)
    pads = naive.tf_same_pads(size, k, stride) + naive.tf_same_pads(size + 1, k, stride)
    expected = torch_conv(x, w, None, (stride, stride), pads, (1, 1), 1, "zeros")
    out = engine.conv2d(x, w, stride=(stride, stride), padding="same")
    assert out.shape[1:] == (-(-size // stride), -(-(size + 1) // stride))
    assert_matches(out, expected)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_torch_same_at_stride_one_agrees():
    x = np.random.default_rng(0).standard_normal((1, 7, 6)).astype(np.float32)
    for k, d in [(4, 1), (4, 2), (2, 3), (3, 1)]:
        w = np.random.default_rng(k).standard_normal((1, 1, k, k)).astype(np.float32)
        expected = F.conv2d(
            torch.from_numpy(x)[None], torch.from_numpy(w), padding="same", dilation=d
        )[0].numpy()
        assert_matches(engine.conv2d(x, w, padding="same", dilation=(d, d)), expected)
