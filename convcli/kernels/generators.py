"""Pure functions that build kernels from parameters: numpy only, float64, as correlated.

The YAML files in ``kernels/`` name a function here with ``generator:`` and declare its
parameters (type, default, range); the functions themselves take every argument explicitly,
so the defaults live in one place, the YAML file. ``size=None`` means the default size rule.

>>> gaussian_1d(sigma=1.0, size=3).round(4).tolist()
[0.2741, 0.4519, 0.2741]
>>> gaussian(sigma=1.0, size=None).shape          # default size 2*int(3*sigma + 0.5) + 1
(7, 7)
>>> motion_blur(length=3, angle=0).tolist()
[[0.3333333333333333, 0.3333333333333333, 0.3333333333333333]]
"""

from __future__ import annotations

import math

import numpy as np

# Gaussian radius int(TRUNCATE * sigma + 0.5): scipy.ndimage.gaussian_filter's rule with
# truncate=3.0 (its default is 4.0), so a default-size gaussian equals
# gaussian_filter(x, sigma, truncate=3.0, mode="constant") on a zero-padded image.
TRUNCATE = 3.0


def gaussian_size(sigma: float) -> int:
    """The default (odd) size for a Gaussian of standard deviation ``sigma``.

    >>> [gaussian_size(s) for s in (0.5, 1.0, 1.4, 2.0)]
    [5, 7, 9, 13]
    """
    return 2 * int(TRUNCATE * sigma + 0.5) + 1


def _size(sigma: float, size: int | None) -> int:
    return gaussian_size(sigma) if size is None else size


def centred_grid(size: int) -> np.ndarray:
    """Offsets of the cells of an axis of ``size`` from its centre.

    >>> centred_grid(4).tolist()
    [-1.5, -0.5, 0.5, 1.5]
    """
    return np.arange(size) - (size - 1) / 2


def box(size: int) -> np.ndarray:
    """The mean of a ``size`` x ``size`` window (OpenCV ``blur``, scipy ``uniform_filter``).

    >>> box(2).tolist()
    [[0.25, 0.25], [0.25, 0.25]]
    """
    return np.full((size, size), 1.0 / (size * size))


def gaussian_1d(sigma: float, size: int) -> np.ndarray:
    """The sampled Gaussian ``exp(-x^2 / (2 sigma^2))`` at the cell centres, summing to 1.

    The formula of OpenCV ``getGaussianKernel(size, sigma)`` for ``sigma > 0``.
    """
    values = np.exp(-0.5 * (centred_grid(size) / sigma) ** 2)
    return values / values.sum()


def gaussian(sigma: float, size: int | None) -> np.ndarray:
    """A separable 2-D Gaussian: the outer product of two :func:`gaussian_1d`, summing to 1.

    >>> (gaussian(1.0, 3) * 1000).round().astype(int).tolist()
    [[75, 124, 75], [124, 204, 124], [75, 124, 75]]
    """
    line = gaussian_1d(sigma, _size(sigma, size))
    return np.outer(line, line)


def unsharp(sigma: float, amount: float, size: int | None) -> np.ndarray:
    """Unsharp mask ``x + amount * (x - gaussian * x)`` as one kernel; sums to 1.

    >>> unsharp(1.0, 1.0, 3).round(3)[1].tolist()
    [-0.124, 1.796, -0.124]
    """
    blur = gaussian(sigma, size)
    sharp = -amount * blur
    sharp[blur.shape[0] // 2, blur.shape[1] // 2] += 1.0 + amount
    return sharp


def log(sigma: float, size: int | None) -> np.ndarray:
    """Laplacian of Gaussian, as MATLAB's ``fspecial('log')``: sums to 0, negative centre.

    The Gaussian normalised to sum 1, times ``(r^2 - 2 sigma^2) / sigma^4``, minus its mean.

    >>> k = log(1.0, None)
    >>> k.shape, bool(k[3, 3] == k.min()), bool(abs(k.sum()) < 1e-12)
    ((7, 7), True, True)
    """
    offsets = centred_grid(_size(sigma, size))
    r2 = offsets[:, None] ** 2 + offsets[None, :] ** 2
    blur = np.exp(-r2 / (2 * sigma**2))
    laplacian = blur / blur.sum() * (r2 - 2 * sigma**2) / sigma**4
    return laplacian - laplacian.mean()


def dog(sigma1: float, sigma2: float, size: int | None) -> np.ndarray:
    """Difference of Gaussians ``G(sigma1) - G(sigma2)`` (ImageMagick ``DoG``); sums to 0.

    The default size is the Gaussian rule for the larger sigma.

    >>> k = dog(1.0, 1.6, None)
    >>> k.shape, bool(k[5, 5] > 0), bool(abs(k.sum()) < 1e-12)
    ((11, 11), True, True)
    """
    size = _size(max(sigma1, sigma2), size)
    return gaussian(sigma1, size) - gaussian(sigma2, size)


def motion_blur(length: int, angle: float) -> np.ndarray:
    """An anti-aliased line ``length`` cells long through the centre, summing to 1.

    ``angle`` is in degrees counter-clockwise from the row axis (0 horizontal, 90 vertical,
    45 from bottom-left to top-right). A cell's weight falls linearly from 1 on the segment to
    0 one cell away from it; rows and columns that end up empty are cropped, so the kernel is
    odd-sized and centred (``length=5, angle=0`` is a 1x5 box).

    >>> motion_blur(4, 0).tolist()                # an even length spreads over 5 cells
    [[0.125, 0.25, 0.25, 0.25, 0.125]]
    >>> motion_blur(3, 90).shape
    (3, 1)
    >>> bool(np.array_equal(motion_blur(9, -360), motion_blur(9, 0)))   # angles modulo 180
    True
    """
    angle = angle % 180.0  # a segment centred on the origin: angle and angle + 180 draw the same
    half = (length - 1) / 2
    offsets = centred_grid(2 * math.ceil(half) + 1)
    across, up = np.meshgrid(offsets, -offsets)  # columns to the right, rows upwards
    dx, dy = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    along = np.clip(across * dx + up * dy, -half, half)
    distance = np.hypot(across - along * dx, up - along * dy)
    weights = np.clip(1.0 - distance, 0.0, None)
    weights[weights < 1e-9] = 0.0  # cos(90 degrees) is 6e-17, not 0
    rows, cols = np.flatnonzero(weights.any(axis=1)), np.flatnonzero(weights.any(axis=0))
    weights = weights[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return weights / weights.sum()


GENERATORS = {f.__name__: f for f in (box, gaussian, unsharp, log, dog, motion_blur)}
