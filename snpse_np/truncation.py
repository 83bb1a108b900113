"""The truncated prior of TSNPSE (Sharrock et al. 2024, Sec. 3.2; Deistler et al. 2022).

The highest-probability region of the current posterior estimate is

    HPR_eps = { theta : log q(theta | x_o) > kappa },  kappa = eps-quantile of log q(theta_i | x_o)

over ``num_samples`` posterior samples theta_i ~ q (log-densities by the probability-flow ODE).
The truncated prior is the prior restricted to that region,

    p~(theta) ∝ p(theta) 1[theta in HPR_eps],

sampled by drawing FROM THE PRIOR (the authors' code draws uniformly in a box, wrong for
Gaussian and log-normal priors), rejecting candidates outside the bounding box of the posterior
samples and outside their enclosing ellipsoid (cheap pre-filters, see below), then keeping those
with log q > kappa. For priors with independent dimensions (all of sbibm's but the
multivariate normals) the candidates are drawn from the prior restricted to the box directly
(``prior.sample_in_box``, exact): on Lotka-Volterra the region held 0.1% of the prior by round 3
and rejection from the whole prior took 714 s a round.

The pre-filters only skip log-densities that would fail anyway: the box is the range of the
samples inside the region (log q > kappa) widened by ``box_margin`` times that range; the
ellipsoid is { (theta - m)^T C^-1 (theta - m) <= (1 + box_margin)^2 max_i D_i^2 } with those
samples' mean m, covariance C and Mahalanobis distances D_i. Both are convex and hold every
sample in the region, so they hold those samples' convex hull. On Lotka-Volterra the box alone
passed 41-51% of prior draws, of which 1-6% were in the region; the ellipsoid cuts the
log-densities spent on rejected candidates. The ~eps n samples outside the region are left out:
they are the far tail, and one of them set the ellipsoid's radius for every candidate.

The log-densities are the cost (d forward-mode tangents per network evaluation). kappa only
depends on the lowest values, so a half-step screen ranks the samples and the full estimator
runs on the lowest 5%; candidates whose screen value is clearly on one side of kappa skip the
full estimator (both checked against the screen's observed error; ``TruncatedPrior._threshold``).

Candidates are processed in large vectorised batches. If the acceptance is too low to finish
within ``max_candidates`` candidates, sampling stops with an error that reports the acceptance
rate; it never returns fewer samples silently.
"""
import time

import numpy as np

from .checks import integer, real
from .rejection import RejectionError, draw_until
from .rng import as_generator
from .sampling import FIXED_STEP_METHODS


# A candidate's log-density is only compared with a quantile of the SAME estimator over posterior
# samples, so the region {f(theta) > kappa} holds 1 - eps of q's mass for any deterministic f; the
# estimator's accuracy only shapes the boundary. For the VE SDE, fixed-step RK4 (10 steps, 40
# network evaluations with the exact trace, one shared time per stage: the network's time row folds
# into a bias) is deterministic and, on the sbibm networks, 1.6-1.9x faster than the adaptive RK45 at
# rtol = atol = 1e-3 and as close or closer to the exact ODE value (error sd 0.011 vs 0.039 nats on
# slcp, 0.049 vs 0.095 on Lotka-Volterra, 0.013 both on GLU; benchmarks/bench_truncation.py). Its grid is
# uniform in t, geometric in sigma for VE; for the VP-type SDEs it is coarse near t_min, where a
# narrow posterior needs small steps (exact Gaussian score, posterior std 0.1: error sd 0.26 nats
# with VP against 0.01 with VE), so they keep the adaptive RK45.
LOG_PROB_DEFAULTS = {"ve": dict(method="rk4", steps=10)}
LOG_PROB_FALLBACK = dict(rtol=1e-3, atol=1e-3)


def default_log_prob_kwargs(sde):
    """The truncation's log-density settings for an SDE (see LOG_PROB_DEFAULTS); None (a
    posterior without an SDE) gets the adaptive fallback."""
    return dict(LOG_PROB_DEFAULTS.get(getattr(sde, "name", None), LOG_PROB_FALLBACK))


# The share of the HPR samples that get the full log-density after a half-step screen (see
# TruncatedPrior._threshold): with eps = 5e-4 and 20,000 samples kappa sits at the 11th value.
SCREEN_FRACTION = 0.05


class TruncationError(RuntimeError):
    """The truncated prior could not produce the requested number of samples."""


