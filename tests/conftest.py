import os

import numpy as np
import pytest
from hypothesis import settings

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
