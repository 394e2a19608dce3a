"""The user's files: unwritable targets, a full disk, inputs reached through links and '..'.

The suite may run as root, for whom permission bits do not stop a write, so the refusals of
the file system (EACCES, ENOSPC) are simulated where convcli meets them.
"""

import errno
import os

import numpy as np
import pytest
from conftest import run

from convcli.io import images


@pytest.fixture
def workspace(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(30, dtype=np.float32).reshape(5, 6))
    (tmp_path / "out").mkdir()
    return tmp_path


def snapshot(folder):
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_unwritable_directory_is_one_line_and_leaves_nothing(workspace, monkeypatch):
    real_open = os.open

    def refuse(path, *args, **kwargs):  # creating the temporary beside the output fails
        if str(path).endswith(".part"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    before = snapshot(workspace)
    result = run("conv", workspace / "x.npy", "-k", "box", "-o", workspace / "out" / "y.png")
    assert_one_line_error(result, "cannot write in", "Permission denied")
    assert snapshot(workspace) == before


def test_full_disk_mid_write_leaves_no_partial_file(workspace, monkeypatch):
    real_fsync = os.fsync

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(images.os, "fsync", disk_full)
    target = workspace / "out" / "y.png"
    target.write_bytes(b"the previous result")
    result = run("conv", workspace / "x.npy", "-k", "box", "-o", target, "--overwrite")
    monkeypatch.setattr(images.os, "fsync", real_fsync)
    assert_one_line_error(result, "No space left on device")
    assert target.read_bytes() == b"the previous result"  # the old output is untouched
    assert sorted(p.name for p in (workspace / "out").iterdir()) == ["y.png"]  # no temporary left


def test_output_equal_to_input_through_a_symlink_is_refused(workspace):
    (workspace / "out" / "link.npy").symlink_to(workspace / "x.npy")
    before = snapshot(workspace)
    result = run(
        "conv",
        workspace / "x.npy",
        "-k",
        "box",
        "-o",
        workspace / "out" / "link.npy",
        "--overwrite",
    )
    assert_one_line_error(result, "never overwrites an input")
    assert snapshot(workspace) == before


def test_output_equal_to_input_through_dotdot_is_refused(workspace):
    before = snapshot(workspace)
    sneaky = workspace / "out" / ".." / "x.npy"
    result = run("conv", workspace / "x.npy", "-k", "box", "-o", sneaky, "--overwrite")
    assert_one_line_error(result, "never overwrites an input")
    assert snapshot(workspace) == before


def test_template_escaping_out_dir_is_refused_before_work(workspace):
    before = snapshot(workspace)
    result = run(
        "conv",
        workspace / "x.npy",
        "-k",
        "box",
        "--out-dir",
        workspace / "out",
        "--name",
        "../../{stem}.npy",
    )
    assert_one_line_error(result, "escapes --out-dir")
    assert snapshot(workspace) == before
