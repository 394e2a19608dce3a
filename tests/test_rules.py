"""The rules between a layer's parameters: one check and one message wherever it fires (the
engine, ``explain``'s step language and traces, pipeline files), accepting what PyTorch accepts."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convcli import engine, explain
from convcli.errors import ParameterError
from convcli.layers import rules
from convcli.pipeline import parse_pipeline

ONE = np.ones((1, 4, 4), np.float32)


def _message(call) -> str:
    with pytest.raises(ParameterError) as caught:
        call()
    return str(caught.value)


def _step_message(text: str) -> str:
    """The message of an explain step, without its ``step 1 'text': token 'x':`` prefix."""
    return _message(lambda: explain.parse_step(text)).split(": ", 2)[2]


def _pipeline_message(steps: str) -> str:
    """The message of a pipeline file, without its ``p.yaml: step 1 (op): field:`` prefix."""
    import yaml

    return _message(lambda: parse_pipeline(yaml.safe_load(steps), "p.yaml")).split(": ", 3)[3]


def test_pool_padding_reads_the_same_from_the_engine_explain_and_a_pipeline():
    expected = (
        "pooling padding 2 is more than half the window 3x3: at most 1 rows and 1 columns per side "
        "(PyTorch's limit)"
    )
    assert _message(lambda: engine.max_pool2d(ONE, (3, 3), padding=(2, 2, 2, 2))) == expected
    assert _message(lambda: engine.avg_pool2d(ONE, (3, 3), padding=(2, 2, 2, 2))) == expected
    assert _step_message("maxpool k3 p2") == expected
    assert _pipeline_message("[{op: pool, size: 3, padding: 2}]") == expected
    assert (
        _message(lambda: explain.by_hand_pool([[1.0] * 4] * 4, "max", (3, 3), padding=(2, 2, 2, 2)))
        == expected
    )


def test_output_padding_reads_the_same_in_words_and_as_a_field():
    words = "output padding 2x2 must be smaller than the stride (2x2) or the dilation (1x1)"
    kernel = np.ones((3, 3), np.float32)
    assert (
        _message(
            lambda: engine.conv_transpose2d(
                ONE, kernel, stride=(2, 2), padding=(1, 1), output_padding=(2, 2)
            )
        )
        == words
    )
    assert _step_message("transposed 1 k3 s2 p1 op2") == words
    assert _pipeline_message(
        "[{op: transposed, kernel: box, stride: 2, padding: 1, output_padding: 2}]"
    ) == ("must be smaller than the stride [2, 2] or the dilation [1, 1], got [2, 2]")


def test_output_padding_with_same_reads_the_same_everywhere():
    kernel = np.ones((3, 3), np.float32)
    words = "output padding 1x1 does not apply to padding 'same' (the output is input x stride)"
    assert (
        _message(
            lambda: engine.conv_transpose2d(
                ONE, kernel, stride=(2, 2), padding="same", output_padding=(1, 1)
            )
        )
        == words
    )
    assert _step_message("transposed 1 k3 s2 same op1") == words
    assert _pipeline_message("[{op: transposed, kernel: box, stride: 2, output_padding: 1}]") == (
        "does not apply to padding 'same' (the output is input x stride), got [1, 1]"
    )


def test_cropped_padding_names_the_layer_and_the_notation():
    assert _message(
        lambda: engine.conv_transpose2d(ONE, np.ones((3, 3), np.float32), padding=(0, 1, 0, 0))
    ) == ("transposed convolution takes padding same, valid, N or H,W (cropped from both sides)")
    assert _step_message("transposed 1 k3 p0,1,0,1") == (
        "transposed takes padding same, valid, N or H,W (cropped from both sides)"
    )
    assert (
        _step_message("unpool k2 same")
        == "unpool takes padding valid, N or H,W (cropped from both sides)"
    )
    assert _pipeline_message("[{op: transposed, kernel: box, padding: [0, 1, 0, 0]}]") == (
        "transposed takes same, valid, N or [rows, cols] (cropped from both sides)"
    )


def test_groups_read_the_same_from_the_engine_and_a_trace():
    message = _message(
        lambda: engine.conv2d(
            np.ones((6, 4, 4), np.float32), np.ones((8, 1, 1, 1), np.float32), groups=4
        )
    )
    assert (
        message
        == "groups 4 must divide both the input channels (6) and the kernel's output channels (8)"
    )
    assert explain.trace((4, 4, 6), [explain.parse_step("conv 8 k1 g4")]).error == (
        "step 1 'conv 8 k1 g4': groups 4 must divide both the input channels (6) "
        "and the filters (8)"
    )
    with pytest.raises(rules.RuleError, match=r"^groups 4 must divide the input channels \(6\)$"):
        engine.conv_transpose2d(
            np.ones((6, 4, 4), np.float32), np.ones((6, 1, 1, 1), np.float32), groups=4
        )


def test_a_rule_error_names_the_parameter_it_blames():
    with pytest.raises(rules.RuleError) as caught:
        engine.conv_transpose2d(
            ONE, np.ones((2, 2), np.float32), stride=(2, 2), output_padding=(0, 3)
        )
    assert caught.value.parameter == "output_padding"
    with pytest.raises(rules.RuleError) as caught:
        engine.max_pool2d(ONE, (2, 2), padding="full")
    assert caught.value.parameter == "padding"


@settings(deadline=None, max_examples=60)
@given(stride=st.integers(1, 3), dilation=st.integers(1, 3), extra=st.integers(0, 4))
def test_output_padding_accepts_what_torch_accepts(stride, dilation, extra):
    torch = pytest.importorskip("torch")
    x, w = torch.ones(1, 1, 3, 3), torch.ones(1, 1, 2, 2)
    try:
        torch.nn.functional.conv_transpose2d(
            x, w, stride=stride, output_padding=extra, dilation=dilation
        )
        torch_accepts = True
    except RuntimeError:
        torch_accepts = False
    try:
        rules.output_padding((extra, extra), (stride, stride), (dilation, dilation), (0, 0, 0, 0))
        accepted = True
    except rules.RuleError:
        accepted = False
    assert accepted == torch_accepts


@settings(deadline=None, max_examples=60)
@given(size=st.integers(1, 5), padding=st.integers(0, 4))
def test_pool_padding_accepts_what_torch_accepts(size, padding):
    torch = pytest.importorskip("torch")
    x = torch.ones(1, 1, 12, 12)
    try:
        torch.nn.functional.max_pool2d(x, size, padding=padding)
        torch_accepts = True
    except RuntimeError:
        torch_accepts = False
    try:
        rules.pool_padding((padding,) * 4, (size, size), False)
        accepted = True
    except rules.RuleError:
        accepted = False
    assert accepted == torch_accepts


def test_rule_and_field_errors_cross_to_a_worker_process_and_back():
    """A batch's worker sends errors back pickled: type, message, parameter and detail survive."""
    import pickle

    from convcli.errors import FieldError
    from convcli.layers.values import parse_pair

    errors = []
    for broken in (
        lambda: rules.output_padding((2, 2), (2, 2), (1, 1), "valid"),
        lambda: parse_pair(0, "size"),
    ):
        with pytest.raises(FieldError) as caught:
            broken()
        errors.append(caught.value)
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert (type(copy), str(copy), copy.parameter, copy.detail) == (
            type(error),
            str(error),
            error.parameter,
            error.detail,
        )
