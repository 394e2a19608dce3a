"""Numbers and names without bounds, output paths and formats (issue 18, classes 5 and 6).

Every case goes through the command line and must end in one ``Error:`` line naming the
problem, exit 1 or 2, no traceback and nothing written.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import refused, run
from PIL import Image

BIG = "9" * 5000  # over Python's 4,300-digit limit of int()


def snapshot(folder):
    return {
        p: (p.stat().st_mtime_ns if not p.is_symlink() else os.readlink(p))
        for p in folder.rglob("*")
    }


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A working folder with a.png (6x8 RGB) and a pipeline; the current folder."""
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(
        "a.png"
    )
    (tmp_path / "steps.yaml").write_text("steps:\n  - op: conv\n    kernel: box\n")
    return tmp_path


# --------------------------------------------------------------------------------------------
# Class 5: numbers


NUMBER_CASES = {
    "inline kernel width": (
        ["conv", "a.png", "-k", f"{BIG}x1: 1", "-o", "o.png"],
        1,
        "the width must be at most 1024",
    ),
    "inline kernel origin": (
        ["conv", "a.png", "-k", f"1x1+{BIG}+0: 1", "-o", "o.png"],
        1,
        "the origin must be at most",
    ),
    "inline kernel weight": (
        ["conv", "a.png", "-k", f"1x1: {BIG}", "-o", "o.png"],
        1,
        "has 5,000 digits, more than the 1,000",
    ),
    "kernel parameter": (
        ["conv", "a.png", "-k", f"gaussian:sigma=0.{BIG}", "-o", "o.png"],
        1,
        "has 5,001 digits",
    ),
    "bias": (
        ["conv", "a.png", "-k", "box", "--bias", "0." + BIG, "-o", "o.png"],
        2,
        "has 5,001 digits",
    ),
    "jobs": (["conv", "a.png", "-k", "box", "-j", BIG, "-o", "o.png"], 2, "jobs must be at most"),
    "montage grid": (
        ["conv", "a.png", "-k", "box", "--montage-grid", "99999999999x99999999999", "-o", "o.png"],
        2,
        "montage grid",
        "at most 65536",
    ),
    "montage grid digits": (
        ["conv", "a.png", "-k", "box", "--montage-grid", f"{BIG}x1", "-o", "o.png"],
        2,
        "montage grid",
    ),
    "explain input": (["explain", "--input", f"{BIG}x4x1", "relu"], 2, "at most 2147483647"),
    "explain filters": (
        ["explain", "--input", "4x4x1", f"conv {BIG} k3"],
        2,
        "filters must be at most",
    ),
    "explain kernel": (
        ["explain", "--input", "4x4x1", f"conv 2 k{BIG}"],
        2,
        "kernel must be at most",
    ),
    "by-hand matrix": (
        ["explain", "--by-hand", "--matrix", f"1 {BIG}", "--pool", "max"],
        2,
        "has 5,000 digits",
    ),
}


@pytest.mark.parametrize("case", list(NUMBER_CASES))
def test_numbers_of_thousands_of_digits_are_one_line(work, case):
    args, code, *expected = NUMBER_CASES[case]
    before = snapshot(work)
    refused(run(*args), code, *expected)
    assert snapshot(work) == before


YAML_NUMBERS = {
    "pipeline int": "steps:\n  - op: conv\n    kernel: box\n    stride: {big}\n",
    "pipeline float": "steps:\n  - op: leaky_relu\n    slope: 0.{big}\n",
    "pipeline int of 400 digits": "steps:\n  - op: conv\n    kernel: box\n    bias: {mid}\n",
    "pipeline stride of 400 digits": "steps:\n  - op: conv\n    kernel: box\n    stride: {mid}\n",
}


@pytest.mark.parametrize("case", list(YAML_NUMBERS))
def test_numbers_in_pipeline_files_are_bounded(work, case):
    (work / "p.yaml").write_text(YAML_NUMBERS[case].format(big=BIG, mid="9" * 400))
    before = snapshot(work)
    line = refused(run("run", "p.yaml", "a.png", "-o", "o.png"), 1, "p.yaml")
    assert (
        ("has 5,00" in line)
        if "{big}" in YAML_NUMBERS[case]
        else ("at most" in line or "finite" in line)
    )
    assert snapshot(work) == before


