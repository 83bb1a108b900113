"""Where GPU time goes: per-launch host cost, launches per loop, step phases, CUDA graphs, end to end.

GPU only; every section prints what it could not run and why, and carries on. Sections
(``--sections``, default all but e2e_tf32):

- ``lab``: the GPU variants of kernels/fused_mlp.py, train_step.py and em_trajectory.py
  validated against the numpy reference (the lab's tiny sizes, then the paper network: fused
  forward/backward at 256 and 300 rows, the fused step and its graph at batch 256, block EM and
  Heun at 1,000 samples, the in-kernel Philox path), the Philox normals' moments at 10^6 draws,
  then the timing tables (fused network vs the package's CuPy network; every trajectory variant
  at 10,000 x 1,000, PyTorch eager and CUDA graph beside them). One process, so each kernel is
  compiled once (the first-call column shows the compile).
- ``launches``: the host cost of ONE kernel launch, each way the project can launch, on a tiny
  problem (affine_step on 64 x 5, so the device time, ~2-3 us, is below the host cost):
  CuPy ElementwiseKernel and RawKernel; numba.cuda launched the old way (CuPy arrays through
  the CUDA array interface at every launch), with CuPy arrays passed straight in, through
  ``NumbaLaunches`` in "dispatcher" and "prepared" mode, and one ``PreparedLaunch`` called
  directly; a PyTorch in-place op. Per way: host microseconds per launch (2,000 launches
  enqueued back to back, then one sync; a tiny kernel keeps this host-bound) and the latency
  of one launch plus a sync. This decides backends.cuda.LOSS_SAMPLER_KERNELS / NUMBA_LAUNCH.
- ``loops``: per loop (a training step at batch 256, an Euler-Maruyama step at 10,000 samples;
  the package's loops on CuPy ops and with the numba loss/sampler ops, the fused kernels, the
  CUDA graphs): kernels launched per step, counted by CUPTI through torch.profiler when
  PyTorch is installed (else the op calls, counted by a proxy, and said so), the wall time per
  step over many steps, and that time divided by the launches.
- ``phases``: one training step and one EM step split into phases, each between two syncs.
- ``graphs``: whether the package's CuPy loops can be captured as a CUDA graph (CuPy 14.2
  refused cuBLAS during capture on the H100); prints the outcome.
- ``e2e``: two_moons at 10,000 simulations on the cuda backend with the package's default
  training settings (capped at ``--max-seconds``; the stop reason is printed): train seconds,
  epochs, 10,000 samples' seconds, C2ST against the sbibm reference (when the files are found).
- ``e2e_tf32``: the same with the GEMMs on TF32 tensor cores (backends.cuda.make_ops(matmul=
  "tf32")), two_moons and slcp, for the C2ST effect that must be measured before TF32 is offered.

    PYTHONPATH=. python kernels/gpu_profile.py [--sections launches loops phases graphs e2e]
"""
import argparse
import dataclasses
import os
import sys
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kernels.common import load_numba_cuda, print_table  # noqa: E402
from snpse_np.backend import get_backend  # noqa: E402
from snpse_np.nn import ScoreNetwork  # noqa: E402
from snpse_np.npse import StepDraws  # noqa: E402
from snpse_np.optim import Adam  # noqa: E402
from snpse_np.score import ScoreField  # noqa: E402
from snpse_np.score import ScoreModel  # noqa: E402
from snpse_np.sde import make_sde  # noqa: E402

SECTIONS = ("lab", "launches", "loops", "phases", "graphs", "e2e", "e2e_tf32")


def _torch():
    try:
        import torch
        return torch if torch.cuda.is_available() else None
    except ImportError:
        return None


def section(name):
    """Decorator: run a section, print its failure (with the traceback's last lines) and go on."""
    def wrap(fn):
        def run(*a, **k):
            print(f"\n--- {name}", flush=True)
            t0 = time.perf_counter()
            try:
                fn(*a, **k)
            except Exception as e:  # a section that cannot run says why; the others still run
                print(f"!!! section {name} failed: {type(e).__name__}: {e}")
                print("".join(traceback.format_exc().splitlines(keepends=True)[-6:]))
            print(f"--- {name}: {time.perf_counter() - t0:.1f} s", flush=True)
        return run
    return wrap


