"""TSNPSE: the truncated prior, a two-round run against an analytic posterior, resuming a killed
run, and the error for a too-low acceptance rate."""
import json
import os

import numpy as np
import pytest

import snpse_np as sn
from snpse_np.metrics import c2st
from snpse_np.rounds import RoundDriver, split_budget
from snpse_np.truncation import TruncatedPrior, TruncationError


class GaussianPosterior:
    """A stand-in posterior with exact sample / log_prob: N(mean, s^2 I)."""

    def __init__(self, mean, s):
        self.mean, self.s = np.asarray(mean, float), float(s)
        self.calls = 0

    def check_x(self, x):
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


FAST = dict(max_steps=3000)  # the default schedule annealed over 3,000 steps


@pytest.mark.parametrize("sde", ["ve", "vp"])  # TSNPSE-VE and TSNPSE-VP (issue 15)
def test_two_rounds_recover_the_analytic_posterior(sde):
    prior = sn.Normal(np.zeros(2), np.ones(2))
    run = sn.TSNPSE(prior, simulator, X_O, sde=sde, seed=0, show_progress=False, train_kwargs=FAST)
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


# ------------------------------------------------------------------ issue 12: exact resumes, settings, checks

KILL_SCRIPT = '''
import os, signal, sys
import numpy as np
import snpse_np as sn

workdir, out, kill_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = 0

def simulator(theta, seed=None):
    global rows
    if kill_after >= 0 and rows >= kill_after:
        os.kill(os.getpid(), signal.SIGKILL)      # a real kill: nothing runs after it
    rows += len(theta)
    return theta + 0.3 * np.random.default_rng(seed).standard_normal(theta.shape)

run = sn.TSNPSE(sn.Normal(np.zeros(2), np.ones(2)), simulator, [0.7, -0.4], seed=3, backend="numpy",
                workdir=workdir, show_progress=False, hidden=16,
                train_kwargs=dict(max_epochs=3, min_steps_per_epoch=10))
post = run.run(num_simulations=600, num_rounds=3, num_hpr_samples=400,
               log_prob_kwargs=dict(method="rk4", steps=4))
np.savez(out, params=post.params, samples=post.sample(300, seed=1, method="rk4", steps=10),
         sigma_max=post.sde.sigma_max, rows=rows)
'''


def _tsnpse_process(script, workdir, out, kill_after):
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(sn.__file__)))  # the package under test
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, str(script), str(workdir), str(out), str(kill_after)],
                          capture_output=True, text=True, timeout=600, env=env)


# rows simulated before the kill: 1 probe row, round 1 is 200 rows; chunks are 100-row seed blocks
@pytest.mark.parametrize("kill_after,what", [(201, "after round 1"), (301, "during round 2")])
def test_killed_tsnpse_resumes_bit_for_bit(tmp_path, kill_after, what):
    """A run SIGKILLed at a chosen point and resumed gives the uninterrupted run's weights and
    samples bit for bit: the VE sigma_max fitted in round 1 is restored, not refitted to the
    pooled rounds (it once moved 4.66 -> 4.77 and samples by up to 0.2)."""
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    full = _tsnpse_process(script, tmp_path / "full", tmp_path / "full.npz", -1)
    assert full.returncode == 0, full.stderr[-2000:]
    killed = _tsnpse_process(script, tmp_path / "work", tmp_path / "never.npz", kill_after)
    assert killed.returncode == -9 and not (tmp_path / "never.npz").exists(), what
    assert (tmp_path / "work" / "round_00" / "posterior.npz").exists()
    resumed = _tsnpse_process(script, tmp_path / "work", tmp_path / "resumed.npz", -1)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    with np.load(tmp_path / "full.npz") as a, np.load(tmp_path / "resumed.npz") as b:
        assert float(a["sigma_max"]) == float(b["sigma_max"])
        np.testing.assert_array_equal(a["params"], b["params"])
        np.testing.assert_array_equal(a["samples"], b["samples"])
        assert int(b["rows"]) == 600 - (kill_after - 1)  # nothing done before the kill is redone


