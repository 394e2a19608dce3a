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


@pytest.mark.parametrize(
    "steps",
    [
        [{"op": "conv", "kernel": "box:size=3", "pad_mode": "reflect"}],  # the depthwise kernel
        [{"op": "conv", "kernel": "gaussian:sigma=2", "stride": 2}],  # the dense kernel
        [{"op": "conv", "kernel": "gaussian:sigma=2", "pad_mode": "replicate"}, "relu"],  # 2 passes
        ["relu", {"op": "conv", "kernel": "sobel", "dilation": 2, "padding": "full"}],
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


@pytest.mark.parametrize(
    "steps, settings",
    [
        ([{"op": "conv", "kernel": "sobel"}], OutputSettings(map="minmax")),  # global extremes
        ([{"op": "conv", "kernel": "box", "pad_mode": "circular"}], OutputSettings()),
        ([{"op": "pool", "size": 2}], OutputSettings()),
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
