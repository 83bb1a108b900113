"""The linear-Gaussian baseline (snpse_np.linear_gaussian): its diffused score, trace and Jacobian against
closed forms and finite differences; the DSM loss and the fields with a baseline against the plain
formulas; end to end on the linear-Gaussian problem of tests/test_npse.py (analytic posterior); files.
"""
import numpy as np
import pytest

import snpse_np as sn
from snpse_np.backend import get_backend
from snpse_np.linear_gaussian import LinearGaussian
from snpse_np.nn import ScoreNetwork
from snpse_np.npse import TrainStep
from snpse_np.optim import Adam
from snpse_np.score import ScoreField, ScoreJacobian, ScoreModel
from snpse_np.sde import VESDE, VPSDE

from test_npse import D, MEAN, VAR, X_O, analytic_log_prob, simulate


def _fitted(seed=0, n=3000, d=3, p=2):
    """A baseline fitted to theta = B x + correlated noise, and its data."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p))
    L = np.tril(rng.standard_normal((d, d))) + 2 * np.eye(d)
    theta = x @ rng.standard_normal((p, d)) + 0.3 + 0.3 * rng.standard_normal((n, d)) @ L.T
    return LinearGaussian.fit(theta, x), theta, x


@pytest.mark.parametrize("sde", [VESDE(sigma_max=5.0), VPSDE()])
def test_score_is_the_diffused_gaussian_score(sde):
    bl, theta, x = _fitted()
    cov = bl.evecs @ np.diag(bl.evals) @ bl.evecs.T
    resid = theta - bl.mean(x)
    np.testing.assert_allclose(cov, np.cov(resid.T) * (len(x) - 1) / (len(x) - x.shape[1] - 1), rtol=1e-10)
    rng = np.random.default_rng(1)
    z, mean = rng.standard_normal((7, 3)), bl.mean(x[:7])
    for t in (1e-3, 0.3, 0.9):
        alpha, sigma = (float(v) for v in sde.marginal(np.float64(t)))
        prec = np.linalg.inv(alpha ** 2 * cov + sigma ** 2 * np.eye(3))
        exact = -(z - alpha * mean) @ prec.T
        np.testing.assert_allclose(bl.score(z, mean, alpha, sigma), exact, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(bl.jacobian(alpha, sigma), -prec, rtol=1e-10, atol=1e-12)
        assert bl.trace(alpha, sigma) == pytest.approx(-np.trace(prec), rel=1e-12)
        # per-row times give the same rows
        ts = np.full(7, t)
        a, s = sde.marginal(ts)
        np.testing.assert_allclose(bl.score(z, mean, a, s), exact, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(bl.jacobian(a, s)[3], -prec, rtol=1e-10, atol=1e-12)


def test_jacobian_matches_finite_differences_and_device_score_the_plain_one():
    bl, _, x = _fitted(seed=2)
    be = get_backend("numpy")
    rng = np.random.default_rng(3)
    z, mean = rng.standard_normal((5, 3)), bl.mean(x[:1])
    alpha, sigma, eps = 0.8, 0.4, 1e-6
    fd = np.stack([(bl.score(z + eps * e, mean, alpha, sigma) - bl.score(z - eps * e, mean, alpha, sigma)) / (2 * eps)
                   for e in np.eye(3)], axis=-1)  # fd[r, i, k] = d s_i / d z_k
    np.testing.assert_allclose(fd, np.broadcast_to(bl.jacobian(alpha, sigma), fd.shape), rtol=1e-6, atol=1e-8)
    s = np.zeros_like(z)
    bl.add_score(be, s, z, mean, alpha, sigma)
    np.testing.assert_allclose(s, bl.score(z, mean, alpha, sigma), rtol=1e-12)
    a = np.linspace(0.5, 1.0, 5)
    s = np.ones_like(z)
    bl.add_score(be, s, z, mean, a, a / 2)
    np.testing.assert_allclose(s, 1.0 + bl.score(z, mean, a, a / 2), rtol=1e-12)


def test_target_shift_is_sigma_times_the_score_at_the_perturbed_point():
    bl, theta, x = _fitted(seed=4)
    rng = np.random.default_rng(5)
    z = rng.standard_normal((6, 3))
    alpha, sigma = rng.uniform(0.3, 1.0, 6), rng.uniform(0.05, 3.0, 6)
    theta_t = alpha[:, None] * theta[:6] + sigma[:, None] * z
    want = sigma[:, None] * bl.score(theta_t, bl.mean(x[:6]), alpha, sigma)
    np.testing.assert_allclose(bl.target_shift(bl.residual(theta[:6], x[:6]), alpha, sigma, z), want, rtol=1e-10)


def _model(sde, baseline, dtype=np.float64):
    net = ScoreNetwork([3, 16, 16, 12], [2, 16, 16, 8], [16, 16, 3])
    return ScoreModel(net, sde, gaussian=baseline, baseline=True), net.init(0, dtype)


@pytest.mark.parametrize("sde", [VESDE(sigma_max=5.0), VPSDE()])
def test_training_loss_is_the_dsm_loss_of_the_total_score(sde):
    """TrainStep with a baseline (its loss: that of the weights before its update) against
    mean (sigma (net / c_out + s_G) + z)^2 formed by hand from the network's forward pass."""
    bl, theta, x = _fitted(seed=6)
    be = get_backend("numpy")
    model, params = _model(sde, bl)
    B = 8
    rng = np.random.default_rng(7)
    t, z = rng.uniform(1e-3, 1.0, B), rng.standard_normal((B, 3))
    opt = Adam(be, params.copy(), 1e-3)  # the loss returned is that of the weights before the update
    step = TrainStep(model, be, opt, B, np.float64)
    loss = step(theta[:B], x[:B], t, z, residual=bl.residual(theta[:B], x[:B]))
    alpha, sigma, c_in, c_out, tau = model.coefficients(t)
    theta_t = alpha[:, None] * theta[:B] + sigma[:, None] * z
    ws = model.net.workspace(be, B, np.float64, train=True)
    out = model.net.forward(be, params, c_in[:, None] * theta_t, tau, ws, x=x[:B])
    s = out / c_out[:, None] + bl.score(theta_t, bl.mean(x[:B]), alpha, sigma)
    assert loss == pytest.approx(np.mean((sigma[:, None] * s + z) ** 2), rel=1e-10)
    with pytest.raises(ValueError, match="residual"):
        step(theta[:B], x[:B], t, z)


