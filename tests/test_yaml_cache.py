"""A YAML file's document is cached by path and whole text (``io.yamlsafe``): reading it again
gives the same data without parsing, and anything else than the same text is parsed again."""

import json
import os

import pytest

from convcli.errors import InputError
from convcli.io import yamlsafe


@pytest.fixture
def parses(tmp_path, monkeypatch):
    """The texts ``yamlsafe`` parsed (from files, not the cache), in a fresh cache folder."""
    monkeypatch.setenv("CONVCLI_CACHE_DIR", str(tmp_path / "cache"))
    seen = []
    parse = yamlsafe._parse

    def counted(text, what, error):
        seen.append(text)
        return parse(text, what, error)

    monkeypatch.setattr(yamlsafe, "_parse", counted)
    return seen


def test_a_file_read_again_is_not_parsed_again(tmp_path, parses):
    path = tmp_path / "steps.yaml"
    path.write_text("steps: [gray, {op: conv, kernel: box, bias: 0.5}]\nflag: true\nn: 3\n")
    first = yamlsafe.load_yaml_safely(str(path), "pipeline")
    second = yamlsafe.load_yaml_safely(str(path), "pipeline")
    assert (
        first
        == second
        == {
            "steps": ["gray", {"op": "conv", "kernel": "box", "bias": 0.5}],
            "flag": True,
            "n": 3,
        }
    )
    assert [type(v) for v in second.values()] == [list, bool, int]
    assert len(parses) == 1
    path.write_text("n: 4\n")  # the same path, another text: parsed, and cached anew
    assert yamlsafe.load_yaml_safely(str(path), "pipeline") == {"n": 4}
    assert yamlsafe.load_yaml_safely(str(path), "pipeline") == {"n": 4}
    assert len(parses) == 2


def test_documents_json_cannot_give_back_are_parsed_every_time(tmp_path, parses):
    path = tmp_path / "odd.yaml"
    for text, document in (("1: one\n", {1: "one"}), ("x: .nan\n", None)):
        path.write_text(text)
        for _ in range(2):
            got = yamlsafe.load_yaml_safely(str(path), "odd")
            assert got == document if document else got["x"] != got["x"]
    assert len(parses) == 4


def test_errors_are_not_cached_and_a_damaged_cache_is_parsed_again(tmp_path, parses):
    path = tmp_path / "k.yaml"
    path.write_text("a: [1\n")
    for _ in range(2):
        with pytest.raises(InputError, match="not valid YAML"):
            yamlsafe.load_yaml_safely(str(path), "k")
    path.write_text("a: 1\n")
    assert yamlsafe.load_yaml_safely(str(path), "k") == {"a": 1}
    cache = yamlsafe.cache_file(str(path))
    for damage in ("{", json.dumps({"path": str(path), "text": "a: 1\n"}), "[]"):
        with open(cache, "w") as handle:
            handle.write(damage)
        assert yamlsafe.load_yaml_safely(str(path), "k") == {"a": 1}
    assert len(parses) == 2 + 1 + 3
    other = tmp_path / "other.yaml"  # a cache file holding another path's document
    other.write_text("a: 1\n")
    os.replace(cache, yamlsafe.cache_file(str(other)))
    with open(yamlsafe.cache_file(str(other))) as handle:
        assert json.load(handle)["path"] == str(path)
    assert yamlsafe.load_yaml_safely(str(other), "k") == {"a": 1}
    assert len(parses) == 7


def test_an_unwritable_cache_folder_only_costs_a_parse(tmp_path, parses, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("CONVCLI_CACHE_DIR", str(blocker / "cache"))
    path = tmp_path / "k.yaml"
    path.write_text("a: 1\n")
    assert [yamlsafe.load_yaml_safely(str(path), "k") for _ in range(2)] == [{"a": 1}] * 2
    assert len(parses) == 2