class TruncatedPrior:
    """prior restricted to the eps-HPR of ``posterior`` at observation ``x``.

    Quantities kept for the summary: ``threshold`` (kappa), ``box`` (low, high),
    ``acceptance`` (accepted / prior candidates of the last ``sample``), ``setup_seconds`` (HPR),
    ``seconds`` (rejection), ``hpr_full_evaluations`` (samples that needed the full log-density),
    ``screened_candidates`` (candidates decided by the half-step screen alone).
    """

    def __init__(self, prior, posterior, x=None, epsilon=5e-4, num_samples=20_000, seed=None,
                 batch_size=50_000, max_candidates=50_000_000, box_margin=0.05, log_prob_kwargs=None,
                 screen=True):
        """log_prob_kwargs go to ``posterior.log_prob`` for the samples and every candidate
        (default ``default_log_prob_kwargs(posterior.sde)``: VE fixed-step RK4 with 10 steps, the
        VP-type SDEs RK45 at rtol = atol = 1e-3; the exact trace either way); given, they
        replace the defaults whole (``dict(rtol=1e-4)`` means log_prob's adaptive RK45).
        screen: find kappa with a half-step screen first (see ``_threshold``; fixed-step only)."""
        epsilon = real(epsilon, "epsilon", at_least=0.0)
        if not epsilon < 1.0:
            raise ValueError(f"epsilon must lie in [0, 1), got {epsilon}")
        # the box and ellipsoid pre-filters need a covariance of the samples: at least d + 2
        num_samples = integer(num_samples, "num_samples", minimum=prior.dim + 2)
        batch_size = integer(batch_size, "batch_size", minimum=1)
        max_candidates = integer(max_candidates, "max_candidates", minimum=1)
        box_margin = real(box_margin, "box_margin", at_least=0.0)
        if log_prob_kwargs is not None and not isinstance(log_prob_kwargs, dict):
            raise ValueError(f"log_prob_kwargs must be a dict, got {type(log_prob_kwargs).__name__}")
        self.prior, self.posterior = prior, posterior
        self.x = posterior.check_x(x)
        self.epsilon, self.batch_size, self.max_candidates = float(epsilon), int(batch_size), int(max_candidates)
        self.log_prob_kwargs = (default_log_prob_kwargs(getattr(posterior, "sde", None)) if log_prob_kwargs is None
                                else dict(log_prob_kwargs))
        self.dim, self.screen = prior.dim, bool(screen)
        rng = as_generator(seed)
        t0 = time.perf_counter()
        samples = posterior.sample(num_samples, x=self.x, seed=rng, reject_outside_prior=True)
        self.threshold, self.hpr_full_evaluations, self.screen_error, logq = self._threshold(samples, rng)
        # the pre-filters are built from the samples inside the region: the ~eps n outside it are
        # the tail, and one far sample would widen the ellipsoid for every candidate
        inside = logq > self.threshold
        if inside.sum() > self.dim + 1:
            samples = samples[inside]
        span = samples.max(0) - samples.min(0)
        self.box = (np.maximum(samples.min(0) - box_margin * span, prior.low),
                    np.minimum(samples.max(0) + box_margin * span, prior.high))
        self.center = samples.mean(0)
        cov = np.atleast_2d(np.cov(samples, rowvar=False))
        cov += 1e-12 * np.trace(cov) * np.eye(self.dim)  # guard: samples on a lower-dim set
        self.precision = np.linalg.inv(cov)
        self.radius2 = (1.0 + box_margin) ** 2 * float(self._mahalanobis2(samples).max())
        self.low, self.high = prior.low, prior.high
        self.setup_seconds = time.perf_counter() - t0
        self.acceptance = None
        self.seconds = 0.0
        self.screened_candidates = 0  # decided by the screen alone

    def _threshold(self, samples, rng):
        """(kappa, number of full log-densities, screen error or None, log q (n,)): kappa is the
        eps-quantile of the estimator over the samples; log q is +inf where the screen showed it
        lies above kappa without the full estimator.

        Only the lowest ~eps n values decide kappa. With a fixed-step estimator a screen at half
        the steps (half the cost) ranks the samples, and the full estimator runs on the lowest
        ``SCREEN_FRACTION`` of them. kappa is kept when every other sample's screen value, less
        twice the largest screen error seen on the evaluated ones, lies above it; otherwise the
        rest are evaluated too, and kappa is the unscreened one. The screen error (None when the
        screen did not hold) lets ``region_contains`` decide clear candidates by the screen alone.
        """
        post, kw = self.posterior, self.log_prob_kwargs
        n = samples.shape[0]
        k = int(np.ceil(self.epsilon * n)) + 1  # np.quantile interpolates between order statistics k-1 and k
        m = max(int(SCREEN_FRACTION * n), 4 * k)
        fixed_step = kw.get("method") in FIXED_STEP_METHODS and kw.get("steps", 0) >= 4
        if not (self.screen and fixed_step) or m >= n:
            logq = post.log_prob(samples, x=self.x, seed=rng, **kw)
            return float(np.quantile(logq[np.isfinite(logq)], self.epsilon)), n, None, logq
        screen = post.log_prob(samples, x=self.x, seed=rng, **self._screen_kwargs())
        order = np.argsort(screen)  # -inf (outside the support) first, NaN last
        low, rest = order[:m], order[m:]
        logq = np.full(n, np.inf)
        logq[low] = post.log_prob(samples[low], x=self.x, seed=rng, **kw)
        seen = np.isfinite(logq[low]) & np.isfinite(screen[low])
        err = float(np.max(np.abs(logq[low][seen] - screen[low][seen]))) if seen.any() else np.inf
        finite = ~np.isnan(screen) & (logq > -np.inf)
        kappa = float(np.quantile(logq[finite], self.epsilon))
        if np.isfinite(kappa) and np.all(screen[rest][~np.isnan(screen[rest])] - 2.0 * err > kappa):
            return kappa, m, err, logq
        logq[rest] = post.log_prob(samples[rest], x=self.x, seed=rng, **kw)
        return float(np.quantile(logq[np.isfinite(logq)], self.epsilon)), n, None, logq

    def _screen_kwargs(self):
        return dict(self.log_prob_kwargs, steps=self.log_prob_kwargs["steps"] // 2)

    def _above_threshold(self, theta):
        """Boolean (n,): log q > kappa by the full estimator. With a screen error e from kappa's
        screen, candidates whose screen value lies more than 2e from kappa are decided by the
        screen alone (the same margin that certified kappa); the rest get the full estimator.
        The screen stops once most candidates need both (it would cost more than it saves)."""
        post, kappa = self.posterior, self.threshold
        if self.screen_error is None:
            return post.log_prob(theta, x=self.x, **self.log_prob_kwargs) > kappa
        screen = post.log_prob(theta, x=self.x, **self._screen_kwargs())
        margin = 2.0 * self.screen_error
        out = screen > kappa + margin
        unsure = np.flatnonzero(~out & ~(screen < kappa - margin))  # NaN included
        if unsure.size:
            out[unsure] = post.log_prob(theta[unsure], x=self.x, **self.log_prob_kwargs) > kappa
        if unsure.size > 0.5 * theta.shape[0]:
            self.screen_error = None
        self.screened_candidates += theta.shape[0] - unsure.size
        return out

    def _mahalanobis2(self, theta):
        diff = theta - self.center
        return np.einsum("ij,jk,ik->i", diff, self.precision, diff)

    def region_contains(self, theta):
        """Boolean (n,): inside the pre-filters (box, ellipsoid) and above the log-density threshold."""
        theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        inside = np.all((theta >= self.box[0]) & (theta <= self.box[1]), axis=1) & self.prior.support_contains(theta)
        inside[inside] = self._mahalanobis2(theta[inside]) <= self.radius2
        out = np.zeros(theta.shape[0], dtype=bool)
        idx = np.flatnonzero(inside)
        if idx.size:
            out[idx] = self._above_threshold(theta[idx])
        return out

    def support_contains(self, theta):
        return self.region_contains(theta)

    def sample(self, n, seed=None):
        """(n, d) draws from the prior restricted to the region (rejection sampling).

        Candidates come from the prior restricted to the bounding box when the prior has
        independent dimensions (``prior.sample_in_box``: exact, and the box's prior mass is
        known), else from the prior itself. ``acceptance`` is the region's share of the prior:
        accepted / candidates, times the box's prior mass for box draws.
        """
        n = integer(n, "n", minimum=0)
        rng = as_generator(seed)
        if n == 0:
            return np.empty((0, self.dim))
        t0 = time.perf_counter()
        in_box = getattr(self.prior, "independent", False)
        seen = dict(box_mass=1.0, candidates=0, inside=0)

        def draw(m):
            if in_box:
                cand, log_mass = self.prior.sample_in_box(m, *self.box, seed=rng)
                seen["box_mass"] = float(np.exp(log_mass))
                return cand
            return self.prior.sample(m, seed=rng)

        def accept(cand):
            ok = self.region_contains(cand)
            seen["candidates"] += cand.shape[0]
            seen["inside"] += int(ok.sum())
            return ok

        # batches sized by the acceptance seen so far (at least 256, at most batch_size), so a
        # wide region does not push batch_size candidates through the (costly) log-density
        try:
            out = draw_until(n, self.dim, draw, accept, max_rounds=None, min_batch=256, max_batch=self.batch_size,
                             max_candidates=self.max_candidates, what="inside the truncated region")
        except RejectionError:
            rate = seen["inside"] / max(seen["candidates"], 1) * seen["box_mass"]
            source = (f"draws from the prior in the box (prior mass {seen['box_mass']:.2e})" if in_box
                      else "prior draws")
            raise TruncationError(
                f"truncated prior: only {seen['inside']} of {n} samples after {seen['candidates']} {source} "
                f"(acceptance rate {rate:.2e}); the HPR is too small to sample by rejection. "
                f"Raise epsilon (now {self.epsilon}) or max_candidates (now {self.max_candidates}).") from None
        self.acceptance = seen["inside"] / seen["candidates"] * seen["box_mass"]
        self.seconds = time.perf_counter() - t0
        return out

    def log_prob(self, theta):
        """Unnormalised: the prior's log-density inside the region, -inf outside."""
        theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        return np.where(self.region_contains(theta), self.prior.log_prob(theta), -np.inf)
