"""Finite-difference checks of the hand-written network in float64: every activation, every
layer (through the whole network), the parameter gradient and the forward-mode tangents."""
import numpy as np
import pytest

from snpse_np.backend import get_backend
from snpse_np.backends import numpy_ref
from snpse_np.nn import ScoreNetwork

BE = get_backend("numpy")
F64 = np.float64


def small_net(act="silu"):
    return ScoreNetwork([3, 7, 6, 5], [4, 6, 5], [9, 8, 3], activation=act, t_embed_dim=6)


def run(net, p, theta, x, tau, train=True):
    ws = net.workspace(BE, theta.shape[0], F64, tangents=theta.shape[1], train=train)
    out = net.forward(BE, p, theta, tau, ws, x=x)
    return out.copy(), ws


@pytest.mark.parametrize("act", numpy_ref.ACTIVATIONS)
def test_activation_derivative_matches_central_difference(act):
    z = np.linspace(-6, 6, 1001)
    z = z[np.abs(z) > 1e-3]  # relu's kink
    h = 1e-6
    fd = (numpy_ref.act_value(z + h, act) - numpy_ref.act_value(z - h, act)) / (2 * h)
    assert np.max(np.abs(numpy_ref.act_grad(z, act) - fd)) < 1e-8


def test_silu_is_stable_for_large_inputs():
    z = np.array([-1e4, -50.0, 0.0, 50.0, 1e4], dtype=np.float32)
    h = numpy_ref.act_value(z, "silu")
    assert np.all(np.isfinite(h)) and h[-1] == 1e4 and h[0] == 0.0


def test_sinusoidal_embedding_layout():
    out = np.empty((2, 64))
    numpy_ref.sinusoidal_embedding(out, np.array([0.0, 0.7]))
    assert np.allclose(out[0, :32], 0) and np.allclose(out[0, 32:], 1)
    assert np.isclose(out[1, 0], np.sin(0.7)) and np.isclose(out[1, 31], np.sin(0.7 * 1e-4))
    assert np.isclose(out[1, 32], np.cos(0.7)) and np.isclose(out[1, 1], np.sin(0.7 * 10000 ** (-1 / 31)))


@pytest.mark.parametrize("act", ["silu", "gelu", "tanh"])
def test_parameter_gradient_matches_finite_differences(act):
    rng = np.random.default_rng(1)
    net = small_net(act)
    p = net.init(rng, F64)
    theta, x, tau = rng.normal(size=(5, 3)), rng.normal(size=(5, 4)), rng.uniform(0.01, 3, 5)
    w = rng.normal(size=(5, 3))  # loss = sum(w * out)
    out, ws = run(net, p, theta, x, tau)
    grads = np.empty_like(p)
    net.backward(BE, p, w, ws, grads)
    # every parameter, one at a time, by central differences
    fd = np.empty_like(p)
    h = 1e-6
    for i in range(p.size):
        pp, pm = p.copy(), p.copy()
        pp[i] += h
        pm[i] -= h
        fd[i] = (np.sum(w * run(net, pp, theta, x, tau)[0]) - np.sum(w * run(net, pm, theta, x, tau)[0])) / (2 * h)
    rel = np.linalg.norm(grads - fd) / np.linalg.norm(fd)
    assert rel < 1e-6
    # and per layer, so a wrong block cannot hide behind a large one
    for name, g in net.views(grads).items():
        f = net.views(fd)[name]
        assert np.linalg.norm(g - f) <= 1e-6 * max(np.linalg.norm(f), 1e-3), name


def test_tangent_matches_finite_differences_and_jacobian_trace():
    rng = np.random.default_rng(2)
    net = small_net()
    p = net.init(rng, F64)
    theta, x, tau = rng.normal(size=(4, 3)), rng.normal(size=(4, 4)), rng.uniform(0.01, 3, 4)
    _, ws = run(net, p, theta, x, tau)
    eye = np.zeros((3, 4, 3))
    for k in range(3):
        eye[k, :, k] = 1
    jac_cols = net.tangent(BE, p, eye, ws).copy()  # (K, B, d): column k of the Jacobian per row
    h = 1e-6
    for k in range(3):
        tp, tm = theta.copy(), theta.copy()
        tp[:, k] += h
        tm[:, k] -= h
        fd = (run(net, p, tp, x, tau)[0] - run(net, p, tm, x, tau)[0]) / (2 * h)
        assert np.linalg.norm(jac_cols[k] - fd) < 1e-6 * np.linalg.norm(fd)
    tr = np.empty(4)
    numpy_ref.trace_rows(tr, jac_cols, eye)
    assert np.allclose(tr, np.einsum("kbk->b", jac_cols))


def test_condition_equals_training_path():
    """The cached x part (sampling) gives the same output as running the x-MLP (training)."""
    rng = np.random.default_rng(3)
    net = small_net()
    p = net.init(rng, F64)
    theta, tau = rng.normal(size=(6, 3)), rng.uniform(0.01, 3, 6)
    x1 = rng.normal(size=(1, 4))
    out_train, _ = run(net, p, theta, np.repeat(x1, 6, 0), tau)
    ws = net.workspace(BE, 6, F64)
    out_cond = net.forward(BE, p, theta, tau, ws, xc=net.condition(BE, p, x1))
    assert np.allclose(out_train, out_cond, rtol=1e-12, atol=1e-12)


def test_paper_sizes_and_pytorch_init():
    net = ScoreNetwork.paper(5, 8)
    assert net.theta_sizes == [5, 256, 256, 30] and net.x_sizes == [8, 256, 256, 32]
    assert net.head_sizes == [256, 256, 5]
    p = net.views(net.init(0))
    fan = 30 + 32 + 64
    assert np.abs(p["head.0.Wx"]).max() <= 1 / np.sqrt(fan)
    assert np.abs(p["theta.1.W"]).max() <= 1 / 16 and np.abs(p["theta.1.W"]).max() > 0.9 / 16


def test_shared_time_fold_and_in_place_workspace_match_the_training_path():
    """Sampling folds one x row and one time row into the head bias, and runs activations in
    place; both must give the training path's output."""
    rng = np.random.default_rng(4)
    net = small_net()
    p = net.init(rng, F64)
    theta = rng.normal(size=(7, 3))
    tau = np.full(7, 0.37)
    x1 = rng.normal(size=(1, 4))
    out_train, _ = run(net, p, theta, np.repeat(x1, 7, 0), tau)
    ws = net.workspace(BE, 7, F64)  # inference workspace: in place
    assert ws.th_h[0] is ws.th_z[0]
    out_fold = net.forward(BE, p, theta, 0.37, ws, xc=net.condition(BE, p, x1))  # one float: folded
    assert np.allclose(out_train, out_fold, rtol=1e-12, atol=1e-12)
    out_rows = net.forward(BE, net.views(p), theta, tau, ws, xc=net.condition(BE, p, x1))  # per-row tau
    assert np.allclose(out_train, out_rows, rtol=1e-12, atol=1e-12)
