"""Whole-trajectory Euler-Maruyama sampling: every step of every sample in ONE GPU launch.

Op: ``em_trajectory(theta, noise, problem)``: runs ``steps`` reverse-SDE Euler-Maruyama steps
(as ``snpse_np.sampling.euler_maruyama``) from theta (N, d), in place; ``noise`` (steps, N, d)
holds the standard normal draws, or is None for in-kernel draws (the GPU variants only).
``problem`` (``make_problem``) holds the network, its weights, the conditioning row xc and the SDE.

The kernel (variants 4, 5) gives each thread one sample and keeps it on chip for the whole
trajectory: one thread = one sample's MLP forward per step (local-memory ping-pong buffers of
MAXW floats), weights in shared memory (or read through L1 from global memory when they do not
fit), noise from numba's xoroshiro128p (one state per thread) or from the array. Constant work
is folded on the host, per step s: the coefficients (c_in, a = 1 - f h, b = g^2 h / c_out,
c = g sqrt h) and the head's first-layer bias row xc + t_emb(tau_s) @ W_t (one row per step,
shared by every sample: the time embedding never runs per sample).

Variants:
  0. ``numpy``             the package's step loop (ScoreField + affine_step) on the numpy
                           backend, noise from the array: the reference.
  1. ``prod``              the same loop on the numba backend (snpse_np.backends.numba_cpu).
  2. ``numba_v3_fused``    the numba loop with the sampling shortcuts proposed for nn.py /
                           sampling.py: the time-embedding row shared by all samples (folded
                           into the head's first-layer bias), activations in place, rows in
                           L2-sized chunks.
  3. ``prod_cuda``         the package loop on the cuda backend (CuPy + numba.cuda), GPU only.
  4. ``cuda_v1_shared``    the trajectory kernel, weights in shared memory (<= 48 KB).
  5. ``cuda_v2_global``    the trajectory kernel, weights from global memory (any size).
  (Tried and dropped: the package loop captured as one CUDA graph. CuPy 14.2 refuses cuBLAS
  calls during stream capture: "calling cuBLAS API during stream capture is currently
  unsupported", H100, 2026-11-26.)
  Variants 4 and 5 run under NUMBA_ENABLE_CUDASIM=1 at tiny sizes (validation) or on a GPU.
  With noise=None they draw in-kernel; that path is validated by moments against variant 0
  (``check_moments``), not element by element.

Networks (``make_problem``): "tiny" (widths 8, for the simulator), "small" (widths 48: the
weights fit shared memory), "paper" (widths 256: global memory only).

Run: ``PYTHONPATH=. python kernels/em_trajectory.py`` (CPU: variants 0-2, a few steps;
on a GPU all variants, 10,000 samples x 1,000 steps; the paper network 100 steps).
"""
import math
import os
import sys
import time
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kernels.common import Case, Variant, gpu_available, print_table, validate_module  # noqa: E402
from snpse_np.backends._cuda_kernels import ensure_row_stack  # noqa: E402  (imports numba.cuda)
from snpse_np.backend import get_backend  # noqa: E402
from snpse_np.backends import numpy_ref  # noqa: E402
from snpse_np.nn import ScoreNetwork  # noqa: E402
from snpse_np.sampling import ScoreField, euler_maruyama, time_grid  # noqa: E402
from snpse_np.score import ScoreModel  # noqa: E402
from snpse_np.sde import make_sde  # noqa: E402

ensure_row_stack()
from numba import cuda, float32, njit  # noqa: E402
from numba.cuda.random import xoroshiro128p_dtype, xoroshiro128p_normal_float32  # noqa: E402

