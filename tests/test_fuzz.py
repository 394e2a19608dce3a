"""Fuzzing the command line: random options, random bytes as images, random YAML as kernels.

Whatever it is given, convcli must end with exit 0, 1 or 2; never raise anything but
``SystemExit``; never print a Python traceback; end a failure with an ``Error: ...`` line; and
create or change no file outside its output folder (the inputs are snapshotted, and the
command runs with the output folder as its working directory).

The quick profile (CI) runs ``CONVCLI_FUZZ_EXAMPLES`` (default 30) examples per test; for a
long run::

    CONVCLI_FUZZ_EXAMPLES=5000 python -m pytest tests/test_fuzz.py -p no:cacheprovider

Every run is also bounded in memory (``CONVCLI_MAX_MEMORY=256M``) and sizes are drawn either
small or absurd (>= 10^9), so a legitimate but slow operation is never generated.
"""

import hashlib
import os
import string
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from convcli.cli.main import cli

EXAMPLES = int(os.environ.get("CONVCLI_FUZZ_EXAMPLES", "30"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)

# --------------------------------------------------------------------------------------------
# A workspace: read-only-in-spirit inputs, and an output folder the command runs in


def _inputs(folder: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(rgb[..., 0]).save(folder / "gray.jpg")
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(folder / "rgba.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(folder / "g16.png")
    frames = [Image.fromarray(np.roll(rgb, i, axis=0)) for i in range(3)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.tif")
    np.save(folder / "seed.npy", np.arange(25, dtype=np.uint8).reshape(5, 5))
    np.save(folder / "float.npy", rng.standard_normal((6, 7, 2)).astype(np.float32))
    np.save(folder / "bank.npy", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    np.save(folder / "indices.npy", np.zeros((6, 5, 3), np.int64))
    (folder / "k.yaml").write_text("name: k\nweights: |\n  1 0 -1\n  2 0 -2\n  1 0 -1\n")
    (folder / "k.mat").write_text("3 1 2\n1 0 1\n")
    (folder / "text.png").write_text("not an image\n")


def _digest(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        )
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="module")
def workspace():
    with tempfile.TemporaryDirectory(prefix="convcli-fuzz-") as root:
        inputs = Path(root) / "inputs"
        inputs.mkdir()
        _inputs(inputs)
        yield Path(root)


@pytest.fixture(autouse=True)
def bounded(monkeypatch):
    monkeypatch.setenv("CONVCLI_MAX_MEMORY", "256M")
    monkeypatch.delenv("CONVCLI_MAX_PIXELS", raising=False)
    monkeypatch.delenv("CONVCLI_KERNEL_PATH", raising=False)


def invoke(workspace: Path, args: list) -> None:
    """Run ``convcli args`` in a fresh output folder and check everything the module promises."""
    before = _digest(workspace)
    with tempfile.TemporaryDirectory(dir=workspace, prefix="out-") as out:
        previous = os.getcwd()
        os.chdir(out)
        try:
            result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)
        finally:
            os.chdir(previous)
        leftovers = [name for name in os.listdir(out) if name.endswith(".part")]
        after = {
            k: v for k, v in _digest(workspace).items() if not k.startswith(os.path.basename(out))
        }
    event(f"{args[0]}: exit {result.exit_code}")
    shown = f"convcli {' '.join(map(repr, args))}\nexit {result.exit_code}\n{result.output}"
    assert result.exit_code in (0, 1, 2), shown
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        shown + f"\n{type(result.exception).__name__}: {result.exception}"
    )
    assert "Traceback" not in result.output, shown
    assert "internal error" not in result.output, shown  # the batch runner's word for a bug
    if result.exit_code:
        lines = result.stderr.strip().splitlines()
        assert lines and lines[-1].startswith("Error: "), shown
    assert after == before, shown  # nothing created or changed outside the output folder
    assert not leftovers, shown


# --------------------------------------------------------------------------------------------
# Strategies

# Junk never holds a path separator, so a junk output name stays in the output folder.
JUNK_ALPHABET = st.characters(
    blacklist_characters="/\\", blacklist_categories=("Cs",)
) | st.sampled_from(
    ["\uff12", "\u017f", "\u202e", "\udcff", "\0", "-", ",", "x", ".", ":", "=", " "]
)
junk = st.text(JUNK_ALPHABET, max_size=12)
# sizes are small (fast) or absurd (refused at once): never a slow legitimate job
whole = st.one_of(
    st.integers(-3, 16), st.sampled_from([10**9, 2**31 - 1, 2**31, 10**30, -(10**30)])
)
number_text = st.one_of(
    whole.map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "-inf", "1e999", "1_0", "\uff11", "0x10", ""]),
)
# a valid value half the time, so that the runs also get past parsing
usual = st.sampled_from(["1", "2", "3", "1,2", "2,1"])
pair_text = st.one_of(
    usual,
    whole.map(str),
    st.tuples(whole, whole).map(lambda p: f"{p[0]},{p[1]}"),
    st.lists(whole, min_size=3, max_size=5).map(lambda v: ",".join(map(str, v))),
    junk,
)
pair_text = st.one_of(usual, pair_text)
padding_text = st.one_of(
    st.sampled_from(["same", "valid", "full", "0", "1", "SAME", "\u017fame"]), pair_text
)
GOOD_INPUTS = [
    "rgb.png",
    "gray.jpg",
    "rgba.png",
    "g16.png",
    "anim.gif",
    "cmyk.tif",
    "seed.npy",
    "float.npy",
]
inputs = st.one_of(
    st.sampled_from(GOOD_INPUTS),
    st.sampled_from(GOOD_INPUTS + ["text.png", "missing.png", "bank.npy", "k.yaml"]),
)
outputs = st.one_of(
    st.sampled_from(["o.png", "o.npy", "o.tif"]),
    st.sampled_from(["o.png", "o.npy", "o.tif", "o.jpg", "o.webp", "o.bmp", "o.xyz", "o", "-"]),
)
kernels = st.one_of(
    st.sampled_from(
        ["box", "sobel", "gaussian:sigma=1", "3x3: 1 0 -1 2 0 -2 1 0 -1", "{in}/k.yaml"]
    ),
    st.sampled_from(
        [
            "box",
            "sobel",
            "sobel:dir=y",
            "gaussian:sigma=1",
            "laplacian",
            "identity",
            "box:size=3",
            "3x3: 1 0 -1 2 0 -2 1 0 -1",
            "2x1+1+0: 1 2",
            "1x1: 3e38",
            "1: nan",
            "0x0:",
            "{in}/bank.npy",
            "{in}/k.yaml",
            "{in}/k.mat",
            "{in}/seed.npy",
            "{in}/text.png",
            "gausian",
            "box:size=",
            "rgb_sobel",
            "compass:dir=ne",
        ]
    ),
    st.builds(
        lambda name, key, value: f"{name}:{key}={value}",
        st.sampled_from(
            ["box", "gaussian", "log", "dog", "unsharp", "motion_blur", "sobel", "kirsch"]
        ),
        st.sampled_from(["size", "sigma", "sigma1", "length", "angle", "amount", "dir", "x"]),
        st.one_of(number_text, junk),
    ),
    junk,
)

