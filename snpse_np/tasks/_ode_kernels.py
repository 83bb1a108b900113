"""Numba kernels of the batched Tsit5 integrator (see :mod:`snpse_np.tasks.ode` for the maths).

Importing this module imports numba, so it is imported lazily, only when an ODE is solved.

Why the right-hand sides live here, selected by an integer ``model``, instead of being passed
in as jitted functions: numba's on-disk cache (``cache=True``) cannot key a compiled function
on a function-typed argument (the cache misses in every new process), and closures made by a
factory are not cached either. A branch on a constant integer costs nothing next to the
floating-point work and keeps every kernel cacheable.

Models (state u, parameters p):
    MODEL_SIR (0):             u = (S, I, R), p = (beta, gamma, N)
        dS = -beta S I / N,  dI = beta S I / N - gamma I,  dR = gamma I
    MODEL_LOTKA_VOLTERRA (1):  u = (prey, predator), p = (alpha, beta, gamma, delta)
        dx = alpha x - beta x y,  dy = -gamma y + delta x y
"""
import math

import numpy as np
from numba import njit, prange

MODEL_SIR = 0
MODEL_LOTKA_VOLTERRA = 1

# Tsitouras (2011) 5(4) pair, coefficients as in OrdinaryDiffEq.jl's Tsit5ConstantCache.
# The nodes c_i are not needed: both systems are autonomous.
A21 = 0.161
A31 = -0.008480655492356989
A32 = 0.335480655492357
A41 = 2.8971530571054935
A42 = -6.359448489975075
A43 = 4.3622954328695815
A51 = 5.325864828439257
A52 = -11.748883564062828
A53 = 7.4955393428898365
A54 = -0.09249506636175525
A61 = 5.86145544294642
A62 = -12.92096931784711
A63 = 8.159367898576159
A64 = -0.071584973281401
A65 = -0.028269050394068383
# 5th-order weights b_i = a_7i (FSAL: k7 = f(u_new) is the next step's k1).
A71 = 0.09646076681806523
A72 = 0.01
A73 = 0.4798896504144996
A74 = 1.379008574103742
A75 = -3.290069515436081
A76 = 2.324710524099774
# Error weights btilde_i = b_i - bhat_i (5th minus embedded 4th order).
E1 = -0.00178001105222577714
E2 = -0.0008164344596567469
E3 = 0.007880878010261995
E4 = -0.1447110071732629
E5 = 0.5823571654525552
E6 = -0.45808210592918697
E7 = 1.0 / 66.0

# PI step-size controller, OrdinaryDiffEq.jl's defaults for a 5th-order method.
BETA1 = 7.0 / 50.0   # 7 / (10 order)
BETA2 = 2.0 / 25.0   # 2 / (5 order)
GAMMA = 0.9          # safety factor
QMIN = 0.2           # largest shrink 1/5
QMAX = 10.0          # largest growth 10
QOLDINIT = 1e-4


@njit(cache=True)
def _rhs(model, p, u, du):
    if model == MODEL_SIR:
        flow = p[0] * u[0] * u[1] / p[2]
        du[0] = -flow
        du[1] = flow - p[1] * u[1]
        du[2] = p[1] * u[1]
    else:
        xy = u[0] * u[1]
        du[0] = p[0] * u[0] - p[1] * xy
        du[1] = -p[2] * u[1] + p[3] * xy


@njit(cache=True)
def _rms_scaled(v, u, rtol, atol):
    """sqrt(mean((v_i / (atol + |u_i| rtol))^2))."""
    s = 0.0
    for i in range(v.shape[0]):
        w = v[i] / (atol + abs(u[i]) * rtol)
        s += w * w
    return math.sqrt(s / v.shape[0])


