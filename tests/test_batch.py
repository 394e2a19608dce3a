"""Batch planning and execution, independent of any image operation."""

import os

import pytest

from convcli import batch
from convcli.errors import ConvcliError, InputError, OutputError


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


@pytest.fixture
def tree(tmp_path):
    for name in ["a.png", "b.jpg", "notes.txt", ".hidden.png", "sub/c.png", "sub/deeper/d.npy"]:
        touch(tmp_path / "in" / name)
    return tmp_path


def paths(sources):
    return [os.path.relpath(s.path, s.root) for s in sources]


def test_directory_scan_is_shallow_unless_recursive(tree):
    assert paths(batch.expand_inputs([str(tree / "in")])) == ["a.png", "b.jpg"]
    assert paths(batch.expand_inputs([str(tree / "in")], recursive=True)) == [
        "a.png", "b.jpg", "sub/c.png", "sub/deeper/d.npy"]


def test_glob_patterns_and_missing_matches(tree):
    found = batch.expand_inputs([str(tree / "in" / "*.png")])
    assert [os.path.basename(s.path) for s in found] == ["a.png"]
    with pytest.raises(InputError, match="matches no files"):
        batch.expand_inputs([str(tree / "in" / "*.tif")])


def test_out_dir_keeps_relative_paths(tree):
    sources = batch.expand_inputs([str(tree / "in")], recursive=True)
    pairs = batch.plan_outputs(sources, out_dir=str(tree / "out"), template="{stem}_k.{ext}", ext="png")
    assert [os.path.relpath(t, tree / "out") for _, t in pairs] == [
        "a_k.png", "b_k.png", "sub/c_k.png", "sub/deeper/d_k.png"]


def test_two_inputs_to_one_output_is_refused(tree):
    sources = [str(tree / "in" / "a.png"), str(tree / "in" / "sub" / "c.png")]
    with pytest.raises(OutputError, match="would both be written"):
        batch.plan_outputs(sources, out_dir=str(tree / "out"), template="same.png")


def test_template_may_not_escape_out_dir(tree):
    with pytest.raises(OutputError, match="escapes --out-dir"):
        batch.plan_outputs([str(tree / "in" / "a.png")], out_dir=str(tree / "out"), template="../{stem}.png")


def test_output_may_not_be_an_input(tree):
    with pytest.raises(OutputError, match="never overwrites an input"):
        batch.plan_outputs([str(tree / "in" / "a.png")], out_dir=str(tree / "in"), template="{name}")


def test_bad_template_names_its_fields(tree):
    with pytest.raises(OutputError, match=r"fields: \{stem\}"):
        batch.plan_outputs([str(tree / "in" / "a.png")], out_dir=str(tree / "out"), template="{colour}.png")


def test_several_inputs_need_out_dir(tree):
    with pytest.raises(OutputError, match="need --out-dir"):
        batch.plan_outputs([str(tree / "in" / "a.png"), str(tree / "in" / "b.jpg")], output="x.png")


def reverse_job(source, target):
    """A picklable job: write the input's bytes reversed; fail on files named bad*."""
    from convcli.io.atomic import atomic_write

    if os.path.basename(source).startswith("bad"):
        raise ConvcliError(f"input {source!r} is bad")
    with open(source, "rb") as handle:
        data = handle.read()[::-1]
    atomic_write(target, lambda handle: handle.write(data))
    return {"input_shape": [len(data)], "output_shape": [len(data)]}


def test_parallel_run_equals_serial_and_reports_failures(tmp_path):
    sources = []
    for index in range(8):
        path = tmp_path / "in" / f"{'bad' if index == 3 else 'ok'}{index}.bin"
        touch(path).write_bytes(os.urandom(100 + index))
        sources.append(str(path))
    results = {}
    for jobs in (1, 2):
        out = tmp_path / f"out{jobs}"
        out.mkdir()
        pairs = batch.plan_outputs(sources, out_dir=str(out), template="{name}")
        records = batch.Batch(pairs, jobs=jobs).run(reverse_job)
        assert [r.status for r in records].count("failed") == 1
        assert next(r for r in records if r.status == "failed").error.endswith("is bad")
        results[jobs] = {p.name: p.read_bytes() for p in out.iterdir()}
    assert results[1] == results[2] and len(results[1]) == 7
    assert not [p for p in tmp_path.rglob(".convcli-*")]


def test_skipped_outputs_are_not_run(tmp_path):
    source = touch(tmp_path / "ok.bin")
    target = tmp_path / "out.bin"
    records = batch.Batch([(str(source), str(target))], skip={str(target)}).run(reverse_job)
    assert records[0].status == "skipped" and not target.exists()


def broken_job(source, target):
    raise ValueError("a bug")


def test_an_unexpected_error_is_a_failed_record_unless_debugging(tmp_path):
    record = batch.run_one(broken_job, "in.png", "out.png")
    assert record.status == "failed"
    assert record.error == ("internal error on 'in.png' (ValueError: a bug); please report it "
                            "(convcli --traceback shows where)")
    with pytest.raises(ValueError, match="a bug"):
        batch.run_one(broken_job, "in.png", "out.png", debug=True)
