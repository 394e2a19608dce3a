"""Every table: tab-separated text in a pipe, drawn on a terminal or with --table, and JSON."""

import json
import os
import pty
import subprocess
import sys

import numpy as np
import pytest
from conftest import refused, run

BOX = ("│", "┃", "┏", "┌")


@pytest.fixture
def seed_npy(tmp_path):
    path = tmp_path / "seed.npy"
    np.save(path, np.array([[[1, 8], [2, 7]], [[6, 3], [4, 5]]], dtype=np.float32))  # (H, W, C)
    return path


def drawn(text):
    return any(mark in text for mark in BOX)


def test_kernels_list_in_a_pipe_is_one_tab_separated_line_per_kernel():
    result = run("kernels", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "name\tsize\tparameters\tdescription\tsource"
    gaussian = next(line.split("\t") for line in lines if line.startswith("gaussian\t"))
    assert gaussian[:3] == ["gaussian", "7x7", "sigma=1.0 (0, 50]; size=auto odd [1, 401]"]
    assert all(len(line.split("\t")) == 5 for line in lines) and not drawn(result.stdout)
    assert drawn(run("kernels", "list", "--table").stdout)


def test_kernels_show_in_a_pipe_gives_the_weights_as_tab_separated_rows():
    result = run("kernels", "show", "sobel:dir=y")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert ["-1\t-2\t-1", "0\t0\t0", "1\t2\t1"] == [line for line in lines if "\t" in line]
    assert "separable (rank 1): yes: column [-1, 0, 1] x row [1, 2, 1]" in lines
    assert not drawn(result.stdout)
    wide = run("kernels", "show", "gaussian:sigma=5").stdout  # too wide to draw, whole in a pipe
    assert sum(len(line.split("\t")) == 31 for line in wide.splitlines()) == 31


def test_pool_global_in_a_pipe_and_as_a_table(seed_npy):
    result = run("pool", seed_npy, "--global", "--mode", "avg")
    assert result.exit_code == 0, result.output
    assert result.stdout == "channel\tglobal avg\n0\t3.25\n1\t5.75\n"
    table = run("pool", seed_npy, "--global", "--table").stdout
    assert drawn(table) and "global max" in table and "8.0" in table


@pytest.mark.parametrize(
    "args, schema",
    [
        (["kernels", "list", "--json"], "convcli-kernels/1"),
        (["kernels", "show", "box", "--json"], "convcli-kernel/1"),
        (["pool", "{seed}", "--global", "--json"], "convcli-global-pool/1"),
        (["explain", "--input", "8x8", "conv 4 k3", "--json"], "convcli-explain/1"),
    ],
)
def test_every_table_has_json_naming_its_schema(seed_npy, args, schema):
    result = run(*(str(a).format(seed=seed_npy) for a in args))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["schema"] == schema


@pytest.mark.parametrize(
    "args, message",
    [
        (["kernels", "list", "--json", "--table"], "--json and --table exclude each other"),
        (["kernels", "show", "box", "--json", "--table"], "--json and --table exclude each other"),
        (
            ["pool", "{seed}", "--global", "--json", "--table"],
            "--json and --table exclude each other",
        ),
        (["pool", "{seed}", "--table", "-o", "{seed}.png"], "--table applies to --global"),
    ],
)
def test_table_option_misuse_is_a_usage_error(seed_npy, args, message):
    refused(run(*(str(a).format(seed=seed_npy) for a in args)), 2, message)


def on_a_terminal(*args):
    """``convcli ARGS...`` with stdout on a pseudo-terminal: its exit code and what it printed."""
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "TERM": "xterm"}
    with subprocess.Popen(
        [sys.executable, "-m", "convcli", *map(str, args)],
        stdout=follower,
        stderr=subprocess.DEVNULL,
        env=env,
    ) as proc:
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(leader)
        code = proc.wait(timeout=120)
    return code, b"".join(chunks).decode()


@pytest.mark.parametrize(
    "args", [["kernels", "list"], ["kernels", "show", "sobel"], ["pool", "{seed}", "--global"]]
)
def test_a_terminal_gets_the_drawn_table(seed_npy, args):
    code, text = on_a_terminal(*(a.format(seed=seed_npy) for a in args))
    assert code == 0, text
    assert drawn(text) and "\t" not in text
