"""Many inputs through conv, pool and run: naming, existing outputs, failures, parallel jobs,
signals, and stdin/stdout pipes (CliRunner, and real processes where it matters)."""

import io
import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from rich.console import Console

from convcli import engine
from convcli.batch.report import Record
from convcli.cli.batch import Reporter
from convcli.cli.main import cli

CONVCLI = [sys.executable, "-m", "convcli"]
KERNEL_3D = np.arange(27, dtype=np.float32).reshape(3, 3, 3) / 27


def run(*args, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


def snapshot(folder, files_only=False):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() or not files_only}


def temporaries(folder):
    return [p for p in folder.rglob("*") if p.name.startswith(".convcli-")]


@pytest.fixture
def corpus(tmp_path):
    """50 small inputs in two folders: 40 RGB PNGs, 2 RGB .npy, 5 gray PNGs (which a 3-D kernel
    of 3 channels cannot take) and 3 broken files. Returns (folder, good, bad) paths."""
    rng = np.random.default_rng(7)
    root = tmp_path / "in"
    good, bad = [], []
    for index in range(40):
        path = root / ("sub" if index % 4 == 0 else "") / f"rgb{index:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (6 + index % 5, 7, 3), dtype=np.uint8)).save(path)
        good.append(path)
    for index in range(2):
        np.save(root / f"arr{index}.npy", rng.standard_normal((5, 6, 3)).astype(np.float32))
        good.append(root / f"arr{index}.npy")
    for index in range(5):
        Image.fromarray(rng.integers(0, 256, (6, 7), dtype=np.uint8)).save(
            root / f"gray{index}.png"
        )
        bad.append(root / f"gray{index}.png")
    png = (root / "rgb01.png").read_bytes()
    (root / "truncated.png").write_bytes(png[: len(png) // 2])
    (root / "text.png").write_text("not an image")
    np.save(root / "cube.npy", np.zeros((2, 2, 2, 2), np.float32))
    bad += [root / "truncated.png", root / "text.png", root / "cube.npy"]
    np.save(tmp_path / "k3.npy", KERNEL_3D)
    return root, good, bad


def expected_maps(path):
    """The engine's result for one input, as the .npy output stores it (H, W, 1)."""
    if path.suffix == ".npy":
        x = np.load(path).transpose(2, 0, 1)
    else:
        with Image.open(path) as image:
            x = np.asarray(image).transpose(2, 0, 1)
    return engine.conv2d(x, KERNEL_3D, padding="same").transpose(1, 2, 0)


def output_of(path, root, out):
    return out / path.relative_to(root).with_suffix(".npy")


def test_a_batch_writes_every_good_input_and_reports_every_bad_one(corpus, tmp_path):
    root, good, bad = corpus
    out = tmp_path / "out"
    result = run(
        "conv",
        root,
        "-r",
        "-k",
        tmp_path / "k3.npy",
        "--out-dir",
        out,
        "--format",
        "npy",
        "--jobs",
        1,
        "--json",
    )
    assert result.exit_code == 1, result.output
    for path in good:
        np.testing.assert_allclose(
            np.load(output_of(path, root, out)), expected_maps(path), rtol=1e-5, atol=1e-3
        )
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == len(bad)
    for path in bad:
        assert not output_of(path, root, out).exists()
        assert any(str(path) in line for line in errors), path
    assert any(
        "3-D kernel 3x3x3 expects 3 input channels, the input has 1" in line for line in errors
    )
    assert result.stderr.splitlines()[-1].startswith("42 done, 0 skipped, 8 failed in ")
    report = json.loads(result.stdout)
    assert (report["done"], report["skipped"], report["failed"], len(report["records"])) == (
        42,
        0,
        8,
        50,
    )
    record = next(r for r in report["records"] if r["input"].endswith("rgb02.png"))
    assert record["input_shape"] == [8, 7, 3] and record["output_shape"] == [8, 7, 1]
    assert (
        record["output"] == str(out / "rgb02.npy")
        and record["error"] is None
        and record["seconds"] >= 0
    )
    assert set(Record.__dataclass_fields__) == set(record)
    assert not temporaries(tmp_path)


def test_resuming_with_skip_existing_does_only_the_rest(corpus, tmp_path):
    root, good, bad = corpus
    out = tmp_path / "out"
    assert (
        run(
            "conv",
            root,
            "-r",
            "-k",
            tmp_path / "k3.npy",
            "--out-dir",
            out,
            "--format",
            "npy",
            "--jobs",
            1,
        ).exit_code
        == 1
    )
    for path in good[:5]:
        output_of(path, root, out).unlink()
    kept = snapshot(out, files_only=True)
    result = run(
        "conv",
        root,
        "-r",
        "-k",
        tmp_path / "k3.npy",
        "--out-dir",
        out,
        "--format",
        "npy",
        "--jobs",
        1,
        "--skip-existing",
        "--json",
    )
    report = json.loads(result.stdout)
    assert (report["done"], report["skipped"], report["failed"]) == (5, 37, 8)
    redone = {r["input"] for r in report["records"] if r["status"] == "done"}
    assert redone == {str(path) for path in good[:5]}
    assert all(snapshot(out)[p] == mtime for p, mtime in kept.items())
    for path in good[:5]:
        np.testing.assert_allclose(
            np.load(output_of(path, root, out)), expected_maps(path), rtol=1e-5, atol=1e-3
        )


def test_existing_outputs_are_an_error_before_any_work_unless_asked(corpus, tmp_path):
    root, good, _ = corpus
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "rgb01.npy").write_bytes(b"mine")
    (out / "sub" / "rgb00.npy").write_bytes(b"mine too")
    before = snapshot(tmp_path)
    result = run("conv", root, "-r", "-k", "box", "--out-dir", out, "--format", "npy")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"Error: output {str(out / 'rgb01.npy')!r} exists (and 1 more); "
        f"use --overwrite to replace or --skip-existing to keep"
    )
    assert snapshot(tmp_path) == before
    single = run("pool", good[1], "-o", out / "rgb01.npy")  # the same rule for one input
    assert single.exit_code == 1 and "exists; use --overwrite" in single.stderr
    assert run("pool", good[1], "-o", out / "rgb01.npy", "--overwrite").exit_code == 0
    assert np.load(out / "rgb01.npy").shape == (3, 3, 3)
    both = run("pool", good[1], "-o", out / "x.npy", "--overwrite", "--skip-existing")
    assert both.exit_code == 2 and "exclude each other" in both.stderr