@njit(cache=True)
def solve_row(model, p, u0, t0, t_eval, rtol, atol, max_steps, out):
    """Integrate one ODE from (t0, u0) and write u(t_eval[j]) into out[j] (out: (T, m)).

    ``t_eval`` must be sorted ascending with t_eval[0] >= t0. Steps are shortened to land on
    every save time exactly. Returns the number of attempted steps, or -1 on failure (more
    than ``max_steps`` attempts, step size underflow, or a non-finite state); ``out`` is then
    partly written and the caller discards it.
    """
    m = u0.shape[0]
    T = t_eval.shape[0]
    u = u0.copy()
    u_new = np.empty(m)
    tmp = np.empty(m)
    err = np.empty(m)
    scale_u = np.empty(m)
    k1 = np.empty(m)
    k2 = np.empty(m)
    k3 = np.empty(m)
    k4 = np.empty(m)
    k5 = np.empty(m)
    k6 = np.empty(m)
    k7 = np.empty(m)

    j = 0
    while j < T and t_eval[j] <= t0:
        out[j, :] = u0
        j += 1
    if j == T:
        return 0
    t = t0
    t_end = t_eval[T - 1]

    # Initial step size: Hairer, Norsett & Wanner (1993) II.4, as in OrdinaryDiffEq.jl.
    _rhs(model, p, u, k1)
    d0 = _rms_scaled(u, u, rtol, atol)
    d1 = _rms_scaled(k1, u, rtol, atol)
    if d0 < 1e-5 or d1 < 1e-5:
        h0 = 1e-6
    else:
        h0 = 0.01 * d0 / d1
    h0 = min(h0, t_end - t0)
    for i in range(m):
        tmp[i] = u[i] + h0 * k1[i]
    _rhs(model, p, tmp, k2)
    for i in range(m):
        err[i] = (k2[i] - k1[i]) / h0
    d2 = _rms_scaled(err, u, rtol, atol)
    dmax = max(d1, d2)
    if dmax <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / dmax) ** (1.0 / 5.0)
    h = min(100.0 * h0, h1, t_end - t0)
    if not (h > 0.0) or not math.isfinite(h):
        return -1

    qold = QOLDINIT
    steps = 0
    while j < T:
        if steps >= max_steps:
            return -1
        steps += 1
        target = t_eval[j]
        h_try = h
        hit = False
        # Land exactly on the next save time; stretch by up to 1% rather than leave a sliver.
        if t + 1.01 * h_try >= target:
            h_try = target - t
            hit = True
        if h_try <= 4.0 * 2.220446049250313e-16 * max(abs(t), 1.0) and not hit:
            return -1

        for i in range(m):
            tmp[i] = u[i] + h_try * A21 * k1[i]
        _rhs(model, p, tmp, k2)
        for i in range(m):
            tmp[i] = u[i] + h_try * (A31 * k1[i] + A32 * k2[i])
        _rhs(model, p, tmp, k3)
        for i in range(m):
            tmp[i] = u[i] + h_try * (A41 * k1[i] + A42 * k2[i] + A43 * k3[i])
        _rhs(model, p, tmp, k4)
        for i in range(m):
            tmp[i] = u[i] + h_try * (A51 * k1[i] + A52 * k2[i] + A53 * k3[i] + A54 * k4[i])
        _rhs(model, p, tmp, k5)
        for i in range(m):
            tmp[i] = u[i] + h_try * (A61 * k1[i] + A62 * k2[i] + A63 * k3[i] + A64 * k4[i]
                                     + A65 * k5[i])
        _rhs(model, p, tmp, k6)
        for i in range(m):
            u_new[i] = u[i] + h_try * (A71 * k1[i] + A72 * k2[i] + A73 * k3[i] + A74 * k4[i]
                                       + A75 * k5[i] + A76 * k6[i])
        _rhs(model, p, u_new, k7)
        for i in range(m):
            err[i] = h_try * (E1 * k1[i] + E2 * k2[i] + E3 * k3[i] + E4 * k4[i] + E5 * k5[i]
                              + E6 * k6[i] + E7 * k7[i])
            scale_u[i] = max(abs(u[i]), abs(u_new[i]))
        e = _rms_scaled(err, scale_u, rtol, atol)

        if not math.isfinite(e):
            # Overflow in a trial step: shrink hard and retry (a NaN state is caught below).
            h = 0.2 * h_try
            continue
        q11 = e ** BETA1
        if e <= 1.0:
            t = target if hit else t + h_try
            for i in range(m):
                u[i] = u_new[i]
                k1[i] = k7[i]
                if not math.isfinite(u[i]):
                    return -1
            q = q11 / qold ** BETA2
            q = min(max(q / GAMMA, 1.0 / QMAX), 1.0 / QMIN)
            h_new = h_try / q
            qold = max(e, QOLDINIT)
            # A step cut short to hit a save time says little about the natural step size.
            h = max(h_new, h) if hit else h_new
            if hit:
                while j < T and t_eval[j] <= t:
                    out[j, :] = u
                    j += 1
        else:
            h = h_try / min(1.0 / QMIN, q11 / GAMMA)
    return steps


@njit(cache=True)
def solve_batch_serial(model, params, u0, t0, t_eval, rtol, atol, max_steps, out, steps):
    """Rows one after another. params (n, P), out (n, T, m) (NaN rows on failure), steps (n,)."""
    for r in range(params.shape[0]):
        s = solve_row(model, params[r], u0, t0, t_eval, rtol, atol, max_steps, out[r])
        steps[r] = s
        if s < 0:
            out[r, :, :] = np.nan


@njit(cache=True, parallel=True)
def solve_batch_parallel(model, params, u0, t0, t_eval, rtol, atol, max_steps, out, steps):
    """As :func:`solve_batch_serial`, rows spread over numba's threads (prange)."""
    for r in prange(params.shape[0]):
        s = solve_row(model, params[r], u0, t0, t_eval, rtol, atol, max_steps, out[r])
        steps[r] = s
        if s < 0:
            out[r, :, :] = np.nan
