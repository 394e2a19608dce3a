"""Montage labels, their font, and --legend: sizes by docs/outputs.md's formula, numbers from the
data."""

import numpy as np
import pytest
from conftest import read_pixels, refused, run
from PIL import Image

from convcli.io.images import OutputSettings, write_output
from convcli.pipeline import Maps, parse_pipeline
from convcli.render import mapping, montage


def ok(*args):
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def expected_size(count, height, width, grid=None, labelled=True, legend=False):
    """The formula of docs/outputs.md, written out here: font s = clamp(h // 16, 10, 32),
    strip s + s//2, legend 4 + s + s//2 + 6s, cell max(w + legend, 4s) x (strip + body),
    gaps of 4."""
    s = min(32, max(10, height // 16))
    strip = s + s // 2 if labelled else 0
    body = max(height, 3 * (s + s // 2)) if legend else height
    cell_w = max(width + (4 + s + s // 2 + 6 * s if legend else 0), 4 * s)
    cols = grid[1] if grid else int(np.ceil(np.sqrt(count)))
    rows = grid[0] if grid else int(np.ceil(count / cols))
    return rows * (strip + body) + (rows - 1) * 4, cols * cell_w + (cols - 1) * 4


@pytest.fixture
def gray(tmp_path):
    rows, cols = np.mgrid[0:64, 0:80]
    image = (40 + cols * 2 + 80 * ((rows - 30) ** 2 + (cols - 40) ** 2 < 150)).astype(np.uint8)
    path = tmp_path / "g.png"
    Image.fromarray(image).save(path)
    return path, image


def spy_labels(monkeypatch):
    seen = []
    original = montage.montage
    monkeypatch.setattr(
        montage,
        "montage",
        lambda tiles, labels, *a, **k: (
            seen.append(list(labels) if labels is not None else None)
            or original(tiles, labels, *a, **k)
        ),
    )
    return seen


def test_labels_are_the_kernels_as_written(gray, tmp_path, monkeypatch):
    seen = spy_labels(monkeypatch)
    ok(
        "conv",
        gray[0],
        "-k",
        "sobel",
        "-k",
        "sobel:dir=y",
        "-k",
        "kirsch:dir=n",
        "-k",
        "kirsch:dir=s",
        "-k",
        "3x1: 1 0 -1",
        "--montage",
        "-o",
        tmp_path / "m.png",
    )
    assert seen == [["sobel", "sobel:dir=y", "kirsch:dir=n", "kirsch:dir=s", "inline 3x1"]]


def test_pipeline_labels_banks_and_named_steps(tmp_path):
    np.save(tmp_path / "bank.npy", np.ones((2, 1, 3, 3), np.float32))
    x = Maps(np.ones((1, 8, 8), np.float32), 255.0)
    pipe = parse_pipeline(
        [{"op": "conv", "kernel": ["bank.npy", "box:size=5"]}], "p.yaml", folder=str(tmp_path)
    )
    assert list(pipe.run(x).labels) == ["bank.npy[0]", "bank.npy[1]", "box:size=5"]
    named = parse_pipeline([{"op": "conv", "name": "edges", "kernel": ["sobel_x", "sobel_y"]}])
    assert list(named.run(x).labels) == ["edges: sobel_x", "edges: sobel_y"]


@pytest.mark.parametrize(
    "tile, count, grid",
    [((256, 256), 4, None), ((40, 30), 5, (1, 5)), ((8, 8), 3, None), ((1000, 60), 2, (2, 1))],
)
@pytest.mark.parametrize("legend", [False, True])
def test_montage_size_follows_the_formula(tmp_path, tile, count, grid, legend):
    maps = np.random.default_rng(0).normal(size=(count, *tile)).astype(np.float32)
    out = tmp_path / "m.png"
    write_output(
        str(out),
        maps,
        255.0,
        settings=OutputSettings(map="minmax", montage=True, grid=grid, legend=legend),
        labels=["a very long label that cannot fit any tile of these"] * count,
    )
    assert read_pixels(out).shape == expected_size(count, *tile, grid, legend=legend)


def test_a_single_map_with_legend_has_no_label_strip(tmp_path):
    maps = np.arange(100 * 50, dtype=np.float32).reshape(1, 100, 50)
    write_output(
        str(tmp_path / "o.png"), maps, 255.0, settings=OutputSettings(map="minmax", legend=True)
    )
    got = read_pixels(tmp_path / "o.png")
    assert got.shape == expected_size(1, 100, 50, labelled=False, legend=True)
    assert got[-1, 49] == 255 and got[0, 0] == 0  # the map itself, untouched at the top left


def test_labels_are_drawn_big_enough_above_the_tile(tmp_path):
    tiles = np.full((2, 256, 256), 50.0, np.float32)
    write_output(
        str(tmp_path / "m.png"),
        tiles,
        255.0,
        settings=OutputSettings(montage=True),
        labels=["sobel:dir=y", "kirsch:dir=n"],
    )
    got = read_pixels(tmp_path / "m.png")
    strip = 16 + 8  # font 256 // 16
    assert got.shape == (strip + 256, 2 * 256 + 4)
    assert (got[strip:, :256] == 50).all() and (
        got[strip:, 260:] == 50
    ).all()  # the map is not hidden
    for left in (0, 260):
        ink = np.nonzero((got[:strip, left : left + 256] > 128).any(axis=1))[0]
        assert (
            ink.size and ink.max() - ink.min() + 1 >= 11
        )  # 'k', 'y' span more than the old 8-px font


def recorded_numbers(monkeypatch):
    seen = []
    original = montage.number_text
    monkeypatch.setattr(
        montage,
        "number_text",
        lambda value, absolute=False: seen.append(value) or original(value, absolute),
    )
    return seen


@pytest.mark.parametrize(
    "options, colormap",
    [
        ({"map": "minmax"}, None),
        ({"map": "minmax"}, "viridis"),
        ({"map": "minmax", "joint": True}, None),
    ],
)
def test_legend_numbers_are_the_maps_range(tmp_path, monkeypatch, options, colormap):
    maps = np.random.default_rng(3).normal(0, 50, (3, 20, 24)).astype(np.float32)
    maps[1] += 300
    seen = recorded_numbers(monkeypatch)
    write_output(
        str(tmp_path / "m.png"),
        maps,
        255.0,
        settings=OutputSettings(montage=True, legend=True, colormap=colormap, **options),
    )
    data = maps.astype(np.float64)
    per_map = (data.min(axis=(1, 2)), data.max(axis=(1, 2)))
    low, high = (
        (np.full(3, data.min()), np.full(3, data.max())) if options.get("joint") else per_map
    )
    middle = 0.5 if colormap else 128 / 255
    expected = np.stack([high, low + (high - low) * middle, low], axis=1).reshape(-1)
    np.testing.assert_allclose(seen, expected, rtol=1e-6)


def test_legend_numbers_of_offset_and_units(tmp_path, monkeypatch):
    """offset: y*scale + offset, so black is -offset/scale; a 16-bit input written at 8 bits
    keeps its own units (as its .npy output would)."""
    seen = recorded_numbers(monkeypatch)
    maps = np.zeros((1, 16, 16), np.float32)
    write_output(
        str(tmp_path / "o.png"),
        maps,
        255.0,
        settings=OutputSettings(scale=0.5, offset=100, legend=True),
    )
    assert seen == [(255 - 100) / 0.5, (128 - 100) / 0.5, -100 / 0.5]
    seen.clear()
    write_output(
        str(tmp_path / "c.png"), maps, 65535.0, settings=OutputSettings(depth="8", legend=True)
    )
    np.testing.assert_allclose(seen, [65535, 65535 * 128 / 255, 0])


def test_map_with_range_reports_what_it_applied():
    maps = np.array([[[-3.0, 1.0, 5.0]], [[2.0, 2.0, 2.0]]], np.float32)
    values, used = mapping.map_with_range(maps, "minmax", 255.0)
    assert used.low.tolist() == [-3.0, 2.0] and used.high.tolist() == [5.0, 2.0]
    np.testing.assert_allclose(
        values[0, 0], (maps[0, 0] - used.low[0]) / (used.high[0] - used.low[0]) * 255
    )
    _, used = mapping.map_with_range(maps, "minmax", 255.0, symmetric=True)
    assert used.low.tolist() == [-5.0, -2.0] and used.high.tolist() == [5.0, 2.0]
    assert mapping.map_with_range(maps, "abs", 255.0)[1].absolute


def test_legend_is_a_monotone_ramp(tmp_path):
    maps = np.random.default_rng(1).normal(size=(1, 128, 40)).astype(np.float32)
    write_output(
        str(tmp_path / "g.png"), maps, 255.0, settings=OutputSettings(map="minmax", legend=True)
    )
    got = read_pixels(tmp_path / "g.png").astype(int)
    bar = got[:, 40 + 4 : 40 + 4 + 10]  # font 10 px: the bar is 10 columns after a gap of 4
    assert (bar == bar[:, :1]).all() and bar[0, 0] == 255 and bar[-1, 0] == 0
    assert (np.diff(bar[:, 0]) <= 0).all() and len(np.unique(bar[:, 0])) == 128
    write_output(
        str(tmp_path / "v.png"),
        maps,
        255.0,
        settings=OutputSettings(map="minmax", legend=True, colormap="viridis"),
    )
    colour = read_pixels(tmp_path / "v.png")[:, 45].astype(int)
    table = np.rint(mapping.colormap_table("viridis") * 255).astype(int)
    assert colour[0].tolist() == table[255].tolist() and colour[-1].tolist() == table[0].tolist()
    assert (np.diff(colour[:, 1]) <= 0).all()  # viridis's green rises from its start to its end


def test_legend_text_is_drawn(tmp_path):
    maps = np.random.default_rng(1).normal(size=(1, 64, 40)).astype(np.float32)
    write_output(
        str(tmp_path / "g.png"), maps, 255.0, settings=OutputSettings(map="minmax", legend=True)
    )
    numbers = read_pixels(tmp_path / "g.png")[:, 40 + 4 + 10 + 5 :]
    rows = (numbers > 128).any(axis=1)
    assert rows[:15].any() and rows[25:40].any() and rows[-15:].any()  # top, middle, bottom


def test_legend_through_the_cli_and_pipelines(gray, tmp_path):
    ok("conv", gray[0], "-k", "sobel", "--legend", "-o", tmp_path / "a.png")
    assert read_pixels(tmp_path / "a.png").shape == expected_size(
        1, 64, 80, labelled=False, legend=True
    )
    (tmp_path / "p.yaml").write_text(
        "steps: [{op: conv, kernel: [sobel_x, sobel_y]}]\noutput: {montage: true, legend: true}\n"
    )
    ok("run", tmp_path / "p.yaml", gray[0], "-o", tmp_path / "b.png")
    assert read_pixels(tmp_path / "b.png").shape == expected_size(2, 64, 80, legend=True)
    ok("conv", gray[0], "-k", "sobel", "-k", "box", "--split", "--legend", "-o", tmp_path / "s.png")
    assert read_pixels(tmp_path / "s_01.png").shape == expected_size(
        1, 64, 80, labelled=False, legend=True
    )


@pytest.mark.parametrize(
    "args, code, text",
    [
        (
            ["-k", "sobel", "-k", "box", "--legend", "-o", "{tmp}/o.png"],
            1,
            "--legend goes beside a single map",
        ),
        (["-k", "sobel", "--legend", "-o", "{tmp}/o.npy"], 1, "--legend writes images"),
        (["-k", "sobel", "--legend", "--map", "none", "-o", "{tmp}/o.tif"], 2, "--map none"),
        (
            ["-k", "box", "--legend", "--depth", "32f", "-o", "{tmp}/o.tif"],
            1,
            "float output keeps raw values",
        ),
    ],
)
def test_legend_refusals(gray, tmp_path, args, code, text):
    refused(run("conv", gray[0], *[a.format(tmp=tmp_path) for a in args]), code, text)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png"]
