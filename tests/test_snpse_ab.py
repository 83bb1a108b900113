"""SNPSE-A / SNPSE-B (experimental): the importance-weighted loss, bad weights, the proposal mixture,
the SIR posterior against closed forms, and two-round runs against an analytic posterior."""
import math

import numpy as np
import pytest

import snpse_np as sn
from snpse_np.backend import get_backend, gpu_available
from snpse_np.metrics import c2st
from snpse_np.logweights import log_weights_ess
from snpse_np.mixture import ProposalMixture
from snpse_np.sir import SIRPosterior


def _normal_logpdf(theta, m, s):
    theta = np.asarray(theta, float).reshape(len(theta), -1)
    m = np.broadcast_to(np.asarray(m, float), theta.shape[1:])
    d = theta.shape[1]
    return -0.5 * np.sum((theta - m) ** 2, 1) / s ** 2 - d * np.log(s) - 0.5 * d * np.log(2 * np.pi)


class GaussianNetwork:
    """A stand-in network posterior with exact sample / log_prob: N(mean, s^2 I), -inf outside the prior."""

    def __init__(self, prior, mean, s):
        self.prior, self.mean, self.s = prior, np.asarray(mean, float), float(s)
        self.dim_theta, self.dim_x, self.default_x = self.mean.size, 1, np.zeros(1)
        self.calls = 0

    def check_x(self, x):
        return self.default_x if x is None else np.atleast_1d(np.asarray(x, float))

    def set_default_x(self, x):
        self.default_x = self.check_x(x)
        return self

    def sample(self, n, x=None, seed=None, **kw):
        return self.mean + self.s * np.random.default_rng(seed).standard_normal((n, self.mean.size))

    def log_prob(self, theta, x=None, seed=None, **kw):
        self.calls += 1
        theta = np.atleast_2d(theta)
        lp = _normal_logpdf(theta, self.mean, self.s)
        return np.where(self.prior.support_contains(theta), lp, -np.inf)


class GaussianProposal:
    def __init__(self, mean, s):
        self.mean, self.s = mean, s

    def log_prob(self, theta, seed=None):
        return _normal_logpdf(theta, self.mean, self.s)


# ------------------------------------------------------------------ (1) the weighted loss

@pytest.mark.parametrize("backend", ["numpy", "numba", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not gpu_available(), reason="no CUDA GPU")])])
def test_weighted_dsm_loss_trick_matches_direct_formula(backend):
    """dsm_loss(dout, out, sqrt(w) z, sqrt(w) c) = mean_i w_i (c_i out_i + z_i)^2 and its gradient."""
    be = get_backend(backend)
    rng = np.random.default_rng(0)
    B, d = 7, 3
    out, z = rng.standard_normal((B, d)), rng.standard_normal((B, d))
    c, w = rng.uniform(0.2, 2.0, B), rng.uniform(0.1, 3.0, B)
    dout = be.to_device(np.empty_like(out))
    loss = be.ops.dsm_loss(dout, be.to_device(out), be.to_device(np.sqrt(w)[:, None] * z),
                           be.to_device(np.sqrt(w) * c))
    dout = be.to_host(dout)
    r = c[:, None] * out + z
    assert np.isclose(loss, np.mean(w[:, None] * r ** 2), rtol=1e-12)
    assert np.allclose(dout, 2.0 / (B * d) * w[:, None] * c[:, None] * r, rtol=1e-12)

    def weighted(o):
        return np.mean(w[:, None] * (c[:, None] * o + z) ** 2)

    fd, h = np.empty_like(out), 1e-6
    for idx in np.ndindex(out.shape):
        e = np.zeros_like(out)
        e[idx] = h
        fd[idx] = (weighted(out + e) - weighted(out - e)) / (2 * h)
    assert np.allclose(dout, fd, atol=1e-8)


