"""Calibration diagnostics (snpse_np.diagnostics) on an EXACT score field and on a deliberately
over-confident one, plus the statistics against scipy.

The test double is an amortised posterior of the linear-Gaussian model theta ~ N(0, I_2),
x ~ N(theta, diag(L)): q(theta | x) = N(S x / L, S), S = 1 / (1 + 1/L) per dimension. It samples
and evaluates log-densities with the package's own RK45 probability-flow ODE driven by the exact
score of the perturbed posterior, -(theta - alpha mu(x)) / (alpha^2 S + sigma^2) (VE SDE), one
mean per row (the per-row conditioning of ``sample_batched``). ``scale=c`` multiplies the score
by c: the flow then contracts (the PF-ODE gives |theta - mu| ~ (S + sigma^2)^(c/2)), a
consistent but over-confident posterior for c > 1.
"""
import numpy as np
import pytest

from snpse_np import diagnostics as dg
from snpse_np.backend import get_backend
from snpse_np.sampling import ode_rk45
from snpse_np.score import Field
from snpse_np.sde import VESDE

L = np.array([0.5, 1.5])
S = 1.0 / (1.0 + 1.0 / L)


class RowGaussianField(Field):
    """Exact (scale 1) or scaled score of N(alpha mu_r, alpha^2 S + sigma^2) for row r."""

    def __init__(self, sde, means, scale):
        self.sde, self.means, self.scale = sde, means, scale
        self.backend = get_backend("numpy")
        self.dtype = np.float64

    def _coef(self, t, n):
        alpha, sigma = self.sde.marginal(np.broadcast_to(np.asarray(t, dtype=np.float64), (n,)))
        return alpha[:, None], alpha[:, None] ** 2 * S + sigma[:, None] ** 2

    def score(self, theta, t):
        alpha, var = self._coef(t, theta.shape[0])
        return -self.scale * (theta - alpha * self.means) / var

    def velocity(self, theta, t):
        t = np.broadcast_to(np.asarray(t, dtype=np.float64), (theta.shape[0],))
        f, g = self.sde.drift_coef(t)[:, None], self.sde.diffusion(t)[:, None]
        return f * theta - 0.5 * g * g * self.score(theta, t)

    def velocity_div(self, theta, t):
        t = np.broadcast_to(np.asarray(t, dtype=np.float64), (theta.shape[0],))
        _, var = self._coef(t, theta.shape[0])
        f, g = self.sde.drift_coef(t), self.sde.diffusion(t)
        div = theta.shape[1] * f + 0.5 * g * g * self.scale * np.sum(1.0 / var, axis=1)
        return self.velocity(theta, t), div


class GaussianPosterior:
    """The amortised posterior double (module docstring) with sample_batched / log_prob_batched."""

    dim_theta = dim_x = 2

    def __init__(self, scale=1.0):
        self.sde, self.scale = VESDE(0.01, 5.0), scale

    def _means(self, x, n):
        return np.repeat(S * x / L, n, axis=0)

    def sample_batched(self, n, x, seed=None):
        rng = np.random.default_rng(seed)
        means = self._means(x, n)
        field = RowGaussianField(self.sde, means, self.scale)
        # start from the exact p_1 = N(alpha_1 mu, alpha_1^2 S + sigma_1^2): the base pi = N(0, sigma_max^2)
        # would add the SDE's own pi-vs-p_1 mismatch (a bias of mu sqrt(S / (S + sigma_max^2)))
        alpha, var = field._coef(1.0, means.shape[0])
        theta = alpha * means + np.sqrt(var) * rng.standard_normal(means.shape)
        return ode_rk45(field, theta, rtol=1e-4, atol=1e-4)[0].reshape(x.shape[0], n, 2)

    def log_prob_batched(self, theta, x):
        m, n, _ = theta.shape
        field = RowGaussianField(self.sde, self._means(x, n), self.scale)
        th1, delta, _ = ode_rk45(field, theta.reshape(m * n, 2), rtol=1e-4, atol=1e-4, with_div=True, forward=True)
        # the exact p_1 as the base (as in sample_batched): pi = N(0, sigma_max^2) would be off by
        # up to ~0.6 nats here (|theta_1| ~ 10 against means ~ 1)
        alpha, var = field._coef(1.0, m * n)
        base = -0.5 * np.sum((th1 - alpha * field.means) ** 2 / var + np.log(2 * np.pi * var), axis=1)
        return (base + delta).reshape(m, n)