CONV_OPTIONS = {
    "--stride": pair_text,
    "--padding": padding_text,
    "--dilation": pair_text,
    "--pad-mode": st.sampled_from(
        ["zeros", "reflect", "replicate", "circular", "REFLECT", "mirror"]
    )
    | junk,
    "--groups": whole.map(str) | junk,
    "--bias": st.one_of(number_text, junk),
    "--output-padding": pair_text,
    "--alpha": st.sampled_from(["keep", "drop", "channel", "x"]),
    "--map": st.sampled_from(["auto", "clip", "abs", "minmax", "offset", "none"]) | junk,
    "--scale": number_text,
    "--offset": number_text,
    "--depth": st.sampled_from(["8", "16", "32f", "64"]),
    "--colormap": st.sampled_from(["gray", "viridis", "magma", "coolwarm", "jet"]),
    "--montage-grid": st.sampled_from(["1x1", "2x2", "0x3", "9999999999x1"]) | junk,
    "--frame": whole.map(str) | junk,
    "--max-pixels": st.sampled_from(["0", "10", "100000000", "-1", "x"]),
    "--format": st.sampled_from(["png", "npy", "jpg", "gif"]),
}
POOL_OPTIONS = {
    "--mode": st.sampled_from(["max", "avg", "min"]),
    "--size": pair_text,
    "--stride": pair_text,
    "--padding": padding_text,
    "--dilation": pair_text,
    "--indices": st.sampled_from(["i.npy", "i.png", "o.npy"]),
    "--frame": whole.map(str),
    "--max-pixels": st.sampled_from(["0", "10", "x"]),
    "--map": st.sampled_from(["auto", "clip", "minmax"]),
    "--alpha": st.sampled_from(["keep", "drop", "channel"]),
}
UNPOOL_OPTIONS = {
    "--output-size": pair_text,
    "--size": pair_text,
    "--stride": pair_text,
    "--padding": pair_text,
    "--indices": st.sampled_from(
        ["{in}/indices.npy", "{in}/seed.npy", "{in}/float.npy", "{in}/missing.npy"]
    ),
    "--frame": whole.map(str),
    "--max-pixels": st.sampled_from(["0", "10", "x"]),
}
CONV_FLAGS = [
    "--flip",
    "--transpose",
    "--gray",
    "--explain",
    "--split",
    "--montage",
    "--rgba",
    "--joint",
    "--channels-first",
    "--no-such-flag",
]
POOL_FLAGS = [
    "--global",
    "--json",
    "--ceil-mode",
    "--exclude-pad",
    "--count-include-pad",
    "--split",
]