def median_us(fn, sync, repeats=200, warmup=20):
    for _ in range(warmup):
        fn()
    sync()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return 1e6 * float(np.median(ts))


def enqueue_us(fn, sync, n=2000, warmup=50):
    """Host microseconds per call for n calls back to back (one sync at the end)."""
    for _ in range(warmup):
        fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return 1e6 * (time.perf_counter() - t0) / n


# ----------------------------------------------------------------------------- the lab on the GPU

@section("kernel lab on the GPU: validation, then timing")
def lab():
    from kernels import em_trajectory as em
    from kernels import fused_mlp as fm
    from kernels import train_step as ts
    from kernels.common import print_table as table, time_module, validate, validate_module
    for mod in (fm, ts, em):
        t0 = time.perf_counter()
        n = validate_module(mod, dtypes=mod.DTYPES)
        print(f"{mod.__name__}: {n} validations passed at the tiny sizes ({', '.join(mod.VARIANTS)}; "
              f"{time.perf_counter() - t0:.1f} s incl. compiles)", flush=True)
    rng = np.random.default_rng(7)
    for op in fm.OPS:
        for size in ((256, "paper"), (300, "paper")):
            validate(op, fm.VARIANTS["cuda_v1_fused"], fm.make_case(op, size, np.float32, rng), fm.REFERENCE)
    print("fused_mlp cuda_v1_fused: forward and backward of the paper network at 256 and 300 rows match numpy")
    for v in ("cuda_v1_fused", "cuda_v2_graph"):
        validate("train_step", ts.VARIANTS[v], ts.make_case("train_step", (256, "paper"), np.float32, rng), ts.REFERENCE)
    print("train_step cuda_v1_fused and cuda_v2_graph: one paper-network step at batch 256 matches numpy")
    for op, v in (("em_trajectory", "cuda_v3_block"), ("heun_trajectory", "cuda_v4_block_heun"),
                  ("em_trajectory", "cuda_v5_graph")):
        validate(op, em.VARIANTS[v], em.make_case(op, (1000, 20, "paper"), np.float32, rng), em.REFERENCE)
    err = em.check_block_philox(em.make_problem("paper"), n=1000, steps=20, seed=5)
    print(f"block EM / Heun / graph EM at 1,000 samples x 20 steps of the paper network match numpy; "
          f"in-kernel Philox path max |diff| {err:.2e}")
    m = em.check_philox_moments(em.kernel_normals(3, 50_000, 4, 5))
    print(f"Philox normals (10^6 draws): ok={m['ok']} mean {m['mean']:+.5f} var {m['var']:.5f} "
          f"skew {m['skew']:+.5f} kurt {m['kurt']:+.5f} corr {m['corr_i']:+.5f}/{m['corr_j']:+.5f}")
    diff = np.abs(em.kernel_normals(3, 1000, 3, 5) - em.philox_normals(3, 1000, 3, 5)).max()
    print(f"in-kernel Philox normals vs the numpy reference: max |diff| {diff:.1e} (GPU libm vs numpy)")
    assert diff < 1e-5
    table(time_module(fm, variants=[v for v in ("prod_cuda", "cuda_v1_fused") if v in fm.VARIANTS], repeats=20),
          "fused network vs the package's CuPy network (ms per call incl. launch)")
    names = [v for v in em.VARIANTS if v not in ("numpy", "prod", "numba_v3_fused")]
    table(em.time_trajectories(variants=names, repeats=2), "trajectories (s per run; per 1,000 steps)")


# ----------------------------------------------------------------------------- launches

