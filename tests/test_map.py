"""ScorePosterior.map: its pieces exactly (the quadratic fit, the KDE pick, the merge), then on a
tiny training that the ascent ends at a zero of the learned score, that the polished result is
the maximiser of the posterior's OWN log-density (found here independently on a dense grid),
inside a box prior's support when the likelihood pulls outside, and for i.i.d. trials. MAP accuracy against the analytic mode (the target < 0.01) needs a real
training: benchmarks/bench_map.py prints it."""
import numpy as np
import pytest

import snpse_np as sn
from snpse_np.posterior import _kde_top, _merge, _newton_from_fit, _quadratic_design

LP = dict(method="rk4", steps=10)  # map's default log-density estimator


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_the_quadratic_fit_finds_the_maximiser_of_a_quadratic(d):
    rng = np.random.default_rng(d)
    u = _quadratic_design(d)
    assert u.shape == (1 + 2 * d + d * (d - 1), d) and np.all(u[0] == 0)
    M = rng.standard_normal((d, d))
    A = -(M @ M.T + 0.5 * np.eye(d))
    b = 0.3 * rng.standard_normal(d)
    f = 2.0 + u @ b + 0.5 * np.einsum("ki,ij,kj->k", u, A, u)
    assert np.allclose(_newton_from_fit(u, f), np.linalg.solve(A, -b))
    assert _newton_from_fit(u, -f) is None  # convex: no step
    f_missing = f.copy()
    f_missing[1:] = -np.inf  # too few finite values to fit
    assert _newton_from_fit(u, f_missing) is None


def test_kde_top_and_merge():
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(0, 0.1, (200, 2)), rng.normal(5, 1.0, (20, 2))])
    top = _kde_top(z, 10)
    assert np.all(top < 200)  # the dense cluster
    pts = np.array([[0.0, 0.0], [1e-4, 0.0], [1.0, 1.0], [1.0 + 5e-4, 1.0], [1.0, 1.0 - 1e-4], [3.0, 0.0]])
    merged = _merge(pts, 1e-3)
    assert merged.shape == (3, 2) and np.allclose(merged[0], [1.0, 1.0])  # most supported first


@pytest.fixture(scope="module")
def tiny():
    prior = sn.Normal(np.zeros(2), np.ones(2))
    theta = prior.sample(1500, seed=0)
    x = theta - 1 + np.sqrt(0.3) * np.random.default_rng(1).standard_normal(theta.shape)
    inference = sn.NPSE(prior, sde="vp", seed=0, hidden=64, show_progress=False, backend="numpy")
    return inference.append_simulations(theta, x).train(max_epochs=15)


def _grid_argmax(post, x, centre, half, n=41):
    g = np.linspace(-half, half, n)
    pts = centre + np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    lp = post.log_prob(pts, x=x, **LP)
    return pts[np.argmax(lp)], lp.max(), g[1] - g[0]


def test_polished_map_maximises_the_posteriors_own_log_density(tiny):
    x_o = np.zeros(2)
    mode = tiny.map(x=x_o, seed=0, polish_rounds=3)
    assert mode.shape == (2,)
    best, best_lp, step = _grid_argmax(tiny, x_o, mode, 0.6)
    lp_mode = tiny.log_prob(mode[None], x=x_o, **LP)[0]
    assert lp_mode >= best_lp - 1e-4  # no grid point (spacing 0.03) beats it
    assert np.max(np.abs(best - mode)) <= step


def test_map_is_a_zero_of_the_learned_score(tiny):
    """noise=0: the ascent's end at t_min, where the learned score vanishes; by default the ascent
    continues at a slightly larger noise, which moves the mode by a fraction of the posterior width."""
    from snpse_np.score import ScoreField
    x_o = np.zeros(2)
    mode = tiny.map(x=x_o, seed=0, noise=0.0)
    z = tiny.theta_std.forward(mode[None]).astype(tiny.dtype)
    field = ScoreField(tiny.model, tiny.backend, tiny.params, tiny._condition(x_o), 1, tiny.dtype)
    typical = np.abs(field.score(z + 0.5, tiny.sde.t_min)).max()
    assert np.abs(field.score(z, tiny.sde.t_min)).max() < 1e-3 * typical
    default = tiny.map(x=x_o, seed=0)
    std = tiny.sample(2000, x=x_o, seed=1).std(0)
    assert np.all(np.abs(default - mode) < 0.5 * std)
    # reproducible with the same seed, stable across seeds
    assert np.array_equal(tiny.map(x=x_o, seed=0), default)
    assert np.allclose(tiny.map(x=x_o, seed=1), default, atol=2e-3)


def test_map_of_iid_trials_maximises_their_log_density(tiny):
    X = np.array([[0.2, -0.1], [-0.3, 0.4], [0.1, 0.0]])
    mode = tiny.map(x=X, seed=0, polish_rounds=3)
    best, best_lp, step = _grid_argmax(tiny, X, mode, 0.3, n=21)
    assert tiny.log_prob(mode[None], x=X, **LP)[0] >= best_lp - 1e-4
    assert np.max(np.abs(best - mode)) <= step
    assert np.all(np.isfinite(tiny.map(x=X, seed=0)))


def test_map_stays_in_a_box_prior():
    """x_o beyond the box's corner: the likelihood pulls the mode against the box (the true
    mode is the corner (1, 1)); the MAP is inside the support and beats every grid point of the
    box on the posterior's own log-density."""
    prior = sn.BoxUniform(-np.ones(2), np.ones(2))
    theta = prior.sample(1500, seed=2)
    x = theta + np.sqrt(0.3) * np.random.default_rng(3).standard_normal(theta.shape)
    post = sn.NPSE(prior, sde="ve", seed=0, hidden=64, show_progress=False, backend="numpy").append_simulations(
        theta, x).train(max_epochs=15)
    x_o = np.array([1.6, 1.6])
    assert prior.support_contains(post.map(x=x_o, seed=0)[None])[0]
    mode = post.map(x=x_o, seed=0, polish_rounds=3)
    assert prior.support_contains(mode[None])[0]
    g = np.linspace(-1, 1, 41)
    pts = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    lp = post.log_prob(pts, x=x_o, **LP)
    assert post.log_prob(mode[None], x=x_o, **LP)[0] >= lp.max() - 1e-4
    assert np.all(mode > 0.5), mode  # in the corner's quadrant


@pytest.mark.parametrize("kw,match", [
    (dict(t=2.0), "t must lie"),
    (dict(noise=-1.0), "noise"),
    (dict(num_init=0), "num_init"),
    (dict(log_prob_method="edm"), "unknown ODE method"),
    (dict(x=np.zeros((2, 3))), "shape"),
    (dict(x=np.array([np.nan, 0.0])), "NaN"),
])
def test_map_checks_its_inputs(tiny, kw, match):
    kw = dict(dict(x=np.zeros(2)), **kw)
    with pytest.raises(ValueError, match=match):
        tiny.map(**kw)