def joint(m, seed):
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((m, 2))
    return theta, theta + np.sqrt(L) * rng.standard_normal((m, 2))


def test_the_double_is_exact():
    """Its samples have the analytic moments and its ODE log-density is the analytic one."""
    post = GaussianPosterior()
    x = np.array([[0.7, -1.2]])
    s = post.sample_batched(20_000, x, seed=0)[0]
    assert np.allclose(s.mean(0), S * x[0] / L, atol=0.02)
    assert np.allclose(s.var(0), S, rtol=0.03)
    lp = post.log_prob_batched(s[None, :200], x)[0]
    exact = -0.5 * np.sum((s[:200] - S * x[0] / L) ** 2 / S + np.log(2 * np.pi * S), axis=1)
    assert np.max(np.abs(lp - exact)) < 2e-3


@pytest.fixture(scope="module")
def exact_sbc():
    theta, x = joint(3000, 1)
    return dg.sbc(GaussianPosterior(), theta, x, num_samples=100, seed=2, return_samples=True), theta, x


@pytest.fixture(scope="module")
def overconfident_sbc():
    theta, x = joint(3000, 1)
    return dg.sbc(GaussianPosterior(scale=1.2), theta, x, num_samples=100, seed=2, return_samples=True), theta, x


def test_sbc_ranks_are_uniform_on_the_exact_field(exact_sbc):
    res, _, _ = exact_sbc
    assert res["ranks"].shape == (3000, 2) and res["ranks"].min() >= 0 and res["ranks"].max() <= 100
    assert np.all(res["chi2_pvalue"] > 1e-3), res["chi2_pvalue"]
    assert np.all(res["ks_pvalue"] > 1e-3), res["ks_pvalue"]


def test_sbc_detects_the_overconfident_field(overconfident_sbc):
    res, _, _ = overconfident_sbc
    assert np.all(res["chi2_pvalue"] < 1e-6), res["chi2_pvalue"]
    # over-confidence: the truth falls in the extreme ranks too often (U-shaped histogram)
    extreme = np.mean((res["ranks"] < 10) | (res["ranks"] > 90))
    assert extreme > 0.25, extreme  # 0.19 expected (= 19/101) when calibrated


def test_expected_coverage_is_nominal_on_the_exact_field(exact_sbc):
    res, theta, x = exact_sbc
    cov = dg.expected_coverage(GaussianPosterior(), theta, x, samples=res["samples"])
    assert cov["levels"].size == 10
    assert np.max(np.abs(cov["coverage"] - cov["levels"])) <= 0.03, (cov["coverage"], cov["levels"])
    assert cov["ks_pvalue"] > 1e-3


def test_expected_coverage_detects_the_overconfident_field(overconfident_sbc):
    res, theta, x = overconfident_sbc
    cov = dg.expected_coverage(GaussianPosterior(scale=1.2), theta, x, samples=res["samples"])
    gap = cov["coverage"] - cov["levels"]
    assert np.all(gap[2:-1] < -0.05), gap  # the HPD regions hold the truth too rarely
    assert cov["ks_pvalue"] < 1e-6


def test_tarp_on_exact_and_overconfident_fields(exact_sbc, overconfident_sbc):
    (res, theta, _), (bad, _, _) = exact_sbc, overconfident_sbc
    good = dg.tarp(res["samples"], theta, seed=3)
    assert np.max(np.abs(good["ecp"] - good["alpha"])) < 0.03
    assert abs(good["atc"]) < 0.01 and good["ks_pvalue"] > 1e-3
    over = dg.tarp(bad["samples"], theta, seed=3)
    assert over["atc"] < -0.02 and over["ks_pvalue"] < 1e-6, (over["atc"], over["ks_pvalue"])


def test_rank_statistics_by_hand():
    samples = np.array([[[0.0, 5.0], [1.0, 6.0], [2.0, 7.0]]])  # (1, 3, 2)
    assert dg.rank_statistics(samples, np.array([[1.5, 4.0]])).tolist() == [[2, 0]]


