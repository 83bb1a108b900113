"""The CPU backend: every op of ``numpy_ref`` as a fused Numba ``@njit`` kernel.

Same names, signatures and maths as ``numpy_ref`` (destination passing, in place); the GEMMs
stay with numpy (BLAS) in the callers, and these kernels fuse the elementwise work around them
into one pass each (numpy needs one pass and one temporary per operator).

Ops: ``bias_act_forward``, ``act_backward``, ``act_tangent``, ``bias_grad``,
``sinusoidal_embedding``, ``dsm_perturb``, ``dsm_loss``, ``adam_step``, ``ema_update``,
``affine_step``, ``langevin_step``, ``trace_rows``; helpers ``act_value``, ``act_grad``.

Choices (measured in ``kernels/``, see docs/performance.md):

- float32 activations use a clamped rational tanh (Eigen's, max abs error 2.6e-7 on tanh,
  1.3e-7 on the sigmoid) so the silu/gelu/tanh loops vectorise; float64 keeps libm exp/tanh.
- ``error_model="numpy"``: no ZeroDivisionError branch, which otherwise blocks vectorisation.
- fastmath without nnan/ninf: a NaN must still reach the loss, so training can stop on it.
- the activation is a compile-time constant of each kernel (one kernel per activation, made
  by a factory, compiled on first use, cached on disk); a runtime switch inside the loop kept
  LLVM from vectorising (4-8x slower).
- in-place calls (the network's usual h is z, dz is dh, dt is t) get kernels of their own:
  LLVM's runtime overlap check sends an aliased call to the scalar loop.
- serial kernels: on 2 shared cores prange did not pay for itself at these sizes.
- the time embedding uses a branch-free sincos (Cody-Waite reduction + Cephes polynomials)
  that vectorises; libm sin/cos cost ~15 ns an element.

Shapes and conventions are documented in ``numpy_ref``. Inputs may be non-contiguous; shapes
outside the fused kernels' cases (e.g. act_backward on 3-D arrays that cannot be viewed as
2-D) fall back to ``numpy_ref``.
"""
import math

import numpy as np
from numba import njit

from . import numpy_ref as _ref

NAME = "numba"
ACTIVATIONS = _ref.ACTIVATIONS
_CODES = {name: i for i, name in enumerate(ACTIVATIONS)}
IDENTITY, SILU, RELU, GELU, TANH = (_CODES[a] for a in ("identity", "silu", "relu", "gelu", "tanh"))

# Safe fastmath: reassociation (vector reductions), contraction (FMA), reciprocals, signed
# zeros; no nnan/ninf, so NaN and inf propagate as in numpy.
_FM = {"contract", "arcp", "reassoc", "nsz"}
_JIT = dict(cache=True, fastmath=_FM, error_model="numpy", nogil=True)
_INL = dict(fastmath=_FM, error_model="numpy", inline="always")
# Range reduction needs the written order of operations: contraction (FMA) only.
_JIT_EXACT = dict(cache=True, fastmath={"contract"}, error_model="numpy", nogil=True)


def _code(act):
    try:
        return _CODES[act]
    except KeyError:
        raise ValueError(f"unknown activation {act!r}; choose from {ACTIVATIONS}") from None


def _fast(a):
    # The rational approximations are float32-accurate only.
    return a.dtype == np.float32


# ----------------------------------------------------------------------------- scalar maths
# Every helper takes the scalar type T (z.dtype.type) so float32 kernels stay in float32.

