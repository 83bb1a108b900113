"""Sinusoidal time embedding: out[i, :h] = sin(tau_i f_j), out[i, h:] = cos(tau_i f_j).

Op: ``sinusoidal_embedding`` (out (B, 2h), tau (B,)), with f_j = 10000^(-j / (h - 1)) and the
sin/cos evaluated in float64 (then rounded to out's dtype), as numpy_ref.

Variants:
  0. ``numpy``           numpy_ref: float64 temporaries, numpy's sin/cos (~12 ns an element here).
  1. ``prod``            snpse_np.backends.numba_cpu: branch-free float64 sincos (Cody-Waite
                         reduction, Cephes polynomials) that vectorises.
  2. ``numba_v1_libm``   the same loop with math.sin / math.cos (scalar libm calls).
  3. ``prod_cuda``       snpse_np.backends.cuda (ElementwiseKernel), with a GPU only.

Run: ``PYTHONPATH=. python kernels/time_embedding.py``.
"""
import math
import os
import sys

import numpy as np
from numba import njit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kernels.common import Case, Variant, namespace, nbytes, prod_variants, run_lab  # noqa: E402
from snpse_np.backends import numpy_ref  # noqa: E402

OPS = ("sinusoidal_embedding",)
CHANNELS = 64
TINY_SIZES = [(1, CHANNELS), (7, 10), (33, CHANNELS), (5, 2)]  # (B, 2h)
TIMING_SIZES = [(200, CHANNELS), (500, CHANNELS), (10000, CHANNELS)]


def make_case(op, size, dtype, rng):
    B, c = size
    tau = rng.uniform(0.0, 30.0, B).astype(dtype)  # sigma_t of a VE SDE reaches tens
    out = np.empty((B, c), dtype)
    return Case(op, [out, tau], (0,), nbytes(out, tau), 30.0 * out.size, f"B={B} 2h={c}")


@njit(cache=True)
def _libm_kernel(out, tau):
    # out (B, 2h): freq (h,) once, then scalar sin/cos per element in float64.
    half = out.shape[1] // 2
    freq = np.empty(half)
    for j in range(half):
        freq[j] = 10000.0 ** (-np.float64(j) / max(half - 1, 1))
    for i in range(out.shape[0]):
        t = np.float64(tau[i])
        for j in range(half):
            out[i, j] = math.sin(t * freq[j])
            out[i, half + j] = math.cos(t * freq[j])


VARIANTS = {
    "numpy": Variant(numpy_ref, note="numpy_ref"),
    **prod_variants(),
    "numba_v1_libm": Variant(namespace(sinusoidal_embedding=_libm_kernel)),
}


def main(argv=None):
    run_lab(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
