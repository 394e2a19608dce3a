"""Per-channel statistics of maps: min, max, mean, standard deviation and percentiles.

Pure numpy, in float64, one channel at a time. The standard deviation is the population one
(``ddof=0``: numpy's default, PyTorch's ``std(unbiased=False)``); percentiles interpolate
linearly between the two nearest values (numpy's default ``method="linear"``, PyTorch's
``torch.quantile``). NaN and infinities propagate as numpy's reductions make them (a NaN
makes a channel's numbers NaN).
numpy is imported by ``channel_stats`` only: pipelines and ``--help`` read the defaults here.

>>> import numpy as np
>>> rows = channel_stats(np.array([[[1.0, 2.0], [3.0, 4.0]]]), (50,))
>>> row = rows[0]
>>> row["min"], row["max"], row["mean"], round(row["std"], 4), row["percentiles"]
(1.0, 4.0, 2.5, 1.118, [2.5])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from convcli.errors import ParameterError
from convcli.layers.values import parse_floats
from convcli.limits import check_arrays

#: Percentiles reported when none are asked for: the tails, the quartiles and the median.
DEFAULT_PERCENTILES = (1.0, 25.0, 50.0, 75.0, 99.0)
#: The columns of a statistics row, before its percentiles.
COLUMNS = ("min", "max", "mean", "std")
#: The most percentiles one request takes.
MAX_PERCENTILES = 100


def parse_percentiles(text: str) -> tuple[float, ...]:
    """``--percentiles 1,50,99``: numbers from 0 to 100.

    >>> parse_percentiles("1, 50,99.9")
    (1.0, 50.0, 99.9)
    """
    values = parse_floats(text, "percentiles")
    return check_percentiles(values)


def check_percentiles(values: Sequence[float]) -> tuple[float, ...]:
    """``values`` if each lies in [0, 100] and there are 1 to ``MAX_PERCENTILES`` of them."""
    values = tuple(float(v) for v in values)
    if not 1 <= len(values) <= MAX_PERCENTILES:
        raise ParameterError(f"percentiles: give 1 to {MAX_PERCENTILES} numbers, got {len(values)}")
    outside = next((v for v in values if not 0 <= v <= 100), None)
    if outside is not None:
        raise ParameterError(f"percentiles: {outside:g} is not between 0 and 100")
    return values


def percentile_name(value: float) -> str:
    """A column name: ``p1``, ``p99.9``.

    >>> percentile_name(1.0), percentile_name(99.9)
    ('p1', 'p99.9')
    """
    return f"p{value:g}"


def channel_stats(data: Any, percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> list[dict]:
    """One row per channel of ``data`` (C, H, W): ``min``, ``max``, ``mean``, ``std`` and the
    ``percentiles`` in their order, as Python floats computed in float64."""
    import numpy as np

    data = np.asarray(data)
    channels = len(data)
    size = math.prod(data.shape[1:])
    # a float64 copy of one channel, and the partition that percentiles sort into
    check_arrays(
        "stats",
        itemsize=8,
        held=data.nbytes,
        channel_copy=data.shape[1:],
        sorted_copy=data.shape[1:],
    )
    rows = []
    for channel in range(channels):
        values = np.asarray(data[channel], dtype=np.float64).reshape(-1)
        if size == 0:
            numbers = [math.nan] * (len(COLUMNS) + len(percentiles))
        else:
            with np.errstate(invalid="ignore", over="ignore"):  # inf and NaN propagate, as in numpy
                numbers = [values.min(), values.max(), values.mean(), values.std()]
                numbers += list(np.percentile(values, percentiles))
        numbers = [float(n) for n in numbers]
        rows.append({**dict(zip(COLUMNS, numbers)), "percentiles": numbers[len(COLUMNS) :]})
    return rows


def number_text(value: float) -> str:
    """A statistic as text: up to 7 significant digits (float32 holds about 7).

    >>> number_text(0.1 + 0.2), number_text(255.0), number_text(-1234567.89)
    ('0.3', '255', '-1234568')
    """
    return f"{value:.7g}"


def header(percentiles: Sequence[float], lead: Sequence[str] = ("input", "channel")) -> list[str]:
    """Column names: ``lead``, then ``COLUMNS`` and one per percentile.

    >>> header((1, 99))
    ['input', 'channel', 'min', 'max', 'mean', 'std', 'p1', 'p99']
    """
    return [*lead, *COLUMNS, *(percentile_name(p) for p in percentiles)]


def text_rows(lead: Sequence[str], rows: Sequence[dict]) -> list[list[str]]:
    """The rows of ``channel_stats`` as text, each after ``lead`` and its channel number."""
    return [
        [*lead, str(channel)]
        + [number_text(row[c]) for c in COLUMNS]
        + [number_text(v) for v in row["percentiles"]]
        for channel, row in enumerate(rows)
    ]