def options(table: dict, flags: list):
    pairs = st.lists(
        st.sampled_from(sorted(table)).flatmap(lambda name: st.tuples(st.just(name), table[name])),
        max_size=4,
    )
    flag_lists = st.lists(st.sampled_from(flags), max_size=2, unique=True) if flags else st.just([])
    return st.tuples(pairs, flag_lists).map(
        lambda t: [item for pair in t[0] for item in pair] + t[1]
    )


# --------------------------------------------------------------------------------------------
# The fuzz tests


@FUZZ
@given(
    source=inputs,
    output=outputs,
    kernel=st.lists(kernels, min_size=1, max_size=2),
    rest=options(CONV_OPTIONS, CONV_FLAGS),
)
def test_fuzz_conv_options(workspace, source, output, kernel, rest):
    folder = workspace / "inputs"
    args = ["conv", folder / source, "-o", output, *rest]
    for spec in kernel:
        args += ["-k", spec.replace("{in}", str(folder))]
    invoke(workspace, args)


@FUZZ
@given(
    command=st.sampled_from(["pool", "unpool"]),
    source=inputs,
    output=outputs,
    rest=options(POOL_OPTIONS, POOL_FLAGS),
    unpool_rest=options(UNPOOL_OPTIONS, []),
)
def test_fuzz_pool_options(workspace, command, source, output, rest, unpool_rest):
    folder = workspace / "inputs"
    if command == "unpool":
        rest = [str(item).replace("{in}", str(folder)) for item in unpool_rest]
        if "--indices" not in rest:
            rest += ["--indices", folder / "indices.npy"]
    invoke(workspace, [command, folder / source, "-o", output, *rest])