@section("per-launch host cost (affine_step, 64 x 5 float32)")
def launches():
    import cupy
    from snpse_np.backends import cuda as cb
    nk = load_numba_cuda()
    from numba import cuda
    sync = cupy.cuda.Device().synchronize
    rng = np.random.default_rng(0)
    B, d = 64, 5
    theta, score, noise = (cupy.asarray(rng.standard_normal((B, d)).astype(np.float32)) for _ in range(3))
    a, b, c = (cupy.asarray(rng.uniform(0.5, 1.5, B).astype(np.float32)) for _ in range(3))
    args = (theta, a, score, b, noise, c)
    tout = cupy.empty(B, np.float32)
    tan = cupy.asarray(rng.standard_normal((1, B, d)).astype(np.float32))

    def old_way():
        s = cuda.external_stream(cupy.cuda.get_current_stream().ptr)
        nk.launch_affine_step(*[cuda.as_cuda_array(x, sync=False) for x in args], stream=s)

    stream0 = cuda.external_stream(cupy.cuda.get_current_stream().ptr)
    grid = nk.blocks(B * d)

    def cupy_direct():
        nk._affine_step[grid, nk.TPB, stream0](*args)

    t0 = time.perf_counter()
    disp, prep = cb.numba_ops("dispatcher"), cb.numba_ops("prepared")
    compile_s = time.perf_counter() - t0
    views = [prep.views(x) for x in args]
    raw = nk.PreparedLaunch(nk._affine_step, grid, nk.TPB, stream0, views)
    ways = [("cupy ElementwiseKernel (package today)", lambda: cb._cupy_affine_step(*args)),
            ("cupy RawKernel (trace_rows)", lambda: cb._cupy_trace_rows(tout, tan, tan)),
            ("numba, CUDA array interface per launch (old)", old_way),
            ("numba, CuPy arrays passed straight in", cupy_direct),
            ("numba NumbaLaunches('dispatcher')", lambda: disp.affine_step(*args)),
            ("numba NumbaLaunches('prepared')", lambda: prep.affine_step(*args)),
            ("numba PreparedLaunch called directly", raw)]
    torch = _torch()
    if torch is not None:
        tt = torch.zeros(B * d, device="cuda")
        ways.append(("torch in-place op (x.mul_)", lambda: tt.mul_(1.0)))
    rows = []
    for name, fn in ways:
        try:
            s = torch.cuda.synchronize if name.startswith("torch") else sync
            rows.append(dict(way=name, host_us_per_launch=f"{enqueue_us(fn, s):.1f}",
                             launch_plus_sync_us=f"{median_us(fn, s):.1f}"))
        except Exception as e:
            rows.append(dict(way=name, host_us_per_launch=f"failed: {type(e).__name__}: {e}"[:70],
                             launch_plus_sync_us=""))
    print_table(rows, f"numba kernels compiled eagerly for float32 + float64 in {compile_s:.1f} s "
                      f"(first numba_ops call; disk cache on later runs)")
    print(f"device views made: {prep.views.made} (one per buffer: the loop above made none after warm-up)")


# ----------------------------------------------------------------------------- loop builders

D, P = 5, 8


def _train_loop(be, batch, seed=0, dtype=np.float32):
    """One NPSE training step as NPSE.train's inner loop does it (draws, one packed upload,
    perturb, forward, loss with its host read, backward, Adam + EMA), on backend ``be``."""
    xp = be.xp
    net = ScoreNetwork.paper(D, P)
    model = ScoreModel(net, make_sde("ve", sigma_max=10.0))
    rng = np.random.default_rng(seed)
    params = be.to_device(net.init(rng, dtype))
    grads = xp.empty_like(params)
    pv, gv = net.views(params), net.views(grads)
    opt = Adam(be, params, 5e-4, ema_decay=0.999)
    th0 = be.to_device(rng.standard_normal((batch, D)).astype(dtype))
    xb = be.to_device(rng.standard_normal((batch, P)).astype(dtype))
    ws = net.workspace(be, batch, dtype, train=True)
    theta_in, dout = xp.empty_like(th0), xp.empty_like(th0)
    draws = StepDraws(model, batch, D, dtype)

    def step():
        draws.fill(rng.uniform(1e-4, 1.0, batch), rng.standard_normal((batch, D)))
        a, s, c_in, tau, c, z, _ = draws.upload(be)
        be.ops.dsm_perturb(theta_in, th0, z, a, s, c_in)
        out = net.forward(be, pv, theta_in, tau, ws, x=xb)
        loss = be.ops.dsm_loss(dout, out, z, c)
        net.backward(be, pv, dout, ws, gv)
        opt.step(grads)
        return loss

    return step