def test_names_keep_relative_paths_and_collisions_fail_first(corpus, tmp_path):
    root, _, _ = corpus
    out = tmp_path / "out"
    result = run(
        "conv",
        root / "*.npy",
        root / "sub",
        "-k",
        "box:size=3",
        "--out-dir",
        out,
        "--name",
        "{stem}_{kernel}.{ext}",
        "--jobs",
        1,
    )
    assert result.exit_code == 1  # cube.npy is 4-D
    names = sorted(
        str(p.relative_to(out)) for p in out.rglob("*")
    )  # the folder's files land in out itself
    assert names[:3] == ["arr0_box_size=3.npy", "arr1_box_size=3.npy", "rgb00_box_size=3.png"]
    assert len(names) == 2 + 10
    nested = run(
        "pool", root, "-r", "--out-dir", out / "tree", "--name", "{stem}_{mode}.{ext}", "--jobs", 1
    )
    assert nested.exit_code == 1 and (out / "tree" / "sub" / "rgb00_max.png").is_file()
    before = snapshot(tmp_path)
    clash = run(
        "conv",
        root / "rgb01.png",
        root / "sub",
        "-k",
        "box",
        "--out-dir",
        out / "flat",
        "--name",
        "x.{ext}",
    )
    assert clash.exit_code == 1 and "would both be written to" in clash.stderr
    assert snapshot(tmp_path) == before


