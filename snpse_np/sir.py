"""SNPSE-A's posterior: a proposal posterior corrected by sampling-importance-resampling. EXPERIMENTAL.

A network trained with the plain loss on draws from the proposal p~ learns the proposal
posterior p~_psi(theta | x). The posterior is

    p_psi(theta | x) = p(theta) / p~(theta) * p~_psi(theta | x) / Z(x),   Z(x) = E_{p~_psi(theta | x)}[p / p~],

sampled by drawing M' from the network, weighting by h = p / p~ and resampling (Rubin 1988;
Sharrock et al. 2024, Sec. 3.2). The limits: ``snpse_ab``'s module docstring.
"""
import math

import numpy as np

from .logweights import log_mean_exp, log_weights_ess, resample
from .rng import as_generator


class SIRPosterior:
    """p_psi(theta | x) = p(theta) / p~(theta) * p~_psi(theta | x) / Z(x), sampled by SIR. EXPERIMENTAL.

    network: a ``ScorePosterior`` trained with the plain loss on draws from p~, so it estimates
    the proposal posterior p~_psi(theta | x). proposal: anything with ``log_prob(theta, seed=None)``
    (n, d) -> (n,) giving the NORMALISED log p~ (a ``ProposalMixture``). oversample: draws per
    returned sample, M' = oversample * n. sample_kwargs go to ``network.sample``.

    ``sample`` draws M' from the network, weights them by h = p / p~ and resamples n with
    replacement; it sets ``ess`` (Kish's effective sample size of those M' weights) and
    ``num_draws``. ``log_prob`` needs Z(x) = E_{p~_psi}[h]: estimated once per x from
    ``num_normalizer_samples`` draws and cached, or set from existing draws by
    ``set_log_normalizer`` (SNPSE-A does that with its SIR draws). The correction holds for any x
    (the network is amortised), but p~ is built around x_o, so it is accurate near x_o only.
    Sampling costs M' network samples plus the proposal's log-density at M' points.
    """

    experimental = True

    def __init__(self, network, proposal, oversample=10, num_normalizer_samples=10_000, sample_kwargs=None):
        if oversample < 1:
            raise ValueError(f"oversample must be >= 1, got {oversample}")
        self.network, self.proposal = network, proposal
        self.prior = network.prior
        self.oversample = float(oversample)
        self.num_normalizer_samples = int(num_normalizer_samples)
        self.sample_kwargs = dict(sample_kwargs or {})
        self._log_z = {}  # x.tobytes() -> log Z(x)
        self.ess, self.num_draws = None, None

    @property
    def dim_theta(self):
        return self.network.dim_theta

    @property
    def dim_x(self):
        return self.network.dim_x

    @property
    def default_x(self):
        return self.network.default_x

    def set_default_x(self, x):
        self.network.set_default_x(x)
        return self

    def check_x(self, x):
        return self.network.check_x(x)

    def log_weights(self, theta, seed=None):
        """log h = log p(theta) - log p~(theta) for theta (m, d) -> (m,); -inf outside the prior."""
        theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        out = np.full(theta.shape[0], -np.inf)
        inside = np.flatnonzero(self.prior.support_contains(theta))
        if inside.size:
            out[inside] = self.prior.log_prob(theta[inside]) - self.proposal.log_prob(theta[inside], seed=seed)
        return out

    def weighted_draws(self, m, x=None, seed=None, **sample_kwargs):
        """m draws from the network at x and their log SIR weights: ((m, d), (m,))."""
        x = self.check_x(x)
        rng = as_generator(seed)
        theta = self.network.sample(int(m), x=x, seed=rng, **{**self.sample_kwargs, **sample_kwargs})
        return theta, self.log_weights(theta, seed=rng)

    def sample(self, n, x=None, seed=None, oversample=None, **sample_kwargs):
        """(n, d) samples by sampling-importance-resampling from M' = oversample * n network draws."""
        if int(n) != n or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        rng = as_generator(seed)
        m = max(1, int(math.ceil((self.oversample if oversample is None else oversample) * n)))
        theta, log_w = self.weighted_draws(m, x=x, seed=rng, **sample_kwargs)
        self.ess, self.num_draws = log_weights_ess(log_w), m
        return resample(theta, log_w, int(n), rng)

    def set_log_normalizer(self, x, log_w):
        """Set Z(x) to the mean of the weights exp(log_w) (m,) of draws from the network at x."""
        x = self.check_x(x)
        self._log_z[x.tobytes()] = log_mean_exp(log_w)

    def log_normalizer(self, x=None, seed=None):
        """log Z(x), the Monte Carlo estimate (drawn on first use for this x, then cached)."""
        x = self.check_x(x)
        if x.tobytes() not in self._log_z:
            _, log_w = self.weighted_draws(self.num_normalizer_samples, x=x, seed=seed)
            self.set_log_normalizer(x, log_w)
        return self._log_z[x.tobytes()]

    def log_prob(self, theta, x=None, seed=None, **log_prob_kwargs):
        """log p_psi(theta | x) for theta (n, d) -> (n,); -inf outside the prior support.

        log_prob_kwargs go to the network's ``log_prob`` (the proposal uses its own settings).
        """
        theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        x = self.check_x(x)
        rng = as_generator(seed)
        out = self.network.log_prob(theta, x=x, seed=rng, **log_prob_kwargs)
        ok = np.flatnonzero(np.isfinite(out))
        if ok.size:
            out[ok] += self.log_weights(theta[ok], seed=rng) - self.log_normalizer(x, seed=rng)
        return out

    def __repr__(self):
        return f"SIRPosterior(network={self.network!r}, oversample={self.oversample:g}) [experimental]"
