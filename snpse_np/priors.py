"""Prior distributions: ``sample``, ``log_prob`` and the support.

Every prior exposes

- ``dim``                         the dimension d of theta;
- ``sample(n, seed=None)``        (n, d) float64 draws;
- ``log_prob(theta)``             (n,) log-density, ``-inf`` outside the support;
- ``support_contains(theta)``     (n,) bool;
- ``low``, ``high``               (d,) bounds of the support (``-inf`` / ``inf`` where open),
                                  used for bounding-box pre-rejection and sample rejection;
- ``sample_in_box(n, low, high)`` priors with independent dimensions (``independent = True``):
                                  exact draws from the prior restricted to a box and the box's
                                  prior mass (the truncated prior of TSNPSE draws its candidates so
                                  when the region is a speck of the prior).

Shapes: ``theta`` is (n, d) or (d,) (treated as one row). Rows with NaN are outside every
support: ``log_prob`` gives them ``-inf`` (never NaN) and ``support_contains`` False.
Parameters are checked when the prior is built: finite, real, and of agreeing shapes (a scalar
``scale`` is spread over every dimension of ``loc``; two vectors must have the same length).
"""
import math

import numpy as np

from .checks import integer, real_array
from .rng import as_generator

_LOG_2PI = math.log(2.0 * math.pi)


