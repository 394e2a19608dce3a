"""Start-up cost and the JIT cache: light commands never import numba; cold starts do not clash."""

import ast
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

NO_NUMBA = textwrap.dedent("""
    import sys
    from click.testing import CliRunner
    from convcli.cli.main import cli
    result = CliRunner().invoke(cli, sys.argv[1:])
    assert result.exit_code == 0, result.output
    heavy = [m for m in ("numba", "convcli.engine._jit") if m in sys.modules]
    assert not heavy, heavy
    sys.stdout.write(result.output)
""")


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["conv", "--help"],
        ["pool", "--help"],
        ["kernels", "list"],
        ["kernels", "show", "sobel"],
        ["explain", "--input", "224x224x3", "conv 64 k7 s2 p3", "maxpool k3 s2 p1"],
        [
            "explain",
            "--by-hand",
            "--matrix",
            "1,2;3,4",
            "-k",
            "box",
            "--padding",
            "1",
            "--pad-mode",
            "symmetric",
        ],
    ],
)
def test_light_commands_do_not_import_numba(args):
    proc = subprocess.run(
        [sys.executable, "-c", NO_NUMBA, *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


def test_kernels_list_from_its_cache_imports_neither_numpy_nor_yaml(tmp_path):
    env = {**os.environ, "CONVCLI_CACHE_DIR": str(tmp_path)}
    light = NO_NUMBA.replace(
        '("numba", "convcli.engine._jit")', '("numba", "convcli.engine._jit", "numpy", "yaml")'
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", script, "kernels", "list", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        for script in (NO_NUMBA, light)
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[1].stderr
    assert runs[1].stdout == runs[0].stdout and '"gaussian"' in runs[0].stdout


@pytest.mark.parametrize(
    "command",
    [
        ["conv", "-k", "sobel_x"],
        ["conv", "-k", "gaussian:sigma=2"],
        ["conv", "--transpose", "-k", "box:size=2", "--stride", "2"],
        ["pool", "--mode", "max", "--size", "2"],
        ["pool", "--mode", "avg", "--size", "3", "--stride", "2"],
        ["pool", "--mode", "max", "--indices", "{tmp}/where.npy"],
    ],
)
def test_small_jobs_do_not_import_numba(tmp_path, command):
    """A 512x512 RGB image: every operation's numpy method, no Numba start-up."""
    np.save(tmp_path / "x.npy", np.ones((512, 512, 3), np.float32))
    rest = [word.format(tmp=tmp_path) for word in command[1:]]
    args = [command[0], str(tmp_path / "x.npy"), *rest, "-o", str(tmp_path / "y.npy")]
    script = NO_NUMBA.replace("sys.argv[1:]", repr(args))
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


PLUGINS_LOADED = textwrap.dedent("""
    import sys
    from convcli.io.images import read_input
    for path in sys.argv[1:]:
        print(path.rsplit(".", 1)[1], read_input(path).data.shape)
    print(sorted(m for m in sys.modules if m.endswith("ImagePlugin")))
""")


def test_reading_png_and_jpeg_loads_only_pillows_common_plugins(tmp_path):
    """Pillow's other plugins (a tenth of a small command's time) load only for other formats;
    a TIFF, after them in ``READ_FORMATS``, still opens."""
    from PIL import Image

    pixels = Image.fromarray(np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3))
    for ext in ("png", "jpg", "tif"):
        pixels.save(tmp_path / f"x.{ext}")
    runs = [
        subprocess.run(
            [sys.executable, "-c", PLUGINS_LOADED, *(str(tmp_path / f"x.{e}") for e in exts)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        for exts in (("png", "jpg"), ("png", "tif"))
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    common = {"PIL.BmpImagePlugin", "PIL.GifImagePlugin", "PIL.JpegImagePlugin"}
    common |= {"PIL.PngImagePlugin", "PIL.PpmImagePlugin"}
    *shapes, plugins = runs[0].stdout.splitlines()
    assert shapes == ["png (3, 4, 6)", "jpg (3, 4, 6)"]
    assert set(ast.literal_eval(plugins)) <= common
    assert runs[1].stdout.splitlines()[1] == "tif (3, 4, 6)"
    assert "PIL.TiffImagePlugin" in runs[1].stdout


REPEATED_CALLS = textwrap.dedent("""
    import sys
    import numpy as np
    from convcli import engine
    x, k = np.ones((3, 800, 800), np.float32), np.ones((5, 5), np.float32)  # 4.8e7 multiply-adds
    loaded = []
    for call in range(25):  # the 21st call would pass numpy's budget if calls were counted
        engine.conv2d(x, k)
        loaded.append("convcli.engine._jit" in sys.modules)
    with engine.repeated(25):  # declared: 25 x 4.8e7 pays for loading Numba
        engine.conv2d(x, k)
        loaded.append("convcli.engine._jit" in sys.modules)
    print(loaded.count(True), loaded[-1])
""")


def test_the_method_depends_on_the_call_and_the_declared_calls_only():
    proc = subprocess.run(
        [sys.executable, "-c", REPEATED_CALLS], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "True"]


COLD_RUN = textwrap.dedent("""
    import sys
    from convcli import runtime
    runtime.configure_process()  # Numba's cache in $CONVCLI_CACHE_DIR, as the command line has it
    import numpy as np
    from convcli import engine
    x = np.arange(3 * 40 * 40, dtype=np.float32).reshape(3, 40, 40) % 7
    y = engine.conv2d(x, np.arange(9, dtype=np.float32).reshape(3, 3), method="numba")
    z = engine.max_pool2d(y, (2, 2))
    np.save(sys.argv[1], z)
""")


def test_concurrent_cold_starts_share_one_cache(tmp_path):
    """Three processes compile into one empty cache at once: the lock serialises them."""
    env = {"CONVCLI_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", COLD_RUN, str(tmp_path / f"{i}.npy")],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
        proc.stderr.close()
    results = [np.load(tmp_path / f"{i}.npy") for i in range(3)]
    assert all(np.array_equal(results[0], r) for r in results[1:])
    rerun = subprocess.run(
        [sys.executable, "-c", COLD_RUN, str(tmp_path / "again.npy")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert np.array_equal(np.load(tmp_path / "again.npy"), results[0])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_engine_keeps_freed_blocks_for_reuse():
    """glibc takes both malloc settings (it refuses a mapping threshold above 32 MiB)."""
    from convcli import runtime

    assert runtime.keep_freed_blocks() is True


COMMAND_MODULES = textwrap.dedent("""
    import atexit, sys
    from convcli.cli.main import main
    unwanted = sys.argv.pop().split(",")
    sys.argv[0] = "convcli"
    atexit.register(lambda: print([m for m in unwanted if m in sys.modules], file=sys.stderr))
    main()
""")


def _modules_after(args: list[str], env: dict) -> list[str]:
    """The modules of ``NOT_FOR_CONV`` that a real ``convcli ARGS`` process had imported."""
    proc = subprocess.run(
        [sys.executable, "-c", COMMAND_MODULES, *args, ",".join(NOT_FOR_CONV)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    *_, loaded = proc.stderr.splitlines()
    assert proc.returncode == 0, proc.stderr
    return ast.literal_eval(loaded)


#: What ``convcli conv`` on a PNG with a built-in kernel does not need: the other commands, the
#: worked examples of ``explain``, Pillow's other plugins, and (its document cached) PyYAML.
NOT_FOR_CONV = (
    "convcli.cli.run",
    "convcli.cli.pool",
    "convcli.cli.explain",
    "convcli.cli.stats",
    "convcli.explain.byhand",
    "convcli.explain.drawing",
    "convcli.render.montage",
    "PIL.JpegImagePlugin",
    "PIL.BmpImagePlugin",
    "yaml",
)


def test_conv_imports_only_what_it_uses(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    env = {**os.environ, "CONVCLI_CACHE_DIR": str(tmp_path / "cache")}
    args = ["conv", str(tmp_path / "x.png"), "-k", "sobel_x", "--gray"]
    first = _modules_after([*args, "-o", str(tmp_path / "1.png")], env)
    second = _modules_after([*args, "-o", str(tmp_path / "2.png")], env)
    assert first == ["yaml"]  # the first read of sobel_x.yaml parses it
    assert second == []
    assert (tmp_path / "1.png").read_bytes() == (tmp_path / "2.png").read_bytes()


EXIT = textwrap.dedent("""
    import atexit, sys, threading, time
    marks = sys.argv.pop(1)
    atexit.register(lambda: open(marks + ".atexit", "w").close())
    if sys.argv.pop(1) == "thread":
        def late():
            time.sleep(0.5)
            open(marks + ".thread", "w").close()
        threading.Thread(target=late).start()
    sys.argv[0] = "convcli"
    from convcli.cli.main import main
    main()
""")


@pytest.mark.parametrize("thread", ["thread", "none"])
@pytest.mark.parametrize(
    "args, code",
    [
        (["kernels", "list", "--json"], 0),
        (["conv", "missing.png", "-k", "box", "-o", "y.png"], 1),
        (["conv"], 2),
    ],
)
def test_the_command_line_exits_with_its_code_after_atexit_and_threads(
    tmp_path, args, code, thread
):
    """The console script ends without the interpreter's teardown (``main.exit_now``), yet the
    exit code, the whole of stdout, ``atexit`` functions and running threads are as in an
    ordinary exit."""
    marks = str(tmp_path / "mark")
    proc = subprocess.run(
        [sys.executable, "-c", EXIT, marks, thread, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == code, proc.stderr
    assert os.path.exists(marks + ".atexit")
    assert os.path.exists(marks + ".thread") == (thread == "thread")
    if code == 0:
        assert proc.stdout.rstrip().endswith("}") and '"gaussian"' in proc.stdout
    else:
        assert proc.stderr.count("Error:") == 1
