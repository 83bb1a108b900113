"""Sampler steps: the affine (Euler-Maruyama / probability-flow Euler) update, the Langevin
corrector and the per-row trace of forward-mode tangents (the divergence in log_prob).

Ops: ``affine_step`` (theta = a theta + b score + c noise, per-row a, b, c),
``langevin_step`` (batch-mean SNR step size), ``trace_rows`` (out_i = sum_k <t_out, t_in>).

Variants:
  0. ``numpy``              numpy_ref.
  1. ``prod``               snpse_np.backends.numba_cpu: one pass (two for langevin: norms, update).
  2. ``numba_v1_parallel``  prange over rows (2 threads here).
  3. ``prod_cuda``          snpse_np.backends.cuda (CuPy ElementwiseKernels / RawModule), GPU only.
  4. ``numba_cuda``         the numba.cuda kernels (snpse_np.backends._cuda_kernels) through
                            backends.cuda.numba_ops() (prepared launches), GPU only.
  5. ``numba_cuda_dispatcher``   the same through numba's configured launch objects, GPU only.
  6. ``numba_cuda_v0_interface`` the same, CuPy arrays converted at every launch (the old way),
                            GPU only. 3-6 side by side decide backends.cuda.LOSS_SAMPLER_KERNELS.

Run: ``PYTHONPATH=. python kernels/sampler_step.py``.
"""
import math
import os
import sys

import numpy as np
from numba import njit, prange

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kernels.common import Case, Variant, namespace, nbytes, numba_cuda_variants, prod_variants, run_lab  # noqa: E402
from snpse_np.backends import numba_cpu as nb  # noqa: E402
from snpse_np.backends import numpy_ref  # noqa: E402

OPS = ("affine_step", "langevin_step", "trace_rows")
TINY_SIZES = [(1, 5), (7, 3), (33, 10), (5, 1)]  # (B, d); K = d tangents for trace_rows
TIMING_SIZES = [(10_000, 5), (100_000, 5)]


def make_case(op, size, dtype, rng):
    B, d = size
    theta, score, noise = (rng.standard_normal((B, d)).astype(dtype) for _ in range(3))
    label = f"B={B} d={d}"
    if op == "affine_step":
        a, b, c = (rng.uniform(0.5, 1.5, B).astype(dtype) for _ in range(3))
        return Case(op, [theta, a, score, b, noise, c], (0,), nbytes(theta, score, noise, theta, a, b, c),
                    5.0 * theta.size, label)
    if op == "langevin_step":
        return Case(op, [theta, score, noise, 0.16, 0.9], (0,), nbytes(theta, score, noise) * 2 - theta.nbytes,
                    10.0 * theta.size, label)
    if op == "trace_rows":
        t_out, t_in = (rng.standard_normal((d, B, d)).astype(dtype) for _ in range(2))
        out = np.empty(B, dtype)
        return Case(op, [out, t_out, t_in], (0,), nbytes(out, t_out, t_in), 2.0 * t_out.size, label + f" K={d}")
    raise ValueError(op)


_PAR = dict(cache=True, parallel=True, fastmath=nb._FM, error_model="numpy")


@njit(**_PAR)
def _par_affine(theta, a, score, b, noise, c):
    for i in prange(theta.shape[0]):
        for j in range(theta.shape[1]):
            theta[i, j] = a[i] * theta[i, j] + (b[i] * score[i, j] + c[i] * noise[i, j])


@njit(**_PAR)
def _par_langevin(theta, score, noise, snr, alpha):
    B, d = theta.shape
    nz = 0.0
    ns = 0.0
    for i in prange(B):
        a = 0.0
        s = 0.0
        for j in range(d):
            a += np.float64(noise[i, j]) ** 2
            s += np.float64(score[i, j]) ** 2
        nz += math.sqrt(a)
        ns += math.sqrt(s)
    eps = 2.0 * alpha * (snr * (nz / B) / max(ns / B, 1e-30)) ** 2
    sq = math.sqrt(2.0 * eps)
    for i in prange(B):
        for j in range(d):
            theta[i, j] += eps * np.float64(score[i, j]) + sq * np.float64(noise[i, j])


@njit(**_PAR)
def _par_trace(out, t_out, t_in):
    K, B, d = t_out.shape
    for i in prange(B):
        acc = 0.0
        for k in range(K):
            for j in range(d):
                acc += np.float64(t_out[k, i, j]) * np.float64(t_in[k, i, j])
        out[i] = acc


VARIANTS = {
    "numpy": Variant(numpy_ref, note="numpy_ref"),
    **prod_variants(),
    **numba_cuda_variants(),
    "numba_v1_parallel": Variant(namespace(affine_step=_par_affine,
                                           langevin_step=lambda th, s, n, snr, al: _par_langevin(th, s, n, float(snr),
                                                                                                 float(al)),
                                           trace_rows=_par_trace)),
}


def main(argv=None):
    run_lab(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
