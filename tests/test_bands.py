"""Big images in bands (``pipeline.bands``): the same bytes as the whole-image path, in bounded
memory. The band sizes are forced small so that small images go in many bands."""

import naive
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from convcli import runtime
from convcli.errors import LimitError
from convcli.io.images import OutputSettings
from convcli.pipeline import Job, parse_pipeline
from convcli.pipeline import bands as bands_module

KERNELS = ("box:size=3", "sobel", "sobel:dir=y", "laplacian", "box:size=2", "gaussian:sigma=1.5")
PADDINGS = ("same", "valid", "full", [2, 0, 1, 3])
MAPS = ("auto", "clip", "abs", "offset")


def _write_png(path, pixels):
    Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(path)


def _both(tmp_path, monkeypatch, steps, pixels, settings, calls=1, name="x"):
    """The PNG bytes of the job in bands (asserting it went so) and of the whole-image path."""
    source = tmp_path / f"{name}.png"
    _write_png(source, pixels)
    job = Job(parse_pipeline(steps), settings, overwrite=True)
    banded = []
    whole_run = bands_module._run
    monkeypatch.setattr(bands_module, "_run", lambda *a: banded.append(whole_run(*a)))
    out = {}
    for kind, threshold in (("bands", 0), ("whole", 1 << 60)):
        monkeypatch.setattr(bands_module, "BANDED_BYTES", threshold)
        monkeypatch.setattr(bands_module, "BAND_BYTES", 1)  # BAND_ROW_MULTIPLE rows a band
        target = tmp_path / f"{name}_{kind}.png"
        with runtime.repeated(calls):
            shapes = job(str(source), str(target))
        out[kind] = (target.read_bytes(), shapes)
    assert len(banded) == 1, "the job did not go in bands"
    return out["bands"], out["whole"]


@given(
    height=st.integers(1, 40),
    width=st.integers(1, 12),
    channels=st.sampled_from([1, 3]),
    kernel=st.sampled_from(KERNELS),
    padding=st.sampled_from(PADDINGS),
    pad_mode=st.sampled_from(["zeros", "reflect", "replicate", "symmetric"]),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
    then=st.sampled_from([[], ["relu"], ["gray"], [{"op": "select", "channels": [0]}]]),
    second=st.booleans(),
    mode=st.sampled_from(MAPS),
    depth=st.sampled_from([None, "16"]),
    seed=st.integers(0, 2**16),
)
def test_bands_give_the_bytes_of_the_whole_image(
    tmp_path_factory,
    height,
    width,
    channels,
    kernel,
    padding,
    pad_mode,
    stride,
    dilation,
    then,
    second,
    mode,
    depth,
    seed,
):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), np.uint8)
    conv = {
        "op": "conv",
        "kernel": kernel,
        "padding": padding,
        "pad_mode": pad_mode,
        "stride": stride,
        "dilation": dilation,
    }
    steps = [conv, *then] + ([{**conv, "stride": 1, "kernel": "laplacian"}] if second else [])
    with pytest.MonkeyPatch.context() as monkeypatch:
        try:
            whole_job = Job(parse_pipeline(steps), OutputSettings(map=mode, depth=depth))
            source = tmp_path_factory.mktemp("probe") / "p.png"
            _write_png(source, pixels)
            whole_job(str(source), None)
        except Exception:  # noqa: BLE001 - a window larger than the image, a border too wide
            return
        banded, whole = _both(
            tmp_path_factory.mktemp("b"),
            monkeypatch,
            steps,
            pixels,
            OutputSettings(map=mode, depth=depth),
        )
    assert banded == whole