OPS = ("em_trajectory",)
DTYPES = (np.float32,)
TINY_SIZES = [(8, 3, "tiny"), (13, 2, "tiny")]  # (N samples, steps, network)
TIMING_SIZES = [(10_000, 1_000, "small"), (10_000, 100, "paper")]  # GPU; paper: 100 steps, per 1,000 extrapolated
CPU_TIMING_SIZES = [(10_000, 4, "paper")]  # CPU: a few steps, extrapolated per 1,000
MAXW = 256  # widest layer the kernel supports (local-memory buffers)
SMEM = 12288  # float32 words of static shared memory per block (48 KB)
TPB = 64
ACT_CODES = {"identity": 0, "silu": 1, "relu": 2, "gelu": 3, "tanh": 4}


# ----------------------------------------------------------------------------- the problem

def make_problem(kind="tiny", dim_theta=2, dim_x=3, seed=0, sigma_max=3.0, activation="silu"):
    """A score model with random weights, one observation, a VE SDE."""
    if kind == "tiny":
        net = ScoreNetwork([dim_theta, 8, 6], [dim_x, 8, 6], [8, 8, dim_theta], activation, t_embed_dim=8)
    elif kind == "small":
        dim_theta, dim_x = 5, 8
        net = ScoreNetwork([dim_theta, 48, 48, 30], [dim_x, 48, 48, 32], [48, 48, dim_theta], activation)
    elif kind == "paper":
        dim_theta, dim_x = 5, 8
        net = ScoreNetwork.paper(dim_theta, dim_x, activation=activation)
    else:
        raise ValueError(kind)
    sde = make_sde("ve", sigma_max=sigma_max)
    model = ScoreModel(net, sde)
    params = net.init(seed, np.float32)
    x = np.random.default_rng(seed + 1).standard_normal((1, dim_x)).astype(np.float32)
    xc = net.condition(get_backend("numpy"), params, x)
    return SimpleNamespace(kind=kind, net=net, sde=sde, model=model, params=params, xc=xc, cache={})


def make_case(op, size, dtype, rng):
    n, steps, kind = size
    prob = make_problem(kind)
    d = prob.net.dim_theta
    theta = (prob.sde.prior_std * rng.standard_normal((n, d))).astype(dtype)
    noise = rng.standard_normal((steps, n, d)).astype(dtype)
    flops = 2.0 * n * steps * _macs(prob)
    return Case(op, [theta, noise, prob], (0,), theta.nbytes * 2, flops, f"N={n} steps={steps} net={kind}")


# ----------------------------------------------------------------------------- step loops

def _em_loop(backend, theta, noise, prob):
    """sampling.euler_maruyama (the package's loop) with the draws taken from ``noise`` (steps, N, d).

    theta and noise may be host arrays (copied to the device once) or device arrays (theta
    updated in place).
    """
    be = get_backend(backend)
    n, d = theta.shape
    key = ("params", be.name)
    if key not in prob.cache:
        prob.cache[key] = (be.to_device(prob.params), be.to_device(prob.xc))
    params, xc = prob.cache[key]
    field = ScoreField(prob.model, be, params, xc, n, theta.dtype)
    th, nz = be.to_device(theta), be.to_device(noise)
    draws = iter(range(nz.shape[0]))

    def fill(out):
        out[...] = nz[next(draws)]

    euler_maruyama(field, th, nz.shape[0], None, normal=fill)
    if isinstance(theta, np.ndarray):
        theta[...] = be.to_host(th)


REFERENCE = SimpleNamespace(em_trajectory=lambda theta, noise, prob: _em_loop("numpy", theta, noise, prob))


