"""Every console example of the README and docs/ runs, as written, with the output it states.

Each ```console block is a session in one folder holding the files its commands name
(``photo.png``, ``x.npy``, ``weights.npy``, ``sample_images/``, ``models/``...): every
``$ convcli ...`` line is run through a real process and must exit 0 without a traceback; the
lines printed under it in the block
(``...`` standing for lines left out) must appear in its output, stdout then stderr, in that
order (a table drawn as on a terminal is asked for with ``--table``); and a trailing
``# ... -> [[...]]`` comment states the values of the ``-o`` array it writes.
"""

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
DOCUMENTS = [
    os.path.join(ROOT, "README.md"),
    *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))),
]
#: A reader's environment: no terminal size inherited from the test runner.
ENV = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}
SEED = np.array([[1, 3, 2, 0], [4, 6, 1, 2], [0, 2, 5, 3], [1, 2, 2, 4]], np.float32)


def console_blocks(path):
    """``(name, [(command, stated output lines)])`` for each ```console block of ``path``."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    for number, block in enumerate(re.findall(r"^```console\n(.*?)^```", text, re.S | re.M), 1):
        session = []
        for line in block.splitlines():
            if line.startswith("$ "):
                session.append((line[2:], []))
            elif session and line.strip():
                session[-1][1].append(line)
        yield f"{os.path.basename(path)}#{number}", session


BLOCKS = [block for path in DOCUMENTS for block in console_blocks(path)]


def python_blocks(path):
    """``(name, code)`` for each ```python block of ``path``."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    found = re.findall(r"^```python\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    for number, code in enumerate(found, 1):
        yield f"{os.path.basename(path)}#python{number}", code


PYTHON_BLOCKS = [block for path in DOCUMENTS for block in python_blocks(path)]


@pytest.fixture
def folder(tmp_path):
    """The files the examples name."""
    shutil.copy(os.path.join(ROOT, "sample_images", "camera.png"), tmp_path / "photo.png")
    shutil.copytree(os.path.join(ROOT, "sample_images"), tmp_path / "sample_images")
    shutil.copytree(os.path.join(ROOT, "models"), tmp_path / "models")
    np.save(tmp_path / "x.npy", SEED)
    np.save(tmp_path / "weights.npy", np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float32))
    return tmp_path


def split_comment(command):
    """The arguments of a command line and its trailing ``# comment`` ('' if none)."""
    words = shlex.split(command, comments=False)
    if "#" in words:
        at = words.index("#")
        return words[:at], " ".join(words[at + 1 :])
    return words, ""


@pytest.mark.parametrize("name, session", BLOCKS, ids=[name for name, _ in BLOCKS])
def test_console_examples_run_as_written(folder, name, session):
    for command, stated in session:
        words, comment = split_comment(command)
        assert words[0] == "convcli", f"{name}: {command}"
        drawn = ["--table"] if any("┃" in line for line in stated) else []
        result = subprocess.run(
            [sys.executable, "-m", "convcli", *words[1:], *drawn],
            cwd=folder,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{name}: {command}\n{result.stderr}"
        assert "Traceback" not in result.stderr
        _check_stated_output(name, command, stated, result.stdout + result.stderr)
        _check_stated_values(name, command, words, comment, folder)


@pytest.mark.parametrize("name, code", PYTHON_BLOCKS, ids=[name for name, _ in PYTHON_BLOCKS])
def test_python_examples_run_as_written(folder, name, code, monkeypatch):
    """Each ```python block runs in the examples' folder; its ``assert`` lines state results."""
    monkeypatch.chdir(folder)
    exec(compile(code, name, "exec"), {"__name__": name})  # noqa: S102 (the docs' own examples)


def _check_stated_output(name, command, stated, printed):
    """The stated lines appear in ``printed`` in order (``...`` marks lines left out)."""
    lines = [line.strip() for line in printed.splitlines()]
    at = 0
    for line in stated:
        if line.strip() == "...":
            continue
        while at < len(lines) and lines[at] != line.strip():
            at += 1
        assert at < len(lines), (
            f"{name}: {command}\nthe docs say {line.strip()!r}; it printed:\n{printed}"
        )
        at += 1


def _check_stated_values(name, command, words, comment, folder):
    """``# ... -> [[6,2],[2,5]]``: the ``-o`` array holds these values."""
    found = re.search(r"->\s*(\[\[.*\]\])", comment)
    if not found or "-o" not in words:
        return
    written = np.load(folder / words[words.index("-o") + 1])
    assert np.array_equal(written.squeeze(), np.array(json.loads(found.group(1)))), (
        f"{name}: {command}"
    )


def test_the_examples_are_found():
    """The README has console sessions to check (a changed fence would silently check none)."""
    commands = [command for _, session in BLOCKS for command, _ in session]
    assert len(commands) >= 10
