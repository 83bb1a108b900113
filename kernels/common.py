"""Kernel lab shared parts: inputs, the tolerance table, validation, timing, the device name.

- ``Case``: one op's arguments at one size (built by each op file's ``make_case``), with the
  indices of the arguments the op writes and the bytes moved / flops done (napkin maths);
- ``TOLERANCES``: (dtype, op) -> (rtol, atol, reason); ``assert_close_to_ref`` uses it;
- ``validate(op, variant, case)``: the variant on copies of the inputs against ``numpy_ref``;
- ``benchmark(fn, sync, warmup, repeats)``: median seconds; the first call (Numba compile, or
  a fresh process's cache load) is reported separately;
- ``Variant``: a set of implementations of some ops (an object with op-named attributes) plus
  where its arrays live ("numpy" or "cupy"), and ``gpu_available``/``device_name``;
- ``run_lab(module)``: what every op file's ``main()`` does: validate every variant at the
  tiny sizes, then time every variant at the timing sizes and print one table.

Lab code: not installed, run from the repository root (``PYTHONPATH=. python kernels/adam.py``).
"""
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from snpse_np.backends import numpy_ref  # noqa: E402

# The prange variants: Numba's default OpenMP layer took ~12 ms per parallel call on the loaded
# 2-core development machine (thread wake-ups under oversubscription); workqueue took 0.19 ms.
# Set before the first parallel launch; NUMBA_THREADING_LAYER in the environment wins.
if "NUMBA_THREADING_LAYER" not in os.environ:
    import numba
    numba.config.THREADING_LAYER = "workqueue"

# ----------------------------------------------------------------------------- tolerances
# Compared against numpy_ref run in the SAME dtype on the same inputs. Reasons name what makes
# two correct implementations differ.
_F32_ULPS = "float32 rounding: a different but valid order of the same few operations"
_F32_FAST = ("float32 rational tanh/sigmoid (|err| <= 2.7e-7 on tanh) times |z| <= ~15 in silu/gelu "
             "and their derivatives; numpy's own float32 exp/tanh are off by ~1e-6 at these inputs")
_F32_SUM = "float32 sums of B rows in another order (or a float64 accumulator) vs numpy's"
_F64 = "float64: only reassociation and FMA contraction differ"
TOLERANCES = {
    ("float32", "bias_act_forward"): (1e-5, 1e-5, _F32_FAST),
    ("float32", "act_backward"): (1e-5, 2e-5, _F32_FAST + "; gelu' has 1 - tanh^2 cancellation"),
    ("float32", "act_tangent"): (1e-5, 2e-5, _F32_FAST + "; gelu' has 1 - tanh^2 cancellation"),
    ("float32", "bias_grad"): (1e-5, 1e-5, _F32_SUM),
    ("float32", "sinusoidal_embedding"): (0.0, 2e-7, "both round a float64 sin/cos to float32; "
                                          "the float64 values differ in the last bits (1 ulp of 1.0 in float32 "
                                          "is 1.2e-7)"),
    ("float32", "dsm_perturb"): (1e-6, 1e-6, _F32_ULPS),
    ("float32", "dsm_loss"): (1e-5, 1e-7, _F32_ULPS + "; the loss is summed in float64"),
    ("float32", "adam_step"): (1e-5, 1e-7, _F32_ULPS + "; sqrt(v / bc2) vs fused divisions"),
    ("float32", "ema_update"): (1e-6, 1e-7, _F32_ULPS),
    ("float32", "affine_step"): (1e-6, 1e-6, _F32_ULPS),
    ("float32", "langevin_step"): (1e-5, 1e-6, "float64 batch norms summed in another order, "
                                   "then a float32 update"),
    ("float32", "matmul"): (1e-5, 1e-5, "float32 sums of k products in another order (blocked GEMM, "
                             "FMA); the cases scale entries of out to ~1"),
    ("float32", "trace_rows"): (1e-5, 1e-5, _F32_SUM + " (K d terms per row)"),
    ("float32", "matmul_tf32"): (5e-3, 5e-3, "TF32 keeps 10 mantissa bits of each operand (relative error up "
                                 "to 2^-10 if truncated) before float32 accumulation: ~8e-4 standard error "
                                 "per entry of out ~ 1, 5e-3 is > 6 of them"),
    ("float32", "em_trajectory"): (2e-3, 2e-3, "float32 MLP over many steps: rounding differences "
                                   "grow along the trajectory (affine map with |a| ~ 1)"),
    ("float32", "heun_trajectory"): (2e-3, 2e-3, "float32 MLP over many steps (as em_trajectory), two "
                                     "evaluations a step"),
    ("float32", "mlp_forward"): (1e-5, 1e-5, "float32 sums of K products per layer in another order "
                                 "(register tiles vs BLAS), over ~6 layers"),
    ("float32", "mlp_backward"): (1e-4, 2e-6, "float32 gradient sums over the batch in another order "
                                  "(per-tile sums added atomically in arrival order vs one GEMM)"),
    ("float32", "train_step"): (1e-4, 1e-6, "float32 forward, loss and backward in another summation "
                                "order, then Adam's division by sqrt(v) (v ~ g^2 early on)"),
}
for _op in {k[1] for k in TOLERANCES}:
    TOLERANCES[("float64", _op)] = (1e-9, 1e-11, _F64)
