import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import settings
from PIL import Image

from convcli.cli.main import cli

# float32 engine against a float64 reference: sums of at most a few hundred products of
# values in [-1, 1] stay well inside this.
TOLERANCE = dict(rtol=1e-5, atol=1e-4)

settings.register_profile("default", deadline=None, max_examples=60, derandomize=False)
settings.register_profile("ci", deadline=None, max_examples=60, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


def assert_matches(actual, expected):
    actual = np.asarray(actual)
    assert actual.shape == np.shape(expected), (actual.shape, np.shape(expected))
    np.testing.assert_allclose(actual, expected, **TOLERANCE)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


#: Runs convcli's entry point, then says on stderr whether Numba was imported.
WITH_IMPORTS = textwrap.dedent("""
    import atexit, sys
    atexit.register(lambda: sys.stderr.write("numba imported" if "numba" in sys.modules else ""))
    from convcli.cli.main import main
    main()
""")


def python_process(script: str, *args, **kwargs) -> subprocess.CompletedProcess:
    """``python -c SCRIPT ARGS...`` in a fresh process (``kwargs``: ``cwd``, ``env``, ...),
    its output as text; five minutes at most."""
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        **kwargs,
    )


def run(*args, **kwargs):
    """``convcli ARGS...`` in-process through Click's CliRunner (arguments may be paths)."""
    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


def refused(result, code, *expected):
    """``result`` is a one-line, short refusal with exit ``code`` holding each of ``expected``:
    no traceback, no exception but the exit."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == code, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr[:2000]
    assert len(lines[0]) <= 1000, lines[0][:300]
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def read_pixels(path):
    with Image.open(path) as image:
        return np.asarray(image)


@pytest.fixture
def rgb_png(tmp_path):
    """A 12x10 RGB PNG of random pixels."""
    path = tmp_path / "rgb.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(
        path
    )
    return path
