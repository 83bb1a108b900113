"""The ten sbibm tasks: API, simulators against independent checks, agreement with sbibm's files.

Needs the sbibm task files (see snpse_np.tasks.references); the tests that read them skip
when none are reachable without a download. scipy is a test-only dependency (ODE reference
solutions, Gaussian densities).
"""
import math
import subprocess
import sys

import numpy as np
import pytest

from snpse_np.tasks import TASK_NAMES, get_task, references

ALL_TASKS = (
    "gaussian_linear", "gaussian_linear_uniform", "slcp", "slcp_distractors", "bernoulli_glm",
    "bernoulli_glm_raw", "gaussian_mixture", "two_moons", "sir", "lotka_volterra",
)
DIMS = {  # name -> (dim_theta, dim_x)
    "gaussian_linear": (10, 10), "gaussian_linear_uniform": (10, 10), "slcp": (5, 8),
    "slcp_distractors": (5, 100), "bernoulli_glm": (10, 10), "bernoulli_glm_raw": (10, 100),
    "gaussian_mixture": (2, 2), "two_moons": (2, 2), "sir": (2, 10), "lotka_volterra": (4, 20),
}
SIGMA_LIMITS = {  # the authors' table (docs/paper.md 1.4); None where it has no entry
    "two_moons": (0.01, 3.0), "gaussian_linear_uniform": (0.01, 5.0),
    "gaussian_mixture": (0.01, 10.0), "slcp": (0.05, 8.0), "lotka_volterra": (0.05, 12.0),
    "sir": (0.01, 2.5), "gaussian_linear": (0.01, 7.0), "bernoulli_glm": (0.01, 10.0),
    "slcp_distractors": None, "bernoulli_glm_raw": None,
}
KS = range(1, 11)


def _have_data():
    try:
        references.find_source(download=False)
        return True
    except references.DataNotFoundError:
        return False


needs_data = pytest.mark.skipif(not _have_data(), reason="sbibm task files not reachable")


# --- registry and API ------------------------------------------------------------------------

def test_task_names():
    assert tuple(sorted(TASK_NAMES)) == tuple(sorted(ALL_TASKS))
    with pytest.raises(ValueError, match="two_moons"):
        get_task("three_moons")