def _em_fused(theta, noise, prob, chunk=1024):
    """The step loop on the numba backend with the sampling-only shortcuts proposed for
    nn.py / sampling.py (same maths, so it validates element by element):

    - the time embedding is one row per step (every sample shares t): t_emb(tau) @ W_t + xc
      is computed once and used as the head's first-layer bias, instead of a (N, 64) embedding
      and a (N, 64) @ (64, 256) GEMM per step;
    - activations in place (h is z: nothing needs the pre-activations without a backward);
    - rows in chunks of ``chunk`` so each layer's (chunk, 256) activations stay in L2 between
      the GEMM and the fused bias + activation kernel.
    """
    from snpse_np.backends import numba_cpu as ops
    net = prob.net
    p = net.views(prob.params)
    act = net.activation
    n, d = theta.shape
    grid = time_grid(prob.sde, noise.shape[0])
    th_layers = [(p[f"theta.{i}.W"], p[f"theta.{i}.b"]) for i in range(len(net.theta_sizes) - 1)]
    hd_layers = [(p[f"head.{i}.W"], p[f"head.{i}.b"]) for i in range(1, len(net.head_sizes))]
    c = min(chunk, n)
    bufs = {w: np.empty((c, w), np.float32) for w in set(net.theta_sizes[1:] + net.head_sizes)}
    bufs2 = {w: np.empty((c, w), np.float32) for w in set(net.head_sizes)}
    x_in = np.empty((c, d), np.float32)
    temb = np.empty((1, net.t_embed_dim), np.float32)
    for i in range(len(grid) - 1):
        t, h = grid[i], grid[i] - grid[i + 1]
        alpha, sigma, c_in, c_out, tau = (float(np.ravel(v)[0]) for v in prob.model.coefficients(np.array([t])))
        f, g = float(prob.sde.drift_coef(t)), float(prob.sde.diffusion(t))
        ops.sinusoidal_embedding(temb, np.array([tau], np.float32))
        hb = (temb @ p["head.0.Wt"] + prob.xc.reshape(1, -1)).astype(np.float32).ravel()
        a, b, cc = (np.float32(v) for v in (1.0 - f * h, g * g * h / c_out, g * np.sqrt(h)))
        for s0 in range(0, n, c):
            rows = slice(s0, min(s0 + c, n))
            m = rows.stop - rows.start
            np.multiply(theta[rows], np.float32(c_in), out=x_in[:m])
            hcur = x_in[:m]
            for j, (W, bias) in enumerate(th_layers):
                z = bufs[W.shape[1]][:m]
                np.matmul(hcur, W, out=z)
                ops.bias_act_forward(z, z, bias, act if j < len(th_layers) - 1 else "identity")
                hcur = z
            z = bufs2[net.head_sizes[0]][:m]
            np.matmul(hcur, p["head.0.Wtheta"], out=z)
            ops.bias_act_forward(z, z, hb, act)
            hcur = z
            for j, (W, bias) in enumerate(hd_layers):
                z = (bufs if j % 2 == 0 else bufs2)[W.shape[1]][:m]
                np.matmul(hcur, W, out=z)
                ops.bias_act_forward(z, z, bias, act if j < len(hd_layers) - 1 else "identity")
                hcur = z
            th = theta[rows]
            ops.affine_step(th, np.full(m, a), hcur, np.full(m, b), noise[i, rows], np.full(m, cc))


# ----------------------------------------------------------------------------- host tables

def _dense_layers(prob):
    """[(name, (fan_in, fan_out), flags)] in evaluation order for theta -> net output.

    flags: 1 = activation after the layer, 2 = bias from the per-step table (head layer 0).
    """
    net = prob.net
    out = []
    th = net.theta_sizes
    for i, (a, b) in enumerate(zip(th[:-1], th[1:])):
        out.append((f"theta.{i}", (a, b), 1 if i < len(th) - 2 else 0))
    hd = net.head_sizes
    out.append(("head.0", (th[-1], hd[0]), 1 | 2))
    for i, (a, b) in enumerate(zip(hd[:-1], hd[1:]), start=1):
        out.append((f"head.{i}", (a, b), 1 if i < len(hd) - 1 else 0))
    return out