@pytest.mark.parametrize("sde", [VESDE(sigma_max=5.0), VPSDE()])
def test_field_score_divergence_and_jacobian_include_the_baseline(sde):
    bl, theta, x = _fitted(seed=8)
    be = get_backend("numpy")
    model, params = _model(sde, bl)
    plain = ScoreModel(model.net, sde)
    xs = x[:1]
    xc = model.condition(be, params, xs)
    assert xc.shape == (1, 16 + 3)
    rng = np.random.default_rng(9)
    z = rng.standard_normal((5, 3))
    for t in (0.05, 0.6):
        alpha, sigma = (float(v) for v in sde.marginal(np.float64(t)))
        want = (ScoreField(plain, be, params, plain.condition(be, params, xs), 5, np.float64).score(z, t).copy()
                + bl.score(z, bl.mean(xs), alpha, sigma))
        field = ScoreField(model, be, params, xc, 5, np.float64, divergence="exact")
        np.testing.assert_allclose(field.score(z, t), want, rtol=1e-10)
        # per-row times: the same rows
        np.testing.assert_allclose(ScoreField(model, be, params, xc, 5, np.float64).score(z, np.full(5, t)), want,
                                   rtol=1e-10)
        # div v by central differences of v
        v, div = field.velocity_div(z, t)
        eps = 1e-6
        fd = sum((field.velocity(z + eps * e, t)[:, k] - field.velocity(z - eps * e, t)[:, k]) / (2 * eps)
                 for k, e in enumerate(np.eye(3)))
        np.testing.assert_allclose(div, fd, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(v, field.velocity(z, t), rtol=1e-12)
        # the Jacobian rows (per-row x parts)
        s_j, jac = ScoreJacobian(model, be, params, np.repeat(xc, 5, axis=0), np.float64)(z, t)
        np.testing.assert_allclose(s_j, want, rtol=1e-10)
        fdj = np.stack([(field.score(z + eps * e, t).copy() - field.score(z - eps * e, t).copy()) / (2 * eps)
                        for e in np.eye(3)], axis=-1)
        np.testing.assert_allclose(jac, fdj, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def trained_with_baseline():
    prior = sn.Normal(np.zeros(D), np.ones(D))
    theta = prior.sample(2500, seed=1)
    inference = sn.NPSE(prior, sde="ve", seed=0, show_progress=False, baseline="gaussian")
    return inference.append_simulations(theta, simulate(theta, 2)).train()


def test_linear_gaussian_posterior_with_the_baseline(trained_with_baseline):
    """The problem of tests/test_npse.py, where the baseline is the posterior up to the fit's error:
    the log-density correlation there misses 0.99 without a baseline (test_npse.py's docstring)."""
    post = trained_with_baseline
    samples = post.sample(4000, x=X_O, seed=3)
    np.testing.assert_allclose(samples.mean(0), MEAN, atol=0.05)
    np.testing.assert_allclose(samples.var(0) / VAR, 1.0, atol=0.1)
    theta = MEAN + np.sqrt(VAR) * np.random.default_rng(5).standard_normal((1000, D))
    lp = post.log_prob(theta, x=X_O)
    assert np.corrcoef(lp, analytic_log_prob(theta))[0, 1] > 0.99
    assert np.mean(np.abs(lp - analytic_log_prob(theta))) < 0.1


def test_baseline_survives_save_load_and_serves_iid_and_batched(trained_with_baseline, tmp_path):
    post = trained_with_baseline
    path = tmp_path / "post.npz"
    post.save(path)
    back = sn.load(path)
    assert back.model.baseline and back.model.gaussian is not None
    np.testing.assert_array_equal(back.model.gaussian.coef, post.model.gaussian.coef)
    theta = post.sample(50, x=X_O, seed=1)
    np.testing.assert_allclose(back.log_prob(theta, x=X_O), post.log_prob(theta, x=X_O), rtol=1e-6)
    xs = np.stack([X_O, X_O + 0.5])
    batched = post.sample_batched(300, xs, seed=2)
    assert batched.shape == (2, 300, D)
    np.testing.assert_allclose(batched[1].mean(0), MEAN + VAR * 0.5 / 0.3, atol=0.1)
    iid = post.sample(500, x=xs, seed=3)  # two i.i.d. trials: the posterior given both
    var2 = 1.0 / (1.0 + 2.0 / 0.3)
    np.testing.assert_allclose(iid.mean(0), var2 * (X_O + X_O + 0.5 - 2.0) / 0.3, atol=0.1)


def test_auto_baseline_keeps_the_run_with_the_lower_validation_loss():
    """baseline="auto" trains both models from the same random state: each run is bit for bit the
    run of its fixed option, and the kept one has the lower held-out loss. On this problem the fit
    IS the posterior, so the baseline must win."""
    prior = sn.Normal(np.zeros(D), np.ones(D))
    theta = prior.sample(2500, seed=1)
    x = simulate(theta, 2)
    runs = {}
    for baseline in (None, "gaussian", "auto"):
        inference = sn.NPSE(prior, sde="ve", seed=0, show_progress=False, baseline=baseline)
        runs[baseline] = (inference, inference.append_simulations(theta, x).train(max_steps=400))
    auto, post = runs["auto"]
    losses = auto.summary["baseline_val_losses"]
    assert losses == {None: runs[None][0].summary["best_val_loss"],
                      "gaussian": runs["gaussian"][0].summary["best_val_loss"]}
    assert losses["gaussian"] < losses[None]
    assert auto.summary["baseline"] == "gaussian" and auto.summary["best_val_loss"] == losses["gaussian"]
    assert post.model.baseline
    np.testing.assert_array_equal(post.sample(100, x=X_O, seed=4), runs["gaussian"][1].sample(100, x=X_O, seed=4))


def test_bad_baseline_options():
    prior = sn.Normal(np.zeros(2), np.ones(2))
    with pytest.raises(ValueError, match="baseline"):
        sn.NPSE(prior, baseline="linear")
    with pytest.raises(ValueError, match="baseline_min_var"):
        sn.NPSE(prior, baseline="gaussian", baseline_min_var=-1.0)
    with pytest.raises(ValueError, match="likelihood score"):
        sn.NLSE(prior, baseline="gaussian")
    with pytest.raises(ValueError, match="likelihood score"):
        sn.NLSE(prior, baseline="auto")
    with pytest.raises(ValueError, match="evals"):
        LinearGaussian(np.zeros((3, 2)), np.array([1.0, 0.0]), np.eye(2))


@pytest.mark.parametrize("sde", [VESDE(sigma_max=5.0), VPSDE()])
def test_start_is_the_fits_diffused_gaussian(sde):
    """base_sample draws N(alpha_T m, alpha_T^2 S + sigma_T^2 I) and base_log_prob is its density;
    without a fit both are the SDE's base."""
    bl, _, x = _fitted(seed=10)
    model, _ = _model(sde, bl)
    mean = bl.mean(x[:1])
    alpha, sigma = (float(v) for v in sde.marginal(np.float64(sde.T)))
    cov = alpha ** 2 * (bl.evecs * bl.evals) @ bl.evecs.T + sigma ** 2 * np.eye(3)
    draws = model.base_sample(200_000, np.random.default_rng(11), mean)
    np.testing.assert_allclose(draws.mean(0), alpha * mean[0], atol=4 * np.sqrt(cov.diagonal().max() / 200_000))
    np.testing.assert_allclose(np.cov(draws.T), cov, rtol=0.02, atol=0.02 * cov.diagonal().max())
    z = draws[:5]
    r = z - alpha * mean
    want = -0.5 * (np.einsum("ri,ij,rj->r", r, np.linalg.inv(cov), r) + np.linalg.slogdet(2 * np.pi * cov)[1])
    np.testing.assert_allclose(model.base_log_prob(z, mean), want, rtol=1e-10)
    plain = ScoreModel(model.net, sde)
    np.testing.assert_array_equal(plain.base_sample(4, 3), sde.prior_sample(4, 3, 3))
    np.testing.assert_array_equal(plain.base_log_prob(z), sde.prior_log_prob(z))


def test_a_file_without_the_fit_loads_and_starts_from_the_sde(trained_with_baseline, tmp_path):
    """Files written before the fit existed (no gaussian_* arrays, no baseline entry) load as before."""
    from npz_files import rewrite_npz
    path = tmp_path / "post.npz"
    post = trained_with_baseline
    post.model.baseline = False  # a plain network with a fit, as NPSE() without baseline= makes
    try:
        post.save(path)
    finally:
        post.model.baseline = True
    rewrite_npz(path, drop_gaussian_coef=1, drop_gaussian_evals=1, drop_gaussian_evecs=1, baseline=None)
    back = sn.load(path)
    assert back.model.gaussian is None and not back.model.baseline
    assert np.all(np.isfinite(back.sample(20, x=X_O, seed=1)))


def test_fit_rows_fits_the_gaussian_on_the_prior_rows_only():
    """A sequential run's later rounds draw a truncated prior: regressing theta on x over those rows
    gives too small a residual variance. With ``fit_rows`` the fit sees only the first rows (the prior's)
    and its variance is the analytic posterior variance; over all rows it is far too small. 1-D,
    theta ~ N(0, 1), x = theta + N(0, 1): posterior variance 1/2 (as gaussian_linear: prior and
    noise of equal variance), then 6,000 rows from the prior truncated to |theta| < 0.3."""
    prior = sn.Normal(np.zeros(1), np.ones(1))
    rng = np.random.default_rng(0)
    theta = np.concatenate([rng.standard_normal((2000, 1)), rng.uniform(-0.3, 0.3, (6000, 1))])
    x = theta + rng.standard_normal(theta.shape)
    want = 0.5

    def fitted_var(**kw):
        inference = sn.NPSE(prior, sde="ve", seed=0, show_progress=False, hidden=16, backend="numpy")
        post = inference.append_simulations(theta, x).train(max_steps=2, **kw)
        return float(post.model.gaussian.evals[0] * post.theta_std.std[0] ** 2)  # raw units

    assert abs(fitted_var(fit_rows=2000) / want - 1) < 0.1
    assert fitted_var() / want < 0.7  # the truncated rows shrink it
    with pytest.raises(ValueError, match="fit_rows"):
        fitted_var(fit_rows=8001)
    with pytest.raises(ValueError, match="fit_rows"):
        fitted_var(fit_rows=2)
    # without fit_rows a fit over fewer rows than dim(x) + 2 is still made (least squares' minimum norm)
    few = sn.NPSE(sn.Normal(np.zeros(2), np.ones(2)), sde="ve", seed=0, show_progress=False, hidden=16,
                  backend="numpy").append_simulations(rng.standard_normal((6, 2)), rng.standard_normal((6, 5)))
    assert np.all(np.isfinite(few.train(max_steps=2).model.gaussian.evals))
