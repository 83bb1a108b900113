"""Bernoulli GLM and its raw variant (sbibm ``bernoulli_glm``, ``bernoulli_glm_raw``).

A neuron's spikes y_t in {0, 1}, t = 1..100, driven by a white-noise stimulus through a
9-tap linear filter and an offset (theta in R^10):

    psi = X theta,   y_t ~ Bernoulli(sigmoid(psi_t)),

with the stimulus I = RandomState(42).randn(100) cast to float32 and the design matrix
X (100 x 10): X[:, 0] = 1; X[t, 1 + j] = I[t - j] for t >= j, else 0 (j = 0..8).

* ``bernoulli_glm``: x = X^T y = [sum_t y_t, STA_0..STA_8] with STA_d = sum_{t>=d} y_t I_{t-d}
  (dim 10), the sufficient statistic (sbibm computes it with a conv1d; identical).
* ``bernoulli_glm_raw``: x = y (dim 100).

Prior: theta ~ N(0, B^{-1}) with precision B: B_00 = 0.5; B[1:, 1:] = F^T F, F = D D +
diag(sqrt(i / 9)), i = 0..8, D = I_9 - (ones on the sub-diagonal) (a smoothness prior on
the filter, penalising second differences).

Likelihood: log p(y | theta) = sum_t [y_t psi_t - log(1 + e^{psi_t})] = theta^T X^T y -
sum_t softplus(psi_t). It depends on y only through X^T y, so both variants have the same
posterior (and the same reference samples); for the summary task the value given is this
expression with x = X^T y.

Reference: sbibm/tasks/bernoulli_glm/task.py. Shapes: theta (n, 10) -> x (n, 10) or (n, 100).
"""
from functools import lru_cache

import numpy as np

from ..priors import MultivariateNormal
from . import references
from .base import Task

_T = 100
_NUM_LAGS = 9


@lru_cache(maxsize=1)
def design_matrix():
    """X (100, 10) float64, built from the float32 stimulus exactly as sbibm's design_matrix.pt."""
    stim = np.random.RandomState(42).randn(_T).astype(np.float32).astype(np.float64)
    X = np.zeros((_T, _NUM_LAGS + 1))
    X[:, 0] = 1.0
    for j in range(_NUM_LAGS):
        X[j:, 1 + j] = stim[: _T - j]
    X.flags.writeable = False
    return X


def prior_precision():
    """B (10, 10): the precision matrix of sbibm's smoothness prior."""
    M = _NUM_LAGS
    D = np.eye(M) - np.eye(M, k=-1)
    F = D @ D + np.diag(np.sqrt(np.arange(M) / M))
    B = np.zeros((M + 1, M + 1))
    B[0, 0] = 0.5
    B[1:, 1:] = F.T @ F
    return B


def _softplus(z):
    """log(1 + e^z), stable for large |z|."""
    return np.logaddexp(0.0, z)


class BernoulliGLM(Task):
    """Bernoulli GLM with the 10 sufficient statistics x = X^T y."""

    name = "bernoulli_glm"
    dim_theta = 10
    dim_x = 10
    ve_sigma_limits = (0.01, 10.0)
    num_simulations = (1_000, 10_000, 100_000, 1_000_000)
    _folder = "bernoulli_glm"

    def _make_prior(self):
        return MultivariateNormal(np.zeros(10), precision=prior_precision())

    def _spikes(self, theta, rng):
        """y (n, 100) float64 in {0, 1}."""
        psi = theta @ design_matrix().T
        # sigmoid via tanh: no overflow warning for large |psi|.
        z = 0.5 * (1.0 + np.tanh(0.5 * psi))
        return (rng.random(psi.shape) < z).astype(np.float64)

    def _simulate(self, theta, rng):
        return self._spikes(theta, rng) @ design_matrix()

    def _log_likelihood(self, theta, x):
        psi = theta @ design_matrix().T
        return np.sum(theta * x, axis=1) - np.sum(_softplus(psi), axis=1)

    def raw_observation(self, k):
        """The observed spike train y_o^(k), shape (100,) float64 (``observation_raw.csv``)."""
        return references.load_observation(self._folder, k, "observation_raw.csv",
                                           self.data_dir, self.download)


class BernoulliGLMRaw(BernoulliGLM):
    """Bernoulli GLM observed through the raw spike train x = y (dim 100)."""

    name = "bernoulli_glm_raw"
    dim_x = 100
    # The authors' table has no entry for this variant.
    ve_sigma_limits = None
    _observation_file = "observation_raw.csv"

    def _simulate(self, theta, rng):
        return self._spikes(theta, rng)

    def _log_likelihood(self, theta, x):
        return super()._log_likelihood(theta, x @ design_matrix())
