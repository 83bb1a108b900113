"""Adam and the weight EMA on the flat parameter buffer (one fused pass each).

Ops: ``adam_step`` (m, v moments, bias correction, p update) and ``ema_update``.

Variants:
  0. ``numpy``              numpy_ref: ~10 passes, a temporary per operator.
  1. ``prod``               snpse_np.backends.numba_cpu: one pass (vsqrtps/vdivps vectorised).
  2. ``numpy_v1_prealloc``  numpy with preallocated scratch buffers and out= everywhere (how
                            far numpy gets without temporaries).
  3. ``numba_v2_parallel``  prod's loop with prange (2 threads here).
  4. ``prod_cuda``          snpse_np.backends.cuda (ElementwiseKernel), with a GPU only.

Run: ``PYTHONPATH=. python kernels/adam.py``.
"""
import math
import os
import sys

import numpy as np
from numba import njit, prange

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kernels.common import Case, Variant, namespace, nbytes, prod_variants, run_lab  # noqa: E402
from snpse_np.backends import numba_cpu as nb  # noqa: E402
from snpse_np.backends import numpy_ref  # noqa: E402

OPS = ("adam_step", "ema_update")
PAPER_PARAMS = 250_947  # ScoreNetwork.paper(5, 8).size
TINY_SIZES = [1, 37, 1001]
TIMING_SIZES = [PAPER_PARAMS, 1_000_000]
HYPER = (1e-3, 0.9, 0.999, 1e-8, 7)  # lr, beta1, beta2, eps, step


def make_case(op, n, dtype, rng):
    p, g, m = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    v = np.abs(rng.standard_normal(n)).astype(dtype) * dtype(1e-2)
    if op == "adam_step":
        return Case(op, [p, g, m, v, *HYPER], (0, 2, 3), nbytes(p, g, m, v) + nbytes(p, m, v), 14.0 * n, f"n={n}")
    if op == "ema_update":
        return Case(op, [m, p, 0.999], (0,), nbytes(m, p, m), 3.0 * n, f"n={n}")
    raise ValueError(op)


_SCRATCH = {}


def _prealloc_adam(p, g, m, v, lr, beta1, beta2, eps, step):
    # numpy with two scratch buffers reused across calls: every operation writes with out=.
    key = (p.shape, p.dtype)
    if key not in _SCRATCH:
        _SCRATCH[key] = (np.empty_like(p), np.empty_like(p))
    s1, s2 = _SCRATCH[key]
    bc1, bc2 = 1.0 - beta1 ** step, 1.0 - beta2 ** step
    m *= beta1
    np.multiply(g, 1.0 - beta1, out=s1)
    m += s1
    v *= beta2
    np.multiply(g, g, out=s1)
    s1 *= 1.0 - beta2
    v += s1
    np.divide(v, bc2, out=s2)
    np.sqrt(s2, out=s2)
    s2 += eps
    np.multiply(m, lr / bc1, out=s1)
    s1 /= s2
    p -= s1


@njit(cache=True, parallel=True, fastmath=nb._FM, error_model="numpy")
def _par_adam(p, g, m, v, lr_t, beta1, beta2, eps, bc2):
    T = p.dtype.type
    b1, b2 = T(beta1), T(beta2)
    c1, c2 = T(1.0 - beta1), T(1.0 - beta2)
    lr, ep, bc = T(lr_t), T(eps), T(bc2)
    for i in prange(p.shape[0]):
        gi = g[i]
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + c2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] -= lr * mi / (math.sqrt(vi / bc) + ep)


def _v2_adam(p, g, m, v, lr, beta1, beta2, eps, step):
    _par_adam(p, g, m, v, lr / (1.0 - beta1 ** step), beta1, beta2, eps, 1.0 - beta2 ** step)


VARIANTS = {
    "numpy": Variant(numpy_ref, note="numpy_ref"),
    **prod_variants(),
    "numpy_v1_prealloc": Variant(namespace(adam_step=_prealloc_adam)),
    "numba_v2_parallel": Variant(namespace(adam_step=_v2_adam)),
}


def main(argv=None):
    run_lab(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