def build_tables(prob, steps):
    """Packed weights (flat float32), the layer table (L, 5) int32 [fan_in, fan_out, W offset,
    b offset, flags], the step coefficients (steps, 4) [c_in, a, b / c_out, c] and the head's
    first-layer bias rows (steps, h0) = xc + t_emb(tau_s) @ W_t."""
    key = ("tables", steps)
    if key in prob.cache:
        return prob.cache[key]
    net, p = prob.net, prob.net.views(prob.params)
    parts, lay, off = [], [], 0
    for name, (fi, fo), flags in _dense_layers(prob):
        W = p[f"{name}.W"] if name != "head.0" else p["head.0.Wtheta"]
        b = p[f"{name}.b"] if name != "head.0" else np.zeros(fo, np.float32)
        if fo > MAXW or fi > MAXW:
            raise ValueError(f"layer {name} wider than MAXW={MAXW}")
        lay.append((fi, fo, off, off + fi * fo, flags))
        parts += [np.ascontiguousarray(W, np.float32).ravel(), np.asarray(b, np.float32)]
        off += fi * fo + fo
    wts = np.concatenate(parts).astype(np.float32)
    grid = time_grid(prob.sde, steps)
    t = grid[:-1]
    h = grid[:-1] - grid[1:]
    alpha, sigma, c_in, c_out, tau = prob.model.coefficients(t)
    f, g = prob.sde.drift_coef(t) * np.ones_like(t), prob.sde.diffusion(t) * np.ones_like(t)
    coef = np.stack([c_in, 1.0 - f * h, g * g * h / c_out, g * np.sqrt(h)], axis=1).astype(np.float32)
    temb = np.empty((steps, net.t_embed_dim), np.float32)
    numpy_ref.sinusoidal_embedding(temb, tau.astype(np.float32))
    hb = (temb @ p["head.0.Wt"]).astype(np.float32) + prob.xc.reshape(1, -1).astype(np.float32)
    tables = (wts, np.array(lay, np.int32), coef, np.ascontiguousarray(hb, np.float32))
    prob.cache[key] = tables
    return tables


# ----------------------------------------------------------------------------- the kernels
# Module-level kernels: the CUDA simulator swaps this module's global ``cuda`` for its fake
# one (it cannot see a ``cuda`` held in a closure).


@cuda.jit(device=True)
def _act(x, code):
    if code == 1:
        return x / (float32(1.0) + math.exp(-x))
    if code == 2:
        return x if x > float32(0.0) else float32(0.0)
    if code == 3:
        u = float32(0.7978845608028654) * (x + float32(0.044715) * x * x * x)
        return float32(0.5) * x * (float32(1.0) + math.tanh(u))
    if code == 4:
        return math.tanh(x)
    return x


@cuda.jit(device=True)
def _trajectory(theta, wts, lay, coef, hb, noise, states, use_rng, code, i):
    # Sample i: x (d) stays in local memory for all steps. Per step s: src = c_in x, then each
    # dense layer l: dst[o] = bias[o] + sum_k src[k] W[k, o] with W row-major (fan_in, fan_out)
    # at wts[lay[l, 2]] (all threads of a warp read the same weight at once: a broadcast), the
    # activation if flagged, swap src/dst. Then x = a x + b out + c z.
    d = theta.shape[1]
    x = cuda.local.array(MAXW, float32)
    buf0 = cuda.local.array(MAXW, float32)
    buf1 = cuda.local.array(MAXW, float32)
    for j in range(d):
        x[j] = theta[i, j]
    for s in range(coef.shape[0]):
        c_in = coef[s, 0]
        for j in range(d):
            buf0[j] = c_in * x[j]
        src = buf0
        dst = buf1
        for l in range(lay.shape[0]):
            fi = lay[l, 0]
            fo = lay[l, 1]
            wo = lay[l, 2]
            bo = lay[l, 3]
            fl = lay[l, 4]
            for o in range(fo):
                acc = hb[s, o] if (fl & 2) else wts[bo + o]
                for k in range(fi):
                    acc += src[k] * wts[wo + k * fo + o]
                if fl & 1:
                    acc = _act(acc, code)
                dst[o] = acc
            tmp = src
            src = dst
            dst = tmp
        a = coef[s, 1]
        b = coef[s, 2]
        c = coef[s, 3]
        for j in range(d):
            if use_rng:
                zj = xoroshiro128p_normal_float32(states, i)
            else:
                zj = noise[s, i, j]
            x[j] = a * x[j] + (b * src[j] + c * zj)
    for j in range(d):
        theta[i, j] = x[j]


