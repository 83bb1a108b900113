"""The whole algorithm once more, small, slow and plain: numpy float64, no buffers, no speed-ups.

This file is the oracle of the fast path (``nn``, ``npse.TrainStep``, ``sampling``): the tests
run both on the same inputs and compare (tests/test_reference_model.py), and the backward pass
here is itself checked by finite differences. It is also the place to read the algorithm: every
function below is one step of docs/walkthrough.md, with the derivation next to the code. Nothing
in the package calls it.

What is here, in the order of the walkthrough (symbols as in its table):

- ``sde_coefficients``: f(t), g(t), alpha_t, sigma_t of the VE, VP and sub-VP SDEs;
- ``preconditioning``: c_in, c_out and the time input tau;
- ``network_forward`` / ``network_backward`` / ``network_jacobian``: the score network
  (the head's first layer on the explicit concatenation [theta_emb, x_emb, t_emb]);
- ``score``: s(theta, x, t) = net(c_in theta, x, tau) / c_out;
- ``dsm_loss``: the denoising score-matching loss and its gradient;
- ``adam_step``, ``ema_step``, ``train_step``: one training step with the weight EMA;
- ``em_step``, ``langevin_step``, ``pf_ode_step`` (Euler, Heun, RK4), ``edm_heun_step``: one step
  of each sampler;
- ``score_divergence``, ``velocity_divergence``: the exact trace for the log-density ODE.

Parameters are a dict of named float64 arrays with the names of ``nn.ScoreNetwork``'s layout
("theta.0.W" (n_in, n_out), "theta.0.b", ..., "x.i.W", "head.0.Wtheta", "head.0.Wx",
"head.0.Wt", "head.0.b", "head.i.W", ...); ``ScoreNetwork.views(flat)`` gives exactly that.
Gradients come back as a dict with the same names. Shapes: B rows, d = dim theta, p = dim x.

References: Song et al. 2021 (score SDEs, predictor-corrector, probability flow); Vincent 2011
(denoising score matching); Karras et al. 2022 (preconditioning, EDM sampler); Kingma & Ba 2015
(Adam); Sharrock et al. 2024 (NPSE/TSNPSE, the network).
"""
import math

import numpy as np

# ----------------------------------------------------------------------------- activations
# act(z) and act'(z), elementwise. sigmoid(z) = (1 + tanh(z / 2)) / 2 is the same function as
# 1 / (1 + exp(-z)) and never overflows.

GELU_C = math.sqrt(2.0 / math.pi)


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def act_forward(z, act):
    """act(z) elementwise, any shape; act one of "identity", "silu", "relu", "tanh", "gelu"."""
    if act == "identity":
        return z
    if act == "silu":        # z sigmoid(z)
        return z * _sigmoid(z)
    if act == "relu":
        return np.maximum(z, 0.0)
    if act == "tanh":
        return np.tanh(z)
    if act == "gelu":        # the tanh approximation: z (1 + tanh(u)) / 2, u = c (z + 0.044715 z^3)
        return 0.5 * z * (1.0 + np.tanh(GELU_C * (z + 0.044715 * z ** 3)))
    raise ValueError(f"unknown activation {act!r}")


def act_derivative(z, act):
    """act'(z) elementwise, any shape."""
    if act == "identity":
        return np.ones_like(z)
    if act == "silu":        # (z s)' = s + z s (1 - s)
        s = _sigmoid(z)
        return s + z * s * (1.0 - s)
    if act == "relu":
        return (z > 0).astype(np.float64)
    if act == "tanh":        # tanh' = 1 - tanh^2
        return 1.0 - np.tanh(z) ** 2
    if act == "gelu":        # product rule, with tanh(u)' = (1 - tanh(u)^2) u' and u' = c (1 + 3 * 0.044715 z^2)
        u = GELU_C * (z + 0.044715 * z ** 3)
        th = np.tanh(u)
        return 0.5 * (1.0 + th) + 0.5 * z * (1.0 - th ** 2) * GELU_C * (1.0 + 3 * 0.044715 * z ** 2)
    raise ValueError(f"unknown activation {act!r}")


