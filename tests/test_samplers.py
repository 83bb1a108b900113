"""Every sampler, driven by the EXACT score of a Gaussian, reproduces its mean and covariance;
the ODE log-density reproduces its log-density."""
import numpy as np
import pytest

from gaussian_field import GaussianField
from snpse_np.sampling import annealed_langevin, euler_maruyama, get_sampler, ode_fixed, ode_rk45, run_sampler
from snpse_np.sde import VESDE, VPSDE, SubVPSDE

MEAN = np.array([0.5, -1.0, 0.2])
A = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [-0.3, 0.2, 0.5]])
COV = A @ A.T * 0.5
N = 8000


def sdes():
    return [VESDE(0.01, 8.0), VPSDE(), SubVPSDE()]


def check_moments(samples, tol_mean=0.05, tol_cov=0.08):
    assert np.all(np.isfinite(samples))
    err_mean = np.abs(samples.mean(0) - MEAN) / np.sqrt(np.diag(COV))
    assert np.all(err_mean < tol_mean), err_mean
    cov = np.cov(samples.T)
    rel = np.linalg.norm(cov - COV) / np.linalg.norm(COV)
    assert rel < tol_cov, (cov, COV)


def start(field, seed):
    """Draws from the exact marginal p_1 = N(alpha_1 m, alpha_1^2 C + sigma_1^2 I): starting from
    the base pi instead would add the (SDE's, not the sampler's) mismatch between pi and p_1."""
    alpha, sigma = field.sde.marginal(1.0)
    cov = alpha ** 2 * COV + sigma ** 2 * np.eye(3)
    return np.random.default_rng(seed).multivariate_normal(alpha * MEAN, cov, size=N)


@pytest.mark.parametrize("sde", sdes(), ids=lambda s: s.name)
@pytest.mark.parametrize("method,steps", [("euler", 1000), ("heun", 60), ("rk4", 30)])
def test_fixed_step_ode(sde, method, steps):
    field = GaussianField(sde, MEAN, COV)
    theta, _ = ode_fixed(field, start(field, 0), steps, method)
    check_moments(theta)


@pytest.mark.parametrize("sde", sdes(), ids=lambda s: s.name)
def test_adaptive_rk45(sde):
    field = GaussianField(sde, MEAN, COV)
    theta, _, evals = ode_rk45(field, start(field, 1), rtol=1e-4, atol=1e-4)
    check_moments(theta)
    assert evals < 600


@pytest.mark.parametrize("sde", sdes(), ids=lambda s: s.name)
def test_euler_maruyama(sde):
    field = GaussianField(sde, MEAN, COV)
    theta = euler_maruyama(field, start(field, 2), 500, np.random.default_rng(3))
    check_moments(theta)


@pytest.mark.parametrize("sde", sdes(), ids=lambda s: s.name)
def test_predictor_corrector(sde):
    field = GaussianField(sde, MEAN, COV)
    theta = euler_maruyama(field, start(field, 4), 200, np.random.default_rng(5), corrector_steps=1)
    check_moments(theta)


# Annealed Langevin (no predictor): 600 levels x 1 Langevin step, N = 8,000 draws. The bounds are
# check_moments' (0.05 std in the mean: 4.5 standard errors at N = 8,000; 0.08 relative in the
# covariance): the step rule's stationary variance is v / (1 - snr^2), 2.6% wide at snr 0.16
# (``annealed_langevin``), plus ~1.6% sampling error. Measured (seed 7/8, 500 levels): VE mean errors
# <= 0.01, covariance 0.017; VP 0.035 / 0.028; sub-VP 0.044 / 0.036; 1,000 levels: all <= 0.02 / 0.023.
# 200 levels are far too few for VE (the chain lags the geometric annealing: variance 40x).
@pytest.mark.parametrize("sde", sdes(), ids=lambda s: s.name)
def test_annealed_langevin(sde):
    field = GaussianField(sde, MEAN, COV)
    theta = run_sampler("ald", field, start(field, 7), dict(steps=600), np.random.default_rng(8), corrector_steps=1)
    check_moments(theta)