def _small_npse(seed=0):
    prior = sn.Normal(np.zeros(2), np.ones(2))
    theta = prior.sample(300, seed=1)
    x = theta + 0.3 * np.random.default_rng(2).standard_normal(theta.shape)
    return sn.NPSE(prior, backend="numpy", seed=seed, hidden=32, show_progress=False).append_simulations(theta, x)


TINY = dict(max_epochs=3, min_steps_per_epoch=4, batch_size=64)


@pytest.mark.parametrize("constant", [1.0, 2.5])
def test_constant_weights_train_bit_identically(constant):
    """Weights are rescaled to mean 1, so constant weights are the unweighted loss, bit for bit."""
    plain = _small_npse().train(**TINY)
    inference = _small_npse()
    weighted = inference.train(**TINY, sample_weights=np.full(300, constant))
    assert np.array_equal(plain.params, weighted.params)
    assert inference.summary["weights_ess"] == pytest.approx(300)


def test_validation_loss_is_weighted_the_same_way():
    """The early-stopping loss is mean_i w_i l_i over the (tiled) validation rows."""
    from snpse_np.backend import get_backend
    from snpse_np.nn import ScoreNetwork
    from snpse_np.npse import ValidationSet
    from snpse_np.score import ScoreModel
    from snpse_np.sde import VPSDE
    from snpse_np.time_sampling import TimeSampler
    be = get_backend("numpy")
    sde = VPSDE()
    net = ScoreNetwork.paper(2, 2, 32)
    model = ScoreModel(net, sde, "noise", "sigma", 0.1)
    params = net.init(np.random.default_rng(1), np.float64)
    rng = np.random.default_rng(2)
    th, xs, w = rng.standard_normal((40, 2)), rng.standard_normal((40, 2)), rng.uniform(0.2, 3.0, 40)
    times = TimeSampler(sde)
    plain = ValidationSet(model, be, th, xs, 16, times, np.random.default_rng(5), np.float64)
    weighted = ValidationSet(model, be, th, xs, 16, times, np.random.default_rng(5), np.float64, weights=w)
    w_rows = np.tile(w, 25)  # 40 rows repeated to reach 1,000
    total, start = 0.0, 0
    for theta_in, xb, z, tau, c in plain.batches:
        b = theta_in.shape[0]
        out = net.forward(be, params, theta_in, tau, net.workspace(be, b, np.float64, train=True), x=xb)
        total += np.sum(w_rows[start:start + b] * np.mean((c[:, None] * out + z) ** 2, 1))
        start += b
    assert start == 1000 == plain.rows
    assert weighted.loss(params) == pytest.approx(total / 1000, rel=1e-10)


def test_bad_weights_raise():
    inference = _small_npse()
    with pytest.raises(ValueError, match="shape"):
        inference.train(**TINY, sample_weights=np.ones(299))
    with pytest.raises(ValueError, match="shape"):
        inference.train(**TINY, sample_weights=np.ones((300, 1)))
    for bad, msg in [(np.nan, "NaN or inf"), (np.inf, "NaN or inf"), (0.0, "positive"), (-1.0, "positive")]:
        w = np.ones(300)
        w[17] = bad
        with pytest.raises(ValueError, match=msg):
            inference.train(**TINY, sample_weights=w)
    # rows dropped for invalid x: weights align with get_simulations(), not with what was appended
    x = np.zeros((50, 2))
    x[:5] = np.nan
    with pytest.warns(UserWarning, match="dropped 5"):
        inference.append_simulations(np.zeros((50, 2)), x)
    with pytest.raises(ValueError, match=r"shape \(345,\)"):
        inference.train(**TINY, sample_weights=np.ones(350))


