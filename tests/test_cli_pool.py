"""`convcli pool`, `convcli unpool` and `convcli conv --transpose` through Click's CliRunner."""

import json

import naive
import numpy as np
import pytest
from conftest import read_pixels, run

SEED = [[1, 3, 2, 0], [4, 6, 1, 2], [0, 2, 5, 3], [1, 2, 2, 4]]


@pytest.fixture
def seed_npy(tmp_path):
    path = tmp_path / "seed.npy"
    np.save(path, np.array(SEED, dtype=np.uint8))
    return path


def test_seed_max_pool_with_indices(seed_npy, tmp_path):
    out, where = tmp_path / "out.npy", tmp_path / "where.npy"
    result = run("pool", seed_npy, "-o", out, "--indices", where)
    assert result.exit_code == 0, result.output
    assert np.load(out).dtype == np.float32 and np.load(out)[..., 0].tolist() == [[6, 2], [2, 5]]
    indices = np.load(where)
    assert (
        indices.dtype == np.int64
        and indices.shape == (2, 2, 1)
        and indices[..., 0].tolist() == [[5, 2], [9, 10]]
    )


def test_seed_average_pool(seed_npy, tmp_path):
    out = tmp_path / "out.npy"
    assert run("pool", seed_npy, "--mode", "avg", "-o", out).exit_code == 0
    assert np.load(out)[..., 0].tolist() == [[3.5, 1.25], [1.25, 3.5]]