def test_one_input_keeps_plain_errors_and_pipes_reject_extra_output(tmp_path):
    result = run("conv", tmp_path / "none.png", "-k", "box", "-o", tmp_path / "o.png")
    assert result.exit_code == 1
    assert result.stderr == f"Error: input {str(tmp_path / 'none.png')!r} does not exist\n"
    for args, expected in [
        (["-o", "-"], "-o - (stdout) needs --format"),
        (["-o", "-", "--format", "png", "--json"], "--json prints on stdout"),
        (["--out-dir", tmp_path, "-o", "x.png"], "not both"),
        (["-o", "x.png", "--format", "png"], "--format applies to -o - and --out-dir"),
        (["-o", "x.png", "--name", "{stem}.png"], "--name applies to --out-dir"),
        ([], "Missing option '-o' / '--output' or '--out-dir'"),
    ]:
        result = run("conv", tmp_path / "none.png", "-k", "box", *args)
        assert result.exit_code == 2 and expected in result.stderr, (args, result.stderr)
    two = run("conv", tmp_path / "a.png", tmp_path / "b.png", "-k", "box", "-o", tmp_path / "o.png")
    assert two.exit_code == 1 and "2 inputs need --out-dir DIR" in two.stderr
    for name in ("a.npy", "b.npy"):
        np.save(tmp_path / name, np.ones((4, 4), np.float32))
    explained = run("conv", tmp_path, "-k", "box", "--explain", "--out-dir", tmp_path / "o")
    assert explained.exit_code == 2 and "--explain takes one input, got 2" in explained.stderr


def test_stdout_image_equals_the_file(tmp_path):
    source = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (9, 8, 3), dtype=np.uint8)).save(
        source
    )
    assert run("conv", source, "-k", "sobel_y", "-o", tmp_path / "y.png").exit_code == 0
    piped = run(
        "conv", "-", "-k", "sobel_y", "-o", "-", "--format", "png", input=source.read_bytes()
    )
    assert piped.exit_code == 0 and piped.stderr == ""
    with (
        Image.open(io.BytesIO(piped.stdout_bytes)) as image,
        Image.open(tmp_path / "y.png") as written,
    ):
        assert np.array_equal(np.asarray(image), np.asarray(written))
    bad = run("pool", "-", "-o", "-", "--format", "npy", input=b"junk")
    assert bad.exit_code == 1 and bad.stderr.startswith("Error: input '-' (stdin) is not an image")
    assert bad.stdout_bytes == b""


def test_progress_bar_and_summary(tmp_path):
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    reporter = Reporter(3, 3, quiet=False, console=console)
    for name in ("a", "b"):
        reporter.update(Record(name, name + ".png"))
    reporter.update(Record("c", "c.png", status="failed", error="it broke"))
    reporter.close()
    text = console.file.getvalue()
    assert "3/3" in text and "files/s" in text and "Error: c: it broke" in text
    assert Reporter(3, 3, quiet=True, console=console).progress is None
    assert Reporter(3, 3, quiet=False).progress is None  # stderr is not a terminal here


def test_the_progress_bar_starts_its_thread_with_the_first_file_done():
    """Workers are forked before it: a process with one thread (``batch.local.start_method``)."""
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    before = set(threading.enumerate())  # other tests' threads may end meanwhile: compare sets
    reporter = Reporter(3, 3, quiet=False, console=console)
    assert not set(threading.enumerate()) - before
    reporter.update(Record("a", "a.png"))
    assert len(set(threading.enumerate()) - before) == 1
    reporter.close()
    assert "1/3" in console.file.getvalue()


def test_workers_are_forked_only_from_a_process_without_threads_or_numba(monkeypatch):
    from convcli.batch.local import start_method

    monkeypatch.delitem(sys.modules, "numba", raising=False)
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    assert start_method() == "fork"
    monkeypatch.setitem(sys.modules, "numba", types.ModuleType("numba"))
    assert start_method() == "forkserver"
    monkeypatch.delitem(sys.modules, "numba")
    monkeypatch.setattr(threading, "active_count", lambda: 2)
    assert start_method() == "forkserver"