@pytest.mark.slow
def test_weights_follow_their_rows():
    """x carries no information, so the learned posterior is the weighted theta distribution:
    prior N(0, 1) reweighted by w = N(1, 1) / N(0, 1) is N(1, 1). Weights that lost their rows
    (in the split, or when invalid x were dropped) would leave N(0, 1)."""
    prior = sn.Normal([0.0], [1.0])
    theta = prior.sample(2000, seed=1)
    x = np.random.default_rng(2).standard_normal((2000, 1))
    x[::50] = np.nan  # 40 rows dropped before training
    inference = sn.NPSE(prior, seed=0, show_progress=False)
    with pytest.warns(UserWarning, match="dropped 40"):
        inference.append_simulations(theta, x)
    kept, _ = inference.get_simulations()
    w = np.exp(kept[:, 0] - 0.5)
    posterior = inference.train(max_steps=2000, sample_weights=w)
    s = posterior.sample(4000, x=[0.0], seed=3, method="rk4", steps=30)
    # measured: mean 0.93, std 1.21 (without the weights: mean -0.01, std 1.14; short training
    # leaves the network over-dispersed)
    assert abs(s.mean() - 1.0) < 0.2 and 0.75 < s.std() < 1.4, (s.mean(), s.std())


# ------------------------------------------------------------------ the proposal mixture

def test_mixture_b_is_the_count_weighted_mixture_of_renormalised_posteriors():
    prior = sn.BoxUniform([-1.0], [2.0])
    net = GaussianNetwork(prior, [1.5], 0.5)
    mass = 0.5 * (math.erf(0.5 / (0.5 * math.sqrt(2))) - math.erf(-2.5 / (0.5 * math.sqrt(2))))  # in-prior mass a
    mix = ProposalMixture(prior, [0.0], [100], reweighted=False).extended(200, net, np.log(mass))
    grid = np.linspace(-1.5, 2.5, 4001)[:, None]
    direct = np.where(prior.support_contains(grid),
                      (np.exp(prior.log_prob(grid)) + 2 * np.exp(net.log_prob(grid)) / mass) / 3, 0.0)
    lp = mix.log_prob(grid)
    assert np.allclose(np.exp(lp), direct, rtol=1e-12)
    assert np.all(np.isneginf(lp[~prior.support_contains(grid)]))
    assert np.trapezoid(np.exp(lp), grid[:, 0]) == pytest.approx(1.0, abs=2e-3)


def test_mixture_a_recursion_is_normalised_and_evaluates_each_network_once():
    prior = sn.Normal([0.0], [1.0])
    net0, net1 = GaussianNetwork(prior, [0.5], 0.6), GaussianNetwork(prior, [0.7], 0.4)
    grid = np.linspace(-8, 8, 16001)[:, None]
    p, n0, n1 = (np.exp(f.log_prob(grid)) for f in (prior, net0, net1))
    # SNPSE-A: q1 = n0 p / p~0 / Z0 with p~0 = p, Z0 = 1; q2 = n1 p / p~1 / Z1 with p~1 = (p + q1) / 2
    q1 = n0
    mix1 = (p + q1) / 2
    z1 = np.trapezoid(n1 * p / mix1, grid[:, 0])
    q2 = n1 * p / mix1 / z1
    mix = (ProposalMixture(prior, [0.0], [100], reweighted=True)
           .extended(100, net0, 0.0).extended(100, net1, np.log(z1)))
    net0.calls = net1.calls = 0
    lp = mix.log_prob(grid)
    assert (net0.calls, net1.calls) == (1, 1)
    assert np.allclose(np.exp(lp), (p + q1 + q2) / 3, rtol=1e-10)
    assert np.trapezoid(np.exp(lp), grid[:, 0]) == pytest.approx(1.0, abs=1e-6)
    assert mix.log_normalizers == [0.0, pytest.approx(np.log(z1))]


# ------------------------------------------------------------------ (3) the SIR posterior

