"""`convcli run PIPELINE.yaml` and `convcli explain --pipeline`: the examples, errors, overrides."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import read_pixels, run
from PIL import Image
from test_cli_explain import SCHEMA, errors

from convcli import engine
from convcli.io.images import read_input

ROOT = Path(__file__).parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
SAMPLES = ROOT / "sample_images"


def test_there_are_examples():
    assert {p.stem for p in EXAMPLES} >= {"edges", "blur_pool", "cnn_block", "unpool"}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_runs_on_every_sample_image(example, tmp_path):
    result = run(
        "run", example, SAMPLES, "--out-dir", tmp_path, "--format", "png", "--jobs", 1, "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["done"] == len(list(SAMPLES.glob("*.png"))) == 4
    for record in report["records"]:
        with Image.open(record["output"]) as image:
            image.load()
    traced = run("explain", "--json", "--pipeline", example, "--input", SAMPLES / "chelsea.png")
    assert traced.exit_code == 0, traced.output
    assert errors(json.loads(traced.stdout), SCHEMA) == []
    steps = json.loads(traced.stdout)["steps"]
    chelsea = next(r for r in report["records"] if r["input"].endswith("chelsea.png"))
    assert steps[-1]["output"] == chelsea["output_shape"]


def test_edges_example_equals_the_engine(tmp_path):
    out = tmp_path / "edges.npy"
    result = run("run", ROOT / "examples" / "edges.yaml", SAMPLES / "chelsea.png", "-o", out)
    assert (
        result.exit_code == 1 and "--montage writes images, not .npy" in result.stderr
    )  # the file's output section
    plain = tmp_path / "plain.yaml"
    plain.write_text((ROOT / "examples" / "edges.yaml").read_text().split("output:")[0])
    assert run("run", plain, SAMPLES / "chelsea.png", "-o", out).exit_code == 0
    luma = engine.luma(read_input(str(SAMPLES / "chelsea.png")).data)
    expected = np.abs(
        np.concatenate(
            [
                engine.conv2d(luma, np.array(k, np.float32), pad_mode="replicate")
                for k in (
                    [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
                    [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
                )
            ]
        )
    )
    np.testing.assert_allclose(np.load(out), expected.transpose(1, 2, 0), rtol=1e-5, atol=1e-3)


def test_command_line_output_options_override_the_file(tmp_path):
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("steps: [abs]\noutput: {map: minmax, depth: 16}\n")
    source = tmp_path / "x.npy"
    np.save(source, np.array([[-4.0, 0.0, 2.0]], np.float32))
    assert run("run", pipeline, source, "-o", tmp_path / "a.png").exit_code == 0
    assert read_pixels(tmp_path / "a.png").tolist() == [[65535, 0, 32768]]
    assert run("run", pipeline, source, "-o", tmp_path / "b.png", "--depth", "8").exit_code == 0
    assert read_pixels(tmp_path / "b.png").tolist() == [[255, 0, 128]]
    clash = run("run", pipeline, source, "-o", tmp_path / "c.png", "--joint", "--map", "clip")
    assert clash.exit_code == 2 and "--joint applies to --map minmax" in clash.stderr


def test_a_bad_pipeline_fails_before_any_image_is_read(tmp_path):
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("steps:\n  - gray\n  - relu\n  - {op: pool, size: 0}\n")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    before = sorted(tmp_path.iterdir())
    result = run("run", pipeline, tmp_path / "corrupt.png", "--out-dir", tmp_path / "out")
    assert result.exit_code == 1
    assert result.stderr == f"Error: {pipeline}: step 3 (pool): size: must be at least 1, got 0\n"
    assert sorted(tmp_path.iterdir()) == before
    missing = run("run", tmp_path / "none.yaml", tmp_path / "corrupt.png", "-o", tmp_path / "o.png")
    assert missing.exit_code == 1 and "does not exist" in missing.stderr


def test_step_errors_on_an_image_name_the_step(tmp_path):
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("[{op: select, channels: [0, 2]}]\n")
    result = run("run", pipeline, SAMPLES / "camera.png", "-o", tmp_path / "o.png")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: step 1 (select): channel 2 does not exist: the input has 1 (0 to 0)\n"
    )


def test_run_reads_stdin_and_keeps_alpha(tmp_path):
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("[relu]\n")
    rgba = SAMPLES / "astronaut_rgba.png"
    result = run("run", pipeline, "-", "-o", "-", "--format", "png", input=rgba.read_bytes())
    assert result.exit_code == 0, result.stderr
    assert (
        result.stdout_bytes
        == run(
            "run", pipeline, "-", "-o", "-", "--format", "png", input=rgba.read_bytes()
        ).stdout_bytes
    )
    result = run("run", pipeline, rgba, "-o", tmp_path / "o.png")
    assert np.array_equal(
        read_pixels(tmp_path / "o.png"), read_pixels(rgba)
    )  # relu of pixels: the same RGBA


def test_explain_pipeline_text_and_errors(tmp_path):
    result = run(
        "explain", "--pipeline", ROOT / "examples" / "cnn_block.yaml", "--input", "64x48x3"
    )
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [row[1] for row in rows[1:6]] == [
        "input",
        "gray: channels 1",
        "normalise: normalise",
        "features: conv 4 k3 same replicate",
        "relu: relu",
    ]
    assert rows[4][2] == "64x48x4" and rows[4][4] == str(
        4 * 9 + 4
    )  # four 3x3 filters on one channel, 4 biases
    both = run(
        "explain", "--pipeline", ROOT / "examples" / "edges.yaml", "--input", "9x9", "conv 8 k3"
    )
    assert both.exit_code == 2 and "not both" in both.stderr
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("[{op: select, channels: [0, 1]}, gray]\n")
    bad = run("explain", "--pipeline", pipeline, "--input", "8x8x3")
    assert bad.exit_code == 1
    assert (
        bad.stderr.strip().splitlines()[-1]
        == "Error: step 2 'gray': gray needs 1 or 3 channels, the input has 2"
    )


def test_explain_pipeline_does_not_import_numba():
    code = textwrap.dedent(f"""
        import sys
        from click.testing import CliRunner
        from convcli.cli.main import cli
        pipeline = {str(ROOT / "examples" / "cnn_block.yaml")!r}
        result = CliRunner().invoke(cli, ["explain", "--pipeline", pipeline, "--input", "32x32x3"])
        assert result.exit_code == 0, result.output
        assert "numba" not in sys.modules
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
