"""Budgets and pathological sizes: every allocation a user's input decides is checked before it
is made, standard input is bounded like a file, and work costs in proportion to its arithmetic
(no Python loop over channels, no rendering of a whole kernel bank).

No timings: behaviour is asserted (what is refused and with which line, what is equal, how much
is printed, how much is allocated per channel); subprocesses get generous timeouts only as
guards against a hang.
"""

import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import yaml
from conftest import refused as refused_with
from conftest import run

from convcli import engine, limits
from convcli.engine import correlation
from convcli.kernels.facts import kernel_facts
from convcli.kernels.generators import gaussian, motion_blur
from convcli.kernels.library import resolve_kernel
from convcli.pipeline import Maps, parse_pipeline


def refused(result, *expected):
    return refused_with(result, 1, *expected)


def files(folder):
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------------------------
# Budgets: checked before the allocation, one line naming what needs the memory


def pipeline_file(tmp_path, steps):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"steps": steps}))
    return path


@pytest.mark.parametrize(
    "steps, budget, expected",
    [
        ([{"op": "select", "channels": [0] * 20_000}], "32M", "select: the output 20000x64x64"),
        (["normalise"], "150K", "normalise: float64 work arrays and the output 3x64x64"),
        (
            [{"op": "conv", "kernel": ["box", "sobel_x", "sobel_y", "box:size=5"]}],
            "150K",
            "conv with 4 kernels: the stacked maps 12x64x64",
        ),
    ],
)
def test_pipeline_steps_that_multiply_the_data_are_checked_first(
    tmp_path, monkeypatch, steps, budget, expected
):
    np.save(tmp_path / "x.npy", np.zeros((64, 64, 3), np.float32))
    monkeypatch.setenv(limits.MAX_MEMORY_ENV, budget)
    before = files(tmp_path)
    pipeline = pipeline_file(tmp_path, steps)
    result = run("run", pipeline, tmp_path / "x.npy", "-o", tmp_path / "o.npy")
    refused(result, expected, "needs about", budget[:-1], limits.MAX_MEMORY_ENV)
    assert files(tmp_path) == sorted(before + ["p.yaml"])


def test_a_2d_kernel_is_not_copied_for_every_channel_past_the_budget(tmp_path, monkeypatch):
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 4096), np.float32))
    monkeypatch.setenv(limits.MAX_MEMORY_ENV, "8M")
    result = run("conv", tmp_path / "x.npy", "-k", "box:size=31", "-o", tmp_path / "o.npy")
    refused(result, "conv2d: the kernel for every channel 4096x1x31x31")


@pytest.mark.parametrize(
    "options, expected",
    [
        (["--colormap", "viridis", "--split"], "writing"),
        (["--montage-grid", "64x64"], "montage: the canvas"),
    ],
)
def test_writers_check_their_copies_and_canvas(tmp_path, monkeypatch, options, expected):
    np.save(tmp_path / "x.npy", np.zeros((96, 96, 4), np.float32))
    monkeypatch.setenv(limits.MAX_MEMORY_ENV, "1M")
    result = run("conv", tmp_path / "x.npy", "-k", "box:size=1", "-o", tmp_path / "o.png", *options)
    refused(result, expected, "needs about")
    assert files(tmp_path) == ["x.npy"]


# --------------------------------------------------------------------------------------------
# Standard input: the header first, then at most what it allows


ZEROS_FOREVER = "\nwhile True: out.write(bytes(1 << 20))"
#: Python run by the feeding process: ``out`` is its stdout, argv holds a PNG and a .npy.
GENERATORS = {
    "yes": "while True: out.write(b'y\\n' * 65536)",
    "zeros": ZEROS_FOREVER.strip(),
    "png then zeros": "out.write(open(sys.argv[1], 'rb').read())" + ZEROS_FOREVER,
    "npy then zeros": "out.write(open(sys.argv[2], 'rb').read())" + ZEROS_FOREVER,
    "npy header claiming 10^10 pixels": (
        "import numpy as np, io\nb = io.BytesIO()\n"
        "np.lib.format.write_array_header_1_0(b, {'descr': '<f4', 'fortran_order': False, "
        "'shape': (100000, 100000)})\nout.write(b.getvalue())" + ZEROS_FOREVER
    ),
}
EXPECTED = {
    "yes": "input '-' (stdin) is not an image convcli reads",
    "zeros": "input '-' (stdin) is not an image convcli reads",
    "png then zeros": "input '-' (stdin) is longer than a 8x8 image can be",
    "npy then zeros": "input '-' (stdin) holds more data than its .npy header says",
    "npy header claiming 10^10 pixels": "input '-' (stdin) is 100000x100000 (rows x columns)",
}


@pytest.mark.parametrize("stream", GENERATORS)
def test_an_endless_stdin_ends_with_one_error_line(tmp_path, stream):
    """A real generator process feeds convcli's stdin forever: convcli reads a bounded amount,
    refuses with one line and leaves nothing in $TMPDIR or beside the output."""
    from PIL import Image

    Image.new("L", (8, 8)).save(tmp_path / "a.png")
    np.save(tmp_path / "a.npy", np.zeros((2, 2), np.float32))
    spool = tmp_path / "tmp"
    spool.mkdir()
    body = "".join(f"    {line}\n" for line in GENERATORS[stream].splitlines())
    source = f"import sys\nout = sys.stdout.buffer\ntry:\n{body}except OSError:\n    pass\n"
    arguments = [sys.executable, "-c", source, tmp_path / "a.png", tmp_path / "a.npy"]
    feeder = subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "convcli",
                "conv",
                "-",
                "-k",
                "box",
                "-o",
                str(tmp_path / "o.npy"),
            ],
            stdin=feeder.stdout,
            capture_output=True,
            timeout=60,
            env={**os.environ, "TMPDIR": str(spool)},
        )
    finally:
        feeder.stdout.close()
        feeder.kill()
        feeder.wait()
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    assert EXPECTED[stream] in lines[0]
    assert files(spool) == [] and "o.npy" not in files(tmp_path)


