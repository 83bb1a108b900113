"""SLCP ("simple likelihood, complex posterior") and SLCP with distractors (sbibm ``slcp``,
``slcp_distractors``).

Prior theta ~ U(-3, 3)^5. Per theta:

    m = (theta_1, theta_2),  s1 = theta_3^2,  s2 = theta_4^2,  rho = tanh(theta_5),
    Sigma = [[s1^2 + 1e-6, rho s1 s2], [rho s1 s2, s2^2 + 1e-6]],
    u_j ~ N(m, Sigma) iid, j = 1..4,   x = (u_11, u_12, u_21, u_22, ..., u_41, u_42)  (dim 8).

(s1, s2 are standard deviations; the 1e-6 jitter is sbibm's, in the likelihood too.)
log p(x | theta) = sum_j log N(u_j; m, Sigma), with
det Sigma = s1^2 s2^2 (1 - rho^2) + 1e-6 (s1^2 + s2^2) + 1e-12 (written this way because
1 - rho^2 = 1 / cosh^2(theta_5) keeps its precision where rho -> 1). The posterior has four
symmetric modes (the signs of theta_3, theta_4 are not identified).

``slcp_distractors`` (dim 100): the 8 SLCP values are followed by 92 distractors
n ~ (1/20) sum_c t_2(loc_c, L_c L_c^T), a mixture of 20 multivariate Student-t (df = 2)
independent of theta, and the 100 values are permuted: x = [x_slcp, n][perm]. The mixture
and ``perm`` are regenerated from numpy's legacy RNG exactly as sbibm made them
(``SLCP._generate_noise_dist_parameters``): seed 42; loc_c = 15 N(0, I_92) for c = 1..20;
then L_c = 3 (tril(N(0, 1)^{92x92}) + diag(exp(N(0, I_92)))) for c = 1..20; then
perm = permutation(100). The SLCP values land at positions [22, 33, 23, 67, 42, 21, 16, 90].
(342 of the 1840 diagonal entries of L_c are negative, and the L_c are numerically singular:
sampling is fine, but the distractors' density cannot be evaluated reliably, so this task has
no ``log_likelihood``; its theta-dependent part is SLCP's at the informative positions.)
Student-t draw: n = loc_c + L_c z sqrt(df / chi2_df), z ~ N(0, I_92).

Reference: sbibm/tasks/slcp/task.py. Shapes: theta (n, 5) -> x (n, 8) or (n, 100).
"""
import math
from functools import lru_cache

import numpy as np

from ..priors import BoxUniform
from .base import Task

_JITTER = 1e-6
_NUM_POINTS = 4
_NOISE_DIM = 92
_NUM_COMPONENTS = 20
_DF = 2.0


def _moments(theta):
    """Per-row m (n, 2) and the entries (S11, S12, S22, det) of Sigma, each (n,)."""
    m = theta[:, :2]
    s1 = theta[:, 2] ** 2
    s2 = theta[:, 3] ** 2
    rho = np.tanh(theta[:, 4])
    one_minus_rho2 = 1.0 / np.cosh(theta[:, 4]) ** 2
    s11 = s1 * s1 + _JITTER
    s22 = s2 * s2 + _JITTER
    s12 = rho * s1 * s2
    det = (s1 * s2) ** 2 * one_minus_rho2 + _JITTER * (s1 * s1 + s2 * s2) + _JITTER ** 2
    return m, s11, s12, s22, det


def _slcp_simulate(theta, rng):
    """(n, 5) -> (n, 8): four 2-D Gaussian points per theta, flattened row-major."""
    m, s11, s12, s22, det = _moments(theta)
    # Closed-form 2x2 Cholesky factor: L = [[l11, 0], [l21, l22]], l22^2 = det / s11 > 0.
    l11 = np.sqrt(s11)
    l21 = s12 / l11
    l22 = np.sqrt(det / s11)
    eps = rng.standard_normal((theta.shape[0], _NUM_POINTS, 2))
    u = np.empty_like(eps)
    u[:, :, 0] = m[:, None, 0] + l11[:, None] * eps[:, :, 0]
    u[:, :, 1] = m[:, None, 1] + l21[:, None] * eps[:, :, 0] + l22[:, None] * eps[:, :, 1]
    return u.reshape(theta.shape[0], 2 * _NUM_POINTS)