def test_importing_does_not_import_numba():
    code = ("import sys, snpse_np, snpse_np.tasks as T\n"
            "for n in T.TASK_NAMES:\n"
            "    t = T.get_task(n); t.prior.sample(3, seed=0)\n"
            "    if n not in ('sir', 'lotka_volterra'): t.simulate(t.prior.sample(3, seed=0), seed=0)\n"
            "assert 'numba' not in sys.modules, 'numba imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ALL_TASKS)
def test_api(name):
    task = get_task(name)
    d, p = DIMS[name]
    assert (task.name, task.dim_theta, task.dim_x) == (name, d, p)
    assert task.prior.dim == d
    assert task.ve_sigma_limits == SIGMA_LIMITS[name]
    theta = task.prior.sample(7, seed=0)
    x = task.simulate(theta, seed=1)
    assert x.shape == (7, p) and x.dtype == np.float64 and np.all(np.isfinite(x))
    # Deterministic for a fixed seed (int or Generator), different for another seed.
    np.testing.assert_array_equal(x, task.simulate(theta, seed=1))
    np.testing.assert_array_equal(x, task.simulate(theta, seed=np.random.default_rng(1)))
    assert not np.array_equal(x, task.simulate(theta, seed=2))
    assert task.simulate(theta[0], seed=1).shape == (1, p)     # a vector is one row
    assert task.simulate(theta[:0], seed=1).shape == (0, p)
    with pytest.raises(ValueError, match="shape"):
        task.simulate(np.zeros((3, d + 1)))
    with pytest.raises(ValueError):
        task.simulate(np.zeros((2, 3, d)))


@needs_data
@pytest.mark.parametrize("name", ALL_TASKS)
def test_files_and_prior_support(name):
    task = get_task(name)
    for k in KS:
        x_o = task.observation(k)
        theta_o = task.true_parameters(k)
        assert x_o.shape == (task.dim_x,) and theta_o.shape == (task.dim_theta,)
        assert task.prior.support_contains(theta_o).all()
        assert np.isfinite(task.prior.log_prob(theta_o)).all()
    for bad in (0, 11, 1.5, "1", True):
        with pytest.raises(ValueError):
            task.observation(bad)


@needs_data
@pytest.mark.parametrize("name", ["sir", "lotka_volterra"])
def test_no_likelihood_for_ode_tasks(name):
    task = get_task(name)
    with pytest.raises(NotImplementedError):
        task.log_likelihood(task.true_parameters(1), 1)


def test_log_likelihood_arguments():
    task = get_task("gaussian_linear")
    theta = task.prior.sample(4, seed=0)
    with pytest.raises(ValueError):
        task.log_likelihood(theta)                              # neither k nor x
    with pytest.raises(ValueError):
        task.log_likelihood(theta, 1, x=np.zeros(10))           # both
    with pytest.raises(ValueError):
        task.log_likelihood(theta, x=np.zeros(9))
    assert task.log_likelihood(theta, x=np.zeros((4, 10))).shape == (4,)


# --- Gaussian tasks --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["gaussian_linear", "gaussian_linear_uniform"])
def test_gaussian_simulator_moments(name):
    task = get_task(name)
    theta = np.tile(task.prior.sample(1, seed=3), (40_000, 1))
    x = task.simulate(theta, seed=4)
    r = x - theta
    assert np.max(np.abs(r.mean(axis=0))) < 5 * math.sqrt(0.1 / 40_000)
    np.testing.assert_allclose(np.cov(r.T), 0.1 * np.eye(10), atol=0.005)
    # log-likelihood against an independent density.
    from scipy.stats import multivariate_normal
    xo = x[0]
    th = task.prior.sample(5, seed=5)
    want = [multivariate_normal(t, 0.1 * np.eye(10)).logpdf(xo) for t in th]
    np.testing.assert_allclose(task.log_likelihood(th, x=xo), want, rtol=1e-10)


@needs_data
def test_gaussian_linear_reference_is_analytic_posterior():
    task = get_task("gaussian_linear")
    for k in KS:
        ref = task.reference_samples(k)
        mean, cov = task.posterior_mean_cov(task.observation(k))
        np.testing.assert_allclose(ref.mean(axis=0), mean, atol=5 * math.sqrt(0.05 / 10_000) + 1e-3)
        np.testing.assert_allclose(np.cov(ref.T), cov, atol=0.004)


@needs_data
def test_gaussian_observations_are_plausible():
    # (x_o - theta*) / sqrt(0.1) should look standard normal over 10 observations x 10 dims.
    for name in ("gaussian_linear", "gaussian_linear_uniform"):
        task = get_task(name)
        z = np.concatenate([(task.observation(k) - task.true_parameters(k)) / math.sqrt(0.1) for k in KS])
        assert abs(z.mean()) < 0.4 and 0.7 < z.std() < 1.3


# --- SLCP ------------------------------------------------------------------------------------

def test_slcp_simulator_moments_and_likelihood():
    task = get_task("slcp")
    theta0 = np.array([0.7, -1.2, 1.1, -0.8, 0.6])
    x = task.simulate(np.tile(theta0, (30_000, 1)), seed=0)
    u = x.reshape(-1, 4, 2)
    s1, s2, rho = theta0[2] ** 2, theta0[3] ** 2, math.tanh(theta0[4])
    sigma = np.array([[s1 ** 2 + 1e-6, rho * s1 * s2], [rho * s1 * s2, s2 ** 2 + 1e-6]])
    for j in range(4):                       # each of the 4 points ~ N(m, Sigma)
        np.testing.assert_allclose(u[:, j].mean(axis=0), theta0[:2], atol=0.03)
        np.testing.assert_allclose(np.cov(u[:, j].T), sigma, rtol=0.05, atol=0.005)
    np.testing.assert_allclose(np.corrcoef(u[:, 0, 0], u[:, 1, 0])[0, 1], 0.0, atol=0.03)  # iid
    from scipy.stats import multivariate_normal
    th = task.prior.sample(6, seed=1)
    xo = x[0]
    for t, ll in zip(th, task.log_likelihood(th, x=xo)):
        m = t[:2]
        a, b, r = t[2] ** 2, t[3] ** 2, math.tanh(t[4])
        S = np.array([[a * a + 1e-6, r * a * b], [r * a * b, b * b + 1e-6]])
        want = sum(multivariate_normal(m, S).logpdf(xo.reshape(4, 2)[j]) for j in range(4))
        np.testing.assert_allclose(ll, want, rtol=1e-8)


@needs_data
def test_slcp_distractors_embed_slcp():
    from snpse_np.tasks import slcp
    pos = slcp.informative_positions()
    assert pos.tolist() == [22, 33, 23, 67, 42, 21, 16, 90]
    loc, scale_tril, perm = slcp.distractor_parameters()
    assert loc.shape == (20, 92) and scale_tril.shape == (20, 92, 92)
    assert sorted(perm.tolist()) == list(range(100))
    assert int(np.sum(np.diagonal(scale_tril, axis1=1, axis2=2) < 0)) == 342  # as in sbibm's file
    base, dis = get_task("slcp"), get_task("slcp_distractors")
    for k in KS:
        np.testing.assert_array_equal(dis.observation(k)[pos], base.observation(k))
        np.testing.assert_array_equal(dis.true_parameters(k), base.true_parameters(k))
    # Same seed -> the informative values equal plain SLCP's simulation.
    theta = base.prior.sample(50, seed=2)
    np.testing.assert_array_equal(dis.simulate(theta, seed=7)[:, pos], base.simulate(theta, seed=7))
    # No likelihood (the distractor density is numerically singular); SLCP's applies.
    with pytest.raises(NotImplementedError, match="slcp"):
        dis.log_likelihood(theta, 1)


def test_slcp_distractor_noise_marginals():
    # Every coordinate i of a multivariate t_2(loc, L L^T) is a 1-D t_2 with location loc_i and
    # scale |L_i,:|, so each distractor coordinate is an equal mixture of 20 scaled t_2's
    # (t_2 CDF: F(t) = 1/2 + t / (2 sqrt(2 + t^2))). Compare the empirical CDFs (KS distance).
    from snpse_np.tasks import slcp
    task = get_task("slcp_distractors")
    loc, scale_tril, perm = slcp.distractor_parameters()
    n = 20_000
    x = task.simulate(task.prior.sample(n, seed=0), seed=1)
    noise = x[:, np.argsort(perm)][:, 8:]
    assert np.all(np.isfinite(noise))
    for i in (0, 1, 45, 91):
        v = np.sort(noise[:, i])
        scale = np.linalg.norm(scale_tril[:, i, :], axis=1)                 # (20,)
        t = (v[:, None] - loc[None, :, i]) / scale[None, :]
        model_cdf = np.mean(0.5 + t / (2.0 * np.sqrt(2.0 + t * t)), axis=1)
        empirical = np.arange(1, n + 1) / n
        assert np.max(np.abs(model_cdf - empirical)) < 0.02


# --- Bernoulli GLM ---------------------------------------------------------------------------

@needs_data
def test_bernoulli_glm_summary_is_design_transpose_raw():
    from snpse_np.tasks.bernoulli_glm import design_matrix
    X = design_matrix()
    summary, raw = get_task("bernoulli_glm"), get_task("bernoulli_glm_raw")
    for k in KS:
        y = raw.observation(k)
        assert set(np.unique(y)) <= {0.0, 1.0}
        np.testing.assert_allclose(y @ X, summary.observation(k), atol=1e-5)
        np.testing.assert_array_equal(summary.reference_samples(k), raw.reference_samples(k))
        th = summary.reference_samples(k)[:50]
        np.testing.assert_allclose(summary.log_likelihood(th, k), raw.log_likelihood(th, k),
                                   atol=1e-4)


def test_bernoulli_glm_simulator():
    from snpse_np.tasks.bernoulli_glm import design_matrix, prior_precision
    X = design_matrix()
    stim = np.random.RandomState(42).randn(100).astype(np.float32)
    assert X[5, 3] == float(stim[3]) and X[1, 3] == 0.0 and np.all(X[:, 0] == 1.0)
    assert np.allclose(prior_precision(), prior_precision().T)
    summary, raw = get_task("bernoulli_glm"), get_task("bernoulli_glm_raw")
    theta = np.tile(summary.prior.sample(1, seed=0), (20_000, 1))
    y = raw.simulate(theta, seed=3)
    np.testing.assert_array_equal(summary.simulate(theta, seed=3), y @ X)
    rate = 1.0 / (1.0 + np.exp(-(X @ theta[0])))
    np.testing.assert_allclose(y.mean(axis=0), rate, atol=5 * 0.5 / math.sqrt(20_000))


# --- Gaussian mixture ------------------------------------------------------------------------

def test_gaussian_mixture_simulator_and_likelihood():
    task = get_task("gaussian_mixture")
    theta0 = np.array([2.0, -3.0])
    r = task.simulate(np.tile(theta0, (40_000, 1)), seed=0) - theta0
    np.testing.assert_allclose(r.var(axis=0), 0.5 * 1.0 + 0.5 * 0.01, rtol=0.05)
    # One mixture index per simulation (v1.1.0): the two coordinates share the component,
    # so |r| is small in both coordinates together or in neither.
    small = np.abs(r) < 0.35
    p_std = math.erf(0.35 / math.sqrt(2.0))               # P(|N(0,1)| < 0.35)
    np.testing.assert_allclose(np.mean(small.all(axis=1)), 0.5 * 1.0 + 0.5 * p_std ** 2, atol=0.01)
    from scipy.stats import multivariate_normal
    th = task.prior.sample(5, seed=1)
    xo = np.array([0.3, -0.2])
    want = [np.log(0.5 * multivariate_normal(t, np.eye(2)).pdf(xo)
                   + 0.5 * multivariate_normal(t, 0.01 * np.eye(2)).pdf(xo)) for t in th]
    np.testing.assert_allclose(task.log_likelihood(th, x=xo), want, rtol=1e-10)


# --- Two moons -------------------------------------------------------------------------------

def test_two_moons_simulator_matches_likelihood():
    task = get_task("two_moons")
    theta0 = np.array([0.3, -0.5])
    theta = np.tile(theta0, (20_000, 1))
    x = task.simulate(theta, seed=0)
    ll = task.log_likelihood(theta, x=x)
    assert np.all(np.isfinite(ll))                       # u >= 0 for every simulated x
    # The likelihood is the N(0.1, 0.01^2) density of the radius: recover r from it.
    z = np.sqrt(np.maximum(-2.0 * (ll + 0.5 * math.log(2 * math.pi * 0.01 ** 2)), 0.0))
    assert abs(np.mean(z ** 2) - 1.0) < 0.05


@needs_data
def test_two_moons_likelihood_at_reference_samples():
    task = get_task("two_moons")
    for k in KS:
        ll_ref = task.log_likelihood(task.reference_samples(k), k)
        assert np.all(np.isfinite(ll_ref))
        ll_prior = task.log_likelihood(task.prior.sample(10_000, seed=k), k)
        assert np.mean(ll_ref) > np.median(ll_prior) + 100.0
        assert np.isfinite(task.log_likelihood(task.true_parameters(k), k)).all()


# --- ODE tasks -------------------------------------------------------------------------------

def _lv_rhs(t, u, p):
    return [p[0] * u[0] - p[1] * u[0] * u[1], -p[2] * u[1] + p[3] * u[0] * u[1]]


def _sir_rhs(t, u, p):
    flow = p[0] * u[0] * u[1] / 1e6
    return [-flow, flow - p[1] * u[1], p[1] * u[1]]


def _max_rel_err(ours, ref):
    # relative error with a floor at 1e-6 of each state's range (I(t) or the predator can be tiny)
    scale = np.abs(ref) + 1e-6 * np.abs(ref).max(axis=0)
    return float(np.max(np.abs(ours - ref) / scale))


@needs_data
@pytest.mark.parametrize("name", ["sir", "lotka_volterra"])
def test_ode_trajectory_against_solve_ivp(name):
    from scipy.integrate import solve_ivp
    from snpse_np.tasks import lotka_volterra, sir
    mod, rhs = {"sir": (sir, _sir_rhs), "lotka_volterra": (lotka_volterra, _lv_rhs)}[name]
    task = get_task(name)
    t_eval = mod.SAVE_TIMES

    def reference(theta, tol):
        return solve_ivp(rhs, (0.0, t_eval[-1]), mod.U0, method="DOP853", t_eval=t_eval,
                         rtol=tol, atol=tol, args=(theta,)).y.T

    # The task's tolerances (1e-8) at the true parameters.
    theta_o = np.array([task.true_parameters(k) for k in KS])
    ours = task.trajectory(theta_o)
    assert ours.shape == (10, t_eval.size, mod.U0.size)
    for i in range(10):
        assert _max_rel_err(ours[i], reference(theta_o[i], 1e-10)) < 1e-6
    # Convergence: at tighter tolerances the integrator tracks scipy closer, on prior draws.
    theta = task.prior.sample(6, seed=0)
    ours = mod.trajectory(theta, rtol=1e-10, atol=1e-10)
    for i in range(6):
        assert _max_rel_err(ours[i], reference(theta[i], 1e-12)) < 1e-6


@needs_data
def test_lotka_volterra_observation_model():
    from snpse_np.tasks import lotka_volterra as lv
    task = get_task("lotka_volterra")
    # sbibm's observations sit at clamp(u(theta*)) * exp(0.1 eps): the log-ratios look N(0, 0.1^2).
    theta_o = np.array([task.true_parameters(k) for k in KS])
    u = task.trajectory(theta_o, lv.OBSERVATION_TIMES)           # (10, 10, 2)
    u = u.transpose(0, 2, 1).reshape(10, 20)
    eps = np.log(np.array([task.observation(k) for k in KS]) / np.clip(u, 1e-10, 1e4)) / 0.1
    assert abs(eps.mean()) < 0.3 and 0.8 < eps.std() < 1.2
    # Simulated noise around the trajectory has the model's moments.
    x = task.simulate(np.tile(theta_o[0], (5000, 1)), seed=0)
    eps = np.log(x / np.clip(u[0], 1e-10, 1e4)) / 0.1
    assert np.max(np.abs(eps.mean(axis=0))) < 0.1 and np.max(np.abs(eps.std(axis=0) - 1)) < 0.05


@needs_data
def test_sir_observation_model():
    from snpse_np.tasks import sir
    task = get_task("sir")
    theta_o = np.array([task.true_parameters(k) for k in KS])
    infected = task.trajectory(theta_o, sir.OBSERVATION_TIMES)[:, :, 1]   # (10, 10)
    p = np.clip(infected / 1e6, 0, 1)
    x_o = np.array([task.observation(k) for k in KS])
    sd = np.sqrt(1000 * p * (1 - p))
    assert np.all(np.abs(x_o - 1000 * p) <= 5 * sd + 1.0)           # binomial plausibility
    x = task.simulate(np.tile(theta_o[0], (5000, 1)), seed=0)
    assert np.all(x == np.round(x)) and np.all((x >= 0) & (x <= 1000))
    np.testing.assert_allclose(x.mean(axis=0), 1000 * p[0], atol=5 * sd[0].max() / math.sqrt(5000) + 1e-3)


def test_ode_failure_gives_nan_rows():
    from snpse_np.tasks import ode
    params = np.array([[0.6, 0.03, 0.7, 0.05], [0.6, 0.03, 0.7, 0.05]])
    out, steps = ode.solve("lotka_volterra", params, [30.0, 1.0], [0.0, 20.0], max_steps=5,
                           return_steps=True)
    assert np.all(np.isnan(out[:, 1])) and np.all(steps == -1)
    out = ode.solve("lotka_volterra", np.array([[np.nan, 0.03, 0.7, 0.05], params[0]]),
                    [30.0, 1.0], [0.0, 20.0])
    assert np.all(np.isnan(out[0])) and np.all(np.isfinite(out[1]))
    with pytest.raises(ValueError):
        ode.solve("lotka_volterra", params[:, :3], [30.0, 1.0], [0.0, 1.0])
    with pytest.raises(ValueError):
        ode.solve("lotka_volterra", params, [30.0, 1.0], [1.0, 0.5])
    with pytest.raises(ValueError):
        ode.solve("sir_model", params, [30.0, 1.0], [0.0, 1.0])


def test_ode_parallel_equals_serial():
    from snpse_np.tasks import lotka_volterra as lv
    theta = get_task("lotka_volterra").prior.sample(80, seed=1)
    a = lv.trajectory(theta, lv.OBSERVATION_TIMES, parallel=False)
    b = lv.trajectory(theta, lv.OBSERVATION_TIMES, parallel=True)
    np.testing.assert_array_equal(a, b)
