"""TSNPSE: the truncated prior, a two-round run against an analytic posterior, resuming a killed
run, and the error for a too-low acceptance rate."""
import numpy as np
import pytest

import snpse_np as sn
from snpse_np.metrics import c2st
from snpse_np.truncation import TruncatedPrior, TruncationError


class GaussianPosterior:
    """A stand-in posterior with exact sample / log_prob: N(mean, s^2 I)."""

    def __init__(self, mean, s):
        self.mean, self.s = np.asarray(mean, float), float(s)
        self.calls = 0

    def _check_x(self, x):
        return np.zeros(1)

    def sample(self, n, x=None, seed=None, reject_outside_prior=False):
        return self.mean + self.s * np.random.default_rng(seed).standard_normal((n, self.mean.size))

    def log_prob(self, theta, x=None, seed=None, **kw):
        self.calls += 1
        d = self.mean.size
        return -0.5 * np.sum((theta - self.mean) ** 2, 1) / self.s ** 2 - d * np.log(self.s) - 0.5 * d * np.log(2 * np.pi)


def test_truncated_prior_is_the_prior_restricted_to_the_region():
    prior = sn.Normal([0.0, 0.0], [1.0, 1.0])
    post = GaussianPosterior([0.8, -0.3], 0.3)
    tp = TruncatedPrior(prior, post, epsilon=1e-3, num_samples=20000, seed=0)
    # the region is the ball |theta - m| < r with exp(-r^2 / 2 s^2) at the 1e-3 quantile of a chi2(2)
    r_theory = 0.3 * np.sqrt(-2 * np.log(1e-3))
    # the radius the estimated threshold kappa implies (kappa is an empirical quantile: noisy)
    r = np.sqrt(-2 * 0.3 ** 2 * (tp.threshold + 2 * np.log(0.3) + np.log(2 * np.pi)))
    assert abs(r / r_theory - 1) < 0.05
    s = tp.sample(20000, seed=1)
    dist = np.linalg.norm(s - post.mean, axis=1)
    assert dist.max() <= r and dist.max() > 0.97 * r
    # brute force: prior draws inside the ball; same distribution (the prior tilts it toward 0)
    cand = prior.sample(400000, seed=2)
    ref = cand[np.linalg.norm(cand - post.mean, axis=1) < r][:20000]
    assert np.allclose(s.mean(0), ref.mean(0), atol=0.015)
    assert np.allclose(s.std(0), ref.std(0), rtol=0.03)
    # and not uniform in the ball: the mean is pulled toward the prior mode
    assert np.linalg.norm(s.mean(0)) < np.linalg.norm(post.mean) - 0.05
    assert 0 < tp.acceptance < 1


def test_too_low_acceptance_raises_with_the_rate():
    # dependent prior dimensions: candidates from the whole prior, a region of ~1e-9 of its mass
    prior = sn.MultivariateNormal(np.zeros(3), 100.0 * np.eye(3))
    post = GaussianPosterior([0.0, 0.0, 0.0], 0.01)
    tp = TruncatedPrior(prior, post, epsilon=1e-3, num_samples=2000, seed=0, box_margin=0.0,
                        max_candidates=20000, batch_size=5000)
    with pytest.raises(TruncationError, match="acceptance rate"):
        tp.sample(1000, seed=1)
    # independent dimensions: candidates from the prior in the box; a cap below n must raise too
    prior = sn.BoxUniform(-10 * np.ones(3), 10 * np.ones(3))
    tp = TruncatedPrior(prior, post, epsilon=1e-3, num_samples=2000, seed=0, max_candidates=500)
    with pytest.raises(TruncationError, match=r"acceptance rate .* prior mass|prior mass .*acceptance rate"):
        tp.sample(1000, seed=1)


