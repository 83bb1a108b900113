"""Forward noising SDEs d theta = f(t) theta dt + g(t) dw on t in [0, 1], with closed-form marginals.

Every SDE here has a linear drift f(theta, t) = f(t) theta and Gaussian transitions

    p_{t|0}(theta_t | theta_0) = N(alpha_t theta_0, sigma_t^2 I),

so the interface (the abstract base ``SDE``; score_sde's ``sde_lib.SDE`` has the same role) is a
handful of scalar functions of t (t a float or a float64 array of any shape; results have its shape):

- ``drift_coef(t)``   f(t)                     (each subclass);
- ``diffusion(t)``    g(t)                     (each subclass);
- ``marginal(t)``     (alpha_t, sigma_t)       (each subclass);
- ``prior_std``       the std of the base distribution pi = N(0, prior_std^2 I) at t = 1 (each subclass);
- ``prior_sample(n, d, seed)`` (n, d), ``prior_log_prob(theta)`` (n, d) -> (n,)   (from prior_std, here);
- ``config()``        the dict ``sde_from_config`` rebuilds it from (subclasses list their ``_params``).

VE (Song et al. 2021; Sharrock et al. 2024 App. E.3.1):
    sigma_t = s_min (s_max / s_min)^t, f = 0, g = sigma_t sqrt(2 log(s_max / s_min)), alpha = 1.
    (The paper prints (s_min/s_max)^t inside g: a typo.) Base N(0, s_max^2 I).
VP: beta(t) = b_min + t (b_max - b_min), f = -beta/2, g = sqrt(beta),
    alpha_t = exp(-t^2 (b_max - b_min)/4 - t b_min / 2), sigma_t = sqrt(1 - alpha_t^2). Base N(0, I).
sub-VP: same drift and alpha, g = sqrt(beta (1 - alpha_t^4)), sigma_t = 1 - alpha_t^2. Base N(0, I).

``t_min`` is the smallest training time (1e-4 in the paper's code); samplers stop there too.
Every parameter must be a finite real number (``beta_max=inf`` would train and sample NaN;
``sigma_min=nan`` would fail much later, in training).
"""
import abc
import inspect
import math

import numpy as np

from .checks import real
from .rng import as_generator

_LOG_2PI = math.log(2.0 * math.pi)


class SDE(abc.ABC):
    """A forward SDE d theta = f(t) theta dt + g(t) dw with N(alpha_t theta_0, sigma_t^2 I)
    transitions on t in [0, T = 1]; ``t_min`` the smallest time trained and sampled."""

    name = "sde"
    T = 1.0

    def __init__(self, t_min=1e-4):
        t_min = real(t_min, "t_min")
        if not 0.0 < t_min < 1.0:
            raise ValueError(f"t_min must lie in (0, 1), got {t_min}")
        self.t_min = t_min

    @abc.abstractmethod
    def drift_coef(self, t):
        """f(t): the drift is f(t) theta. Shape of t, float64."""

    @abc.abstractmethod
    def diffusion(self, t):
        """g(t). Shape of t, float64."""

    @abc.abstractmethod
    def marginal(self, t):
        """(alpha_t, sigma_t): p_{t|0}(theta_t | theta_0) = N(alpha_t theta_0, sigma_t^2 I).
        Each the shape of t, float64."""

    @property
    @abc.abstractmethod
    def prior_std(self):
        """The std of the base pi = N(0, prior_std^2 I) that sampling starts from at t = T (a float)."""

    def prior_sample(self, n, d, seed=None):
        """(n, d) draws from the base N(0, prior_std^2 I)."""
        return self.prior_std * as_generator(seed).standard_normal((n, d))

    def prior_log_prob(self, theta):
        """log N(theta; 0, prior_std^2 I) per row; theta: (n, d) -> (n,)."""
        theta = np.asarray(theta, dtype=np.float64)
        d = theta.shape[-1]
        s = self.prior_std
        return -0.5 * np.sum(theta * theta, axis=-1) / s ** 2 - d * math.log(s) - 0.5 * d * _LOG_2PI

    def config(self):
        return dict(name=self.name, t_min=self.t_min, **self._params())

    def _params(self):
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={'None' if v is None else format(v, 'g')}" for k, v in self._params().items())
        return f"{type(self).__name__}({args}, t_min={self.t_min:g})"


