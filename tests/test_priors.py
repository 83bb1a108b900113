"""Priors: sampling moments, normalised log-densities, support, and clear errors."""
import numpy as np
import pytest

import snpse_np as sn


def test_box_uniform():
    p = sn.BoxUniform([-1, 0], [1, 4])
    s = p.sample(50000, seed=0)
    assert s.shape == (50000, 2) and np.all(s >= p.low) and np.all(s <= p.high)
    assert np.allclose(s.mean(0), [0, 2], atol=0.02)
    assert np.allclose(p.log_prob(s[:3]), -np.log(8))
    assert p.log_prob(np.array([[2.0, 1.0]]))[0] == -np.inf
    assert not p.support_contains([[0.0, 5.0]])[0]


def test_normal_and_lognormal_log_prob_integrate_to_one():
    # 1-D quadrature of exp(log_prob) on a fine grid
    for prior, grid in [(sn.Normal([0.3], [0.7]), np.linspace(-8, 8, 200001)),
                        (sn.LogNormal([-0.2], [0.5]), np.linspace(1e-6, 40, 400001))]:
        dens = np.exp(prior.log_prob(grid[:, None]))
        assert abs(np.trapezoid(dens, grid) - 1) < 1e-4
    ln = sn.LogNormal([-3.0, 0.0], [0.5, 0.2])
    s = ln.sample(100000, seed=1)
    assert np.allclose(np.log(s).mean(0), [-3, 0], atol=0.01)
    assert ln.log_prob([[-1.0, 1.0]])[0] == -np.inf


def test_multivariate_normal_matches_independent_normal_and_moments():
    mvn = sn.MultivariateNormal([1.0, 2.0], cov=np.diag([4.0, 0.25]))
    nrm = sn.Normal([1.0, 2.0], [2.0, 0.5])
    th = nrm.sample(10, seed=2)
    assert np.allclose(mvn.log_prob(th), nrm.log_prob(th))
    cov = np.array([[1.0, 0.8], [0.8, 2.0]])
    mvn = sn.MultivariateNormal([0, 0], precision=np.linalg.inv(cov))
    assert np.allclose(np.cov(mvn.sample(200000, seed=3).T), cov, atol=0.03)


def test_seeds_are_explicit_and_reproducible():
    p = sn.Normal(np.zeros(3), np.ones(3))
    assert np.array_equal(p.sample(5, seed=7), p.sample(5, seed=7))
    g = np.random.default_rng(7)
    a = p.sample(5, seed=g)
    b = p.sample(5, seed=g)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("make,match", [
    (lambda: sn.BoxUniform([0, 0], [1]), "same shape"),
    (lambda: sn.BoxUniform([1], [0]), "high > low"),
    (lambda: sn.Normal([0], [-1]), "scale > 0"),
    (lambda: sn.MultivariateNormal([0, 0], cov=np.eye(3)), "shape"),
    (lambda: sn.MultivariateNormal([0, 0], cov=[[1, 2], [2, 1]]), "positive definite"),
    (lambda: sn.BoxUniform([np.nan], [1]), "finite"),
])
def test_bad_prior_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_wrong_theta_dimension():
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        sn.BoxUniform([0, 0], [1, 1]).log_prob(np.zeros((4, 3)))


# ------------------------------------------------------------------ issue 12: shapes, NaN rows

@pytest.mark.parametrize("cls", [sn.Normal, sn.LogNormal])
def test_loc_and_scale_shapes_must_agree(cls):
    with pytest.raises(ValueError, match="loc and scale must have the same shape"):
        cls([0.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="loc and scale must have the same shape"):
        cls([0.0, 0.0, 0.0], [1.0, 2.0])
    # a scalar spreads over the other's dimensions, and the density is the product of the marginals
    p = cls([0.1, -0.2], 0.5)
    assert p.dim == 2 and np.array_equal(p.scale, [0.5, 0.5])
    q = cls(0.3, [0.5, 2.0])
    assert q.dim == 2 and np.array_equal(q.loc, [0.3, 0.3])
    th = np.array([[0.7, 1.1]])
    one = [cls([q.loc[j]], [q.scale[j]]).log_prob(th[:, j:j + 1])[0] for j in range(2)]
    assert q.log_prob(th)[0] == pytest.approx(sum(one), rel=1e-12)


@pytest.mark.parametrize("prior", [sn.Normal([0.0, 1.0], [1.0, 2.0]), sn.LogNormal([0.0, 1.0], [1.0, 2.0]),
                                   sn.BoxUniform([-1.0, -1.0], [1.0, 1.0]),
                                   sn.MultivariateNormal([0.0, 1.0], cov=[[1.0, 0.3], [0.3, 2.0]])],
                         ids=lambda p: type(p).__name__)
def test_rows_with_nan_or_inf_get_minus_inf_not_nan(prior):
    th = np.array([[0.5, 0.5], [np.nan, 0.5], [0.5, np.inf], [-np.inf, np.nan]])
    lp = prior.log_prob(th)
    assert np.isfinite(lp[0]) and np.all(lp[1:] == -np.inf)
    assert list(prior.support_contains(th)) == [True, False, False, False]


def test_covariance_with_inf_or_singular_precision_is_refused():
    with pytest.raises(ValueError, match="finite"):
        sn.MultivariateNormal([0.0, 0.0], cov=[[np.inf, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="positive definite"):
        sn.MultivariateNormal([0.0, 0.0], precision=[[1.0, 1.0], [1.0, 1.0]])


def test_complex_parameters_and_theta_are_refused():
    with pytest.raises(ValueError, match="complex"):
        sn.Normal([1j], [1.0])
    with pytest.raises(ValueError, match="complex"):
        sn.BoxUniform([0.0], [1.0]).log_prob(np.array([[0.5 + 0.1j]]))
