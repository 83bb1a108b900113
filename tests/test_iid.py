"""I.i.d. trials (snpse_np.iid): special functions against scipy/mpmath, the diffused priors
against numerical integrals, the composed score against the exact tall-posterior score of a
linear-Gaussian model (exact per-trial scores), the per-row network conditioning against one
observation at a time, and the posterior's i.i.d. entry points on a tiny training.

Linear-Gaussian model in z space: prior N(m0, C0), x_i ~ N(z + shift, L); the single-trial
posterior is N(mu_i, S1) with S1 = (C0^-1 + L^-1)^-1, mu_i = S1 (C0^-1 m0 + L^-1 (x_i - shift)),
and the m-trial posterior N(mu_m, Sm), Sm = (C0^-1 + m L^-1)^-1, mu_m = Sm (C0^-1 m0 + L^-1 sum_i
(x_i - shift)). Under an SDE each perturbs to N(alpha mu, alpha^2 S + sigma^2 I).
"""
import math

import numpy as np
import pytest

import snpse_np as sn
from snpse_np import iid
from snpse_np.sde import VESDE, VPSDE, SubVPSDE

scipy_special = pytest.importorskip("scipy.special")
scipy_stats = pytest.importorskip("scipy.stats")


def test_erfcx_matches_scipy():
    y = np.concatenate([np.linspace(0, 12, 24001), np.geomspace(12, 1e6, 3000)])
    rel = np.abs(iid.erfcx(y) / scipy_special.erfcx(y) - 1)
    assert rel.max() < 5e-12, (rel.max(), y[rel.argmax()])
    with pytest.raises(ValueError):
        iid.erfcx(np.array([-1.0]))


def _tn_reference(a, b):
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 60
    if b <= 0:
        m, v = _tn_reference(-b, -a)
        return -m, v
    a, b = mp.mpf(a), mp.mpf(b)
    Z = mp.ncdf(b) - mp.ncdf(a) if a < 0 else (mp.erfc(a / mp.sqrt(2)) - mp.erfc(b / mp.sqrt(2))) / 2
    pa, pb = mp.npdf(a), mp.npdf(b)
    m = (pa - pb) / Z
    return float(m), float(1 + (a * pa - b * pb) / Z - m * m)


def test_truncated_normal_moments_in_both_tails():
    rng = np.random.default_rng(1)
    A = np.concatenate([rng.uniform(-60, 60, 200), rng.uniform(-900, 900, 60), rng.uniform(-3, 3, 60),
                        rng.uniform(150, 250, 40)])
    B = A + np.exp(rng.uniform(-9, 4, A.size))
    m1, v = iid.truncated_normal_moments(A, B)
    ref = np.array([_tn_reference(a, b) for a, b in zip(A, B)])
    assert np.max(np.abs(m1 - ref[:, 0]) / np.maximum(1, np.abs(ref[:, 0]))) < 1e-9
    assert np.max(np.abs(v / ref[:, 1] - 1)) < 1e-4  # 5e-5 where A > 200 (exponential tail law)
    # half-lines and the whole line
    m1, v = iid.truncated_normal_moments(np.array([-np.inf, 2.0, -np.inf]), np.array([np.inf, np.inf, -3.0]))
    ref = scipy_stats.truncnorm.stats([-np.inf, 2.0, -np.inf], [np.inf, np.inf, -3.0], moments="mv")
    assert np.allclose(m1, ref[0], rtol=1e-10, atol=1e-12) and np.allclose(v, ref[1], rtol=1e-9)