def test_numbers_in_kernel_files_are_bounded(work):
    (work / "k.yaml").write_text(f"weights: '1'\nscale: {BIG}\n")
    refused(run("kernels", "show", "k.yaml"), 1, "k.yaml: line 2: the number", "5,000 digits")
    (work / "k.mat").write_text(f"1 1 {BIG}\n1\n")
    refused(run("kernels", "show", "k.mat"), 1, "first line must be")


def test_memory_budget_of_hundreds_of_digits(work, monkeypatch):
    monkeypatch.setenv("CONVCLI_MAX_MEMORY", "9" * 400)
    refused(run("conv", "a.png", "-k", "box", "-o", "o.png"), 1, "more than 2**63 bytes")


# --------------------------------------------------------------------------------------------
# Class 5: names


@pytest.mark.parametrize(
    "template", ["{stem:>2000000}.png", "{stem:>100000000}.png", "{stem:.999}.png"]
)
def test_name_templates_with_huge_widths_are_refused_before_filling(work, template):
    before = snapshot(work)
    refused(
        run("conv", "a.png", "-k", "box", "--out-dir", "out", "--name", template),
        1,
        "--name template",
    )
    assert snapshot(work) == before


@pytest.mark.parametrize("template", ["{stem.__class__}.png", "{stem!r}.png", "{stem[0]}.png"])
def test_name_templates_hold_field_names_only(work, template):
    before = snapshot(work)
    refused(
        run("conv", "a.png", "-k", "box", "--out-dir", "out", "--name", template),
        1,
        "is not a field name",
    )
    assert snapshot(work) == before


def test_filled_names_past_the_file_name_limits_are_refused(work):
    refused(
        run(
            "conv", "a.png", "-k", "box", "--out-dir", "out", "--name", "{stem:>250}{stem:>250}.png"
        ),
        1,
        "more than the 255 a file name may have",
    )
    refused(run("conv", "a.png", "-k", "box", "-o", "x" * 300 + ".png"), 1, "a file name may have")
    refused(run("conv", "a.png", "-k", "box", "-o", "d/" * 2100 + "x.png"), 1, "a path may have")
    assert not (work / "out").exists()


# --------------------------------------------------------------------------------------------
# Class 6: output paths


def test_a_file_where_a_folder_should_be_is_refused_before_any_work(work):
    (work / "out").mkdir()
    (work / "out" / "file.png").write_bytes(b"x")
    before = snapshot(work)
    refused(
        run("conv", "a.png", "-k", "box", "--out-dir", "out", "--name", "file.png/{stem}.png"),
        1,
        "is not a folder",
    )
    refused(run("conv", "a.png", "-k", "box", "-o", "a.png/x.png"), 1, "a.png")
    refused(run("pool", "a.png", "--indices", "a.png/i.npy", "-o", "p.png"), 1, "a.png")
    assert snapshot(work) == before


def test_a_dangling_symlink_is_an_existing_output(work):
    os.symlink("nowhere.png", work / "link.png")
    os.symlink("nowhere.npy", work / "link.npy")
    before = snapshot(work)
    refused(run("conv", "a.png", "-k", "box", "-o", "link.png"), 1, "'link.png' exists")
    refused(run("run", "steps.yaml", "a.png", "-o", "link.png"), 1, "'link.png' exists")
    refused(run("pool", "a.png", "--indices", "link.npy", "-o", "p.npy"), 1, "'link.npy' exists")
    assert snapshot(work) == before
    assert not (work / "nowhere.png").exists()
    result = run("conv", "a.png", "-k", "box", "-o", "link.png", "--overwrite")
    assert result.exit_code == 0, result.output
    assert (
        not (work / "link.png").is_symlink() and not (work / "nowhere.png").exists()
    )  # not followed


def test_skip_existing_skips_a_dangling_symlink(work):
    (work / "out").mkdir()
    os.symlink("nowhere.png", work / "out" / "a.png")
    result = run("conv", "a.png", "-k", "box", "--out-dir", "out", "--skip-existing", "--json")
    assert result.exit_code == 0, result.output
    assert '"skipped": 1' in result.stdout and (work / "out" / "a.png").is_symlink()