# --------------------------------------------------------------------------------------------
# Many channels: cost per channel is arithmetic, not Python objects; layouts have a stated limit


def test_many_small_channels_are_one_pass_and_no_python_object_each(monkeypatch):
    channels = 1_000_000
    x = np.ones((channels, 1, 1), np.float32)
    calls = []
    original = correlation._correlate_bands
    monkeypatch.setattr(correlation, "_correlate_bands", lambda *a: calls.append(1) or original(*a))
    pipe = parse_pipeline(
        [
            {"op": "conv", "kernel": ["box:size=1", "2x1: 1 -1"]},
            {"op": "select", "channels": [5, 1_999_999]},
            "relu",
        ]
    )
    tracemalloc.start()
    try:
        out = pipe.run(Maps(x, 255.0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(calls) == 2  # one pass per kernel, not one per channel
    assert (
        out.labels[0] == "box:size=1[5]"
        and out.labels[1].endswith("[999999]")
        and out.signed is None
    )
    # the data: per kernel the weights for every channel, the output, the padded band and a
    # temporary, then the stack: about 40 bytes a channel; a label and a flag object for each
    # map would add over 100 more
    assert peak < 64 * channels, peak


def test_three_hundred_thousand_channels_complete(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(300_000, dtype=np.float32).reshape(1, 1, -1))
    for kernel, options in (("box:size=3", ["--map", "minmax"]), ("sobel_x", [])):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "convcli",
                "conv",
                tmp_path / "x.npy",
                "-k",
                kernel,
                "-o",
                tmp_path / "o.npy",
                "--overwrite",
                *options,
            ],
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert np.load(tmp_path / "o.npy").shape == (1, 1, 300_000)


@pytest.mark.parametrize(
    "layout, what", [("--split", "--split files"), ("--montage", "--montage tiles")]
)
def test_split_and_montage_have_a_stated_limit(tmp_path, layout, what):
    np.save(tmp_path / "x.npy", np.zeros((1, 1, limits.MAX_LAYOUT_MAPS + 1), np.float32))
    result = run("conv", tmp_path / "x.npy", "-k", "box:size=1", "-o", tmp_path / "o.png", layout)
    refused(result, f"16,385 feature maps are more {what} than the limit of 16,384", "one .npy")
    assert files(tmp_path) == ["x.npy"]


# --------------------------------------------------------------------------------------------
# Kernels: shown in bounded output; large ones computed at a cost that does not grow with them


def test_kernels_show_of_a_huge_bank_prints_a_bounded_summary(tmp_path):
    np.save(tmp_path / "bank.npy", np.ones((4096, 1, 3, 3), np.float32))
    result = run("kernels", "show", tmp_path / "bank.npy")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) < 80, len(lines)
    assert "(and 4,088 more 3x3 slices; --json gives all of them)" in result.output
    assert "shape 4096x1x3x3" in result.output and "separable (rank 1): yes" in result.output


@pytest.mark.parametrize(
    "angle, same_as",
    [(-360, 0), (360, 0), (-180, 0), (540, 0), (-90, 90), (270, 90), (-135, 45), (217, 37)],
)
def test_motion_blur_angles_that_draw_the_same_line_give_the_same_kernel(angle, same_as):
    for length in (2, 9, 255):
        assert np.array_equal(motion_blur(length, angle), motion_blur(length, same_as)), length
    if abs(angle) <= 360:  # the library's range
        assert np.array_equal(
            resolve_kernel(f"motion_blur:angle={angle}").weights,
            resolve_kernel(f"motion_blur:angle={same_as}").weights,
        )


def test_a_large_gaussian_is_separable_and_goes_by_fft():
    weight = gaussian(50.0, None).astype(np.float32)[None, None]
    assert weight.shape == (1, 1, 301, 301)
    assert correlation.rank_one_factors(weight) is not None
    assert kernel_facts(weight[0, 0])["separable"]
    assert correlation.choose_method(np.repeat(weight, 3, axis=0), 3, (2048, 2048)) == "fft"
    small = gaussian(3.0, None).astype(np.float32)[None, None]  # 19x19: still two passes
    assert correlation.choose_method(small, 1, (2048, 2048)) == "separable"


def test_the_two_pass_kernel_takes_8_bit_images_whole(monkeypatch, rng):
    """An 8-bit image with a rank-1 kernel goes to the two-pass kernel, not band by band
    through the dense one, and gives the same maps as its float32 copy."""
    image = rng.integers(0, 256, (2, 40, 50)).astype(np.uint8)
    weight = gaussian(2.0, None).astype(np.float32)
    banded = []
    monkeypatch.setattr(correlation, "_correlate_bands", lambda *a: banded.append(1))
    got = engine.conv2d(image, weight, method="separable")
    assert banded == []
    as_float32 = engine.conv2d(image.astype(np.float32), weight, method="separable")
    np.testing.assert_allclose(got, as_float32, rtol=1e-6, atol=1e-4)
