"""The GPU backend: numpy_ref's ops on CuPy arrays.

- GEMMs: ``matmul`` is cupy.matmul (cuBLAS, float32 arithmetic). ``matmul_tf32`` (TF32 tensor
  cores for float32, one direct cublasGemmEx call) is prepared but is not an op and is not
  used by default: its effect on C2ST must be measured on a GPU first (``make_ops(matmul="tf32")``
  builds the ops that use it; kernels/gpu_profile.py e2e compares both).
- MLP elementwise work and the optimiser: CuPy ``ElementwiseKernel``s, one per (op, activation,
  in place or not), built on first use (CuPy compiles per dtype and caches on disk):
  ``bias_act_forward``, ``act_backward``, ``act_tangent``, ``adam_step``, ``ema_update``,
  ``sinusoidal_embedding``; ``bias_grad`` is ``cupy.sum(axis=0, out=)``.
- Loss and sampler steps (``dsm_perturb``, ``dsm_loss``, ``affine_step``, ``langevin_step``,
  ``trace_rows``): two implementations of the same maths, chosen by the measured switch
  ``LOSS_SAMPLER_KERNELS``:
  "cupy": ElementwiseKernels (per-row coefficients read as raw arrays), and one templated
  RawModule (block reductions in float64, one atomic add per block) for the loss, the
  Langevin norms and the trace;
  "numba": the numba.cuda kernels of ``_cuda_kernels`` launched by ``_cuda_kernels.NumbaLaunches``
  (device views made once per buffer, no CUDA-array-interface synchronisation, kernels compiled
  eagerly, CuPy's stream, argument blocks prepared once; ``NUMBA_LAUNCH`` picks how).
  ``numba_ops()`` returns the numba implementation whatever the switch says (the kernel lab
  times both side by side).

Imported only when the "cuda" backend is chosen (``backend.get_backend``), so CuPy is imported
here at module level; numba.cuda is imported only when the numba kernels are used (through
``_numba_cuda.load()``). Kept thin: the maths is numpy_ref's; this layer's tests are marked ``gpu``.
"""
import functools
from types import SimpleNamespace

import cupy
import numpy as np

NAME = "cuda"

# Measured switches (issue 16). Flip them only with the figures of kernels/gpu_check.sh showing
# the alternative at least as fast on the same GPU (gpu_profile.py "launches" and "phases", the
# lab's dsm_loss / sampler_step tables), and say so here with the numbers.
# LOSS_SAMPLER_KERNELS: "cupy" (measured on the lent H100, 2026-11-26: 17-45 us a call against
# 210-290 us for numba.cuda launched the old way, i.e. converting the CuPy arrays at each call);
# "numba": the numba.cuda kernels with the launch fixes, not yet measured on a GPU.
LOSS_SAMPLER_KERNELS = "cupy"
# NUMBA_LAUNCH (used when LOSS_SAMPLER_KERNELS == "numba"): "prepared" or "dispatcher", see
# _cuda_kernels.NumbaLaunches; not yet measured on a GPU.
NUMBA_LAUNCH = "prepared"
ACTIVATIONS = ("identity", "silu", "relu", "gelu", "tanh")

