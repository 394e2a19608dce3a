"""How convcli's modules import each other, and what importing them does to the process."""

import ast
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import python_process

import convcli

PACKAGE = pathlib.Path(convcli.__file__).parent


def _module_names() -> dict[str, pathlib.Path]:
    """Every module of convcli by dotted name (a package by its own name)."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("convcli",) + path.relative_to(PACKAGE).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _imported(node: ast.AST, module: str, is_package: bool, known: dict) -> set[str]:
    """The convcli modules an ``import`` or ``from ... import`` statement loads."""
    if isinstance(node, ast.Import):
        wanted = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module.split(".")[: len(module.split(".")) - node.level + is_package]
            base = ".".join(package + ([base] if base else []))
        named = [f"{base}.{alias.name}" for alias in node.names]
        submodules = [name for name in named if name in known]
        wanted = submodules + ([] if len(submodules) == len(node.names) else [base])
    else:
        return set()
    found = set()
    for name in wanted:
        while name and name not in known:  # ``import convcli.x.y`` names a module or its parent
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """Which convcli modules each one imports, at module level and inside functions alike."""
    known = _module_names()
    return {
        name: set().union(
            *(
                _imported(node, name, path.name == "__init__.py", known)
                for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            )
        )
        for name, path in known.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle (its modules in order, the first repeated at the end), or [].

    >>> find_cycle({"a": {"b"}, "b": {"a"}}), find_cycle({"a": {"b"}, "b": set()})
    (['a', 'b', 'a'], [])
    """
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str]:
        if name in path:
            return path[path.index(name) :] + [name]
        if name in done:
            return []
        for imported in sorted(graph.get(name, ())):
            if cycle := visit(imported, path + [name]):
                return cycle
        done.add(name)
        return []

    for name in sorted(graph):
        if cycle := visit(name, []):
            return cycle
    return []


def test_no_module_imports_itself_through_others():
    """Neither at import time nor inside a function: a decision made in one module is passed
    down, not recomputed by a module that imports its caller."""
    graph = import_graph()
    assert "convcli.kernels.library" in graph["convcli.kernels.catalogue"]  # the graph sees calls
    assert find_cycle(graph) == []


IMPORT_EVERYTHING = textwrap.dedent("""
    import importlib, os, pkgutil, sys
    import convcli
    before = dict(os.environ)
    names = [m.name for m in pkgutil.walk_packages(convcli.__path__, "convcli.")
             if not m.name.endswith("__main__")]
    for name in names:
        importlib.import_module(name)
    assert "convcli.engine._jit" in sys.modules and "numba" in sys.modules
    changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
    print(len(names), changed)
""")


def test_importing_every_module_leaves_the_environment_alone():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "MALLOC_"))}
    proc = python_process(IMPORT_EVERYTHING, env=env)
    assert proc.returncode == 0, proc.stderr
    count, changed = proc.stdout.split(maxsplit=1)
    assert int(count) > 40 and changed.strip() == "[]"


MAPPED_BLOCKS = textwrap.dedent("""
    import ctypes, os
    import numpy as np
    class Info(ctypes.Structure):  # glibc's struct mallinfo2
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = Info
    blocks = [np.ones(1 << 18, np.float32) for _ in range(20)]  # 1 MiB each
    print(os.environ.get("NUMBA_CACHE_DIR"), mallinfo2().hblks)  # blocks malloc mapped apart
""")
CONFIGURED = textwrap.dedent("""
    import subprocess, sys
    from convcli import runtime
    runtime.configure_process()
    subprocess.run([sys.executable, "-c", sys.argv[1]])
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_configure_process_reaches_the_processes_it_starts(tmp_path):
    """A worker inherits Numba's cache folder and the allocator settings: its 1 MiB arrays are
    not mapped one by one (glibc's default maps each until the first is freed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "MALLOC_"))}
    env["CONVCLI_CACHE_DIR"] = str(tmp_path)
    assert _worker_of_a_configured_process(MAPPED_BLOCKS, env) == [str(tmp_path / "numba"), "0"]


def _worker_of_a_configured_process(script: str, env: dict) -> list[str]:
    """The words ``script`` prints, run by a process that ``runtime.configure_process`` set up."""
    proc = subprocess.run(
        [sys.executable, "-c", CONFIGURED, script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


BLAS_THREADS = textwrap.dedent("""
    import os, numpy
    print(os.environ["OPENBLAS_NUM_THREADS"], len(os.listdir("/proc/self/task")))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/task")
@pytest.mark.parametrize("given", [None, "2"])
def test_configure_process_gives_numpy_one_blas_thread_unless_told(given):
    """numpy's OpenBLAS starts no thread per core in convcli's processes and their workers
    (starting them doubled what importing numpy costs); an explicit setting is kept."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if given:
        env["OPENBLAS_NUM_THREADS"] = given
    setting, threads = _worker_of_a_configured_process(BLAS_THREADS, env)
    assert setting == (given or "1")
    if not given:
        assert threads == "1"


WITHOUT_FCNTL = textwrap.dedent("""
    import sys
    sys.modules["fcntl"] = None  # as on Windows: importing it fails
    import numpy as np
    from convcli import engine
    x = np.arange(2 * 12 * 12, dtype=np.float32).reshape(2, 12, 12)
    w = np.arange(18, dtype=np.float32).reshape(2, 1, 3, 3)
    np.save(sys.argv[1], engine.conv2d(x, w, padding="valid", groups=2, method="numba"))
""")


def test_the_engine_runs_where_fcntl_does_not_exist(tmp_path):
    """No inter-process compile lock there, but the kernels compile and run."""
    from naive import conv2d as naive_conv2d

    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_FCNTL, str(tmp_path / "y.npy")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    x = np.arange(2 * 12 * 12, dtype=np.float64).reshape(2, 12, 12)
    expected = naive_conv2d(x, np.arange(18.0).reshape(2, 1, 3, 3), groups=2)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5)
