"""Every closed vocabulary refuses a typo in one shape, naming the nearest word:
``... 'sam' is not one of valid, same, full (did you mean 'same'?)``."""

import numpy as np
import pytest
from conftest import refused, run


@pytest.fixture
def seed(tmp_path):
    path = tmp_path / "seed.npy"
    np.save(path, np.arange(16, dtype=np.float32).reshape(4, 4))
    return path


CONV = ["conv", "{seed}", "-k", "box", "-o", "{tmp}/o.png"]

OPTIONS = {  # name: (arguments, the refusal)
    "padding word": (
        CONV + ["--padding", "sam"],
        "padding 'sam' is not one of valid, same, full (did you mean 'same'?)",
    ),
    "pad mode": (
        CONV + ["--pad-mode", "replicat"],
        "pad mode 'replicat' is not one of zeros, reflect, replicate, circular, symmetric "
        "(did you mean 'replicate'?)",
    ),
    "map mode": (
        CONV + ["--map", "minmx"],
        "'minmx' is not one of auto, clip, abs, minmax, offset, none (did you mean 'minmax'?)",
    ),
    "colormap": (
        CONV + ["--colormap", "virdis"],
        "'virdis' is not one of gray, viridis, magma, coolwarm (did you mean 'viridis'?)",
    ),
    "depth": (CONV + ["--depth", "166"], "'166' is not one of 8, 16, 32f (did you mean '16'?)"),
    "format": (
        ["conv", "{seed}", "-k", "box", "--out-dir", "{tmp}/out", "--format", "pgn"],
        "'pgn' is not one of npy, png, tif, tiff, jpg, jpeg, bmp, webp (did you mean 'png'?)",
    ),
    "alpha": (
        CONV + ["--alpha", "drp"],
        "'drp' is not one of keep, drop, channel (did you mean 'drop'?)",
    ),
    "pool mode": (
        ["pool", "{seed}", "--mode", "mx", "-o", "{tmp}/o.npy"],
        "'mx' is not one of max, avg (did you mean 'max'?)",
    ),
    "by-hand pool": (
        ["explain", "--by-hand", "--matrix", "1,2;3,4", "--pool", "avrg"],
        "'avrg' is not one of max, avg (did you mean 'avg'?)",
    ),
    "step kind": (
        ["explain", "-i", "8x8", "maxpol k2"],
        "step kind 'maxpol' is not one of conv, depthwise, pointwise",
    ),
    "no near word": (CONV + ["--padding", "xyz"], "padding 'xyz' is not one of valid, same, full"),
}


@pytest.mark.parametrize("name", OPTIONS)
def test_a_typo_in_an_option_names_the_nearest_word(seed, tmp_path, name):
    args, message = OPTIONS[name]
    line = refused(run(*(a.format(seed=seed, tmp=tmp_path) for a in args)), 2, message)
    assert ("did you mean" in line) == (name != "no near word")
    assert not (tmp_path / "o.png").exists()


def test_a_step_kind_typo_suggests_the_kind():
    line = refused(run("explain", "-i", "8x8", "maxpol k2"), 2)
    assert line.endswith("abs (did you mean 'maxpool'?) (see 'cli explain --help')")


PIPELINES = {  # YAML: the refusal
    "[gray, maxpol]": "p.yaml: step 2: op 'maxpol' is not one of conv, transposed, pool,",
    "[{op: pool, sise: 3}]": "p.yaml: step 1 (pool): field 'sise' "
    "is not one of mode, size, stride,",
    "[{op: conv, kernel: box, pad_mode: replicat}]": "p.yaml: step 1 (conv): pad_mode: 'replicat' "
    "is not one of zeros, reflect, replicate, circular, symmetric (did you mean 'replicate'?)",
    "[{op: conv, kernel: box, padding: sam}]": "p.yaml: step 1 (conv): padding: 'sam' "
    "is not one of valid, same, full (did you mean 'same'?)",
    "[{op: global_pool, mode: mx}]": "step 1 (global_pool): mode: 'mx' is not one of max, avg "
    "(did you mean 'max'?)",
    "{steps: [relu], output: {map: minmx}}": "p.yaml: output: --map 'minmx' "
    "is not one of auto, clip, abs, minmax, offset, none (did you mean 'minmax'?)",
    "{steps: [relu], output: {colourmap: gray}}": "p.yaml: output: option 'colourmap' "
    "is not one of map, scale, offset",
    "{stpes: [relu]}": "p.yaml: key 'stpes' is not one of steps, output, description "
    "(did you mean 'steps'?)",
}


@pytest.mark.parametrize("yaml", PIPELINES)
def test_a_typo_in_a_pipeline_names_the_nearest_word(seed, tmp_path, yaml):
    (tmp_path / "p.yaml").write_text(yaml)
    line = refused(
        run("run", tmp_path / "p.yaml", seed, "-o", tmp_path / "o.npy"), 1, "did you mean"
    )
    assert PIPELINES[yaml].replace("p.yaml", str(tmp_path / "p.yaml")) in line


@pytest.mark.parametrize(
    "yaml, near",
    [
        ("[gray, maxpol]", "pool"),
        ("[{op: pool, sise: 3}]", "size"),
        ("{steps: [relu], output: {colourmap: gray}}", "colormap"),
    ],
)
def test_the_pipeline_suggestion_is_the_nearest_name(seed, tmp_path, yaml, near):
    (tmp_path / "p.yaml").write_text(yaml)
    line = refused(run("run", tmp_path / "p.yaml", seed, "-o", tmp_path / "o.npy"), 1)
    assert line.endswith(f"(did you mean {near!r}?)")


def test_an_unknown_output_extension_names_the_nearest(seed, tmp_path):
    refused(
        run("conv", seed, "-k", "box", "-o", tmp_path / "o.pgn"),
        1,
        "has no known extension: '.pgn' is not one of .npy, .bmp",
        "(did you mean '.png'?)",
    )