@njit(**_INL)
def _tanh_rat(x, T):
    # Eigen's float tanh: x P(x^2) / Q(x^2), degrees 13/6 on |x| < 7.905, exactly +-1 beyond
    # (so 1 - tanh^2 is 0 there, as in numpy; gelu' needs it). Selects, not branches, so it
    # vectorises; every comparison is False for a NaN, which passes through.
    c = T(7.90531110763549805)
    y = c if x > c else x
    y = -c if y < -c else y
    x2 = y * y
    p = x2 * T(-2.76076847742355e-16) + T(2.00018790482477e-13)
    p = p * x2 + T(-8.60467152213735e-11)
    p = p * x2 + T(5.12229709037114e-08)
    p = p * x2 + T(1.48572235717979e-05)
    p = p * x2 + T(6.37261928875436e-04)
    p = p * x2 + T(4.89352455891786e-03)
    q = x2 * T(1.19825839466702e-06) + T(1.18534705686654e-04)
    q = q * x2 + T(2.26843463243900e-03)
    q = q * x2 + T(4.89352518554385e-03)
    r = y * p / q
    r = T(1.0) if x >= c else r
    return T(-1.0) if x <= -c else r


@njit(**_INL)
def _sigmoid(x, T, fast):
    if fast:
        return T(0.5) + T(0.5) * _tanh_rat(T(0.5) * x, T)
    e = math.exp(-abs(x))  # exp of a non-positive argument: no overflow
    s = T(1.0) / (T(1.0) + e)
    return s if x >= 0 else e * s


@njit(**_INL)
def _tanh(x, T, fast):
    if fast:
        return _tanh_rat(x, T)
    return math.tanh(x)


@njit(**_INL)
def _act(x, code, T, fast):
    # act(x) for one element; `code` and `fast` are closure constants of every kernel that
    # inlines this, so the branches fold away and the loop body is straight-line.
    if code == 1:  # silu
        return x * _sigmoid(x, T, fast)
    if code == 2:  # relu; NaN passes (numpy's maximum propagates it)
        return T(0.0) if x <= 0 else x
    if code == 3:  # gelu, tanh approximation
        u = T(0.7978845608028654) * (x + T(0.044715) * x * x * x)
        return T(0.5) * x * (T(1.0) + _tanh(u, T, fast))
    if code == 4:
        return _tanh(x, T, fast)
    return x


@njit(**_INL)
def _act_grad(x, code, T, fast):
    # d act / dx for one element.
    if code == 1:
        s = _sigmoid(x, T, fast)
        return s * (T(1.0) + x * (T(1.0) - s))
    if code == 2:
        return T(1.0) if x > 0 else T(0.0)
    if code == 3:
        c = T(0.7978845608028654)
        th = _tanh(c * (x + T(0.044715) * x * x * x), T, fast)
        return (T(0.5) * (T(1.0) + th)
                + T(0.5) * x * (T(1.0) - th * th) * c * (T(1.0) + T(3.0 * 0.044715) * x * x))
    if code == 4:
        th = _tanh(x, T, fast)
        return T(1.0) - th * th
    return T(1.0)


@njit(fastmath={"contract"}, error_model="numpy", inline="always")
def _sincos(x):
    # float64 sin and cos without branches (vectorisable): q = round(x / (pi/2)),
    # r = x - q pi/2 by fdlibm's 3-part Cody-Waite split of pi/2 (33 + 33 + 53 bits, so
    # q * part is exact for |q| < 2^20); no reassociation allowed here (see _JIT_EXACT),
    # Cephes minimax polynomials on |r| <= pi/4, quadrant q mod 4 picks sign and swap.
    q = math.floor(x * 0.6366197723675814 + 0.5)
    r = ((x - q * 1.57079632673412561417e+00) - q * 6.07710050630396597660e-11) - q * 2.02226624871116645580e-21
    z = r * r
    s = ((((((1.58962301576546568060e-10 * z - 2.50507477628578072866e-8) * z
              + 2.75573136213857245213e-6) * z - 1.98412698295895385996e-4) * z
            + 8.33333333332211858878e-3) * z - 1.66666666666666307295e-1) * z) * r + r
    c = ((((((-1.13585365213876817300e-11 * z + 2.08757008419747316778e-9) * z
              - 2.75573141792967388112e-7) * z + 2.48015872888517045348e-5) * z
            - 1.38888888888730564116e-3) * z + 4.16666666666665929218e-2) * z * z) - 0.5 * z + 1.0
    n = np.int64(q) & 3
    sn = c if (n & 1) else s
    cs = s if (n & 1) else c
    sn = -sn if (n & 2) else sn
    cs = -cs if ((n + 1) & 2) else cs
    return sn, cs


