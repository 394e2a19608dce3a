"""Reading an input opens its file once, whatever its format (issue 19: it was opened three
times)."""

import os
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from convcli.cli.main import cli
from convcli.io.png import encode_png

#: Paths opened while ``watching`` is on (audit hooks cannot be removed: this one stays quiet).
opened: list = []
watching = False


def _audit(event, args):
    if watching and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        opened.append(os.path.realpath(os.fsdecode(args[0])))


sys.addaudithook(_audit)


def write_input(path, kind):
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    if kind == "npy":
        np.save(path, rgb.astype(np.float32))
    elif kind == "png16":
        path.write_bytes(encode_png(rng.integers(0, 65536, (12, 10, 3), dtype=np.uint16)))
    else:
        Image.fromarray(rgb).save(path)


@pytest.mark.parametrize("kind", ["png", "png16", "jpg", "gif", "bmp", "tif", "npy"])
def test_conv_opens_its_input_once(kind, tmp_path):
    global watching
    source = tmp_path / f"photo.{'png' if kind == 'png16' else kind}"
    write_input(source, kind)
    opened.clear()
    watching = True
    try:
        result = CliRunner().invoke(
            cli, ["conv", str(source), "-k", "sobel_x", "-o", str(tmp_path / "out.npy")]
        )
    finally:
        watching = False
    assert result.exit_code == 0, result.output
    assert opened.count(os.path.realpath(source)) == 1