def test_chi2_and_kolmogorov_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 3, 19, 60):
        for x in (0.1, 1.0, 5.0, 20.0, 80.0, 200.0):
            assert dg.chi2_sf(x, df) == pytest.approx(stats.chi2.sf(x, df), rel=1e-9, abs=1e-300)
    for m in (50, 1000):
        for d_stat in (0.02, 0.05, 0.1, 0.2):
            assert dg.kolmogorov_sf(d_stat, m) == pytest.approx(stats.kstwo.sf(d_stat, m), rel=0.05, abs=2e-3)


def test_uniformity_test_is_calibrated_and_powerful():
    rng = np.random.default_rng(4)
    p = np.array([dg.uniformity_test(rng.integers(0, 51, size=(500, 1)), 50)["chi2_pvalue"][0]
                  for _ in range(400)])
    assert 0.02 < np.mean(p < 0.05) < 0.09  # the test's size is its level
    skewed = np.minimum(rng.integers(0, 51, size=(500, 1)), rng.integers(0, 51, size=(500, 1)))
    assert dg.uniformity_test(skewed, 50)["chi2_pvalue"][0] < 1e-6


def test_ecdf_band_holds_its_confidence():
    z, lower, upper = dg.ecdf_band(200, 99, confidence=0.9, simulations=1000, seed=0)
    rng = np.random.default_rng(5)
    inside = 0
    for _ in range(500):
        u = (np.sort(rng.integers(0, 100, 200)) + 0.5) / 100
        ecdf = np.searchsorted(u, z, side="left") / 200
        inside += np.all((ecdf >= lower - 1e-12) & (ecdf <= upper + 1e-12))
    assert 0.85 <= inside / 500 <= 0.95


def test_posterior_predictive_reproduces_and_flags():
    post = GaussianPosterior()

    def sample(n, x, seed=None):
        return post.sample_batched(n, np.atleast_2d(x), seed=seed)[0]
    post.sample = sample

    def simulator(theta, seed):
        return theta + np.sqrt(L) * np.random.default_rng(seed).standard_normal(theta.shape)
    ok = dg.posterior_predictive(post, simulator, np.array([0.3, -0.4]), num_samples=2000, seed=0)
    assert ok["x"].shape == (2000, 2) and np.all((ok["quantile"] > 0.2) & (ok["quantile"] < 0.8))
    assert ok["distance_pvalue"] > 0.1
    # an x_o the model cannot produce from its own posterior predictive: x far in the tail
    far = dg.posterior_predictive(post, simulator, np.array([9.0, -9.0]), num_samples=2000, seed=0)
    assert far["distance_pvalue"] < 0.01 and far["quantile"][0] > 0.99


@pytest.mark.parametrize("bad,match", [
    (dict(theta=np.zeros((3, 2)), x=np.zeros((4, 2))), "same number of rows"),
    (dict(theta=np.zeros((0, 2)), x=np.zeros((0, 2))), "m >= 1"),
    (dict(theta=np.zeros((3, 3)), x=np.zeros((3, 2))), "dim_theta"),
    (dict(theta=np.full((3, 2), np.nan), x=np.zeros((3, 2))), "NaN"),
    (dict(theta=np.zeros((3, 2)), x=np.full((3, 2), np.inf)), "NaN or inf"),
    (dict(theta=np.zeros(2), x=np.zeros((1, 2))), "shape"),
])
def test_runners_check_their_inputs(bad, match):
    with pytest.raises(ValueError, match=match):
        dg.sbc(GaussianPosterior(), bad["theta"], bad["x"], num_samples=10)


