"""One layer type: the explain language, pipeline files and the CLI's options build the same
``layers.spec.Layer``, and ``explain.trace`` traces a pipeline's layers (resolved kernels) as it
traces the language's (filters and a kernel size), with output shapes as PyTorch computes them."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convcli import explain
from convcli.layers.spec import Layer
from convcli.pipeline import make_step, parse_pipeline

torch = pytest.importorskip("torch")


def test_the_language_a_pipeline_and_the_options_build_one_type():
    written = explain.parse_step("maxpool k3 s2 p1")
    filed = parse_pipeline([{"op": "pool", "size": 3, "stride": 2, "padding": 1}]).steps[0]
    option = make_step("pool", size=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1))
    assert all(type(layer) is Layer for layer in (written, filed, option))
    assert (written.op, written.params["size"], written.params["stride"]) == (
        "pool",
        (3, 3),
        (2, 2),
    )
    assert (filed.op, filed.params["size"], filed.params["padding"]) == ("pool", (3, 3), (1,) * 4)


@settings(deadline=None, max_examples=25)
@given(
    height=st.integers(3, 12),
    width=st.integers(3, 12),
    channels=st.integers(1, 3),
    size=st.integers(1, 3),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
    pad=st.integers(0, 1),
)
def test_a_pipeline_conv_layer_traces_directly_as_torch_shapes_it(
    height, width, channels, size, stride, dilation, pad
):
    conv = {"op": "conv", "kernel": f"box:size={size}", "stride": stride, "padding": pad}
    layers = parse_pipeline([{**conv, "dilation": dilation}]).steps
    result = explain.trace((height, width, channels), layers)
    # a 2-D kernel is one filter per channel: PyTorch's depthwise conv2d
    weight = torch.ones((channels, 1, size, size))
    reach = dilation * (size - 1) + 1
    if min(height, width) + 2 * pad < reach:  # PyTorch refuses it; the trace says why
        assert "is larger than the padded input" in result.error
        return
    out = torch.nn.functional.conv2d(
        torch.ones((1, channels, height, width)),
        weight,
        stride=stride,
        padding=pad,
        dilation=dilation,
        groups=channels,
    )
    row = result.rows[0]
    assert row.output == (out.shape[2], out.shape[3], out.shape[1])
    assert (row.kernel, row.groups, row.params) == ((size, size), channels, weight.numel())


def test_a_pipeline_pool_layer_traces_as_the_language_writes_it():
    filed = parse_pipeline([{"op": "pool", "size": 3, "stride": 2, "padding": 1}]).steps
    written = [explain.parse_step("maxpool k3 s2 p1")]
    reference = torch.nn.functional.max_pool2d(torch.ones((1, 2, 9, 7)), 3, 2, 1).shape
    for layers in (filed, written):
        row = explain.trace((9, 7, 2), layers).rows[0]
        assert row.output == (reference[2], reference[3], reference[1])
        assert row.arithmetic == explain.trace((9, 7, 2), written).rows[0].arithmetic
