"""Gaussian linear and Gaussian linear uniform (sbibm ``gaussian_linear``, ``gaussian_linear_uniform``).

Both have theta in R^10 and the simulator

    x | theta ~ N(theta, 0.1 I_10)            (sbibm's "scale" 0.1 is a variance)

so log p(x | theta) = -1/2 |x - theta|^2 / 0.1 - 5 log(2 pi 0.1).

* ``gaussian_linear``: prior N(0, 0.1 I_10); the posterior is closed form,
  p(theta | x) = N(x / 2, 0.05 I)  (precision 10 I + 10 I = 20 I).
* ``gaussian_linear_uniform``: prior U(-1, 1)^10; the posterior is N(x, 0.1 I) truncated to
  the box.

Reference: sbibm/tasks/gaussian_linear/task.py, sbibm/tasks/gaussian_linear_uniform/task.py.
Shapes: theta (n, 10) -> x (n, 10).
"""
import math

import numpy as np

from ..priors import BoxUniform, Normal
from .base import Task

_DIM = 10
_SIM_VAR = 0.1  # simulator variance


def _gaussian_log_likelihood(theta, x):
    """sum_j log N(x_j; theta_j, 0.1), theta (n, 10), x (10,) or (n, 10) -> (n,)."""
    r = x - theta
    return -0.5 * np.sum(r * r, axis=1) / _SIM_VAR - 0.5 * _DIM * math.log(2.0 * math.pi * _SIM_VAR)


class _GaussianSimulatorTask(Task):
    dim_theta = _DIM
    dim_x = _DIM

    def _simulate(self, theta, rng):
        return theta + math.sqrt(_SIM_VAR) * rng.standard_normal(theta.shape)

    def _log_likelihood(self, theta, x):
        return _gaussian_log_likelihood(theta, x)


class GaussianLinear(_GaussianSimulatorTask):
    """theta ~ N(0, 0.1 I), x | theta ~ N(theta, 0.1 I); posterior N(x/2, 0.05 I)."""

    name = "gaussian_linear"
    ve_sigma_limits = (0.01, 7.0)
    _folder = "gaussian_linear"

    def _make_prior(self):
        return Normal(np.zeros(_DIM), math.sqrt(0.1))

    @staticmethod
    def posterior_mean_cov(x):
        """The exact posterior N(x/2, 0.05 I) for one x of shape (10,): (mean (10,), cov (10, 10))."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (_DIM,):
            raise ValueError(f"x must have shape ({_DIM},), got {x.shape}")
        return x / 2.0, 0.05 * np.eye(_DIM)


class GaussianLinearUniform(_GaussianSimulatorTask):
    """theta ~ U(-1, 1)^10, x | theta ~ N(theta, 0.1 I)."""

    name = "gaussian_linear_uniform"
    ve_sigma_limits = (0.01, 5.0)
    _folder = "gaussian_linear_uniform"

    def _make_prior(self):
        return BoxUniform(-np.ones(_DIM), np.ones(_DIM))