class VESDE(SDE):
    """Variance-exploding SDE; ``sigma_max`` None means: set from the data (``fit_sigma_max``)."""

    name = "ve"

    def __init__(self, sigma_min=0.01, sigma_max=None, t_min=1e-4):
        super().__init__(t_min)
        self.sigma_min = real(sigma_min, "sigma_min", above=0.0)
        self.sigma_max = None if sigma_max is None else real(sigma_max, "sigma_max")
        if self.sigma_max is not None and self.sigma_max <= self.sigma_min:
            raise ValueError(f"sigma_max must exceed sigma_min, got {self.sigma_max} <= {self.sigma_min}")

    def _check(self):
        if self.sigma_max is None:
            raise RuntimeError("VESDE.sigma_max is not set: pass it, or let NPSE fit it to the data")

    def marginal(self, t):
        self._check()
        sigma = self.sigma_min * (self.sigma_max / self.sigma_min) ** np.asarray(t, dtype=np.float64)
        return np.ones_like(sigma), sigma

    def drift_coef(self, t):
        return np.zeros_like(np.asarray(t, dtype=np.float64))

    def diffusion(self, t):
        _, sigma = self.marginal(t)
        return sigma * math.sqrt(2.0 * math.log(self.sigma_max / self.sigma_min))

    @property
    def prior_std(self):
        self._check()
        return self.sigma_max

    def _params(self):
        return dict(sigma_min=self.sigma_min, sigma_max=self.sigma_max)


class VPSDE(SDE):
    """Variance-preserving SDE (beta_min 0.1, beta_max 11 as the paper)."""

    name = "vp"

    def __init__(self, beta_min=0.1, beta_max=11.0, t_min=1e-4):
        super().__init__(t_min)
        beta_min, beta_max = real(beta_min, "beta_min"), real(beta_max, "beta_max")
        if not 0 <= beta_min < beta_max:
            raise ValueError(f"need 0 <= beta_min < beta_max, got {beta_min} and {beta_max}")
        self.beta_min, self.beta_max = beta_min, beta_max

    def beta(self, t):
        return self.beta_min + np.asarray(t, dtype=np.float64) * (self.beta_max - self.beta_min)

    def _alpha(self, t):
        t = np.asarray(t, dtype=np.float64)
        return np.exp(-0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min)

    def marginal(self, t):
        alpha = self._alpha(t)
        return alpha, np.sqrt(-np.expm1(2.0 * np.log(alpha)))

    def drift_coef(self, t):
        return -0.5 * self.beta(t)

    def diffusion(self, t):
        return np.sqrt(self.beta(t))

    prior_std = 1.0

    def _params(self):
        return dict(beta_min=self.beta_min, beta_max=self.beta_max)


class SubVPSDE(VPSDE):
    """sub-VP SDE (Song et al. 2021): VP drift, smaller diffusion, sigma_t = 1 - alpha_t^2."""

    name = "subvp"

    def marginal(self, t):
        alpha = self._alpha(t)
        return alpha, -np.expm1(2.0 * np.log(alpha))

    def diffusion(self, t):
        alpha = self._alpha(t)
        return np.sqrt(self.beta(t) * -np.expm1(4.0 * np.log(alpha)))


SDES = {"ve": VESDE, "vp": VPSDE, "subvp": SubVPSDE}


def make_sde(name, **kwargs):
    """An SDE by name ("ve", "vp", "subvp") with keyword parameters."""
    if isinstance(name, SDE):
        if kwargs:
            raise ValueError(f"SDE parameters {sorted(kwargs)} were given with an SDE instance {name!r}; "
                             f"set them on the instance")
        return name
    if not isinstance(name, str) or name not in SDES:
        raise ValueError(f"unknown sde {name!r}; choose from {tuple(SDES)}")
    return SDES[name](**kwargs)


def sde_from_config(cfg):
    """The SDE an ``SDE.config()`` dict describes; ValueError for unknown names or parameters."""
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    if not isinstance(name, str) or name not in SDES:
        raise ValueError(f"unknown sde {name!r}; choose from {tuple(SDES)}")
    unknown = set(cfg) - set(inspect.signature(SDES[name]).parameters)
    if unknown:
        raise ValueError(f"unknown parameters {sorted(unknown)} for the {name!r} sde")
    return make_sde(name, **cfg)


def max_pairwise_distance(a, block=2048):
    """max_{i,j} |a_i - a_j| for a (n, d), in blocks: O(block * n) memory, never n x n.

    Song & Ermon (2020) "Technique 1" for sigma_max of the VE SDE.
    """
    a = np.asarray(a, dtype=np.float64)
    sq = np.sum(a * a, axis=1)
    best = 0.0
    for i in range(0, a.shape[0], block):
        blk = a[i:i + block]
        d2 = sq[i:i + block, None] + sq[None, :] - 2.0 * (blk @ a.T)
        best = max(best, float(d2.max()))
    return math.sqrt(max(best, 0.0))