# Device functions per activation: value F(x) and derivative G(x), templated on the element
# type T (CuPy typedefs T for the kernel's dtype; exp/tanh resolve to the float or double
# overloads). exp of a non-positive argument only, as numpy_ref's sigmoid.
_PREAMBLE = r"""
template <typename T> __device__ __forceinline__ T snp_sigmoid(T x) {
    T e = exp(-fabs(x));
    T s = T(1) / (T(1) + e);
    return x >= T(0) ? s : e * s;
}
template <typename T> __device__ __forceinline__ T snp_gelu_tanh(T x) {
    return tanh(T(0.7978845608028654) * (x + T(0.044715) * x * x * x));
}
template <typename T> __device__ __forceinline__ T F_identity(T x) { return x; }
template <typename T> __device__ __forceinline__ T G_identity(T x) { return T(1); }
template <typename T> __device__ __forceinline__ T F_silu(T x) { return x * snp_sigmoid(x); }
template <typename T> __device__ __forceinline__ T G_silu(T x) {
    T s = snp_sigmoid(x);
    return s * (T(1) + x * (T(1) - s));
}
template <typename T> __device__ __forceinline__ T F_relu(T x) { return x <= T(0) ? T(0) : x; }
template <typename T> __device__ __forceinline__ T G_relu(T x) { return x > T(0) ? T(1) : T(0); }
template <typename T> __device__ __forceinline__ T F_gelu(T x) { return T(0.5) * x * (T(1) + snp_gelu_tanh(x)); }
template <typename T> __device__ __forceinline__ T G_gelu(T x) {
    T th = snp_gelu_tanh(x);
    return T(0.5) * (T(1) + th)
         + T(0.5) * x * (T(1) - th * th) * T(0.7978845608028654) * (T(1) + T(3.0 * 0.044715) * x * x);
}
template <typename T> __device__ __forceinline__ T F_tanh(T x) { return tanh(x); }
template <typename T> __device__ __forceinline__ T G_tanh(T x) { T th = tanh(x); return T(1) - th * th; }
"""

# (in_params, out_params, operation); {a} is the activation name. Broadcasting does the shapes:
# b (w,) or (B, w) against z (B, w); z (B, w) against t (K, B, w).
_SPECS = {
    "bias_act": ("T b", "T z, T h", "T v = z + b; z = v; h = F_{a}(v);"),
    "bias_act_inplace": ("T b", "T z", "z = F_{a}(z + b);"),
    "backward": ("T dh, T z", "T dz", "dz = dh * G_{a}(z);"),
    "backward_inplace": ("T z", "T dh", "dh = dh * G_{a}(z);"),
    "tangent": ("T t, T z", "T dt", "dt = t * G_{a}(z);"),
    "tangent_inplace": ("T z", "T t", "t = t * G_{a}(z);"),
}
_KERNELS = {}


def _code(act):
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; choose from {ACTIVATIONS}")
    return act


def _act_kernel(kind, act):
    key = (kind, _code(act))
    k = _KERNELS.get(key)
    if k is None:
        ins, outs, op = _SPECS[kind]
        k = cupy.ElementwiseKernel(ins, outs, op.format(a=act), f"snpse_{kind}_{act}", preamble=_PREAMBLE)
        _KERNELS[key] = k
    return k


def _same(a, b):
    return a is b or (a.shape == b.shape and a.strides == b.strides and a.data.ptr == b.data.ptr)


# ----------------------------------------------------------------------------- GEMM

def matmul(out, a, b):
    """out = a @ b; a (m, k), b (k, n) (possibly transposed views), out (m, n).

    cupy.matmul: calling cuBLAS sgemm directly (kernels/matmul.py, variant cuda_v1_cublas)
    measured no faster on the lent H100 (0.039 vs 0.037 ms at 256 x 256 x 256).
    """
    cupy.matmul(a, b, out=out)


def _gemm_operand(a):
    # (transpose flag, leading dimension) presenting the row-major (r, c) array a to
    # column-major cuBLAS as a^T (c x r): C-contiguous memory IS a^T with ld = c; F-contiguous
    # memory (h.T, W.T in the backward pass) is a column-major with ld = r, so cuBLAS transposes.
    from cupy_backends.cuda.libs import cublas
    if a.flags.c_contiguous:
        return cublas.CUBLAS_OP_N, max(1, a.shape[1])
    if a.flags.f_contiguous:
        return cublas.CUBLAS_OP_T, max(1, a.shape[0])
    raise ValueError("matmul_tf32 takes C- or F-contiguous operands")


_CUBLAS_COMPUTE_32F_FAST_TF32 = 77  # cublas_api.h (cuBLAS >= 11)
_CUDA_R_32F = 0  # library_types.h
_CUBLAS_GEMM_DEFAULT = -1