TOLERANCES[("float64", "em_trajectory")] = (1e-7, 1e-7, _F64 + ", accumulated over the trajectory")


def tolerance(dtype, op):
    return TOLERANCES[(np.dtype(dtype).name, op)]


def assert_close_to_ref(op, got, ref, dtype, what=""):
    """Raise AssertionError when ``got`` and ``ref`` differ by more than the table allows."""
    rtol, atol, reason = tolerance(dtype, op)
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        raise AssertionError(f"{op}{what}: shape {got.shape} != reference {ref.shape}")
    bad = ~(np.abs(got - ref) <= atol + rtol * np.abs(ref))
    bad &= ~(np.isnan(got) & np.isnan(ref))
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, np.abs(got - ref), -1)), got.shape) if got.ndim else ()
        raise AssertionError(
            f"{op}{what} ({np.dtype(dtype).name}): {int(bad.sum())} of {got.size} values off; worst at {i}: "
            f"{got[i]!r} vs reference {ref[i]!r} (rtol {rtol}, atol {atol}: {reason})")


# ----------------------------------------------------------------------------- devices

def gpu_available():
    try:
        import cupy
        return bool(cupy.cuda.is_available())
    except Exception:
        return False


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name():
    """'CPU model, N cores' plus the GPU when CuPy sees one."""
    name = f"{cpu_name()}, {os.cpu_count()} cores"
    if gpu_available():
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name += f"; GPU {props['name'].decode() if isinstance(props['name'], bytes) else props['name']}"
    return name


# ----------------------------------------------------------------------------- variants

@dataclass
class Variant:
    """Implementations of some ops; ``impl`` has op-named attributes (a backend module, or a
    namespace). ``xp``: "numpy" or "cupy" (where the inputs must live)."""
    impl: object
    xp: str = "numpy"
    note: str = ""

    def get(self, op):
        return getattr(self.impl, op, None)


def namespace(**fns):
    return SimpleNamespace(**fns)


def prod_variants():
    """{"prod": numba_cpu} and, with a GPU, {"prod_cuda": cuda}: the shipping kernels."""
    from snpse_np.backends import numba_cpu
    out = {"prod": Variant(numba_cpu, note="snpse_np.backends.numba_cpu")}
    if gpu_available():
        from snpse_np.backends import cuda
        out["prod_cuda"] = Variant(cuda, xp="cupy", note="snpse_np.backends.cuda")
    return out


def load_numba_cuda():
    """numba.cuda and the package's numba.cuda kernels (``snpse_np.backends._cuda_kernels``),
    imported through the package's one loader (numba-cuda 0.30.4 under numpy >= 2.5 needs
    numpy.row_stack; see snpse_np.backends._numba_cuda). Returns the kernels module."""
    from snpse_np.backends._numba_cuda import load
    return load()


