"""SDE marginals against a fine-step simulation of the forward SDE, and the base densities."""
import numpy as np
import pytest

from snpse_np.sde import SubVPSDE, VESDE, VPSDE, make_sde, max_pairwise_distance

SDES = [VESDE(0.05, 3.0), VPSDE(), SubVPSDE()]


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
def test_marginal_mean_and_std_match_forward_simulation(sde):
    rng = np.random.default_rng(0)
    theta0 = np.array([1.5, -0.5])
    n, steps = 20000, 2000
    th = np.tile(theta0, (n, 1))
    grid = np.linspace(0.0, 1.0, steps + 1)
    checks = {500: None, 1000: None, 2000: None}
    for i in range(steps):
        t, h = grid[i], grid[i + 1] - grid[i]
        th = th + sde.drift_coef(t) * th * h + sde.diffusion(t) * np.sqrt(h) * rng.standard_normal(th.shape)
        if i + 1 in checks:
            checks[i + 1] = th.copy()
    for k, sample in checks.items():
        t = grid[k]
        alpha, sigma = sde.marginal(t)
        # the simulation starts at theta0 exactly; VE's marginal ignores sigma_min^2 at t = 0
        var_expected = sigma ** 2 - (sde.sigma_min ** 2 if sde.name == "ve" else 0.0)
        se_mean = np.sqrt(var_expected / n)
        assert np.all(np.abs(sample.mean(0) - alpha * theta0) < 5 * se_mean + 1e-3 * sigma), (t, sample.mean(0))
        assert np.all(np.abs(sample.var(0) / var_expected - 1) < 0.04), (t, sample.var(0), var_expected)


def test_closed_forms():
    vp = VPSDE(0.1, 11.0)
    a1, s1 = vp.marginal(1.0)
    assert np.isclose(a1, 0.062, atol=1e-3) and np.isclose(s1, 0.998, atol=1e-3)
    assert np.isclose(vp.marginal(1e-4)[1], 0.0032, atol=1e-4)
    ve = VESDE(0.01, 3.0)
    assert np.isclose(ve.marginal(0.0)[1], 0.01) and np.isclose(ve.marginal(1.0)[1], 3.0)
    sub = SubVPSDE()
    assert np.isclose(sub.marginal(0.5)[1], 1 - vp.marginal(0.5)[0] ** 2)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
def test_prior_sample_and_log_prob(sde):
    s = sde.prior_sample(20000, 3, seed=0)
    assert np.allclose(s.std(0), sde.prior_std, rtol=0.03)
    lp = sde.prior_log_prob(np.zeros((1, 3)))
    assert np.isclose(lp[0], -1.5 * np.log(2 * np.pi * sde.prior_std ** 2))


def test_max_pairwise_distance_blocked_equals_brute_force():
    a = np.random.default_rng(0).normal(size=(301, 4))
    brute = np.sqrt(((a[:, None] - a[None]) ** 2).sum(-1)).max()
    assert np.isclose(max_pairwise_distance(a, block=64), brute)


def test_bad_sde_arguments():
    with pytest.raises(ValueError, match="unknown sde"):
        make_sde("edm")
    with pytest.raises(ValueError):
        VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(RuntimeError, match="sigma_max"):
        VESDE().marginal(0.5)


# ------------------------------------------------------------------ issue 12: parameters, repr

@pytest.mark.parametrize("make,match", [
    (lambda: VESDE(sigma_min=float("nan")), "sigma_min must be finite"),
    (lambda: VESDE(sigma_max=float("inf")), "sigma_max must be finite"),
    (lambda: VESDE(sigma_min=-1.0), "sigma_min must be > 0"),
    (lambda: VPSDE(beta_max=float("inf")), "beta_max must be finite"),
    (lambda: VPSDE(beta_min=float("nan")), "beta_min must be finite"),
    (lambda: SubVPSDE(t_min=float("nan")), "t_min must be finite"),
    (lambda: VPSDE(beta_min="0.1"), "beta_min must be a real number"),
    (lambda: make_sde(VESDE(), sigma_min=0.1), "given with an SDE instance"),
])
def test_nan_inf_and_misplaced_sde_parameters_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_repr_with_sigma_max_unset_and_config_round_trip():
    from snpse_np.sde import sde_from_config
    assert repr(VESDE()) == "VESDE(sigma_min=0.01, sigma_max=None, t_min=0.0001)"
    assert str(VESDE(0.05, 3.0)) == "VESDE(sigma_min=0.05, sigma_max=3, t_min=0.0001)"
    for sde in (VESDE(0.05, 3.123456789012345), VESDE(), VPSDE(0.2, 9.0, t_min=1e-3), SubVPSDE()):
        again = sde_from_config(sde.config())
        assert type(again) is type(sde) and again.config() == sde.config()
    with pytest.raises(ValueError, match="unknown parameters"):
        sde_from_config(dict(name="ve", sigma_min=0.1, beta_max=3.0))