STEP_WORDS = st.sampled_from(
    [
        "conv",
        "depthwise",
        "pointwise",
        "separable",
        "transposed",
        "maxpool",
        "avgpool",
        "globalavgpool",
        "unpool",
        "relu",
        "batchnorm",
        "channels",
        "nonsense",
    ]
)
STEP_TOKENS = st.one_of(
    whole.map(str),
    st.builds("{}{}".format, st.sampled_from(list("ksdpgm") + ["op"]), pair_text),
    st.sampled_from(
        ["same", "valid", "full", "bias", "nobias", "ceil", "k3x5", "p0,1,0,1", "output_size=4,4"]
    ),
    junk,
)
steps = st.builds(
    lambda kind, tokens: " ".join([kind, *tokens]), STEP_WORDS, st.lists(STEP_TOKENS, max_size=4)
)


@FUZZ
@given(
    spec=st.one_of(kernels, junk),
    shape=st.one_of(
        st.sampled_from(
            ["224x224x3", "9x9", "1x1", "{in}/rgb.png", "{in}/seed.npy", "{in}/text.png", "0x0"]
        ),
        junk,
    ),
    layers=st.lists(steps, max_size=4),
    json_out=st.booleans(),
    matrix=st.sampled_from(["1,2,0;4,1,1;0,2,3", "1", "1,2;3", "{in}/seed.npy", "nan", ""]) | junk,
)
def test_fuzz_kernels_show_and_explain(workspace, spec, shape, layers, json_out, matrix):
    folder = str(workspace / "inputs")
    invoke(
        workspace,
        ["kernels", "show", spec.replace("{in}", folder)] + (["--json"] if json_out else []),
    )
    invoke(
        workspace,
        ["explain", "-i", shape.replace("{in}", folder), *layers]
        + (["--json"] if json_out else []),
    )
    invoke(
        workspace,
        [
            "explain",
            "--by-hand",
            "--matrix",
            matrix.replace("{in}", folder),
            "-k",
            spec.replace("{in}", folder),
        ],
    )


MAGIC = {
    "png": b"\x89PNG\r\n\x1a\n",
    "jpg": b"\xff\xd8\xff",
    "gif": b"GIF89a",
    "tif": b"II*\x00",
    "bmp": b"BM",
    "webp": b"RIFF\x00\x00\x00\x00WEBP",
    "npy": b"\x93NUMPY\x01\x00",
    "ppm": b"P6\n",
}


def _valid(fmt: str, variant: int) -> bytes:
    """Small valid files: plain, then with EXIF orientation, several frames, palettes, 16 bits."""
    import io

    buffer = io.BytesIO()
    pixels = np.random.default_rng(1).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    name = {"jpg": "JPEG", "tif": "TIFF", "ppm": "PPM"}.get(fmt, fmt.upper())
    exif = Image.Exif()
    exif[0x0112] = 6
    if fmt == "npy":
        np.save(buffer, pixels if variant == 0 else pixels[..., 0].astype(">u2"))
    elif variant == 1 and fmt in ("png", "jpg", "tif", "webp"):
        image.save(buffer, format=name, exif=exif)
    elif variant == 2 and fmt in ("gif", "tif", "png", "webp"):
        frames = [Image.fromarray(np.roll(pixels, i, axis=1)) for i in range(3)]
        frames[0].save(buffer, format=name, save_all=True, append_images=frames[1:])
    elif variant == 3 and fmt in ("png", "gif", "bmp", "tif"):
        image.convert("P", palette=Image.Palette.ADAPTIVE, colors=5).save(
            buffer, format=name, transparency=1
        )
    elif variant == 4 and fmt in ("png", "tif"):
        Image.fromarray(pixels[..., 0].astype(np.uint16) * 257).save(buffer, format=name)
    else:
        image.save(buffer, format=name)
    return buffer.getvalue()


VALID = {(fmt, variant): _valid(fmt, variant) for fmt in MAGIC for variant in range(5)}


@st.composite
def image_bytes(draw):
    """Random bytes behind a format's magic number, or a valid small file with random damage."""
    fmt = draw(st.sampled_from(sorted(MAGIC)))
    if draw(st.booleans()):
        return fmt, MAGIC[fmt] + draw(st.binary(max_size=300))
    data = bytearray(VALID[fmt, draw(st.integers(0, 4))])
    for _ in range(draw(st.integers(1, 6))):
        where = draw(st.integers(0, max(len(data) - 1, 0)))
        action = draw(st.sampled_from(["flip", "cut", "insert", "delete", "zero"]))
        if action == "flip" and data:
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[where:]
        elif action == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del data[where : where + draw(st.integers(1, 8))]
        else:
            data[where : where + 4] = b"\xff\xff\xff\x7f"[: len(data[where : where + 4])]
    return fmt, bytes(data)