def test_annealed_langevin_needs_a_corrector_and_unknown_samplers_raise():
    field = GaussianField(VESDE(0.01, 8.0), MEAN, COV)
    with pytest.raises(ValueError, match="corrector_steps >= 1"):
        annealed_langevin(field, start(field, 0)[:10], 5, np.random.default_rng(0), corrector_steps=0)
    assert callable(get_sampler("ald"))
    for name in ("ald2", "langevin", None):
        with pytest.raises(ValueError, match="unknown sampler"):
            get_sampler(name)
        with pytest.raises(ValueError, match="unknown sampler"):
            run_sampler(name, field, start(field, 0)[:10], dict(steps=5), np.random.default_rng(0))


@pytest.mark.parametrize("sde", sdes(), ids=lambda s: s.name)
@pytest.mark.parametrize("method", ["rk4", "rk45"])
def test_log_density_by_probability_flow(sde, method):
    field = GaussianField(sde, MEAN, COV)
    rng = np.random.default_rng(6)
    theta0 = MEAN + rng.normal(size=(200, 3)) @ A.T
    if method == "rk45":
        th1, delta, _ = ode_rk45(field, theta0.copy(), rtol=1e-6, atol=1e-6, with_div=True, forward=True)
    else:
        th1, delta = ode_fixed(field, theta0.copy(), 100, "rk4", with_div=True, forward=True)
    # end on the exact p_1 (not the base pi, which differs from p_1 by the SDE's own mismatch)
    logp = field.log_density_at(th1, 1.0) + delta
    exact = field.log_density_at(theta0, sde.t_min)
    assert np.max(np.abs(logp - exact)) < 0.01