# ----------------------------------------------------------------------------- the SDE

def sde_coefficients(sde, t):
    """(f, g, alpha, sigma) at times t (any shape) for an SDE d theta = f(t) theta dt + g(t) dw
    whose transition is p_{t|0}(theta_t | theta_0) = N(alpha_t theta_0, sigma_t^2 I).

    ``sde``: an ``snpse_np.sde`` object; only its name and parameters are read, the formulas
    are written here. With f linear, alpha_t = exp(int_0^t f) and sigma_t^2 = int_0^t
    (alpha_t / alpha_s)^2 g(s)^2 ds:

    VE:     f = 0, sigma_t = s_min (s_max / s_min)^t, so g^2 = d sigma_t^2 / dt = 2 sigma_t^2 log(s_max / s_min).
    VP:     beta(t) = b_min + t (b_max - b_min), f = -beta / 2, g = sqrt(beta);
            alpha_t = exp(-int_0^t beta / 2) = exp(-t^2 (b_max - b_min) / 4 - t b_min / 2),
            sigma_t^2 = 1 - alpha_t^2 (the variance is preserved: unit variance in, unit out).
    sub-VP: the VP drift with g^2 = beta (1 - alpha_t^4), which gives sigma_t = 1 - alpha_t^2.
    """
    t = np.asarray(t, dtype=np.float64)
    if sde.name == "ve":
        s_min, s_max = sde.sigma_min, sde.sigma_max
        sigma = s_min * (s_max / s_min) ** t
        return (np.zeros_like(t), sigma * math.sqrt(2.0 * math.log(s_max / s_min)),
                np.ones_like(t), sigma)
    if sde.name in ("vp", "subvp"):
        b_min, b_max = sde.beta_min, sde.beta_max
        beta = b_min + t * (b_max - b_min)
        log_alpha = -0.25 * t ** 2 * (b_max - b_min) - 0.5 * t * b_min
        alpha = np.exp(log_alpha)
        # 1 - alpha^2 as -expm1(2 log alpha): the plain difference loses ~5 digits at t = 1e-4
        one_minus_a2 = -np.expm1(2.0 * log_alpha)
        if sde.name == "vp":
            return -0.5 * beta, np.sqrt(beta), alpha, np.sqrt(one_minus_a2)
        one_minus_a4 = -np.expm1(4.0 * log_alpha)
        return -0.5 * beta, np.sqrt(beta * one_minus_a4), alpha, one_minus_a2
    raise ValueError(f"unknown sde {sde.name!r}")


def preconditioning(t, alpha, sigma, precondition="noise", floor=0.1, time_input="sigma"):
    """(c_in, c_out, tau) at times t with marginal coefficients alpha, sigma (arrays alike).

    The network sees theta_in = c_in theta_t and tau, and the score is out / c_out.
    "noise": c_in = 1 / sqrt(alpha^2 + sigma^2) makes the input unit-variance for standardised
    theta_0; c_out = sqrt(sigma^2 + floor^2), so that out = c_out s ~ -z (an O(1) target) where
    sigma >> floor. "none" (the paper): c_in = c_out = 1, the network outputs the score itself.
    tau: sigma ("sigma"), t ("t") or log sigma ("log_sigma").
    """
    if precondition == "noise":
        c_in, c_out = 1.0 / np.sqrt(alpha ** 2 + sigma ** 2), np.sqrt(sigma ** 2 + floor ** 2)
    elif precondition == "none":
        c_in, c_out = np.ones_like(sigma), np.ones_like(sigma)
    else:
        raise ValueError(f"unknown precondition {precondition!r}")
    tau = {"sigma": sigma, "t": np.asarray(t, dtype=np.float64) + np.zeros_like(sigma),
           "log_sigma": np.log(sigma)}[time_input]
    return c_in, c_out, tau


