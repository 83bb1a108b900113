"""numba.cuda kernels for the loss and the sampler steps, and launching them at their real cost.

Import through ``snpse_np.backends._numba_cuda.load()`` (it handles numba-cuda 0.30.4's import
under numpy >= 2.5). The kernels compute numpy_ref's maths; each op is one launch (two for the
Langevin corrector), with per-block float64 sums and one atomic add per block:

- ``_dsm_perturb``: theta_in = c_in (alpha theta0 + sigma z), one thread per element;
- ``_dsm_loss``: dout = (2/n) c r with r = c out + z, and acc[0] += sum r^2 (float64);
- ``_affine_step``: theta = a theta + b score + c noise;
- ``_row_norm_sums`` then ``_langevin_update``: the batch-mean norms reduced on the device, the
  step size eps = 2 alpha (snr mean|noise| / mean|score|)^2 recomputed by every thread (no
  host round trip);
- ``_trace_rows``: out_i = sum_k <tangent_out[k, i], tangent_in[k, i]>.

Two ways to launch them:

- ``launch_*(..., stream=0)``: the plain numba launch on whatever arrays numba accepts (numpy
  arrays under ``NUMBA_ENABLE_CUDASIM=1``, numba device arrays), used by the simulator tests and
  the lab;
- ``NumbaLaunches``: the ops with numpy_ref's names and signatures on CuPy arrays, for the cuda
  backend (``backends.cuda.numba_ops``). On the lent H100 a numba.cuda launch on CuPy arrays
  cost 300-500 us of host time against ~20 us of kernel (kernels/gpu_profile.py, 2026-11-26).
  In numba-cuda 0.30.4 every CuPy argument is converted at every launch (DLPack or the CUDA
  array interface, whose "stream" entry is synchronised when CUDA_ARRAY_INTERFACE_SYNC is on),
  the argument types are resolved again and each argument is re-marshalled. ``NumbaLaunches``
  does each of those once:

  1. ``DeviceViews``: one numba device-array view per CuPy buffer (pointer, shape, strides,
     dtype), built from an interface description without a stream entry, so nothing is
     synchronised, and without an owner (the view never keeps memory alive; the key is the
     whole layout, so a reused pointer with the same layout is the same view);
  2. ``compile_kernels``: every kernel compiled eagerly for float32 and float64 C-contiguous
     arrays, then closed to compilation (a launch with other types raises, it never compiles
     in the middle of a loop);
  3. the launch goes on CuPy's current stream through ``cuda.external_stream`` (one numba
     stream object per CuPy stream), so it is ordered with the CuPy kernels around it;
  4. ``mode="prepared"``: per argument set (same buffers, same stream) the kernel arguments are
     marshalled once into a ``PreparedLaunch`` and later calls only launch (scalars are updated
     in place); ``mode="dispatcher"``: the reused configured launch object of numba's public
     API (``kernel[grid, block, stream]``) called with the cached views.

  Which kernels the cuda backend ships (these or its CuPy ones) and which mode is a measured
  switch in ``backends.cuda``; ``kernels/gpu_profile.py launches`` prints the per-launch host
  cost of each way side by side.
"""
import math
import sys
from collections import OrderedDict

import numpy as np

if not hasattr(np, "row_stack") and "numba.cuda" not in sys.modules:
    raise ImportError("numba-cuda 0.30.4 needs numpy.row_stack (removed in numpy 2.5): import these kernels "
                      "through snpse_np.backends._numba_cuda.load()")

from numba import cuda, float64  # noqa: E402

TPB = 128  # threads per block; the shared reduction buffers below have this size


