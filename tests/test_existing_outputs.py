"""Whether an output exists is checked once (issue 19: the plan and the write both checked).

The plan looks at every output before any work; the write then puts each file in place with a
rename that refuses to replace (a hard link), so that a file appearing between the two is
refused, never silently replaced, without a second look.
"""

import errno
import os
from collections import Counter

import numpy as np
import pytest
from conftest import refused, run

from convcli.errors import OutputError
from convcli.io import atomic


@pytest.fixture
def looks(monkeypatch):
    """Every path ``atomic.taken`` is asked about (the existing-output check), counted."""
    counted = Counter()
    taken = atomic.taken

    def counting(path):
        counted[os.path.basename(path)] += 1
        return taken(path)

    monkeypatch.setattr(atomic, "taken", counting)
    return counted


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b", "c"):
        np.save(tmp_path / f"{name}.npy", np.arange(16, dtype=np.float32).reshape(4, 4))
    return tmp_path


@pytest.mark.parametrize("extra", [[], ["--overwrite"], ["--skip-existing"]])
def test_each_output_of_a_batch_is_checked_once(inputs, looks, extra):
    # --jobs 1: in this process, where the looks are counted
    result = run(
        "conv", "a.npy", "b.npy", "c.npy", "-k", "box", "--out-dir", "out", "-j", "1", *extra
    )
    assert result.exit_code == 0, result.output
    assert looks == {"a.npy": 1, "b.npy": 1, "c.npy": 1}


def test_an_output_and_its_indices_are_checked_once_each(inputs, looks):
    result = run("pool", "a.npy", "-o", "p.npy", "--indices", "i.npy")
    assert result.exit_code == 0, result.output
    assert looks == {"p.npy": 1, "i.npy": 1}


def test_a_refused_output_is_checked_once_and_leaves_nothing(inputs, looks):
    (inputs / "out").mkdir()
    np.save(inputs / "out" / "b.npy", np.zeros((1, 1), np.float32))
    before = (inputs / "out" / "b.npy").read_bytes()
    refused(
        run("conv", "a.npy", "b.npy", "-k", "box", "--out-dir", "out"),
        1,
        "exists; use --overwrite to replace or --skip-existing to keep",
    )
    assert looks == {"a.npy": 1, "b.npy": 1}
    assert os.listdir(inputs / "out") == ["b.npy"]
    assert (inputs / "out" / "b.npy").read_bytes() == before


@pytest.fixture
def appearing(monkeypatch):
    """A file ``theirs`` appears at each output after the plan, while convcli writes its own."""
    appeared = []
    create = atomic._create_temporary

    def create_and_appear(directory, temporaries):
        fd = create(directory, temporaries)
        for path in appeared:
            if not os.path.lexists(path):
                with open(path, "wb") as handle:
                    handle.write(b"theirs")
        return fd

    monkeypatch.setattr(atomic, "_create_temporary", create_and_appear)
    return appeared


def test_a_file_appearing_after_the_plan_is_refused_not_replaced(inputs, appearing):
    appearing.append(str(inputs / "o.npy"))
    refused(
        run("conv", "a.npy", "-k", "box", "-o", "o.npy"),
        1,
        "Error: output",
        "o.npy' exists (use --overwrite to replace it)",
    )
    assert (inputs / "o.npy").read_bytes() == b"theirs"
    assert not [p for p in os.listdir(inputs) if p.startswith(".convcli-")]


def test_overwrite_replaces_a_file_appearing_after_the_plan(inputs, appearing):
    appearing.append(str(inputs / "o.npy"))
    result = run("conv", "a.npy", "-k", "box", "-o", "o.npy", "--overwrite")
    assert result.exit_code == 0, result.output
    assert np.load(inputs / "o.npy").shape == (4, 4, 1)


def test_a_write_that_must_not_replace_is_all_or_none(tmp_path):
    (tmp_path / "second").write_bytes(b"theirs")
    items = [(str(tmp_path / name), lambda f: f.write(b"ours")) for name in ("first", "second")]
    with pytest.raises(OutputError, match=r"^output '.*' exists \(use overwrite to replace it\)$"):
        atomic.atomic_write_all(items, replace=False)
    assert os.listdir(tmp_path) == ["second"]
    assert (tmp_path / "second").read_bytes() == b"theirs"
    atomic.atomic_write_all(items[:1], replace=False)
    assert (tmp_path / "first").read_bytes() == b"ours"


def test_a_dangling_link_is_not_replaced_either(tmp_path):
    os.symlink(tmp_path / "nowhere", tmp_path / "link")
    with pytest.raises(OutputError, match="exists"):
        atomic.atomic_write(str(tmp_path / "link"), lambda f: f.write(b"ours"), replace=False)
    assert os.readlink(tmp_path / "link") == str(tmp_path / "nowhere")


def test_without_hard_links_the_write_looks_then_renames(tmp_path, monkeypatch):
    def no_links(source, target):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "there").write_bytes(b"theirs")
    with pytest.raises(OutputError, match="exists"):
        atomic.atomic_write(str(tmp_path / "there"), lambda f: f.write(b"ours"), replace=False)
    atomic.atomic_write(str(tmp_path / "new"), lambda f: f.write(b"ours"), replace=False)
    assert sorted(os.listdir(tmp_path)) == ["new", "there"]
    assert (tmp_path / "there").read_bytes() == b"theirs"


def test_unpool_checks_its_output_once_and_never_over_its_indices(inputs, looks, monkeypatch):
    from convcli.io import images

    checked = Counter()
    check = images.check_output_path

    def counting(output, *args, **kwargs):
        checked[output] += 1
        return check(output, *args, **kwargs)

    monkeypatch.setattr(images, "check_output_path", counting)
    assert run("pool", "a.npy", "-o", "p.npy", "--indices", "i.npy").exit_code == 0
    checked.clear(), looks.clear()
    result = run("unpool", "p.npy", "--indices", "i.npy", "-o", "u.npy")
    assert result.exit_code == 0, result.output
    assert (checked, looks) == ({"u.npy": 1}, {"u.npy": 1})
    assert np.load("u.npy")[..., 0].tolist() == [
        [0, 0, 0, 0],
        [0, 5, 0, 7],
        [0] * 4,
        [0, 13, 0, 15],
    ]
    before = (inputs / "i.npy").read_bytes()
    refused(
        run("unpool", "p.npy", "--indices", "i.npy", "-o", "i.npy", "--overwrite"),
        1,
        "Error: output 'i.npy' is the input 'i.npy'; convcli never overwrites an input",
    )
    assert (inputs / "i.npy").read_bytes() == before