# ----------------------------------------------------------------------------- MLP kernels
# The activation code and the fast flag are closure constants: one kernel per (activation,
# fast), compiled on first use (so a run compiles only what it uses) and cached on disk (the
# cache key includes the closure values). With them as runtime arguments LLVM did not unswitch
# the branches out of the loop and nothing vectorised (4-8x slower, kernels/bias_act.py).
# Loops run over 1-D row views with j innermost (unit stride); B x w row-major.

def _make_act_kernels(code, fast):
    @njit(**_JIT)
    def bias_act(h, z, b):
        # z (B, w) += b, b (1, w) shared or (B, w) per row; h (B, w) = act(z); h may be z.
        T = z.dtype.type
        per_row = b.shape[0] > 1
        for i in range(z.shape[0]):
            hi, zi = h[i], z[i]
            bi = b[i] if per_row else b[0]
            for j in range(zi.shape[0]):
                v = zi[j] + bi[j]
                zi[j] = v
                hi[j] = _act(v, code, T, fast)

    @njit(**_JIT)
    def backward(dz, dh, z):
        # dz = dh * act'(z), all (B, w); dz may be dh (each index read before it is written).
        T = z.dtype.type
        for i in range(z.shape[0]):
            dzi, dhi, zi = dz[i], dh[i], z[i]
            for j in range(zi.shape[0]):
                dzi[j] = dhi[j] * _act_grad(zi[j], code, T, fast)

    @njit(**_JIT)
    def tangent(dt, t, z):
        # t, dt (K, B, w), z (B, w): act'(z[i, :]) once into g (w,), then applied to the K
        # tangent rows t[k, i, :]; dt may be t.
        T = z.dtype.type
        K = t.shape[0]
        g = np.empty(z.shape[1], dtype=z.dtype)
        for i in range(z.shape[0]):
            zi = z[i]
            for j in range(zi.shape[0]):
                g[j] = _act_grad(zi[j], code, T, fast)
            for k in range(K):
                dti, ti = dt[k, i], t[k, i]
                for j in range(zi.shape[0]):
                    dti[j] = ti[j] * g[j]

    # In-place forms: when the output IS an input, LLVM's runtime overlap check fails and it
    # runs the scalar loop (7x slower); the network calls all three ops in place.
    @njit(**_JIT)
    def bias_act_inplace(z, b):
        # z (B, w) = act(z + b).
        T = z.dtype.type
        per_row = b.shape[0] > 1
        for i in range(z.shape[0]):
            zi = z[i]
            bi = b[i] if per_row else b[0]
            for j in range(zi.shape[0]):
                zi[j] = _act(zi[j] + bi[j], code, T, fast)

    @njit(**_JIT)
    def backward_inplace(dh, z):
        # dh (B, w) *= act'(z).
        T = z.dtype.type
        for i in range(z.shape[0]):
            dhi, zi = dh[i], z[i]
            for j in range(zi.shape[0]):
                dhi[j] = dhi[j] * _act_grad(zi[j], code, T, fast)

    @njit(**_JIT)
    def tangent_inplace(t, z):
        # t (K, B, w) *= act'(z) broadcast over K.
        T = z.dtype.type
        K = t.shape[0]
        g = np.empty(z.shape[1], dtype=z.dtype)
        for i in range(z.shape[0]):
            zi = z[i]
            for j in range(zi.shape[0]):
                g[j] = _act_grad(zi[j], code, T, fast)
            for k in range(K):
                ti = t[k, i]
                for j in range(zi.shape[0]):
                    ti[j] = ti[j] * g[j]

    @njit(**_JIT)
    def value(h, z):
        T = z.dtype.type
        for i in range(z.shape[0]):
            hi, zi = h[i], z[i]
            for j in range(zi.shape[0]):
                hi[j] = _act(zi[j], code, T, fast)

    @njit(**_JIT)
    def grad(g, z):
        T = z.dtype.type
        for i in range(z.shape[0]):
            gi, zi = g[i], z[i]
            for j in range(zi.shape[0]):
                gi[j] = _act_grad(zi[j], code, T, fast)

    return dict(bias_act=bias_act, backward=backward, tangent=tangent, value=value, grad=grad,
                bias_act_inplace=bias_act_inplace, backward_inplace=backward_inplace,
                tangent_inplace=tangent_inplace)