def test_options_reach_the_engine(rgb_png, tmp_path):
    out = tmp_path / "o.npy"
    result = run(
        "pool",
        rgb_png,
        "--mode",
        "avg",
        "--size",
        "3,2",
        "--stride",
        "2,1",
        "--padding",
        "1,0",
        "--ceil-mode",
        "--exclude-pad",
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    pixels = read_pixels(rgb_png).astype(np.float64).transpose(2, 0, 1)
    expected = naive.avg_pool2d(
        pixels, (3, 2), (2, 1), (1, 1, 0, 0), ceil_mode=True, count_include_pad=False
    )
    np.testing.assert_allclose(np.load(out), expected.transpose(1, 2, 0), rtol=1e-6)


def test_image_in_image_out_halves_the_size(rgb_png, tmp_path):
    out = tmp_path / "o.png"
    assert run("pool", rgb_png, "-o", out).exit_code == 0
    pixels = read_pixels(rgb_png)
    assert np.array_equal(read_pixels(out), pixels.reshape(6, 2, 5, 2, 3).max(axis=(1, 3)))


def test_global_prints_a_table_json_and_writes_npy(seed_npy, tmp_path):
    result = run("pool", seed_npy, "--global", "--mode", "avg")
    assert result.exit_code == 0 and "global avg" in result.stdout and "2.375" in result.stdout
    result = run("pool", seed_npy, "--global", "--json")
    assert json.loads(result.stdout) == {
        "schema": "convcli-global-pool/1",
        "mode": "max",
        "values": [6.0],
    }
    out = tmp_path / "g.npy"
    assert run("pool", seed_npy, "--global", "--mode", "avg", "-o", out).exit_code == 0
    assert np.load(out).shape == (1, 1, 1) and np.load(out)[0, 0, 0] == 2.375


def test_pool_then_unpool_round_trip(tmp_path):
    source = tmp_path / "x.npy"
    x = np.random.default_rng(3).standard_normal((5, 5, 2)).astype(np.float32)
    np.save(source, x)
    pooled, where, restored = tmp_path / "p.npy", tmp_path / "i.npy", tmp_path / "r.npy"
    assert run("pool", source, "-o", pooled, "--indices", where).exit_code == 0
    result = run("unpool", pooled, "--indices", where, "--output-size", "5,5", "-o", restored)
    assert result.exit_code == 0, result.output
    back = np.load(restored)
    assert back.shape == (5, 5, 2)
    kept = back != 0
    assert np.array_equal(back[kept], x[kept]) and kept.sum() == 8
    assert np.array_equal(np.load(pooled), x[:4, :4].reshape(2, 2, 2, 2, 2).max(axis=(1, 3)))


def test_unpool_default_size_comes_from_the_window(seed_npy, tmp_path):
    pooled, where, restored = tmp_path / "p.npy", tmp_path / "i.npy", tmp_path / "r.npy"
    assert run("pool", seed_npy, "-o", pooled, "--indices", where).exit_code == 0
    assert run("unpool", pooled, "--indices", where, "-o", restored).exit_code == 0
    assert np.load(restored)[..., 0].tolist() == [
        [0, 0, 2, 0],
        [0, 6, 0, 0],
        [0, 2, 5, 0],
        [0, 0, 0, 0],
    ]


def test_transposed_stride_two_doubles_a_real_image(rgb_png, tmp_path):
    kernel, out = tmp_path / "k.npy", tmp_path / "up.png"
    np.save(kernel, np.ones((2, 2), np.float32))
    result = run("conv", rgb_png, "--transpose", "-k", kernel, "--stride", "2", "-o", out)
    assert result.exit_code == 0, result.output
    pixels = read_pixels(rgb_png)
    assert np.array_equal(read_pixels(out), pixels.repeat(2, axis=0).repeat(2, axis=1))  # 24x20


def test_transposed_options_reach_the_engine(seed_npy, tmp_path):
    kernel, out = tmp_path / "k.npy", tmp_path / "o.npy"
    w = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    np.save(kernel, w)
    result = run(
        "conv",
        seed_npy,
        "--transpose",
        "-k",
        kernel,
        "--stride",
        "2",
        "--padding",
        "1",
        "--output-padding",
        "1",
        "--dilation",
        "2",
        "--bias",
        "0.5",
        "--flip",
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    expected = naive.conv_transpose2d(
        np.array(SEED, float)[None], w[:, :, ::-1, ::-1], [0.5], (2, 2), (1, 1), (1, 1), (2, 2)
    )
    np.testing.assert_allclose(np.load(out), expected.transpose(1, 2, 0), rtol=1e-6)


BAD_CASES = {
    "window larger than padded input": (
        ["pool", "{seed}", "--size", "5", "-o", "{tmp}/o.npy"],
        "window 5x5 is larger than the padded input 4x4",
    ),
    "padding more than half": (
        ["pool", "{seed}", "--size", "3", "--padding", "2", "-o", "{tmp}/o.npy"],
        "more than half the window 3x3",
    ),
    "non-integer size": (
        ["pool", "{seed}", "--size", "2.5", "-o", "{tmp}/o.npy"],
        "size '2.5' is not a whole",
    ),
    "zero size": (
        ["pool", "{seed}", "--size", "0,2", "-o", "{tmp}/o.npy"],
        "size must be at least 1",
    ),
    "zero stride": (
        ["pool", "{seed}", "--stride", "0", "-o", "{tmp}/o.npy"],
        "stride must be at least 1",
    ),
    "full padding": (
        ["pool", "{seed}", "--padding", "full", "-o", "{tmp}/o.npy"],
        "no padding 'full'",
    ),
    "same with ceil mode": (
        ["pool", "{seed}", "--padding", "same", "--ceil-mode", "-o", "{tmp}/o.npy"],
        "ceil mode",
    ),
    "missing output": (["pool", "{seed}"], "optional only with --global"),
    "avg with indices": (
        ["pool", "{seed}", "--mode", "avg", "--indices", "{tmp}/i.npy", "-o", "{tmp}/o.npy"],
        "--indices does not apply to --mode avg",
    ),
    "avg with dilation": (
        ["pool", "{seed}", "--mode", "avg", "--dilation", "2", "-o", "{tmp}/o.npy"],
        "--dilation does not apply to --mode avg",
    ),
    "max with exclude pad": (
        ["pool", "{seed}", "--exclude-pad", "-o", "{tmp}/o.npy"],
        "--count-include-pad/--exclude-pad does not apply to --mode max",
    ),
    "global with size": (
        ["pool", "{seed}", "--global", "--size", "3"],
        "--size does not apply to --global",
    ),
    "json report with stdout": (
        ["pool", "{seed}", "--json", "--format", "npy", "-o", "-"],
        "--json prints on stdout, where -o - writes",
    ),
    "global with out-dir": (
        ["pool", "{seed}", "--global", "--out-dir", "{tmp}/out"],
        "--out-dir does not apply to --global",
    ),
    "global to stdout": (["pool", "{seed}", "--global", "-o", "-"], "prints its values on stdout"),
    "indices not npy": (
        ["pool", "{seed}", "--indices", "{tmp}/i.png", "-o", "{tmp}/o.npy"],
        "must be a .npy",
    ),
    "indices is output": (
        ["pool", "{seed}", "--indices", "{tmp}/o.npy", "-o", "{tmp}/o.npy"],
        "different files",
    ),
    "indices is input": (
        ["pool", "{seed}", "--indices", "{seed}", "-o", "{tmp}/o.npy"],
        "never overwrites",
    ),
    "indices shape mismatch": (
        ["unpool", "{seed}", "--indices", "{tmp}/idx.npy", "-o", "{tmp}/o.npy"],
        "indices of shape 1x2x2 do not match the values 1x4x4",
    ),
    "index outside the plane": (
        ["unpool", "{tmp}/small.npy", "--indices", "{tmp}/idx.npy", "-o", "{tmp}/o.npy"],
        "index 17 lies outside the 4x4 output plane",
    ),
    "indices not integers": (
        ["unpool", "{tmp}/small.npy", "--indices", "{tmp}/small.npy", "-o", "{tmp}/o.npy"],
        "must be integers",
    ),
    "missing indices": (
        ["unpool", "{tmp}/small.npy", "--indices", "{tmp}/none.npy", "-o", "{tmp}/o.npy"],
        "No such file",
    ),
    "unreachable output size": (
        [
            "unpool",
            "{tmp}/small.npy",
            "--indices",
            "{tmp}/idx.npy",
            "--output-size",
            "7",
            "-o",
            "{tmp}/o.npy",
        ],
        "rows 3 to 5",
    ),
    "invalid output padding": (
        [
            "conv",
            "{seed}",
            "--transpose",
            "-k",
            "{tmp}/k.npy",
            "--stride",
            "2",
            "--padding",
            "1",
            "--output-padding",
            "2",
            "-o",
            "{tmp}/o.npy",
        ],
        "must be smaller than the stride",
    ),
    "output padding without transpose": (
        ["conv", "{seed}", "-k", "{tmp}/k.npy", "--output-padding", "1", "-o", "{tmp}/o.npy"],
        "applies only with --transpose",
    ),
    "transpose with reflect": (
        [
            "conv",
            "{seed}",
            "--transpose",
            "-k",
            "{tmp}/k.npy",
            "--pad-mode",
            "reflect",
            "-o",
            "{tmp}/o.npy",
        ],
        "pads with zeros",
    ),
    "transpose with full": (
        [
            "conv",
            "{seed}",
            "--transpose",
            "-k",
            "{tmp}/k.npy",
            "--padding",
            "full",
            "-o",
            "{tmp}/o.npy",
        ],
        "transposed convolution takes padding same, valid, N or H,W",
    ),
    "transpose with 4 pads": (
        [
            "conv",
            "{seed}",
            "--transpose",
            "-k",
            "{tmp}/k.npy",
            "--padding",
            "0,1,0,0",
            "-o",
            "{tmp}/o.npy",
        ],
        "cropped from both sides",
    ),
}


@pytest.mark.parametrize("name", list(BAD_CASES))
def test_bad_input_is_one_line_and_writes_nothing(name, tmp_path, seed_npy):
    np.save(tmp_path / "small.npy", np.ones((2, 2), np.float32))
    np.save(tmp_path / "idx.npy", np.array([[0, 1], [2, 17]], np.int64))
    np.save(tmp_path / "k.npy", np.ones((3, 3), np.float32))
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    args, expected = BAD_CASES[name]
    result = run(*[a.format(tmp=tmp_path, seed=seed_npy) for a in args])
    assert result.exit_code in (1, 2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0], (
        result.stderr
    )
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before
