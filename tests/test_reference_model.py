"""The plain reference (snpse_np/reference.py) is the oracle of the fast path.

Float64 throughout. Two kinds of checks:

1. the reference itself against finite differences: the backward pass per parameter block
   (every entry), the DSM gradient per block (a random direction each), the Jacobian;
2. the fast path (nn.ScoreNetwork, npse.TrainStep with optim.Adam, score.ScoreField and the
   samplers) on the numpy and numba backends against the reference, on the same inputs.

Tolerances (float64). The two sides compute the same sums in other orders (the fast path splits
the head's first layer into three GEMMs and folds the shared time row into a bias, BLAS blocks its
sums, numba's kernels differ from numpy's in the last bits), so they differ by rounding: ~1e-16
relative per operation over a few layers of width <= 17. ``FP`` = rtol 1e-12, atol 1e-13 for
everything compared with the fast path (outputs, gradients, Adam's state, the EMA, scores,
divergences, several sampler steps). Measured on this machine, the worst comparison used 7% of
that budget (the score at t_min under VP/sub-VP with tau = log sigma: sde.py takes sigma_t
through log(exp(.)), 2-5e-13 relative off the reference's direct formula at t <= 1e-3) and
most used < 1%; a wrong formula (a factor, a sign, an index,
a missing term) is off by 1e-3 or more. Adam's second moment v ~ g^2 is compared relative only
(atol 1e-20): its entries can be 1e-20 and below. Finite differences: central differences with
h = 1e-6 have truncation error O(h^2) ~ 1e-12 and cancellation error ~1e-16 |L| / h ~ 1e-10 |L|,
so they are compared at 1e-7 relative (plus 10 eps |L| / h for a directional derivative near 0).
"""
import numpy as np
import pytest

from snpse_np import reference as ref
from snpse_np.backend import get_backend
from snpse_np.nn import ScoreNetwork
from snpse_np.npse import TrainStep
from snpse_np.optim import Adam
from snpse_np.sampling import edm_time_grid, euler_maruyama, ode_edm, ode_fixed
from snpse_np.score import ScoreField, ScoreModel
from snpse_np.sde import SubVPSDE, VESDE, VPSDE

F64 = np.float64
FP = dict(rtol=1e-12, atol=1e-13)
FD_RTOL = 1e-7
BACKENDS = ["numpy", "numba"]
B = 9


def small_net(act="silu"):
    # widths that are not multiples of anything, every block of the real network's layout
    return ScoreNetwork([3, 16, 11, 7], [4, 13, 10, 6], [17, 12, 3], activation=act, t_embed_dim=8)


def as_dict(net, flat):
    """The reference's parameters: named float64 arrays (copies)."""
    return {k: np.array(v, dtype=F64) for k, v in net.views(flat).items()}


def sdes():
    return [VESDE(0.01, 5.0), VPSDE(), SubVPSDE()]


def inputs(seed, net, n=B):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, net.dim_theta)), rng.normal(size=(n, net.dim_x)), rng.uniform(0.01, 3.0, n))


# ----------------------------------------------------------------------------- the reference itself

@pytest.mark.parametrize("act", ["silu", "gelu", "tanh"])
def test_reference_backward_matches_finite_differences_per_block(act):
    """loss = sum(w * out): the reference gradient of every parameter, block by block."""
    net = small_net(act)
    rng = np.random.default_rng(1)
    params = as_dict(net, net.init(rng, F64))
    theta, x, tau = inputs(2, net)
    w = rng.normal(size=(B, 3))
    _, cache = ref.network_forward(params, theta, x, tau, act)
    grads = ref.network_backward(params, cache, w, act)
    assert set(grads) == set(params)
    h = 1e-6

    def loss(p):
        return float(np.sum(w * ref.network_forward(p, theta, x, tau, act)[0]))

    for name, a in params.items():
        fd = np.empty_like(a)
        for i in np.ndindex(a.shape):
            plus, minus = dict(params), dict(params)
            plus[name], minus[name] = a.copy(), a.copy()
            plus[name][i] += h
            minus[name][i] -= h
            fd[i] = (loss(plus) - loss(minus)) / (2 * h)
        assert grads[name].shape == a.shape
        assert np.linalg.norm(grads[name] - fd) <= FD_RTOL * max(np.linalg.norm(fd), 1e-3), name


