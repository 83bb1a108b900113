"""GEMM: the network's linear maps, out = a @ b, with a or b possibly a transposed view.

Op: ``matmul`` (out (m, n) C-contiguous, a (m, k), b (k, n)). Forward runs h @ W (both
C-contiguous), backward h.T @ dz (a transposed) and dz @ W.T (b transposed). On the CPU every
variant is a BLAS call; on the GPU the question is the cost of getting to cuBLAS from Python.

Variants:
  0. ``numpy``        numpy_ref: np.matmul(a, b, out=out) (OpenBLAS here).
  1. ``prod``         snpse_np.backends.numba_cpu: the same np.matmul (a numba loop does not beat BLAS).
  2. ``prod_cuda``       snpse_np.backends.cuda: cupy.matmul(a, b, out=out); GPU only.
  3. ``cuda_v1_cublas``  one direct cuBLAS sgemm/dgemm call (cupy_backends' binding), the
                         layouts mapped onto cuBLAS transpose flags, to skip cupy.matmul's
                         dispatch; GPU only. Measured on the lent H100 (2026-11-26): 0.039 ms vs
                         prod_cuda's 0.037 ms at 256x256x256, 0.070 vs 0.069 ms at 10000x256x256:
                         no gain, so the package keeps cupy.matmul.
  4. ``cuda_v2_tf32``    backends.cuda.matmul_tf32: one cublasGemmEx with TF32 tensor-core
                         compute for float32 (float64 unchanged); GPU only. Validated against
                         the float32 reference at TF32's tolerance (op ``matmul_tf32``).
                         Prepared, not the default: its C2ST effect is measured first
                         (kernels/gpu_profile.py e2e_tf32).

Run: ``PYTHONPATH=. python kernels/matmul.py``.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kernels.common import Case, Variant, gpu_available, namespace, nbytes, prod_variants, run_lab  # noqa: E402
from snpse_np.backends import numpy_ref  # noqa: E402

OPS = ("matmul", "matmul_tf32")  # the same product; matmul_tf32 is checked at TF32's tolerance
# (m, k, n, layout): layout "nn" a @ b, "tn" a is h.T (h C-contiguous (k, m)), "nt" b is W.T
TINY_SIZES = [(1, 5, 3, "nn"), (7, 29, 13, "tn"), (33, 19, 1, "nt"), (5, 1, 4, "nn"), (9, 6, 11, "tn")]
TIMING_SIZES = [(256, 256, 256, "nn"), (256, 256, 256, "tn"), (256, 256, 256, "nt"), (256, 5, 256, "nn"),
                (10_000, 256, 256, "nn")]
QUICK_SIZES = [(256, 256, 256, "tn"), (10_000, 256, 256, "nn")]  # bench_all --quick: a training and a sampling GEMM


REFERENCE = namespace(matmul=numpy_ref.matmul, matmul_tf32=numpy_ref.matmul)


def make_case(op, size, dtype, rng):
    m, k, n, layout = size
    scale = 1.0 / np.sqrt(max(k, 1))  # entries of out ~ N(0, 1)
    a = (scale * rng.standard_normal((m, k))).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    if layout == "tn":
        a = np.ascontiguousarray(a.T).T  # F-contiguous: a transposed C-contiguous array
    elif layout == "nt":
        b = np.ascontiguousarray(b.T).T
    out = np.empty((m, n), dtype)
    return Case(op, [out, a, b], (0,), nbytes(out, a, b), 2.0 * m * k * n, f"{m}x{k}x{n} {layout}")


def _gemm_operand(a):
    """(op, ld) presenting the row-major (r, c) array a to column-major cuBLAS as a^T (c x r).

    C-contiguous: its memory IS a^T column-major with ld = c: no transpose. F-contiguous (a
    transposed C-contiguous array, as h.T and W.T in backward): its memory is a column-major
    with ld = r, so cuBLAS transposes it.
    """
    from cupy_backends.cuda.libs import cublas
    if a.flags.c_contiguous:
        return cublas.CUBLAS_OP_N, max(1, a.shape[1])
    if a.flags.f_contiguous:
        return cublas.CUBLAS_OP_T, max(1, a.shape[0])
    raise ValueError("cuda_v1_cublas takes C- or F-contiguous operands")


def _cublas_matmul(out, a, b):
    import cupy
    from cupy_backends.cuda.libs import cublas
    one, zero = np.ones((), out.dtype), np.zeros((), out.dtype)
    gemm = cublas.sgemm if out.dtype == np.float32 else cublas.dgemm
    op_a, lda = _gemm_operand(a)
    op_b, ldb = _gemm_operand(b)
    m, k = a.shape
    n = b.shape[1]
    handle = cupy.cuda.device.get_cublas_handle()
    cublas.setPointerMode(handle, cublas.CUBLAS_POINTER_MODE_HOST)
    # Row-major C = A B is column-major C^T = B^T A^T: an (n x m) product of (n x k) and (k x m).
    gemm(handle, op_b, op_a, n, m, k, one.ctypes.data, b.data.ptr, ldb, a.data.ptr, lda,
         zero.ctypes.data, out.data.ptr, n)


def _cuda_variants():
    if not gpu_available():
        return {}
    from snpse_np.backends import cuda as cuda_backend
    return {"cuda_v1_cublas": Variant(namespace(matmul=_cublas_matmul), xp="cupy", note="direct cuBLAS call"),
            "cuda_v2_tf32": Variant(namespace(matmul_tf32=cuda_backend.matmul_tf32), xp="cupy",
                                    note="cublasGemmEx, TF32 compute")}


VARIANTS = {
    "numpy": Variant(numpy_ref, note="numpy_ref"),
    **prod_variants(),
    **_cuda_variants(),
}


def main(argv=None):
    run_lab(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
