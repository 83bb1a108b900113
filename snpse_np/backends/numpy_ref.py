"""The reference backend: every op in plain numpy, written to be read.

This module is the oracle every other backend is checked against, and a complete backend in
its own right (numpy only, float32 or float64). Ops use destination passing: outputs first,
then inputs, then scalars; they return nothing unless they compute a scalar (the loss).

Shapes: B rows in a batch, K tangent directions (forward-mode Jacobian products),
d = dim theta, w = layer width.

Activations ``act`` are strings: "identity", "silu", "relu", "gelu" (tanh approximation),
"tanh". ``act_grad(z, h)`` is the derivative d act / dz, written with the stored output h
where that is cheaper.
"""
import math

import numpy as np

NAME = "numpy"
ACTIVATIONS = ("identity", "silu", "relu", "gelu", "tanh")
_GELU_C = math.sqrt(2.0 / math.pi)


def _sigmoid(z):
    # exp of a non-positive argument only, so no overflow for large |z|.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype, copy=False)


def act_value(z, act):
    """act(z), elementwise; returns a new array (used by tests and the op below)."""
    if act == "identity":
        return z.copy()
    if act == "silu":
        return z * _sigmoid(z)
    if act == "relu":
        return np.maximum(z, 0)
    if act == "tanh":
        return np.tanh(z)
    if act == "gelu":
        return 0.5 * z * (1.0 + np.tanh(_GELU_C * (z + 0.044715 * z ** 3)))
    raise ValueError(f"unknown activation {act!r}; choose from {ACTIVATIONS}")


def act_grad(z, act):
    """d act(z) / dz, elementwise."""
    if act == "identity":
        return np.ones_like(z)
    if act == "silu":
        s = _sigmoid(z)
        return s * (1.0 + z * (1.0 - s))
    if act == "relu":
        return (z > 0).astype(z.dtype)
    if act == "tanh":
        return 1.0 - np.tanh(z) ** 2
    if act == "gelu":
        u = _GELU_C * (z + 0.044715 * z ** 3)
        th = np.tanh(u)
        return 0.5 * (1.0 + th) + 0.5 * z * (1.0 - th * th) * _GELU_C * (1.0 + 3 * 0.044715 * z * z)
    raise ValueError(f"unknown activation {act!r}; choose from {ACTIVATIONS}")


# ----------------------------------------------------------------------------- MLP layers

def matmul(out, a, b):
    """out = a @ b; a (m, k), b (k, n), out (m, n). a and b may be transposed views (backward
    passes h.T and W.T); out is C-contiguous."""
    np.matmul(a, b, out=out)


def bias_act_forward(h, z, b, act):
    """z += b (in place, z: (B, w) holds x @ W), then h = act(z). b: (w,) or (B, w); h may be z."""
    z += b
    if act != "identity" or h is not z:
        h[...] = act_value(z, act)


def act_backward(dz, dh, z, act):
    """dz = dh * act'(z); dz, dh, z: (B, w). dz may be dh."""
    dz[...] = dh * act_grad(z, act)


def act_tangent(dt, t, z, act):
    """Forward-mode: dt = act'(z) * t with t, dt: (K, B, w) and z: (B, w) broadcast over K."""
    dt[...] = t * act_grad(z, act)[None]


def bias_grad(db, dz):
    """db = sum over rows of dz; db: (w,), dz: (B, w)."""
    np.sum(dz, axis=0, out=db)


def sinusoidal_embedding(out, tau):
    """out[:, i] = sin(tau / 10000^(i/(h-1))) for i < h, cos(...) for the second half.

    out: (B, 2h), tau: (B,). Sines first, then cosines (not interleaved), as the paper.
    """
    half = out.shape[1] // 2
    freq = 10000.0 ** (-np.arange(half, dtype=np.float64) / max(half - 1, 1))
    arg = tau.astype(np.float64)[:, None] * freq[None, :]
    out[:, :half] = np.sin(arg)
    out[:, half:] = np.cos(arg)