# (code, fast) -> kernels; relu and identity have no approximation, so fast is ignored there.
_ACT_KERNELS = {}
for _c in range(len(ACTIVATIONS)):
    _exact = _make_act_kernels(_c, False)
    _ACT_KERNELS[_c, False] = _exact
    _ACT_KERNELS[_c, True] = _make_act_kernels(_c, True) if _c in (SILU, GELU, TANH) else _exact
del _c, _exact


def _kernels(act, a, fast=None):
    """The kernel set for activation ``act`` and the dtype of ``a`` (fast maths for float32)."""
    return _ACT_KERNELS[_code(act), _fast(a) if fast is None else fast]


@njit(**_JIT)
def _bias_grad_kernel(db, dz):
    # db[j] = sum_i dz[i, j]: rows added in order into db (as numpy's axis-0 sum), j innermost.
    B, w = dz.shape
    for j in range(w):
        db[j] = 0
    for i in range(B):
        for j in range(w):
            db[j] += dz[i, j]


@njit(**_JIT_EXACT)
def _sinusoidal_kernel(out, tau):
    # out: (B, 2h); columns [0, h) sines, [h, 2h) cosines of tau_i * freq_j, in float64.
    # freq (h,) is computed once with pow, as numpy_ref does.
    B = out.shape[0]
    half = out.shape[1] // 2
    freq = np.empty(half, dtype=np.float64)
    den = max(half - 1, 1)
    for j in range(half):
        freq[j] = 10000.0 ** (-np.float64(j) / den)
    for i in range(B):
        ti = np.float64(tau[i])
        for j in range(half):
            s, c = _sincos(ti * freq[j])
            out[i, j] = s
            out[i, half + j] = c


# ----------------------------------------------------------------------------- loss

@njit(**_JIT)
def _dsm_perturb_kernel(theta_in, theta0, z, alpha, sigma, c_in):
    # (B, d) rows with per-row scalars alpha[i], sigma[i], c_in[i].
    B, d = theta0.shape
    for i in range(B):
        a, s, c = alpha[i], sigma[i], c_in[i]
        for j in range(d):
            theta_in[i, j] = c * (a * theta0[i, j] + s * z[i, j])


@njit(**_JIT)
def _dsm_loss_kernel(dout, out, z, c):
    # r = c_i out_ij + z_ij (in the array dtype, as numpy_ref); dout = (2/n) c_i r;
    # loss = sum r^2 / n accumulated in float64.
    T = out.dtype.type
    B, d = out.shape
    n = B * d
    scale = T(2.0 / n)
    acc = 0.0
    for i in range(B):
        ci = c[i]
        for j in range(d):
            r = ci * out[i, j] + z[i, j]
            dout[i, j] = scale * ci * r
            acc += np.float64(r) * np.float64(r)
    return acc / n


# ----------------------------------------------------------------------------- optimiser

@njit(**_JIT)
def _adam_kernel(p, g, m, v, lr_t, beta1, beta2, eps, bc2):
    # Flat buffers (n,), one pass: m, v moments then p -= lr_t m / (sqrt(v / bc2) + eps),
    # lr_t = lr / bc1 precomputed; arithmetic in the buffer dtype like numpy_ref.
    T = p.dtype.type
    b1, b2 = T(beta1), T(beta2)
    c1, c2 = T(1.0 - beta1), T(1.0 - beta2)
    lr, ep, bc = T(lr_t), T(eps), T(bc2)
    for i in range(p.shape[0]):
        gi = g[i]
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + c2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] -= lr * mi / (math.sqrt(vi / bc) + ep)


