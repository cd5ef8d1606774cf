import numpy as np
import pytest

import startrack as st


@pytest.fixture
def sensor():
    return st.Sensor(gain=0.2, offset=37.0, dark_var=25.0)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