def matmul_tf32(out, a, b):
    """out = a @ b as ``matmul``, float32 operands multiplied on the TF32 tensor cores (10-bit
    mantissas, float32 accumulation: ~3e-4 relative error against float32's ~1e-6); float64
    operands take cupy.matmul. One cublasGemmEx call on CuPy's handle and current stream; the
    handle's pointer mode is restored after it. Not an op and not a default: offered only after
    its C2ST effect is measured on a GPU (make_ops(matmul="tf32"))."""
    if out.dtype != np.float32:
        cupy.matmul(a, b, out=out)
        return
    from cupy_backends.cuda.libs import cublas
    if not out.flags.c_contiguous:
        raise ValueError("matmul_tf32 writes a C-contiguous out")
    op_a, lda = _gemm_operand(a)
    op_b, ldb = _gemm_operand(b)
    m, k = a.shape
    n = b.shape[1]
    one, zero = np.ones((), np.float32), np.zeros((), np.float32)
    handle = cupy.cuda.device.get_cublas_handle()
    mode = cublas.getPointerMode(handle)
    cublas.setPointerMode(handle, cublas.CUBLAS_POINTER_MODE_HOST)
    try:
        # Row-major C = A B is column-major C^T = B^T A^T: an (n x m) product of (n x k), (k x m).
        cublas.gemmEx(handle, op_b, op_a, n, m, k, one.ctypes.data, b.data.ptr, _CUDA_R_32F, ldb,
                      a.data.ptr, _CUDA_R_32F, lda, zero.ctypes.data, out.data.ptr, _CUDA_R_32F, n,
                      _CUBLAS_COMPUTE_32F_FAST_TF32, _CUBLAS_GEMM_DEFAULT)
    finally:
        cublas.setPointerMode(handle, mode)


# ----------------------------------------------------------------------------- MLP layers

def act_value(z, act):
    """act(z), elementwise; returns a new array."""
    h = cupy.empty_like(z)
    _act_kernel("bias_act", act)(cupy.zeros((), z.dtype), z.copy(), h)
    return h


def act_grad(z, act):
    """d act(z) / dz, elementwise; returns a new array."""
    g = cupy.empty_like(z)
    _act_kernel("backward", act)(cupy.ones((), z.dtype), z, g)
    return g


def bias_act_forward(h, z, b, act):
    """z += b (in place, z: (B, w) holds x @ W), then h = act(z). b: (w,) or (B, w); h may be z."""
    if _same(h, z):
        _act_kernel("bias_act_inplace", act)(b, z)
    else:
        _act_kernel("bias_act", act)(b, z, h)


def act_backward(dz, dh, z, act):
    """dz = dh * act'(z); dz, dh, z: (B, w). dz may be dh."""
    if _same(dz, dh):
        _act_kernel("backward_inplace", act)(z, dh)
    else:
        _act_kernel("backward", act)(dh, z, dz)


def act_tangent(dt, t, z, act):
    """Forward-mode: dt = act'(z) * t with t, dt: (K, B, w) and z: (B, w) broadcast over K."""
    if _same(dt, t):
        _act_kernel("tangent_inplace", act)(z, t)
    else:
        _act_kernel("tangent", act)(t, z, dt)


def bias_grad(db, dz):
    """db = sum over rows of dz; db: (w,), dz: (B, w)."""
    cupy.sum(dz, axis=0, out=db)


def _simple(name, ins, outs, op, preamble=""):
    k = _KERNELS.get(name)
    if k is None:
        k = cupy.ElementwiseKernel(ins, outs, op, name, preamble=preamble)
        _KERNELS[name] = k
    return k


def sinusoidal_embedding(out, tau):
    """out[:, j] = sin(tau / 10000^(j/(h-1))) for j < h, cos(...) for the second half (float64 maths).

    out: (B, 2h), tau: (B,).
    """
    half = out.shape[1] // 2
    k = _simple("snpse_sinusoidal", "raw S tau, int32 half", "T out",
                # i: flat index into out (B, 2h): row i / (2h), column i % (2h).
                "int row = i / (2 * half); int col = i - row * 2 * half;"
                "int j = col < half ? col : col - half;"
                "double f = pow(10000.0, -(double)j / (double)(half > 1 ? half - 1 : 1));"
                "double a = (double)tau[row] * f;"
                "out = (T)(col < half ? sin(a) : cos(a));")
    k(tau, np.int32(half), out)