@cuda.jit
def _em_shared(theta, wts_g, lay, coef, hb, noise, states, use_rng, code):
    # The block copies all weights into shared memory once (strided by thread), then each
    # thread runs its sample's whole trajectory reading weights from shared memory.
    sw = cuda.shared.array(SMEM, float32)
    t = cuda.threadIdx.x
    for k in range(t, wts_g.shape[0], cuda.blockDim.x):
        sw[k] = wts_g[k]
    cuda.syncthreads()
    i = cuda.grid(1)
    if i < theta.shape[0]:
        _trajectory(theta, sw, lay, coef, hb, noise, states, use_rng, code, i)


@cuda.jit
def _em_global(theta, wts_g, lay, coef, hb, noise, states, use_rng, code):
    i = cuda.grid(1)
    if i < theta.shape[0]:
        _trajectory(theta, wts_g, lay, coef, hb, noise, states, use_rng, code, i)


# ----------------------------------------------------------------------------- RNG states

@njit(cache=True)
def _init_states(s0, s1, seed):
    # numba.cuda.random's init_xoroshiro128p_states_cpu, ported to plain uint64 arrays:
    # SplitMix64 of the seed for state 0, then state i = state i-1 jumped by 2^64 steps.
    # (numba's own version runs as Python object code under the simulator: 4-7 ms a state.)
    n = s0.shape[0]
    if n == 0:
        return
    z = np.uint64(seed) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    a, b = z, z
    s0[0], s1[0] = a, b
    jump0, jump1 = np.uint64(0xbeac0467eba5facb), np.uint64(0xd86b048b86aa9922)
    for i in range(1, n):
        j0 = np.uint64(0)
        j1 = np.uint64(0)
        for w in range(2):
            jump = jump0 if w == 0 else jump1
            for bit in range(64):
                if jump & (np.uint64(1) << np.uint64(bit)):
                    j0 ^= a
                    j1 ^= b
                # xoroshiro128p_next
                b ^= a
                a = ((a << np.uint64(55)) | (a >> np.uint64(9))) ^ b ^ (b << np.uint64(14))
                b = (b << np.uint64(36)) | (b >> np.uint64(28))
        a, b = j0, j1
        s0[i], s1[i] = a, b


def host_states(n, seed):
    """xoroshiro128p states for n threads as numba.cuda.random makes them (numpy, on the host)."""
    s0, s1 = np.empty(n, np.uint64), np.empty(n, np.uint64)
    _init_states(s0, s1, np.uint64(seed))
    states = np.empty(n, dtype=xoroshiro128p_dtype)
    states["s0"], states["s1"] = s0, s1
    return states


def make_states(n, seed):
    """Device array of n xoroshiro128p states (the njit port, then one copy to the device)."""
    return cuda.to_device(host_states(n, seed))


