"""The GPU backend: numpy_ref's ops on CuPy arrays.

- MLP elementwise work and the optimiser: CuPy ``ElementwiseKernel``s, one per (op, activation,
  in place or not), built on first use (CuPy compiles per dtype and caches on disk):
  ``bias_act_forward``, ``act_backward``, ``act_tangent``, ``adam_step``, ``ema_update``,
  ``sinusoidal_embedding``; ``bias_grad`` is ``cupy.sum(axis=0, out=)``.
- Loss and sampler steps: the numba.cuda kernels of ``_cuda_kernels`` launched on the CuPy
  arrays (CUDA array interface), on CuPy's current stream: ``dsm_perturb``, ``dsm_loss``,
  ``affine_step``, ``langevin_step``, ``trace_rows``.

Imported only when the "cuda" backend is chosen (``backend.get_backend``), so CuPy is imported
here at module level and numba.cuda on the first numba-kernel launch. Kept thin: the maths is
numpy_ref's, tested on the CPU through the numpy path and under the CUDA simulator; this
layer's own tests are marked ``gpu``.
"""
import cupy
import numpy as np

NAME = "cuda"
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


# ----------------------------------------------------------------------------- numba.cuda ops

_NK = None
_STREAMS = {}


def _nk():
    """The numba.cuda kernels, imported on first use (with the numpy.row_stack fix)."""
    global _NK
    if _NK is None:
        from . import _cuda_kernels
        _NK = _cuda_kernels
    return _NK


def _args(*arrays):
    # numba views of the CuPy arrays without the per-array stream synchronisation that the
    # CUDA array interface would otherwise trigger (we launch on CuPy's stream: ordered).
    from numba import cuda
    return [cuda.as_cuda_array(a, sync=False) for a in arrays]


def _stream():
    ptr = cupy.cuda.get_current_stream().ptr
    if ptr == 0:
        return 0
    s = _STREAMS.get(ptr)
    if s is None:
        from numba import cuda
        s = _STREAMS[ptr] = cuda.external_stream(ptr)
    return s


def dsm_perturb(theta_in, theta0, z, alpha, sigma, c_in):
    """theta_in = c_in * (alpha * theta0 + sigma * z), row-wise scalars (B,)."""
    _nk().launch_dsm_perturb(*_args(theta_in, theta0, z, alpha, sigma, c_in), stream=_stream())


def dsm_loss(dout, out, z, c):
    """Denoising score-matching loss (noise-prediction form); returns the batch loss (a host float)."""
    acc = cupy.zeros(1, dtype=cupy.float64)
    _nk().launch_dsm_loss(*_args(dout, out, z, c, acc), stream=_stream())
    return float(acc.get()[0]) / out.size


def affine_step(theta, a, score, b, noise, c):
    """theta = a theta + b score + c noise with per-row coefficients a, b, c: (B,)."""
    _nk().launch_affine_step(*_args(theta, a, score, b, noise, c), stream=_stream())


def langevin_step(theta, score, noise, snr, alpha):
    """Langevin corrector with the batch-mean signal-to-noise step size (see numpy_ref)."""
    acc = cupy.zeros(2, dtype=cupy.float64)
    _nk().launch_langevin_step(*_args(theta, score, noise), float(snr), float(alpha), *_args(acc),
                               stream=_stream())


def trace_rows(out, tangent_out, tangent_in):
    """out_i = sum_k <tangent_in[k, i], tangent_out[k, i]>; out: (B,), tangents: (K, B, d)."""
    _nk().launch_trace_rows(*_args(out, tangent_out, tangent_in), stream=_stream())