@njit(**_JIT)
def _ema_kernel(e, p, decay):
    # Flat (n,): e = decay e + (1 - decay) p.
    T = e.dtype.type
    a, c = T(decay), T(1.0 - decay)
    for i in range(e.shape[0]):
        e[i] = a * e[i] + c * p[i]


# ----------------------------------------------------------------------------- samplers

@njit(**_JIT)
def _affine_kernel(theta, a, score, b, noise, c):
    # theta (B, d) = a_i theta + b_i score + c_i noise, per-row coefficients.
    B, d = theta.shape
    for i in range(B):
        ai, bi, ci = a[i], b[i], c[i]
        for j in range(d):
            theta[i, j] = ai * theta[i, j] + (bi * score[i, j] + ci * noise[i, j])


@njit(**_JIT)
def _langevin_kernel(theta, score, noise, snr, alpha):
    # Pass 1: batch means of the per-row norms |noise_i|, |score_i| (float64).
    # Pass 2: theta += eps score + sqrt(2 eps) noise, computed in float64 then stored.
    B, d = theta.shape
    nz = 0.0
    ns = 0.0
    for i in range(B):
        a = 0.0
        s = 0.0
        for j in range(d):
            a += np.float64(noise[i, j]) ** 2
            s += np.float64(score[i, j]) ** 2
        nz += math.sqrt(a)
        ns += math.sqrt(s)
    nz /= B
    ns /= B
    eps = 2.0 * alpha * (snr * nz / max(ns, 1e-30)) ** 2
    sq = math.sqrt(2.0 * eps)
    for i in range(B):
        for j in range(d):
            theta[i, j] += eps * np.float64(score[i, j]) + sq * np.float64(noise[i, j])


@njit(**_JIT)
def _trace_kernel(out, tangent_out, tangent_in):
    # out_i = sum_k <tangent_out[k, i, :], tangent_in[k, i, :]>, float64 accumulator.
    K, B, d = tangent_out.shape
    for i in range(B):
        acc = 0.0
        for k in range(K):
            for j in range(d):
                acc += np.float64(tangent_out[k, i, j]) * np.float64(tangent_in[k, i, j])
        out[i] = acc


# ----------------------------------------------------------------------------- the ops

def _as2d(a):
    """A 2-D view (rows, last dim) of ``a`` sharing its memory, or None if that needs a copy."""
    if a.ndim == 2:
        return a
    v = a.view()
    try:
        v.shape = (-1, a.shape[-1]) if a.ndim else (1, 1)
    except AttributeError:
        return None
    return v