# ----------------------------------------------------------------------------- optimiser

def adam_step(p, g, m, v, lr, beta1, beta2, eps, step):
    """One Adam update of the flat parameter buffer p (in place); step counts from 1."""
    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    T = p.dtype.type
    k = _simple("snpse_adam", "T g, T lr_t, T b1, T b2, T eps, T bc2", "T p, T m, T v",
                "T mi = b1 * m + (T(1) - b1) * g;"
                "T vi = b2 * v + (T(1) - b2) * g * g;"
                "m = mi; v = vi;"
                "p -= lr_t * mi / (sqrt(vi / bc2) + eps);")
    k(g, T(lr / bc1), T(beta1), T(beta2), T(eps), T(bc2), p, m, v)


def ema_update(e, p, decay):
    """e = decay * e + (1 - decay) * p."""
    T = e.dtype.type
    k = _simple("snpse_ema", "T p, T decay", "T e", "e = decay * e + (T(1) - decay) * p;")
    k(p, T(decay), e)


# ----------------------------------------------------------------------------- loss and sampler steps
# CuPy kernels below; the numba.cuda ones (``_cuda_kernels``) serve the same ops when
# LOSS_SAMPLER_KERNELS == "numba". Launched the old way (the CuPy arrays converted through the
# CUDA array interface at each call) numba.cuda cost 300-500 us per call on an H100, 20-50x the
# kernels' own time; NumbaLaunches removes those conversions (module docstring of _cuda_kernels).


def numba_ops(mode=None):
    """The loss and sampler ops as numba.cuda launches (``_cuda_kernels.NumbaLaunches``), built
    once per mode (kernels compiled on the first call: seconds, or a disk-cache load).
    mode: "prepared" or "dispatcher" (None: NUMBA_LAUNCH)."""
    return _numba_ops(mode or NUMBA_LAUNCH)


@functools.lru_cache(maxsize=None)
def _numba_ops(mode):
    from ._numba_cuda import load
    return load().NumbaLaunches(mode)


def _numba_serves():
    if LOSS_SAMPLER_KERNELS not in ("cupy", "numba"):
        raise ValueError(f"LOSS_SAMPLER_KERNELS must be 'cupy' or 'numba', got {LOSS_SAMPLER_KERNELS!r}")
    return LOSS_SAMPLER_KERNELS == "numba"


_ROW = "int r = i / d;"  # i: flat index into the (B, d) output in C order; r its row

_REDUCE_SRC = r"""
// Block-level float64 sum of one value per thread, then one atomic add per block into acc[slot].
// blockDim.x == 256 (the launcher's choice); every thread of the block must call it.
__device__ void block_sum_add(double v, double* acc, int slot) {
    __shared__ double sm[256];
    sm[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) sm[threadIdx.x] += sm[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) atomicAdd(acc + slot, sm[0]);
    __syncthreads();
}

// One thread per element k of the C-contiguous (B, d) arrays, row i = k / d:
// r = c_i out_k + z_k, dout_k = (2/n) c_i r, acc[0] += sum r^2 (float64).
template <typename T>
__global__ void dsm_loss(T* dout, const T* out, const T* z, const T* c, double* acc, int B, int d) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    int n = B * d;
    double v = 0.0;
    if (k < n) {
        int i = k / d;
        T r = c[i] * out[k] + z[k];
        dout[k] = (T(2) / T(n)) * c[i] * r;
        v = (double)r * (double)r;
    }
    block_sum_add(v, acc, 0);
}

// One thread per row i of the C-contiguous (B, d) arrays: acc[0] += |noise_i|, acc[1] += |score_i|.
template <typename T>
__global__ void row_norm_sums(const T* score, const T* noise, double* acc, int B, int d) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    double a = 0.0, s = 0.0;
    if (i < B) {
        for (int j = 0; j < d; ++j) {
            double nv = noise[i * d + j], sv = score[i * d + j];
            a += nv * nv;
            s += sv * sv;
        }
        a = sqrt(a);
        s = sqrt(s);
    }
    block_sum_add(a, acc, 0);
    block_sum_add(s, acc, 1);
}

// One thread per row i: out_i = sum_k sum_j tout[k, i, j] tin[k, i, j] (float64 sum),
// tangents C-contiguous (K, B, d).
template <typename T>
__global__ void trace_rows(T* out, const T* tout, const T* tin, int K, int B, int d) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < B) {
        double acc = 0.0;
        for (int k = 0; k < K; ++k)
            for (int j = 0; j < d; ++j) {
                long long e = ((long long)k * B + i) * d + j;
                acc += (double)tout[e] * (double)tin[e];
            }
        out[i] = (T)acc;
    }
}
"""
_TPB = 256
_MODULES = {}