TINY = dict(train_kwargs=dict(max_epochs=2, min_steps_per_epoch=10), hidden=16, backend="numpy",
            show_progress=False)
TINY_RUN = dict(num_simulations=200, num_rounds=1)


class RowCounter:
    def __init__(self):
        self.rows = 0

    def __call__(self, theta, seed=None):
        self.rows += len(theta)
        return simulator(theta, seed)


def test_resume_false_in_a_used_workdir_refuses_then_starts_clean(tmp_path):
    prior = sn.Normal(np.zeros(2), np.ones(2))
    sn.TSNPSE(prior, simulator, X_O, seed=0, workdir=tmp_path, **TINY).run(**TINY_RUN)
    (tmp_path / "notes.txt").write_text("mine")

    def shifted(theta, seed=None):  # another simulator: its chunks must not be the old ones
        return simulator(theta, seed) + 5.0

    run = sn.TSNPSE(prior, shifted, X_O, seed=0, workdir=tmp_path, **TINY)
    with pytest.raises(ValueError, match="overwrite=True"):
        run.run(resume=False, **TINY_RUN)
    run.run(resume=False, overwrite=True, **TINY_RUN)
    with np.load(tmp_path / "round_00" / "simulations.npz") as f:
        assert np.all(np.abs(f["x"] - f["theta"] - 5.0) < 2.0)  # simulated again, by `shifted`
    assert (tmp_path / "notes.txt").read_text() == "mine"  # only the run's own files went


@pytest.mark.parametrize("change,differs", [
    (dict(train_kwargs=dict(max_epochs=3, min_steps_per_epoch=10)), "train_kwargs"),
    (dict(hidden=32), "npse_kwargs"),
    (dict(backend="numba"), "backend"),
    (dict(sde="vp"), "sde"),
])
def test_resume_refuses_other_train_npse_kwargs_backend_or_sde(tmp_path, change, differs):
    prior = sn.Normal(np.zeros(2), np.ones(2))
    sn.TSNPSE(prior, simulator, X_O, seed=0, workdir=tmp_path, **TINY).run(**TINY_RUN)
    kwargs = dict(TINY, **change)
    sim = RowCounter()
    with pytest.raises(ValueError, match=f"other settings \\({differs} differ"):
        sn.TSNPSE(prior, sim, X_O, seed=0, workdir=tmp_path, **kwargs).run(**TINY_RUN)
    assert sim.rows == 0
    # the same settings resume: nothing simulated again
    sn.TSNPSE(prior, sim, X_O, seed=0, workdir=tmp_path, **TINY).run(**TINY_RUN)
    assert sim.rows == 0


def test_vesde_instance_runs_and_is_not_changed(tmp_path):
    from snpse_np.sde import VESDE
    sde = VESDE(sigma_min=0.02)
    run = sn.TSNPSE(sn.Normal(np.zeros(2), np.ones(2)), simulator, X_O, sde=sde, seed=0, workdir=tmp_path, **TINY)
    post = run.run(**TINY_RUN)
    assert sde.sigma_max is None and post.sde.sigma_max > 0.02  # fitted on a copy
    # the same instance resumes the run (its recorded settings did not change under it)
    sim = RowCounter()
    sn.TSNPSE(sn.Normal(np.zeros(2), np.ones(2)), sim, X_O, sde=sde, seed=0, workdir=tmp_path, **TINY).run(**TINY_RUN)
    assert sim.rows == 0


def test_x_o_is_checked_before_round_one_simulates():
    prior = sn.Normal(np.zeros(2), np.ones(2))
    sim = RowCounter()
    with pytest.raises(ValueError, match="x_o contains NaN"):
        sn.TSNPSE(prior, sim, [0.1, np.nan], **TINY)
    with pytest.raises(ValueError, match="x_o has 3 entries, but the simulator returns x with 2 columns"):
        sn.TSNPSE(prior, sim, [0.1, 0.2, 0.3], **TINY).run(**TINY_RUN)
    assert sim.rows == 1  # one probe row, not round 1's 200


