"""Benchmarks: convcli's engine and CLI side by side with OpenCV, SciPy, PyTorch, vips, ImageMagick.

Every figure is the median of several rounds, each round timing every tool once in turn, and
each competitor is reported as a ratio to convcli measured in the same rounds (the machines
are noisy; ratios within one run are not).
Competitors that are not installed are left out. Results go to stdout and to a markdown
file (default ``bench/results.md``) that docs/performance.md quotes.

    python bench/run.py                 # the full suite (several minutes on 2 cores)
    python bench/run.py --quick         # small sizes, one repeat: checks the suite still runs

With ``convcli[dask]`` installed, a batch is also timed with ``--executor dask`` on a cluster
of 1 and 2 workers started here (docs/scale-out.md quotes it).
"""

from __future__ import annotations

import argparse
import compileall
import os
import pathlib
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


def _optional(name):
    try:
        return __import__(name)
    except ImportError:
        return None


cv2, torch = _optional("cv2"), _optional("torch")
ndimage = _optional("scipy.ndimage") and sys.modules["scipy.ndimage"]


@dataclass
class Case:
    """One benchmark: convcli's callable and competitors' callables on the same data."""

    name: str
    convcli: Callable[[], object]
    others: dict = field(default_factory=dict)


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
    whichever tool it was timing (one repeat and no warm-up with ``repeats`` of 1)."""
    if repeats > 1:
        for fn in fns.values():
            warm(fn)
    return {
        name: statistics.median(values) for name, values in interleaved_rounds(fns, repeats).items()
    }


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
        case = Case(
            label,
            lambda image=image, weight=weight: engine.conv2d(
                image,
                weight,
                stride=(stride, stride),
                dilation=(dilation, dilation),
                padding=(dilation,) * 4,
            ),
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


def process_rows(sizes, repeats: int) -> list[tuple]:
    """Whole-process `convcli conv` (warm JIT cache) against vips and ImageMagick, with peak RSS."""
    from PIL import Image

    rows = []
    convcli = [sys.executable, "-m", "convcli"]
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
            for command in commands.values():
                run_process(command)  # warm: JIT cache, page cache
            results = {
                label: (statistics.median(r[0] for r in runs), max(r[1] for r in runs))
                for label, runs in interleaved_rounds(commands, repeats, run_process).items()
            }
            base = results["convcli conv"][0]
            for label, (seconds, rss) in results.items():
                rows.append(
                    (f"process {size}^2 RGB PNG -> PNG, 3x3", label, seconds, seconds / base, rss)
                )
    return rows


def startup_rows(repeats: int) -> list[tuple]:
    rows = []
    for args in (
        ["--help"],
        ["kernels", "list"],
        ["explain", "--input", "224x224x3", "conv 64 k7 s2 p3"],
    ):
        command = [sys.executable, "-m", "convcli"] + args
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
            sys.executable,
            "-m",
            "convcli",
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results.md"))
    args = parser.parse_args()
    _jit.warm_up()
    # Byte-compile convcli as `pip install` does: an editable checkout run with
    # PYTHONDONTWRITEBYTECODE would otherwise recompile changed modules in every timed process.
    compileall.compile_dir(os.path.dirname(engine.__file__), quiet=1)
    if args.quick:
        repeats, big, mid = 1, 256, 64
        cases = (
            depthwise_cases(big, (3, 7))
            + depthwise_cases(big, (15,), separable=True)
            + dense_cases([(3, 8, mid)])
            + pool_cases(big)
            + transposed_cases(16)
        )
        process_sizes = [64]
        dask_batch = (16, 64)
        model_size = 32
    else:
        repeats, big = 5, 4096
        cases = (
            depthwise_cases(big, (3, 7))
            + depthwise_cases(big, (15, 31), separable=True)
            + depthwise_cases(big, (15, 31))
            + dense_cases([(3, 16, 1024), (16, 16, 512), (64, 64, 256)])
            + dense_cases([(16, 16, 512)], stride=2)
            + dense_cases([(16, 16, 512)], dilation=2)
            + pool_cases(big)
            + transposed_cases(256)
        )
        process_sizes = [512, 4096]
        dask_batch = (400, 256)
        model_size = 224
    rows = []
    for case in cases:
        medians = interleaved_medians({"convcli": case.convcli, **case.others}, repeats)
        base = medians["convcli"]
        for label, seconds in medians.items():
            rows.append((case.name, label, seconds, seconds / base, None))
        print(f"{case.name}: convcli {base * 1e3:.1f} ms", flush=True)
    rows += process_rows(process_sizes, repeats) + startup_rows(repeats)
    if _optional("distributed"):
        rows += dask_rows(*dask_batch, repeats)
    if _optional("onnxruntime") and _optional("torch") and _optional("onnx"):
        rows += model_rows(model_size, repeats)
    lines = ["| case | tool | median | time / convcli's | peak RSS |", "|---|---|---|---|---|"]
    for name, tool, seconds, ratio, rss in rows:
        rss_text = f"{rss:.0f} MB" if rss else ""
        lines.append(f"| {name} | {tool} | {seconds * 1e3:.1f} ms | {ratio:.2f} | {rss_text} |")
    table = "\n".join(lines)
    print(table)
    if not args.quick:
        with open(args.output, "w") as handle:
            handle.write(
                f"Measured with `python bench/run.py` on {os.cpu_count()} cores.\n\n{table}\n"
            )


if __name__ == "__main__":
    main()