def test_sir_posterior_matches_its_closed_form():
    """target ∝ 1[-1 <= theta <= 2] N(theta; 0.8, 0.5^2) / N(theta; 0.5, 1.2^2): all by quadrature."""
    prior = sn.BoxUniform([-1.0], [2.0])
    net = GaussianNetwork(prior, [0.8], 0.5)
    post = SIRPosterior(net, GaussianProposal(0.5, 1.2), oversample=10, num_normalizer_samples=100_000)
    assert post.experimental
    grid = np.linspace(-1.0, 2.0, 30001)
    unnorm = np.exp(prior.log_prob(grid[:, None]) + _normal_logpdf(grid[:, None], 0.8, 0.5)
                    - _normal_logpdf(grid[:, None], 0.5, 1.2))
    z = np.trapezoid(unnorm, grid)
    mean = np.trapezoid(grid * unnorm, grid) / z
    std = np.sqrt(np.trapezoid((grid - mean) ** 2 * unnorm, grid) / z)

    s = post.sample(20_000, seed=1)
    assert s.shape == (20_000, 1)
    assert prior.support_contains(s).all()
    assert abs(s.mean() - mean) < 0.015 and abs(s.std() / std - 1) < 0.03, (s.mean(), mean, s.std(), std)
    assert post.num_draws == 200_000 and 0.3 * 200_000 < post.ess < 200_000
    assert np.array_equal(s, post.sample(20_000, seed=1))  # seeded

    assert post.log_normalizer() == pytest.approx(np.log(z), abs=0.01)
    lp = post.log_prob(grid[:, None])
    assert np.allclose(lp, np.log(unnorm / z), atol=0.01)
    assert np.trapezoid(np.exp(lp), grid) == pytest.approx(1.0, abs=0.01)
    assert np.all(np.isneginf(post.log_prob(np.array([[-1.5], [2.5]]))))
    # set_log_normalizer from given draws overrides the cached estimate
    post.set_log_normalizer(None, np.log(np.full(10, 2.0)))
    assert post.log_normalizer() == pytest.approx(np.log(2.0))


class MixtureNetwork(GaussianNetwork):
    """An exact proposal posterior: sum_k a_k N(m_k, s_k^2) in 1-D (a_k normalised here)."""

    def __init__(self, prior, a, m, s):
        super().__init__(prior, [0.0], 1.0)
        self.a, self.m, self.s = np.asarray(a) / np.sum(a), np.asarray(m, float), np.asarray(s, float)

    def sample(self, n, x=None, seed=None, **kw):
        rng = np.random.default_rng(seed)
        k = rng.choice(self.a.size, size=n, p=self.a)
        return (self.m[k] + self.s[k] * rng.standard_normal(n))[:, None]

    def log_prob(self, theta, x=None, seed=None, **kw):
        self.calls += 1
        theta = np.atleast_2d(theta)
        comps = [np.log(a) + _normal_logpdf(theta, m, s) for a, m, s in zip(self.a, self.m, self.s)]
        return np.logaddexp.reduce(comps, axis=0)


