"""bench/run.py still runs (its quick mode: small sizes, one repeat; no timings are asserted)."""

import os
import subprocess
import sys

BENCH = os.path.join(os.path.dirname(__file__), os.pardir, "bench", "run.py")


def test_bench_quick_mode_runs():
    proc = subprocess.run(
        [sys.executable, BENCH, "--quick"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| depthwise 256^2x3, 3x3 random (full rank) | convcli |" in proc.stdout
    assert "| start-up | convcli --help |" in proc.stdout
    npy_case = "| process 64^2x3 float32 .npy -> .npy, 15x15 random |"
    assert f"{npy_case} convcli conv |" in proc.stdout
    assert f"{npy_case} OpenCV filter2D script |" in proc.stdout
    assert "| convcli --executor dask, 2 workers: " in proc.stdout
    assert "| model zoo resnet, forward pass 32^2x3 | onnxruntime, 1 thread |" in proc.stdout


def test_bench_runs_the_dense_section_as_an_avx2_machine():
    """``--cpu avx2``: the dense section is measured in a child process whose Numba kernels are
    8 floats wide, GFLOP/s given as a share of that width's peak."""
    proc = subprocess.run(
        [sys.executable, BENCH, "--quick", "--only", "dense", "--cpu", "avx2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Numba's kernels 8 floats wide" in proc.stdout
    assert "| dense 64->64 256^2 3x3 | convcli: " in proc.stdout
    assert "% of " in proc.stdout