# ----------------------------------------------------------------------------- the network
# Three MLPs, each a list of layers z = h_in W + b, h = act(z), the last one linear:
#   theta_emb = MLP_theta(theta_in),  x_emb = MLP_x(x),  t_emb = sinusoidal(tau),
#   out = MLP_head(concat[theta_emb, x_emb, t_emb]).
# The fast path (nn.py) never builds the concatenation; it sums three products instead:
#   concat[a, b, c] @ vstack[W_a, W_b, W_c] = a W_a + b W_b + c W_c.

def _mlp_params(params, tag, start=0):
    """[(W, b)] of the MLP ``tag`` ("theta", "x", "head") from layer ``start`` on, in order."""
    out, i = [], start
    while f"{tag}.{i}.W" in params:
        out.append((params[f"{tag}.{i}.W"], params[f"{tag}.{i}.b"]))
        i += 1
    return out


def time_embedding(tau, dim):
    """(B, dim): sin(tau w_k) for k < dim/2, then cos(tau w_k), w_k = 10000^(-k / (dim/2 - 1))."""
    half = dim // 2
    w = 10000.0 ** (-np.arange(half) / max(half - 1, 1))
    arg = np.asarray(tau, dtype=np.float64)[:, None] * w[None, :]
    return np.concatenate([np.sin(arg), np.cos(arg)], axis=1)


def _head0_weight(params):
    """The head's first-layer weight on the concatenation: vstack[W_theta, W_x, W_t]."""
    return np.concatenate([params["head.0.Wtheta"], params["head.0.Wx"], params["head.0.Wt"]], axis=0)


def mlp_forward(layers, h, act):
    """Run the layers [(W (n, m), b (m,))] on h (B, n_0); returns (out (B, m_last), cache) with
    cache = [(h_in, z)] per layer."""
    cache = []
    for i, (W, b) in enumerate(layers):
        z = h @ W + b
        cache.append((h, z))
        h = z if i == len(layers) - 1 else act_forward(z, act)  # the last layer is linear
    return h, cache


def network_forward(params, theta_in, x, tau, act="silu"):
    """out (B, d) for theta_in (B, d), x (B, p), tau (B,); returns (out, cache for backward)."""
    theta_emb, c_theta = mlp_forward(_mlp_params(params, "theta"), theta_in, act)
    x_emb, c_x = mlp_forward(_mlp_params(params, "x"), x, act)
    t_emb = time_embedding(tau, params["head.0.Wt"].shape[0])
    cat = np.concatenate([theta_emb, x_emb, t_emb], axis=1)
    z0 = cat @ _head0_weight(params) + params["head.0.b"]
    out, c_head = mlp_forward(_mlp_params(params, "head", start=1), act_forward(z0, act), act)
    cache = dict(theta=c_theta, x=c_x, cat=cat, z0=z0, head=c_head,
                 widths=(theta_emb.shape[1], x_emb.shape[1]))
    return out, cache


def mlp_backward(layers, cache, dout, act, tag, start, grads):
    """Backward through the layers [(W, b)] given dout = dL/d(MLP output) (B, m_last); writes
    grads[f"{tag}.{start + i}.W"] (n, m) and grads[f"{tag}.{start + i}.b"] (m,); returns
    dL/d(MLP input) (B, n_0)."""
    dh = dout
    for i in range(len(layers) - 1, -1, -1):
        W, _ = layers[i]
        h_in, z = cache[i]
        # in the forward pass this was h = act(z) (identity on the last layer),
        # so now we have dL/dz = dL/dh * act'(z), elementwise
        dz = dh if i == len(layers) - 1 else dh * act_derivative(z, act)
        # in the forward pass this was z = h_in W + b, i.e. z_rj = sum_k h_rk W_kj + b_j,
        # so now we have dL/dW_kj = sum_r h_rk dL/dz_rj, dL/db_j = sum_r dL/dz_rj, dL/dh_rk = sum_j dL/dz_rj W_kj
        grads[f"{tag}.{start + i}.W"] = h_in.T @ dz
        grads[f"{tag}.{start + i}.b"] = dz.sum(axis=0)
        dh = dz @ W.T
    return dh