def test_box_draws_give_the_prior_restricted_to_the_region_and_its_mass():
    """LogNormal prior (independent): candidates from the prior in the box; the samples match
    brute-force rejection from the whole prior, and the acceptance is the region's prior mass."""
    prior = sn.LogNormal([0.0, -1.0], [0.5, 0.5])
    post = GaussianPosterior([1.2, 0.3], 0.05)
    tp = TruncatedPrior(prior, post, epsilon=1e-3, num_samples=20000, seed=0)
    s = tp.sample(20000, seed=1)
    r = np.sqrt(-2 * 0.05 ** 2 * (tp.threshold + 2 * np.log(0.05) + np.log(2 * np.pi)))
    cand = prior.sample(4_000_000, seed=2)
    inside = np.linalg.norm(cand - post.mean, axis=1) < r
    ref = cand[inside]
    assert np.linalg.norm(s - post.mean, axis=1).max() <= r
    assert np.allclose(s.mean(0), ref.mean(0), atol=0.004)
    assert np.allclose(s.std(0), ref.std(0), rtol=0.03)
    assert abs(tp.acceptance / inside.mean() - 1) < 0.05


# ------------------------------------------------------------------ TSNPSE end to end

NOISE = 0.1
X_O = np.array([0.7, -0.4])


def simulator(theta, seed=None):
    return theta + np.sqrt(NOISE) * np.random.default_rng(seed).standard_normal(theta.shape)


FAST = dict(max_epochs=80, patience=20)


def test_two_rounds_recover_the_analytic_posterior():
    prior = sn.Normal(np.zeros(2), np.ones(2))
    run = sn.TSNPSE(prior, simulator, X_O, seed=0, show_progress=False, train_kwargs=FAST)
    posterior = run.run(num_simulations=2000, num_rounds=2, num_hpr_samples=4000,
                        log_prob_kwargs=dict(method="rk4", steps=20))
    var = 1 / (1 + 1 / NOISE)
    mean = var * X_O / NOISE
    samples = posterior.sample(3000, seed=1)
    ref = mean + np.sqrt(var) * np.random.default_rng(2).standard_normal((3000, 2))
    assert c2st(ref, samples, classifier="fast") < 0.6
    assert len(run.rounds) == 2 and run.rounds[1]["acceptance"] < 0.5  # the second round truncated
    assert run.rounds[1]["total_simulations"] == 2000


class Interrupt(Exception):
    pass


class CountingSimulator:
    """Raises after ``fail_after`` rows have been simulated (a killed run), counts rows."""

    def __init__(self, fail_after=None):
        self.rows, self.fail_after = 0, fail_after

    def __call__(self, theta, seed=None):
        if self.fail_after is not None and self.rows + len(theta) > self.fail_after:
            raise KeyboardInterrupt  # not retried, not swallowed: like a kill
        self.rows += len(theta)
        return simulator(theta, seed)


def test_killed_run_resumes_without_resimulating(tmp_path):
    prior = sn.Normal(np.zeros(2), np.ones(2))
    kw = dict(num_simulations=600, num_rounds=3, num_hpr_samples=1000, log_prob_kwargs=dict(method="rk4", steps=8))
    tk = dict(max_epochs=5)
    sim = CountingSimulator(fail_after=300)  # dies in round 2
    with pytest.raises(KeyboardInterrupt):
        sn.TSNPSE(prior, sim, X_O, seed=0, workdir=tmp_path, show_progress=False, train_kwargs=tk).run(**kw)
    done_before = sim.rows
    assert done_before >= 200
    sim2 = CountingSimulator()
    run = sn.TSNPSE(prior, sim2, X_O, seed=0, workdir=tmp_path, show_progress=False, train_kwargs=tk)
    run.run(**kw)
    assert sim2.rows <= 600 - 200  # round 1 (and finished chunks of round 2) were not simulated again
    assert sum(r["simulations"] for r in run.rounds) == 600
    assert run.rounds[-1]["total_simulations"] == 600
    with pytest.raises(ValueError, match="other settings"):
        sn.TSNPSE(prior, sim2, X_O, seed=1, workdir=tmp_path, show_progress=False).run(**kw)