def _box_score_reference(z, alpha, sigma, low, high):
    """d/dz log int_[low, high] N(z; alpha u, sigma^2) du per element, by mpmath (60 digits,
    central differences): the closed form underflows in double precision outside the box."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 60
    h = mp.mpf("1e-20")

    def logp(q, lo, hi):
        return mp.log(mp.ncdf((alpha * hi - q) / sigma) - mp.ncdf((alpha * lo - q) / sigma))
    out = np.empty(z.shape)
    for i, j in np.ndindex(*z.shape):
        q = mp.mpf(float(z[i, j]))
        out[i, j] = float((logp(q + h, low[j], high[j]) - logp(q - h, low[j], high[j])) / (2 * h))
    return out


@pytest.mark.parametrize("alpha,sigma", [(1.0, 0.05), (1.0, 0.7), (0.6, 0.8), (0.99, 3.0)])
def test_box_diffused_score_is_the_gradient_of_the_convolved_density(alpha, sigma):
    low, high = np.array([-1.5, -2.0]), np.array([1.0, 2.5])
    prior = iid.BoxDiffusedPrior(low, high)
    z = np.random.default_rng(2).uniform(-2.5, 3.0, (25, 2)) * alpha
    num = _box_score_reference(z, alpha, sigma, low, high)
    assert np.allclose(prior.score(z, alpha, sigma), num, rtol=1e-8, atol=1e-10)
    # the denoising precision: 1 / Var(z0 | zt) of the truncated normal, against scipy
    P = prior.denoising_precision(z, alpha, sigma)
    mu, s = z / alpha, sigma / alpha
    ref = np.array([[_tn_reference(a, b)[1] for a, b in zip(ra, rb)]
                    for ra, rb in zip((low - mu) / s, (high - mu) / s)])
    assert np.allclose(np.diagonal(P, axis1=1, axis2=2), 1 / (s * s * ref), rtol=1e-4)
    assert np.allclose(P[:, 0, 1], 0.0)


def test_gaussian_diffused_prior_per_row_times():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((2, 2))
    prior = iid.GaussianDiffusedPrior(np.array([0.3, -0.2]), A @ A.T + 0.5 * np.eye(2))
    z = rng.standard_normal((6, 2))
    alpha, sigma = rng.uniform(0.2, 1, 6), rng.uniform(0.1, 2, 6)
    rows = prior.score(z, alpha, sigma)
    one = np.stack([prior.score(z[i:i + 1], float(alpha[i]), float(sigma[i]))[0] for i in range(6)])
    assert np.allclose(rows, one)
    cov_t = alpha[0] ** 2 * prior.cov + sigma[0] ** 2 * np.eye(2)
    assert np.allclose(one[0], -np.linalg.solve(cov_t, z[0] - alpha[0] * prior.mean))


def test_mixture_fit_recovers_a_two_component_mixture():
    rng = np.random.default_rng(4)
    z = np.concatenate([rng.normal([-2, 0], [0.5, 1.0], (6000, 2)), rng.normal([2, 1], [1.0, 0.3], (4000, 2))])
    mix = iid.MixtureDiffusedPrior.fit(z, components=2, seed=0)
    order = np.argsort(mix.mu[:, 0])
    assert np.allclose(mix.w[order], [0.6, 0.4], atol=0.02)
    assert np.allclose(mix.mu[order], [[-2, 0], [2, 1]], atol=0.05)
    assert np.allclose(np.sqrt(mix.v[order]), [[0.5, 1.0], [1.0, 0.3]], atol=0.05)
    # its diffused score is the gradient of its diffused log-density (finite differences)
    zz = rng.standard_normal((20, 2))

    def logp(q, a, s):
        var = a * a * mix.v + s * s
        diff = q[:, None] - a * mix.mu
        return np.log(np.sum(mix.w * np.exp(-0.5 * np.sum(diff ** 2 / var + np.log(2 * np.pi * var), 2)), 1))
    h = 1e-6
    num = np.stack([(logp(zz + h * e, 0.8, 0.4) - logp(zz - h * e, 0.8, 0.4)) / (2 * h) for e in np.eye(2)], 1)
    assert np.allclose(mix.score(zz, 0.8, 0.4), num, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- exact composition

class LinearGaussian:
    """The model of the module docstring in z space, d = 2, with exact scores at every t."""

    def __init__(self, m, seed=0):
        rng = np.random.default_rng(seed)
        self.m0, self.C0 = np.array([0.2, -0.1]), np.array([[1.0, 0.3], [0.3, 0.8]])
        self.L = np.array([[0.9, -0.2], [-0.2, 0.6]])
        self.x = rng.standard_normal((m, 2))
        P0, PL = np.linalg.inv(self.C0), np.linalg.inv(self.L)
        self.S1 = np.linalg.inv(P0 + PL)
        self.mu1 = (self.S1 @ ((P0 @ self.m0)[:, None] + PL @ self.x.T)).T  # (m, 2), shift 0
        self.Sm = np.linalg.inv(P0 + m * PL)
        self.mum = self.Sm @ (P0 @ self.m0 + PL @ self.x.sum(0))

    @staticmethod
    def score(z, mean, cov, alpha, sigma):
        cov_t = alpha ** 2 * cov + sigma ** 2 * np.eye(2)
        return -np.linalg.solve(cov_t, (z - alpha * mean).T).T

    def trial_scores(self, z, alpha, sigma):
        return np.stack([self.score(z, mu, self.S1, alpha, sigma) for mu in self.mu1])

    def trial_jacobians(self, z, alpha, sigma):
        J = -np.linalg.inv(alpha ** 2 * self.S1 + sigma ** 2 * np.eye(2))
        return np.broadcast_to(J, (self.x.shape[0], z.shape[0], 2, 2)).copy()


@pytest.mark.parametrize("sde", [VESDE(0.01, 6.0), VPSDE(), SubVPSDE()], ids=lambda s: s.name)
@pytest.mark.parametrize("method", ["gauss", "jac_gauss"])
@pytest.mark.parametrize("t", [1e-3, 0.1, 0.5, 0.95])
def test_gauss_methods_are_exact_for_a_linear_gaussian_model(sde, method, t):
    model = LinearGaussian(m=7)
    prior = iid.GaussianDiffusedPrior(model.m0, model.C0)
    alpha, sigma = (float(v) for v in sde.marginal(t))
    z = alpha * model.mum + np.random.default_rng(5).standard_normal((40, 2)) * (alpha + sigma)
    s = model.trial_scores(z, alpha, sigma)
    post = np.broadcast_to(np.linalg.inv(model.S1), (7, 2, 2))
    jac = model.trial_jacobians(z, alpha, sigma)
    got = iid.compose(method, s, z, t, alpha, sigma, 1.0, prior, post, jac)
    want = model.score(z, model.mum, model.Sm, alpha, sigma)
    assert np.allclose(got, want, rtol=1e-7, atol=1e-7 * np.abs(want).max())
    # per-row times give the same numbers
    ta = np.full(40, t)
    a_r, s_r = sde.marginal(ta)
    got_rows = iid.compose(method, s, z, ta, a_r, s_r, 1.0, prior, post, jac)
    assert np.allclose(got_rows, got, rtol=1e-9, atol=1e-9 * np.abs(got).max())


def test_all_methods_agree_at_t_near_zero():
    """At t -> 0 the tall-posterior score is exactly sum_i s_i + (1 - m) grad log p."""
    model = LinearGaussian(m=4)
    prior = iid.GaussianDiffusedPrior(model.m0, model.C0)
    sde = VESDE(1e-4, 6.0)
    t = 1e-4
    alpha, sigma = (float(v) for v in sde.marginal(t))
    z = model.mum + 0.5 * np.random.default_rng(6).standard_normal((30, 2))
    s = model.trial_scores(z, alpha, sigma)
    want = model.score(z, model.mum, model.Sm, 1.0, 0.0)
    for method in iid.IID_METHODS:
        post = 2 * np.broadcast_to(np.linalg.inv(model.C0), (4, 2, 2))  # deliberately wrong: irrelevant at t=0
        got = iid.compose(method, s, z, t, alpha, sigma, 1.0, prior, post, model.trial_jacobians(z, alpha, sigma))
        assert np.allclose(got, want, rtol=1e-3, atol=1e-3), method


def test_gauss_composition_pulls_back_into_a_box_prior():
    """Just outside a box prior at small t the box's denoising precision is huge. With Linhart et
    al.'s P_i = Sigma_i^-1 + alpha^2/sigma^2 Lambda turns indefinite there and the composed score
    points OUT of the box (the divergence this design avoids); with P_i = P_0 + L_i it points in,
    here with per-trial scores that themselves point in (each trial's posterior is inside the box)."""
    prior = iid.BoxDiffusedPrior(-np.ones(2), np.ones(2))
    alpha, sigma = 0.8, 0.6
    z = np.array([[2.0, 2.1], [-1.9, 0.0], [0.0, -2.2]])
    s = np.stack([prior.score(z, alpha, sigma) * 0.8 for _ in range(4)])  # weaker inward than the prior
    post = np.broadcast_to(2 * prior.precision(), (4, 2, 2))
    out = iid.compose("gauss", s, z, 0.3, alpha, sigma, 1.0, prior, post)
    assert np.all(np.isfinite(out))
    assert np.all(np.sum(out * z, axis=1) < 0), out  # inward
    # the unprotected formula on the same numbers: Lambda indefinite, the score points outward
    P0 = prior.denoising_precision(z, alpha, sigma)
    Pi = post[0] + alpha ** 2 / sigma ** 2 * np.eye(2)
    lam = 4 * Pi[None] - 3 * P0
    assert np.any(np.linalg.eigvalsh(lam)[:, 0] < 0)


def test_check_iid_params():
    assert iid.check_iid_params("auto_gauss", None)["budget"] == 1000
    with pytest.raises(ValueError, match="do not apply"):
        iid.check_iid_params("fnpe", dict(budget=3))
    with pytest.raises(ValueError, match="unknown iid_method"):
        iid.check_iid_params("naive", None)


# ----------------------------------------------------------------------------- the posterior's entry points

NOISE, SHIFT = 0.9, -1.0


def _linear_gaussian_data(prior, n, seed):
    theta = prior.sample(n, seed=seed)
    return theta, theta + SHIFT + np.sqrt(NOISE) * np.random.default_rng(seed + 1).standard_normal(theta.shape)


@pytest.fixture(scope="module")
def tiny():
    """A small network trained for seconds: the plumbing tests need a real network, not accuracy."""
    prior = sn.Normal(np.zeros(2), np.ones(2))
    theta, x = _linear_gaussian_data(prior, 1500, 0)
    inference = sn.NPSE(prior, sde="ve", seed=0, hidden=64, show_progress=False, backend="numpy")
    return inference.append_simulations(theta, x).train(max_epochs=15)


def test_per_row_conditioning_matches_one_observation_at_a_time(tiny):
    """ScoreField with one x part per row (2,500 rows: three CPU chunks, a ragged last one) gives
    each row the score of a field built for that row's observation alone."""
    from snpse_np.score import ScoreField
    post = tiny
    X = np.array([[0.3, -0.2], [1.5, 0.7], [-1.0, 2.0]])
    xc = post.embed(X)
    rng = np.random.default_rng(0)
    n = 2500
    z = rng.standard_normal((n, 2)).astype(post.dtype)
    # random order (the per-row path) and runs of equal rows (run by run, the x part folded in)
    for trial, t, runs in [(rng.integers(0, 3, n), 0.3, False), (rng.integers(0, 3, n), rng.uniform(1e-4, 1, n), False),
                           (np.repeat([2, 0, 1], [1100, 300, 1100]), 0.3, True),
                           (np.repeat([1, 2], [700, 1800]), rng.uniform(1e-4, 1, n), True)]:
        field = ScoreField(post.model, post.backend, post.params, xc[trial], n, post.dtype)
        assert (field.segments is not None) == runs
        rows = field.score(z, t).copy()
        for j in np.unique(trial):
            sel = trial == j
            tj = t if np.ndim(t) == 0 else t[sel]
            one = ScoreField(post.model, post.backend, post.params, xc[j:j + 1], int(sel.sum()), post.dtype)
            assert np.allclose(rows[sel], one.score(z[sel], tj), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="1 or 10 rows"):
        ScoreField(post.model, post.backend, post.params, xc, 10, post.dtype)


def test_embed_equals_the_single_observation_condition(tiny):
    X = np.array([[0.3, -0.2], [1.5, 0.7]])
    xc = tiny.embed(X)
    # the network's x part, then the linear-Gaussian fit's mean m(x) (where sampling starts)
    assert xc.shape == (2, tiny.model.net.head_sizes[0] + tiny.dim_theta)
    for j in range(2):
        assert np.allclose(xc[j], tiny._condition(X[j])[0], rtol=1e-6, atol=1e-6)


def test_sample_batched_equals_per_observation_sampling(tiny):
    """With one observation the batched sampler draws what ``sample`` draws (same seed, same
    noise); with several, block j is a fixed-step ODE run from the same start under x_j."""
    x1 = np.array([[0.5, -0.5]])
    a = tiny.sample_batched(300, x1, method="rk4", steps=8, seed=4)
    b = tiny.sample(300, x=x1[0], method="rk4", steps=8, seed=4)
    assert a.shape == (1, 300, 2) and np.allclose(a[0], b, atol=1e-5)
    X = np.array([[0.5, -0.5], [2.0, 1.0], [-1.0, 0.0]])
    s = tiny.sample_batched(200, X, method="rk4", steps=8, seed=5)
    assert s.shape == (3, 200, 2)
    # the start points: the base draws in one block of 600 rows, trial-major, each row from the
    # linear-Gaussian fit's p_T at its own observation
    from snpse_np.sampling import ode_fixed
    from snpse_np.score import ScoreField
    means = np.repeat(tiny.backend.to_host(tiny.model.split(tiny.embed(X))[1]).astype(np.float64), 200, axis=0)
    start = tiny.model.base_sample(600, np.random.default_rng(5), means).astype(tiny.dtype)
    for j in range(3):
        field = ScoreField(tiny.model, tiny.backend, tiny.params, tiny.embed(X[j:j + 1]), 200, tiny.dtype)
        want = tiny.theta_std.inverse(ode_fixed(field, start[200 * j:200 * (j + 1)].copy(), 8, "rk4")[0])
        assert np.allclose(s[j], want, atol=1e-4)


def test_log_prob_batched_equals_log_prob(tiny):
    X = np.array([[0.5, -0.5], [2.0, 1.0]])
    theta = np.random.default_rng(6).standard_normal((40, 2))
    lp = tiny.log_prob_batched(theta, X, method="rk4", steps=12)
    assert lp.shape == (2, 40)
    for j in range(2):
        assert np.allclose(lp[j], tiny.log_prob(theta, x=X[j], method="rk4", steps=12), atol=1e-4)
    blocks = tiny.log_prob_batched(np.stack([theta, theta[::-1]]), X, method="rk4", steps=12)
    assert np.allclose(blocks[1], lp[1][::-1], atol=1e-4)


def test_iid_log_prob_is_the_sum_minus_the_prior(tiny):
    X = np.array([[0.5, -0.5], [2.0, 1.0], [0.0, 0.3]])
    theta = np.random.default_rng(7).standard_normal((25, 2))
    got = tiny.log_prob(theta, x=X, method="rk4", steps=12)
    per = tiny.log_prob_batched(theta, X, method="rk4", steps=12)
    assert np.allclose(got, per.sum(0) - 2 * tiny.prior.log_prob(theta), atol=1e-8)
    # one row stays the single-observation case
    assert np.allclose(tiny.log_prob(theta, x=X[:1], method="rk4", steps=12), per[0], atol=1e-6)


@pytest.mark.parametrize("method", iid.IID_METHODS)
def test_iid_sampling_runs_every_method(tiny, method):
    """Every method returns finite draws that concentrate as trials are added (an 8-trial
    posterior is narrower than a 2-trial one); accuracy is benchmarks/bench_iid.py's job. (On this
    15-epoch network jac_gauss diverges at 20 trials: the Tweedie factor is noise at large t.)"""
    kw = dict(sampler="pc", steps=60, corrector_steps=1) if method.startswith("fnpe") else dict(steps=12)
    spread = []
    for m in (2, 8):
        s = tiny.sample(300, x=np.zeros((m, 2)), iid_method=method, seed=8, **kw)
        assert s.shape == (300, 2) and np.all(np.isfinite(s))
        spread.append(s.std(0))
    assert np.all(spread[1] < 0.8 * spread[0]), spread


def test_iid_langevin_methods_need_the_pc_sampler(tiny):
    with pytest.raises(ValueError, match="sampler='pc'"):
        tiny.sample(10, x=np.zeros((3, 2)), iid_method="fnpe")


def test_trial_precisions_feed_gauss(tiny):
    X = np.zeros((3, 2))
    P = tiny.trial_precisions(X, budget=400, steps=10, seed=0)
    assert P.shape == (3, 2, 2) and np.all(np.linalg.eigvalsh(P) > 0)
    s = tiny.sample(200, x=X, iid_method="gauss", iid_params=dict(posterior_precision=P), steps=10, seed=1)
    assert np.all(np.isfinite(s))
    with pytest.raises(ValueError, match="posterior_precision"):
        tiny.sample(10, x=X, iid_method="gauss", iid_params=dict(posterior_precision=np.eye(3)))


@pytest.mark.parametrize("x,match", [
    (np.zeros((0, 2)), "0 rows"),
    (np.zeros((3, 3)), r"shape \(m, 2\)"),
    (np.array([[0.0, 1.0], [np.nan, 0.0]]), "row 1 contains NaN"),
    (np.zeros((2, 2, 1)), r"shape \(m, 2\)"),
])
def test_many_observation_inputs_are_checked(tiny, x, match):
    with pytest.raises(ValueError, match=match):
        tiny.sample_batched(5, x)
    with pytest.raises(ValueError, match=match):
        tiny.log_prob_batched(np.zeros((5, 2)), x)
    if x.ndim == 2 and x.shape[0] != 1:
        with pytest.raises(ValueError, match=match):
            tiny.sample(5, x=x)
        with pytest.raises(ValueError, match=match):
            tiny.log_prob(np.zeros((5, 2)), x=x)


def test_batched_argument_checks(tiny):
    X = np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"theta must have shape \(2, n, 2\)"):
        tiny.log_prob_batched(np.zeros((3, 5, 2)), X)
    with pytest.raises(ValueError, match="n must be"):
        tiny.sample_batched(-1, X)
    with pytest.raises(ValueError, match="do not apply"):
        tiny.sample(5, x=X, iid_method="gauss", iid_params=dict(budget=10))
    assert tiny.sample_batched(0, X).shape == (2, 0, 2)