@FUZZ
@given(
    sample=image_bytes(),
    ext=st.sampled_from(["png", "jpg", "gif", "tif", "bmp", "webp", "npy", "ppm", "dat"]),
    output=st.sampled_from(["o.png", "o.npy"]),
    frame=st.sampled_from([0, 0, 1]),
)
def test_fuzz_image_bytes(workspace, sample, ext, output, frame):
    _, data = sample
    with tempfile.TemporaryDirectory(dir=workspace, prefix="in-") as folder:
        path = Path(folder) / f"fuzzed.{ext}"
        path.write_bytes(data)
        invoke(workspace, ["conv", path, "-k", "sobel", "-o", output])
        invoke(workspace, ["pool", path, "--frame", str(frame), "-o", output])
        invoke(workspace, ["explain", "-i", path, "conv 8 k3"])


YAML_KEYS = [
    "name",
    "description",
    "source",
    "parameters",
    "generator",
    "weights",
    "layout",
    "scale",
    "offset",
    "alias",
    "type",
    "default",
    "min",
    "max",
    "choices",
    "size",
    "sigma",
    "dir",
    "x",
]
yaml_scalar = st.one_of(
    st.sampled_from(
        [
            "1 0 -1",
            "|\n  1 2\n  3 4",
            "sum",
            "gaussian",
            "box",
            "int",
            "float",
            "choice",
            "null",
            "~",
            "[c_out, kh, kw]",
            ".nan",
            "1e999",
            "9" * 40,
            "!!python/object/apply:os.system ['true']",
            "*a",
            "&a 1",
            "!!binary aGk=",
            "2001-12-14",
            "yes",
            "'1 2'",
            '"\\x00"',
        ]
    ),
    number_text,
    junk.map(repr),
)


def yaml_documents():
    leaf = yaml_scalar
    tree = st.recursive(
        leaf,
        lambda children: st.one_of(
            st.lists(children, max_size=4).map(lambda items: "[" + ", ".join(items) + "]"),
            st.dictionaries(st.sampled_from(YAML_KEYS), children, max_size=4).map(
                lambda d: "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"
            ),
        ),
        max_leaves=12,
    )
    block = st.dictionaries(st.sampled_from(YAML_KEYS), tree, max_size=6).map(
        lambda d: "".join(f"{k}: {v}\n" for k, v in d.items())
    )
    grid = st.lists(
        st.lists(st.one_of(st.integers(-9, 9).map(str), number_text), min_size=1, max_size=4),
        min_size=1,
        max_size=4,
    ).map(lambda rows: "|\n" + "".join("    " + " ".join(r) + "\n" for r in rows))
    kernel = st.fixed_dictionaries(
        {
            "weights": st.one_of(
                grid,
                st.lists(grid, min_size=1, max_size=3).map(
                    lambda grids: (
                        "\n"
                        + "".join(
                            f"  - {g.replace(chr(10) + '    ', chr(10) + '      ')}" for g in grids
                        )
                    )
                ),
            )
        },
        optional={
            "name": st.just("k"),
            "scale": st.one_of(number_text, st.just("sum")),
            "offset": number_text,
            "layout": st.sampled_from(["[c_in, kh, kw]", "[c_out, kh, kw]", "[kh, kw]", "[x]"]),
            "description": junk.map(repr),
        },
    ).map(lambda d: "".join(f"{k}: {v}\n" for k, v in d.items()))
    rule = st.fixed_dictionaries(
        {"type": st.sampled_from(["int", "float", "choice", "str"])},
        optional={
            "default": yaml_scalar,
            "min": number_text,
            "max": number_text,
            "exclusive_min": number_text,
            "odd": st.sampled_from(["true", "false", "1"]),
            "choices": st.sampled_from(["[a, b]", "[1, 3]", "[]"]),
        },
    )
    generated = st.builds(
        lambda generator, params: (
            f"generator: {generator}\nparameters:\n"
            + "".join(
                f"  {name}: {{{', '.join(f'{k}: {v}' for k, v in rules.items())}}}\n"
                for name, rules in params.items()
            )
        ),
        st.sampled_from(["box", "gaussian", "unsharp", "log", "dog", "motion_blur", "nope"]),
        st.dictionaries(
            st.sampled_from(
                ["size", "sigma", "sigma1", "sigma2", "amount", "length", "angle", "x"]
            ),
            rule,
            max_size=3,
        ),
    )
    return st.one_of(
        kernel,
        generated,
        block,
        st.text(string.printable, max_size=200),
        st.binary(max_size=100).map(lambda b: b.decode("latin-1")),
    )