def test_simulator_failures_are_counted_not_raised():
    prior = sn.Normal(np.zeros(2), np.ones(2))

    def flaky(theta, seed=None):
        x = simulator(theta, seed)
        x[theta[:, 0] > 1.0] = np.nan
        return x

    run = sn.TSNPSE(prior, flaky, X_O, seed=0, show_progress=False, train_kwargs=dict(max_epochs=2))
    run.run(num_simulations=400, num_rounds=1)
    assert run.rounds[0]["failed_simulations"] > 0


class StepErrorPosterior(GaussianPosterior):
    """A fixed-step estimator stand-in: the exact Gaussian log-density plus a deterministic
    error scale * sin(7 theta_0) / steps^4 (RK4-like), so a half-step screen ranks with error."""

    def __init__(self, mean, s, scale):
        super().__init__(mean, s)
        self.scale = scale

    def log_prob(self, theta, x=None, seed=None, method="rk45", steps=100, **kw):
        exact = super().log_prob(theta)
        return exact + self.scale * np.sin(7 * theta[:, 0]) / steps ** 4


@pytest.mark.parametrize("scale,screened", [(10.0, True), (4000.0, False)])
def test_threshold_screen_gives_the_unscreened_quantile(scale, screened):
    """kappa from the half-step screen + full log-densities on the lowest 5% equals the quantile of
    the full estimator over all samples; a screen too coarse to trust falls back to all of them."""
    from snpse_np.truncation import SCREEN_FRACTION
    prior = sn.Normal([0.0, 0.0], [1.0, 1.0])
    kw = dict(method="rk4", steps=10)
    post = StepErrorPosterior([0.8, -0.3], 0.3, scale)
    tp = TruncatedPrior(prior, post, epsilon=5e-4, num_samples=20000, seed=0, log_prob_kwargs=kw)
    samples = post.sample(20000, seed=np.random.default_rng(0))
    full = post.log_prob(samples, **kw)
    assert tp.threshold == pytest.approx(np.quantile(full, 5e-4), abs=1e-12)
    if screened:
        assert tp.hpr_full_evaluations == int(SCREEN_FRACTION * 20000)
        # candidates: the screen decides the clear ones, with the full estimator's answers
        cand = post.mean + 0.6 * np.random.default_rng(3).standard_normal((5000, 2))
        assert np.array_equal(tp._above_threshold(cand), post.log_prob(cand, **kw) > tp.threshold)
        assert tp.screened_candidates > 2500
        s = tp.sample(2000, seed=1)
        assert np.all(post.log_prob(s, **kw) > tp.threshold)
    else:  # screen errors of ~6 nats misrank the tail: everything is evaluated
        assert tp.hpr_full_evaluations == 20000
        assert tp.screen_error is None


class TailPosterior(GaussianPosterior):
    """N(mean, s^2 I) samples of which 5 are moved 20 s away (far tail, log q below kappa)."""

    def sample(self, n, x=None, seed=None, reject_outside_prior=False):
        out = super().sample(n, x, seed, reject_outside_prior)
        out[:5] = self.mean + 20 * self.s
        return out


def test_prefilters_come_from_the_samples_inside_the_region():
    prior = sn.Normal([0.0, 0.0], [10.0, 10.0])
    clean = TruncatedPrior(prior, GaussianPosterior([0.8, -0.3], 0.3), epsilon=5e-4, num_samples=20000, seed=0)
    tail = TruncatedPrior(prior, TailPosterior([0.8, -0.3], 0.3), epsilon=5e-4, num_samples=20000, seed=0)
    # the 5 far samples lie below kappa: the box and the ellipsoid ignore them
    assert tail.radius2 < 1.2 * clean.radius2
    assert np.all(tail.box[1] < 0.8 + 10 * 0.3)
    s = tail.sample(5000, seed=1)
    assert np.linalg.norm(s - [0.8, -0.3], axis=1).max() < 5 * 0.3