@pytest.mark.parametrize("sde", sdes(), ids=lambda s: s.name)
@pytest.mark.parametrize("precondition,time_input", [("noise", "sigma"), ("none", "t"), ("noise", "log_sigma")])
def test_reference_dsm_gradient_matches_finite_differences(sde, precondition, time_input):
    """The DSM loss's gradient, along a random direction in each parameter block."""
    net = small_net()
    rng = np.random.default_rng(3)
    params = as_dict(net, net.init(rng, F64))
    theta0, x, _ = inputs(4, net)
    t = rng.uniform(sde.t_min, 1.0, B)
    z = rng.normal(size=theta0.shape)
    weights = rng.uniform(0.5, 1.5, B)
    model = dict(precondition=precondition, floor=0.1, time_input=time_input, act="silu")
    loss, grads = ref.dsm_loss(params, theta0, x, t, z, sde, weights=weights, **model)
    h = 1e-6
    cancellation = 10 * np.finfo(F64).eps * abs(loss) / h  # the difference of two losses ~ |L|, over 2h
    for name, a in params.items():
        u = rng.normal(size=a.shape)
        plus, minus = dict(params), dict(params)
        plus[name], minus[name] = a + h * u, a - h * u
        fd = (ref.dsm_loss(plus, theta0, x, t, z, sde, weights=weights, **model)[0]
              - ref.dsm_loss(minus, theta0, x, t, z, sde, weights=weights, **model)[0]) / (2 * h)
        exact = float(np.sum(grads[name] * u))
        assert abs(exact - fd) <= FD_RTOL * abs(fd) + cancellation, name


def test_reference_jacobian_and_divergence_match_finite_differences():
    net = small_net("gelu")
    params = as_dict(net, net.init(5, F64))
    theta, x, tau = inputs(6, net)
    J = ref.network_jacobian(params, theta, x, tau, "gelu")
    h = 1e-6
    for k in range(3):
        e = np.zeros(3)
        e[k] = h
        fd = (ref.network_forward(params, theta + e, x, tau, "gelu")[0]
              - ref.network_forward(params, theta - e, x, tau, "gelu")[0]) / (2 * h)
        assert np.linalg.norm(J[:, :, k] - fd) <= FD_RTOL * np.linalg.norm(fd)
    # Tr(ds/dtheta) = (c_in / c_out) Tr J, by differences of the score itself
    sde, t = VPSDE(), 0.3
    model = dict(act="gelu")
    div = ref.score_divergence(params, theta, x, t, sde, **model)
    fd = np.zeros(B)
    for k in range(3):
        e = np.zeros(3)
        e[k] = h
        fd += (ref.score(params, theta + e, x, t, sde, **model)[:, k]
               - ref.score(params, theta - e, x, t, sde, **model)[:, k]) / (2 * h)
    np.testing.assert_allclose(div, fd, rtol=FD_RTOL, atol=FD_RTOL)