def test_rows_that_raise_are_counted_like_nan_rows():
    """~2% of rows raise: in process without a workdir everything is one chunk, which once made
    the whole run die ("all 1 chunks failed")."""
    prior = sn.Normal(np.zeros(2), np.ones(2))

    def raising(theta, seed=None):
        if np.any(theta[:, 0] > 2.0):
            raise RuntimeError("diverged")
        return simulator(theta, seed)

    run = sn.TSNPSE(prior, raising, X_O, seed=0, **TINY)
    with pytest.warns(RuntimeWarning, match="rows NaN"):
        run.run(num_simulations=400, num_rounds=1)
    expected = int(np.sum(prior.sample(400, seed=sn_child(0, 0, 2))[:, 0] > 2.0))
    assert run.rounds[0]["failed_simulations"] == expected > 0
    assert "diverged" in run.rounds[0]["simulator_errors"]


def sn_child(*keys):
    from snpse_np.rng import child_seed
    return child_seed(*keys)


class ShiftedBox(sn.BoxUniform):
    """A custom prior (a subclass: not stored in the posterior file)."""


def test_custom_prior_run_resumes(tmp_path):
    prior = ShiftedBox(-2 * np.ones(2), 2 * np.ones(2))
    kw = dict(num_simulations=300, num_rounds=2, num_hpr_samples=300, log_prob_kwargs=dict(method="rk4", steps=4))
    sim = CountingSimulator(fail_after=160)  # dies in round 2
    with pytest.warns(UserWarning, match="load"), pytest.raises(KeyboardInterrupt):
        sn.TSNPSE(prior, sim, X_O, seed=0, workdir=tmp_path, **TINY).run(**kw)
    with pytest.warns(UserWarning, match="prior="):
        post = sn.TSNPSE(prior, CountingSimulator(), X_O, seed=0, workdir=tmp_path, **TINY).run(**kw)
    assert post.prior is prior
    with pytest.raises(ValueError, match="prior="):
        sn.load(tmp_path / "round_01" / "posterior.npz")
    assert sn.load(tmp_path / "round_01" / "posterior.npz", prior=prior).prior is prior


def test_every_round_fits_the_gaussian_on_the_prior_rounds_rows(monkeypatch, tmp_path):
    """Rounds after the first draw a truncated prior, whose rows would shrink the linear-Gaussian fit's
    variance (tests/test_linear_gaussian.py): every round's training gets ``fit_rows`` = the prior
    round's pooled rows (its NaN rows dropped), also when round 1 was loaded from a workdir."""
    calls = []
    train = sn.NPSE.train

    def spy(self, **kw):
        calls.append(kw.get("fit_rows"))
        return train(self, **kw)

    monkeypatch.setattr(sn.NPSE, "train", spy)

    def sometimes_nan(theta, seed=None):
        x = simulator(theta, seed)
        x[:7] = np.nan  # 7 failed rows a call
        return x

    kw = dict(num_simulations=300, num_rounds=3, num_hpr_samples=300, log_prob_kwargs=dict(method="rk4", steps=4))
    prior = sn.Normal(np.zeros(2), np.ones(2))
    run = sn.TSNPSE(prior, sometimes_nan, X_O, seed=0, workdir=tmp_path, **TINY)
    run.run(**kw)
    prior_rows = 100 - run.rounds[0]["failed_simulations"]
    assert prior_rows < 100 and calls == [prior_rows] * 3
    calls.clear()
    (tmp_path / "round_02" / "posterior.npz").unlink()  # as if killed before round 3 was saved
    state = tmp_path / "state.json"
    st = json.loads(state.read_text())
    st["rounds"] = st["rounds"][:2]
    state.write_text(json.dumps(st))
    sn.TSNPSE(prior, sometimes_nan, X_O, seed=0, workdir=tmp_path, **TINY).run(**kw)
    assert calls == [prior_rows]  # rounds 1-2 loaded, round 3 trained with the loaded round 1's count


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_rounds=2.5), "num_rounds must be an int"),
    (dict(num_rounds=0), "num_rounds must be an int >= 1"),
    (dict(num_simulations=3, num_rounds=4), "num_simulations >= num_rounds"),
    (dict(num_hpr_samples=0), "num_hpr_samples must be an int >= 4"),
    (dict(epsilon=1.0), "epsilon must lie in"),
    (dict(epsilon=float("nan")), "epsilon must be finite"),
    (dict(resume="yes"), "resume must be True or False"),
])
def test_bad_run_arguments_fail_before_simulating(kwargs, match):
    sim = RowCounter()
    with pytest.raises(ValueError, match=match):
        sn.TSNPSE(sn.Normal(np.zeros(2), np.ones(2)), sim, X_O, **TINY).run(**kwargs)
    assert sim.rows == 0