@FUZZ
@given(text=yaml_documents(), name=st.sampled_from(["k.yaml", "k.yml", "k.mat"]))
def test_fuzz_yaml_kernels(workspace, text, name):
    with tempfile.TemporaryDirectory(dir=workspace, prefix="in-") as folder:
        path = Path(folder) / name
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        invoke(workspace, ["kernels", "show", path])
        invoke(workspace, ["conv", workspace / "inputs" / "seed.npy", "-k", path, "-o", "o.npy"])
        invoke(workspace, ["kernels", "list", "--kernel-path", folder])


PIPELINE_OPS = [
    "gray",
    "relu",
    "abs",
    "sigmoid",
    "tanh",
    "leaky_relu",
    "conv",
    "transposed",
    "pool",
    "unpool",
    "normalise",
    "select",
    "nope",
]
FIELDS = {
    "kernel": kernels.map(repr),
    "stride": whole.map(str),
    "padding": padding_text.map(repr),
    "size": whole.map(str),
    "mode": st.sampled_from(["max", "avg", "minmax", "standard", "x"]),
    "bias": number_text.map(repr),
    "pad_mode": st.sampled_from(["zeros", "reflect", "mirror"]),
    "dilation": whole.map(str),
    "groups": whole.map(str),
    "name": junk.map(repr),
    "mean": number_text,
    "std": number_text,
    "channels": st.sampled_from(["[0]", "[0, 9]", "0", "[]"]),
    "indices": junk.map(repr),
    "flip": st.sampled_from(["true", "no", "3"]),
    "slope": number_text,
}


@st.composite
def pipelines(draw):
    """Pipeline files: a list of steps, each an op's name or a mapping of random fields."""
    steps = []
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(PIPELINE_OPS))
        fields = draw(st.dictionaries(st.sampled_from(sorted(FIELDS)), st.just(None), max_size=3))
        if not fields and draw(st.booleans()):
            steps.append(f"  - {op}\n")
            continue
        body = "".join(f"    {name}: {draw(FIELDS[name])}\n" for name in fields)
        steps.append(f"  - op: {op}\n{body}")
    output = draw(
        st.sampled_from(
            [
                "",
                "output:\n  montage: true\n",
                "output:\n  map: minmax\n  joint: yes\n",
                "output: 3\n",
                "output:\n  nonsense: 1\n",
            ]
        )
    )
    return "steps:\n" + "".join(steps) + output if steps else draw(yaml_documents())


@FUZZ
@given(text=pipelines(), source=inputs, output=outputs)
def test_fuzz_pipelines(workspace, text, source, output):
    with tempfile.TemporaryDirectory(dir=workspace, prefix="in-") as folder:
        path = Path(folder) / "p.yaml"
        path.write_text(
            text.replace("{in}", str(workspace / "inputs")),
            encoding="utf-8",
            errors="surrogatepass",
        )
        invoke(workspace, ["run", path, workspace / "inputs" / source, "-o", output])