def _em_loop_step(be, n, seed=0, dtype=np.float32):
    """One Euler-Maruyama step as sampling.euler_maruyama does it, on backend ``be``."""
    xp = be.xp
    net = ScoreNetwork.paper(D, P)
    model = ScoreModel(net, make_sde("ve", sigma_max=10.0))
    params = be.to_device(net.init(seed, dtype))
    xc = net.condition(be, params, be.to_device(np.zeros((1, P), dtype)))
    field = ScoreField(model, be, params, xc, n, dtype)
    rng = np.random.default_rng(seed)
    theta = be.to_device(rng.standard_normal((n, D)).astype(dtype))
    noise = xp.empty_like(theta)
    normal = be.normal_source(rng)
    a, b, c = (xp.empty(n, dtype=dtype) for _ in range(3))

    def step():
        s = field.score(theta, 0.5)
        normal(noise)
        a.fill(1.0)
        b.fill(1e-4)
        c.fill(1e-3)
        be.ops.affine_step(theta, a, s, b, noise, c)

    return step


def _fused_train(batch):
    import cupy
    from kernels import train_step as ts
    case = ts.make_case("train_step", (batch, "paper"), np.float32, np.random.default_rng(0))
    prob = case.args[-1]
    params, m, v, ema, theta0, xdata, idx, draws = [cupy.asarray(a) for a in case.args[:-1]]
    fstep = ts.FusedTrainStep(prob, batch)
    graph = ts.GraphTrainStep(prob, params, m, v, ema, theta0, xdata, batch, draws.shape[0])
    h_draws, h_idx = cupy.asnumpy(draws), cupy.asnumpy(idx)
    return (lambda: fstep(params, m, v, ema, theta0, xdata, idx, draws)), (lambda: graph.step(h_draws, h_idx))


def _block_em(n, steps):
    import cupy
    from kernels import em_trajectory as em
    prob = em.make_problem("paper")
    th = cupy.asarray(np.random.default_rng(0).standard_normal((n, D)).astype(np.float32))
    bs = em.BlockSampler(prob)
    g = em.GraphEM(prob, cupy.asarray(th), steps, seed=1)
    return (lambda: bs.em(th, steps, seed=1)), g.run


class _CountingOps:
    """backend ops wrapped to count calls (the fallback launch count without CUPTI)."""

    def __init__(self, ops):
        self._ops, self.calls = ops, 0

    def __getattr__(self, name):
        fn = getattr(self._ops, name)
        if not callable(fn):
            return fn

        def counted(*a, **k):
            self.calls += 1
            return fn(*a, **k)
        return counted