def numba_cuda_variants():
    """With a GPU only, the loss and sampler ops as numba.cuda kernels on CuPy arrays, three ways:

    - "numba_cuda": ``backends.cuda.numba_ops("prepared")`` (device views made once per buffer,
      eager compilation, CuPy's stream, argument blocks marshalled once per argument set);
    - "numba_cuda_dispatcher": ``numba_ops("dispatcher")`` (the same views, numba's reused
      configured launch objects);
    - "numba_cuda_v0_interface": the way the H100 runs measured 210-290 us a call: every CuPy
      array converted through the CUDA array interface at each launch (``cuda.as_cuda_array``,
      sync=False) and a new external stream object per call.
    """
    if not gpu_available():
        return {}
    import cupy
    from snpse_np.backends import cuda as cuda_backend
    nk = load_numba_cuda()
    from numba import cuda

    def args(*arrays):
        return [cuda.as_cuda_array(a, sync=False) for a in arrays]

    def stream():
        return cuda.external_stream(cupy.cuda.get_current_stream().ptr)

    def dsm_loss(dout, out, z, c):
        acc = cupy.zeros(1, dtype=cupy.float64)
        nk.launch_dsm_loss(*args(dout, out, z, c, acc), stream=stream())
        return float(acc.get()[0]) / out.size

    def langevin_step(theta, score, noise, snr, alpha):
        acc = cupy.zeros(2, dtype=cupy.float64)
        nk.launch_langevin_step(*args(theta, score, noise), float(snr), float(alpha), *args(acc), stream=stream())

    v0 = namespace(
        dsm_perturb=lambda *a: nk.launch_dsm_perturb(*args(*a), stream=stream()),
        dsm_loss=dsm_loss,
        affine_step=lambda *a: nk.launch_affine_step(*args(*a), stream=stream()),
        langevin_step=langevin_step,
        trace_rows=lambda *a: nk.launch_trace_rows(*args(*a), stream=stream()))
    return {"numba_cuda": Variant(cuda_backend.numba_ops("prepared"), xp="cupy",
                                  note="_cuda_kernels.NumbaLaunches, prepared launches"),
            "numba_cuda_dispatcher": Variant(cuda_backend.numba_ops("dispatcher"), xp="cupy",
                                             note="_cuda_kernels.NumbaLaunches, numba's configured launches"),
            "numba_cuda_v0_interface": Variant(v0, xp="cupy", note="CUDA array interface at every launch")}


def _xp(name):
    if name == "cupy":
        import cupy
        return cupy
    return np


def _sync(name):
    if name == "cupy":
        import cupy
        return cupy.cuda.Device().synchronize
    return None


# ----------------------------------------------------------------------------- cases

@dataclass
class Case:
    """Arguments of one op call in op order (arrays and scalars), the indices it writes,
    the bytes it moves and flops it does (napkin maths), and a label for the table."""
    op: str
    args: list
    writes: tuple
    nbytes: float = 0.0
    flops: float = 0.0
    label: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def dtype(self):
        for a in self.args:
            if isinstance(a, np.ndarray) and a.dtype.kind == "f":
                return a.dtype
        return np.dtype(np.float64)

    def copy_to(self, xp_name):
        xp = _xp(xp_name)
        # order="K": a transposed (F-contiguous) input stays transposed on every backend
        return [xp.array(a, copy=True, order="K") if isinstance(a, np.ndarray) else a for a in self.args]


def nbytes(*arrays):
    return float(sum(a.nbytes for a in arrays))


def to_host(a):
    if isinstance(a, np.ndarray) or np.isscalar(a) or a is None:
        return a
    import cupy
    return cupy.asnumpy(a)


def validate(op, variant, case, reference=None):
    """Run ``variant`` and the reference (numpy_ref, or an op file's ``REFERENCE``) on copies of
    ``case``; assert every written array and the return value agree within the tolerance table."""
    fn = variant.get(op)
    ref_args = case.copy_to("numpy")
    ref_ret = getattr(reference or numpy_ref, op)(*ref_args)
    args = case.copy_to(variant.xp)
    ret = fn(*args)
    sync = _sync(variant.xp)
    if sync:
        sync()
    for i in case.writes:
        assert_close_to_ref(op, to_host(args[i]), ref_args[i], case.dtype, f" arg {i} [{case.label}]")
    if ref_ret is not None:
        assert_close_to_ref(op, np.asarray(ret), np.asarray(ref_ret), case.dtype, f" return [{case.label}]")


# ----------------------------------------------------------------------------- timing

def benchmark(fn, sync=None, warmup=3, repeats=20, min_time=0.0):
    """Time ``fn()``: returns dict(median, min, first) in seconds.

    ``first`` is the first call alone (Numba compile or cache load, CUDA module load): report
    it separately, never inside the median. ``sync`` (e.g. the CuPy device's synchronize) runs
    after each call inside the timed region, so GPU work is counted. ``min_time``: keep
    repeating past ``repeats`` until this many seconds were timed (smooths short kernels).
    """
    sync = sync or (lambda: None)
    t0 = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        fn()
    sync()
    times = []
    total = 0.0
    while len(times) < repeats or total < min_time:
        t0 = time.perf_counter()
        fn()
        sync()
        dt = time.perf_counter() - t0
        times.append(dt)
        total += dt
        if len(times) > 100 * max(repeats, 1):
            break
    return dict(median=statistics.median(times), min=min(times), first=first, n=len(times))