def blocks(n, tpb=TPB):
    return max(1, (int(n) + tpb - 1) // tpb)


# ----------------------------------------------------------------------------- reductions

@cuda.jit(device=True)
def _block_sum_add(sm, t, acc, slot):
    # Tree reduction of sm[0:TPB] (shared float64) by the block's threads, then one atomic
    # add of the block's total into acc[slot]. Every thread of the block must call this.
    cuda.syncthreads()
    s = TPB // 2
    while s > 0:
        if t < s:
            sm[t] += sm[t + s]
        cuda.syncthreads()
        s //= 2
    if t == 0:
        cuda.atomic.add(acc, slot, sm[0])


# ----------------------------------------------------------------------------- loss

@cuda.jit(cache=True)
def _dsm_perturb(theta_in, theta0, z, alpha, sigma, c_in):
    # One thread per element k of the (B, d) arrays: row i = k // d, column j = k % d.
    k = cuda.grid(1)
    d = theta0.shape[1]
    if k < theta0.shape[0] * d:
        i = k // d
        j = k - i * d
        theta_in[i, j] = c_in[i] * (alpha[i] * theta0[i, j] + sigma[i] * z[i, j])


@cuda.jit(cache=True)
def _dsm_loss(dout, out, z, c, acc):
    # One thread per element: r = c_i out_ij + z_ij (array dtype), dout = (2/n) c_i r;
    # r^2 in float64 summed per block in shared memory, one atomic add per block into acc[0].
    sm = cuda.shared.array(TPB, float64)
    k = cuda.grid(1)
    t = cuda.threadIdx.x
    B, d = out.shape
    n = B * d
    v = 0.0
    if k < n:
        i = k // d
        j = k - i * d
        r = c[i] * out[i, j] + z[i, j]
        dout[i, j] = (2.0 / n) * c[i] * r
        v = float64(r) * float64(r)
    sm[t] = v
    _block_sum_add(sm, t, acc, 0)


# ----------------------------------------------------------------------------- samplers

@cuda.jit(cache=True)
def _affine_step(theta, a, score, b, noise, c):
    # One thread per element of theta (B, d): theta = a_i theta + b_i score + c_i noise.
    k = cuda.grid(1)
    d = theta.shape[1]
    if k < theta.shape[0] * d:
        i = k // d
        j = k - i * d
        theta[i, j] = a[i] * theta[i, j] + (b[i] * score[i, j] + c[i] * noise[i, j])


@cuda.jit(cache=True)
def _row_norm_sums(score, noise, acc):
    # One thread per row i: |noise_i| and |score_i| (float64); block sums atomically added to
    # acc[0] (noise) and acc[1] (score).
    sm = cuda.shared.array(TPB, float64)
    i = cuda.grid(1)
    t = cuda.threadIdx.x
    a = 0.0
    s = 0.0
    if i < score.shape[0]:
        for j in range(score.shape[1]):
            a += float64(noise[i, j]) * float64(noise[i, j])
            s += float64(score[i, j]) * float64(score[i, j])
        a = math.sqrt(a)
        s = math.sqrt(s)
    sm[t] = a
    _block_sum_add(sm, t, acc, 0)
    sm[t] = s
    _block_sum_add(sm, t, acc, 1)


@cuda.jit(cache=True)
def _langevin_update(theta, score, noise, acc, snr, alpha):
    # One thread per element; every thread recomputes the shared step size from acc (cheap,
    # and saves a host round trip): eps = 2 alpha (snr mean|noise| / mean|score|)^2.
    k = cuda.grid(1)
    B, d = theta.shape
    if k < B * d:
        i = k // d
        j = k - i * d
        nz = acc[0] / B
        ns = acc[1] / B
        ns = ns if ns > 1e-30 else 1e-30  # (max() does not type in numba.cuda 0.68's built-in target)
        ratio = snr * nz / ns
        eps = 2.0 * alpha * ratio * ratio
        theta[i, j] = theta[i, j] + (eps * float64(score[i, j]) + math.sqrt(2.0 * eps) * float64(noise[i, j]))


@cuda.jit(cache=True)
def _trace_rows(out, tangent_out, tangent_in):
    # One thread per row i: sum over k < K and j < d of tangent_out[k, i, j] tangent_in[k, i, j].
    i = cuda.grid(1)
    K, B, d = tangent_out.shape
    if i < B:
        acc = 0.0
        for k in range(K):
            for j in range(d):
                acc += float64(tangent_out[k, i, j]) * float64(tangent_in[k, i, j])
        out[i] = acc


# ----------------------------------------------------------------------------- signatures

def _signature(name, dtype):
    """The eager-compilation signature of kernel ``name`` for float arrays of ``dtype``."""
    T = np.dtype(dtype).name
    m, v, t3, acc = f"{T}[:, ::1]", f"{T}[::1]", f"{T}[:, :, ::1]", "float64[::1]"
    return {"_dsm_perturb": f"void({m}, {m}, {m}, {v}, {v}, {v})",
            "_dsm_loss": f"void({m}, {m}, {m}, {v}, {acc})",
            "_affine_step": f"void({m}, {v}, {m}, {v}, {m}, {v})",
            "_row_norm_sums": f"void({m}, {m}, {acc})",
            "_langevin_update": f"void({m}, {m}, {m}, {acc}, float64, float64)",
            "_trace_rows": f"void({v}, {t3}, {t3})"}[name]


KERNELS = {"_dsm_perturb": _dsm_perturb, "_dsm_loss": _dsm_loss, "_affine_step": _affine_step,
           "_row_norm_sums": _row_norm_sums, "_langevin_update": _langevin_update, "_trace_rows": _trace_rows}


def compile_kernels(dtypes=(np.float32, np.float64)):
    """Compile every kernel for C-contiguous arrays of ``dtypes`` now, then forbid compiling at
    launch (a mismatched launch raises TypeError). GPU only (the simulator does not compile)."""
    for name, kern in KERNELS.items():
        for dt in dtypes:
            kern.compile(_signature(name, dt))
        kern.disable_compile()


# ----------------------------------------------------------------------------- plain launchers

def launch_dsm_perturb(theta_in, theta0, z, alpha, sigma, c_in, stream=0):
    _dsm_perturb[blocks(theta0.shape[0] * theta0.shape[1]), TPB, stream](theta_in, theta0, z, alpha, sigma, c_in)


def launch_dsm_loss(dout, out, z, c, acc, stream=0):
    """Writes dout and ADDS sum r^2 (float64) to acc[0]: the caller zeroes acc and divides by n."""
    _dsm_loss[blocks(out.shape[0] * out.shape[1]), TPB, stream](dout, out, z, c, acc)


def launch_affine_step(theta, a, score, b, noise, c, stream=0):
    _affine_step[blocks(theta.shape[0] * theta.shape[1]), TPB, stream](theta, a, score, b, noise, c)


def launch_langevin_step(theta, score, noise, snr, alpha, acc, stream=0):
    """acc: (2,) float64, zeroed by the caller."""
    _row_norm_sums[blocks(theta.shape[0]), TPB, stream](score, noise, acc)
    _langevin_update[blocks(theta.shape[0] * theta.shape[1]), TPB, stream](theta, score, noise, acc,
                                                                         float(snr), float(alpha))


def launch_trace_rows(out, tangent_out, tangent_in, stream=0):
    _trace_rows[blocks(tangent_out.shape[1]), TPB, stream](out, tangent_out, tangent_in)


# ----------------------------------------------------------------------------- launching on CuPy arrays

def _layout_key(a):
    return (a.data.ptr, a.shape, a.strides, a.dtype.char)


class DeviceViews:
    """numba device-array views of CuPy arrays, one per buffer layout, least recently used
    dropped beyond ``max_views``. ``views(a)`` -> DeviceNDArray over a's memory; no stream
    synchronisation and no reference to a (the caller keeps its buffers alive)."""

    def __init__(self, max_views=1024):
        self.max_views = int(max_views)
        self._views = OrderedDict()
        self.made = 0  # views built so far (a count for the lab: a loop should stop building them)

    def __call__(self, a):
        key = _layout_key(a)
        v = self._views.get(key)
        if v is None:
            desc = {"shape": a.shape, "strides": a.strides, "typestr": a.dtype.str, "data": (a.data.ptr, False),
                    "version": 3}  # no "stream" entry: nothing to synchronise
            v = cuda.from_cuda_array_interface(desc, owner=None, sync=False)
            self._views[key] = v
            self.made += 1
            if len(self._views) > self.max_views:
                self._views.popitem(last=False)
        else:
            self._views.move_to_end(key)
        return v


class PreparedLaunch:
    """One kernel launch with its arguments marshalled once (numba-cuda 0.30's launch path:
    ``_Kernel._prepare_args`` into the argument list, a ``cuda.core.LaunchConfig``, then
    ``cuda.core.launch``). Calling it launches; scalar arguments (``scalar_positions``, by
    argument index) are passed to the call and written into their marshalled slots.

    Uses numba-cuda internals: on a numba-cuda without them the constructor raises
    RuntimeError saying so (the caller then uses ``mode="dispatcher"`` knowingly).
    """

    def __init__(self, dispatcher, griddim, blockdim, stream, args, scalar_positions=()):
        try:
            from cuda.core import LaunchConfig, launch
            from numba.cuda._compat import CUDA_CORE_GE_1_0
        except ImportError as e:
            raise RuntimeError(f"prepared launches need numba-cuda >= 0.30 with cuda.core ({e}); "
                               "use NumbaLaunches(mode='dispatcher')") from None
        argtypes = tuple(dispatcher.typeof_pyval(a) for a in args)
        kernel = dispatcher.overloads.get(argtypes)
        if kernel is None:
            raise TypeError(f"{dispatcher.py_func.__name__}: no compiled overload for {argtypes}; "
                            f"compiled: {list(dispatcher.overloads)} (arrays must be C-contiguous float32/float64)")
        self._args, self._slots, retr = [], {}, []
        for i, (ty, val) in enumerate(zip(kernel.argument_types, args)):
            if i in scalar_positions:
                self._slots[i] = len(self._args)
            kernel._prepare_args(ty, val, stream, retr, self._args)
        self._order = tuple(sorted(self._slots))
        cfg = dict(grid=(int(griddim), 1, 1), block=(int(blockdim), 1, 1), shmem_size=0)
        cfg["is_cooperative" if CUDA_CORE_GE_1_0 else "cooperative_launch"] = False
        self._config = LaunchConfig(**cfg)
        self._kernel = kernel._codelibrary.get_cufunc().kernel
        self._launch, self._stream = launch, stream

    def __call__(self, *scalars):
        for i, v in zip(self._order, scalars):
            self._args[self._slots[i]].value = v  # ctypes scalars: copied into the launch's parameter block
        self._launch(self._stream, self._config, self._kernel, *self._args)


class NumbaLaunches:
    """The loss and sampler ops (numpy_ref's names and signatures) as numba.cuda launches on
    CuPy arrays, on CuPy's current stream. See the module docstring for what is done once.

    mode: "prepared" (argument blocks marshalled once per argument set) or "dispatcher"
    (numba's reused configured launch objects with the cached views). ``launches`` counts the
    kernel launches made (for kernels/gpu_profile.py).
    """

    MODES = ("prepared", "dispatcher")

    def __init__(self, mode="prepared", max_prepared=1024):
        import cupy
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self._cupy = cupy
        compile_kernels()
        self.views = DeviceViews()
        self._streams = {}
        self._configs = {}
        self._prepared = OrderedDict()
        self._max_prepared = int(max_prepared)
        self._acc = {1: cupy.zeros(1, cupy.float64), 2: cupy.zeros(2, cupy.float64)}  # reused accumulators
        self.launches = 0

    def _stream(self):
        ptr = self._cupy.cuda.get_current_stream().ptr
        s = self._streams.get(ptr)
        if s is None:
            s = self._streams[ptr] = cuda.external_stream(ptr)
        return ptr, s

    def _launch(self, name, n_threads, arrays, scalars=()):
        for a in arrays:
            if not a.flags.c_contiguous:
                raise ValueError("the numba.cuda loss and sampler kernels need C-contiguous arrays")
        kern = KERNELS[name]
        grid = blocks(n_threads)
        ptr, stream = self._stream()
        self.launches += 1
        if self.mode == "dispatcher":
            key = (name, grid, ptr)
            cfg = self._configs.get(key)
            if cfg is None:
                cfg = self._configs[key] = kern[grid, TPB, stream]
            cfg(*[self.views(a) for a in arrays], *scalars)
            return
        key = (name, grid, ptr) + tuple(_layout_key(a) for a in arrays)
        p = self._prepared.get(key)
        if p is None:
            args = [self.views(a) for a in arrays] + [float(s) for s in scalars]
            p = PreparedLaunch(kern, grid, TPB, stream, args, range(len(arrays), len(args)))
            self._prepared[key] = p
            if len(self._prepared) > self._max_prepared:
                self._prepared.popitem(last=False)
        p(*scalars)

    def dsm_perturb(self, theta_in, theta0, z, alpha, sigma, c_in):
        """theta_in = c_in * (alpha * theta0 + sigma * z), row-wise scalars (B,)."""
        self._launch("_dsm_perturb", theta0.size, (theta_in, theta0, z, alpha, sigma, c_in))

    def dsm_loss(self, dout, out, z, c):
        """Denoising score-matching loss; writes dout, returns the batch loss (one host read)."""
        acc = self._acc[1]
        acc.fill(0)  # a memset, not a kernel
        self._launch("_dsm_loss", out.size, (dout, out, z, c, acc))
        return float(acc.get()[0]) / out.size

    def affine_step(self, theta, a, score, b, noise, c):
        """theta = a theta + b score + c noise with per-row coefficients a, b, c: (B,)."""
        self._launch("_affine_step", theta.size, (theta, a, score, b, noise, c))

    def langevin_step(self, theta, score, noise, snr, alpha):
        """Langevin corrector with the batch-mean signal-to-noise step size (numpy_ref)."""
        acc = self._acc[2]
        acc.fill(0)
        self._launch("_row_norm_sums", theta.shape[0], (score, noise, acc))
        self._launch("_langevin_update", theta.size, (theta, score, noise, acc), (float(snr), float(alpha)))

    def trace_rows(self, out, tangent_out, tangent_in):
        """out_i = sum_k <tangent_in[k, i], tangent_out[k, i]>; out: (B,), tangents: (K, B, d)."""
        self._launch("_trace_rows", tangent_out.shape[1], (out, tangent_out, tangent_in))