def cupti_kernel_count(fn, sync):
    """(kernels, memcpys, memsets) one call of fn puts on the GPU, by CUPTI (torch.profiler), or None."""
    torch = _torch()
    if torch is None:
        return None
    from torch.profiler import ProfilerActivity, profile
    fn()
    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        sync()
    names = [e.name for e in prof.events() if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
    if not names:  # the profiler saw nothing (e.g. it does not record other libraries' kernels here)
        return None
    memcpy = sum(1 for n in names if n.lower().startswith("memcpy"))
    memset = sum(1 for n in names if n.lower().startswith("memset"))
    return len(names) - memcpy - memset, memcpy, memset


@section("launches per loop and time per launch")
def loops(batch=256, n=10_000, steps=200):
    import cupy
    from snpse_np.backends import cuda as cb
    sync = cupy.cuda.Device().synchronize
    be = get_backend("cuda")
    be_nb = dataclasses.replace(be, ops=cb.make_ops(loss_sampler="numba"))
    built = [("train: package, CuPy ops", lambda: _train_loop(be, batch), "step"),
             ("train: package, numba loss/sampler ops", lambda: _train_loop(be_nb, batch), "step"),
             ("train: fused kernels (lab)", lambda: _fused_train(batch)[0], "step"),
             ("train: fused step in one CUDA graph (lab)", lambda: _fused_train(batch)[1], "step"),
             ("EM: package, CuPy ops", lambda: _em_loop_step(be, n), "step"),
             ("EM: package, numba loss/sampler ops", lambda: _em_loop_step(be_nb, n), "step"),
             (f"EM: block kernel, {steps} steps in one launch (lab)", lambda: _block_em(n, steps)[0], steps),
             (f"EM: block kernel per step, {steps} in one CUDA graph (lab)", lambda: _block_em(n, steps)[1], steps)]
    torch = _torch()
    if torch is not None:
        from kernels import em_trajectory as em
        import importlib.util
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "compare_torch.py")
        spec = importlib.util.spec_from_file_location("compare_torch", path)
        ct = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(ct)
        built.append(("train: PyTorch eager (examples/compare_torch.py)", lambda: ct.torch_train_step("cuda", batch)[0],
                      "step"))

        def torch_em(graph):
            te = em.TorchEM(em.make_problem("paper"), steps, "cuda")
            th = torch.randn(n, D, device="cuda")
            if graph:
                te.capture(th)
                return te.replay
            return lambda: te.run(th)
        built += [(f"EM: PyTorch eager, {steps} steps (lab)", lambda: torch_em(False), steps),
                  (f"EM: PyTorch, {steps} steps in one CUDA graph (lab)", lambda: torch_em(True), steps)]
    rows = []
    for name, make, per in built:
        try:
            fn = make()
            counts = cupti_kernel_count(fn, sync)
            k = per if isinstance(per, int) else 1
            reps = 5 if k > 1 else 50
            for _ in range(2):
                fn()
            sync()
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            sync()
            per_step = (time.perf_counter() - t0) / reps / k
            if counts is None:
                kern = "n/a (CUPTI count unavailable: no torch, or its profiler saw no kernels)"
                per_launch = ""
            else:
                kern = f"{counts[0] / k:.2f} kernels + {counts[1] / k:.2f} memcpy + {counts[2] / k:.2f} memset"
                per_launch = f"{1e6 * per_step / max((counts[0] + counts[1] + counts[2]) / k, 1e-9):.1f}"
            rows.append(dict(loop=name, gpu_ops_per_step=kern, us_per_step=f"{1e6 * per_step:.1f}",
                             us_per_gpu_op=per_launch))
        except Exception as e:
            rows.append(dict(loop=name, gpu_ops_per_step=f"failed: {type(e).__name__}: {e}"[:80], us_per_step="",
                             us_per_gpu_op=""))
    print_table(rows, f"batch {batch} / {n} samples; per-step wall time over repeated steps (pipelined), "
                      f"GPU operations per step counted by CUPTI")
    # op calls of the package loops (what Python launches), by a counting proxy
    for name, backend in (("train", be), ("EM", be)):
        proxy = _CountingOps(backend.ops)
        pbe = dataclasses.replace(backend, ops=proxy)
        fn = _train_loop(pbe, batch) if name == "train" else _em_loop_step(pbe, n)
        fn()
        proxy.calls = 0
        fn()
        print(f"package {name} step: {proxy.calls} backend op calls (plus the xp calls between them)")


# ----------------------------------------------------------------------------- phases

def phase_times(phases, sync, repeats):
    """{name: median seconds} running the phases in order, each between two syncs."""
    times = {k: [] for k, _ in phases}
    for r in range(repeats + 3):
        for k, fn in phases:
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if r >= 3:
                times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def train_phases(be, batch, dtype=np.float32, seed=0):
    xp = be.xp
    net = ScoreNetwork.paper(D, P)
    model = ScoreModel(net, make_sde("ve", sigma_max=10.0))
    rng = np.random.default_rng(seed)
    params = be.to_device(net.init(rng, dtype))
    grads = xp.empty_like(params)
    pv, gv = net.views(params), net.views(grads)
    opt = Adam(be, params, 5e-4)
    th0 = be.to_device(rng.standard_normal((batch, D)).astype(dtype))
    xb = be.to_device(rng.standard_normal((batch, P)).astype(dtype))
    ws = net.workspace(be, batch, dtype, train=True)
    theta_in, dout = xp.empty_like(th0), xp.empty_like(th0)
    draws = StepDraws(model, batch, D, dtype)
    st = {}

    def prep():
        draws.fill(rng.uniform(1e-4, 1.0, batch), rng.standard_normal((batch, D)))

    def upload():
        a, s, c_in, tau, c, z, _ = draws.upload(be)
        st["c"], st["z"] = [a, s, c_in, tau, c], z

    def perturb():
        a, s, ci, _, _ = st["c"]
        be.ops.dsm_perturb(theta_in, th0, st["z"], a, s, ci)

    def forward():
        st["out"] = net.forward(be, pv, theta_in, st["c"][3], ws, x=xb)

    def loss():
        be.ops.dsm_loss(dout, st["out"], st["z"], st["c"][4])

    def backward():
        net.backward(be, pv, dout, ws, gv)

    def adam():
        opt.step(grads)

    return [("host prep (rng, coefficients)", prep), ("one packed H2D copy", upload),
            ("dsm_perturb", perturb), ("forward", forward), ("dsm_loss + loss to host", loss),
            ("backward", backward), ("adam + ema", adam)]