def _normal_cdf(z):
    """Phi(z) for a float z (inf allowed), accurate in both tails."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def _as_vector(value, name):
    arr = np.atleast_1d(real_array(value, name))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {np.shape(value)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr}")
    return arr


def _loc_scale(loc, scale, kind):
    """(loc, scale) as (d,) vectors: equal shapes, or one of them a scalar spread over the other."""
    loc_v, scale_v = _as_vector(loc, "loc"), _as_vector(scale, "scale")
    if loc_v.shape != scale_v.shape:
        if np.ndim(scale) == 0:
            scale_v = np.full(loc_v.shape, scale_v[0])
        elif np.ndim(loc) == 0:
            loc_v = np.full(scale_v.shape, loc_v[0])
        else:
            raise ValueError(f"{kind}: loc and scale must have the same shape (or one be a scalar), "
                             f"got {loc_v.shape} and {scale_v.shape}")
    if np.any(scale_v <= 0):
        raise ValueError(f"{kind} needs scale > 0, got {scale_v.tolist()}")
    return loc_v, scale_v


# Draws up to this many standard deviations out must stay finite float64 (the chance of a draw
# beyond it is ~1e-300): a wider prior would sample inf (LogNormal(0, 5646) did).
_RANGE_SIGMAS = 40.0
_LOG_MAX = math.log(np.finfo(np.float64).max)


def _check_range(finite, kind):
    if not np.all(finite):
        raise ValueError(f"{kind}: its draws would overflow float64 (parameters too large); rescale theta")


def _nan_rows_out(theta, lp):
    """-inf for rows with a NaN or inf (outside every support), so log_prob never returns NaN."""
    return np.where(np.isfinite(theta).all(axis=1), lp, -np.inf)


class Prior:
    """Base class: shape checks shared by every prior."""

    dim: int
    low: np.ndarray
    high: np.ndarray

    def _rows(self, theta):
        theta = real_array(theta, "theta")
        if theta.ndim == 1:
            theta = theta[None, :]
        if theta.ndim != 2 or theta.shape[1] != self.dim:
            raise ValueError(
                f"theta must have shape (n, {self.dim}) for this {type(self).__name__} prior, "
                f"got {np.shape(theta)}")
        return theta

    def support_contains(self, theta):
        theta = self._rows(theta)
        return np.all((theta >= self.low) & (theta <= self.high), axis=1) & np.all(np.isfinite(theta), axis=1)

    independent = False  # True: independent dimensions, so ``sample_in_box`` is exact and cheap

    def sample_in_box(self, n, low, high, seed=None):
        """(samples (n, d), log P(box)): draws from the prior restricted to [low, high].

        Exact for priors with independent dimensions: each dimension is drawn from its marginal
        restricted to [low_j, high_j] by rejection in 1-D, so the cost is ~n / P_j per dimension
        instead of n / prod_j P_j for rejection from the prior in d dimensions.
        """
        if not self.independent:
            raise NotImplementedError(f"{type(self).__name__} has dependent dimensions; sample it and reject")
        rng = as_generator(seed)
        n = self._count(n)
        low = np.maximum(np.asarray(low, dtype=np.float64), self.low)
        high = np.minimum(np.asarray(high, dtype=np.float64), self.high)
        out = np.empty((n, self.dim))
        log_mass = 0.0
        for j in range(self.dim):
            mass = self._marginal_mass(j, low[j], high[j])
            if not mass > 0.0:
                raise ValueError(f"the box [{low[j]}, {high[j]}] has no prior mass in dimension {j}")
            log_mass += math.log(mass)
            got = 0
            while got < n:
                m = int(min(10_000_000, max(1024, 1.2 * (n - got) / mass)))
                v = self._marginal_sample(j, m, rng)
                v = v[(v >= low[j]) & (v <= high[j])][:n - got]
                out[got:got + v.size, j] = v
                got += v.size
        return out, log_mass

    @staticmethod
    def _count(n):
        return integer(n, "number of samples", minimum=0)


class BoxUniform(Prior):
    """Independent uniform on the box [low, high]."""

    def __init__(self, low, high):
        self.low = _as_vector(low, "low")
        self.high = _as_vector(high, "high")
        if self.low.shape != self.high.shape:
            raise ValueError(f"low and high must have the same shape, got {self.low.shape} and {self.high.shape}")
        if np.any(self.high <= self.low):
            raise ValueError("BoxUniform needs high > low in every dimension")
        with np.errstate(over="ignore"):
            _check_range(np.isfinite(self.high - self.low), "BoxUniform")
        self.dim = self.low.size
        self._log_volume = float(np.sum(np.log(self.high - self.low)))

    independent = True

    def sample(self, n, seed=None):
        rng = as_generator(seed)
        return self.low + (self.high - self.low) * rng.random((self._count(n), self.dim))

    def _marginal_mass(self, j, a, b):
        return max(0.0, (b - a) / (self.high[j] - self.low[j]))

    def _marginal_sample(self, j, m, rng):
        return self.low[j] + (self.high[j] - self.low[j]) * rng.random(m)

    def log_prob(self, theta):
        inside = self.support_contains(theta)
        return np.where(inside, -self._log_volume, -np.inf)

    def __repr__(self):
        return f"BoxUniform(low={self.low.tolist()}, high={self.high.tolist()})"


class Normal(Prior):
    """Independent normal: theta_j ~ N(loc_j, scale_j^2) (scale is the standard deviation)."""

    def __init__(self, loc, scale):
        self.loc, self.scale = _loc_scale(loc, scale, "Normal")
        with np.errstate(over="ignore"):
            _check_range(np.isfinite(np.abs(self.loc) + _RANGE_SIGMAS * self.scale), "Normal")
        self.dim = self.loc.size
        self.low = np.full(self.dim, -np.inf)
        self.high = np.full(self.dim, np.inf)

    independent = True

    def sample(self, n, seed=None):
        rng = as_generator(seed)
        return self.loc + self.scale * rng.standard_normal((self._count(n), self.dim))

    def _marginal_mass(self, j, a, b):
        return _normal_cdf((b - self.loc[j]) / self.scale[j]) - _normal_cdf((a - self.loc[j]) / self.scale[j])

    def _marginal_sample(self, j, m, rng):
        return self.loc[j] + self.scale[j] * rng.standard_normal(m)

    def log_prob(self, theta):
        theta = self._rows(theta)
        with np.errstate(over="ignore"):  # |z| beyond ~1e154: z^2 = inf, log-density -inf (right)
            z = (theta - self.loc) / self.scale
            return _nan_rows_out(theta, -0.5 * np.sum(z * z, axis=1) - np.sum(np.log(self.scale))
                                 - 0.5 * self.dim * _LOG_2PI)

    def __repr__(self):
        return f"Normal(loc={self.loc.tolist()}, scale={self.scale.tolist()})"


class LogNormal(Prior):
    """Independent log-normal: log theta_j ~ N(loc_j, scale_j^2); support (0, inf)."""

    def __init__(self, loc, scale):
        self.loc, self.scale = _loc_scale(loc, scale, "LogNormal")
        with np.errstate(over="ignore"):
            _check_range(np.abs(self.loc) + _RANGE_SIGMAS * self.scale < _LOG_MAX, "LogNormal")
        self.dim = self.loc.size
        self.low = np.zeros(self.dim)
        self.high = np.full(self.dim, np.inf)

    def support_contains(self, theta):
        theta = self._rows(theta)
        return np.all(theta > 0, axis=1) & np.all(np.isfinite(theta), axis=1)

    independent = True

    def sample(self, n, seed=None):
        rng = as_generator(seed)
        return np.exp(self.loc + self.scale * rng.standard_normal((self._count(n), self.dim)))

    def _marginal_mass(self, j, a, b):
        def cdf(v):
            return 0.0 if v <= 0.0 else _normal_cdf((math.log(v) - self.loc[j]) / self.scale[j])
        return cdf(b) - cdf(a)

    def _marginal_sample(self, j, m, rng):
        return np.exp(self.loc[j] + self.scale[j] * rng.standard_normal(m))

    def log_prob(self, theta):
        theta = self._rows(theta)
        inside = self.support_contains(theta)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_theta = np.log(np.where(inside[:, None], theta, 1.0))
        with np.errstate(over="ignore"):  # z^2 = inf: log-density -inf (right)
            z = (log_theta - self.loc) / self.scale
            lp = (-0.5 * np.sum(z * z, axis=1) - np.sum(log_theta, axis=1)
                  - np.sum(np.log(self.scale)) - 0.5 * self.dim * _LOG_2PI)
        return np.where(inside, lp, -np.inf)

    def __repr__(self):
        return f"LogNormal(loc={self.loc.tolist()}, scale={self.scale.tolist()})"


class MultivariateNormal(Prior):
    """theta ~ N(mean, cov) with a full covariance matrix (given as ``cov`` or ``precision``)."""

    def __init__(self, mean, cov=None, precision=None):
        self.mean = _as_vector(mean, "mean")
        self.dim = self.mean.size
        if (cov is None) == (precision is None):
            raise ValueError("MultivariateNormal needs exactly one of cov or precision")
        mat = real_array(cov if cov is not None else precision, "covariance/precision")
        if mat.shape != (self.dim, self.dim):
            raise ValueError(f"covariance/precision must have shape ({self.dim}, {self.dim}), got {mat.shape}")
        if not np.all(np.isfinite(mat)):
            raise ValueError("covariance/precision must be finite (it holds NaN or inf)")
        if not np.allclose(mat, mat.T):
            raise ValueError("covariance/precision must be symmetric")
        try:
            self.cov = mat if cov is not None else np.linalg.inv(mat)
        except np.linalg.LinAlgError as err:
            raise ValueError("precision must be positive definite (it is singular)") from err
        self.cov = 0.5 * (self.cov + self.cov.T)
        try:
            self._chol = np.linalg.cholesky(self.cov)
        except np.linalg.LinAlgError as err:
            raise ValueError("covariance must be positive definite") from err
        with np.errstate(over="ignore"):
            _check_range(np.isfinite(np.abs(self.mean) + _RANGE_SIGMAS * np.sqrt(np.diag(self.cov))),
                         "MultivariateNormal")
        self._log_det = 2.0 * float(np.sum(np.log(np.diag(self._chol))))
        self.low = np.full(self.dim, -np.inf)
        self.high = np.full(self.dim, np.inf)

    def sample(self, n, seed=None):
        rng = as_generator(seed)
        return self.mean + rng.standard_normal((self._count(n), self.dim)) @ self._chol.T

    def log_prob(self, theta):
        theta = self._rows(theta)
        # Solve L y = (theta - mean)^T so that |y|^2 is the Mahalanobis distance.
        # rows with NaN/inf are set aside first: the solve would turn inf into NaN
        bad = ~np.isfinite(theta).all(axis=1)
        with np.errstate(over="ignore"):  # |y|^2 = inf: log-density -inf (right)
            y = np.linalg.solve(self._chol, (np.where(bad[:, None], 0.0, theta) - self.mean).T)
            lp = -0.5 * np.sum(y * y, axis=0) - 0.5 * self._log_det - 0.5 * self.dim * _LOG_2PI
        return np.where(bad, -np.inf, lp)

    def __repr__(self):
        return f"MultivariateNormal(mean={self.mean.tolist()}, dim={self.dim})"