def test_snpse_a_rounds_with_exact_networks_recover_the_posterior():
    """Two corrected rounds assembled as SNPSEA does, with exact networks in place of trained ones.

    Prior N(0, 1), x | theta ~ N(theta, 0.1), x_o = 0.7. Round 0's network is the posterior
    N(mu, v); a round trained on the mixture k p + j q (q = posterior) learns the exact proposal
    posterior, the two-component mixture (k p(x_o) N(mu, v) + j c N(m2, v2)) / norm, with
    c = N(x_o; mu, v + 0.1) and N(m2, v2) = N(mu, v) times the likelihood. Every SIR posterior
    must then be the posterior, and Z_r = p(x_o) / p~^r(x_o)."""
    prior, noise, x_o = sn.Normal([0.0], [1.0]), 0.1, 0.7
    v = 1 / (1 + 1 / noise)
    mu = v * x_o / noise
    v2 = 1 / (1 / v + 1 / noise)
    m2 = v2 * (mu / v + x_o / noise)
    evidence = np.exp(_normal_logpdf([[x_o]], 0.0, np.sqrt(1 + noise)))[0]
    c = np.exp(_normal_logpdf([[x_o]], mu, np.sqrt(v + noise)))[0]

    def proposal_posterior(k, j):  # exact network for training data from (k p + j q) / (k + j)
        return MixtureNetwork(prior, [k * evidence, j * c], [mu, m2], [np.sqrt(v), np.sqrt(v2)])

    net0 = GaussianNetwork(prior, [mu], np.sqrt(v))
    mix1 = ProposalMixture(prior, [x_o], [1000], reweighted=True).extended(1000, net0, 0.0)
    post1 = SIRPosterior(proposal_posterior(1, 1), mix1)
    theta, log_w = post1.weighted_draws(100_000, seed=1)
    post1.set_log_normalizer(None, log_w)
    assert post1.log_normalizer() == pytest.approx(np.log(evidence / ((evidence + c) / 2)), abs=0.01)
    mix2 = mix1.extended(1000, post1.network, post1.log_normalizer())
    post2 = SIRPosterior(proposal_posterior(1, 2), mix2)  # q_2 = post1 = the posterior: p~^2 = (p + 2 q) / 3
    s = post2.sample(20_000, seed=2)
    assert abs(s.mean() - mu) < 0.01 and abs(s.std() / np.sqrt(v) - 1) < 0.03, (s.mean(), mu, s.std())
    assert post2.log_normalizer(seed=3) == pytest.approx(np.log(evidence / ((evidence + 2 * c) / 3)), abs=0.01)
    grid = np.linspace(mu - 4 * np.sqrt(v), mu + 4 * np.sqrt(v), 9)[:, None]
    assert np.allclose(post2.log_prob(grid), _normal_logpdf(grid, mu, np.sqrt(v)), atol=0.02)


def test_log_weights_ess():
    assert log_weights_ess(np.zeros(50)) == pytest.approx(50)
    assert log_weights_ess(np.array([0.0, -np.inf, -np.inf])) == pytest.approx(1)
    assert log_weights_ess(np.full(4, -np.inf)) == 0.0


# ------------------------------------------------------------------ (4) end to end

NOISE = 0.1
X_O = np.array([0.7, -0.4])
FAST = dict(max_steps=3000)  # the default schedule annealed over 3,000 steps
FAST_ODE = dict(method="rk4", steps=20)


def simulator(theta, seed=None):
    return theta + np.sqrt(NOISE) * np.random.default_rng(seed).standard_normal(theta.shape)


def _check_against_analytic(run, posterior, bound):
    var = 1 / (1 + 1 / NOISE)
    mean = var * X_O / NOISE
    samples = posterior.sample(3000, seed=1, **FAST_ODE)
    ref = mean + np.sqrt(var) * np.random.default_rng(2).standard_normal((3000, 2))
    score = c2st(ref, samples, classifier="fast")
    assert score < bound, score
    # the uncorrected pooled posterior is too narrow (std 0.24 measured for SNPSE-A's network)
    mean_ok = np.all(np.abs(samples.mean(0) - mean) < 0.12)
    std_ok = np.all(np.abs(samples.std(0) / np.sqrt(var) - 1) < 0.15)
    assert mean_ok and std_ok, (samples.mean(0), mean, samples.std(0), np.sqrt(var))
    lp = posterior.log_prob(samples[:300], **FAST_ODE)
    analytic = -0.5 * np.sum((samples[:300] - mean) ** 2, 1) / var - np.log(2 * np.pi * var)
    assert np.all(np.isfinite(lp))
    assert np.corrcoef(lp, analytic)[0, 1] > 0.9
    assert len(run.rounds) == 2 and run.rounds[1]["total_simulations"] == 2000
    return score