def _bytes_equal_if_valid(tmp_path_factory, steps, pixels, settings):
    """The banded and whole-image bytes of ``steps`` on ``pixels``, asserted equal, unless
    the whole-image path refuses the steps on this image (a window larger than it, an output
    padding too large, ...)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        try:
            source = tmp_path_factory.mktemp("probe") / "p.png"
            _write_png(source, pixels)
            Job(parse_pipeline(steps), settings)(str(source), None)
        except Exception:  # noqa: BLE001 - the whole-image path says what is wrong
            return
        banded, whole = _both(tmp_path_factory.mktemp("b"), monkeypatch, steps, pixels, settings)
    assert banded == whole


CONV_STEPS = [[], [{"op": "conv", "kernel": "sobel", "stride": 2}], ["relu"]]


@given(
    height=st.integers(1, 40),
    width=st.integers(1, 12),
    channels=st.sampled_from([1, 3]),
    mode=st.sampled_from(["max", "avg"]),
    size=st.tuples(st.integers(1, 4), st.integers(1, 3)),
    stride=st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))),
    padding=st.one_of(st.sampled_from(["valid", "same"]), st.tuples(*[st.integers(0, 2)] * 4)),
    dilation=st.integers(1, 2),
    ceil_mode=st.booleans(),
    count_include_pad=st.booleans(),
    before=st.sampled_from(CONV_STEPS),
    after=st.sampled_from(CONV_STEPS + [[{"op": "pool", "size": 2, "padding": "same"}]]),
    map_mode=st.sampled_from(MAPS),
    seed=st.integers(0, 2**16),
)
def test_pools_in_bands_give_the_bytes_of_the_whole_image(
    tmp_path_factory,
    height,
    width,
    channels,
    mode,
    size,
    stride,
    padding,
    dilation,
    ceil_mode,
    count_include_pad,
    before,
    after,
    map_mode,
    seed,
):
    """Max and average pools, padded (counts, ``same``), in ceil mode, with either divisor,
    between convolutions: the windows and divisors at the bands' edges are the whole map's."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), np.uint8)
    if isinstance(padding, tuple):  # at most half the window on each side (PyTorch's limit)
        padding = tuple(min(pad, size[side // 2] // 2) for side, pad in enumerate(padding))
    pool = {"op": "pool", "mode": mode, "size": size, "padding": padding, "ceil_mode": ceil_mode}
    pool.update({} if stride is None else {"stride": stride})
    pool.update(
        {"dilation": dilation} if mode == "max" else {"count_include_pad": count_include_pad}
    )
    steps = [*before, pool, *after]
    _bytes_equal_if_valid(tmp_path_factory, steps, pixels, OutputSettings(map=map_mode))


@given(
    height=st.integers(1, 30),
    width=st.integers(1, 10),
    channels=st.sampled_from([1, 3]),
    kernel=st.sampled_from(KERNELS + ("box:size=1",)),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
    padding=st.one_of(st.just("same"), st.tuples(st.integers(0, 2), st.integers(0, 2))),
    output_padding=st.integers(0, 2),
    before=st.sampled_from(CONV_STEPS + [[{"op": "pool", "mode": "avg", "size": 2}]]),
    after=st.sampled_from(CONV_STEPS + [[{"op": "pool", "size": 3, "stride": 2}]]),
    map_mode=st.sampled_from(MAPS),
    depth=st.sampled_from([None, "16"]),
    seed=st.integers(0, 2**16),
)
def test_transposed_convs_in_bands_give_the_bytes_of_the_whole_image(
    tmp_path_factory,
    height,
    width,
    channels,
    kernel,
    stride,
    dilation,
    padding,
    output_padding,
    before,
    after,
    map_mode,
    depth,
    seed,
):
    """Transposed convolutions (stride, kernel, dilation, cropping, output padding) between
    convolutions and pools: each band reads the input rows that add onto its rows."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), np.uint8)
    transposed = {"op": "transposed", "kernel": kernel, "stride": stride, "dilation": dilation}
    transposed.update(padding=padding, output_padding=0 if padding == "same" else output_padding)
    steps = [*before, transposed, *after]
    settings = OutputSettings(map=map_mode, depth=depth)
    _bytes_equal_if_valid(tmp_path_factory, steps, pixels, settings)


@pytest.mark.parametrize(
    "steps",
    [
        [{"op": "conv", "kernel": "box:size=3", "pad_mode": "reflect"}],  # the depthwise kernel
        [{"op": "conv", "kernel": "gaussian:sigma=2", "stride": 2}],  # the dense kernel
        [{"op": "conv", "kernel": "gaussian:sigma=2", "pad_mode": "replicate"}, "relu"],  # 2 passes
        ["relu", {"op": "conv", "kernel": "sobel", "dilation": 2, "padding": "full"}],
        [{"op": "pool", "size": 3, "stride": 2, "padding": 1, "ceil_mode": True}],  # Numba's
        [{"op": "pool", "mode": "avg", "size": 3, "stride": 1, "padding": "same"}],
        [{"op": "transposed", "kernel": "gaussian:sigma=1", "stride": 2, "padding": 1}],
    ],
)
def test_bands_take_the_whole_maps_method(tmp_path, monkeypatch, rng, steps):
    """Declared as done a million times, the whole image takes Numba's kernels; each band,
    however small, takes the same (a band alone would be numpy's), and so the same bytes."""
    pixels = rng.integers(0, 256, (300, 300, 3), np.uint8)  # over NUMPY_WORK_TINY
    banded, whole = _both(tmp_path, monkeypatch, steps, pixels, OutputSettings(), calls=10**6)
    assert banded == whole


def test_bands_match_the_reference(tmp_path, monkeypatch, rng):
    """A Sobel edge map with a reflected border, in bands, against the plain-loop reference
    mapped by hand (``--map auto``: 0 on mid-grey 128, rounded half to even, clipped)."""
    pixels = rng.integers(0, 256, (37, 11, 1), np.uint8)
    steps = [{"op": "conv", "kernel": "sobel", "pad_mode": "reflect"}]
    (banded, shapes), _ = _both(tmp_path, monkeypatch, steps, pixels, OutputSettings())
    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64)[None, None]
    expected = naive.conv2d(pixels.transpose(2, 0, 1), sobel, pads=(1, 1, 1, 1), mode="reflect")
    expected = np.clip(np.rint(expected[0] + 128), 0, 255)
    written = np.asarray(Image.open(tmp_path / "x_bands.png"))
    np.testing.assert_array_equal(written, expected)
    assert shapes == {"input_shape": [37, 11, 1], "output_shape": [37, 11, 1]}


def test_pools_and_transposed_convs_in_bands_match_the_reference(tmp_path, monkeypatch, rng):
    """An average pool in ceil mode with its pad cells left out of the divisor, then a
    Laplacian transposed convolution at stride 2 with cropping and output padding, in bands,
    against the plain-loop references mapped by hand (``--map auto``: 0 on mid-grey 128,
    rounded half to even, clipped). Every value is exact in float32."""
    pixels = rng.integers(0, 256, (37, 11, 1), np.uint8)
    pool = {"op": "pool", "mode": "avg", "size": 2, "padding": 1, "ceil_mode": True}
    pool["count_include_pad"] = False
    transposed = {"op": "transposed", "kernel": "laplacian", "stride": 2, "padding": 1}
    transposed["output_padding"] = 1
    (banded, shapes), _ = _both(tmp_path, monkeypatch, [pool, transposed], pixels, OutputSettings())
    pooled = naive.avg_pool2d(
        pixels.transpose(2, 0, 1), (2, 2), (2, 2), (1, 1, 1, 1), True, count_include_pad=False
    )
    laplacian = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float64)[None, None]
    expected = naive.conv_transpose2d(pooled, laplacian, None, (2, 2), (1, 1), (1, 1))
    expected = np.clip(np.rint(expected[0] + 128), 0, 255)
    written = np.asarray(Image.open(tmp_path / "x_bands.png"))
    np.testing.assert_array_equal(written, expected)
    assert shapes == {"input_shape": [37, 11, 1], "output_shape": [38, 12, 1]}


def test_a_band_of_a_transposed_conv_adds_in_the_whole_maps_order(monkeypatch, rng):
    """The ``gemm`` method adds each tap's products per band of input rows: a band of the map
    keeps the whole input's bands of rows (``runtime.band_of``), and so each of its values is
    the whole map's bit for bit (a 3x3 kernel at stride 1: 9 products per value)."""
    from convcli import engine
    from convcli.engine import scatter

    monkeypatch.setattr(scatter, "BAND_BYTES", 4 * 9 * 16 * 5)  # 5 input rows a band
    image = rng.standard_normal((1, 40, 16)).astype(np.float32)
    weight = rng.standard_normal((1, 1, 3, 3)).astype(np.float32)
    whole = engine.conv_transpose2d(image, weight, method="gemm")
    reference = naive.conv_transpose2d(image, weight)
    np.testing.assert_allclose(whole, reference, rtol=1e-5, atol=1e-5)
    window = bands_module.TransposedWindow(40, 42, span=3)
    for first in range(0, 42, 8):
        last = min(42, first + 8)
        rows = window.reads(first, last)
        with runtime.band_of(42, 40, int(rows[0])):
            band = engine.conv_transpose2d(image[:, rows[0] : rows[-1] + 1], weight, method="gemm")
        kept = band[:, first - rows[0] : last - rows[0]]
        np.testing.assert_array_equal(kept, whole[:, first:last])


def test_bands_keep_the_whole_maps_transposed_method(tmp_path, monkeypatch, rng):
    """A 300x300 input takes ``gemm`` (a plane over ``GEMM_PIXELS``); a band of it alone
    would take ``spread``: each band takes the whole map's, in its bands of rows."""
    from convcli.engine import scatter

    monkeypatch.setattr(scatter, "BAND_BYTES", 4 * 9 * 300 * 5)  # 5 input rows a band
    pixels = rng.integers(0, 256, (300, 300, 1), np.uint8)
    steps = [{"op": "transposed", "kernel": "gaussian:sigma=0.7", "padding": "same"}]
    banded, whole = _both(tmp_path, monkeypatch, steps, pixels, OutputSettings(depth="16"))
    assert banded == whole


def test_pools_go_in_bands_but_not_with_indices(tmp_path, monkeypatch, rng):
    """A max pool goes in bands; with ``--indices`` (whole-plane flat indices, written whole
    as int64) it takes the whole-image path."""
    monkeypatch.setattr(bands_module, "BANDED_BYTES", 0)
    source, target = tmp_path / "in.png", tmp_path / "out.png"
    _write_png(source, rng.integers(0, 256, (20, 20, 3), np.uint8))
    steps = parse_pipeline([{"op": "pool", "name": "pool"}])
    picture = _picture(source)
    with_indices = Job(steps, indices=str(tmp_path / "i.npy"))
    assert bands_module.run_in_bands(with_indices, picture, str(source), str(target)) is None
    assert not target.exists()
    shapes = bands_module.run_in_bands(Job(steps), picture, str(source), str(target))
    assert shapes == {"input_shape": [20, 20, 3], "output_shape": [10, 10, 3]}


@pytest.mark.parametrize(
    "steps, settings",
    [
        ([{"op": "conv", "kernel": "sobel"}], OutputSettings(map="minmax")),  # global extremes
        ([{"op": "conv", "kernel": "box", "pad_mode": "circular"}], OutputSettings()),
        ([{"op": "pool", "name": "p"}, {"op": "unpool", "indices": "p"}], OutputSettings()),
        ([{"op": "conv", "kernel": "sobel"}], OutputSettings(montage=True)),
    ],
)
def test_jobs_that_need_the_whole_map_are_not_banded(tmp_path, monkeypatch, rng, steps, settings):
    monkeypatch.setattr(bands_module, "BANDED_BYTES", 0)
    source, target = tmp_path / "in.png", tmp_path / "out.png"
    _write_png(source, rng.integers(0, 256, (20, 20, 3), np.uint8))
    job = Job(parse_pipeline(steps), settings)
    assert bands_module.run_in_bands(job, _picture(source), str(source), str(target)) is None
    assert not target.exists()


def _picture(path):
    from convcli.io import images

    return images.read_input(str(path))


def test_big_images_go_in_bands_by_their_own_size(tmp_path, monkeypatch, rng):
    """Whether a job goes in bands depends on the float32 maps the whole path would hold."""
    taken = []
    monkeypatch.setattr(bands_module, "_run", lambda *a: taken.append(a[4]))
    source = tmp_path / "in.png"
    _write_png(source, rng.integers(0, 256, (64, 64, 3), np.uint8))
    job = Job(parse_pipeline([{"op": "conv", "kernel": "sobel"}]))
    whole_maps = 2 * 4 * 64 * 64 * 3
    monkeypatch.setattr(bands_module, "BANDED_BYTES", whole_maps)
    job(str(source), str(tmp_path / "whole.png"))
    monkeypatch.setattr(bands_module, "BANDED_BYTES", whole_maps - 1)
    job(str(source), str(tmp_path / "bands.png"))
    assert len(taken) == 1


def test_the_memory_budget_holds_in_bands(tmp_path, monkeypatch, rng):
    """``$CONVCLI_MAX_MEMORY`` too small for what the bands hold (the image, the output's
    pixels): one error naming the bands, no file."""
    monkeypatch.setattr(bands_module, "BANDED_BYTES", 0)
    source, target = tmp_path / "in.png", tmp_path / "out.png"
    _write_png(source, rng.integers(0, 256, (200, 200, 3), np.uint8))
    picture = _picture(source)
    monkeypatch.setenv("CONVCLI_MAX_MEMORY", "200K")
    job = Job(parse_pipeline([{"op": "conv", "kernel": "sobel"}]))
    with pytest.raises(LimitError, match=r"in bands of .*200\.0 KiB available"):
        bands_module.run_in_bands(job, picture, str(source), str(target))
    assert not target.exists()


PIPELINE = """steps:
  - {op: transposed, kernel: box:size=2, stride: 2}
  - {op: pool, mode: avg, size: 3, stride: 1, padding: 1, count_include_pad: false}
"""


@pytest.mark.parametrize(
    "args",
    [
        ["conv", "--transpose", "-k", "box:size=2", "--stride", "2"],
        ["run", "pipeline.yaml"],  # then an average pool: both steps in bands
    ],
)
def test_a_budget_the_whole_image_exceeds_holds_in_bands(tmp_path, monkeypatch, rng, args):
    """``$CONVCLI_MAX_MEMORY`` (3M) below the whole-image path's float32 maps (the 2x upscaled
    RGB map of a 256x256 image: 3 MiB) but above what the bands hold (the 8-bit image and the
    output's pixels: 1 MB) and what decoding needs: ``convcli conv --transpose`` and a
    pipeline ending in a pool write the whole-image path's file."""
    from click.testing import CliRunner

    from convcli.cli.main import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    _write_png(tmp_path / "in.png", rng.integers(0, 256, (256, 256, 3), np.uint8))
    monkeypatch.setattr(bands_module, "BAND_BYTES", 1)
    runner = CliRunner()
    whole = runner.invoke(cli, [*args, "in.png", "-o", "whole.png"])
    assert whole.exit_code == 0, whole.output
    monkeypatch.setenv("CONVCLI_MAX_MEMORY", "3M")
    refused = runner.invoke(cli, [*args, "in.png", "-o", "refused.png"])
    assert refused.exit_code == 1 and "3.0 MiB available" in refused.output, refused.output
    assert not (tmp_path / "refused.png").exists()
    monkeypatch.setattr(bands_module, "BANDED_BYTES", 0)
    banded = runner.invoke(cli, [*args, "in.png", "-o", "bands.png"])
    assert banded.exit_code == 0, banded.output
    assert (tmp_path / "bands.png").read_bytes() == (tmp_path / "whole.png").read_bytes()


@pytest.mark.parametrize("height", [37, 40])
def test_bands_through_winograd_layers_give_the_whole_images_bytes(tmp_path, monkeypatch, height):
    """A wide 3x3 layer by Winograd before another 3x3 layer, so that its bands start at odd
    rows of its map: the whole image's bytes. (Rounding to 8 bits hides a float's last bits:
    ``test_conv.test_winograd_band_gives_the_whole_maps_bytes`` checks the floats.)"""
    rng = np.random.default_rng(height)
    np.save(tmp_path / "a.npy", rng.normal(size=(64, 3, 3, 3)).astype(np.float32) / 8)
    np.save(tmp_path / "b.npy", rng.normal(size=(64, 64, 3, 3)).astype(np.float32) / 24)
    np.save(tmp_path / "c.npy", rng.normal(size=(3, 64, 3, 3)).astype(np.float32) / 24)
    steps = [
        {"op": "conv", "kernel": str(tmp_path / "a.npy"), "padding": 1},
        {"op": "relu"},
        {"op": "conv", "kernel": str(tmp_path / "b.npy"), "padding": 1},
        {"op": "conv", "kernel": str(tmp_path / "c.npy"), "padding": 1},
    ]
    pixels = rng.integers(0, 256, (height, 30, 3), np.uint8)
    with runtime.repeated(10_000):  # the work of a big batch: the layer goes by Winograd
        from convcli.engine.correlation import choose_method

        assert choose_method(np.load(tmp_path / "b.npy"), 1, (height, 30)) == "winograd"
    banded, whole = _both(tmp_path, monkeypatch, steps, pixels, OutputSettings(), calls=10_000)
    assert banded == whole