def _raw(name, dtype):
    """The templated RawModule kernel ``name<T>`` for dtype float32 / float64."""
    ctype = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}[np.dtype(dtype)]
    mod = _MODULES.get(ctype)
    if mod is None:
        names = [f"{k}<{ctype}>" for k in ("dsm_loss", "row_norm_sums", "trace_rows")]
        mod = _MODULES[ctype] = cupy.RawModule(code=_REDUCE_SRC, options=("--std=c++11",), name_expressions=names)
    return mod.get_function(f"{name}<{ctype}>")


def _contiguous(*arrays):
    for a in arrays:
        if not a.flags.c_contiguous:
            raise ValueError("the cuda loss and sampler kernels need C-contiguous arrays")


def _grid(n):
    return (max(1, (int(n) + _TPB - 1) // _TPB),)


def _cupy_dsm_perturb(theta_in, theta0, z, alpha, sigma, c_in):
    """theta_in = c_in * (alpha * theta0 + sigma * z), row-wise scalars (B,)."""
    k = _simple("snpse_dsm_perturb", "T theta0, T z, raw T alpha, raw T sigma, raw T c_in, int32 d", "T theta_in",
                _ROW + "theta_in = c_in[r] * (alpha[r] * theta0 + sigma[r] * z);")
    k(theta0, z, alpha, sigma, c_in, np.int32(theta0.shape[1]), theta_in)


def dsm_perturb(theta_in, theta0, z, alpha, sigma, c_in):
    """theta_in = c_in * (alpha * theta0 + sigma * z), row-wise scalars (B,)."""
    if _numba_serves():
        return numba_ops().dsm_perturb(theta_in, theta0, z, alpha, sigma, c_in)
    return _cupy_dsm_perturb(theta_in, theta0, z, alpha, sigma, c_in)


def _cupy_dsm_loss(dout, out, z, c):
    """Denoising score-matching loss (noise-prediction form); returns the batch loss (a host float)."""
    _contiguous(dout, out, z, c)
    B, d = out.shape
    acc = cupy.zeros(1, dtype=cupy.float64)
    _raw("dsm_loss", out.dtype)(_grid(B * d), (_TPB,), (dout, out, z, c, acc, np.int32(B), np.int32(d)))
    return float(acc.get()[0]) / out.size


def dsm_loss(dout, out, z, c):
    """Denoising score-matching loss (noise-prediction form); returns the batch loss (a host float)."""
    if _numba_serves():
        return numba_ops().dsm_loss(dout, out, z, c)
    return _cupy_dsm_loss(dout, out, z, c)


def _cupy_affine_step(theta, a, score, b, noise, c):
    """theta = a theta + b score + c noise with per-row coefficients a, b, c: (B,)."""
    k = _simple("snpse_affine_step", "raw T a, T score, raw T b, T noise, raw T c, int32 d", "T theta",
                _ROW + "theta = a[r] * theta + (b[r] * score + c[r] * noise);")
    k(a, score, b, noise, c, np.int32(theta.shape[1]), theta)


def affine_step(theta, a, score, b, noise, c):
    """theta = a theta + b score + c noise with per-row coefficients a, b, c: (B,)."""
    if _numba_serves():
        return numba_ops().affine_step(theta, a, score, b, noise, c)
    return _cupy_affine_step(theta, a, score, b, noise, c)


def _cupy_langevin_step(theta, score, noise, snr, alpha):
    """Langevin corrector with the batch-mean signal-to-noise step size (see numpy_ref); the norms
    are reduced on the device and the update reads them there (no host round trip)."""
    _contiguous(score, noise)
    B, d = theta.shape
    acc = cupy.zeros(2, dtype=cupy.float64)
    _raw("row_norm_sums", score.dtype)(_grid(B), (_TPB,), (score, noise, acc, np.int32(B), np.int32(d)))
    k = _simple("snpse_langevin_update", "T score, T noise, raw float64 acc, float64 snr, float64 alpha, int32 B",
                "T theta",
                "double ratio = snr * (acc[0] / B) / fmax(acc[1] / B, 1e-30);"
                "double eps = 2.0 * alpha * ratio * ratio;"
                "theta = theta + (T)(eps * (double)score + sqrt(2.0 * eps) * (double)noise);")
    k(score, noise, acc, float(snr), float(alpha), np.int32(B), theta)


def langevin_step(theta, score, noise, snr, alpha):
    """Langevin corrector with the batch-mean signal-to-noise step size (see numpy_ref); the norms
    are reduced on the device and the update reads them there (no host round trip)."""
    if _numba_serves():
        return numba_ops().langevin_step(theta, score, noise, snr, alpha)
    return _cupy_langevin_step(theta, score, noise, snr, alpha)


def _cupy_trace_rows(out, tangent_out, tangent_in):
    """out_i = sum_k <tangent_in[k, i], tangent_out[k, i]>; out: (B,), tangents: (K, B, d)."""
    _contiguous(out, tangent_out, tangent_in)
    K, B, d = tangent_out.shape
    _raw("trace_rows", out.dtype)(_grid(B), (_TPB,), (out, tangent_out, tangent_in, np.int32(K), np.int32(B),
                                                      np.int32(d)))


def trace_rows(out, tangent_out, tangent_in):
    """out_i = sum_k <tangent_in[k, i], tangent_out[k, i]>; out: (B,), tangents: (K, B, d)."""
    if _numba_serves():
        return numba_ops().trace_rows(out, tangent_out, tangent_in)
    return _cupy_trace_rows(out, tangent_out, tangent_in)


# ----------------------------------------------------------------------------- op sets for side-by-side runs

_LOSS_SAMPLER_OPS = ("dsm_perturb", "dsm_loss", "affine_step", "langevin_step", "trace_rows")


def make_ops(loss_sampler=None, matmul="float32", numba_mode=None):
    """A namespace with every op of this module, some swapped, for a ``backend.Backend`` built
    side by side with the default one (the kernel lab, kernels/gpu_profile.py):
    loss_sampler "cupy" / "numba" (None: LOSS_SAMPLER_KERNELS), matmul "float32" / "tf32".
    The module's own functions stay the package's default."""
    if matmul not in ("float32", "tf32"):
        raise ValueError(f"matmul must be 'float32' or 'tf32', got {matmul!r}")
    loss_sampler = loss_sampler or LOSS_SAMPLER_KERNELS
    if loss_sampler not in ("cupy", "numba"):
        raise ValueError(f"loss_sampler must be 'cupy' or 'numba', got {loss_sampler!r}")
    from . import numpy_ref  # its public functions are the op list (tests/test_ops.py checks this module has them)
    g = globals()
    ops = {name: g[name] for name, f in vars(numpy_ref).items()
           if callable(f) and not name.startswith("_") and getattr(f, "__module__", None) == numpy_ref.__name__}
    if matmul == "tf32":
        ops["matmul"] = matmul_tf32
    if loss_sampler == "numba":
        nb = numba_ops(numba_mode)
        ops.update({name: getattr(nb, name) for name in _LOSS_SAMPLER_OPS})
    else:
        ops.update({name: g["_cupy_" + name] for name in _LOSS_SAMPLER_OPS})
    return SimpleNamespace(NAME=NAME, ACTIVATIONS=ACTIVATIONS, **ops)
