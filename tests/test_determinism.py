"""The same input gives the same bytes: within a batch, across --jobs, in a fresh process and in
a warm one. The engine's method (numpy or Numba, whose float32 sums round differently) depends
only on the call and the batch's declared size, never on what the process did before."""

import subprocess
import sys
import textwrap

import numpy as np

CONVCLI = [sys.executable, "-m", "convcli"]
#: 20 files of 512x512x3 through a 9x9 box: 6.4e7 multiply-adds each, 1.3e9 for the batch,
#: which pays for loading Numba; the old rule (numpy until the process had done 1e9) switched
#: after the 15th file.
FILES, SIDE, KERNEL = 20, 512, "box:size=9"


def convcli(*args):
    return subprocess.run([*CONVCLI, *map(str, args)], capture_output=True, text=True, timeout=600)


def test_identical_inputs_give_identical_bytes_in_a_batch_and_across_jobs(tmp_path):
    image = np.random.default_rng(10).uniform(0, 255, (SIDE, SIDE, 3)).astype(np.float32)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for index in range(FILES):
        np.save(inputs / f"{index:02d}.npy", image)
    outputs = {}
    for jobs in (1, 2):
        result = convcli(
            "conv", inputs, "-k", KERNEL, "--out-dir", tmp_path / f"j{jobs}", "-j", jobs, "-q"
        )
        assert result.returncode == 0, result.stderr
        outputs[jobs] = [
            (tmp_path / f"j{jobs}" / f"{index:02d}.npy").read_bytes() for index in range(FILES)
        ]
    first = outputs[1][0]
    assert all(data == first for data in outputs[1]), "files of one batch differ"
    assert outputs[2] == outputs[1], "--jobs 2 differs from --jobs 1"


def test_a_resumed_batch_takes_the_method_of_its_first_run(tmp_path):
    """--skip-existing leaves most files out, but the declared batch is the same."""
    rng = np.random.default_rng(11)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for index in range(FILES):
        np.save(
            inputs / f"{index:02d}.npy", rng.uniform(0, 255, (SIDE, SIDE, 3)).astype(np.float32)
        )
    whole = convcli("conv", inputs, "-k", KERNEL, "--out-dir", tmp_path / "whole", "-q", "-j", 1)
    assert whole.returncode == 0, whole.stderr
    partial = tmp_path / "partial"
    partial.mkdir()
    for index in range(FILES - 1):  # as if the batch had been stopped before its last file
        (partial / f"{index:02d}.npy").write_bytes(
            (tmp_path / "whole" / f"{index:02d}.npy").read_bytes()
        )
    resumed = convcli("conv", inputs, "-k", KERNEL, "--out-dir", partial, "--skip-existing", "-q")
    assert resumed.returncode == 0, resumed.stderr
    last = f"{FILES - 1:02d}.npy"
    assert (partial / last).read_bytes() == (tmp_path / "whole" / last).read_bytes()


WARM_AND_FRESH = textwrap.dedent("""
    import numpy as np
    from convcli import engine
    x = np.random.default_rng(12).uniform(0, 255, (3, 512, 512)).astype(np.float32)
    fresh = engine.conv2d(x, np.ones((9, 9), np.float32))
    for _ in range(20):  # 1.3e9 multiply-adds of other work, Numba loaded on the way
        engine.conv2d(x + 1, np.ones((9, 9), np.float32))
    with engine.repeated(100):
        engine.conv2d(x + 2, np.ones((9, 9), np.float32))
    warm = engine.conv2d(x, np.ones((9, 9), np.float32))
    print(fresh.tobytes() == warm.tobytes())
""")


def test_a_warm_process_gives_the_bytes_of_a_fresh_one():
    proc = subprocess.run(
        [sys.executable, "-c", WARM_AND_FRESH], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"
