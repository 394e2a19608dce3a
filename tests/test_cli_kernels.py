"""`convcli kernels list|show` and the kernel forms of `conv -k`, through Click's CliRunner."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from convcli.cli.main import cli
from convcli.kernels.library import resolve_kernel
from convcli.kernels.search import ENV_VAR

SEED_IMAGE = [[1, 2, 0, 1, 3], [4, 1, 1, 0, 2], [0, 2, 3, 1, 1], [1, 0, 2, 2, 0], [3, 1, 0, 1, 2]]


def run(*args, **env):
    return CliRunner(env=env or None).invoke(cli, [str(a) for a in args])


@pytest.fixture
def seed_npy(tmp_path):
    path = tmp_path / "seed.npy"
    np.save(path, np.array(SEED_IMAGE, dtype=np.uint8))
    return path


def test_list_names_every_builtin_with_its_size():
    result = run("kernels", "list")
    assert result.exit_code == 0, result.output
    for name in ("gaussian", "sobel", "kirsch", "motion_blur", "rgb_sobel", "vertical_edge"):
        assert name in result.stdout
    listed = {e["name"]: e for e in json.loads(run("kernels", "list", "--json").stdout)["kernels"]}
    assert listed["gaussian"]["shape"] == [7, 7]
    assert listed["gaussian"]["parameters"] == ["sigma=1.0 (0, 50]", "size=auto odd [1, 401]"]
    assert listed["rgb_sobel"]["shape"] == [2, 3, 3, 3]
    assert listed["sobel"]["location"].startswith("built-in ")


def test_show_prints_the_grid_sum_and_separability():
    result = run("kernels", "show", "sobel:dir=y", "--table")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "sobel:dir=y" and lines[1].startswith("from: built-in ")
    assert "│ -1 │ -2 │ -1 │" in result.stdout
    assert "zero-sum yes" in result.stdout
    assert "separable (rank 1): yes: column [-1, 0, 1] x row [1, 2, 1]" in result.stdout
    assert "separable (rank 1): no" in run("kernels", "show", "laplacian:neighbours=8").stdout
    assert "map 1, input channel 2" in run("kernels", "show", "rgb_sobel").stdout
    assert "too wide" in run("kernels", "show", "gaussian:sigma=5", "--table").stdout


def test_show_json_for_scripts():
    shown = json.loads(run("kernels", "show", "gaussian:sigma=0.5", "--json").stdout)
    assert shown["shape"] == [5, 5] and shown["parameters"] == {"sigma": 0.5, "size": None}
    assert shown["separable"] and not shown["zero_sum"] and shown["sum"] == pytest.approx(1)
    np.testing.assert_array_equal(
        np.float32(shown["weights"]), resolve_kernel("gaussian:sigma=0.5").weights
    )
    emboss = json.loads(run("kernels", "show", "emboss", "--json").stdout)
    assert (emboss["offset"], emboss["weights"][2]) == (128.0, [-1.0, 0.0, 0.0])
    inline = json.loads(run("kernels", "show", "3x1+0+0: 1 2 3", "--json").stdout)
    assert inline["weights"] == [[0.0, 1.0, 2.0, 3.0]] and inline["location"] == "inline"


def test_user_kernel_overrides_builtin_and_show_says_where(tmp_path):
    (tmp_path / "sobel.yaml").write_text("name: sobel\ndescription: mine\nweights: |\n  1 2 3\n")
    shown = json.loads(run("kernels", "show", "sobel", "--kernel-path", tmp_path, "--json").stdout)
    assert shown["weights"] == [[1.0, 2.0, 3.0]]
    assert shown["location"].startswith(
        f"--kernel-path {tmp_path / 'sobel.yaml'}, overriding built-in "
    )
    from_env = json.loads(
        run("kernels", "show", "sobel", "--json", **{ENV_VAR: str(tmp_path)}).stdout
    )
    assert from_env["location"].startswith(f"{ENV_VAR} {tmp_path / 'sobel.yaml'}")
    listed = run("kernels", "list", "--kernel-path", tmp_path)
    assert listed.exit_code == 0 and "mine" in listed.stdout


def test_list_fails_after_listing_when_a_user_kernel_is_broken(tmp_path):
    (tmp_path / "broken.yaml").write_text("weights: |\n  1 2\n  3\n")
    (tmp_path / "odd.yaml").write_text("description: '[bold]not markup[/bold].'\nweights: '1'\n")
    result = run("kernels", "list", "--kernel-path", tmp_path, COLUMNS="2000")
    assert result.exit_code == 1 and "gaussian" in result.stdout
    assert (
        "[bold]not markup[/bold]." in result.stdout
        and "(row 1 has 2, row 2 has 1)" in result.stdout
    )
    assert result.stderr.strip() == (
        "Error: 1 kernel file(s) could not be read: broken (see 'convcli kernels show NAME')"
    )


def conv_npy(*args, **env):
    result = run("conv", *args, **env)
    assert result.exit_code == 0, result.output
    return np.load(args[args.index("-o") + 1])[..., 0]


def test_conv_takes_every_kernel_form(seed_npy, tmp_path):
    out = tmp_path / "o.npy"
    expected = [[1, 3, -2], [-1, 0, 3], [-1, -1, 2]]  # the seeds' worked example
    (tmp_path / "edge.mat").write_text("3 3\n1 0 -1\n1 0 -1\n1 0 -1\n")
    (tmp_path / "folder").mkdir()
    np.save(tmp_path / "folder" / "mine.npy", np.array([[1, 0, -1]] * 3, np.float32))
    forms = [
        ["-k", "vertical_edge"],
        ["-k", "3x3: 1,0,-1 1,0,-1 1,0,-1"],
        ["-k", "3: 1 0 -1 1 0 -1 1 0 -1"],
        ["-k", tmp_path / "edge.mat"],
        ["-k", "mine", "--kernel-path", tmp_path / "folder"],
        ["-k", "prewitt:dir=x", "--bias", "0"],
    ]
    for form in forms:
        got = conv_npy(seed_npy, *form, "--padding", "valid", "-o", out, "--overwrite")
        assert got.tolist() == (
            expected if "prewitt:dir=x" not in form else (-np.array(expected)).tolist()
        )
    assert (
        conv_npy(
            seed_npy,
            "-k",
            "mine",
            "--padding",
            "valid",
            "-o",
            out,
            "--overwrite",
            **{ENV_VAR: str(tmp_path / "folder")},
        ).tolist()
        == expected
    )


def test_conv_applies_scale_and_offset(seed_npy, tmp_path):
    (tmp_path / "k.mat").write_text("1 1 4 10\n2\n")
    got = conv_npy(seed_npy, "-k", tmp_path / "k.mat", "-o", tmp_path / "o.npy")
    np.testing.assert_allclose(got, np.array(SEED_IMAGE) * 2 / 4 + 10)


def write_bad_files(tmp: Path):
    files = {
        "ragged.yaml": "weights: |\n  1 2 3\n  4 5\n",
        "word.yaml": "weights: |\n  1 x 3\n",
        "nan.yaml": "weights: |\n  1 nan 3\n",
        "inf.mat": "3 1\n1 inf 3\n",
        "empty.yaml": "weights: ''\n",
        "blank.mat": "\n",
        "unsafe.yaml": "name: !!python/object/apply:os.system ['echo hacked']\nweights: '1'\n",
        "typo.yaml": "weight: |\n  1\n",
        "list.yaml": "- 1\n- 2\n",
        "broken.yaml": "weights: [1, 2\n",
        "opencv.yaml": "%YAML:1.0\nkernel: !!opencv-matrix\n  rows: 1\n",
        "header.mat": "3 x 1\n1 2 3\n",
        "rows.mat": "3 3\n1 2 3\n",
        "zero.mat": "1 1 0\n1\n",
        "bank.yaml": "weights:\n  - '1'\n  - '2'\n",
        "shapes.yaml": "layout: [c_in, kh, kw]\nweights:\n  - '1 2'\n  - '3'\n",
        "param.yaml": "parameters: {size: {type: int, default: 2, odd: true}}\ngenerator: box\n",
        "alias.yaml": "alias: sobel:dir=x\n",
    }
    for name, text in files.items():
        (tmp / name).write_text(text)
    np.save(tmp / "inf.npy", np.array([[1, np.inf]], np.float32))
    np.save(tmp / "flat.npy", np.ones(3, np.float32))
    np.save(tmp / "none.npy", np.zeros((0, 3), np.float32))
    np.save(tmp / "objects.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)


# -k value (with {tmp} for the folder of bad files) -> the expected part of the one-line error
BAD_KERNELS = {
    "{tmp}/ragged.yaml": "{tmp}/ragged.yaml: weights: rows must all have the same number of values "
    "(row 1 has 3, row 2 has 2)",
    "{tmp}/word.yaml": "{tmp}/word.yaml: weights: row 1: 'x' is not a number",
    "{tmp}/nan.yaml": "{tmp}/nan.yaml: weights must be finite, found nan at [0, 1]",
    "{tmp}/inf.mat": "{tmp}/inf.mat: weights must be finite, found inf at [0, 1]",
    "{tmp}/inf.npy": "{tmp}/inf.npy: weights must be finite, found inf at [0, 1]",
    "{tmp}/empty.yaml": "{tmp}/empty.yaml: weights: the kernel is empty",
    "{tmp}/none.npy": "{tmp}/none.npy: the kernel is empty (shape (0, 3))",
    "{tmp}/blank.mat": "{tmp}/blank.mat: the first line must be 'width height [scale [offset]]', "
    "got ''",
    "{tmp}/flat.npy": "{tmp}/flat.npy: a kernel must be 2-D, 3-D or 4-D, got shape (3,)",
    "{tmp}/objects.npy": "{tmp}/objects.npy: not a readable .npy file "
    "(Object arrays cannot be loaded",
    "{tmp}/unsafe.yaml": "{tmp}/unsafe.yaml: line 1: unsafe or unknown YAML tag "
    "(could not determine a constructor for the tag "
    "'tag:yaml.org,2002:python/object/apply:os.system')",
    "{tmp}/typo.yaml": "{tmp}/typo.yaml: unknown key 'weight'",
    "{tmp}/list.yaml": "{tmp}/list.yaml: a kernel file must be a mapping",
    "{tmp}/broken.yaml": "{tmp}/broken.yaml: not valid YAML (line 2:",
    "{tmp}/opencv.yaml": "{tmp}/opencv.yaml: OpenCV FileStorage files are not supported",
    "{tmp}/header.mat": "{tmp}/header.mat: the first line must be 'width height [scale [offset]]', "
    "got '3 x 1'",
    "{tmp}/rows.mat": "{tmp}/rows.mat: the header says 3 rows, the file has 1",
    "{tmp}/zero.mat": "{tmp}/zero.mat: scale must be a finite non-zero number",
    "{tmp}/bank.yaml": "{tmp}/bank.yaml: weights nested 1 list(s) deep need a layout: "
    "[c_in, kh, kw]; [c_out, kh, kw]",
    "{tmp}/shapes.yaml": "{tmp}/shapes.yaml: the grids of weights differ in shape (1x1 vs 1x2)",
    "{tmp}/param.yaml": "{tmp}/param.yaml: the declared default: size=2 must be odd",
    "{tmp}/alias.yaml": "{tmp}/alias.yaml: alias 'sobel:dir=x' must name a YAML kernel "
    "(not an alias) in {tmp}",
    "{tmp}/missing.yaml": "kernel file '{tmp}/missing.yaml' does not exist",
    "{tmp}/notes.txt": "'{tmp}/notes.txt' is not a kernel name, a kernel file or an inline kernel "
    "(kernel files end in .yaml, .yml, .mat, .npy)",
    "gausian": "unknown kernel 'gausian'; did you mean 'gaussian'?",
    "gaussian:sigm=1": "kernel 'gaussian': unknown parameter 'sigm' (known: sigma, size)",
    "identity:size=3": "kernel 'identity': unknown parameter 'size' (it takes none)",
    "gaussian:sigma=0": "kernel 'gaussian': sigma=0 must be greater than 0",
    "gaussian:sigma=-1.5": "kernel 'gaussian': sigma=-1.5 must be greater than 0",
    "gaussian:sigma=nan": "kernel 'gaussian': sigma=nan must be finite",
    "gaussian:sigma=big": "kernel 'gaussian': sigma='big' is not a number",
    "gaussian:size=4": "kernel 'gaussian': size=4 must be odd",
    "box:size=0": "kernel 'box': size=0 must be at least 1",
    "box:size=2.5": "kernel 'box': size='2.5' is not a whole number",
    "motion_blur:length=999": "kernel 'motion_blur': length=999 must be at most 255",
    "sobel:dir=z": "kernel 'sobel': dir=z is not one of x|y",
    "sobel:dir": "kernel 'sobel': parameter 'dir' is not key=value",
    "sobel:dir=x,dir=y": "kernel 'sobel': parameter 'dir' is given twice",
    "sobel_x:dir=y": "kernel 'sobel_x': parameter 'dir' is fixed by the alias 'sobel:dir=x'",
    "3x3: 1 2 3": "inline kernel '3x3:': 3x3 needs 9 values, got 3",
    "3x3:": "inline kernel '3x3:': 3x3 needs 9 values, got 0",
    "2x1+2+0: 1 2": "inline kernel '2x1+2+0:': origin +2+0 is outside the 2x1 kernel",
    "2x1: 1 two": "inline kernel '2x1:': 'two' is not a number",
    "0x3:": "inline kernel '0x3:': width and height must be at least 1",
    "2x1: 1 1e300": "inline kernel '2x1:': weights must be within float32's range (3.4e38), "
    "found 1e+300",
}


@pytest.mark.parametrize("command", ["conv", "show"])
@pytest.mark.parametrize("spec", list(BAD_KERNELS))
def test_bad_kernel_is_one_line_error_naming_it(spec, command, tmp_path, seed_npy):
    bad = tmp_path / "bad"
    bad.mkdir()
    write_bad_files(bad)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    kernel = spec.format(tmp=bad)
    if command == "conv":
        args = ["conv", seed_npy, "-k", kernel, "-o", tmp_path / "o.npy"]
    else:
        args = ["kernels", "show", kernel]
    result = run(*args)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    expected = "Error: " + BAD_KERNELS[spec].format(tmp=bad)
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    assert "Traceback" not in result.output and not result.stdout
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def test_missing_kernel_folder_is_an_error(seed_npy, tmp_path):
    result = run("kernels", "show", "sobel", "--kernel-path", tmp_path / "nowhere")
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        == f"Error: kernel folder {str(tmp_path / 'nowhere')!r} does not exist"
    )


def test_unsafe_yaml_never_runs(tmp_path):
    marker = tmp_path / "ran"
    evil = f"weights: !!python/object/apply:os.system ['touch {marker}']\n"
    (tmp_path / "evil.yaml").write_text(evil)
    assert run("kernels", "show", tmp_path / "evil.yaml").exit_code == 1
    assert not marker.exists()


def test_kernels_commands_never_import_numba_or_the_engine():
    script = textwrap.dedent("""
        import sys
        from click.testing import CliRunner
        import convcli.kernels.library
        assert "rich" not in sys.modules, "kernel_library imported rich"
        from convcli.cli.main import cli
        for args in (["kernels", "list"], ["kernels", "list", "--json"],
                     ["kernels", "show", "gaussian:sigma=2"],
                     ["kernels", "show", "rgb_sobel", "--json"],
                     ["kernels", "show", "3: 1 2 1 2 4 2 1 2 1"]):
            result = CliRunner().invoke(cli, args)
            assert result.exit_code == 0, (args, result.output)
        heavy = sorted(
            m for m in ("numba", "convcli.engine._jit", "convcli.engine") if m in sys.modules
        )
        assert not heavy, heavy
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(
    shutil.which("vips") is None, reason="the vips binary (libvips) is not installed"
)
def test_mat_kernel_matches_vips_conv_on_the_interior(tmp_path):
    pixels = np.random.default_rng(11).integers(0, 256, (20, 24), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    (tmp_path / "k.mat").write_text(
        "3 3 4 10\n1 2 0\n0 -1 3\n-2 0 1\n"
    )  # asymmetric: catches a flip
    vips = [
        "vips",
        "conv",
        tmp_path / "in.png",
        tmp_path / "vips.csv",
        tmp_path / "k.mat",
        "--precision",
        "float",
    ]
    subprocess.run([str(a) for a in vips], check=True, capture_output=True, timeout=120)
    rows = (tmp_path / "vips.csv").read_text().splitlines()  # tab-separated by default
    theirs = np.array([[float(v) for v in row.split()] for row in rows if row.strip()])
    ours = conv_npy(tmp_path / "in.png", "-k", tmp_path / "k.mat", "-o", tmp_path / "ours.npy")
    # vips pads by copying the edge, convcli with zeros: compare where the kernel fits inside.
    np.testing.assert_allclose(ours[1:-1, 1:-1], theirs[1:-1, 1:-1], atol=1e-3)


def test_list_cache_follows_every_change_of_the_kernel_files(tmp_path, monkeypatch):
    """The cached catalogue is rebuilt when a file changes (same size), appears or goes."""
    monkeypatch.setenv("CONVCLI_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "mine"
    folder.mkdir()
    kernel = folder / "mine.yaml"

    def listed():
        result = run("kernels", "list", "--json", "--kernel-path", folder)
        assert result.exit_code == (1 if "could not be read" in result.stderr else 0), result.output
        return {row["name"]: row for row in json.loads(result.stdout)["kernels"]}

    kernel.write_text("description: one\nweights: '1 2'\n")
    assert listed()["mine"]["description"] == "one" and listed()["mine"]["shape"] == [1, 2]
    assert (tmp_path / "cache" / "kernel-catalogue.json").is_file()
    stamp = kernel.stat().st_mtime_ns
    kernel.write_text("description: two\nweights: '1 2'\n")
    os.utime(kernel, ns=(stamp + 10**9, stamp + 10**9))
    assert listed()["mine"]["description"] == "two"
    (folder / "more.npy").write_bytes(b"")
    assert "more" in listed() and "error" in listed()["more"]
    (folder / "more.npy").unlink()
    assert "more" not in listed()
    cached = run("kernels", "list", "--json").stdout  # another search path: rebuilt
    assert "mine" not in cached and "gaussian" in cached


def test_list_without_a_usable_cache_still_lists(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("CONVCLI_CACHE_DIR", str(blocker / "cache"))  # cannot be created
    assert "gaussian" in run("kernels", "list").stdout
    monkeypatch.setenv("CONVCLI_CACHE_DIR", str(tmp_path))
    (tmp_path / "kernel-catalogue.json").write_text('{"key": [], "rows": [{"bad": 1}]')
    result = run("kernels", "list", "--json")
    assert result.exit_code == 0 and "gaussian" in result.stdout
    assert json.loads((tmp_path / "kernel-catalogue.json").read_text())["rows"]
    kept = ("kernel-catalogue.json", "yaml")  # the listing and the kernel files' documents
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in kept]
    assert leftovers == ["file"]
    assert all(p.suffix == ".json" for p in (tmp_path / "yaml").iterdir())  # no temporaries
    cache = json.loads((tmp_path / "kernel-catalogue.json").read_text())  # current key, bad rows
    for damage in ({"parameters": [1]}, {"shape": ["7"]}, {"description": None}):
        cache["rows"][0].update(damage)
        (tmp_path / "kernel-catalogue.json").write_text(json.dumps(cache))
        assert run("kernels", "list", "--json").stdout == result.stdout


def test_warmup_caches_the_catalogue(tmp_path, monkeypatch):
    # In this process Numba's cache folder is its own default or $NUMBA_CACHE_DIR, whatever
    # CONVCLI_CACHE_DIR says (only ``runtime.configure_process``, in ``cli.main``, ties them):
    # the kernels compiled by earlier tests are loaded, not compiled again into tmp_path.
    monkeypatch.setenv("CONVCLI_CACHE_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["warmup"])
    assert result.exit_code == 0, result.output
    assert "compiled" in result.stderr and (tmp_path / "kernel-catalogue.json").is_file()


def test_an_unreadable_kernel_folder_is_one_line(tmp_path, monkeypatch):
    real_listdir = os.listdir

    def refuse(path):
        if str(path) == str(tmp_path):
            raise PermissionError(13, "Permission denied")
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", refuse)
    result = run("kernels", "list", "--kernel-path", tmp_path)
    assert result.exit_code == 1 and not result.stdout
    assert (
        result.stderr
        == f"Error: kernel folder {str(tmp_path)!r} cannot be read (Permission denied)\n"
    )
