"""Batch planning and execution, independent of any image operation."""

import os

import pytest

from convcli import batch
from convcli.batch import plan, report
from convcli.errors import ConvcliError, InputError, OutputError, ParameterError


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
    assert paths(plan.expand_inputs([str(tree / "in")])) == ["a.png", "b.jpg"]
    assert paths(plan.expand_inputs([str(tree / "in")], recursive=True)) == [
        "a.png",
        "b.jpg",
        "sub/c.png",
        "sub/deeper/d.npy",
    ]


def test_glob_patterns_and_missing_matches(tree):
    found = plan.expand_inputs([str(tree / "in" / "*.png")])
    assert [os.path.basename(s.path) for s in found] == ["a.png"]
    with pytest.raises(InputError, match="matches no files"):
        plan.expand_inputs([str(tree / "in" / "*.tif")])


def test_out_dir_keeps_relative_paths(tree):
    sources = plan.expand_inputs([str(tree / "in")], recursive=True)
    pairs = plan.plan_outputs(
        sources, out_dir=str(tree / "out"), template="{stem}_k.{ext}", ext="png"
    )
    assert [os.path.relpath(t, tree / "out") for _, t in pairs] == [
        "a_k.png",
        "b_k.png",
        "sub/c_k.png",
        "sub/deeper/d_k.png",
    ]


def test_two_inputs_to_one_output_is_refused(tree):
    sources = [str(tree / "in" / "a.png"), str(tree / "in" / "sub" / "c.png")]
    with pytest.raises(OutputError, match="would both be written"):
        plan.plan_outputs(sources, out_dir=str(tree / "out"), template="same.png")


def test_template_may_not_escape_out_dir(tree):
    with pytest.raises(OutputError, match="escapes --out-dir"):
        plan.plan_outputs(
            [str(tree / "in" / "a.png")], out_dir=str(tree / "out"), template="../{stem}.png"
        )


def test_output_may_not_be_an_input(tree):
    with pytest.raises(OutputError, match="never overwrites an input"):
        plan.plan_outputs([str(tree / "in" / "a.png")], out_dir=str(tree / "in"), template="{name}")


def test_bad_template_names_its_fields(tree):
    with pytest.raises(OutputError, match=r"fields: \{stem\}"):
        plan.plan_outputs(
            [str(tree / "in" / "a.png")], out_dir=str(tree / "out"), template="{colour}.png"
        )


def test_several_inputs_need_out_dir(tree):
    with pytest.raises(OutputError, match="need --out-dir"):
        plan.plan_outputs([str(tree / "in" / "a.png"), str(tree / "in" / "b.jpg")], output="x.png")


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
        pairs = plan.plan_outputs(sources, out_dir=str(out), template="{name}")
        records = batch.run_batch(pairs, reverse_job, batch.RunOptions(jobs=jobs))
        assert [r.status for r in records].count("failed") == 1
        assert next(r for r in records if r.status == "failed").error.endswith("is bad")
        results[jobs] = {p.name: p.read_bytes() for p in out.iterdir()}
    assert results[1] == results[2] and len(results[1]) == 7
    assert not [p for p in tmp_path.rglob(".convcli-*")]


def test_skipped_outputs_are_not_run(tmp_path):
    source = touch(tmp_path / "ok.bin")
    target = tmp_path / "out.bin"
    records = batch.run_batch(
        [(str(source), str(target))], reverse_job, batch.RunOptions(skip=frozenset({str(target)}))
    )
    assert records[0].status == "skipped" and not target.exists()


def broken_job(source, target):
    raise ValueError("a bug")


def test_an_unexpected_error_is_a_failed_record_unless_debugging(tmp_path):
    record = report.run_one(broken_job, "in.png", "out.png")
    assert record.status == "failed"
    assert record.error == (
        "internal error on 'in.png' (ValueError: a bug); please report it "
        "(convcli --traceback shows where)"
    )
    with pytest.raises(ValueError, match="a bug"):
        report.run_one(broken_job, "in.png", "out.png", debug=True)


class ReversedExecutor:
    """An executor that runs the pairs last first, in this process, and notes what it ran."""

    ran: list = []

    def __init__(self, options):
        self.options = options

    def execute(self, pairs, task):
        for source, target in reversed(pairs):
            ReversedExecutor.ran.append(source)
            yield task(source, target)


def test_run_batch_runs_on_the_executor_named_and_keeps_the_planned_order(tmp_path, monkeypatch):
    monkeypatch.setitem(batch.EXECUTORS, "reversed", f"{__name__}:ReversedExecutor")
    sources = [str(tmp_path / name) for name in ("a.bin", "bad.bin", "c.bin")]
    for source in sources:
        touch(tmp_path / source).write_bytes(b"abc")
    pairs = [(source, source + ".out") for source in sources]
    seen = []
    ReversedExecutor.ran.clear()
    records = batch.run_batch(
        pairs, reverse_job, batch.RunOptions(executor="reversed"), seen.append
    )
    assert ReversedExecutor.ran == sources[::-1] and [r.input for r in seen] == sources[::-1]
    assert [r.input for r in records] == sources
    assert [r.status for r in records] == ["done", "failed", "done"]
    assert (tmp_path / "a.bin.out").read_bytes() == b"cba"


def test_an_unknown_executor_is_refused_with_the_known_ones():
    with pytest.raises(ParameterError, match="^executor .*local"):
        batch.run_batch([("a", "b")], reverse_job, batch.RunOptions(executor="nowhere"))


def test_plan_outputs_resolves_each_folder_once(tmp_path, monkeypatch):
    sources = [str(touch(tmp_path / "in" / f"{index}.png")) for index in range(30)]
    resolved = []
    realpath = os.path.realpath
    monkeypatch.setattr(os.path, "realpath", lambda path: resolved.append(path) or realpath(path))
    pairs = plan.plan_outputs(sources, out_dir=str(tmp_path / "out"), template="{stem}.npy")
    assert pairs == [(s, str(tmp_path / "out" / f"{i}.npy")) for i, s in enumerate(sources)]
    assert len(resolved) <= 3  # the input folder, the output folder, --out-dir itself