def test_statistics_check_their_inputs():
    with pytest.raises(ValueError, match="shape"):
        dg.rank_statistics(np.zeros((3, 10, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="integers in 0..10"):
        dg.uniformity_test(np.array([[11]]), 10)
    with pytest.raises(ValueError, match="NaN"):
        dg.tarp(np.full((2, 5, 2), np.nan), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="levels"):
        dg.coverage_curve(np.zeros(5, int), 10, levels=[0.5, 1.5])


# ----------------------------------------------------------------------------- plots (snpse_np.plot)

def test_importing_the_plot_module_does_not_import_matplotlib():
    import subprocess
    import sys
    code = "import sys, snpse_np.plot, snpse_np.diagnostics; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_hpd_thresholds_hold_their_mass():
    from snpse_np.plot import CORNER_LEVELS, _hpd_thresholds
    g = np.linspace(-4, 4, 201)
    h = np.exp(-0.5 * (g[:, None] ** 2 + g[None, :] ** 2))
    for level, thr in zip(sorted(CORNER_LEVELS), _hpd_thresholds(h, CORNER_LEVELS)[::-1]):
        held = h[h >= thr].sum() / h.sum()
        assert abs(held - level) < 0.01, (level, held)
        # for a 2-D standard normal the level-q HPD region is the disc of radius sqrt(-2 log(1 - q))
        assert abs(np.sqrt(-2 * np.log(thr)) - np.sqrt(-2 * np.log(1 - level))) < 0.05


def test_mode_components():
    from snpse_np.plot import _components
    mask = np.zeros((10, 10), dtype=bool)
    mask[1:3, 1:3] = True
    mask[7:9, 6:9] = True
    mask[3, 3] = True  # touches the first block diagonally
    sizes = sorted(c.shape[1] for c in _components(mask))
    assert sizes == [5, 6]


def test_plots_write_files(tmp_path):
    pytest.importorskip("matplotlib")
    from snpse_np import plot
    rng = np.random.default_rng(0)
    two_modes = np.concatenate([rng.normal([-0.8, -0.6], 0.03, (3000, 2)), rng.normal([0.6, 0.8], 0.03, (3000, 2))])
    fig = plot.pairplot(two_modes, reference=two_modes[::-1], truth=[-0.8, -0.6], path=tmp_path / "pair.png")
    assert len(fig.axes[2].child_axes) == 2  # the joint panel zooms into both modes
    plot.pairplot(rng.standard_normal((500, 3)), path=tmp_path / "pair3.pdf", labels=["a", "b", "c"])
    ranks = rng.integers(0, 101, (300, 2))
    plot.rank_plot(ranks, 100, path=tmp_path / "ecdf.png")
    plot.rank_plot(ranks, 100, kind="hist", path=tmp_path / "hist.png")
    plot.coverage_plot(dg.DEFAULT_LEVELS, dg.DEFAULT_LEVELS, 300, path=tmp_path / "cov.png")
    plot.tarp_plot(np.linspace(0, 1, 11), np.linspace(0, 1, 11), 300, atc=0.01, path=tmp_path / "tarp.png")
    for name in ("pair.png", "ecdf.png", "hist.png", "cov.png", "tarp.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "pair3.pdf").read_bytes()[:4] == b"%PDF"
    assert not list(tmp_path.glob(".tmp_*"))  # atomic writes leave no temporaries
    with pytest.raises(ValueError, match="truth"):
        plot.pairplot(two_modes, truth=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="kind"):
        plot.rank_plot(ranks, 100, kind="violin")


def test_snpse_check_cli(tmp_path):
    """``snpse check`` end to end on a tiny two_moons posterior: every stage runs and reports."""
    import json

    import snpse_np as sn
    from snpse_np.cli import main
    task = sn.get_task("two_moons")
    theta = task.prior.sample(600, seed=0)
    x = sn.simulate(task.simulate, theta, seed=1, progress=False)
    post = sn.NPSE(task.prior, seed=0, hidden=32, show_progress=False, backend="numpy").append_simulations(
        theta, x).train(max_epochs=3)
    path = tmp_path / "post.npz"
    post.save(path)
    out = tmp_path / "check"
    args = ["check", str(path), "--task", "two_moons", "--num-sbc", "30", "--num-samples", "40", "--num-coverage",
            "10", "--coverage-samples", "10", "--num-predictive", "50", "--sampler-steps", "4", "--out", str(out),
            "--quiet", "--backend", "numpy"]
    assert main(args) == 0
    summary = json.loads((out / "check.json").read_text())
    assert summary["rounds"] == 30 and len(summary["sbc"]["chi2_pvalue"]) == 2
    assert len(summary["coverage"]["coverage"]) == 10 and summary["coverage"]["samples"] == 10
    assert np.isfinite(summary["tarp"]["atc"]) and len(summary["predictive"]["quantile"]) == 2
    with pytest.raises(SystemExit) as err:
        main(args[:-2] + ["--num-sbc", "0"])
    assert err.value.code == 2
