"""Benchmarks: convcli's engine and CLI side by side with OpenCV, SciPy, PyTorch, vips, ImageMagick.

Every figure is the median of several rounds, each round timing every tool once in turn, and
each competitor is reported as a ratio to convcli measured in the same rounds (the machines
are noisy; ratios within one run are not).
Competitors that are not installed are left out. Results go to stdout and to a markdown
file (default ``bench/results.md``) that docs/performance.md quotes.

    python bench/run.py                 # the full suite (several minutes on 2 cores)
    python bench/run.py --quick         # small sizes, one repeat: checks the suite still runs
    python bench/run.py --only dense --cpu avx2   # as an AVX2+FMA machine without AVX-512

With ``convcli[dask]`` installed, a batch is also timed with ``--executor dask`` on a cluster
of 1 and 2 workers started here (docs/scale-out.md quotes it).
"""

from __future__ import annotations

import argparse
import compileall
import os
import pathlib
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from convcli import engine
from convcli.engine import _jit  # noqa: F401  (in-process figures are for a warm engine, Numba loaded)
from convcli.io import png


def _optional(name):
    try:
        return __import__(name)
    except ImportError:
        return None


#: How the processes run convcli: the console script beside this Python, as users run it
#: (``python -m convcli`` adds ``runpy``), if installed; else the module.
_SCRIPT = os.path.join(os.path.dirname(sys.executable), "convcli")
CONVCLI = [_SCRIPT] if os.access(_SCRIPT, os.X_OK) else [sys.executable, "-m", "convcli"]

cv2, torch = _optional("cv2"), _optional("torch")
ndimage = _optional("scipy.ndimage") and sys.modules["scipy.ndimage"]


@dataclass
class Case:
    """One benchmark: convcli's callable and competitors' callables on the same data."""

    name: str
    convcli: Callable[[], object]
    others: dict = field(default_factory=dict)
    #: Floating-point operations of one call (2 per multiply-add), for GFLOP/s; 0: not shown.
    flops: int = 0