def network_backward(params, cache, dout, act="silu"):
    """dL/dparams (dict, the names of ``params``) given dout = dL/dout (B, d) and the cache of
    ``network_forward``."""
    grads = {}
    # the head, last layer first, down to dL/dh0 where h0 = act(z0)
    dh0 = mlp_backward(_mlp_params(params, "head", start=1), cache["head"], dout, act, "head", 1, grads)
    # in the forward pass this was h0 = act(z0), z0 = cat W0 + b0 with W0 = vstack[W_theta, W_x, W_t],
    # so now we have dL/dz0 = dh0 act'(z0), dL/dW0 = cat^T dL/dz0 (split back into the three blocks)
    # and dL/dcat = dL/dz0 W0^T, whose column blocks are dL/dtheta_emb, dL/dx_emb and dL/dt_emb
    dz0 = dh0 * act_derivative(cache["z0"], act)
    e_theta, e_x = cache["widths"]
    dW0 = cache["cat"].T @ dz0
    grads["head.0.Wtheta"], grads["head.0.Wx"], grads["head.0.Wt"] = (
        dW0[:e_theta], dW0[e_theta:e_theta + e_x], dW0[e_theta + e_x:])
    grads["head.0.b"] = dz0.sum(axis=0)
    dcat = dz0 @ _head0_weight(params).T
    # t_emb is a fixed function of tau: its gradient stops here
    mlp_backward(_mlp_params(params, "theta"), cache["theta"], dcat[:, :e_theta], act, "theta", 0, grads)
    mlp_backward(_mlp_params(params, "x"), cache["x"], dcat[:, e_theta:e_theta + e_x], act, "x", 0, grads)
    return grads


def network_jacobian(params, theta_in, x, tau, act="silu"):
    """J (B, d, d) with J[r, i, k] = d out_ri / d theta_in_rk (x and tau held fixed).

    Forward mode: carry T = d h / d theta_in (B, width, d) through the layers, starting at
    T = I. A layer z = h W + b gives dz/dtheta_in = W^T T per row (the bias is a constant), and
    h = act(z) multiplies row j by act'(z_j). Only theta_emb depends on theta_in, so the
    concatenation's tangent is [T_theta; 0; 0].
    """
    B, d = theta_in.shape
    T = np.broadcast_to(np.eye(d), (B, d, d)).copy()
    _, cache = network_forward(params, theta_in, x, tau, act)
    layers = _mlp_params(params, "theta")
    for i, (W, _) in enumerate(layers):
        T = np.einsum("kj,bkd->bjd", W, T)
        if i < len(layers) - 1:
            T = act_derivative(cache["theta"][i][1], act)[:, :, None] * T
    T_cat = np.zeros((B, cache["cat"].shape[1], d))
    T_cat[:, :T.shape[1]] = T
    T = act_derivative(cache["z0"], act)[:, :, None] * np.einsum("kj,bkd->bjd", _head0_weight(params), T_cat)
    layers = _mlp_params(params, "head", start=1)
    for i, (W, _) in enumerate(layers):
        T = np.einsum("kj,bkd->bjd", W, T)
        if i < len(layers) - 1:
            T = act_derivative(cache["head"][i][1], act)[:, :, None] * T
    return T


# ----------------------------------------------------------------------------- the score