# ------------------------------------------------------------------ issue 13: the one round driver

def test_split_budget_gives_the_first_rounds_the_remainder():
    assert split_budget(10, 3) == [4, 3, 3] and split_budget(9, 3) == [3, 3, 3] and split_budget(5, 5) == [1] * 5
    with pytest.raises(ValueError, match="num_simulations >= num_rounds"):
        split_budget(2, 3)
    with pytest.raises(ValueError, match="num_rounds must be an int >= 1"):
        split_budget(2, 0)


class _FakeNPSE:
    """Records what the driver pools; ``summary`` as NPSE's after a training."""

    def __init__(self):
        self.pooled, self.rng = [], None
        self.summary = dict(epochs=1, train_seconds=0.0, best_val_loss=0.0)

    def append_simulations(self, theta, x):
        self.pooled.append((theta, x))


class _RecordingMethod(RoundDriver):
    """A method whose hooks record what the driver hands them (no network)."""

    probe_x_o = False
    seen = None  # set per test: the hooks' calls

    def draw_round(self, r, n, seed):
        self.seen.append(("draw", r, n, seed))
        return self.prior.sample(n, seed=seed), dict(drawn=n)

    def train_round(self, r, inference, n):
        self.seen.append(("train", r, sum(len(t) for t, _ in inference.pooled), inference.rng.integers(2 ** 62)))
        return f"posterior {r}", dict(trained=r)


def test_round_driver_owns_budget_seeds_nan_filter_and_summaries():
    from snpse_np.rng import child_seed

    def flaky(theta, seed=None):
        x = simulator(theta, seed)
        x[theta[:, 0] > 0.5] = np.nan
        return x

    run = _RecordingMethod(sn.Normal(np.zeros(2), np.ones(2)), flaky, X_O, seed=7, show_progress=False)
    run.seen = []
    inference = _FakeNPSE()
    assert run.run_rounds(inference, [40, 30, 30]) == "posterior 2"
    draws = [s for s in run.seen if s[0] == "draw"]
    assert draws == [("draw", r, n, child_seed(7, r, 2)) for r, n in enumerate([40, 30, 30])]
    trains = [s for s in run.seen if s[0] == "train"]
    assert [t[3] for t in trains] == [np.random.default_rng(child_seed(7, r, 4)).integers(2 ** 62) for r in range(3)]
    bad = [int(np.sum(t[:, 0] > 0.5)) for t in (run.prior.sample(n, seed=child_seed(7, r, 2))
                                                for r, n in enumerate([40, 30, 30]))]
    assert [r["failed_simulations"] for r in run.rounds] == bad and sum(bad) > 0
    assert all(np.all(np.isfinite(x)) for _, x in inference.pooled)  # filtered once, before pooling
    assert [t[2] for t in trains] == list(np.cumsum([40 - bad[0], 30 - bad[1], 30 - bad[2]]))
    assert [r["total_simulations"] for r in run.rounds] == [40, 70, 100]
    assert all(r["drawn"] == r["simulations"] and r["trained"] == r["round"] - 1 for r in run.rounds)


def test_round_driver_refuses_x_o_of_the_wrong_dimension_before_spending_the_budget():
    sim = RowCounter()
    with pytest.raises(ValueError, match="x_o has 3 entries"):
        sn.SNPSEB(sn.Normal(np.zeros(2), np.ones(2)), sim, [0.1, 0.2, 0.3], **TINY).run(num_simulations=300,
                                                                                        num_rounds=2)
    assert sim.rows == 150  # round 0 only: SNPSE-A/B have no probe row