# ----------------------------------------------------------------------------- loss

def dsm_perturb(theta_in, theta0, z, alpha, sigma, c_in):
    """theta_in = c_in * (alpha * theta0 + sigma * z), row-wise scalars alpha, sigma, c_in: (B,).

    theta_in, theta0, z: (B, d). theta_t = alpha theta0 + sigma z is a draw from p_{t|0};
    c_in scales it to the network's input (1 without preconditioning).
    """
    theta_in[...] = c_in[:, None] * (alpha[:, None] * theta0 + sigma[:, None] * z)


def dsm_loss(dout, out, z, c):
    """Denoising score-matching loss in noise-prediction form; returns the batch loss.

    With the score s = out / c_out and weight lambda = sigma^2, the per-row loss
    mean_j (sigma s_j + z_j)^2 becomes mean_j (c_i out_j + z_j)^2 with c_i = sigma_i / c_out_i.
    L = mean over rows and dims; dout = dL/dout = 2 c_i r / (B d) with r = c out + z.
    out, z, dout: (B, d); c: (B,).
    """
    r = c[:, None] * out + z
    n = out.size
    dout[...] = (2.0 / n) * c[:, None] * r
    return float(np.sum(r.astype(np.float64) ** 2) / n)


# ----------------------------------------------------------------------------- optimiser

def adam_step(p, g, m, v, lr, beta1, beta2, eps, step):
    """One Adam update of the flat parameter buffer p (in place); step counts from 1."""
    m *= beta1
    m += (1.0 - beta1) * g
    v *= beta2
    v += (1.0 - beta2) * g * g
    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    p -= (lr / bc1) * m / (np.sqrt(v / bc2) + eps)


def ema_update(e, p, decay):
    """e = decay * e + (1 - decay) * p, for the exponential moving average of weights."""
    e *= decay
    e += (1.0 - decay) * p


# ----------------------------------------------------------------------------- samplers

def affine_step(theta, a, score, b, noise, c):
    """theta = a theta + b score + c noise with per-row coefficients a, b, c: (B,).

    Every first-order step of the samplers has this form (theta, score, noise: (B, d)):
    reverse-SDE Euler-Maruyama  a = 1 - f(t) h, b = g^2 h,     c = g sqrt(h);
    probability-flow Euler      a = 1 - f(t) h, b = g^2 h / 2, c = 0.
    """
    theta *= a[:, None]
    theta += b[:, None] * score + c[:, None] * noise


def langevin_step(theta, score, noise, snr, alpha):
    """Langevin corrector with the signal-to-noise step size (Song et al. 2021, Alg. 4/5).

    The per-row norms |noise_i| and |score_i| are averaged over the batch (as Song et al.'s
    code), so one step size eps = 2 alpha (snr mean|noise| / mean|score|)^2 serves all rows:
    a per-row ratio explodes for rows near a mode, where |score_i| -> 0.
    theta += eps score + sqrt(2 eps) noise. theta, score, noise: (B, d); alpha: float.
    """
    nz = np.mean(np.sqrt(np.sum(noise.astype(np.float64) ** 2, axis=1)))
    ns = np.mean(np.sqrt(np.sum(score.astype(np.float64) ** 2, axis=1)))
    eps = 2.0 * alpha * (snr * nz / max(ns, 1e-30)) ** 2
    theta += (eps * score + np.sqrt(2.0 * eps) * noise).astype(theta.dtype)


def trace_rows(out, tangent_out, tangent_in):
    """out_i = sum_k <tangent_in[k, i], tangent_out[k, i]>: the trace estimate per row.

    Exact trace: tangent_in[k] = e_k, so out_i = sum_k tangent_out[k, i, k].
    Hutchinson: K = 1 and tangent_in = v, so out_i = v_i . (J v)_i.
    out: (B,); tangent_out, tangent_in: (K, B, d).
    """
    out[...] = np.einsum("kbd,kbd->b", tangent_out, tangent_in)