def score(params, theta, x, t, sde, precondition="noise", floor=0.1, time_input="sigma", act="silu"):
    """s(theta, x, t) = net(c_in theta, x, tau) / c_out, ~ grad_theta log p_t(theta | x).
    theta (B, d), x (B, p), t (B,) or one float."""
    t = np.broadcast_to(np.asarray(t, dtype=np.float64), (theta.shape[0],))
    _, _, alpha, sigma = sde_coefficients(sde, t)
    c_in, c_out, tau = preconditioning(t, alpha, sigma, precondition, floor, time_input)
    out, _ = network_forward(params, c_in[:, None] * theta, x, tau, act)
    return out / c_out[:, None]


# ----------------------------------------------------------------------------- the loss

def dsm_loss(params, theta0, x, t, z, sde, precondition="noise", floor=0.1, time_input="sigma", act="silu",
             weights=None):
    """The denoising score-matching loss of a batch and its gradient: (loss, grads).

    theta0 (B, d), x (B, p): data; t (B,): times; z (B, d): standard normal noise; weights (B,)
    optional importance weights (mean 1). With theta_t = alpha theta0 + sigma z, the score of
    the transition is grad log p_{t|0}(theta_t | theta0) = -(theta_t - alpha theta0) / sigma^2
    = -z / sigma, and with the weight lambda_t = sigma_t^2 the loss per row is

        l = (1/d) sum_j (sigma s_j(theta_t, x, t) + z_j)^2,       L = (1/B) sum_r w_r l_r.

    Its minimiser over all functions s is the score of the marginal, s* = grad log p_t(theta_t | x)
    (Vincent 2011: the cross term is the only one that depends on s, and E[-z / sigma | theta_t]
    is that score).
    """
    B, d = theta0.shape
    w = np.ones(B) if weights is None else np.asarray(weights, dtype=np.float64)
    _, _, alpha, sigma = sde_coefficients(sde, t)
    c_in, c_out, tau = preconditioning(t, alpha, sigma, precondition, floor, time_input)
    theta_t = alpha[:, None] * theta0 + sigma[:, None] * z
    out, cache = network_forward(params, c_in[:, None] * theta_t, x, tau, act)
    s = out / c_out[:, None]
    r = sigma[:, None] * s + z                       # the residual, (B, d)
    loss = float(np.sum(w[:, None] * r ** 2) / (B * d))
    # in the forward pass this was L = (1/(B d)) sum_rj w_r r_rj^2 with r = (sigma / c_out) out + z,
    # so now we have dL/dout_rj = 2 w_r r_rj (sigma_r / c_out_r) / (B d)
    dout = 2.0 * w[:, None] * r * (sigma / c_out)[:, None] / (B * d)
    return loss, network_backward(params, cache, dout, act)


# ----------------------------------------------------------------------------- the optimiser

