"""Two moons (sbibm ``two_moons``).

Prior theta ~ U(-1, 1)^2. Simulator:

    a ~ U(-pi/2, pi/2),  r ~ N(0.1, 0.01^2),  p = (r cos a + 0.25, r sin a),
    z0 = (theta_1 + theta_2) / sqrt 2,  z1 = (-theta_1 + theta_2) / sqrt 2,
    x = (p_1 - |z0|, p_2 + z1).

(sbibm writes the rotation with ang = -pi/4: z0 = c theta_1 - s theta_2, z1 = s theta_1 +
c theta_2, c = cos ang, s = sin ang.)

"Likelihood" as sbibm's ``TwoMoons._likelihood``: u = x_1 + |z0| - 0.25, v = x_2 - z1,
r = sqrt(u^2 + v^2),

    log L = -1/2 ((r - 0.1) / 0.01)^2 - 1/2 log(2 pi 0.01^2),   -inf where u < 0.

This is the density of the radius r, not of x: it omits the Jacobian 1/(pi r) of the polar
map, exactly as sbibm does (irrelevant for sbibm's reference sampler, which inverts the
simulator). The posterior is bimodal (two crescents).

Reference: sbibm/tasks/two_moons/task.py. Shapes: theta (n, 2) -> x (n, 2).
"""
import math

import numpy as np

from ..priors import BoxUniform
from .base import Task

_R_LOC = 0.1
_R_SCALE = 0.01
_OFFSET = 0.25
_INV_SQRT2 = 1.0 / math.sqrt(2.0)


def _rotate(theta):
    """(z0, z1) = rotation of theta by -pi/4, each (n,)."""
    z0 = (theta[:, 0] + theta[:, 1]) * _INV_SQRT2
    z1 = (-theta[:, 0] + theta[:, 1]) * _INV_SQRT2
    return z0, z1


class TwoMoons(Task):
    """theta ~ U(-1, 1)^2; x = crescent noise shifted by (-|z0|, z1)."""

    name = "two_moons"
    dim_theta = 2
    dim_x = 2
    ve_sigma_limits = (0.01, 3.0)
    _folder = "two_moons"

    def _make_prior(self):
        return BoxUniform(-np.ones(2), np.ones(2))

    def _simulate(self, theta, rng):
        n = theta.shape[0]
        a = rng.uniform(-0.5 * math.pi, 0.5 * math.pi, size=n)
        r = _R_LOC + _R_SCALE * rng.standard_normal(n)
        z0, z1 = _rotate(theta)
        x = np.empty((n, 2))
        x[:, 0] = r * np.cos(a) + _OFFSET - np.abs(z0)
        x[:, 1] = r * np.sin(a) + z1
        return x

    def _log_likelihood(self, theta, x):
        x = np.broadcast_to(x, theta.shape)
        z0, z1 = _rotate(theta)
        u = x[:, 0] + np.abs(z0) - _OFFSET
        v = x[:, 1] - z1
        r = np.sqrt(u * u + v * v)
        ll = -0.5 * ((r - _R_LOC) / _R_SCALE) ** 2 - 0.5 * math.log(2.0 * math.pi * _R_SCALE ** 2)
        return np.where(u < 0.0, -np.inf, ll)