def em_phases(be, n, dtype=np.float32, seed=0):
    xp = be.xp
    net = ScoreNetwork.paper(D, P)
    model = ScoreModel(net, make_sde("ve", sigma_max=10.0))
    params = be.to_device(net.init(seed, dtype))
    xc = net.condition(be, params, be.to_device(np.zeros((1, P), dtype)))
    field = ScoreField(model, be, params, xc, n, dtype)
    rng = np.random.default_rng(seed)
    theta = be.to_device(rng.standard_normal((n, D)).astype(dtype))
    noise = xp.empty_like(theta)
    normal = be.normal_source(rng)
    a, b, c = (xp.empty(n, dtype=dtype) for _ in range(3))
    st = {}

    def score():
        st["s"] = field.score(theta, 0.5)

    def draw():
        normal(noise)

    def fills():
        a.fill(1.0)
        b.fill(1e-3)
        c.fill(1e-3)

    def step():
        be.ops.affine_step(theta, a, st["s"], b, noise, c)

    return [("score (forward, shared time folded)", score), ("noise on device", draw),
            ("3 coefficient fills", fills), ("affine_step", step)]


@section("step phases (host latency of each phase between two syncs)")
def phases(batch=256, n=10_000, repeats=30):
    from snpse_np.backends import cuda as cb
    be = get_backend("cuda")
    for label, backend in (("CuPy loss/sampler ops", be),
                           ("numba loss/sampler ops", dataclasses.replace(be, ops=cb.make_ops(loss_sampler="numba")))):
        for title, ph in ((f"training step, batch {batch}", train_phases(backend, batch)),
                          (f"Euler-Maruyama step, {n} samples", em_phases(backend, n))):
            res = phase_times(ph, backend.synchronize, repeats)
            print(f"{title} ({label}), median of {repeats}:")
            for k, v in res.items():
                print(f"  {k:40s} {1e6 * v:9.1f} us")
            print(f"  {'sum':40s} {1e6 * sum(res.values()):9.1f} us")


# ----------------------------------------------------------------------------- graphs

@section("can the package's CuPy loops be captured as a CUDA graph?")
def graphs(batch=256, n=10_000):
    import cupy
    be = get_backend("cuda")
    for name, make in (("EM step (ScoreField + affine_step)", lambda: _em_loop_step(be, n)),
                       ("forward of the training network", lambda: _forward_only(be, batch))):
        fn = make()
        fn()
        cupy.cuda.Device().synchronize()
        stream = cupy.cuda.Stream(non_blocking=True)
        error, g = None, None
        with stream:
            stream.begin_capture(cupy.cuda.runtime.streamCaptureModeRelaxed)
            try:
                fn()
            except Exception as e:  # the first refusal is the finding; ending the capture may fail after it
                error = e
            try:
                g = stream.end_capture()
            except Exception as e:
                error = error or e
        if error is not None:
            print(f"{name}: not capturable: {type(error).__name__}: {str(error).splitlines()[0][:160]}")
            continue
        t0 = time.perf_counter()
        for _ in range(20):
            g.launch(stream)
        stream.synchronize()
        print(f"{name}: captured; replay {1e6 * (time.perf_counter() - t0) / 20:.1f} us")


def _forward_only(be, batch, dtype=np.float32):
    net = ScoreNetwork.paper(D, P)
    rng = np.random.default_rng(0)
    pv = net.views(be.to_device(net.init(rng, dtype)))
    th = be.to_device(rng.standard_normal((batch, D)).astype(dtype))
    xb = be.to_device(rng.standard_normal((batch, P)).astype(dtype))
    tau = be.to_device(rng.uniform(0.01, 3, batch).astype(dtype))
    ws = net.workspace(be, batch, dtype, train=True)
    return lambda: net.forward(be, pv, th, tau, ws, x=xb)