AFTER_NUMBA = textwrap.dedent("""
    import sys
    import numpy as np
    from convcli import engine
    from convcli.cli.main import cli
    x = np.ones((2, 64, 64), np.float32)
    engine.conv2d(x, np.ones((3, 3), np.float32), method="numba")  # Numba's threads run
    try:
        cli.main(sys.argv[1:])
    except SystemExit as exc:
        sys.exit(exc.code)
""")


# ---- real processes ---------------------------------------------------------------------------


def test_jobs_two_gives_the_same_bytes_as_jobs_one(tmp_path):
    rng = np.random.default_rng(3)
    (tmp_path / "in").mkdir()
    for index in range(6):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(
            tmp_path / "in" / f"{index}.png"
        )
    outputs = {}
    for jobs in (1, 2):
        out = tmp_path / f"out{jobs}"
        proc = subprocess.run(
            CONVCLI
            + [
                "conv",
                str(tmp_path / "in"),
                "-k",
                "sobel_x",
                "-k",
                "box:size=5",
                "--montage",
                "--out-dir",
                str(out),
                "--jobs",
                str(jobs),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "" and proc.stderr.startswith("6 done, 0 skipped, 0 failed")
        outputs[jobs] = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(outputs[1]) == 6 and outputs[1] == outputs[2]
    again = tmp_path / "again"  # a process that ran a Numba kernel first: forkserver workers
    proc = subprocess.run(
        [sys.executable, "-c", AFTER_NUMBA, "conv", str(tmp_path / "in"), "-k", "sobel_x"]
        + ["-k", "box:size=5", "--montage", "--out-dir", str(again), "-j", "2", "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert {p.name: p.read_bytes() for p in again.iterdir()} == outputs[1]


@pytest.fixture
def big_batch(tmp_path):
    rng = np.random.default_rng(5)
    (tmp_path / "in").mkdir()
    for index in range(10):
        np.save(tmp_path / "in" / f"b{index}.npy", rng.random((600, 600, 3), dtype=np.float32))
    return tmp_path


@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGINT", 130)])
@pytest.mark.parametrize("jobs", [1, 2])
def test_a_killed_batch_leaves_only_complete_outputs(big_batch, name, code, jobs):
    out = big_batch / "out"
    proc = subprocess.Popen(
        CONVCLI
        + [
            "conv",
            str(big_batch / "in"),
            "-k",
            "box:size=9",
            "--out-dir",
            str(out),
            "--jobs",
            str(jobs),
            "--format",
            "npy",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, (
            "the batch ended before it could be killed"
        )
        time.sleep(0.01)
    proc.send_signal(getattr(signal, name))
    assert proc.wait(timeout=60) == code
    assert proc.stderr.read().strip().splitlines()[-1] == (
        "Terminated." if code == 143 else "Interrupted."
    )
    proc.stderr.close()
    written = sorted(out.iterdir())
    assert not temporaries(big_batch) and 1 <= len(written) < 10
    for path in written:
        assert np.load(path).shape == (600, 600, 3)


def test_a_pipe_of_two_processes_equals_one_pipeline(tmp_path):
    source = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (17, 15, 3), dtype=np.uint8)).save(
        source
    )
    (tmp_path / "two.yaml").write_text("steps:\n  - {op: conv, kernel: box}\n  - pool\n")
    with open(source, "rb") as stdin:
        first = subprocess.Popen(
            CONVCLI + ["conv", "-", "-k", "box", "--format", "npy", "-o", "-"],
            stdin=stdin,
            stdout=subprocess.PIPE,
        )
        second = subprocess.run(
            CONVCLI + ["pool", "-", "--format", "npy", "-o", "-"],
            stdin=first.stdout,
            capture_output=True,
            timeout=300,
        )
        first.stdout.close()
        assert first.wait(timeout=300) == 0 and second.returncode == 0, second.stderr
    assert run("run", tmp_path / "two.yaml", source, "-o", tmp_path / "one.npy").exit_code == 0
    piped = np.load(io.BytesIO(second.stdout))
    assert piped.shape == (8, 7, 3) and np.array_equal(piped, np.load(tmp_path / "one.npy"))
