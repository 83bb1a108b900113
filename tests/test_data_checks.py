"""Degenerate training data: named warnings for constant columns, refusals for theta outside the
prior's support (unless asked for) and for values that overflow the z-scoring."""
import warnings

import numpy as np
import pytest

import snpse_np as sn

PRIOR = sn.BoxUniform(-np.ones(3), np.ones(3))


def _data(n=200):
    theta = PRIOR.sample(n, seed=0)
    return theta, theta + 0.1 * np.random.default_rng(1).standard_normal(theta.shape)


def test_a_constant_theta_column_is_named():
    theta, x = _data()
    theta[:, 1] = 0.25
    with pytest.warns(RuntimeWarning, match=r"theta column 1 \(0-based\) is constant \(0.25\).*cannot be learnt"):
        sn.NPSE(PRIOR, backend="numpy").append_simulations(theta, x)


def test_a_constant_x_column_is_named_and_an_observation_off_it_refused():
    theta, x = _data()
    x[:, 2] = -4.0
    inference = sn.NPSE(PRIOR, backend="numpy", hidden=16, show_progress=False)
    with pytest.warns(RuntimeWarning, match=r"x column 2 \(0-based\) is constant \(-4\).*no information"):
        inference.append_simulations(theta, x)
    post = inference.train(max_epochs=1, min_steps_per_epoch=5)
    assert post.sample(4, x=[0.1, 0.2, -4.0], seed=0, method="rk4", steps=5).shape == (4, 3)
    # once, samples came back near 1e4 for a prior on [-1, 1]: x - mean fed to untrained weights
    with pytest.raises(ValueError, match="x column 2 .* was constant"):
        post.sample(4, x=[0.1, 0.2, 1.0])


def test_varying_columns_and_single_rows_give_no_warning():
    theta, x = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sn.NPSE(PRIOR, backend="numpy").append_simulations(theta, x).append_simulations(theta[:1], x[:1])


def test_theta_outside_the_support_is_refused_unless_asked_for():
    theta, x = _data()
    theta[5] = [1.5, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"1 rows of theta lie outside the prior's support \(first: row 5"):
        sn.NPSE(PRIOR, backend="numpy").append_simulations(theta, x)
    inference = sn.NPSE(PRIOR, backend="numpy").append_simulations(theta, x, allow_outside_prior=True)
    assert inference.get_simulations()[0].shape == (200, 3)


@pytest.mark.parametrize("value", [1e300, -1e200, 1e155])
def test_values_that_overflow_the_z_scoring_are_refused(value):
    theta, x = _data()
    x[17, 1] = value  # once: std = inf, so the whole column became 0 after z-scoring
    with pytest.raises(ValueError, match="x column 1 .* cannot be z-scored"):
        sn.NPSE(PRIOR, backend="numpy").append_simulations(theta, x)