def _same(a, b):
    """True when a and b are the same memory seen the same way (an in-place call)."""
    return a is b or (a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype
                      and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def matmul(out, a, b):
    """out = a @ b (see numpy_ref): numpy's BLAS GEMM, as fast as a numba loop can get here."""
    np.matmul(a, b, out=out)


def act_value(z, act):
    """act(z), elementwise; returns a new array."""
    z2 = _as2d(np.ascontiguousarray(z))
    h = np.empty_like(z2)
    _kernels(act, z2)["value"](h, z2)
    return h.reshape(np.shape(z))


def act_grad(z, act):
    """d act(z) / dz, elementwise; returns a new array."""
    z2 = _as2d(np.ascontiguousarray(z))
    g = np.empty_like(z2)
    _kernels(act, z2)["grad"](g, z2)
    return g.reshape(np.shape(z))


def bias_act_forward(h, z, b, act):
    """z += b (in place, z: (B, w) holds x @ W), then h = act(z). b: (w,) or (B, w); h may be z."""
    k = _kernels(act, z)
    if z.ndim != 2 or h.shape != z.shape or b.ndim not in (1, 2):
        return _ref.bias_act_forward(h, z, b, act)
    b2 = b.reshape(1, -1) if b.ndim == 1 else b
    if _same(h, z):
        k["bias_act_inplace"](z, b2)
    else:
        k["bias_act"](h, z, b2)


def act_backward(dz, dh, z, act):
    """dz = dh * act'(z); dz, dh, z: (B, w). dz may be dh."""
    k = _kernels(act, z)
    dz2, dh2, z2 = _as2d(dz), _as2d(dh), _as2d(z)
    if dz2 is None or dh2 is None or z2 is None or not dz.shape == dh.shape == z.shape:
        return _ref.act_backward(dz, dh, z, act)
    if _same(dz2, dh2):
        k["backward_inplace"](dz2, z2)
    else:
        k["backward"](dz2, dh2, z2)


def act_tangent(dt, t, z, act):
    """Forward-mode: dt = act'(z) * t with t, dt: (K, B, w) and z: (B, w) broadcast over K."""
    k = _kernels(act, z)
    if t.ndim != 3 or z.ndim != 2 or dt.shape != t.shape or t.shape[1:] != z.shape:
        return _ref.act_tangent(dt, t, z, act)
    if _same(dt, t):
        k["tangent_inplace"](dt, z)
    else:
        k["tangent"](dt, t, z)


def bias_grad(db, dz):
    """db = sum over rows of dz; db: (w,), dz: (B, w)."""
    if dz.ndim != 2 or db.ndim != 1:
        return _ref.bias_grad(db, dz)
    _bias_grad_kernel(db, dz)


def sinusoidal_embedding(out, tau):
    """out[:, i] = sin(tau / 10000^(i/(h-1))) for i < h, cos(...) for the second half.

    out: (B, 2h), tau: (B,). Sines first, then cosines (not interleaved), as the paper.
    """
    _sinusoidal_kernel(out, tau)


def dsm_perturb(theta_in, theta0, z, alpha, sigma, c_in):
    """theta_in = c_in * (alpha * theta0 + sigma * z), row-wise scalars alpha, sigma, c_in: (B,)."""
    _dsm_perturb_kernel(theta_in, theta0, z, alpha, sigma, c_in)


def dsm_loss(dout, out, z, c):
    """Denoising score-matching loss in noise-prediction form; returns the batch loss (float).

    L = mean over rows and dims of (c_i out_ij + z_ij)^2; dout = dL/dout. See numpy_ref.
    """
    return float(_dsm_loss_kernel(dout, out, z, c))


def adam_step(p, g, m, v, lr, beta1, beta2, eps, step):
    """One Adam update of the flat parameter buffer p (in place); step counts from 1."""
    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    if p.ndim != 1:
        return _ref.adam_step(p, g, m, v, lr, beta1, beta2, eps, step)
    _adam_kernel(p, g, m, v, float(lr) / bc1, float(beta1), float(beta2), float(eps), bc2)


def ema_update(e, p, decay):
    """e = decay * e + (1 - decay) * p, for the exponential moving average of weights."""
    if e.ndim != 1:
        return _ref.ema_update(e, p, decay)
    _ema_kernel(e, p, float(decay))


def affine_step(theta, a, score, b, noise, c):
    """theta = a theta + b score + c noise with per-row coefficients a, b, c: (B,)."""
    _affine_kernel(theta, a, score, b, noise, c)


def langevin_step(theta, score, noise, snr, alpha):
    """Langevin corrector with the batch-mean signal-to-noise step size (see numpy_ref)."""
    _langevin_kernel(theta, score, noise, float(snr), float(alpha))


def trace_rows(out, tangent_out, tangent_in):
    """out_i = sum_k <tangent_in[k, i], tangent_out[k, i]>; out: (B,), tangents: (K, B, d)."""
    _trace_kernel(out, tangent_out, tangent_in)