@pytest.mark.parametrize("method", ["SNPSEA", "SNPSEB"])
def test_bounded_prior_and_failed_simulations(method):
    """Plumbing with barely trained networks: a box prior (draws outside it are rejected or get
    weight 0), simulations that fail (NaN rows dropped, weights aligned with the kept rows), three
    rounds, seeded reruns identical."""
    prior = sn.BoxUniform(-2 * np.ones(2), 2 * np.ones(2))

    def flaky(theta, seed=None):
        x = simulator(theta, seed)
        x[theta[:, 0] > 1.2] = np.nan
        return x

    def run_once():
        run = getattr(sn, method)(prior, flaky, X_O, seed=3, backend="numpy", hidden=16, show_progress=False,
                                  train_kwargs=dict(max_epochs=2, min_steps_per_epoch=3))
        kw = dict(oversample=2) if method == "SNPSEA" else {}
        post = run.run(num_simulations=450, num_rounds=3, sample_kwargs=dict(method="euler", steps=4),
                       log_prob_kwargs=dict(method="euler", steps=4), **kw)
        # a ScorePosterior (SNPSE-B) keeps draws outside the prior unless told to reject them
        reject = {} if method == "SNPSEA" else dict(reject_outside_prior=True)
        return run, post, post.sample(50, seed=0, method="euler", steps=4, **reject)

    run, post, s = run_once()
    assert run.experimental and s.shape == (50, 2) and prior.support_contains(s).all()
    assert [r["total_simulations"] for r in run.rounds] == [150, 300, 450]
    assert sum(r["failed_simulations"] for r in run.rounds) > 0
    assert len(run.mixture.log_normalizers) == 2 and np.all(np.isfinite(run.mixture.log_normalizers))
    assert all(0 < r["ess_fraction"] <= 1 for r in run.rounds)
    # the untrained networks put most of their mass outside the box (measured: ~11% inside)
    if method == "SNPSEB":
        assert run.rounds[0]["acceptance"] is None and all(0 < r["acceptance"] < 1 for r in run.rounds[1:])
    else:
        assert all(r["log_normalizer"] < 0 for r in run.rounds)  # draws outside the box weigh 0
    lp = post.log_prob(np.array([[0.5, -0.3], [3.0, 0.0]]), method="euler", steps=4)
    assert np.isfinite(lp[0]) and np.isneginf(lp[1])
    assert np.array_equal(s, run_once()[2])


# Measured on the loaded 2-core machine (seed 0, 2,000 simulations, 2 rounds): C2ST SNPSE-A 0.540
# (0.55-0.56 with oversample 10; its mean is pulled ~0.2 posterior std toward the prior mean),
# SNPSE-B 0.510, TSNPSE 0.515. The pooled data without any correction give a posterior ~20% too
# narrow (std 0.24 vs 0.30, C2ST 0.59), which the std check catches.

@pytest.mark.slow
def test_snpse_a_two_rounds():
    prior = sn.Normal(np.zeros(2), np.ones(2))
    run = sn.SNPSEA(prior, simulator, X_O, seed=0, show_progress=False, train_kwargs=FAST)
    posterior = run.run(num_simulations=2000, num_rounds=2, oversample=5, sample_kwargs=FAST_ODE,
                        log_prob_kwargs=FAST_ODE)
    assert isinstance(posterior, SIRPosterior) and run.experimental
    _check_against_analytic(run, posterior, bound=0.65)
    r0, r1 = run.rounds
    assert r0["log_normalizer"] == pytest.approx(0.0, abs=1e-12)  # round 0: p~ = p, every weight 1
    assert 0 < r1["ess_fraction"] < 1 and len(r1["log_normalizers"]) == 1


@pytest.mark.slow
def test_snpse_b_two_rounds():
    prior = sn.Normal(np.zeros(2), np.ones(2))
    run = sn.SNPSEB(prior, simulator, X_O, seed=0, show_progress=False, train_kwargs=FAST)
    posterior = run.run(num_simulations=2000, num_rounds=2, sample_kwargs=FAST_ODE, log_prob_kwargs=FAST_ODE)
    assert isinstance(posterior, sn.ScorePosterior)
    _check_against_analytic(run, posterior, bound=0.58)
    r0, r1 = run.rounds
    assert r0["ess_fraction"] == 1.0 and 0 < r1["ess_fraction"] < 1
    assert r1["acceptance"] == 1.0 and r1["log_normalizers"] == [0.0]  # the prior's support is R^2
