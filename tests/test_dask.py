"""``--executor dask``: batches on a real Dask cluster (a scheduler and workers started here as
separate processes on 127.0.0.1), on a local cluster, and the refusals; inputs and outputs
named by fsspec URLs (``memory://``, ``file://``).

Every output is compared byte for byte with ``--executor local`` on plain paths.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import refused, run
from PIL import Image

pytest.importorskip("distributed")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The environment of every process started here: this checkout's convcli, one Numba thread.
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
    "NUMBA_NUM_THREADS": "1",
}
#: Seconds any process started here may take before the test gives up on it.
PATIENCE = 120


def convcli(*args):
    """``python -m convcli ARGS...`` in a real process: stdout, stderr and exit code."""
    return subprocess.run(
        [sys.executable, "-m", "convcli", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=PATIENCE,
        check=False,
    )


def make_images(folder, count, size=24):
    """``count`` small RGB PNGs of random pixels in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(count)
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size + i % 5, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return folder


def outputs(folder):
    """Every output file's bytes, by name. A worker killed with SIGKILL cannot remove the
    hidden temporary it was writing (``.convcli-*.part``): never an output, left out here."""
    return {
        path.name: path.read_bytes()
        for path in folder.iterdir()
        if not (path.name.startswith(".convcli-") and path.name.endswith(".part"))
    }


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    """A ``dask scheduler`` and ``dask worker`` processes (no nanny: killing a worker kills it)."""

    def __init__(self, tmp_path):
        self.processes = []
        self.workers = []
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.logs = tmp_path / "dask-logs"
        self.logs.mkdir()
        self._start(
            "scheduler",
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            self.address.rsplit(":", 1)[1],
            "--no-dashboard",
        )

    def _start(self, log, *args):
        with open(self.logs / f"{log}.log", "w") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_" + args[0], *args[1:]],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=ENV,
            )
        self.processes.append(process)
        return process

    def add_workers(self, count):
        for _ in range(count):
            self.workers.append(
                self._start(
                    f"worker{len(self.workers)}",
                    "worker",
                    self.address,
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--no-dashboard",
                    "--host",
                    "127.0.0.1",
                )
            )
        self.wait_for_workers(len(self.workers))

    def wait_for_workers(self, count):
        from distributed import Client

        with Client(self.address, timeout=PATIENCE, set_as_default=False) as client:
            client.wait_for_workers(count, timeout=PATIENCE)

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
        for process in self.processes:
            process.wait(timeout=PATIENCE)


@pytest.fixture
def cluster(tmp_path):
    started = Cluster(tmp_path)
    try:
        yield started
    finally:
        started.stop()


def test_a_worker_killed_midway_loses_nothing(tmp_path, cluster):
    images = make_images(tmp_path / "in", 300)
    cluster.add_workers(2)
    expected = convcli(
        "conv", images, "-k", "gaussian:sigma=1.5", "--out-dir", tmp_path / "local", "-q"
    )
    assert expected.returncode == 0, expected.stderr
    out = tmp_path / "out"
    batch = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "convcli",
            "conv",
            str(images),
            "-k",
            "gaussian:sigma=1.5",
            "--out-dir",
            str(out),
            "--executor",
            "dask",
            "--scheduler",
            cluster.address,
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        deadline = time.monotonic() + PATIENCE
        while not (out.is_dir() and len(os.listdir(out)) >= 30) and time.monotonic() < deadline:
            time.sleep(0.005)
        written_before = len(os.listdir(out))
        cluster.workers[0].send_signal(signal.SIGKILL)
        assert batch.poll() is None and written_before < 300  # the kill came midway
        stdout, stderr = batch.communicate(timeout=PATIENCE)
    finally:
        if batch.poll() is None:
            batch.kill()
    assert batch.returncode == 0, stderr
    report = json.loads(stdout)
    assert (report["done"], report["failed"]) == (300, 0)
    assert [r["input"] for r in report["records"]] == sorted(str(p) for p in images.iterdir())
    assert outputs(out) == outputs(tmp_path / "local")
    assert stderr.strip().splitlines()[-1].startswith("300 done, 0 skipped, 0 failed in ")


