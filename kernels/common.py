"""Kernel lab shared parts: inputs, the tolerance table, validation, timing, the device name.

- ``Case``: one op's arguments at one size (built by each op file's ``make_case``), with the
  indices of the arguments the op writes and the bytes moved / flops done (napkin maths);
- ``TOLERANCES``: (dtype, op) -> (rtol, atol, reason), from tests/tolerances.py (one table for
  the tests and the lab); ``assert_close_to_ref`` uses it;
- ``validate(op, variant, case)``: the variant on copies of the inputs against ``numpy_ref``;
- ``benchmark(fn, sync, warmup, repeats)``: median seconds; the first call (Numba compile, or
  a fresh process's cache load) is reported separately;
- ``Variant``: a set of implementations of some ops (an object with op-named attributes) plus
  where its arrays live ("numpy" or "cupy"), and ``gpu_available``/``device_name``;
- ``run_lab(module)``: what every op file's ``main()`` does: validate every variant at the
  tiny sizes, then time every variant at the timing sizes and print one table.

Lab code: not installed, run from the repository root (``PYTHONPATH=. python kernels/adam.py``).
Importing it changes no global setting; the lab's entry points set Numba's threading layer
(``use_lab_threading_layer``).
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

# ----------------------------------------------------------------------------- tolerances
# One table for the package's tests and the lab, kept with the tests (tests/tolerances.py).
from tests.tolerances import TOLERANCES, assert_close_to_ref, tolerance  # noqa: E402,F401


# ----------------------------------------------------------------------------- threading

def use_lab_threading_layer():
    """Numba's workqueue threading layer for the prange variants, unless NUMBA_THREADING_LAYER
    is set: the default OpenMP layer took ~12 ms per parallel call on the loaded 2-core
    development machine (thread wake-ups under oversubscription); workqueue took 0.19 ms.

    A process-wide Numba setting, so only the lab's entry points call it (``run_lab``, each op
    file's ``main``; ``bench_all.main``), before the first parallel launch; importing this module
    changes nothing.
    """
    if "NUMBA_THREADING_LAYER" not in os.environ:
        import numba
        numba.config.THREADING_LAYER = "workqueue"


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
    use_lab_threading_layer()
    n = validate_module(mod, variants=args.variants)
    name = os.path.basename(getattr(mod, "__file__", mod.__name__))
    print(f"{name}: {n} validations passed against numpy_ref ({', '.join(args.variants or mod.VARIANTS)})")
    if not args.no_timing:
        rows = time_module(mod, variants=args.variants, repeats=args.repeats)
        print_table(rows, f"device: {device_name()}")
