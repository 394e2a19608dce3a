"""`convcli explain` and `convcli conv --explain` through Click's CliRunner and a real process."""

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run
from PIL import Image

SEED = "1,2,0,1,3;4,1,1,0,2;0,2,3,1,1;1,0,2,2,0;3,1,0,1,2"
SEED_POOL = "1,3,2,0;4,6,1,2;0,2,5,3;1,2,2,4"
STEM = ["--input", "224x224x3", "conv 64 k7 s2 p3 nobias", "maxpool k3 s2 p1"]
SCHEMA = json.loads((Path(__file__).parent.parent / "docs" / "explain-schema.json").read_text())


def one_error_line(result, fragment):
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0], (
        result.stderr
    )
    assert "Traceback" not in result.output


# ---- a tiny JSON Schema checker (jsonschema is not a dependency) ------------------------------

KEYWORDS = {
    "type",
    "const",
    "enum",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minimum",
    "exclusiveMinimum",
    "oneOf",
    "$ref",
}
ANNOTATIONS = {"$schema", "title", "description", "$defs"}
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def type_ok(value, name):
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, TYPES[name])


def errors(value, schema, path="$"):
    """Every violation of ``schema`` (the keywords above) by ``value``."""
    if "$ref" in schema:
        schema = SCHEMA["$defs"][schema["$ref"].rsplit("/", 1)[1]]
        return errors(value, schema, path)
    found = []
    types = schema.get("type")
    if types is not None and not any(
        type_ok(value, t) for t in ([types] if isinstance(types, str) else types)
    ):
        return [f"{path}: {value!r} is not {types}"]
    if "const" in schema and value != schema["const"]:
        found.append(f"{path}: {value!r} != {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{path}: {value!r} not in {schema['enum']}")
    if (
        "oneOf" in schema
        and sum(not errors(value, option, path) for option in schema["oneOf"]) != 1
    ):
        found.append(f"{path}: {value!r} matches not exactly one of {schema['oneOf']}")
    if isinstance(value, dict):
        found += [
            f"{path}: missing {key!r}" for key in schema.get("required", []) if key not in value
        ]
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                found += errors(item, properties[key], f"{path}.{key}")
            elif extra is False:
                found.append(f"{path}: unexpected {key!r}")
            elif isinstance(extra, dict):
                found += errors(item, extra, f"{path}.{key}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get(
            "maxItems", len(value)
        ):
            found.append(f"{path}: {len(value)} items")
        for index, item in enumerate(value):
            found += errors(item, schema.get("items", {}), f"{path}[{index}]")
    if type_ok(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            found.append(f"{path}: {value} < {schema['minimum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            found.append(f"{path}: {value} <= {schema['exclusiveMinimum']}")
    return found


def keywords(schema):
    if isinstance(schema, dict):
        for key, value in schema.items():
            yield key
            if key in ("properties", "$defs"):
                for sub in value.values():
                    yield from keywords(sub)
            elif isinstance(value, (dict, list)) and key not in ("required", "enum", "const"):
                yield from keywords(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from keywords(item)


def test_the_schema_uses_only_keywords_the_checker_knows():
    assert set(keywords(SCHEMA)) <= KEYWORDS | ANNOTATIONS


def test_the_checker_catches_violations():
    good = json.loads(run("explain", "--json", *STEM).stdout)
    assert errors(good, SCHEMA) == []
    bad = json.loads(json.dumps(good))
    bad["steps"][0]["output"] = [112, 112]
    bad["steps"][1]["kind"] = "pool"
    bad["total"]["macs"] = -1
    bad["surprise"] = 1
    assert len(errors(bad, SCHEMA)) == 4


# ---- traces -----------------------------------------------------------------------------------

UNET = [
    "--input",
    "64x64x1",
    "conv 16 k3 p1",
    "relu",
    "maxpool",
    "conv 32 k3 p1",
    "maxpool",
    "separable 64 k3 same",
    "transposed 32 k2 s2 valid",
    "conv 32 k3 p1",
    "transposed 16 k3 s2 p1 op1",
    "bn",
    "gap",
]


@pytest.mark.parametrize(
    "args",
    [
        STEM,
        UNET,
        ["--input", "10x10x3", "conv 8 k3 s2 valid", "conv 8 k7 valid"],
        ["--input", "6x6", "conv 1 k3 s2 same", "unpool k2", "gmp"],
    ],
)
def test_json_validates_against_the_schema(args):
    result = run("explain", "--json", *args)
    document = json.loads(result.stdout)
    assert errors(document, SCHEMA) == []
    assert result.exit_code == (1 if document["error"] else 0)


def test_json_trace_of_the_resnet_stem():
    result = run("explain", "--json", *STEM)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["input"] == {"shape": [224, 224, 3], "source": "224x224x3"}
    first, second = document["steps"]
    assert (
        first["output"] == [112, 112, 64]
        and first["params"] == 9408
        and first["macs"] == 118_013_952
    )
    assert first["arithmetic"] == ["floor((224 + 3 + 3 - 7) / 2) + 1 = 112"]
    assert first["receptive_field"] == {"size": [7, 7], "jump": [2, 2], "start": [0.0, 0.0]}
    assert second["output"] == [56, 56, 64] and second["padding"] == [1, 1, 1, 1]
    assert document["total"]["params"] == 9408 and document["total"]["output"] == [56, 56, 64]
    assert document["error"] is None and result.stderr == ""


def test_piped_output_is_tab_separated():
    result = run("explain", *STEM)
    assert result.exit_code == 0
    lines = [line.split("\t") for line in result.stdout.strip().splitlines()]
    assert lines[0] == [
        "#",
        "step",
        "output",
        "size arithmetic",
        "params",
        "MACs",
        "RF",
        "jump",
        "start",
    ]
    assert lines[1][:3] == ["0", "input", "224x224x3"]
    assert lines[2] == [
        "1",
        "conv 64 k7 s2 p3 nobias",
        "112x112x64",
        "floor((224 + 3 + 3 - 7) / 2) + 1 = 112",
        "9408",
        "118013952",
        "7",
        "2",
        "0",
    ]
    assert lines[-1][:6] == ["", "total", "56x56x64", "", "9408", "118013952"]
    assert "\x1b[" not in result.stdout


def test_table_on_request():
    result = run("explain", "--table", *STEM)
    assert result.exit_code == 0
    assert (
        "118,013,952" in result.stdout
        and "┃ step" in result.stdout
        and "\x1b[" not in result.stdout
    )
    assert "floor((224 + 3 + 3 - 7) / 2) + 1 = 112" in result.stdout


def test_warnings_go_to_stderr():
    result = run("explain", "--input", "28x28", "conv 8 k3 s2 valid")
    assert result.exit_code == 0
    assert result.stderr.strip() == (
        "warning: step 1 'conv 8 k3 s2 valid': stride 2 does not fit: the last "
        "row and column of the input are never read ((28 + 0 + 0 - 3) % 2 = 1)"
    )
    assert "warning" not in result.stdout


def test_input_from_image_and_npy_headers(tmp_path):
    Image.new("RGBA", (40, 30)).save(tmp_path / "photo.png")
    np.save(tmp_path / "maps.npy", np.zeros((12, 10, 4), np.float32))
    png = json.loads(run("explain", "--json", "--input", tmp_path / "photo.png", "relu").stdout)
    npy = json.loads(run("explain", "--json", "--input", tmp_path / "maps.npy", "relu").stdout)
    assert png["input"]["shape"] == [30, 40, 3] and npy["input"]["shape"] == [12, 10, 4]


def test_a_trace_never_imports_numba(tmp_path):
    Image.new("RGB", (16, 12)).save(tmp_path / "photo.png")
    np.save(tmp_path / "k.npy", np.ones((2, 2), np.float32))
    script = f"""
import sys
from click.testing import CliRunner
from convcli.cli.main import cli
runner = CliRunner()
for args in (["explain", "--input", "224x224x3", "conv 64 k7 s2 p3", "maxpool k3 s2 p1", "--json"],
             ["explain", "--input", {str(tmp_path / "photo.png")!r}, "transposed 4 k2 s2",
              "--table"],
             ["explain", "--by-hand", "--matrix", "{SEED}", "-k", {str(tmp_path / "k.npy")!r}],
             ["explain", "--by-hand", "--matrix", "{SEED_POOL}", "--pool", "max"],
             ["explain", "--by-hand", "--transpose", "--matrix", "{SEED}", "-k", "vertical_edge",
              "--stride", "2", "--gif", {str(tmp_path / "up.gif")!r}],
             ["explain", "--help"]):
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, (args, result.output)
assert "numba" not in sys.modules, "numba was imported"
print("ok")
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_real_process_trace():
    proc = subprocess.run(
        [sys.executable, "-m", "convcli", "explain", "--json", *STEM],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["total"]["macs"] == 118_013_952


BAD_TRACES = {
    "bad token": (
        ["--input", "8x8", "relu", "conv 64 k0"],
        2,
        "step 2 'conv 64 k0': token 'k0': kernel must be",
    ),
    "unknown kind": (["--input", "8x8", "pool k2"], 2, "step kind 'pool' is not one of conv,"),
    "bad shape": (["--input", "8x0x3", "relu"], 2, "must have sizes of at least 1"),
    "missing file": (
        ["--input", "{tmp}/nope.png", "relu"],
        1,
        "is neither HxWxC nor an existing file",
    ),
    "not an image": (["--input", "{tmp}/text.png", "relu"], 1, "not an image Pillow can read"),
    "kernel too large": (
        ["--input", "5x5", "conv 8 k7 valid"],
        1,
        "step 1 'conv 8 k7 valid': kernel 7x7 is larger than the padded input 5x5",
    ),
    "no steps": (["--input", "5x5"], 2, "needs --input and at least one STEP"),
    "no input": (["relu"], 2, "needs --input"),
    "json and table": (["--json", "--table", "--input", "5x5", "relu"], 2, "exclude each other"),
    "by-hand option": (
        ["--input", "5x5", "relu", "--pool", "max"],
        2,
        "--pool applies to --by-hand",
    ),
}


@pytest.mark.parametrize("name", list(BAD_TRACES))
def test_bad_traces_are_one_line(name, tmp_path):
    (tmp_path / "text.png").write_text("hello")
    args, code, fragment = BAD_TRACES[name]
    result = run("explain", *[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == code
    one_error_line(result, fragment)


# ---- by hand ----------------------------------------------------------------------------------


def test_seed_example_by_hand():
    result = run("explain", "--by-hand", "--matrix", SEED, "-k", "vertical_edge")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "output[0, 0]: window rows 0..2, columns 0..2" in out
    assert "  1 2 0      1  0 -1      1  0  0\n  4 1 1  x   1  0 -1  =   4  0 -1\n" in out
    assert "sum: 1 + 0 + 0 + 4 + 0 - 1 + 0 + 0 - 3 = 1" in out
    assert out.endswith("output (3x3):\n   1  3 -2\n  -1  0  3\n  -1 -1  2\n")


def test_inline_kernel_by_hand():
    result = run(
        "explain", "--by-hand", "--matrix", SEED, "-k", "3x3: 1,0,-1 1,0,-1 1,0,-1", "--cell", "2,2"
    )
    assert result.exit_code == 0, result.output
    assert "output[2, 2]: window rows 2..4, columns 2..4" in result.stdout
    assert result.stdout.endswith("   1  3 -2\n  -1  0  3\n  -1 -1  2\n")


def test_npy_matrix_and_kernel_with_stride_padding_and_cells(tmp_path):
    np.save(
        tmp_path / "m.npy",
        np.array(
            [[1, 2, 0, 1, 3], [4, 1, 1, 0, 2], [0, 2, 3, 1, 1], [1, 0, 2, 2, 0], [3, 1, 0, 1, 2]],
            np.int16,
        ),
    )
    np.save(tmp_path / "k.npy", np.array([[1, 0, -1]] * 3, np.float32))
    result = run(
        "explain",
        "--by-hand",
        "--matrix",
        tmp_path / "m.npy",
        "-k",
        tmp_path / "k.npy",
        "--stride",
        "2",
        "--padding",
        "1",
        "--cell",
        "0,0",
        "--cell",
        "2,2",
    )
    assert result.exit_code == 0, result.output
    assert "output size: floor((5 + 1 + 1 - 3) / 2) + 1 = 3" in result.stdout
    assert "input with its padding (· marks padding cells):" in result.stdout
    worked = re.findall(r"output\[\d, \d\]", result.stdout)
    assert worked == ["output[0, 0]", "output[2, 2]"]


def test_seed_max_pool_by_hand():
    result = run("explain", "--by-hand", "--matrix", SEED_POOL, "--pool", "max", "--size", "2")
    assert result.exit_code == 0, result.output
    assert "max(1, 3, 4, 6) = 6" in result.stdout and "max(2, 0, 1, 2) = 2" in result.stdout
    assert result.stdout.endswith("output (2x2):\n  6 2\n  2 5\n")


def test_max_pool_routing_by_hand():
    result = run(
        "explain",
        "--by-hand",
        "--matrix",
        SEED_POOL,
        "--pool",
        "max",
        "--size",
        "3",
        "--stride",
        "1",
        "--cell",
        "0,0",
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "max(1, 3, 2, 4, 6, 1, 0, 2, 5) = 6; argmax input[1, 1], index 1*4 + 1 = 5" in out
    assert "argmax indices (r*4 + c in the 4x4 input, as return_indices):\n  5 5\n  5 5\n" in out
    assert (
        "  0 0 0 0\n  0 4 0 0\n  0 0 0 0\n  0 0 0 0\n"
        "  (overlapping windows: a cell that wins several windows receives one 1 from each)\n"
    ) in out


def test_avg_pool_exclude_pad_by_hand():
    result = run(
        "explain",
        "--by-hand",
        "--matrix",
        SEED_POOL,
        "--pool",
        "avg",
        "--size",
        "3",
        "--stride",
        "2",
        "--padding",
        "1",
        "--exclude-pad",
        "--cell",
        "0,0",
    )
    assert result.exit_code == 0, result.output
    assert "(1 + 3 + 4 + 6) / 4 = 3.5" in result.stdout


def test_gif(tmp_path):
    path = tmp_path / "slide.gif"
    result = run("explain", "--by-hand", "--matrix", SEED, "-k", "vertical_edge", "--gif", path)
    assert result.exit_code == 0, result.output
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 3 * 3 + 1
    assert [p.name for p in tmp_path.iterdir()] == ["slide.gif"]


def _gif_frames(path):
    """Each frame of a GIF as RGB arrays, and its duration in ms."""
    with Image.open(path) as gif:
        frames, durations = [], []
        for index in range(gif.n_frames):
            gif.seek(index)
            frames.append(np.asarray(gif.convert("RGB")))
            durations.append(gif.info["duration"])
    return frames, durations


@pytest.mark.parametrize(
    "args, count",
    [
        (["-k", "vertical_edge", "--padding", "1"], 5 * 5 + 1),
        (["--pool", "max", "--size", "3", "--stride", "2"], 2 * 2 + 1),
        (["-k", "vertical_edge", "--transpose", "--stride", "2"], 5 * 5 + 1),
    ],
)
def test_gif_frame_time_cell_size_and_captions(tmp_path, args, count):
    base = ["explain", "--by-hand", "--matrix", SEED, *args]
    assert run(*base, "--gif", tmp_path / "default.gif").exit_code == 0
    result = run(*base, "--gif", tmp_path / "big.gif", "--frame-ms", "300", "--cell-px", "68")
    assert result.exit_code == 0, result.output
    default, default_ms = _gif_frames(tmp_path / "default.gif")
    frames, durations = _gif_frames(tmp_path / "big.gif")
    assert len(frames) == len(default) == count
    assert default_ms == [700] * (count - 1) + [2500]
    assert durations == [300] * (count - 1) + [2500]
    (height, width), (small_h, small_w) = frames[0].shape[:2], default[0].shape[:2]
    assert height > 1.5 * small_h and width > 1.5 * small_w  # cells twice as large, margins kept
    strip = [frame[: 16 + 68 * 2 // 5] for frame in frames]  # the caption, above the panel titles
    assert all((part != 255).any() for part in strip)
    assert all(a.tobytes() != b.tobytes() for a, b in itertools.pairwise(strip))


def test_transposed_by_hand_and_its_gif(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "scatter.gif"
    result = run(
        "explain",
        "--by-hand",
        "--transpose",
        "--matrix",
        "1,2,0;4,1,1",
        "-k",
        "vertical_edge",
        "--stride",
        "2",
        "--padding",
        "1",
        "--output-padding",
        "1",
        "--cell",
        "1,1",
        "--gif",
        path,
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "cols: (3 - 1)*2 - 2*1 + 1*(3 - 1) + 1 + 1 = 6" in out
    assert "rows: (2 - 1)*2 - 2*1 + 1*(3 - 1) + 1 + 1 = 4" in out
    assert "(a) scatter" in out and "(b) the same as a convolution" in out
    assert re.findall(r"output\[\d, \d\]:", out) == ["output[1, 1]:"]
    grid = out[out.rindex("output (4x6):") :].splitlines()[1:]
    expected = torch.nn.functional.conv_transpose2d(
        torch.tensor([[[[1.0, 2, 0], [4, 1, 1]]]]),
        torch.tensor([[[[1.0, 0, -1]] * 3]]),
        stride=2,
        padding=1,
        output_padding=1,
    )[0, 0]
    assert [[float(v) for v in line.split()] for line in grid] == expected.tolist()
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 2 * 3 + 1
    again = run(
        "explain",
        "--by-hand",
        "--transpose",
        "--matrix",
        "1,2;3,4",
        "-k",
        "vertical_edge",
        "--gif",
        path,
    )
    assert again.exit_code == 1 and "--overwrite" in again.stderr
    assert (
        run(
            "explain",
            "--by-hand",
            "--transpose",
            "--matrix",
            "1,2;3,4",
            "-k",
            "vertical_edge",
            "--gif",
            path,
            "--overwrite",
        ).exit_code
        == 0
    )


def test_channels_by_hand_from_npy_and_a_bank(tmp_path):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x, bank = rng.integers(-4, 5, (4, 5, 3)), rng.integers(-2, 3, (2, 3, 3, 3)).astype(np.float32)
    np.save(tmp_path / "m.npy", x.astype(np.int16))
    np.save(tmp_path / "bank.npy", bank)
    result = run(
        "explain",
        "--by-hand",
        "--matrix",
        tmp_path / "m.npy",
        "-k",
        tmp_path / "bank.npy",
        "--out-channel",
        "1",
        "--padding",
        "1",
        "--stride",
        "2",
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "4x5x3 input, 3x3x3 kernel 'bank' (C_in x kh x kw), output channel 1 of the bank" in out
    assert out.count("  channel 2:") == 2 and out.count("sum over m, n, c: ") == 2
    expected = torch.nn.functional.conv2d(
        torch.tensor(x.transpose(2, 0, 1)[None], dtype=torch.float64),
        torch.tensor(bank, dtype=torch.float64),
        stride=2,
        padding=1,
    )[0, 1]
    grid = out[out.rindex("output (2x3):") :].splitlines()[1:]
    assert [[float(v) for v in line.split()] for line in grid] == expected.tolist()
    inline = run(
        "explain", "--by-hand", "--matrix", "1|10,2|20;3|30,4|40", "-k", tmp_path / "bank.npy"
    )
    assert inline.exit_code == 1 and "(C_in, kh, kw)" in inline.stderr


BAD_BY_HAND = {
    "no matrix": (["-k", "vertical_edge"], 2, "needs --matrix and one of -k or --pool"),
    "both": (["--matrix", SEED, "-k", "vertical_edge", "--pool", "max"], 2, "one of -k or --pool"),
    "ragged": (["--matrix", "1,2;3", "--pool", "max"], 2, "same number of values"),
    "cell outside": (
        ["--matrix", SEED, "-k", "vertical_edge", "--cell", "3,0"],
        2,
        "cell 3,0 is outside",
    ),
    "3-D kernel": (["--matrix", SEED, "-k", "{tmp}/k3.npy"], 1, "by hand takes a 2-D kernel"),
    "unknown kernel": (["--matrix", SEED, "-k", "sobelx"], 1, "unknown kernel 'sobelx'"),
    "too large": (
        ["--matrix", SEED, "-k", "box:size=7"],
        1,
        "kernel 7x7 is larger than the padded input 5x5",
    ),
    "pool padding": (
        ["--matrix", SEED, "--pool", "max", "--padding", "2"],
        1,
        "more than half the window",
    ),
    "size with -k": (
        ["--matrix", SEED, "-k", "vertical_edge", "--size", "3"],
        2,
        "apply to --pool",
    ),
    "gif extension": (
        ["--matrix", SEED, "-k", "vertical_edge", "--gif", "{tmp}/a.png"],
        1,
        "must end in .gif",
    ),
    "gif directory": (
        ["--matrix", SEED, "-k", "vertical_edge", "--gif", "{tmp}/no/a.gif"],
        1,
        "does not exist",
    ),
    "with steps": (["--matrix", SEED, "--pool", "max", "relu"], 2, "not STEPs"),
    "output padding alone": (
        ["--matrix", SEED, "-k", "vertical_edge", "--output-padding", "1"],
        2,
        "--output-padding applies to --transpose",
    ),
    "transposed pool": (
        ["--matrix", SEED, "--pool", "max", "--transpose"],
        2,
        "--transpose applies to -k",
    ),
    "output padding rule": (
        ["--matrix", SEED, "-k", "vertical_edge", "--transpose", "--output-padding", "1"],
        1,
        "output padding 1x1 must be smaller than the stride (1x1) or the dilation (1x1)",
    ),
    "transposed full": (
        ["--matrix", SEED, "-k", "vertical_edge", "--transpose", "--padding", "full"],
        1,
        "transposed convolution takes padding same, valid, N or H,W",
    ),
    "transposed crops all": (
        ["--matrix", "1", "-k", "vertical_edge", "--transpose", "--padding", "2"],
        1,
        "crops away the whole transposed output",
    ),
    "bank filter": (
        ["--matrix", "1|2|3", "-k", "{tmp}/bank.npy", "--out-channel", "2"],
        1,
        "--out-channel 2 is outside the bank of 2 filters",
    ),
    "out channel of 2-D": (
        ["--matrix", SEED, "-k", "vertical_edge", "--out-channel", "0"],
        2,
        "--out-channel applies to a 4-D kernel",
    ),
    "channels pooled": (
        ["--matrix", "1|2,3|4", "--pool", "max"],
        1,
        "has 2 channels; by hand takes one here",
    ),
    "frame time": (
        ["--matrix", SEED, "-k", "vertical_edge", "--gif", "{tmp}/a.gif", "--frame-ms", "5"],
        2,
        "frame time must be at least 20",
    ),
    "cell size": (
        ["--matrix", SEED, "-k", "vertical_edge", "--gif", "{tmp}/a.gif", "--cell-px", "500"],
        2,
        "cell size must be at most 96",
    ),
    "cell size without gif": (
        ["--matrix", SEED, "-k", "vertical_edge", "--cell-px", "34"],
        2,
        "--cell-px applies to --gif",
    ),
    "transposed gif": (
        ["--matrix", SEED, "-k", "vertical_edge", "--transpose", "--gif", "{tmp}/a.png"],
        1,
        "must end in .gif",
    ),
}


@pytest.mark.parametrize("name", list(BAD_BY_HAND))
def test_bad_by_hand_is_one_line_and_writes_nothing(name, tmp_path):
    np.save(tmp_path / "k3.npy", np.ones((2, 3, 3), np.float32))
    np.save(tmp_path / "bank.npy", np.ones((2, 3, 1, 1), np.float32))
    before = sorted(tmp_path.iterdir())
    args, code, fragment = BAD_BY_HAND[name]
    result = run("explain", "--by-hand", *[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == code
    one_error_line(result, fragment)
    assert sorted(tmp_path.iterdir()) == before


# ---- conv --explain ---------------------------------------------------------------------------


def test_conv_explain_prints_the_trace_and_still_runs(tmp_path):
    np.save(
        tmp_path / "seed.npy",
        np.array(
            [[1, 2, 0, 1, 3], [4, 1, 1, 0, 2], [0, 2, 3, 1, 1], [1, 0, 2, 2, 0], [3, 1, 0, 1, 2]],
            np.uint8,
        ),
    )
    out = tmp_path / "out.npy"
    result = run(
        "conv",
        tmp_path / "seed.npy",
        "-k",
        "vertical_edge",
        "--padding",
        "valid",
        "-o",
        out,
        "--explain",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    row = (
        "1\t-k vertical_edge: conv 1 k3 valid nobias\t3x3x1\t"
        "floor((5 + 0 + 0 - 3) / 1) + 1 = 3\t9\t81"
    )
    assert row in result.stderr
    assert np.load(out)[..., 0].tolist() == [[1, 3, -2], [-1, 0, 3], [-1, -1, 2]]


def test_conv_explain_uses_the_real_kernel_and_input_shapes(tmp_path):
    Image.new("RGB", (20, 10)).save(tmp_path / "rgb.png")
    np.save(tmp_path / "bank.npy", np.ones((4, 3, 3, 3), np.float32))
    result = run(
        "conv",
        tmp_path / "rgb.png",
        "-k",
        tmp_path / "bank.npy",
        "--stride",
        "2",
        "--bias",
        "1",
        "-o",
        tmp_path / "o.npy",
        "--explain",
    )
    assert result.exit_code == 0, result.output
    row = [line.split("\t") for line in result.stderr.splitlines() if line.startswith("1\t")][0]
    # 10x20x3 input, 4 filters of 3x3x3 plus bias, TF same at stride 2
    arithmetic = (
        "rows: floor((10 + 0 + 1 - 3) / 2) + 1 = 5; cols: floor((20 + 0 + 1 - 3) / 2) + 1 = 10"
    )
    assert row[2:6] == ["5x10x4", arithmetic, str(4 * 27 + 4), str(4 * 5 * 10 * 27)]


def test_conv_explain_of_a_transposed_run(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((4, 4), np.float32))
    result = run(
        "conv",
        tmp_path / "x.npy",
        "-k",
        "box:size=2",
        "--transpose",
        "--stride",
        "2",
        "--padding",
        "valid",
        "-o",
        tmp_path / "o.npy",
        "--explain",
    )
    assert result.exit_code == 0, result.output
    assert (
        "transposed 1 k2 s2 valid nobias\t8x8x1\t(4 - 1)*2 - 2*0 + 1*(2 - 1) + 0 + 1 = 8"
        in result.stderr
    )
    assert np.load(tmp_path / "o.npy").shape == (8, 8, 1)


def test_conv_explain_error_is_one_line_after_the_trace(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((5, 5), np.float32))
    result = run(
        "conv",
        tmp_path / "x.npy",
        "-k",
        "box:size=7",
        "--padding",
        "valid",
        "-o",
        tmp_path / "o.npy",
        "--explain",
    )
    assert result.exit_code == 1
    errors_ = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert errors_ == [
        "Error: step 1 '-k box:size=7: conv 1 k7 valid nobias': kernel 7x7 is larger than the "
        "padded input 5x5 (input 5x5, padding valid)"
    ]
    assert not (tmp_path / "o.npy").exists()