@pytest.mark.parametrize("kept", ["p.png", "idx.npy"])
def test_skip_existing_keeps_only_complete_outputs(work, kept):
    """pool --indices writes two files: --skip-existing skips both or refuses before the work."""
    assert run("pool", "a.png", "--indices", "idx.npy", "-o", "p.png").exit_code == 0
    (work / ("idx.npy" if kept == "p.png" else "p.png")).unlink()
    before = snapshot(work)
    refused(
        run("pool", "a.png", "--indices", "idx.npy", "-o", "p.png", "--skip-existing"),
        1,
        f"output '{kept}' exists but",
        "keeps only complete outputs",
    )
    assert snapshot(work) == before
    skipped = run("pool", "a.png", "--indices", "idx.npy", "-o", "p.png", "--overwrite")
    assert skipped.exit_code == 0
    again = run("pool", "a.png", "--indices", "idx.npy", "-o", "p.png", "--skip-existing", "--json")
    assert again.exit_code == 0 and '"skipped": 1' in again.stdout


def test_by_hand_gif_follows_the_rules_of_every_output(work):
    (work / "g.gif").write_bytes(b"mine")
    args = ["explain", "--by-hand", "--matrix", "1 2;3 4", "--pool", "max", "--gif", "g.gif"]
    refused(run(*args), 1, "'g.gif' exists (use --overwrite")
    assert (work / "g.gif").read_bytes() == b"mine"
    os.symlink("nowhere.gif", work / "link.gif")
    refused(run(*args[:-1], "link.gif"), 1, "exists")
    result = run(*args, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (work / "g.gif").read_bytes()[:6] == b"GIF89a"
    refused(
        run("explain", "--by-hand", "--matrix", "1 2;3 4", "--pool", "max", "--overwrite"),
        2,
        "--overwrite applies to --gif",
    )


def test_error_lines_stay_short_through_a_real_process(work):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "convcli",
            "conv",
            "a.png",
            "-k",
            "box",
            "--format",
            "x" * 100_000,
            "--out-dir",
            "out",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and len(lines[0]) <= 1000, (
        result.stderr[:300]
    )


# --------------------------------------------------------------------------------------------
# Class 6: output formats, checked on the planned shape before the work


@pytest.fixture
def wide(work):
    """A 2x17000 gray PNG: past WebP's 16383 pixels per side, not JPEG's 65500."""
    Image.fromarray(np.zeros((2, 17000), np.uint8)).save(work / "wide.png")
    Image.fromarray(np.zeros((2, 66000), np.uint8)).save(work / "wider.png")
    return work


@pytest.mark.parametrize(
    "source, output, problem",
    [
        ("wide.png", "o.webp", "WEBP stores at most 16383 per side"),
        ("wider.png", "o.jpg", "JPEG stores at most 65500 per side"),
    ],
)
def test_format_size_limits_are_checked_before_the_work(wide, source, output, problem):
    before = snapshot(wide)
    # a real process: libjpeg prints its own line on stderr when it is asked to encode
    result = subprocess.run(
        [sys.executable, "-m", "convcli", "conv", source, "-k", "box", "-o", output],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=wide,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"Error: output {output!r} would be "
        f"{result.stderr.split('would be ')[1].split(' pixels')[0]} "
        f"pixels (rows x columns); {problem} (use .png, .tif or .npy)"
    ]
    assert problem in result.stderr
    assert snapshot(wide) == before


def test_format_limits_before_the_steps_run(wide, monkeypatch):
    """The planned shape is refused before the pipeline runs: the steps are never applied."""
    from convcli import pipeline

    def never(*args, **kwargs):
        raise AssertionError("the steps ran")

    monkeypatch.setattr(pipeline.Pipeline, "run", never)
    refused(run("pool", "wide.png", "--size", "1", "-o", "o.webp"), 1, "WEBP stores at most 16383")
    refused(run("run", "steps.yaml", "wide.png", "-o", "o.webp"), 1, "WEBP stores at most 16383")


def test_a_montage_past_its_format_is_refused_before_it_is_drawn(work):
    before = snapshot(work)
    refused(
        run("conv", "a.png", "-k", "box", "--montage-grid", "7000x1", "-o", "m.jpg"),
        1,
        "JPEG stores at most 65500 per side",
    )
    refused(
        run("conv", "a.png", "-k", "box", "--montage-grid", "65536x65536", "-o", "m.png"),
        1,
        "montage",
    )
    assert snapshot(work) == before


def test_unpool_checks_its_format_before_the_work(wide):
    np.save(wide / "i.npy", np.zeros((1, 9000), np.int64))
    Image.fromarray(np.zeros((1, 9000), np.uint8)).save(wide / "half.png")
    refused(
        run("unpool", "half.png", "--indices", "i.npy", "-o", "u.webp"),
        1,
        "WEBP stores at most 16383",
    )
