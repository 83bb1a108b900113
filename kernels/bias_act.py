"""Bias + activation: the MLP's elementwise work around each GEMM (forward, backward, tangents).

Ops: ``bias_act_forward`` (z += b; h = act(z)), ``act_backward`` (dz = dh act'(z)),
``act_tangent`` (dt = act'(z) t over K tangents), ``bias_grad`` (db = column sums of dz).

Variants:
  0. ``numpy``              numpy_ref: one temporary per operator (~8 passes for silu).
  1. ``prod``               snpse_np.backends.numba_cpu: one fused pass; float32 uses a clamped
                            rational tanh/sigmoid so the loop vectorises (AVX2 ymm).
  2. ``numba_v1_exact``     the prod kernels with libm exp/tanh (fast=False): exact, scalar calls.
  3. ``numba_v2_parallel``  prod's maths with prange over rows (2 threads here).
  4. ``numba_v0_naive``     the obvious @njit port: default error model, no fastmath, the
                            activation a runtime argument; the division's ZeroDivisionError
                            branch and the in-loop activation switch stop vectorisation.
  5. ``prod_cuda``          snpse_np.backends.cuda (CuPy ElementwiseKernel), with a GPU only.

Run: ``PYTHONPATH=. python kernels/bias_act.py``.
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

OPS = ("bias_act_forward", "act_backward", "act_tangent", "bias_grad")
ACT = "silu"  # the paper's activation, used for timing
TINY_SIZES = [(1, 37), (7, 37), (33, 29), (5, 19, "F")]  # (B, w[, layout F = non-contiguous rows])
TIMING_SIZES = [(50, 256), (200, 256), (500, 256)]
K_TANGENTS = 5


def make_case(op, size, dtype, rng, act=ACT):
    B, w = size[:2]
    fortran = len(size) > 2 and size[2] == "F"

    def arr(*shape, scale=3.0):
        a = (scale * rng.standard_normal(shape)).astype(dtype)
        return np.asfortranarray(a) if fortran and len(shape) == 2 else a

    label = f"B={B} w={w}" + (" F-order" if fortran else "")
    if op == "bias_act_forward":
        z, b = arr(B, w), arr(w, scale=1.0)
        h = np.empty_like(z)
        return Case(op, [h, z, b, act], (0, 1), nbytes(h, z, z, b), 20 * z.size, label)
    if op == "act_backward":
        dz, dh, z = np.empty((B, w), dtype), arr(B, w, scale=1.0), arr(B, w)
        if fortran:
            dz = np.asfortranarray(dz)
        return Case(op, [dz, dh, z, act], (0,), nbytes(dz, dh, z), 25 * z.size, label)
    if op == "act_tangent":
        if fortran:
            return None
        t = arr(K_TANGENTS, B, w, scale=1.0)
        z = arr(B, w)
        dt = np.empty_like(t)
        return Case(op, [dt, t, z, act], (0,), nbytes(dt, t, z), 25 * z.size + t.size, label + f" K={K_TANGENTS}")
    if op == "bias_grad":
        dz = arr(B, w)
        db = np.empty(w, dtype)
        return Case(op, [db, dz], (0,), nbytes(dz, db), dz.size, label)
    raise ValueError(op)


# ----------------------------------------------------------------------------- v1: exact maths

def _v1_bias_act_forward(h, z, b, act):
    nb._kernels(act, z, fast=False)["bias_act"](h, z, b.reshape(1, -1) if b.ndim == 1 else b)


def _v1_act_backward(dz, dh, z, act):
    nb._kernels(act, z, fast=False)["backward"](dz, dh, z)


def _v1_act_tangent(dt, t, z, act):
    nb._kernels(act, z, fast=False)["tangent"](dt, t, z)


# ----------------------------------------------------------------------------- v2: prange

_PAR = dict(cache=True, parallel=True, fastmath=nb._FM, error_model="numpy")


def _make_parallel(code, fast):
    # prod's loops with prange over rows: each thread owns whole rows of (B, w).
    @njit(**_PAR)
    def bias_act(h, z, b):
        T = z.dtype.type
        per_row = b.shape[0] > 1
        for i in prange(z.shape[0]):
            hi, zi = h[i], z[i]
            bi = b[i] if per_row else b[0]
            for j in range(zi.shape[0]):
                v = zi[j] + bi[j]
                zi[j] = v
                hi[j] = nb._act(v, code, T, fast)

    @njit(**_PAR)
    def backward(dz, dh, z):
        T = z.dtype.type
        for i in prange(z.shape[0]):
            dzi, dhi, zi = dz[i], dh[i], z[i]
            for j in range(zi.shape[0]):
                dzi[j] = dhi[j] * nb._act_grad(zi[j], code, T, fast)

    return dict(bias_act=bias_act, backward=backward)


_PARALLEL = {}


def _par(act, z):
    key = (nb._code(act), nb._fast(z))
    if key not in _PARALLEL:
        _PARALLEL[key] = _make_parallel(*key)
    return _PARALLEL[key]


@njit(**_PAR)
def _par_bias_grad(db, dz):
    # prange over column blocks of 32 (each thread owns disjoint db entries), rows in order.
    B, w = dz.shape
    nblk = (w + 31) // 32
    for blk in prange(nblk):
        j0 = blk * 32
        j1 = min(j0 + 32, w)
        for j in range(j0, j1):
            db[j] = 0
        for i in range(B):
            for j in range(j0, j1):
                db[j] += dz[i, j]


def _v2_bias_act_forward(h, z, b, act):
    _par(act, z)["bias_act"](h, z, b.reshape(1, -1) if b.ndim == 1 else b)


def _v2_act_backward(dz, dh, z, act):
    _par(act, z)["backward"](dz, dh, z)


# ----------------------------------------------------------------------------- v0: naive port

@njit(cache=True)
def _naive_act(x, code):
    if code == 1:
        return x / (1.0 + math.exp(-x))
    if code == 2:
        return x if x > 0 else 0.0 * x
    if code == 3:
        return 0.5 * x * (1.0 + math.tanh(0.7978845608028654 * (x + 0.044715 * x ** 3)))
    if code == 4:
        return math.tanh(x)
    return x


@njit(cache=True)
def _naive_bias_act(h, z, b, code):
    B, w = z.shape
    for i in range(B):
        for j in range(w):
            z[i, j] += b[j]
            h[i, j] = _naive_act(z[i, j], code)


def _v0_bias_act_forward(h, z, b, act):
    if b.ndim != 1:
        return numpy_ref.bias_act_forward(h, z, b, act)
    _naive_bias_act(h, z, b, nb._code(act))


VARIANTS = {
    "numpy": Variant(numpy_ref, note="numpy_ref"),
    **prod_variants(),
    "numba_v1_exact": Variant(namespace(bias_act_forward=_v1_bias_act_forward, act_backward=_v1_act_backward,
                                        act_tangent=_v1_act_tangent)),
    "numba_v2_parallel": Variant(namespace(bias_act_forward=_v2_bias_act_forward, act_backward=_v2_act_backward,
                                           bias_grad=_par_bias_grad)),
    "numba_v0_naive": Variant(namespace(bias_act_forward=_v0_bias_act_forward)),
}


def main(argv=None):
    run_lab(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