def adam_step(params, grads, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """One Adam update (Kingma & Ba 2015) of every array; ``step`` counts from 1. Returns new
    (params, m, v) dicts:

        m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g^2,
        p <- p - lr m_hat / (sqrt(v_hat) + eps),  m_hat = m / (1 - beta1^k), v_hat = v / (1 - beta2^k).
    """
    new_p, new_m, new_v = {}, {}, {}
    for k, g in grads.items():
        new_m[k] = beta1 * m[k] + (1.0 - beta1) * g
        new_v[k] = beta2 * v[k] + (1.0 - beta2) * g ** 2
        m_hat = new_m[k] / (1.0 - beta1 ** step)
        v_hat = new_v[k] / (1.0 - beta2 ** step)
        new_p[k] = params[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return new_p, new_m, new_v


def ema_step(ema, params, step, decay):
    """The weight average after Adam step ``step`` (from 1): e <- d_k e + (1 - d_k) p with the
    warmed-up decay d_k = min(decay, (1 + k) / (10 + k)), k = step - 1 (0.1 at the first step,
    so the average leaves the random initial weights at once). Returns the new dict."""
    k = step - 1
    d = min(decay, (1.0 + k) / (10.0 + k))
    return {name: d * ema[name] + (1.0 - d) * params[name] for name in ema}


def train_step(params, state, theta0, x, t, z, lr, sde, ema_decay=None, weights=None, **model):
    """One DSM training step: loss and gradient (``dsm_loss``), one Adam step, the EMA.

    state: dict(m=..., v=..., step=k) (zeros and 0 at the start) and ema (a copy of the
    initial params) when ``ema_decay`` is set. ``model``: precondition, floor, time_input, act.
    Returns (loss, new params, new state). Nothing is updated in place.
    """
    loss, grads = dsm_loss(params, theta0, x, t, z, sde, weights=weights, **model)
    step = state["step"] + 1
    params, m, v = adam_step(params, grads, state["m"], state["v"], step, lr)
    new_state = dict(m=m, v=v, step=step)
    if ema_decay is not None:
        new_state["ema"] = ema_step(state["ema"], params, step, ema_decay)
    return loss, params, new_state


def adam_state(params, ema_decay=None):
    """The optimiser state before the first step (zero moments; the EMA starts at params)."""
    state = dict(m={k: np.zeros_like(a) for k, a in params.items()},
                 v={k: np.zeros_like(a) for k, a in params.items()}, step=0)
    if ema_decay is not None:
        state["ema"] = {k: a.copy() for k, a in params.items()}
    return state


# ----------------------------------------------------------------------------- the samplers
# Reverse time runs from t = 1 down to t_min. ``score_fn(theta, t) -> s`` (B, d) is any score
# (the network's through ``score``, or an exact one); t is one float for all rows.

def em_step(theta, t, h, score_fn, sde, noise):
    """One Euler-Maruyama step of the reverse SDE from t to t - h (h > 0):

        d theta = [f theta - g^2 s] dt + g dw_bar   (Anderson 1982; Song et al. 2021, eq. 6)

    run backwards: theta <- theta - (f theta - g^2 s) h + g sqrt(h) noise, noise ~ N(0, I)."""
    f, g, _, _ = sde_coefficients(sde, t)
    s = score_fn(theta, t)
    return theta - (f * theta - g ** 2 * s) * h + g * math.sqrt(h) * noise


def langevin_alpha(sde, t, h):
    """Song et al.'s alpha_i in the corrector's step size: 1 for VE, 1 - beta(t) h for VP-type
    (held above 1e-3)."""
    if sde.name == "ve":
        return 1.0
    beta = sde.beta_min + t * (sde.beta_max - sde.beta_min)
    return max(1.0 - beta * h, 1e-3)


def langevin_step(theta, t, score_fn, noise, snr, alpha):
    """One Langevin corrector step at time t (Song et al. 2021, Alg. 4-5):

        eps = 2 alpha (snr |noise| / |s|)^2,   theta <- theta + eps s + sqrt(2 eps) noise,

    with |.| the per-row norms averaged over the batch (one step size for all rows)."""
    s = score_fn(theta, t)
    norm_noise = np.mean(np.linalg.norm(noise, axis=1))
    norm_s = np.mean(np.linalg.norm(s, axis=1))
    eps = 2.0 * alpha * (snr * norm_noise / norm_s) ** 2
    return theta + eps * s + math.sqrt(2.0 * eps) * noise


def velocity(theta, t, score_fn, sde):
    """The probability-flow ODE's right-hand side v = f theta - g^2 s / 2 (Song et al. 2021,
    eq. 13): the same marginals p_t as the SDE, with no noise. t: one float or (B,)."""
    f, g, _, _ = sde_coefficients(sde, t)
    f, g = f[..., None], g[..., None]  # one time, or one per row (B,): a column either way
    return f * theta - 0.5 * g ** 2 * score_fn(theta, t)


def pf_ode_step(rhs, y, t0, t1, method):
    """One step of dy/dt = rhs(y, t) from t0 to t1 (t1 < t0 to sample, t1 > t0 for
    log-densities), h = t1 - t0:

    euler: y + h k1;  heun: y + h (k1 + k2) / 2 with k2 = rhs(y + h k1, t1);
    rk4:   y + h (k1 + 2 k2 + 2 k3 + k4) / 6 at t0, t0 + h/2, t0 + h/2, t1.

    y is theta (B, d) with rhs = ``velocity``, or (B, d + 1) = [theta, Delta] with
    rhs = [v, div v] for the log-density (``velocity_divergence``)."""
    h = t1 - t0
    k1 = rhs(y, t0)
    if method == "euler":
        return y + h * k1
    if method == "heun":
        k2 = rhs(y + h * k1, t1)
        return y + 0.5 * h * (k1 + k2)
    if method == "rk4":
        k2 = rhs(y + 0.5 * h * k1, t0 + 0.5 * h)
        k3 = rhs(y + 0.5 * h * k2, t0 + 0.5 * h)
        k4 = rhs(y + h * k3, t1)
        return y + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    raise ValueError(f"unknown method {method!r}")


def edm_heun_step(theta, t0, t1, score_fn, sde):
    """One step of Karras et al. (2022)'s Heun sampler (their Alg. 1) from t0 to t1 < t0.

    In the scaled variables x~ = theta / alpha_t, sigma~ = sigma_t / alpha_t every SDE here is
    variance-exploding (x~ = theta_0 + sigma~ z), and its probability-flow ODE is

        d x~ / d sigma~ = -sigma~ grad_x~ log p = -sigma~ alpha_t s(alpha_t x~, t)

    (grad_x~ = alpha_t grad_theta). Heun in sigma~: the slope d1 at t0, an Euler predictor to
    t1, the slope d2 there, then the average."""
    _, _, a0, s0 = sde_coefficients(sde, t0)
    _, _, a1, s1 = sde_coefficients(sde, t1)
    x = theta / a0
    h = s1 / a1 - s0 / a0

    def slope(x_hat, t, a, s_hat):
        return -s_hat * a * score_fn(a * x_hat, t)

    d1 = slope(x, t0, a0, s0 / a0)
    x_pred = x + h * d1
    d2 = slope(x_pred, t1, a1, s1 / a1)
    return a1 * (x + 0.5 * h * (d1 + d2))


# ----------------------------------------------------------------------------- divergence

def score_divergence(params, theta, x, t, sde, precondition="noise", floor=0.1, time_input="sigma",
                     act="silu"):
    """Tr(d s / d theta) (B,), exactly: s = net(c_in theta, x, tau) / c_out, so by the chain rule
    d s / d theta = (c_in / c_out) J with J = d net / d theta_in (``network_jacobian``)."""
    t = np.broadcast_to(np.asarray(t, dtype=np.float64), (theta.shape[0],))
    _, _, alpha, sigma = sde_coefficients(sde, t)
    c_in, c_out, tau = preconditioning(t, alpha, sigma, precondition, floor, time_input)
    J = network_jacobian(params, c_in[:, None] * theta, x, tau, act)
    return (c_in / c_out) * np.einsum("bkk->b", J)


def velocity_divergence(params, theta, x, t, sde, **model):
    """div v for v = f theta - g^2 s / 2: d f(t) - g(t)^2 Tr(ds/dtheta) / 2 (B,).

    The log-density of the probability-flow ODE (Chen et al. 2018; paper eq. 5):
    log p_0(theta_0) = log p_1(theta_1) + int_{t_min}^1 div v(theta_t, t) dt along the path
    from theta_0 at t_min to theta_1 at 1; ``pf_ode_step`` on [theta, Delta] integrates it."""
    f, g, _, _ = sde_coefficients(sde, t)
    d = theta.shape[1]
    return d * f - 0.5 * g ** 2 * score_divergence(params, theta, x, t, sde, **model)
