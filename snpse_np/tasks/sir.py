"""SIR epidemic model (sbibm ``sir``).

theta = (beta, gamma): contact rate and recovery rate, prior
beta ~ LogNormal(log 0.4, 0.5), gamma ~ LogNormal(log 0.125, 0.2), independent.

ODE on t in [0, 160] days, N = 1e6, u0 = (S, I, R) = (N - 1, 1, 0):

    dS/dt = -beta S I / N,   dI/dt = beta S I / N - gamma I,   dR/dt = gamma I,

solved by sbibm in Julia with Tsit5, reltol = abstol = 1e-8, saved daily (161 points); here
by :mod:`snpse_np.tasks.ode` (same method and tolerances). A failed solve gives a NaN row.

Observation model: I_k = I(t_k) at t_k = 0, 17, 34, ..., 153 (every 17th saved day),

    x_k ~ Binomial(1000, clamp(I_k / N, 0, 1)),   k = 1..10, independent

(counts stored as floats; x_1 is almost always 0 since I_1 / N = 1e-6).

Reference: sbibm/tasks/sir/task.py. Shapes: theta (n, 2) -> x (n, 10).
"""
import numpy as np

from ..priors import LogNormal
from . import ode
from .base import Task

POPULATION = 1_000_000.0
U0 = np.array([POPULATION - 1.0, 1.0, 0.0])
T_END = 160.0
SAVE_TIMES = np.arange(161, dtype=np.float64)        # sbibm's saveat = 1.0 on [0, 160]
OBSERVATION_TIMES = SAVE_TIMES[::17]                  # 0, 17, ..., 153
TOTAL_COUNT = 1000


def trajectory(theta, t_eval=None, rtol=1e-8, atol=1e-8, parallel=None):
    """(S, I, R)(t) for every theta row before observation noise.

    theta: (n, 2) = (beta, gamma); t_eval: (T,) save times in [0, 160] (default the 161 days).
    Returns (n, T, 3) float64, NaN rows where the solve failed.
    """
    theta = np.asarray(theta, dtype=np.float64)
    if theta.ndim != 2 or theta.shape[1] != 2:
        raise ValueError(f"sir: theta must have shape (n, 2), got {theta.shape}")
    t_eval = SAVE_TIMES if t_eval is None else np.asarray(t_eval, dtype=np.float64)
    params = np.column_stack([theta, np.full(theta.shape[0], POPULATION)])
    return ode.solve("sir", params, U0, t_eval, rtol=rtol, atol=atol, parallel=parallel)


class SIR(Task):
    """SIR ODE with binomial observations of the infected fraction at 10 times."""

    name = "sir"
    dim_theta = 2
    dim_x = 10
    ve_sigma_limits = (0.01, 2.5)
    _folder = "sir"

    def _make_prior(self):
        return LogNormal([np.log(0.4), np.log(0.125)], [0.5, 0.2])

    def trajectory(self, theta, t_eval=None):
        """See :func:`trajectory`."""
        return trajectory(self._check_theta(theta), t_eval)

    def _simulate(self, theta, rng):
        # Integrate to the end of sbibm's time span even though the last observation is at
        # day 153: a solve that fails on (153, 160] is a NaN row in sbibm too.
        t_eval = np.append(OBSERVATION_TIMES, T_END)
        infected = trajectory(theta, t_eval)[:, :-1, 1]
        ok = np.all(np.isfinite(infected), axis=1)
        x = np.full((theta.shape[0], self.dim_x), np.nan)
        prob = np.clip(infected[ok] / POPULATION, 0.0, 1.0)
        x[ok] = rng.binomial(TOTAL_COUNT, prob)
        return x