def run_trajectory(theta, noise, prob, shared=True, seed=0, states=None):
    """Launch the trajectory kernel: theta (N, d) numpy (or device) array, updated in place.

    noise (steps, N, d) or None for in-kernel xoroshiro128p draws (then ``steps`` comes from
    ``prob.steps``). ``states``: reuse RNG states (device array of N states) across calls.
    Returns the states used.
    """
    steps = noise.shape[0] if noise is not None else prob.steps
    wts, lay, coef, hb = build_tables(prob, steps)
    if shared and wts.size > SMEM:
        raise ValueError(f"{wts.size} weights do not fit {SMEM} words of shared memory: use shared=False")
    n = theta.shape[0]
    use_rng = noise is None
    if use_rng:
        if states is None:
            states = make_states(n, seed)
        noise = _DUMMY_NOISE
    elif states is None:
        states = make_states(1, 0)
    dev = prob.cache.setdefault(("device", steps), {})
    if not dev:
        dev.update(wts=cuda.to_device(wts), lay=cuda.to_device(lay), coef=cuda.to_device(coef),
                   hb=cuda.to_device(hb))
    kern = _em_shared if shared else _em_global
    code = ACT_CODES[prob.net.activation]
    blocks = (n + TPB - 1) // TPB
    kern[blocks, TPB](theta, dev["wts"], dev["lay"], dev["coef"], dev["hb"], noise, states, use_rng, code)
    return states


_DUMMY_NOISE = np.zeros((1, 1, 1), np.float32)


def check_moments(prob, n_kernel=64, steps=6, n_ref=4000, seed=0, shared=True, z=5.0):
    """In-kernel RNG path vs the numpy reference by moments: per dimension, the mean within
    ``z`` standard errors and the variance ratio within chi-square bounds. Returns the stats."""
    d = prob.net.dim_theta
    rng = np.random.default_rng(seed)
    th_ref = (prob.sde.prior_std * rng.standard_normal((n_ref, d))).astype(np.float32)
    REFERENCE.em_trajectory(th_ref, rng.standard_normal((steps, n_ref, d)).astype(np.float32), prob)
    th_k = (prob.sde.prior_std * rng.standard_normal((n_kernel, d))).astype(np.float32)
    prob.steps = steps
    run_trajectory(th_k, None, prob, shared=shared, seed=seed + 7)
    m_r, v_r = th_ref.mean(0), th_ref.var(0)
    m_k, v_k = th_k.mean(0), th_k.var(0, ddof=1)
    se = np.sqrt(v_r / n_kernel + v_r / n_ref)
    ratio = v_k / v_r
    lo, hi = _chi2_bounds(n_kernel - 1)
    ok = bool(np.all(np.abs(m_k - m_r) <= z * se) and np.all((ratio >= lo) & (ratio <= hi)))
    return dict(ok=ok, mean_kernel=m_k, mean_ref=m_r, var_ratio=ratio, bounds=(lo, hi), finite=np.isfinite(th_k).all())


def _chi2_bounds(dof, z=4.0):
    # Wilson-Hilferty: chi2_dof / dof ~ (1 - 2/(9 dof) + z sqrt(2/(9 dof)))^3 at z sigmas.
    a = 2.0 / (9.0 * dof)
    return (1.0 - a - z * math.sqrt(a)) ** 3, (1.0 - a + z * math.sqrt(a)) ** 3


def _cuda_variants():
    if not cuda.is_available():
        return {}
    def shared(theta, noise, prob):
        run_trajectory(theta, noise, prob, shared=True)

    def global_(theta, noise, prob):
        run_trajectory(theta, noise, prob, shared=False)

    return {"cuda_v1_shared": Variant(SimpleNamespace(em_trajectory=shared)),
            "cuda_v2_global": Variant(SimpleNamespace(em_trajectory=global_))}


def _variants():
    out = {"numpy": Variant(REFERENCE, note="package loop, numpy backend"),
           "prod": Variant(SimpleNamespace(em_trajectory=lambda th, nz, p: _em_loop("numba", th, nz, p)),
                           note="package loop, numba backend"),
           "numba_v3_fused": Variant(SimpleNamespace(em_trajectory=_em_fused),
                                     note="proposed sampling path: shared time row, in place, chunked")}
    if gpu_available():
        out["prod_cuda"] = Variant(SimpleNamespace(em_trajectory=lambda th, nz, p: _em_loop("cuda", th, nz, p)),
                                   note="package loop, cuda backend")

    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or gpu_available():
        out.update(_cuda_variants())
    return out


VARIANTS = _variants()


# ----------------------------------------------------------------------------- timing

