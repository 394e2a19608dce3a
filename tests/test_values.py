"""One normaliser per field: a pair, a padding or a count reads the same whether an option or a
step token writes it as text or a pipeline file or a mapping step gives it as data."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convcli import explain
from convcli.errors import FieldError, ParameterError
from convcli.layers.values import parse_count, parse_padding, parse_pair
from convcli.pipeline import parse_pipeline

whole = st.integers(0, 50)


@settings(deadline=None, max_examples=50)
@given(rows=whole, cols=whole)
def test_a_pair_as_text_and_as_data_is_the_same_pair(rows, cols):
    assert (
        parse_pair([rows, cols], "stride", 0)
        == parse_pair(f"{rows},{cols}", "stride", 0)
        == (rows, cols)
    )
    assert parse_pair(rows, "stride", 0) == parse_pair(str(rows), "stride", 0) == (rows, rows)


@settings(deadline=None, max_examples=50)
@given(counts=st.lists(whole, min_size=1, max_size=4).filter(lambda c: len(c) != 3))
def test_a_padding_as_text_and_as_data_is_the_same_padding(counts):
    rows, cols = counts[0], counts[-1]
    expected = tuple(counts) if len(counts) == 4 else (rows, rows, cols, cols)
    assert parse_padding(counts) == parse_padding(",".join(map(str, counts))) == expected


def test_a_pipeline_field_takes_the_text_an_option_takes():
    pipe = parse_pipeline([{"op": "pool", "size": "3", "stride": "2,1", "padding": "1,0"}])
    params = pipe.steps[0].params
    assert (params["size"], params["stride"], params["padding"]) == ((3, 3), (2, 1), (1, 1, 0, 0))


def test_a_field_error_reads_as_words_or_after_the_field_name():
    with pytest.raises(FieldError) as caught:
        parse_pair(0, "size")
    assert (str(caught.value), caught.value.detail) == (
        "size must be at least 1, got 0",
        "must be at least 1, got 0",
    )
    with pytest.raises(
        ParameterError, match=r"^p.yaml: step 1 \(pool\): size: must be at least 1, got 0$"
    ):
        parse_pipeline([{"op": "pool", "size": 0}], "p.yaml")
    with pytest.raises(
        ParameterError, match=r"^step 3: field 'kernel': kernel must be at least 1, got 0$"
    ):
        explain.step_from_dict({"op": "conv", "filters": 4, "kernel": 0}, 3)


def test_a_mapping_step_reports_its_data_as_data():
    with pytest.raises(ParameterError, match=r"kernel takes N or \[rows, cols\], got \[1, 2, 3\]$"):
        explain.step_from_dict({"op": "conv", "filters": 4, "kernel": [1, 2, 3]})
    with pytest.raises(ParameterError, match=r"filters must be a whole number, got 2\.5$"):
        explain.step_from_dict({"op": "conv", "filters": 2.5, "kernel": 3})


def test_a_count_takes_a_number_or_its_digits():
    assert parse_count(4, "groups") == parse_count(" 4 ", "groups") == 4
    with pytest.raises(FieldError, match="^groups must be at most 8, got 9$"):
        parse_count(9, "groups", maximum=8)
    with pytest.raises(FieldError, match="^groups must be a whole number, got True$"):
        parse_count(True, "groups")