# ----------------------------------------------------------------------------- end to end

def npse_run(backend, task_name="two_moons", budget=10_000, max_seconds=90.0, seed=0, obs=1):
    """Simulate ``budget`` pairs, train NPSE (VE, the package's defaults, capped at max_seconds),
    draw 10,000 samples at observation ``obs`` and score them (C2ST, the fast classifier) when
    the sbibm reference is found. Returns a dict of the figures."""
    import snpse_np as sn
    from snpse_np.metrics import c2st
    from snpse_np.tasks import DataNotFoundError, get_task
    task = get_task(task_name, download=False)
    try:
        ref, x_o = task.reference_samples(obs), task.observation(obs)
    except DataNotFoundError as e:
        ref, x_o = None, None
        print(f"  no sbibm files for {task_name} ({str(e).splitlines()[0][:120]}): training time only; copy "
              f"../shared/sbibm/tasks/{task_name} into shared/sbibm/tasks/ of the checkout for the C2ST")
    theta = task.prior.sample(budget, seed=seed + 1)
    x = task.simulate(theta, seed=seed + 2)
    kw = {} if task.ve_sigma_limits is None else dict(sigma_min=task.ve_sigma_limits[0])
    inf = sn.NPSE(task.prior, sde="ve", backend=backend, seed=seed, show_progress=False, **kw)
    post = inf.append_simulations(theta, x).train(max_seconds=max_seconds)
    s = inf.summary
    out = dict(task=task_name, train_s=s["train_seconds"], epochs=s["epochs"], stop=s["stop_reason"],
               best_val=s["best_val_loss"])
    if x_o is not None:
        t0 = time.perf_counter()
        samples = post.sample(10_000, x=x_o, seed=seed + 3, reject_outside_prior=True)
        out["sample_s"] = time.perf_counter() - t0
        out["c2st"] = c2st(ref[:10_000], samples[:10_000])
    return out


def _print_run(label, r):
    extra = (f", sample 10,000 {r['sample_s']:.1f} s, C2ST {r['c2st']:.3f} (obs 1)" if "c2st" in r else "")
    print(f"{label}: train {r['train_s']:.1f} s, {r['epochs']} epochs ({r['stop']}), best val {r['best_val']:.4f}"
          + extra, flush=True)


@section("end to end: two_moons 10k on the cuda backend, default training settings")
def e2e(max_seconds=90.0):
    from snpse_np import npse
    print(f"training defaults: {npse.TRAIN_DEFAULTS}; cap max_seconds={max_seconds} (a 'max_seconds' stop "
          "means the cap, not the schedule, ended training)")
    _print_run("two_moons, cuda (CuPy ops, float32)", npse_run("cuda", max_seconds=max_seconds))
    print("(sbi NPSE on an H100: 86 s training, issue 16; target: >= 10x faster at equal or better C2ST)")


@section("TF32 GEMMs: C2ST effect (two_moons, slcp), float32 vs TF32, same seeds")
def e2e_tf32(max_seconds=60.0):
    from snpse_np.backends import cuda as cb
    be = get_backend("cuda")
    be_tf32 = dataclasses.replace(be, ops=cb.make_ops(matmul="tf32"))
    for task in ("two_moons", "slcp"):
        for label, backend in (("float32", be), ("TF32", be_tf32)):
            _print_run(f"{task} {label}", npse_run(backend, task, max_seconds=max_seconds))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", nargs="*", default=[s for s in SECTIONS if s != "e2e_tf32"], choices=SECTIONS)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--max-seconds", type=float, default=90.0, help="training cap in the e2e sections")
    args = ap.parse_args(argv)
    from snpse_np.backend import gpu_available
    if not gpu_available():
        print("gpu_profile: no CUDA GPU visible to CuPy; nothing to measure")
        return 1
    for name in args.sections:
        if name == "lab":
            lab()
        elif name == "launches":
            launches()
        elif name == "loops":
            loops(args.batch, args.samples)
        elif name == "phases":
            phases(args.batch, args.samples)
        elif name == "graphs":
            graphs(args.batch, args.samples)
        elif name == "e2e":
            e2e(args.max_seconds)
        elif name == "e2e_tf32":
            e2e_tf32(args.max_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
