"""The truncated prior of TSNPSE (Sharrock et al. 2024, Sec. 3.2; Deistler et al. 2022).

The highest-probability region of the current posterior estimate is

    HPR_eps = { theta : log q(theta | x_o) > kappa },  kappa = eps-quantile of log q(theta_i | x_o)

over ``num_samples`` posterior samples theta_i ~ q (log-densities by the probability-flow ODE).
The truncated prior is the prior restricted to that region,

    p~(theta) ∝ p(theta) 1[theta in HPR_eps],

sampled by drawing FROM THE PRIOR (the authors' code draws uniformly in a box, wrong for
Gaussian and log-normal priors), rejecting candidates outside the bounding box of the posterior
samples (a cheap pre-filter, widened by ``box_margin`` times the samples' range), then keeping
those with log q > kappa. Candidates are processed in large vectorised batches. If the
acceptance is too low to finish within ``max_candidates`` prior draws, sampling stops with an
error that reports the acceptance rate; it never returns fewer samples silently.
"""
import time

import numpy as np

from .rng import as_generator


class TruncationError(RuntimeError):
    """The truncated prior could not produce the requested number of samples."""


class TruncatedPrior:
    """prior restricted to the eps-HPR of ``posterior`` at observation ``x``.

    Quantities kept for the summary: ``threshold`` (kappa), ``box`` (low, high),
    ``acceptance`` (accepted / prior candidates of the last ``sample``), ``seconds``.
    """

    def __init__(self, prior, posterior, x=None, epsilon=5e-4, num_samples=20_000, seed=None,
                 batch_size=50_000, max_candidates=50_000_000, box_margin=0.05, log_prob_kwargs=None):
        if not 0.0 <= epsilon < 1.0:
            raise ValueError(f"epsilon must lie in [0, 1), got {epsilon}")
        self.prior, self.posterior = prior, posterior
        self.x = posterior._check_x(x)
        self.epsilon, self.batch_size, self.max_candidates = float(epsilon), int(batch_size), int(max_candidates)
        self.log_prob_kwargs = dict(log_prob_kwargs or {})
        self.dim = prior.dim
        rng = as_generator(seed)
        t0 = time.perf_counter()
        samples = posterior.sample(num_samples, x=self.x, seed=rng, reject_outside_prior=True)
        logq = posterior.log_prob(samples, x=self.x, seed=rng, **self.log_prob_kwargs)
        finite = np.isfinite(logq)
        self.threshold = float(np.quantile(logq[finite], self.epsilon))
        span = samples.max(0) - samples.min(0)
        self.box = (np.maximum(samples.min(0) - box_margin * span, prior.low),
                    np.minimum(samples.max(0) + box_margin * span, prior.high))
        self.low, self.high = prior.low, prior.high
        self.setup_seconds = time.perf_counter() - t0
        self.acceptance = None
        self.seconds = 0.0
        self.n_log_prob = samples.shape[0]

    def region_contains(self, theta):
        """Boolean (n,): inside the bounding box and above the log-density threshold."""
        theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        inside = np.all((theta >= self.box[0]) & (theta <= self.box[1]), axis=1) & self.prior.support_contains(theta)
        out = np.zeros(theta.shape[0], dtype=bool)
        idx = np.flatnonzero(inside)
        if idx.size:
            out[idx] = self.posterior.log_prob(theta[idx], x=self.x, **self.log_prob_kwargs) > self.threshold
        return out

    def support_contains(self, theta):
        return self.region_contains(theta)

    def sample(self, n, seed=None):
        """(n, d) draws from the prior restricted to the region (rejection from the prior)."""
        rng = as_generator(seed)
        t0 = time.perf_counter()
        kept, have, drawn = [], 0, 0
        while have < n:
            if drawn >= self.max_candidates:
                rate = have / max(drawn, 1)
                raise TruncationError(
                    f"truncated prior: only {have} of {n} samples after {drawn} prior draws "
                    f"(acceptance rate {rate:.2e}); the HPR is too small to sample by rejection. "
                    f"Raise epsilon (now {self.epsilon}) or max_candidates (now {self.max_candidates}).")
            # size the batch by the acceptance seen so far, so a wide region does not push
            # batch_size candidates through the (costly) log-density for a few samples
            rate = have / drawn if drawn else None
            want = (n - have) * 1.2 / max(rate, 1e-4) if rate else 2 * (n - have)
            m = int(min(self.batch_size, self.max_candidates - drawn, max(want, 256)))
            cand = self.prior.sample(m, seed=rng)
            drawn += m
            ok = self.region_contains(cand)
            kept.append(cand[ok])
            have += int(ok.sum())
        self.acceptance = have / drawn
        self.seconds = time.perf_counter() - t0
        return np.concatenate(kept)[:n]

    def log_prob(self, theta):
        """Unnormalised: the prior's log-density inside the region, -inf outside."""
        theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        return np.where(self.region_contains(theta), self.prior.log_prob(theta), -np.inf)
