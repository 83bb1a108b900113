"""Denoising score matching: the perturbation and the loss with its gradient, fused.

Ops: ``dsm_perturb`` (theta_in = c_in (alpha theta0 + sigma z), per-row scalars) and
``dsm_loss`` (r = c out + z; dout = 2 c r / n; returns mean r^2 summed in float64).

Variants:
  0. ``numpy``              numpy_ref: temporaries for r, c[:, None] * r, r.astype(float64)**2.
  1. ``prod``               snpse_np.backends.numba_cpu: one pass, float64 accumulator.
  2. ``numba_v1_parallel``  prange over rows with a reduction variable.
  3. ``prod_cuda``          snpse_np.backends.cuda (CuPy: an ElementwiseKernel for the perturbation,
                            a RawModule loss with a block reduction + one atomic add per block),
                            with a GPU only.
  4. ``numba_cuda``         the numba.cuda kernels (snpse_np.backends._cuda_kernels), same
                            scheme as 3, on CuPy arrays through backends.cuda.numba_ops():
                            device views made once per buffer, eager compilation, CuPy's
                            stream, argument blocks marshalled once ("prepared"); GPU only.
  5. ``numba_cuda_dispatcher``   the same kernels and views through numba's reused configured
                            launch objects; GPU only.
  6. ``numba_cuda_v0_interface`` the same kernels, every CuPy array converted through the CUDA
                            array interface at each launch (what the H100 runs measured at
                            0.21-0.29 ms a call); GPU only.
  Variants 3-6 side by side decide backends.cuda.LOSS_SAMPLER_KERNELS (numba ships only if at
  least as fast as prod_cuda).

Run: ``PYTHONPATH=. python kernels/dsm_loss.py``.
"""
import os
import sys

import numpy as np
from numba import njit, prange

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kernels.common import Case, Variant, namespace, nbytes, numba_cuda_variants, prod_variants, run_lab  # noqa: E402
from snpse_np.backends import numba_cpu as nb  # noqa: E402
from snpse_np.backends import numpy_ref  # noqa: E402

OPS = ("dsm_perturb", "dsm_loss")
TINY_SIZES = [(1, 5), (7, 3), (33, 10), (3, 1)]  # (B, d)
TIMING_SIZES = [(50, 5), (200, 5), (500, 5)]


def make_case(op, size, dtype, rng):
    B, d = size
    theta0, z = rng.standard_normal((B, d)).astype(dtype), rng.standard_normal((B, d)).astype(dtype)
    label = f"B={B} d={d}"
    if op == "dsm_perturb":
        alpha, sigma, c_in = (rng.uniform(0.05, 2.0, B).astype(dtype) for _ in range(3))
        out = np.empty_like(theta0)
        return Case(op, [out, theta0, z, alpha, sigma, c_in], (0,), nbytes(out, theta0, z, alpha, sigma, c_in),
                    4.0 * out.size, label)
    if op == "dsm_loss":
        c = rng.uniform(0.05, 2.0, B).astype(dtype)
        dout = np.empty_like(theta0)
        return Case(op, [dout, theta0, z, c], (0,), nbytes(dout, theta0, z, c), 6.0 * dout.size, label)
    raise ValueError(op)


@njit(cache=True, parallel=True, fastmath=nb._FM, error_model="numpy")
def _par_loss(dout, out, z, c):
    # prange over rows; acc is a prange reduction variable (per-thread partials, then summed).
    T = out.dtype.type
    B, d = out.shape
    n = B * d
    scale = T(2.0 / n)
    acc = 0.0
    for i in prange(B):
        ci = c[i]
        for j in range(d):
            r = ci * out[i, j] + z[i, j]
            dout[i, j] = scale * ci * r
            acc += np.float64(r) * np.float64(r)
    return acc / n


@njit(cache=True, parallel=True, fastmath=nb._FM, error_model="numpy")
def _par_perturb(theta_in, theta0, z, alpha, sigma, c_in):
    for i in prange(theta0.shape[0]):
        for j in range(theta0.shape[1]):
            theta_in[i, j] = c_in[i] * (alpha[i] * theta0[i, j] + sigma[i] * z[i, j])


VARIANTS = {
    "numpy": Variant(numpy_ref, note="numpy_ref"),
    **prod_variants(),
    **numba_cuda_variants(),
    "numba_v1_parallel": Variant(namespace(dsm_perturb=_par_perturb,
                                           dsm_loss=lambda dout, out, z, c: float(_par_loss(dout, out, z, c)))),
}


def main(argv=None):
    run_lab(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