def rate(case, seconds):
    """'GB/s' for memory-bound ops, else 'GFLOP/s', as text."""
    if seconds <= 0:
        return ""
    if case.flops and case.flops / max(case.nbytes, 1) > 4:
        return f"{case.flops / seconds / 1e9:.1f} GFLOP/s"
    if case.nbytes:
        return f"{case.nbytes / seconds / 1e9:.1f} GB/s"
    return ""


def time_variant(op, variant, case, warmup=3, repeats=20, min_time=0.05):
    """Benchmark ``variant``'s op on a fresh copy of the case (ops write in place, so the
    inputs drift over repeats; the ops here are insensitive to that)."""
    fn = variant.get(op)
    args = case.copy_to(variant.xp)
    return benchmark(lambda: fn(*args), _sync(variant.xp), warmup, repeats, min_time)


# ----------------------------------------------------------------------------- the lab driver

def print_table(rows, title=None, file=None):
    """rows: list of dicts with the same keys -> an aligned text table."""
    file = file or sys.stdout
    if title:
        print(title, file=file)
    if not rows:
        return
    keys = list(rows[0])
    width = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    print("  ".join(k.ljust(width[k]) for k in keys), file=file)
    print("  ".join("-" * width[k] for k in keys), file=file)
    for r in rows:
        print("  ".join(str(r[k]).ljust(width[k]) for k in keys), file=file)
    file.flush()


def validate_module(mod, dtypes=None, sizes=None, variants=None):
    """Validate every variant of an op file at its tiny sizes (dtypes: the file's DTYPES, else
    float32 and float64); returns the number of checks."""
    dtypes = dtypes or getattr(mod, "DTYPES", (np.float32, np.float64))
    n = 0
    names = variants or list(mod.VARIANTS)
    for vname in names:
        var = mod.VARIANTS[vname]
        for op in mod.OPS:
            if var.get(op) is None:
                continue
            for dtype in dtypes:
                for size in (sizes or mod.TINY_SIZES):
                    case = mod.make_case(op, size, dtype, np.random.default_rng(n))
                    if case is None:
                        continue
                    try:
                        validate(op, var, case, getattr(mod, "REFERENCE", None))
                    except AssertionError as e:
                        raise AssertionError(f"{mod.__name__} variant {vname!r}: {e}") from None
                    n += 1
    return n


def time_module(mod, sizes=None, dtype=np.float32, variants=None, repeats=20, min_time=0.05):
    """Time every variant x op x size; returns table rows (ms, compile s, rate, x vs numpy)."""
    rows = []
    for op in mod.OPS:
        for size in (sizes or mod.TIMING_SIZES):
            base = None
            for vname in (variants or list(mod.VARIANTS)):
                var = mod.VARIANTS[vname]
                if var.get(op) is None:
                    continue
                case = mod.make_case(op, size, dtype, np.random.default_rng(0))
                if case is None:
                    continue
                r = time_variant(op, var, case, repeats=repeats, min_time=min_time)
                if vname == "numpy":
                    base = r["median"]
                rows.append(dict(op=op, variant=vname, size=case.label, dtype=np.dtype(dtype).name,
                                 ms=f"{r['median'] * 1e3:.4f}", first_call_s=f"{r['first']:.3f}",
                                 rate=rate(case, r["median"]),
                                 vs_numpy=f"{base / r['median']:.2f}x" if base else ""))
    return rows


def run_lab(mod, argv=None):
    """An op file's main(): validate all variants (float32 and float64), then time them."""
    import argparse
    ap = argparse.ArgumentParser(description=(mod.__doc__ or "").splitlines()[0])
    ap.add_argument("--variants", nargs="*", help="variant names (default: all)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--no-timing", action="store_true")
    args = ap.parse_args(argv)
    n = validate_module(mod, variants=args.variants)
    name = os.path.basename(getattr(mod, "__file__", mod.__name__))
    print(f"{name}: {n} validations passed against numpy_ref ({', '.join(args.variants or mod.VARIANTS)})")
    if not args.no_timing:
        rows = time_module(mod, variants=args.variants, repeats=args.repeats)
        print_table(rows, f"device: {device_name()}")
