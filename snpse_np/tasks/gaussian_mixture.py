"""Gaussian mixture (sbibm ``gaussian_mixture``, the corrected v1.1.0 simulator).

Prior theta ~ U(-10, 10)^2. Simulator: one mixture index per simulation,

    c ~ Categorical(1/2, 1/2),   x | theta, c ~ N(theta, sigma_c^2 I_2),   sigma = (1.0, 0.1),

so p(x | theta) = 1/2 N(x; theta, I) + 1/2 N(x; theta, 0.01 I). (Before sbibm 1.1.0 one index
was drawn per *batch*; the paper's numbers used that buggy version, the files here do not
depend on it.) The exact posterior is 1/2 N(x_o, I) + 1/2 N(x_o, 0.01 I) restricted to the box.

Reference: sbibm/tasks/gaussian_mixture/task.py. Shapes: theta (n, 2) -> x (n, 2).
"""
import math

import numpy as np

from ..priors import BoxUniform
from .base import Task

_SIGMAS = np.array([1.0, 0.1])


class GaussianMixture(Task):
    """theta ~ U(-10, 10)^2, x ~ 0.5 N(theta, I) + 0.5 N(theta, 0.01 I)."""

    name = "gaussian_mixture"
    dim_theta = 2
    dim_x = 2
    ve_sigma_limits = (0.01, 10.0)
    _folder = "gaussian_mixture"

    def _make_prior(self):
        return BoxUniform(-10.0 * np.ones(2), 10.0 * np.ones(2))

    def _simulate(self, theta, rng):
        c = rng.integers(0, 2, size=theta.shape[0])
        return theta + _SIGMAS[c][:, None] * rng.standard_normal(theta.shape)

    def _log_likelihood(self, theta, x):
        d2 = np.sum((x - theta) ** 2, axis=1)
        # log N(x; theta, s^2 I_2) = -d2 / (2 s^2) - log(2 pi s^2), combined by log-sum-exp.
        comps = np.stack([-0.5 * d2 / s ** 2 - math.log(2.0 * math.pi * s ** 2) for s in _SIGMAS])
        return math.log(0.5) + np.logaddexp(comps[0], comps[1])