def test_a_local_cluster_run_reports_a_corrupt_input_once_and_resumes(tmp_path):
    images = make_images(tmp_path / "in", 12)
    (images / "0005.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a PNG")
    local = convcli("pool", images, "--size", "2", "--out-dir", tmp_path / "local", "--json")
    out = tmp_path / "out"
    first = convcli(
        "pool",
        images,
        "--size",
        "2",
        "--out-dir",
        f"file://{out}",
        "--json",
        "--executor",
        "dask",
        "-j",
        "2",
    )
    assert (first.returncode, local.returncode) == (1, 1)
    errors = [line for line in first.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "0005.png" in errors[0], first.stderr
    assert json.loads(first.stdout) == {
        **json.loads(local.stdout),
        "records": [
            {
                **record,
                "output": record["output"].replace(str(tmp_path / "local"), str(out)),
                "seconds": got["seconds"],
            }
            for record, got in zip(
                json.loads(local.stdout)["records"], json.loads(first.stdout)["records"]
            )
        ],
    }
    assert outputs(out) == outputs(tmp_path / "local") and len(outputs(out)) == 11
    for name in ("0000.png", "0007.png"):
        (out / name).unlink()
    again = convcli(
        "pool",
        images,
        "--size",
        "2",
        "--out-dir",
        out,
        "--json",
        "--executor",
        "dask",
        "--skip-existing",
    )
    resumed = json.loads(again.stdout)
    assert (resumed["done"], resumed["skipped"], resumed["failed"]) == (2, 9, 1)
    assert outputs(out) == outputs(tmp_path / "local")


def test_an_unreachable_scheduler_is_one_line_and_nothing_is_written(tmp_path):
    images = make_images(tmp_path / "in", 3)
    proc = convcli(
        "conv",
        images,
        "-k",
        "box",
        "--out-dir",
        tmp_path / "out",
        "--executor",
        "dask",
        "--scheduler",
        f"tcp://127.0.0.1:{free_port()}",
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot reach the Dask scheduler "), (
        proc.stderr
    )
    assert not (tmp_path / "out").exists()


def test_without_the_extra_dask_is_one_line_saying_what_to_install(tmp_path, rgb_png, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    monkeypatch.delitem(sys.modules, "convcli.batch.dask", raising=False)
    result = run("conv", rgb_png, "-k", "box", "--out-dir", tmp_path / "out", "--executor", "dask")
    refused(result, 1, "pip install 'convcli[dask]'")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--out-dir", "out", "--scheduler", "tcp://127.0.0.1:1"],
            "--scheduler needs --executor dask",
        ),
        (
            [
                "--out-dir",
                "out",
                "--executor",
                "dask",
                "--scheduler",
                "tcp://127.0.0.1:1",
                "-j",
                "2",
            ],
            "--jobs",
        ),
        (["-o", "-", "--format", "png", "--executor", "dask"], "not stdin or stdout"),
    ],
)
def test_dask_usage_errors(rgb_png, args, message):
    refused(run("conv", rgb_png, "-k", "box", *args), 2, message)


@pytest.fixture
def memory():
    """A folder of fsspec's in-memory file system, ``memory://NAME``, removed afterwards."""
    import uuid

    import fsspec

    fs = fsspec.filesystem("memory")
    name = f"convcli-{uuid.uuid4().hex[:8]}"
    try:
        yield fs, name
    finally:
        if fs.exists(f"/{name}"):
            fs.rm(f"/{name}", recursive=True)


def test_memory_urls_in_and_out_give_the_bytes_of_plain_paths(tmp_path, memory):
    fs, name = memory
    images = make_images(tmp_path / "in", 6)
    (images / "sub").mkdir()
    (images / "sub" / "deep.png").write_bytes((images / "0001.png").read_bytes())
    for path in sorted(images.rglob("*.png")):
        fs.pipe(f"/{name}/in/{path.relative_to(images)}", path.read_bytes())
    assert (
        run("conv", images, "-r", "-k", "sobel_x", "--out-dir", tmp_path / "local", "-q").exit_code
        == 0
    )
    result = run(
        "conv",
        f"memory://{name}/in",
        "-r",
        "-k",
        "sobel_x",
        "--out-dir",
        f"memory://{name}/out",
        "-j",
        "1",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    written = {p[len(f"/{name}/out/") :]: fs.cat(p) for p in fs.find(f"/{name}/out")}
    expected = {
        str(p.relative_to(tmp_path / "local")): p.read_bytes()
        for p in (tmp_path / "local").rglob("*.png")
    }
    assert written == expected and "sub/deep.png" in written
    assert [r["output"] for r in json.loads(result.stdout)["records"]][
        -1
    ] == f"memory://{name}/out/sub/deep.png"

    fs.rm(f"/{name}/out/0002.png")
    pattern = run(
        "conv",
        f"memory://{name}/in/*.png",
        "-k",
        "sobel_x",
        "--out-dir",
        f"memory://{name}/out",
        "-j",
        "1",
        "--json",
        "--skip-existing",
    )
    report = json.loads(pattern.stdout)
    assert (pattern.exit_code, report["done"], report["skipped"]) == (0, 1, 5)
    assert fs.cat(f"/{name}/out/0002.png") == (tmp_path / "local" / "0002.png").read_bytes()
    again = run(
        "conv",
        f"memory://{name}/in/*.png",
        "-k",
        "sobel_x",
        "--out-dir",
        f"memory://{name}/out",
        "-j",
        "1",
    )
    refused(again, 1, "exists (and 5 more)", "--overwrite")


def test_url_refusals(tmp_path, memory):
    fs, name = memory
    refused(
        run("conv", f"memory://{name}/none.png", "-k", "box", "-o", tmp_path / "a.png", "-j", "1"),
        1,
        "does not exist",
    )
    refused(
        run("conv", f"memory://{name}/*.png", "-k", "box", "--out-dir", tmp_path, "-j", "1"),
        1,
        "matches no files",
    )
    fs.pipe(f"/{name}/a.png", (make_images(tmp_path / "in", 1) / "0000.png").read_bytes())
    refused(
        run("conv", f"memory://{name}/a.png", "-k", "box", "--out-dir", tmp_path / "out"),
        2,
        "memory://",
        "-j 1",
    )
    assert not (tmp_path / "out").exists()


def test_plain_paths_never_import_fsspec_or_dask(tmp_path, rgb_png):
    code = (
        "import atexit, sys; from convcli.cli.main import cli\n"
        "atexit.register(lambda: print(sorted(m for m in ('fsspec', 'dask', 'distributed') "
        "if m in sys.modules)))\n"
        f"cli.main(['conv', {str(rgb_png)!r}, '-k', 'box', '-o', {str(tmp_path / 'out.png')!r}])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=PATIENCE,
        check=False,
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, "[]"), proc.stderr
