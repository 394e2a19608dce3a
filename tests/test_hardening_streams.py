"""Inputs that are not regular files, standard streams that fail, processes left behind.

Named pipes are made with ``os.mkfifo``; a command that opened one for reading would block, so
the commands that could hang run in a subprocess with a timeout. Every refusal is one
``Error: ...`` line, exit 1, nothing written.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from convcli.cli.main import cli

CONVCLI = [sys.executable, "-m", "convcli"]
#: Seconds a command that should end at once may take (a hang fails the test instead).
PROMPTLY = 120


def run(*args, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


def refused(code, stderr, *expected):
    """A one-line refusal, exit 1, whose line holds each of ``expected``."""
    lines = stderr.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), (code, stderr)
    for text in expected:
        assert text in lines[0], lines[0]


def convcli(*args, **kwargs):
    """``convcli ARGS...`` in a real process, ended by ``PROMPTLY``."""
    kwargs.setdefault("capture_output", True)
    return subprocess.run(CONVCLI + [str(a) for a in args], timeout=PROMPTLY, **kwargs)


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(7).integers(0, 256, (12, 10), dtype=np.uint8)).save(path)
    return path


# ---- inputs that are not regular files ---------------------------------------------------------


@pytest.mark.parametrize(
    "name, kind", [("fifo", "a named pipe"), ("/dev/zero", "a character device")]
)
def test_a_non_regular_input_is_refused_before_it_is_opened(tmp_path, name, kind):
    source = tmp_path / "in.png"
    if name == "fifo":
        os.mkfifo(source)
    else:
        source = name
    proc = convcli("conv", source, "-k", "box", "-o", tmp_path / "out.png", text=True)
    refused(proc.returncode, proc.stderr, f"input {str(source)!r} is not a regular file ({kind})")
    assert not (tmp_path / "out.png").exists()


def test_unpool_indices_that_are_not_a_regular_file(tmp_path, png):
    os.mkfifo(tmp_path / "where.npy")
    proc = convcli(
        "unpool", png, "--indices", tmp_path / "where.npy", "-o", tmp_path / "out.png", text=True
    )
    expected = f"indices {str(tmp_path / 'where.npy')!r} is not a regular file (a named pipe)"
    refused(proc.returncode, proc.stderr, expected)
    assert not (tmp_path / "out.png").exists()


def test_a_folder_scan_or_a_pattern_takes_regular_files_only(tmp_path, png):
    os.mkfifo(tmp_path / "b.png")
    proc = convcli(
        "conv", tmp_path, "-k", "box", "--out-dir", tmp_path / "out", "-j", "2", text=True
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    result = run("conv", tmp_path / "*.png", "-k", "box", "--out-dir", tmp_path / "out2")
    assert result.exit_code == 0, result.output
    for out in ("out", "out2"):
        assert sorted(p.name for p in (tmp_path / out).iterdir()) == ["a.png"]


@pytest.fixture
def fifos(tmp_path):
    """Named pipes called like a kernel file, a kernel folder, a pipeline and an image."""
    for name in ("k.npy", "k.yaml", "folder", "p.yaml", "in.png"):
        os.mkfifo(tmp_path / name)
    return tmp_path


@pytest.mark.parametrize(
    "args, what",
    [
        (["conv", "{png}", "-k", "{tmp}/k.npy", "-o", "{tmp}/o.png"], "kernel file '{tmp}/k.npy'"),
        (["conv", "{png}", "-k", "/dev/zero", "-o", "{tmp}/o.png"], "kernel file '/dev/zero'"),
        (["kernels", "show", "{tmp}/k.yaml"], "kernel file '{tmp}/k.yaml'"),
        (["run", "{tmp}/p.yaml", "{png}", "-o", "{tmp}/o.png"], "pipeline '{tmp}/p.yaml'"),
        (["explain", "--input", "{png}", "--pipeline", "{tmp}/p.yaml"], "pipeline '{tmp}/p.yaml'"),
        (["explain", "--input", "{tmp}/in.png", "relu"], "input '{tmp}/in.png'"),
        (
            ["explain", "--by-hand", "--matrix", "{tmp}/k.npy", "-k", "box"],
            "matrix file '{tmp}/k.npy'",
        ),
    ],
)
def test_kernels_pipelines_and_matrices_that_are_not_regular_files(fifos, png, args, what):
    result = run(*(a.format(tmp=fifos, png=png) for a in args))
    kind = "a character device" if "/dev/zero" in what else "a named pipe"
    expected = f"{what.format(tmp=fifos)} is not a regular file ({kind})"
    refused(result.exit_code, result.stderr, expected)
    assert not (fifos / "o.png").exists()


@pytest.mark.parametrize(
    "folder, kind", [("{tmp}/folder", "a named pipe"), ("/dev/null", "a character device")]
)
def test_a_kernel_path_that_is_not_a_directory(fifos, folder, kind):
    folder = folder.format(tmp=fifos)
    for args in (["kernels", "list"], ["kernels", "show", "box"]):
        result = run(*args, "--kernel-path", folder)
        expected = f"kernel folder {folder!r} is not a directory ({kind})"
        refused(result.exit_code, result.stderr, expected)


@pytest.mark.parametrize("pattern", [False, True])
def test_a_recursive_batch_into_its_own_folder_resumes(tmp_path, png, pattern):
    (tmp_path / "sub").mkdir()
    Image.open(png).save(tmp_path / "sub" / "b.png")
    given = str(tmp_path / "**" / "*.png") if pattern else str(tmp_path)
    args = ["conv", given, "-r", "-k", "box", "--out-dir", tmp_path / "out", "-q", "--json"]
    first = run(*args)
    assert first.exit_code == 0, first.output
    written = sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*.png"))
    again = run(*args, "--skip-existing")
    assert again.exit_code == 0, again.output
    assert '"done": 0' in again.stdout and '"skipped": 2' in again.stdout
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*.png")) == written


# ---- standard streams that fail ----------------------------------------------------------------


def with_closed(redirection, *args):
    """``convcli ARGS...`` run by ``sh`` with a standard descriptor closed (``<&-``, ``>&-``)."""
    return ["sh", "-c", f'exec "$@" {redirection}', "sh", *CONVCLI, *(str(a) for a in args)]


@pytest.fixture
def big_png(tmp_path):
    """An image whose .npy output (1 MiB) is larger than a pipe holds."""
    path = tmp_path / "big.png"
    pixels = np.random.default_rng(8).integers(0, 256, (512, 512), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_a_reader_that_closes_the_pipe_early_is_an_error(big_png):
    args = ["conv", str(big_png), "-k", "box", "-o", "-", "--format", "npy"]
    proc = subprocess.Popen(CONVCLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(10) == b"\x93NUMPY\x01\x00v\x00"
    proc.stdout.close()  # as `| head -c 10` does: the rest can never be written
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    code = proc.wait(timeout=PROMPTLY)
    refused(code, stderr, "cannot write to standard output (its reader closed the pipe)")


FULL_STDOUT = {
    "-o -": ["conv", "{png}", "-k", "box", "-o", "-", "--format", "npy"],
    "--json": [
        "conv",
        "{tmp}/*.png",
        "-k",
        "box",
        "--out-dir",
        "{tmp}/out",
        "--json",
        "-j",
        "2",
        "-q",
    ],
    "table": ["kernels", "list"],
    "json": ["kernels", "show", "box", "--json"],
    "trace": ["explain", "--input", "64x64x3", "conv 8 k3", "--table"],
    "values": ["pool", "{png}", "--global"],
    "help": ["conv", "--help"],
}


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("case", FULL_STDOUT)
def test_a_full_stdout_is_one_error_line(tmp_path, png, big_png, case):
    args = [a.format(png=png, tmp=tmp_path) for a in FULL_STDOUT[case]]
    with open("/dev/full", "wb") as full:
        proc = convcli(*args, stdout=full, stderr=subprocess.PIPE, capture_output=False, text=True)
    expected = "cannot write to standard output (No space left on device)"
    refused(proc.returncode, proc.stderr, expected)


@pytest.mark.parametrize("case", ["table", "--json"])
def test_a_closed_stdout_is_one_error_line(tmp_path, png, big_png, case):
    args = [a.format(png=png, tmp=tmp_path) for a in FULL_STDOUT[case]]
    proc = subprocess.run(
        with_closed(">&-", *args), capture_output=True, text=True, timeout=PROMPTLY
    )
    refused(proc.returncode, proc.stderr, "cannot write to standard output (Bad file descriptor)")


def test_a_closed_stdin(tmp_path, png, big_png):
    proc = subprocess.run(
        with_closed("<&-", "conv", "-", "-k", "box", "-o", tmp_path / "o.png"),
        capture_output=True,
        text=True,
        timeout=PROMPTLY,
    )
    refused(proc.returncode, proc.stderr, "input '-' (stdin) cannot be read")
    assert not (tmp_path / "o.png").exists()
    batch = ["conv", png, big_png, "-k", "box", "--out-dir", tmp_path / "out", "-j", "2", "-q"]
    proc = subprocess.run(
        with_closed("<&-", *batch), capture_output=True, text=True, timeout=PROMPTLY
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "big.png"]


# ---- processes left behind ---------------------------------------------------------------------


def session_members(session):
    """Live processes (not zombies) of a session: ``(pid, command line)``, from ``/proc``."""
    members = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat") as handle:
                fields = handle.read().rpartition(")")[2].split()
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            members.append((int(name), command))
    return members


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc (Linux)")
def test_a_killed_parent_takes_its_workers_and_helpers_along(tmp_path):
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(5)
    for index in range(10):
        np.save(tmp_path / "in" / f"b{index}.npy", rng.random((600, 600, 3), dtype=np.float32))
    out = tmp_path / "out"
    args = [
        "conv",
        str(tmp_path / "in"),
        "-k",
        "box:size=9",
        "--out-dir",
        str(out),
        "-j",
        "2",
        "--format",
        "npy",
    ]
    proc = subprocess.Popen(
        CONVCLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )  # its session holds the batch's processes
    try:
        deadline = time.monotonic() + PROMPTLY
        while not (out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir())):
            assert proc.poll() is None and time.monotonic() < deadline, "ended before the kill"
            time.sleep(0.01)
        helpers = [command for pid, command in session_members(proc.pid) if pid != proc.pid]
        assert len(helpers) == 2, helpers  # two workers, forked from convcli (``start_method``)
        proc.kill()
        proc.communicate(timeout=30)  # both pipes reach their end: no one holds them
        deadline = time.monotonic() + 30
        while session_members(proc.pid):
            assert time.monotonic() < deadline, session_members(proc.pid)
            time.sleep(0.05)
    finally:
        for pid, _ in session_members(proc.pid):
            os.kill(pid, signal.SIGKILL)
    assert not [p for p in out.iterdir() if p.name.startswith(".convcli-")]  # workers cleaned up
    assert all(np.load(path).shape == (600, 600, 3) for path in out.glob("*.npy"))