def _slcp_log_likelihood(theta, x):
    """sum_j log N(u_j; m, Sigma); theta (n, 5), x (8,) or (n, 8) -> (n,)."""
    m, s11, s12, s22, det = _moments(theta)
    u = np.broadcast_to(x, (theta.shape[0], 2 * _NUM_POINTS)).reshape(-1, _NUM_POINTS, 2)
    d0 = u[:, :, 0] - m[:, None, 0]
    d1 = u[:, :, 1] - m[:, None, 1]
    quad = (s22[:, None] * d0 * d0 - 2.0 * s12[:, None] * d0 * d1 + s11[:, None] * d1 * d1) / det[:, None]
    return (-0.5 * np.sum(quad, axis=1)
            - _NUM_POINTS * (math.log(2.0 * math.pi) + 0.5 * np.log(det)))


@lru_cache(maxsize=1)
def distractor_parameters():
    """(loc (20, 92), scale_tril (20, 92, 92), perm (100,) int64), regenerated from seed 42.

    The same draws, in the same order, as sbibm's ``_generate_noise_dist_parameters``
    (numpy's global legacy RNG seeded with 42 == ``RandomState(42)``).
    """
    rng = np.random.RandomState(42)
    loc = np.array([15.0 * rng.normal(size=_NOISE_DIM) for _ in range(_NUM_COMPONENTS)])
    tril = np.array([np.tril(rng.normal(size=(_NOISE_DIM, _NOISE_DIM)))
                     + np.diag(np.exp(rng.normal(size=_NOISE_DIM)))
                     for _ in range(_NUM_COMPONENTS)])
    scale_tril = 3.0 * tril
    perm = rng.permutation(_NOISE_DIM + 8).astype(np.int64)
    for arr in (loc, scale_tril, perm):
        arr.flags.writeable = False
    return loc, scale_tril, perm


def informative_positions():
    """Positions (8,) in the 100-dim x of the SLCP values x_slcp[0..7]: inverse permutation."""
    perm = distractor_parameters()[2]
    return np.argsort(perm)[:8]


class SLCP(Task):
    """theta ~ U(-3, 3)^5; x = 4 points from a 2-D Gaussian whose moments depend on theta."""

    name = "slcp"
    dim_theta = 5
    dim_x = 8
    ve_sigma_limits = (0.05, 8.0)
    num_simulations = (1_000, 10_000, 100_000, 1_000_000)
    _folder = "slcp"

    def _make_prior(self):
        return BoxUniform(-3.0 * np.ones(5), 3.0 * np.ones(5))

    def _simulate(self, theta, rng):
        return _slcp_simulate(theta, rng)

    def _log_likelihood(self, theta, x):
        return _slcp_log_likelihood(theta, x)


class SLCPDistractors(SLCP):
    """SLCP's 8 values plus 92 Student-t-mixture distractors, permuted; dim_x = 100."""

    name = "slcp_distractors"
    dim_x = 100
    # The authors' table has no entry for this variant.
    ve_sigma_limits = None
    _observation_file = "observation_distractors.csv"

    def _simulate(self, theta, rng):
        n = theta.shape[0]
        loc, scale_tril, perm = distractor_parameters()
        x_slcp = _slcp_simulate(theta, rng)
        comp = rng.integers(0, _NUM_COMPONENTS, size=n)
        z = rng.standard_normal((n, _NOISE_DIM))
        chi2 = rng.chisquare(_DF, size=n)
        noise = np.empty((n, _NOISE_DIM))
        # One GEMM per component over the rows that picked it (20 small GEMMs, no row loop).
        for c in range(_NUM_COMPONENTS):
            rows = np.flatnonzero(comp == c)
            if rows.size:
                noise[rows] = loc[c] + (z[rows] @ scale_tril[c].T) * np.sqrt(_DF / chi2[rows])[:, None]
        return np.concatenate([x_slcp, noise], axis=1)[:, perm]

    def _log_likelihood(self, theta, x):
        # The distractors' density is independent of theta, but it cannot be evaluated
        # reliably: the 20 scale_tril factors are numerically singular (condition numbers
        # 1e12..1e18, tiny and negative diagonal entries), so |L^{-1}(n - loc)|^2 is garbage
        # in float64 (torch's log_prob would give NaN for the negative diagonals).
        raise NotImplementedError(
            "slcp_distractors: the distractor density is numerically ill-conditioned; the "
            "theta-dependent part of the likelihood is slcp's log_likelihood at "
            "x[informative_positions()] (get_task('slcp').log_likelihood(theta, k) for the "
            "stored observations)")