def seconds_of(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def warm(fn: Callable[[], object]) -> None:
    """Call ``fn`` until two calls in a row agree within 10%, at least 3 and at most 10 times.

    The first calls of a process run slow (fresh pages for large arrays, thread pools
    starting, Numba's kernels loading); every tool gets the same warm-up.
    """
    previous = seconds_of(fn)
    for calls in range(2, 11):
        current = seconds_of(fn)
        if calls >= 3 and abs(current - previous) <= 0.1 * previous:
            break
        previous = current


def interleaved_medians(fns: dict, repeats: int) -> dict:
    """The median seconds of each of ``fns`` over ``repeats`` rounds, each round calling every
    tool once in turn: a slow spell of the machine then hits all tools alike, rather than
    whichever tool it was timing (one repeat and no warm-up with ``repeats`` of 1).

    In a round each tool is called once untimed, then timed: the first call after another
    tool's long one ran 2-10x slow here, for every tool (convcli's 3x3 on 4096^2x3: 30 ms
    after OpenCV's call, 110-320 ms after SciPy's or PyTorch's second-long ones), which
    ranked tools by what ran before them."""
    if repeats > 1:
        for fn in fns.values():
            warm(fn)
    return {
        name: statistics.median(values)
        for name, values in interleaved_rounds(fns, repeats, settled_seconds_of).items()
    }


def settled_seconds_of(fn: Callable[[], object]) -> float:
    """``seconds_of`` a second call of ``fn``, the first untimed (``interleaved_medians``)."""
    fn()
    return seconds_of(fn)


def interleaved_rounds(subjects: dict, repeats: int, measure=seconds_of) -> dict:
    """``measure(subject)`` of each of ``subjects``, in ``repeats`` rounds that take every
    subject once in turn: a list of measures per subject."""
    measured = {name: [] for name in subjects}
    for _ in range(repeats):
        for name, subject in subjects.items():
            measured[name].append(measure(subject))
    return measured


def gaussian(k: int) -> np.ndarray:
    line = np.exp(-0.5 * ((np.arange(k) - k // 2) / (k / 6)) ** 2)
    return np.outer(line, line).astype(np.float32) / np.float32(line.sum() ** 2)


def depthwise_cases(size: int, kernel_sizes, separable: bool = False) -> list[Case]:
    rng = np.random.default_rng(0)
    image = rng.random((3, size, size), dtype=np.float32)
    hwc = np.ascontiguousarray(image.transpose(1, 2, 0))
    cases = []
    for k in kernel_sizes:
        kernel = gaussian(k) if separable else rng.random((k, k), dtype=np.float32)
        kind = "Gaussian (rank 1)" if separable else "random (full rank)"
        case = Case(
            f"depthwise {size}^2x3, {k}x{k} {kind}",
            lambda kernel=kernel: engine.conv2d(image, kernel),
        )
        if cv2:
            case.others["OpenCV filter2D"] = lambda kernel=kernel: cv2.filter2D(
                hwc, -1, kernel, borderType=cv2.BORDER_CONSTANT
            )
        if ndimage and k <= 7:  # SciPy's direct loops take minutes beyond that
            case.others["SciPy correlate"] = lambda kernel=kernel: [
                ndimage.correlate(image[c], kernel, mode="constant") for c in range(3)
            ]
        if torch and k <= 7:  # PyTorch's CPU depthwise path takes many seconds beyond that
            t_image, t_kernel = (
                torch.from_numpy(image)[None],
                torch.from_numpy(np.stack([kernel[None]] * 3)),
            )
            case.others["PyTorch conv2d"] = lambda t_kernel=t_kernel, t_image=t_image: (
                torch.nn.functional.conv2d(t_image, t_kernel, padding="same", groups=3)
            )
        cases.append(case)
    return cases


def dense_cases(specs, stride=1, dilation=1) -> list[Case]:
    rng = np.random.default_rng(1)
    cases = []
    for c_in, c_out, size in specs:
        image = rng.random((c_in, size, size), dtype=np.float32)
        weight = rng.random((c_out, c_in, 3, 3), dtype=np.float32)
        label = (
            f"dense {c_in}->{c_out} {size}^2 3x3"
            + (f" s{stride}" if stride > 1 else "")
            + (f" d{dilation}" if dilation > 1 else "")
        )
        out_side = (size - 1) // stride + 1
        case = Case(
            label,
            lambda image=image, weight=weight: engine.conv2d(
                image,
                weight,
                stride=(stride, stride),
                dilation=(dilation, dilation),
                padding=(dilation,) * 4,
            ),
            flops=2 * weight.size * out_side**2,
        )
        if torch:
            t_image, t_weight = torch.from_numpy(image)[None], torch.from_numpy(weight)
            case.others["PyTorch conv2d"] = lambda t_image=t_image, t_weight=t_weight: (
                torch.nn.functional.conv2d(
                    t_image, t_weight, stride=stride, padding=dilation, dilation=dilation
                )
            )
        cases.append(case)
    return cases


def pool_cases(size: int) -> list[Case]:
    image = np.random.default_rng(2).random((3, size, size), dtype=np.float32)
    cases = [
        Case(f"max pool 2x2 {size}^2x3", lambda: engine.max_pool2d(image, (2, 2))),
        Case(f"avg pool 2x2 {size}^2x3", lambda: engine.avg_pool2d(image, (2, 2))),
    ]
    if torch:
        t_image = torch.from_numpy(image)[None]
        cases[0].others["PyTorch max_pool2d"] = lambda: torch.nn.functional.max_pool2d(t_image, 2)
        cases[1].others["PyTorch avg_pool2d"] = lambda: torch.nn.functional.avg_pool2d(t_image, 2)
    return cases


def transposed_cases(size: int) -> list[Case]:
    rng = np.random.default_rng(3)
    image = rng.random((16, size, size), dtype=np.float32)
    weight = rng.random((16, 16, 4, 4), dtype=np.float32)
    case = Case(
        f"transposed 16->16 {size}^2 4x4 s2 (2x up)",
        lambda: engine.conv_transpose2d(image, weight, stride=(2, 2), padding=(1, 1)),
        flops=2 * weight.size * size**2,  # every input pixel meets every tap once
    )
    if torch:
        t_image, t_weight = torch.from_numpy(image)[None], torch.from_numpy(weight)
        case.others["PyTorch conv_transpose2d"] = lambda: torch.nn.functional.conv_transpose2d(
            t_image, t_weight, stride=2, padding=1
        )
    return [case]


def imagemagick():
    """ImageMagick 7's ``magick``, or a ``convert`` that really is ImageMagick 6."""
    for candidate in [shutil.which("magick"), shutil.which("convert"), "/usr/bin/convert"]:
        if candidate and os.path.exists(candidate):
            probe = subprocess.run([candidate, "-version"], capture_output=True, text=True)
            if "ImageMagick" in probe.stdout:
                return candidate
    return None


def run_process(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process.

    RSS comes from GNU time when it is there (a forked child's own ``ru_maxrss`` starts at the
    parent's size, which here holds gigabytes of benchmark arrays), else it is not reported.
    """
    timer = ["/usr/bin/time", "-f", "%M"] if os.path.exists("/usr/bin/time") else []
    start = time.perf_counter()
    proc = subprocess.run(
        timer + command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {proc.stderr.strip()}")
    rss = float(proc.stderr.strip().splitlines()[-1]) / 1024 if timer else 0.0
    return elapsed, rss


def process_figures(commands: dict, repeats: int) -> dict:
    """Each command run once to warm (JIT cache, page cache), then in interleaved rounds: its
    median wall seconds and largest peak RSS (MB), by label."""
    for command in commands.values():
        run_process(command)
    return {
        label: (statistics.median(r[0] for r in runs), max(r[1] for r in runs))
        for label, runs in interleaved_rounds(commands, repeats, run_process).items()
    }


def process_rows(sizes, repeats: int) -> list[tuple]:
    """Whole-process `convcli conv` (warm JIT cache) against vips and ImageMagick, with peak RSS."""
    from PIL import Image

    rows = []
    convcli = CONVCLI
    vips = shutil.which("vips")
    magick = imagemagick()
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            src = os.path.join(tmp, f"in{size}.png")
            pixels = (np.random.default_rng(size).random((size, size, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(src)
            out = os.path.join(tmp, "out.png")
            commands = {
                "convcli conv": convcli + ["conv", src, "-k", "box", "-o", out, "--overwrite"]
            }
            if vips:
                mat = os.path.join(tmp, "box.mat")
                with open(mat, "w") as handle:
                    handle.write("3 3 9 0\n1 1 1\n1 1 1\n1 1 1\n")
                commands["vips conv"] = [vips, "conv", src, out, mat, "--precision", "integer"]
            if magick:
                commands["ImageMagick"] = [
                    magick,
                    src,
                    "-morphology",
                    "Convolve",
                    "3x3:1,1,1,1,1,1,1,1,1",
                    out,
                ]
            run_process(commands["convcli conv"][:3] + ["--help"])
            results = process_figures(commands, repeats)
            base = results["convcli conv"][0]
            for label, (seconds, rss) in results.items():
                rows.append(
                    (f"process {size}^2 RGB PNG -> PNG, 3x3", label, seconds, seconds / base, rss)
                )
    return rows


#: The OpenCV script a ``.npy`` process is held against (issue 20): ``filter2D`` per channel,
#: zero border, then ``np.save``.
OPENCV_NPY_SCRIPT = """
import sys
import cv2
import numpy as np
x = np.load(sys.argv[1]); k = np.load(sys.argv[2])
y = np.stack([cv2.filter2D(x[..., c], -1, k, borderType=cv2.BORDER_CONSTANT)
              for c in range(x.shape[2])], -1)
np.save(sys.argv[3], y)
"""


def npy_process_rows(size: int, repeats: int) -> list[tuple]:
    """Whole-process ``convcli conv`` of a ``size``^2x3 float32 ``.npy`` with a 15x15 random
    kernel, to ``.npy``, against the same work in a Python script with OpenCV (issue 20: at
    most its time), with peak RSS."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        x, k, out = (os.path.join(tmp, name) for name in ("x.npy", "k.npy", "y.npy"))
        rng = np.random.default_rng(size)
        np.save(x, rng.random((size, size, 3), dtype=np.float32))
        np.save(k, rng.uniform(-1, 1, (15, 15)).astype(np.float32))
        convcli = [*CONVCLI, "conv", x, "-k", k, "-o", out]
        commands = {"convcli conv": convcli + ["--overwrite"]}
        if cv2 is not None:
            opencv = [sys.executable, "-c", OPENCV_NPY_SCRIPT, x, k, out]
            commands["OpenCV filter2D script"] = opencv
        results = process_figures(commands, repeats)
        base = results["convcli conv"][0]
        for label, (seconds, rss) in results.items():
            case = f"process {size}^2x3 float32 .npy -> .npy, 15x15 random"
            rows.append((case, label, seconds, seconds / base, rss))
    return rows


def write_test_images(folder: str, size: int) -> dict:
    """The inputs of ``command_rows``: a ``size``^2 8-bit RGB PNG (``rgb``), a 16-bit one
    (``rgb16``, encoded by convcli: Pillow writes no 16-bit colour), and the 2x2 max pooling of
    ``rgb`` (``pooled``) with its ``indices``; and 3x3 and 7x7 box kernels as vips matrices."""
    rng = np.random.default_rng(size)
    paths = {name: os.path.join(folder, name) for name in ("rgb.png", "rgb16.png", "pooled.png")}
    with open(paths["rgb.png"], "wb") as handle:
        png.write_png(handle, (rng.random((size, size, 3)) * 255).astype(np.uint8))
    with open(paths["rgb16.png"], "wb") as handle:
        png.write_png(handle, (rng.random((size, size, 3)) * 65535).astype(np.uint16))
    paths["indices"] = os.path.join(folder, "indices.npy")
    pool = ["pool", paths["rgb.png"], "--indices", paths["indices"], "-o", paths["pooled.png"]]
    run_process([*CONVCLI, *pool])
    for k in (3, 7):
        paths[f"box{k}"] = os.path.join(folder, f"box{k}.mat")
        with open(paths[f"box{k}"], "w") as handle:
            handle.write(f"{k} {k} {k * k} 0\n" + f"{' '.join(['1'] * k)}\n" * k)
    return paths


def command_jobs(paths: dict, out: str) -> dict:
    """Each command on its job, and the nearest job ``vips`` does in one command."""
    rgb, edges = paths["rgb.png"], os.path.join(os.path.dirname(__file__), "..", "examples")
    return {
        "conv -k box (3x3)": (
            ["conv", rgb, "-k", "box"],
            ["conv", rgb, out, paths["box3"], "--precision", "integer"],
        ),
        "conv -k box:size=7": (
            ["conv", rgb, "-k", "box:size=7"],
            ["conv", rgb, out, paths["box7"], "--precision", "integer"],
        ),
        "conv --transpose -k box:size=2 --stride 2 (vips zoom 2)": (
            ["conv", "--transpose", rgb, "-k", "box:size=2", "--stride", "2"],
            ["zoom", rgb, out, "2", "2"],
        ),
        "pool --mode max (vips rank 2x2 max, every pixel)": (
            ["pool", rgb, "--mode", "max"],
            ["rank", rgb, out, "2", "2", "3"],
        ),
        "pool --mode avg (vips shrink 2)": (
            ["pool", rgb, "--mode", "avg"],
            ["shrink", rgb, out, "2", "2"],
        ),
        "unpool (vips zoom 2)": (
            ["unpool", paths["pooled.png"], "--indices", paths["indices"]],
            ["zoom", paths["pooled.png"], out, "2", "2"],
        ),
        "run examples/edges.yaml (vips sobel)": (
            ["run", os.path.join(edges, "edges.yaml"), rgb],
            ["sobel", rgb, out],
        ),
        "conv -k box on a 16-bit RGB PNG": (
            ["conv", paths["rgb16.png"], "-k", "box"],
            ["conv", paths["rgb16.png"], out, paths["box3"], "--precision", "integer"],
        ),
    }


def command_rows(size: int, repeats: int) -> list[tuple]:
    """Every command as a whole process on a ``size``^2 RGB PNG (warm JIT and page caches),
    each beside the nearest ``vips`` command, the two alternating: convcli's time as a
    multiple of vips's in the tool column, with peak RSS."""
    rows = []
    vips = shutil.which("vips")
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_test_images(tmp, size)
        out = os.path.join(tmp, "out.png")
        for job, (ours, theirs) in command_jobs(paths, out).items():
            commands = {"convcli": [*CONVCLI, *ours, "-o", out, "--overwrite"]}
            if vips:
                commands["vips"] = [vips, *theirs]
            results = process_figures(commands, repeats)
            base = results["convcli"][0]
            for label, (seconds, rss) in results.items():
                if label == "convcli" and vips:
                    label += f" ({base / results['vips'][0]:.1f}x vips)"
                rows.append(
                    (f"command {size}^2 RGB PNG: {job}", label, seconds, seconds / base, rss)
                )
    return rows


def loop_rows(count: int, size: int, repeats: int) -> list[tuple]:
    """``count`` 512^2-like RGB PNGs, 3x3 box: a shell loop of ``convcli conv`` calls and one
    ``convcli conv DIR --out-dir`` call, each against a shell loop of ``vips conv`` calls."""
    vips = shutil.which("vips")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        images, out = os.path.join(tmp, "in"), os.path.join(tmp, "out")
        os.mkdir(images)
        os.mkdir(out)
        rng = np.random.default_rng(5)
        for index in range(count):
            pixels = (rng.random((size, size, 3)) * 255).astype(np.uint8)
            with open(os.path.join(images, f"{index:03d}.png"), "wb") as handle:
                png.write_png(handle, pixels)
        mat = os.path.join(tmp, "box.mat")
        with open(mat, "w") as handle:
            handle.write("3 3 9 0\n1 1 1\n1 1 1\n1 1 1\n")
        each = f"for f in {images}/*.png; do {{}}; done"
        convcli = f'{shlex.join(CONVCLI)} conv "$f" -k box -o {out}/"${{f##*/}}" --overwrite'
        commands = {"convcli conv, a shell loop": ["sh", "-c", each.format(convcli)]}
        commands["convcli conv DIR --out-dir, one call"] = [
            *CONVCLI,
            "conv",
            images,
            "-k",
            "box",
            "--out-dir",
            out,
            "--overwrite",
            "-q",
        ]
        if vips:
            vips_conv = f'{vips} conv "$f" {out}/"${{f##*/}}" {mat} --precision integer'
            commands["vips conv, a shell loop"] = ["sh", "-c", each.format(vips_conv)]
        for command in commands.values():
            run_process(command)  # warm: JIT cache, page cache
        measured = interleaved_rounds(commands, repeats, lambda command: run_process(command)[0])
    base = statistics.median(measured["convcli conv, a shell loop"])
    vips_loop = statistics.median(measured["vips conv, a shell loop"]) if vips else None
    for label, values in measured.items():
        seconds = statistics.median(values)
        if vips and not label.startswith("vips"):
            label += f" ({seconds / vips_loop:.2f}x the vips loop)"
        rows.append((f"{count} {size}^2 RGB PNGs, 3x3", label, seconds, seconds / base, None))
    return rows


def startup_rows(repeats: int) -> list[tuple]:
    rows = []
    for args in (
        ["--help"],
        ["kernels", "list"],
        ["explain", "--input", "224x224x3", "conv 64 k7 s2 p3"],
    ):
        command = CONVCLI + args
        run_process(command)  # warm: page cache, kernel catalogue
        seconds = statistics.median(run_process(command)[0] for _ in range(3 * repeats))
        rows.append(("start-up", "convcli " + " ".join(args[:2]), seconds, 1.0, None))
    return rows


class DaskCluster:
    """A ``dask scheduler`` and ``workers`` ``dask worker`` processes on 127.0.0.1, one
    thread each, sharing the cores for Numba; stopped by ``close``."""

    def __init__(self, workers: int):
        import socket

        from distributed import Client

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.address = f"tcp://127.0.0.1:{port}"
        env = {**os.environ, "NUMBA_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers))}
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
        self.processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "distributed.cli.dask_scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--no-dashboard",
                ],
                **quiet,
            )
        ]
        self.processes += [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "distributed.cli.dask_worker",
                    self.address,
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--host",
                    "127.0.0.1",
                ],
                **quiet,
            )
            for _ in range(workers)
        ]
        with Client(self.address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=60)

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=60)


def scheduler_tasks_per_second(address: str, tasks: int) -> float:
    """Empty tasks per second through the scheduler at ``address``, submitted and gathered
    from this client: the rate no chunking can beat."""
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        start = time.perf_counter()
        client.gather(client.map(int, range(tasks), pure=False))
        return tasks / (time.perf_counter() - start)


def dask_rows(count: int, size: int, repeats: int) -> list[tuple]:
    """Files per second of one batch (``count`` RGB PNGs of ``size``^2, 3x3 box) with
    ``--executor local`` (one worker process per core), and with ``--executor dask`` on a
    cluster of 1 and of 2 workers; and the scheduler's rate of empty tasks."""
    from PIL import Image

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        images = os.path.join(tmp, "in")
        os.mkdir(images)
        rng = np.random.default_rng(4)
        for index in range(count):
            pixels = (rng.random((size, size, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(os.path.join(images, f"{index:05d}.png"))
        batch = [
            *CONVCLI,
            "conv",
            images,
            "-k",
            "box",
            "--out-dir",
            os.path.join(tmp, "out"),
            "--overwrite",
            "-q",
        ]
        commands = {
            "convcli --executor local": batch,
            "convcli --executor local -j 1": batch + ["-j", "1"],
        }
        clusters = {}
        try:
            for workers in (1, 2):
                clusters[workers] = DaskCluster(workers)
                commands[f"convcli --executor dask, {workers} worker{'s' * (workers > 1)}"] = (
                    batch + ["--executor", "dask", "--scheduler", clusters[workers].address]
                )
            for command in commands.values():
                run_process(command)  # warm: JIT cache, page cache, the workers' kernels
            measured = interleaved_rounds(
                commands, repeats, lambda command: run_process(command)[0]
            )
            rate = scheduler_tasks_per_second(clusters[2].address, 50 * count)
        finally:
            for cluster in clusters.values():
                cluster.close()
    base = statistics.median(measured["convcli --executor local"])
    case = f"batch of {count} {size}^2 RGB PNG, 3x3"
    for label, values in measured.items():
        seconds = statistics.median(values)
        rows.append(
            (case, f"{label}: {count / seconds:.0f} files/s", seconds, seconds / base, None)
        )
    rows.append(
        (f"dask scheduler, {50 * count} empty tasks", f"{rate:.0f} tasks/s", 1 / rate, 1.0, None)
    )
    return rows


def free_size_copy(path: str, folder: str) -> str:
    """A copy of an ONNX model whose input and output sizes are free (for onnxruntime)."""
    import onnx

    model = onnx.load(path)
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        for index, name in ((2, "H"), (3, "W")):
            dims[index].Clear()
            dims[index].dim_param = name
    del model.graph.value_info[:]
    copy = os.path.join(folder, "free_" + os.path.basename(path))
    onnx.save(model, copy)
    return copy


def model_rows(size: int, repeats: int) -> list[tuple]:
    """The forward pass of the test zoo's one-input models (tests/model_zoo.py) on a
    ``size``^2 RGB input: convcli's pipeline of the ONNX graph (``run --model`` without the
    files) against onnxruntime on one thread and on all cores."""
    import onnxruntime

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "tests"))
    import model_zoo

    from convcli.models.onnx_graph import read_graph
    from convcli.pipeline import Maps, parse_pipeline

    rows = []
    x = np.random.default_rng(5).random((3, size, size), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        saved = model_zoo.write_torch_models(pathlib.Path(tmp))
        for name in ("vgg", "resnet", "mobilenet"):
            path = str(saved[name].files["onnx"])
            pipeline = parse_pipeline(read_graph(path).document()[0], path)
            subjects = {"convcli": lambda p=pipeline: p.run(Maps(x, None))}
            for threads in (1, os.cpu_count()):
                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = threads
                session = onnxruntime.InferenceSession(
                    free_size_copy(path, tmp), options, providers=["CPUExecutionProvider"]
                )
                feed = {session.get_inputs()[0].name: x[None]}
                subjects[f"onnxruntime, {threads} thread{'s' * (threads > 1)}"] = (
                    lambda s=session, f=feed: s.run(None, f)
                )
            medians = interleaved_medians(subjects, repeats)
            case = f"model zoo {name}, forward pass {size}^2x3"
            for label, seconds in medians.items():
                rows.append((case, label, seconds, seconds / medians["convcli"], None))
    return rows


def nominal_peak_gflops() -> float:
    """This machine's nominal float32 GFLOP/s for the SIMD width the engine's kernels are built
    for: cores x 2 FMA units x ``_jit.LANES`` x 2 flops x the clock of ``/proc/cpuinfo`` (0
    where there is none)."""
    try:
        with open("/proc/cpuinfo") as handle:
            mhz = next(float(line.split(":")[1]) for line in handle if line.startswith("cpu MHz"))
    except (OSError, StopIteration):
        return 0.0
    return (os.cpu_count() or 1) * 2 * _jit.LANES * 2 * mhz / 1e3


def measured_peak_gflops() -> float:
    """The float32 GFLOP/s the cores reach on fused multiply-adds alone, ``_jit.LANES`` wide:
    twelve independent chains in registers (two FMA units, four cycles each) per core, on
    every core. This is the peak at the clock the cores run at under load, which the clock of
    ``/proc/cpuinfo`` can understate (here 2.6 GHz stated, 3.4 GHz measured)."""
    import numba

    from convcli.engine._jit import _vfma, _vsplat, _vstore

    @numba.njit(inline="always")
    def four(x, y, acc):
        return _vfma(x, y, acc[0]), _vfma(x, y, acc[1]), _vfma(x, y, acc[2]), _vfma(x, y, acc[3])

    @numba.njit
    def chains(steps, seed):
        near_one = np.float32(0.999)
        x, y = _vsplat(seed), _vsplat(near_one)
        a = (x, _vsplat(seed * near_one), _vsplat(seed + near_one), _vsplat(seed - near_one))
        b = four(x, y, a)  # twelve chains, no two alike
        c = four(x, y, b)
        for _ in range(steps):
            a, b, c = four(x, y, a), four(x, y, b), four(x, y, c)
        total = np.empty(_jit.LANES, np.float32)  # every chain feeds the result: none is dropped
        s = _vfma(a[0], a[1], _vfma(a[2], a[3], _vfma(b[0], b[1], _vfma(b[2], b[3], a[0]))))
        s = _vfma(c[0], c[1], _vfma(c[2], c[3], s))
        _vstore(total, 0, s)
        return total[0]

    @numba.njit(parallel=True)
    def on_every_core(steps, cores):
        out = np.zeros(cores, np.float32)
        for core in numba.prange(cores):
            out[core] = chains(steps, np.float32(core + 1))
        return out

    cores, steps = numba.get_num_threads(), 20_000_000
    on_every_core(10, cores)
    best = min(seconds_of(lambda: on_every_core(steps, cores)) for _ in range(5))
    return cores * steps * 12 * _jit.LANES * 2 / best / 1e9


#: The variables that make this machine compile and compute as an AVX2+FMA one without
#: AVX-512 (``--cpu avx2``): Numba for Haswell with Haswell's own features (``NUMBA_CPU_NAME``
#: alone keeps the host's, AVX-512 included), PyTorch's ATen kernels, its oneDNN
#: convolutions (which ``ATEN_CPU_CAPABILITY`` alone leaves on AVX-512) and its MKL, and
#: OpenBLAS.
AVX2_MACHINE = {
    "NUMBA_CPU_NAME": "haswell",
    "NUMBA_CPU_FEATURES": "",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
}


def rerun_as_avx2_machine(argv: list[str] | None = None, capture: bool = False):
    """Run this command (or ``argv``) again in a child process with ``AVX2_MACHINE``'s
    variables, Numba's kernels for that CPU cached in a folder of their own; the child's exit
    status, or with ``capture`` its finished process (output as text)."""
    from convcli.runtime import cache_dir

    cache = os.path.join(cache_dir(), "avx2")
    env = {
        **os.environ,
        **AVX2_MACHINE,
        "CONVCLI_CACHE_DIR": cache,
        "NUMBA_CACHE_DIR": os.path.join(cache, "numba"),
    }
    command = [sys.executable, *(sys.argv if argv is None else argv)]
    proc = subprocess.run(command, env=env, check=False, capture_output=capture, text=True)
    return proc if capture else proc.returncode


def machine_facts(peak: float) -> list[str]:
    """What a reader needs to compare figures: the CPU and its SIMD width, the peak, the load,
    the versions of convcli's dependencies and of the tools it is held against."""
    from importlib import metadata

    try:
        with open("/proc/cpuinfo") as handle:
            info = handle.read()
        model = next(
            line.split(":", 1)[1].strip() for line in info.splitlines() if "model name" in line
        )
        flags = next(line for line in info.splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        model, flags = "an unknown CPU", []
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    versions = []
    for package in (
        "convcli",
        "numpy",
        "numba",
        "scipy",
        "pillow",
        "torch",
        "opencv-python-headless",
        "onnxruntime",
    ):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    for tool, flag in (("vips", "--version"), (imagemagick(), "-version")):
        if tool and shutil.which(tool):
            first = subprocess.run([tool, flag], capture_output=True, text=True).stdout
            versions.append(first.splitlines()[0] if first else tool)
    return [
        f"- CPU: {model}, {os.cpu_count()} cores, {simd} (Numba's kernels {_jit.LANES} floats "
        f"wide); peak {nominal_peak_gflops():.0f} GFLOP/s nominal (cores x 2 FMA units x "
        f"lanes x 2 x the clock of /proc/cpuinfo), {peak:.0f} GFLOP/s measured (chains of "
        "multiply-adds in registers on every core, `measured_peak_gflops`): shares of peak "
        "are of the measured one",
        f"- load average at the start: {os.getloadavg()[0]:.2f}",
        f"- {'; '.join(versions)}",
    ]


def dense_parity_cases() -> list[Case]:
    """The dense layers of the ``engine`` section that issue 20 holds against PyTorch (the
    ``dense`` section: ``--only dense``)."""
    return (
        dense_cases([(64, 64, 256)])
        + dense_cases([(16, 16, 512)], stride=2)
        + transposed_cases(256)
    )


def engine_cases(quick: bool) -> list[Case]:
    """The in-process cases: small sizes with ``quick``."""
    if quick:
        return (
            depthwise_cases(256, (3, 7))
            + depthwise_cases(256, (15,), separable=True)
            + dense_cases([(3, 8, 64)])
            + pool_cases(256)
            + transposed_cases(16)
        )
    return (
        depthwise_cases(4096, (3, 7))
        + depthwise_cases(4096, (15, 31), separable=True)
        + depthwise_cases(4096, (15, 31))
        + dense_cases([(3, 16, 1024), (16, 16, 512), (64, 64, 256)])
        + dense_cases([(16, 16, 512)], stride=2)
        + dense_cases([(16, 16, 512)], dilation=2)
        + pool_cases(4096)
        + transposed_cases(256)
    )


#: The calls the in-process cases declare (``engine.repeated``).
REPEATED_CALLS = 1000
#: The sections of a run, in order (``--only``).
SECTIONS = ("engine", "dense", "commands", "loops", "processes", "start-up", "dask", "models")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument(
        "--only",
        choices=SECTIONS,
        action="append",
        help="run these sections only (repeatable); the table is printed, not written",
    )
    parser.add_argument(
        "--cpu",
        choices=("host", "avx2"),
        default="host",
        help="avx2: run as an AVX2+FMA machine without AVX-512, in a child process with "
        "AVX2_MACHINE's variables (the table is printed, not written)",
    )
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results.md"))
    args = parser.parse_args()
    if args.cpu == "avx2" and any(os.environ.get(k) != v for k, v in AVX2_MACHINE.items()):
        sys.exit(rerun_as_avx2_machine())
    sections = args.only or SECTIONS
    _jit.warm_up()
    # Byte-compile convcli as `pip install` does: an editable checkout run with
    # PYTHONDONTWRITEBYTECODE would otherwise recompile changed modules in every timed process.
    compileall.compile_dir(os.path.dirname(os.path.dirname(engine.__file__)), quiet=1)
    if args.quick:
        repeats, process_sizes, command_size, dask_batch = 1, [64], 64, (16, 64)
        loop_batch, model_size, npy_size = (3, 64), 32, 64
    else:
        repeats, process_sizes, command_size, dask_batch = 5, [512, 4096], 512, (400, 256)
        loop_batch, model_size, npy_size = (40, 512), 224, 4096
    peak = measured_peak_gflops()
    rows, facts = [], machine_facts(peak)
    print(f"Numba's kernels {_jit.LANES} floats wide; peak {peak:.0f} GFLOP/s", flush=True)
    if "engine" in sections or "dense" in sections:
        chosen = engine_cases(args.quick) if "engine" in sections else dense_parity_cases()
        for case in chosen:
            # a warm engine called again and again, as a library user's loop declares it: the
            # method is then chosen for repeated work (Numba's kernels), not for one call
            with engine.repeated(REPEATED_CALLS):
                medians = interleaved_medians({"convcli": case.convcli, **case.others}, repeats)
            base = medians["convcli"]
            for label, seconds in medians.items():
                if case.flops:
                    gflops = case.flops / seconds / 1e9
                    label += f": {gflops:.0f} GFLOP/s" + (
                        f" ({gflops / peak:.0%} of {peak:.0f})" if peak else ""
                    )
                rows.append((case.name, label, seconds, seconds / base, None))
            print(f"{case.name}: convcli {base * 1e3:.1f} ms", flush=True)
    if "commands" in sections:
        rows += command_rows(command_size, repeats)
    if "loops" in sections:
        rows += loop_rows(*loop_batch, repeats)
    if "processes" in sections:
        rows += process_rows(process_sizes, repeats)
        rows += npy_process_rows(npy_size, repeats)
    if "start-up" in sections:
        rows += startup_rows(repeats)
    if "dask" in sections and _optional("distributed"):
        rows += dask_rows(*dask_batch, repeats)
    if "models" in sections and all(map(_optional, ("onnxruntime", "torch", "onnx"))):
        rows += model_rows(model_size, repeats)
    lines = ["| case | tool | median | time / convcli's | peak RSS |", "|---|---|---|---|---|"]
    for name, tool, seconds, ratio, rss in rows:
        rss_text = f"{rss:.0f} MB" if rss else ""
        lines.append(f"| {name} | {tool} | {seconds * 1e3:.1f} ms | {ratio:.2f} | {rss_text} |")
    table = "\n".join(lines)
    print(table)
    if not args.quick and not args.only and args.cpu == "host":
        child = rerun_as_avx2_machine([__file__, "--only", "dense", "--cpu", "avx2"], True)
        avx2 = "\n".join(line for line in child.stdout.splitlines() if line.startswith("|"))
        text = [
            f"# Benchmarks: `python bench/run.py`, {time.strftime('%Y-%m-%d')}",
            "",
            "Written whole by `python bench/run.py` (after `bash bench/setup.sh`); every ratio",
            "is against convcli in the same interleaved rounds (medians of 5). GFLOP/s count",
            "the direct sum's multiply-adds (2 x kh x kw x C_in/groups per output) for every",
            "tool; convcli's Winograd method (dense 3x3 layers of 32+ channels) does 2.25x fewer,",
            "so its share of peak can pass 100%.",
            "",
            *facts,
            f"- load average at the end: {os.getloadavg()[0]:.2f}",
            "",
            "## This machine",
            "",
            table,
            "",
            "## Dense layers as an AVX2+FMA machine without AVX-512 (emulated on this one)",
            "",
            "`python bench/run.py --only dense --cpu avx2`, run by the full run: Numba's kernels",
            "built for Haswell (8 lanes), PyTorch's ATen, oneDNN and MKL at AVX2, OpenBLAS",
            "Haswell; the share of peak is of the 8-lane peak measured in that child.",
            "",
            avx2 or f"(the child failed: {child.stderr.strip()[-300:]})",
        ]
        with open(args.output, "w") as handle:
            handle.write("\n".join(text) + "\n")


if __name__ == "__main__":
    main()
