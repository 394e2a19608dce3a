"""Paths as people type them: bare names, ./ and ../ segments, absolute paths, folders, `.`,
trailing slashes and globs, through real processes whose working directory holds the inputs.

Each output is compared with the output of the same command given ``-o`` (the plain case), so
that the test is about where files go, not about what the command computes.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

CONVCLI = [sys.executable, "-m", "convcli"]
COMMANDS = {
    "conv": ["conv", "-k", "box"],
    "pool": ["pool", "--size", "2"],
    "run": ["run", "steps.yaml"],
}
#: (inputs as typed, --out-dir as typed, the outputs expected, relative to the working folder)
FORMS = {
    "bare name": (["a.png"], "out", ["out/a.png"]),
    "dot-slash name": (["./a.png"], "./out/", ["out/a.png"]),
    "dot-dot segments": (["imgs/../a.png"], "imgs/../out", ["out/a.png"]),
    "glob": (["in*.png"], "out", ["out/in1.png", "out/in2.png"]),
    "folder with a slash": (["imgs/"], "out", ["out/x.png"]),
    "the current folder": (["."], "out", ["out/a.png", "out/in1.png", "out/in2.png"]),
    "absolute paths": (["{cwd}/a.png"], "{cwd}/out", ["out/a.png"]),
    "out-dir outside, by ..": (["a.png"], "../elsewhere", ["../elsewhere/a.png"]),
}


def convcli(cwd, *args):
    return subprocess.run(
        [*CONVCLI, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def folder(tmp_path):
    """A working folder holding a.png, in1.png, in2.png, imgs/x.png and a pipeline."""
    rng = np.random.default_rng(3)
    cwd = tmp_path / "work"
    (cwd / "imgs").mkdir(parents=True)
    for name in ("a.png", "in1.png", "in2.png", "imgs/x.png"):
        Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(cwd / name)
    (cwd / "steps.yaml").write_text("steps:\n  - op: conv\n    kernel: box\n")
    return cwd


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_out_dir_takes_paths_as_typed(folder, command, form):
    inputs, out_dir, expected = FORMS[form]
    inputs = [i.format(cwd=folder) for i in inputs]
    before = sorted(p for p in folder.parent.rglob("*"))
    result = convcli(folder, *COMMANDS[command], *inputs, "--out-dir", out_dir.format(cwd=folder))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    written = sorted(
        os.path.relpath(p, folder) for p in folder.parent.rglob("*.png") if p not in before
    )
    assert written == sorted(expected)
    for output in expected:  # the same bytes as the plain -o form of the same input
        source = "imgs/x.png" if output.endswith("x.png") else output.rsplit("/", 1)[1]
        alone = folder.parent / "alone.png"
        check = convcli(folder, *COMMANDS[command], source, "-o", alone, "--overwrite")
        assert check.returncode == 0, check.stderr
        assert (folder / output).read_bytes() == alone.read_bytes()


@pytest.mark.parametrize("command", list(COMMANDS))
def test_output_paths_that_cannot_be_folders_or_files_are_one_line(folder, command):
    cases = {
        ("-o", "imgs"): "is a directory",
        ("-o", "new/"): "is a directory",
        ("--out-dir", "a.png/sub"): "cannot create the folder 'a.png/sub'",
        ("--out-dir", "a.png"): "is a file, not a directory",
    }
    for (option, value), problem in cases.items():
        before = sorted(folder.rglob("*"))
        result = convcli(folder, *COMMANDS[command], "a.png", option, value)
        lines = result.stderr.splitlines()
        assert result.returncode == 1, result.stderr
        assert len(lines) == 1 and lines[0].startswith("Error: ") and problem in lines[0], lines
        assert sorted(folder.rglob("*")) == before
