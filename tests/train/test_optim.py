"""The learning-rate schedule: warmup, decay, and the short phases the round driver trains."""

import numpy as np
import pytest

from jaxevo.errors import ConfigError
from jaxevo.train.optim import make_schedule


def lrs(sched, n):
    return np.array([float(sched(i)) for i in range(n)])


def test_warmup_then_linear_decay():
    got = lrs(make_schedule(1.0, 6, schedule="linear", warmup_steps=2), 6)
    # Warmup steps 0, 1 run at 1/3 and 2/3 of lr; the decay starts at lr and falls by 1/4 per step.
    np.testing.assert_allclose(got, [1 / 3, 2 / 3, 1.0, 0.75, 0.5, 0.25], rtol=1e-6)


def test_cosine_reaches_min_lr_ratio():
    got = lrs(make_schedule(2.0, 11, schedule="cosine", min_lr_ratio=0.1), 11)
    assert got[0] == pytest.approx(2.0) and got[-1] == pytest.approx(0.2 + 1.8 * (1 + np.cos(np.pi * 10 / 11)) / 2, rel=1e-5)
    assert np.all(np.diff(got) < 0)


@pytest.mark.parametrize("total,warmup", [(1, 4), (2, 4), (3, 2)])
def test_short_phase_never_trains_at_zero_lr(total, warmup):
    # A 1-step phase with warmup 4 used to run its only step at lr 0 (SELF's meta round did).
    got = lrs(make_schedule(1e-5, total, schedule="constant", warmup_steps=warmup), total)
    assert np.all(got > 0) and got[-1] == pytest.approx(1e-5)


def test_unknown_schedule_is_a_config_error():
    with pytest.raises(ConfigError, match="cosine, linear or constant"):
        make_schedule(1.0, 4, schedule="step")