def test_score_field_chunks_rows_on_the_cpu_like_one_pass():
    """On the CPU the network runs over CPU_CHUNK_ROWS-row chunks (and a ragged last chunk);
    the scores must equal one whole-batch pass, for one shared time and per-row times."""
    from snpse_np.backend import get_backend
    from snpse_np.nn import ScoreNetwork
    from snpse_np.score import CPU_CHUNK_ROWS, ScoreField
    from snpse_np.score import ScoreModel
    from snpse_np.sde import make_sde

    be = get_backend("numpy")
    rng = np.random.default_rng(0)
    net = ScoreNetwork([3, 16, 8], [2, 16, 8], [16, 16, 3])
    model = ScoreModel(net, make_sde("ve", sigma_max=4.0))
    p = net.init(rng, np.float64)
    xc = net.condition(be, p, rng.normal(size=(1, 2)))
    n = 2 * CPU_CHUNK_ROWS + 37
    theta = rng.normal(size=(n, 3))
    field = ScoreField(model, be, p, xc, n, np.float64)
    assert field.chunk == CPU_CHUNK_ROWS < n
    whole = ScoreField(model, be, p, xc, n, np.float64, divergence="exact")  # tangents: never chunked
    assert whole.chunk == n
    for t in (0.3, rng.uniform(0.01, 1.0, n)):
        np.testing.assert_allclose(field.score(theta, t).copy(), whole.score(theta, t), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sigma_min", [0.01, 0.001])
@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_truncation_default_estimator_on_ve(sigma_min, scale):
    """TSNPSE's truncation uses fixed-step RK4 (10 steps) for VE: against the exact log-density
    of a broad and a narrow Gaussian its error, up to a constant (which the quantile cancels),
    is as small as adaptive RK45's at rtol = atol = 1e-3 (measured sd 0.005-0.045 nats; RK45
    0.006-0.065), and the region it draws matches the exact one."""
    from snpse_np.truncation import default_log_prob_kwargs
    sde = VESDE(sigma_min, 8.0)
    kw = default_log_prob_kwargs(sde)
    assert kw == dict(method="rk4", steps=10)
    field = GaussianField(sde, MEAN, COV * scale ** 2)
    theta0 = MEAN + scale * np.random.default_rng(6).normal(size=(2000, 3)) @ A.T * np.sqrt(0.5)
    exact = field.log_density_at(theta0, sde.t_min)
    th1, delta = ode_fixed(field, theta0.copy(), kw["steps"], kw["method"], with_div=True, forward=True)
    err = field.log_density_at(th1, 1.0) + delta - exact
    assert err.std() < 0.05
    # the region decision {log p > 5e-3 quantile}, each estimator against its own quantile
    assert np.mean((err + exact > np.quantile(err + exact, 5e-3)) != (exact > np.quantile(exact, 5e-3))) < 0.002
    assert default_log_prob_kwargs(VPSDE()) == dict(rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("sde", sdes(), ids=lambda s: s.name)
def test_edm_grid_follows_the_power_law(sde):
    from snpse_np.sampling import edm_time_grid
    t = edm_time_grid(sde, 20)
    assert t[0] == sde.T and t[-1] == sde.t_min and np.all(np.diff(t) < 0)
    alpha, sigma = sde.marginal(t)
    root = (sigma / alpha) ** (1 / 7)
    # equal steps in sigma~^(1/7), up to the table's interpolation (1e-3 relative)
    np.testing.assert_allclose(np.diff(root), np.diff(root).mean(), rtol=1e-3)


@pytest.mark.parametrize("sde", sdes(), ids=lambda s: s.name)
@pytest.mark.parametrize("scale", [1.0, 0.02], ids=["wide", "narrow"])
def test_edm_heun_converges_at_second_order(sde, scale):
    """Heun on Karras et al.'s grid against RK45 at 1e-8 from the same start points, for a wide
    Gaussian and a narrow one (std 0.02-0.04: a posterior much narrower than the prior, as on the
    sbibm tasks in z-scored space). Measured RMS error / std at 20 steps (40 evaluations):
    wide 0.011 (ve), 0.018 (vp), 0.028 (subvp); narrow 0.036, 0.060, 0.092; halving the step
    divides it by 4.0-4.3. On the narrow one, uniform-in-t Heun with the same 40 evaluations
    is off by 0.20 (ve), 29 (vp) and 0.17 (subvp)."""
    from snpse_np.sampling import ode_edm
    cov = COV * scale ** 2
    field = GaussianField(sde, MEAN, cov)
    alpha, sigma = sde.marginal(1.0)
    th1 = np.random.default_rng(7).multivariate_normal(alpha * MEAN, alpha ** 2 * cov + sigma ** 2 * np.eye(3),
                                                      size=2000)
    ref, _, _ = ode_rk45(field, th1.copy(), rtol=1e-8, atol=1e-8 * scale, max_steps=20000)
    std = np.sqrt(np.diag(cov))

    def rms(a):
        return float(np.sqrt(np.mean(((a - ref) / std) ** 2)))

    e20, e40 = rms(ode_edm(field, th1.copy(), 20)), rms(ode_edm(field, th1.copy(), 40))
    assert e20 < 0.15, e20
    assert 3.0 < e20 / e40 < 5.5, (e20, e40)  # second order: h / 2 -> error / 4
    if scale < 1:
        heun, _ = ode_fixed(field, th1.copy(), 20, "heun")
        assert rms(heun) > 1.5 * e20, (rms(heun), e20)


def test_rk45_finishing_on_its_last_allowed_step_returns():
    field = GaussianField(VESDE(0.01, 8.0), MEAN, COV)
    _, _, evals = ode_rk45(field, start(field, 9)[:50], rtol=1e-3, atol=1e-3)
    attempts = (evals - 1) // 6  # one FSAL evaluation, then 6 per attempted step
    theta, _, _ = ode_rk45(field, start(field, 9)[:50], rtol=1e-3, atol=1e-3, max_steps=attempts)
    assert np.all(np.isfinite(theta))
    with pytest.raises(RuntimeError, match="did not finish"):
        ode_rk45(field, start(field, 9)[:50], rtol=1e-3, atol=1e-3, max_steps=attempts - 1)
