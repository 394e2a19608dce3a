"""Shell completion through Click's protocol, in real processes: the scripts, and -k kernel
names."""

import os
import subprocess
import sys

import pytest
from conftest import WITH_IMPORTS


def complete(*words, **env):
    """Click's bash completion of the last of ``words`` (``convcli`` first), as bash asks it."""
    env = {
        **os.environ,
        "_CONVCLI_COMPLETE": "bash_complete",
        "COMP_WORDS": " ".join(words),
        "COMP_CWORD": str(len(words) - 1),
        **env,
    }
    proc = subprocess.run(
        [sys.executable, "-c", WITH_IMPORTS], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "numba imported" not in proc.stderr
    return [line.split(",", 1)[1] for line in proc.stdout.splitlines()]


@pytest.mark.parametrize(
    "shell, first",
    [
        ("bash", "_convcli_completion() {"),
        ("zsh", "#compdef convcli"),
        ("fish", "function _convcli_completion;"),
    ],
)
def test_the_completion_script_of_each_shell(shell, first):
    env = {**os.environ, "_CONVCLI_COMPLETE": f"{shell}_source"}
    proc = subprocess.run(
        [sys.executable, "-m", "convcli"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.startswith(first), proc.stdout[:200]
    assert "_CONVCLI_COMPLETE" in proc.stdout


def test_k_completes_builtin_kernel_names():
    assert complete("convcli", "conv", "x.png", "-k", "sob") == ["sobel", "sobel_x", "sobel_y"]
    assert complete("convcli", "explain", "--by-hand", "-k", "sobel_") == ["sobel_x", "sobel_y"]
    assert "gaussian" in complete("convcli", "kernels", "show", "gau")


def test_k_completes_names_in_kernel_path_folders(tmp_path):
    (tmp_path / "sobel_diag.yaml").write_text("weights: '1'\n")
    (tmp_path / "notes.txt").write_text("not a kernel")
    names = complete("convcli", "conv", "--kernel-path", str(tmp_path), "x.png", "-k", "sobel")
    assert names == ["sobel", "sobel_diag", "sobel_x", "sobel_y"]
    from_env = complete(
        "convcli", "conv", "x.png", "-k", "sobel_d", CONVCLI_KERNEL_PATH=str(tmp_path)
    )
    assert from_env == ["sobel_diag"]
    assert "box" in complete(
        "convcli", "conv", "--kernel-path", str(tmp_path / "missing"), "-k", "bo"
    )
