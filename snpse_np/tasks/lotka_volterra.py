"""Lotka-Volterra predator-prey model (sbibm ``lotka_volterra``).

theta = (alpha, beta, gamma, delta), independent log-normal priors with (mu, sigma) =
(-0.125, 0.5), (-3, 0.5), (-0.125, 0.5), (-3, 0.5).

ODE on t in [0, 20], u0 = (prey, predator) = (30, 1):

    dx/dt = alpha x - beta x y,   dy/dt = -gamma y + delta x y,

solved by sbibm in Julia with Tsit5, reltol = abstol = 1e-8, saveat = 0.1 (201 points); here
by :mod:`snpse_np.tasks.ode` (same method and tolerances). A failed solve gives a NaN row.

Observation model: the states at every 21st save point, t = 0, 2.1, 4.2, ..., 18.9,
flattened as (prey at the 10 times, predator at the 10 times), dim 20, each

    x_i ~ LogNormal(log(clamp(u_i, 1e-10, 1e4)), 0.1),  i.e.  x_i = clamp(u_i) exp(0.1 eps_i).

x_1 and x_11 (t = 0) carry no information about theta.

Reference: sbibm/tasks/lotka_volterra/task.py. Shapes: theta (n, 4) -> x (n, 20).
"""
import numpy as np

from ..priors import LogNormal
from . import ode
from .base import Task

U0 = np.array([30.0, 1.0])
T_END = 20.0
SAVE_TIMES = np.arange(201) / 10.0                    # sbibm's saveat = 0.1 on [0, 20]
OBSERVATION_TIMES = SAVE_TIMES[::21]                  # 0, 2.1, ..., 18.9
NOISE_SCALE = 0.1
CLAMP = (1e-10, 1e4)


def trajectory(theta, t_eval=None, rtol=1e-8, atol=1e-8, parallel=None):
    """(prey, predator)(t) for every theta row before observation noise.

    theta: (n, 4); t_eval: (T,) save times in [0, 20] (default the 201 points 0, 0.1, ..., 20).
    Returns (n, T, 2) float64, NaN rows where the solve failed.
    """
    theta = np.asarray(theta, dtype=np.float64)
    if theta.ndim != 2 or theta.shape[1] != 4:
        raise ValueError(f"lotka_volterra: theta must have shape (n, 4), got {theta.shape}")
    t_eval = SAVE_TIMES if t_eval is None else np.asarray(t_eval, dtype=np.float64)
    return ode.solve("lotka_volterra", theta, U0, t_eval, rtol=rtol, atol=atol, parallel=parallel)


class LotkaVolterra(Task):
    """Lotka-Volterra ODE with log-normal observations of both species at 10 times."""

    name = "lotka_volterra"
    dim_theta = 4
    dim_x = 20
    ve_sigma_limits = (0.05, 12.0)
    _folder = "lotka_volterra"

    def _make_prior(self):
        return LogNormal([-0.125, -3.0, -0.125, -3.0], [0.5, 0.5, 0.5, 0.5])

    def trajectory(self, theta, t_eval=None):
        """See :func:`trajectory`."""
        return trajectory(self._check_theta(theta), t_eval)

    def _simulate(self, theta, rng):
        # Integrate to the end of sbibm's time span (t = 20): a solve that fails after the
        # last observation time is a NaN row in sbibm too.
        t_eval = np.append(OBSERVATION_TIMES, T_END)
        u = trajectory(theta, t_eval)[:, :-1, :]          # (n, 10, 2)
        u = u.transpose(0, 2, 1).reshape(theta.shape[0], self.dim_x)  # prey block, predator block
        eps = rng.standard_normal(u.shape)
        # NaN rows stay NaN through clip and exp.
        return np.clip(u, *CLAMP) * np.exp(NOISE_SCALE * eps)