def test_reference_sde_coefficients_are_the_closed_forms():
    """alpha_t, sigma_t solve the moment ODEs of d theta = f theta dt + g dw:
    d alpha / dt = f alpha and d sigma^2 / dt = 2 f sigma^2 + g^2 (central differences in t)."""
    t, h = np.linspace(0.05, 0.95, 7), 1e-6
    for sde in sdes():
        f, g, alpha, sigma = ref.sde_coefficients(sde, t)
        _, _, a_p, s_p = ref.sde_coefficients(sde, t + h)
        _, _, a_m, s_m = ref.sde_coefficients(sde, t - h)
        np.testing.assert_allclose((a_p - a_m) / (2 * h), f * alpha, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose((s_p ** 2 - s_m ** 2) / (2 * h), 2 * f * sigma ** 2 + g ** 2, rtol=1e-7)


# ----------------------------------------------------------------------------- the network

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("act", ["silu", "relu", "gelu", "tanh"])
def test_network_passes_match_reference(backend, act):
    """forward (training path, and the sampling path through condition() with the shared-time
    fold), backward and the forward-mode tangents (the Jacobian columns)."""
    be = get_backend(backend)
    net = small_net(act)
    flat = net.init(7, F64)
    params = as_dict(net, flat)
    theta, x, tau = inputs(8, net)
    w = np.random.default_rng(9).normal(size=(B, 3))
    out_ref, cache = ref.network_forward(params, theta, x, tau, act)
    grads_ref = ref.network_backward(params, cache, w, act)
    J_ref = ref.network_jacobian(params, theta, x, tau, act)

    ws = net.workspace(be, B, F64, tangents=3, train=True)
    np.testing.assert_allclose(net.forward(be, flat, theta, tau, ws, x=x), out_ref, **FP)
    grads = np.empty_like(flat)
    net.backward(be, flat, w.copy(), ws, grads)
    for name, g in net.views(grads).items():
        np.testing.assert_allclose(g, grads_ref[name], **FP, err_msg=name)
    eye = np.zeros((3, B, 3))
    for k in range(3):
        eye[k, :, k] = 1.0
    cols = net.tangent(be, flat, eye, ws)  # cols[k] = J e_k
    np.testing.assert_allclose(np.moveaxis(cols, 0, -1), J_ref, **FP)

    # sampling: one observation, one time for all rows (folded into the bias)
    x1 = x[:1]
    xc = net.condition(be, flat, x1)
    ws_inf = net.workspace(be, B, F64)
    out_ref1, _ = ref.network_forward(params, theta, np.repeat(x1, B, 0), np.full(B, 0.37), act)
    np.testing.assert_allclose(net.forward(be, flat, theta, 0.37, ws_inf, xc=xc), out_ref1, **FP)


# ----------------------------------------------------------------------------- loss and training step

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sde", sdes(), ids=lambda s: s.name)
@pytest.mark.parametrize("weighted", [False, True])
def test_train_steps_match_reference(backend, sde, weighted):
    """Three npse.TrainStep calls (perturb, forward, DSM loss, backward, Adam, EMA) against
    three reference train_step calls on the same times and noise: the losses, gradients,
    parameters, Adam moments and the EMA."""
    be = get_backend(backend)
    net = small_net()
    model = ScoreModel(net, sde, precondition="noise", time_input="sigma", floor=0.1)
    flat = net.init(10, F64)
    params = as_dict(net, flat)
    lr, decay = 3e-3, 0.95
    opt = Adam(be, flat.copy(), lr=lr, ema_decay=decay)
    step = TrainStep(model, be, opt, B, F64, weighted=weighted)
    state = ref.adam_state(params, ema_decay=decay)
    rng = np.random.default_rng(11)
    theta0, x = rng.normal(size=(B, 3)), rng.normal(size=(B, 4))
    for k in range(3):
        t = rng.uniform(sde.t_min, 1.0, B)
        z = rng.normal(size=(B, 3))
        w = rng.uniform(0.3, 2.0, B) if weighted else None
        loss = step(theta0, x, t, z, None if w is None else np.sqrt(w))
        _, grads_ref = ref.dsm_loss(params, theta0, x, t, z, sde, weights=w)
        loss_ref, params, state = ref.train_step(params, state, theta0, x, t, z, lr, sde, ema_decay=decay,
                                                 weights=w)
        np.testing.assert_allclose(loss, loss_ref, **FP)
        for name in params:
            np.testing.assert_allclose(net.views(step.grads)[name], grads_ref[name], **FP, err_msg=name)
            np.testing.assert_allclose(net.views(opt.params)[name], params[name], **FP, err_msg=name)
            np.testing.assert_allclose(net.views(opt.m)[name], state["m"][name], **FP, err_msg=name)
            np.testing.assert_allclose(net.views(opt.v)[name], state["v"][name], rtol=1e-12, atol=1e-20,
                                       err_msg=name)  # v ~ g^2 is tiny: relative only
            np.testing.assert_allclose(net.views(opt.ema)[name], state["ema"][name], **FP, err_msg=name)
    assert opt.step_count == state["step"] == 3


# ----------------------------------------------------------------------------- score field and samplers

def field_and_reference(backend, sde, precondition="noise", time_input="sigma", divergence=None, seed=12):
    """A ScoreField of a small random network at one observation, and the same score through
    the reference (x repeated per row)."""
    be = get_backend(backend)
    net = small_net()
    model = ScoreModel(net, sde, precondition=precondition, time_input=time_input, floor=0.1)
    flat = net.init(seed, F64)
    params = as_dict(net, flat)
    x1 = np.random.default_rng(seed + 1).normal(size=(1, 4))
    field = ScoreField(model, be, flat, net.condition(be, flat, x1), B, F64, divergence=divergence)
    opts = dict(precondition=precondition, floor=0.1, time_input=time_input, act="silu")

    def score_fn(theta, t):
        return ref.score(params, theta, np.repeat(x1, theta.shape[0], 0), t, sde, **opts)

    def div_fn(theta, t):
        return ref.velocity_divergence(params, theta, np.repeat(x1, theta.shape[0], 0), t, sde, **opts)

    return field, score_fn, div_fn


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sde", sdes(), ids=lambda s: s.name)
@pytest.mark.parametrize("precondition,time_input", [("noise", "sigma"), ("none", "t"), ("noise", "log_sigma")])
def test_score_velocity_and_divergence_match_reference(backend, sde, precondition, time_input):
    field, score_fn, div_fn = field_and_reference(backend, sde, precondition, time_input, divergence="exact")
    theta = np.random.default_rng(13).normal(size=(B, 3))
    per_row = np.random.default_rng(14).uniform(sde.t_min, 1.0, B)
    for t in (0.42, sde.t_min, per_row):
        np.testing.assert_allclose(field.score(theta, t).copy(), score_fn(theta, t), **FP)
        v_ref = ref.velocity(theta, t, score_fn, sde)
        np.testing.assert_allclose(field.velocity(theta, t), v_ref, **FP)
        v, div = field.velocity_div(theta, t)
        np.testing.assert_allclose(v, v_ref, **FP)
        np.testing.assert_allclose(div, div_fn(theta, t), **FP)


def fixed_noise(draws):
    """A ``normal(out)`` that hands out the given draws in order (what the samplers consume)."""
    it = iter(draws)

    def normal(out):
        out[...] = next(it)
    return normal


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sde", sdes(), ids=lambda s: s.name)
@pytest.mark.parametrize("corrector_steps", [0, 1])
def test_euler_maruyama_and_corrector_match_reference(backend, sde, corrector_steps):
    field, score_fn, _ = field_and_reference(backend, sde)
    steps, snr = 3, 0.16
    rng = np.random.default_rng(15)
    theta0 = sde.prior_std * rng.normal(size=(B, 3))
    draws = [rng.normal(size=(B, 3)) for _ in range(steps * (1 + corrector_steps))]
    got = euler_maruyama(field, theta0.copy(), steps, None, corrector_steps=corrector_steps, snr=snr,
                         normal=fixed_noise(draws))
    grid = np.linspace(1.0, sde.t_min, steps + 1)
    theta, k = theta0.copy(), 0
    for i in range(steps):
        h = grid[i] - grid[i + 1]
        theta = ref.em_step(theta, grid[i], h, score_fn, sde, draws[k])
        k += 1
        for _ in range(corrector_steps):
            alpha = ref.langevin_alpha(sde, grid[i + 1], h)
            theta = ref.langevin_step(theta, grid[i + 1], score_fn, draws[k], snr, alpha)
            k += 1
    np.testing.assert_allclose(got, theta, **FP)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sde", sdes(), ids=lambda s: s.name)
@pytest.mark.parametrize("method", ["euler", "heun", "rk4"])
def test_probability_flow_steps_match_reference(backend, sde, method):
    field, score_fn, _ = field_and_reference(backend, sde)
    steps = 3
    theta0 = sde.prior_std * np.random.default_rng(16).normal(size=(B, 3))
    got, _ = ode_fixed(field, theta0.copy(), steps, method)
    grid = np.linspace(1.0, sde.t_min, steps + 1)
    theta = theta0.copy()
    for i in range(steps):
        theta = ref.pf_ode_step(lambda y, t: ref.velocity(y, t, score_fn, sde), theta, grid[i], grid[i + 1], method)
    np.testing.assert_allclose(got, theta, **FP)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sde", sdes(), ids=lambda s: s.name)
def test_log_density_ode_matches_reference(backend, sde):
    """(theta, Delta) forward in time from t_min to 1 with the exact trace, RK4."""
    field, score_fn, div_fn = field_and_reference(backend, sde, divergence="exact")
    steps = 2
    theta0 = np.random.default_rng(17).normal(size=(B, 3))
    got, delta = ode_fixed(field, theta0.copy(), steps, "rk4", with_div=True, forward=True)

    def rhs(y, t):
        theta = y[:, :3]
        return np.concatenate([ref.velocity(theta, t, score_fn, sde), div_fn(theta, t)[:, None]], axis=1)

    grid = np.linspace(1.0, sde.t_min, steps + 1)[::-1]
    y = np.concatenate([theta0, np.zeros((B, 1))], axis=1)
    for i in range(steps):
        y = ref.pf_ode_step(rhs, y, grid[i], grid[i + 1], "rk4")
    np.testing.assert_allclose(got, y[:, :3], **FP)
    np.testing.assert_allclose(delta, y[:, 3], **FP)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sde", sdes(), ids=lambda s: s.name)
def test_edm_heun_matches_reference(backend, sde):
    field, score_fn, _ = field_and_reference(backend, sde)
    steps = 4
    theta0 = sde.prior_std * np.random.default_rng(18).normal(size=(B, 3))
    got = ode_edm(field, theta0.copy(), steps)
    grid = edm_time_grid(sde, steps)  # the grid is the fast path's; each step is the reference's
    theta = theta0.copy()
    for i in range(steps):
        theta = ref.edm_heun_step(theta, grid[i], grid[i + 1], score_fn, sde)
    np.testing.assert_allclose(got, theta, **FP)