def time_trajectories(sizes=None, variants=None, repeats=3, cpu_sizes=None):
    """Seconds per whole run (and per 1,000 steps) for each variant and size.

    GPU variants (prod_cuda, cuda_*) run ``sizes`` (default: 10,000 samples x 1,000 steps);
    the CPU loops (numpy, prod) run ``cpu_sizes`` (default: a few steps, extrapolated per
    1,000). The trajectory kernels are timed with in-kernel RNG (their production mode), the
    loops with the noise given as an array.
    """
    from kernels.common import benchmark
    rows = []
    for vname in variants or VARIANTS:
        var = VARIANTS[vname]
        on_gpu = vname.startswith("cuda_") or vname == "prod_cuda"
        loop_on_gpu = vname == "prod_cuda"
        if gpu_available() and not on_gpu and vname != "prod":
            continue  # on the GPU machine: the CPU baseline (prod) only
        if vname.startswith("cuda_") and not gpu_available():
            continue  # the simulator: validation only, never timing
        for n, steps, kind in (sizes or TIMING_SIZES) if on_gpu else (cpu_sizes or CPU_TIMING_SIZES):
            prob = make_problem(kind)
            d = prob.net.dim_theta
            rng = np.random.default_rng(0)
            theta0 = (prob.sde.prior_std * rng.standard_normal((n, d))).astype(np.float32)
            if loop_on_gpu:  # the package loop on device arrays: no transfers in the timing
                import cupy
                noise = cupy.asarray(rng.standard_normal((steps, n, d)).astype(np.float32))
                th = cupy.asarray(theta0)
                r = benchmark(lambda: var.impl.em_trajectory(th, noise, prob), cupy.cuda.Device().synchronize,
                              warmup=1, repeats=repeats)
            elif vname.startswith("cuda_"):
                shared = vname == "cuda_v1_shared"
                if shared and build_tables(prob, steps)[0].size > SMEM:
                    continue
                prob.steps = steps
                th_d = cuda.to_device(theta0)
                states = make_states(n, 0)
                r = benchmark(lambda: run_trajectory(th_d, None, prob, shared=shared, states=states),
                              cuda.synchronize, warmup=1, repeats=repeats)
            else:
                noise = rng.standard_normal((steps, n, d)).astype(np.float32)
                th = theta0.copy()
                r = benchmark(lambda: var.impl.em_trajectory(th, noise, prob), None, warmup=1, repeats=repeats)
            rows.append(dict(variant=vname, N=n, steps=steps, net=kind, s=f"{r['median']:.4f}",
                             s_per_1000_steps=f"{r['median'] * 1000 / steps:.3f}", first_call_s=f"{r['first']:.2f}",
                             rate=f"{2 * n * steps * _macs(prob) / r['median'] / 1e9:.1f} GFLOP/s"))
    return rows


def _macs(prob):
    """Multiply-adds per sample per step in the trajectory kernel's layers."""
    return sum(fi * fo for _, (fi, fo), _ in _dense_layers(prob))


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description="whole-trajectory Euler-Maruyama lab")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    from kernels.common import device_name
    n = validate_module(sys.modules[__name__], dtypes=DTYPES)
    print(f"em_trajectory.py: {n} validations passed against the numpy step loop ({', '.join(VARIANTS)})")
    if any(v.startswith("cuda_") for v in VARIANTS):
        st = check_moments(make_problem("tiny"), n_kernel=64 if not gpu_available() else 4096)
        print(f"in-kernel RNG moments: ok={st['ok']} var ratio {np.round(st['var_ratio'], 3)} bounds "
              f"{np.round(st['bounds'], 3)}")
    if not args.no_timing:
        t0 = time.perf_counter()
        print_table(time_trajectories(repeats=args.repeats), f"device: {device_name()}")
        print(f"(timing took {time.perf_counter() - t0:.1f}s)")


if __name__ == "__main__":
    main()
