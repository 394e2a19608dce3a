"""All Numba kernels of convcli, and the one place their JIT options are set.

Kernels are small and private: they take checked, C-contiguous float32 arrays, ints and a
preallocated output, and never read globals. The public wrappers in ``engine`` validate, pad
and allocate (sizes from ``geometry``). Keep every ``@njit`` function in this file: Numba's
cache does not notice edits to other modules a kernel calls.

``call`` runs a kernel; the first use of a kernel in a process (cache load or compile) holds
an inter-process file lock, because concurrent first runs can corrupt Numba's cache index.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from convcli.runtime import numba_cache_dir

os.environ.setdefault("NUMBA_CACHE_DIR", numba_cache_dir())

import numba  # noqa: E402  (the cache directory must be set before numba is imported)

# No 'nnan'/'ninf': NaN must propagate through sums and win max-pooling as in PyTorch.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
_SERIAL = dict(cache=True, nogil=True, fastmath=_FASTMATH)
_PARALLEL = dict(_SERIAL, parallel=True)


@numba.njit(**_PARALLEL)
def _conv2d_valid(xp, weight, out, stride_h, stride_w, dil_h, dil_w, groups):
    """Cross-correlate padded ``xp`` (C_in, Hp, Wp) with ``weight`` (C_out, C_in/g, kh, kw)."""
    c_out, c_per_group, kh, kw = weight.shape
    _, h_out, w_out = out.shape
    out_per_group = c_out // groups
    for row in numba.prange(c_out * h_out):
        o = row // h_out
        i = row % h_out
        first_in = (o // out_per_group) * c_per_group
        acc = out[o, i]
        acc[:] = 0.0
        for c in range(c_per_group):
            for m in range(kh):
                src = xp[first_in + c, i * stride_h + m * dil_h]
                for n in range(kw):
                    w = weight[o, c, m, n]
                    offset = n * dil_w
                    for j in range(w_out):
                        acc[j] += w * src[j * stride_w + offset]


_lock_path = os.path.join(numba_cache_dir(), ".compile.lock")
_ready: set = set()


@contextlib.contextmanager
def _compile_lock():
    os.makedirs(os.path.dirname(_lock_path), exist_ok=True)
    fd = os.open(_lock_path, os.O_CREAT | os.O_RDWR, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def call(kernel, *args):
    """Call a kernel; its first use in this process loads or compiles it under the lock."""
    if kernel not in _ready:
        signature = tuple(numba.typeof(a) for a in args)
        if signature not in kernel.overloads:
            with _compile_lock():
                kernel.compile(signature)
        _ready.add(kernel)
    return kernel(*args)


def conv2d_valid(xp, weight, out, stride, dilation, groups):
    """Run ``_conv2d_valid``; ``stride`` and ``dilation`` are (rows, cols) pairs."""
    call(_conv2d_valid, xp, weight, out, stride[0], stride[1], dilation[0], dilation[1], groups)
