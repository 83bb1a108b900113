"""Batched adaptive Runge-Kutta (Tsit5) solver for the SIR and Lotka-Volterra tasks.

sbibm solves both ODEs in Julia (DifferentialEquations.jl, ``Tsit5()``, reltol = abstol =
1e-8, ``saveat``); this is the same method in Numba, one parameter row per solve, rows in
parallel (``prange``).

Method: Tsitouras' 5(4) explicit Runge-Kutta pair (Ch. Tsitouras, "Runge-Kutta pairs of
order 5(4) satisfying only the first column simplifying assumption", Comput. Math. Appl. 62,
2011), 7 stages with first-same-as-last, so 6 new right-hand-side evaluations per step. With
stage values k_i, the step is u_{n+1} = u_n + h sum_i b_i k_i (5th order), and the local
error estimate is e = h sum_i btilde_i k_i (difference to the embedded 4th-order solution).
Accept when

    EEst = sqrt(mean_i (e_i / (atol + rtol max(|u_n,i|, |u_{n+1},i|)))^2) <= 1,

and choose the next step with OrdinaryDiffEq.jl's PI controller: q = EEst^{7/50} /
EEst_prev^{2/25}, h_new = h / clamp(q / 0.9, 1/10, 5) (rejections: h / min(5, EEst^{7/50} /
0.9)). The first step uses Hairer-Norsett-Wanner's heuristic. Steps are shortened so that
every save time is reached exactly (Julia interpolates instead; both are accurate to about
the tolerance, far below the tasks' observation noise).

A solve fails, and its row becomes NaN as in sbibm, after more than ``max_steps`` attempted
steps (Julia's default ``maxiters`` is 1e5), on step-size underflow, or on a non-finite state.

Shapes: params (n, P) -> trajectory (n, T, m) at the T save times, m state variables.
"""
import numpy as np

MODELS = {"sir": (0, 3, 3), "lotka_volterra": (1, 4, 2)}  # name -> (id, #params, #states)

# Julia's default maxiters.
DEFAULT_MAX_STEPS = 100_000
# Below this many rows the thread start-up of the parallel kernel is not worth it.
_PARALLEL_MIN_ROWS = 64


def solve(model, params, u0, t_eval, t0=0.0, rtol=1e-8, atol=1e-8,
          max_steps=DEFAULT_MAX_STEPS, parallel=None, return_steps=False):
    """Solve ``model`` for every row of ``params``.

    model: "sir" (params (n, 3) = beta, gamma, N; u = S, I, R) or "lotka_volterra"
        (params (n, 4) = alpha, beta, gamma, delta; u = prey, predator).
    u0: (m,) initial state at ``t0``; t_eval: (T,) sorted save times >= t0 (the solve ends
        at t_eval[-1]).
    parallel: use numba threads over rows (None: when n >= 64).
    Returns the trajectory (n, T, m) float64, NaN rows where a solve failed, and with
    ``return_steps`` also the attempted step counts (n,) int64 (-1 for a failed row).
    """
    if model not in MODELS:
        raise ValueError(f"unknown ODE model {model!r}; valid: {', '.join(MODELS)}")
    model_id, n_params, n_states = MODELS[model]
    params = np.ascontiguousarray(params, dtype=np.float64)
    if params.ndim != 2 or params.shape[1] != n_params:
        raise ValueError(f"{model}: params must have shape (n, {n_params}), got {params.shape}")
    u0 = np.ascontiguousarray(u0, dtype=np.float64)
    if u0.shape != (n_states,):
        raise ValueError(f"{model}: u0 must have shape ({n_states},), got {u0.shape}")
    t_eval = np.ascontiguousarray(t_eval, dtype=np.float64)
    if t_eval.ndim != 1 or t_eval.size == 0 or np.any(np.diff(t_eval) < 0) or t_eval[0] < t0:
        raise ValueError("t_eval must be a non-empty sorted 1-D array with t_eval[0] >= t0")
    if not (rtol > 0 and atol > 0):
        raise ValueError("rtol and atol must be positive")

    n = params.shape[0]
    out = np.empty((n, t_eval.size, n_states))
    steps = np.zeros(n, dtype=np.int64)
    if n:
        from . import _ode_kernels as kern  # numba loads here, not at package import
        if parallel is None:
            parallel = n >= _PARALLEL_MIN_ROWS
        kernel = kern.solve_batch_parallel if parallel else kern.solve_batch_serial
        kernel(model_id, params, u0, float(t0), t_eval, float(rtol), float(atol),
               int(max_steps), out, steps)
    return (out, steps) if return_steps else out
