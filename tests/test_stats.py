"""convcli stats and the stats pipeline step, against numpy (float64) and PyTorch."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import refused, run
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from convcli.pipeline import Maps, parse_pipeline
from convcli.render.stats import channel_stats

PERCENTILES = (0.0, 1.0, 33.3, 50.0, 99.0, 100.0)


def reference(channel, percentiles):
    """Float64 numbers from PyTorch: std(unbiased=False), torch.quantile (linear)."""
    x = torch.from_numpy(np.asarray(channel, np.float64).reshape(-1))
    q = torch.quantile(x, torch.tensor(percentiles, dtype=torch.float64) / 100)
    return [
        x.min().item(),
        x.max().item(),
        x.mean().item(),
        x.std(unbiased=False).item(),
        *q.tolist(),
    ]


def as_list(row):
    return [row["min"], row["max"], row["mean"], row["std"], *row["percentiles"]]


@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)),
        elements=st.floats(-1e4, 1e4, width=32),
    )
)
def test_channel_stats_match_pytorch_and_numpy(data):
    rows = channel_stats(data, PERCENTILES)
    assert len(rows) == len(data)
    for channel, row in zip(data, rows):
        np.testing.assert_allclose(
            as_list(row), reference(channel, PERCENTILES), rtol=1e-12, atol=1e-9
        )
        flat = channel.astype(np.float64).reshape(-1)
        assert row["std"] == pytest.approx(
            np.sqrt(np.mean((flat - flat.mean()) ** 2)), rel=1e-9, abs=1e-9
        )


def test_a_hand_checked_channel():
    row = channel_stats(np.array([[[0.0, 10.0, 20.0, 30.0]]]), (25, 50, 90))[0]
    # linear: position p/100 * (n - 1) = 0.75, 1.5, 2.7 between the sorted values
    assert as_list(row) == [0.0, 30.0, 15.0, np.sqrt(125.0), 7.5, 15.0, 27.0]


@pytest.fixture
def rgba(tmp_path):
    pixels = np.random.default_rng(2).integers(0, 256, (9, 11, 4), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(pixels, "RGBA").save(path)
    return path, pixels


def tsv(text):
    lines = [line.split("\t") for line in text.strip().splitlines()]
    return lines[0], lines[1:]


def test_cli_tab_separated_in_pipes(rgba, tmp_path):
    path, pixels = rgba
    np.save(tmp_path / "m.npy", pixels[:, :, :2].astype(np.float32) / 7)
    result = run("stats", path, tmp_path / "m.npy", "--percentiles", "5,50")
    assert result.exit_code == 0, result.output
    head, rows = tsv(result.stdout)
    assert head == ["input", "channel", "min", "max", "mean", "std", "p5", "p50"]
    assert [row[:2] for row in rows] == [[str(path), str(c)] for c in range(4)] + [
        [str(tmp_path / "m.npy"), str(c)] for c in range(2)
    ]
    channels = [pixels[:, :, c] for c in range(4)] + [
        pixels[:, :, c].astype(np.float32) / 7 for c in range(2)
    ]
    for row, channel in zip(rows, channels):
        np.testing.assert_allclose(
            [float(v) for v in row[2:]], reference(channel, [5.0, 50.0]), rtol=1e-6
        )


def test_cli_json_and_table(rgba):
    path, pixels = rgba
    result = run("stats", path, "--json")
    document = json.loads(result.stdout)
    assert document["schema"] == "convcli-stats/1" and document["percentiles"] == [
        1,
        25,
        50,
        75,
        99,
    ]
    (entry,) = document["inputs"]
    assert entry["shape"] == [9, 11, 4] and len(entry["channels"]) == 4
    np.testing.assert_allclose(
        as_list(entry["channels"][3]), reference(pixels[:, :, 3], [1, 25, 50, 75, 99]), rtol=1e-12
    )
    table = run("stats", path, "--table").stdout
    assert "┃" in table and "\t" not in table and "p99" in table


def test_json_says_what_is_not_finite(tmp_path):
    np.save(
        tmp_path / "n.npy",
        np.array([[[1.0], [np.inf]], [[np.nan], [2.0]]], np.float32).transpose(1, 2, 0),
    )
    channels = json.loads(run("stats", tmp_path / "n.npy", "--json").stdout)["inputs"][0][
        "channels"
    ]
    assert channels[0]["max"] == "inf" and channels[1]["mean"] == "nan"


@pytest.mark.parametrize(
    "args, code, text",
    [
        (["--percentiles", "101"], 2, "101 is not between 0 and 100"),
        (["--percentiles", "5,x"], 2, "percentiles"),
        (["--json", "--table"], 2, "exclude each other"),
    ],
)
def test_cli_refusals(rgba, args, code, text):
    refused(run("stats", rgba[0], *args), code, text)


def test_cli_refuses_a_bad_input(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not an image")
    refused(run("stats", tmp_path / "x.png"), 1, "x.png")


def test_piped_through_a_real_process(rgba):
    done = subprocess.run(
        [sys.executable, "-m", "convcli", "stats", str(rgba[0]), "--percentiles", "50"],
        capture_output=True,
        text=True,
        check=True,
    )
    head, rows = tsv(done.stdout)
    assert head[-1] == "p50" and len(rows) == 4 and "┃" not in done.stdout


def test_the_step_reports_and_leaves_the_maps_alone(rgba, tmp_path, capsys):
    x = np.random.default_rng(5).normal(size=(2, 6, 7)).astype(np.float32)
    steps = [{"op": "conv", "kernel": "sobel_x"}, "relu"]
    plain = parse_pipeline(steps).run(Maps(x, 255.0))
    watched = parse_pipeline([steps[0], {"op": "stats", "percentiles": [10, 90]}, steps[1]])
    got = watched.run(Maps(x, 255.0, source="in.png"))
    assert np.array_equal(got.data, plain.data) and list(got.labels) == list(plain.labels)
    head, rows = tsv(capsys.readouterr().err)
    assert head == ["input", "step", "channel", "min", "max", "mean", "std", "p10", "p90"]
    before_relu = parse_pipeline(steps[:1]).run(Maps(x, 255.0)).data
    for row, channel in zip(rows, before_relu):
        assert row[:2] == ["in.png", "2"]
        np.testing.assert_allclose(
            [float(v) for v in row[3:]], reference(channel, [10.0, 90.0]), rtol=1e-6
        )


def test_the_step_in_a_run_writes_the_same_output(rgba, tmp_path):
    path = rgba[0]
    (tmp_path / "p.yaml").write_text("steps: [gray, stats, {op: pool, size: 2}]\n")
    (tmp_path / "q.yaml").write_text("steps: [gray, {op: pool, size: 2}]\n")
    watched = run("run", tmp_path / "p.yaml", path, "-o", tmp_path / "p.npy")
    assert watched.exit_code == 0 and watched.stderr.splitlines()[1].startswith(f"{path}\t2\t0\t")
    assert run("run", tmp_path / "q.yaml", path, "-o", tmp_path / "q.npy").exit_code == 0
    assert np.array_equal(np.load(tmp_path / "p.npy"), np.load(tmp_path / "q.npy"))
    (tmp_path / "bad.yaml").write_text("steps: [{op: stats, percentiles: [50, 200]}]\n")
    refused(run("run", tmp_path / "bad.yaml", path, "-o", tmp_path / "b.npy"), 1, "percentiles")
