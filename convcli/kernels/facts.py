"""What ``convcli kernels show`` says about weights: their sum, zero-sum, separability.

>>> facts = kernel_facts(np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]))
>>> facts["zero_sum"], facts["separable"], facts["factors"]
(True, True, ([1.0, 2.0, 1.0], [-1.0, 0.0, 1.0]))
"""

from __future__ import annotations

import numpy as np

# |sum| <= RELATIVE_EPS * sum(|w|) counts as zero-sum (weights are float32). ``scale: sum`` then
# keeps scale 1 instead of dividing by ~0: ImageMagick -convolve's rule (skip normalising
# when |sum| <= epsilon). The same tolerance decides rank 1 in ``kernel_facts``.
RELATIVE_EPS = 1e-6


def is_zero_sum(weights: np.ndarray) -> bool:
    """Whether the weights sum to zero, up to ``RELATIVE_EPS`` of their absolute sum.

    >>> is_zero_sum(np.array([[1.0, -1.0]])), is_zero_sum(np.array([[1.0, 1.0]]))
    (True, False)
    """
    weights = np.asarray(weights, dtype=np.float64)
    return bool(abs(weights.sum()) <= RELATIVE_EPS * np.abs(weights).sum())


def kernel_facts(weights: np.ndarray) -> dict:
    """Sum, zero-sum, and separability: every 2-D slice of rank 1 (by SVD).

    For a separable 2-D kernel ``factors`` is ``(column, row)`` with ``outer(column, row) ==
    weights``: whole numbers when some scaling gives them (Sobel), else a column summing to 1
    (Gaussian); the factor with the larger sum is made positive.

    >>> kernel_facts(np.full((2, 2), 0.25))["factors"]
    ([0.5, 0.5], [0.5, 0.5])
    """
    weights = np.asarray(weights, dtype=np.float64)
    slices = weights.reshape(-1, *weights.shape[-2:])
    singular = np.linalg.svd(slices, compute_uv=False)  # every slice at once: (slices, min(kh, kw))
    rank_one = singular.shape[1] < 2 or singular[:, 1] <= RELATIVE_EPS * singular[:, 0]
    separable = bool(np.all(rank_one))
    factors = _factors(weights) if separable and weights.ndim == 2 and weights.any() else None
    return {
        "sum": float(weights.sum()),
        "zero_sum": is_zero_sum(weights),
        "separable": separable,
        "factors": factors,
    }


def _factors(weights: np.ndarray) -> tuple[list, list]:
    u, s, vt = np.linalg.svd(weights)
    column, row = u[:, 0] * s[0], vt[0]
    if max(column.sum(), row.sum(), key=abs) < 0:
        column, row = -column, -row

    def smallest(v):
        return np.abs(v)[np.abs(v) > RELATIVE_EPS * np.abs(v).max()].min()

    for unit in (smallest(column), 1 / smallest(row), column.sum() or np.abs(column).max()):
        pair = column / unit, row * unit
        if all(np.allclose(v, np.round(v), atol=1e-5) for v in pair):
            break
    return tuple((np.round(v, 6) + 0.0).tolist() for v in pair)
