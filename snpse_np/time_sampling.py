"""How training draws diffusion times t in [t_min, 1].

- ``"uniform"``: t ~ U[t_min, 1] (the paper and the authors' code).
- ``"lognormal"``: log sigma_t ~ N(mean, std), truncated to [sigma(t_min), sigma(1)], mapped back
  to t (Karras et al. 2022's training distribution; ``sbi``'s "lognormal" schedule). It spends the
  training on the noise levels that shape the samples, instead of on sigma << posterior width,
  where the DSM target is almost pure noise.
- ``"log_uniform"``: log sigma_t ~ U[log sigma(t_min), log sigma(1)], mapped back to t: every
  octave of noise gets the same share of the steps. For the VE SDE, log sigma_t is linear in t, so
  this IS ``"uniform"`` (drawn as such, bit for bit); for VP and sub-VP, uniform t spends most steps
  near pure noise (VP, beta 0.1..11: 78% of the draws have sigma_t > 0.5, against 12% here).
- ``"mixed"``: each draw is uniform t or log-uniform sigma with probability 1/2 (a coin per draw):
  log-uniform's small noise levels without giving up uniform t's large ones. For VE, ``"uniform"``.

Any positive density over t keeps the minimiser of the loss at the true score; only the weighting
of the errors changes.
"""
from math import erf, pi, sqrt

import numpy as np

from .sde import VESDE

TIME_SAMPLINGS = ("uniform", "lognormal", "log_uniform", "mixed")


class TimeSampler:
    def __init__(self, sde, kind="uniform", mean=-1.2, std=1.2, grid=4097):
        if kind not in TIME_SAMPLINGS:
            raise ValueError(f"time_sampling must be one of {TIME_SAMPLINGS}, got {kind!r}")
        self.sde, self.kind, self.mean, self.std = sde, kind, float(mean), float(std)
        # VE: log sigma is linear in t, so "log_uniform" and "mixed" ARE "uniform" (drawn as such, the same numbers)
        self._uniform_t = kind == "uniform" or (kind in ("log_uniform", "mixed") and isinstance(sde, VESDE))
        if not self._uniform_t:
            # sigma(t) is increasing for every SDE here: tabulate log sigma on a fine grid, invert by interpolation
            self._t = np.linspace(sde.t_min, 1.0, grid)
            self._log_sigma = np.log(sde.marginal(self._t)[1])

    def sample(self, n, rng):
        """(n,) float64 times."""
        if self._uniform_t:
            return rng.uniform(self.sde.t_min, 1.0, n)
        lo, hi = self._log_sigma[0], self._log_sigma[-1]
        if self.kind == "log_uniform":
            return np.interp(rng.uniform(lo, hi, n), self._log_sigma, self._t)
        if self.kind == "mixed":
            t = rng.uniform(self.sde.t_min, 1.0, n)
            coin = rng.random(n) < 0.5
            t[coin] = np.interp(rng.uniform(lo, hi, int(coin.sum())), self._log_sigma, self._t)
            return t
        # truncated normal by inverse CDF on the allowed interval (never loops, never clips mass to the ends)
        cdf = lambda v: 0.5 * (1.0 + erf((v - self.mean) / (self.std * sqrt(2.0))))  # noqa: E731
        u = rng.uniform(cdf(lo), cdf(hi), n)
        log_sigma = self.mean + self.std * np.sqrt(2.0) * _erfinv(2.0 * u - 1.0)
        return np.interp(np.clip(log_sigma, lo, hi), self._log_sigma, self._t)


def _erfinv(y):
    """Inverse error function, float64, by Giles' approximation refined with two Newton steps."""
    y = np.clip(np.asarray(y, dtype=np.float64), -1 + 1e-15, 1 - 1e-15)
    w = -np.log((1.0 - y) * (1.0 + y))
    x = np.where(w < 5.0, _giles_small(w), _giles_large(w)) * y
    erf_v = np.vectorize(erf)
    for _ in range(2):
        x = x - (erf_v(x) - y) / (2.0 / sqrt(pi) * np.exp(-x * x))
    return x


def _giles_small(w):
    w = w - 2.5
    p = 2.81022636e-08
    for c in (3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503,
              -0.00417768164, 0.246640727, 1.50140941):
        p = c + p * w
    return p


def _giles_large(w):
    w = np.sqrt(w) - 3.0
    p = -0.000200214257
    for c in (0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613,
              0.00943887047, 1.00167406, 2.83297682):
        p = c + p * w
    return p