def test_sample_batched_rejects_outside_a_box_prior():
    prior = sn.BoxUniform(-np.ones(2), np.ones(2))
    theta, x = _linear_gaussian_data(prior, 1500, 3)
    post = sn.NPSE(prior, sde="vp", seed=0, hidden=64, show_progress=False, backend="numpy").append_simulations(
        theta, x).train(max_epochs=15)
    s = post.sample_batched(200, np.array([[0.5, 0.5], [-1.5, 0.0]]), steps=8, seed=0, reject_outside_prior=True)
    assert s.shape == (2, 200, 2) and np.all(np.abs(s) <= 1)
    with pytest.warns(RuntimeWarning, match=r"of 300 i.i.d. draws .* outside the prior support"):
        raw = post.sample(300, x=np.zeros((4, 2)), steps=8, seed=0)
    assert np.all(np.isfinite(raw)) and np.any(np.abs(raw) > 1)  # without rejection some fall outside
    si = post.sample(300, x=np.zeros((4, 2)), steps=8, seed=0, reject_outside_prior=True)
    assert si.shape == (300, 2) and np.all(np.abs(si) <= 1)


def test_iid_with_a_prior_without_closed_form():
    """LogNormal: the diffused prior is the fitted mixture (an approximation); i.i.d. sampling runs,
    stays positive after rejection and concentrates around the trials' location."""
    prior = sn.LogNormal(np.zeros(2), 0.5 * np.ones(2))
    theta = prior.sample(1500, seed=5)
    x = theta + 0.3 * np.random.default_rng(6).standard_normal(theta.shape)
    post = sn.NPSE(prior, sde="vp", seed=0, hidden=64, show_progress=False, backend="numpy").append_simulations(
        theta, x).train(max_epochs=15)
    zp = post._diffused_prior(iid.check_iid_params("gauss", None), np.random.default_rng(0))
    assert isinstance(zp, iid.MixtureDiffusedPrior) and not zp.exact
    X = np.full((10, 2), 1.2) + 0.3 * np.random.default_rng(7).standard_normal((10, 2))
    s = post.sample(300, x=X, iid_method="gauss", steps=12, seed=0, reject_outside_prior=True)
    assert np.all(s > 0) and np.all(np.abs(np.median(s, axis=0) - X.mean(0)) < 0.3), np.median(s, axis=0)
