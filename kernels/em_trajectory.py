"""Whole-trajectory samplers: every step of every sample in ONE GPU launch, or one launch a step
captured into one CUDA graph.

Ops:
``em_trajectory(theta, noise, problem)``: ``steps`` reverse-SDE Euler-Maruyama steps (as
``snpse_np.sampling.euler_maruyama``) from theta (N, d), in place; ``noise`` (steps, N, d) holds
the standard normal draws (the GPU kernels can also draw them in-kernel, see below).
``heun_trajectory(theta, grid, problem)``: the probability-flow ODE by Heun's method over the
time grid (steps + 1,) from 1 down to t_min (as ``sampling.ode_fixed(..., "heun")``), in place.
``problem`` (``make_problem``) holds the network, its weights, the conditioning row xc and the SDE.

Constant work is folded on the host, per step s: the coefficients (c_in, a = 1 - f h,
b = g^2 h / c_out, c = g sqrt h; for Heun c_in, f and q = g^2 / (2 c_out) at every grid point)
and the head's first-layer bias row xc + t_emb(tau_s) @ W_t (one row per step, shared by every
sample: the time embedding never runs per sample).

Two kernel layouts:
- one thread per sample (variants 4, 5): the sample's MLP forward in local-memory ping-pong
  buffers of MAXW floats, weights from shared memory (when they fit) or global memory, noise
  from numba's xoroshiro128p. Measured on the lent H100 (2026-11-26): 1.6x the package loop for
  a 48-wide network, 15x slower for the paper's 256-wide one (one thread cannot hold a 256-wide
  layer: the layout, not the idea, failed);
- block-cooperative (variants 6-8): a block owns R = 32 samples for the whole trajectory, their
  theta (and Heun's k1) in shared memory, and evaluates the network for them together with
  kernels/fused_mlp.py's dense layer (activations in one shared (R, 256) buffer, weights
  streamed through shared memory in tiles, 8 x 4 register tiles per thread, 256 threads);
  the noise is drawn in-kernel from a counter-based generator, Philox4x32-10 (Salmon et al.
  2011): the normal for sample i, step s, coordinate j is Box-Muller on the 32-bit words of
  Philox(counter = (i, s, j // 4, 0), key = the seed's two words), no state to store. The same
  function in numpy (``philox_normals``) makes the draws the reference loop takes, so the
  in-kernel path is validated element by element, and by moments (``check_philox_moments``).
  The kernel takes a step range, so ``cuda_v5_graph`` launches it once per step (a per-step
  fused EM kernel: network, noise and update in one launch) and captures the 1,000 launches
  into one CUDA graph.

Variants:
  0. ``numpy``              the package's step loop (ScoreField + affine_step; ode_fixed for Heun)
                            on the numpy backend, noise from the array: the reference.
  1. ``prod``               the same loop on the numba backend.
  2. ``numba_v3_fused``     the numba EM loop with the sampling shortcuts that are now in the
                            package (shared time row, in place, chunked): kept as a record.
  3. ``prod_cuda``          the package loop on the cuda backend (CuPy), GPU only.
  4. ``cuda_v1_shared``     one thread per sample, weights in shared memory (<= 48 KB).
  5. ``cuda_v2_global``     one thread per sample, weights from global memory (any size).
  6. ``cuda_v3_block``      block-cooperative EM, whole trajectory in one launch; noise from the
                            array (validation) or in-kernel Philox (timing).
  7. ``cuda_v4_block_heun`` block-cooperative PF-ODE Heun, whole trajectory in one launch.
  8. ``cuda_v5_graph``      variant 6's kernel launched once per step, the loop captured into one
                            CUDA graph on a CuPy stream and replayed; GPU only.
  9. ``torch_eager``        the same network, coefficients and noise in PyTorch, op by op (when
                            torch is installed; validated on the CPU, timed on the GPU).
  10. ``torch_graph``       variant 9's loop captured into one torch.cuda.CUDAGraph; GPU only.
  (Tried and dropped: the package loop captured as one CUDA graph. CuPy 14.2 refuses cuBLAS
  calls during stream capture: "calling cuBLAS API during stream capture is currently
  unsupported", H100, 2026-11-26; kernels/gpu_profile.py "graphs" tries again and prints the outcome.)
  Variants 4-7 run under NUMBA_ENABLE_CUDASIM=1 at tiny sizes (validation) or on a GPU.

Networks (``make_problem``): "tiny" (widths 8, for the simulator), "small" (widths 48: the
weights fit shared memory), "paper" (widths 256).

Not measured yet for variants 6-10 (the session that wrote them had no GPU): see
docs/performance.md, "Awaiting a GPU".

Run: ``PYTHONPATH=. python kernels/em_trajectory.py`` (CPU: variants 0-2 and 9, a few steps;
on a GPU all variants, 10,000 samples x 1,000 steps).
"""
import math
import os
import sys
import time
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kernels.common import Case, Variant, gpu_available, load_numba_cuda, print_table, validate_module  # noqa: E402
from kernels.fused_mlp import SIM_ACTIVE, Tile, device_functions  # noqa: E402
from snpse_np.backend import get_backend  # noqa: E402
from snpse_np.backends import numpy_ref  # noqa: E402
from snpse_np.nn import ScoreNetwork  # noqa: E402
from snpse_np.sampling import euler_maruyama, ode_fixed, time_grid  # noqa: E402
from snpse_np.score import ScoreField  # noqa: E402
from snpse_np.score import ScoreModel  # noqa: E402
from snpse_np.sde import make_sde  # noqa: E402

_NK = load_numba_cuda()  # the package's loader (numba-cuda 0.30.4 under numpy >= 2.5)
from numba import cuda, float32, float64, njit  # noqa: E402
from numba.cuda.random import xoroshiro128p_dtype, xoroshiro128p_normal_float32  # noqa: E402

OPS = ("em_trajectory", "heun_trajectory")
DTYPES = (np.float32,)
TINY_SIZES = [(8, 3, "tiny"), (13, 2, "tiny")]  # (N samples, steps, network); 13 = 4 tiles of 4, one ragged
# GPU timing (variant -> [(N, steps, network)]); the one-thread-per-sample kernels take 100 steps
# of the paper network (6.8 s per 1,000 on the H100), reported per 1,000.
TIMING_SIZES = [(10_000, 1_000, "small"), (10_000, 100, "paper")]
BLOCK_TIMING_SIZES = [(10_000, 1_000, "paper")]
HEUN_TIMING_SIZES = [(10_000, 100, "paper")]
CPU_TIMING_SIZES = [(10_000, 4, "paper")]  # CPU: a few steps, extrapolated per 1,000
MAXW = 256  # widest layer the one-thread-per-sample kernel supports (local-memory buffers)
SMEM = 12288  # float32 words of static shared memory per block (48 KB)
TPB = 64
ACT_CODES = {"identity": 0, "silu": 1, "relu": 2, "gelu": 3, "tanh": 4}
# Block-cooperative tiles: 4 x 64 threads, 8 x 4 register tiles: R = 32 samples, MAXW = 256
# (shared memory: activations 32 KB + weight tile 8 KB + theta and k1 4 KB). The simulator's:
# R = 4, MAXW = 16, 16 threads.
PROD_SAMPLE = Tile(RG=4, CG=64, RT=8, CT=4, KT=8, NT=4, MAXCAT=128)
SIM_SAMPLE = Tile(RG=2, CG=8, RT=2, CT=2, KT=4, NT=4, MAXCAT=32)
MAXD = 16  # widest theta the block kernels hold in shared memory


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
    label = f"N={n} steps={steps} net={kind}"
    if op == "em_trajectory":
        noise = rng.standard_normal((steps, n, d)).astype(dtype)
        return Case(op, [theta, noise, prob], (0,), theta.nbytes * 2, 2.0 * n * steps * _macs(prob), label)
    if op == "heun_trajectory":
        return Case(op, [theta, time_grid(prob.sde, steps), prob], (0,), theta.nbytes * 2,
                    4.0 * n * steps * _macs(prob), label)
    raise ValueError(op)


# ----------------------------------------------------------------------------- step loops

def _package_params(be, prob):
    key = ("params", be.name)
    if key not in prob.cache:
        prob.cache[key] = (be.to_device(prob.params), be.to_device(prob.xc))
    return prob.cache[key]


def _em_loop(backend, theta, noise, prob):
    """sampling.euler_maruyama (the package's loop) with the draws taken from ``noise`` (steps, N, d).

    theta and noise may be host arrays (copied to the device once) or device arrays (theta
    updated in place).
    """
    be = get_backend(backend)
    n, d = theta.shape
    params, xc = _package_params(be, prob)
    field = ScoreField(prob.model, be, params, xc, n, theta.dtype)
    th, nz = be.to_device(theta), be.to_device(noise)
    draws = iter(range(nz.shape[0]))

    def fill(out):
        out[...] = nz[next(draws)]

    euler_maruyama(field, th, nz.shape[0], None, normal=fill)
    if isinstance(theta, np.ndarray):
        theta[...] = be.to_host(th)


def _heun_loop(backend, theta, grid, prob):
    """sampling.ode_fixed(..., "heun") (the package's loop) over ``grid``'s steps; theta in place."""
    be = get_backend(backend)
    params, xc = _package_params(be, prob)
    field = ScoreField(prob.model, be, params, xc, theta.shape[0], theta.dtype)
    out, _ = ode_fixed(field, be.to_device(theta), len(grid) - 1, "heun")
    theta[...] = be.to_host(out) if isinstance(theta, np.ndarray) else out


REFERENCE = SimpleNamespace(em_trajectory=lambda theta, noise, prob: _em_loop("numpy", theta, noise, prob),
                            heun_trajectory=lambda theta, grid, prob: _heun_loop("numpy", theta, grid, prob))


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


def build_heun_tables(prob, grid):
    """For Heun over ``grid`` (steps + 1,): the packed weights and layer table (as
    ``build_tables``), the grid-point coefficients (steps + 1, 3) [c_in, f, q = g^2 / (2 c_out)],
    the step sizes h (steps,) (negative: reverse time) and the bias rows (steps + 1, h0)."""
    key = ("heun_tables", len(grid), float(grid[0]), float(grid[-1]))
    if key in prob.cache:
        return prob.cache[key]
    wts, lay, _, _ = build_tables(prob, len(grid) - 1)
    net, p = prob.net, prob.net.views(prob.params)
    t = np.asarray(grid, np.float64)
    _, _, c_in, c_out, tau = prob.model.coefficients(t)
    f, g = prob.sde.drift_coef(t) * np.ones_like(t), prob.sde.diffusion(t) * np.ones_like(t)
    coef = np.stack([c_in, f, 0.5 * g * g / c_out], axis=1).astype(np.float32)
    temb = np.empty((len(t), net.t_embed_dim), np.float32)
    numpy_ref.sinusoidal_embedding(temb, tau.astype(np.float32))
    hb = (temb @ p["head.0.Wt"]).astype(np.float32) + prob.xc.reshape(1, -1).astype(np.float32)
    tables = (wts, lay, coef, (t[1:] - t[:-1]).astype(np.float32), np.ascontiguousarray(hb, np.float32))
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


# ----------------------------------------------------------------------------- counter-based normals
# Philox4x32-10 (Salmon, Moraes, Dror & Shaw 2011, "Parallel random numbers: as easy as 1, 2,
# 3"): ten rounds of two 32 x 32 -> 64-bit multiplies and xors with a Weyl-sequence key. The
# round function is written once, on uint64 values holding 32-bit words, and runs both on numpy
# arrays (the reference) and, compiled, inside the kernels.

_PH_M0, _PH_M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_PH_W0, _PH_W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_MASK32, _SH32, _SH8 = np.uint64(0xFFFFFFFF), np.uint64(32), np.uint64(8)
_U24 = 1.0 / 16777216.0  # 2^-24
_TWO_PI = 2.0 * math.pi


def _philox_rounds(c0, c1, c2, c3, k0, k1):
    # Each round: (hi, lo) of M0 c0 and M1 c2; new counter (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0);
    # key += (W0, W1) mod 2^32. Products of 32-bit words fit uint64 exactly.
    for _ in range(10):
        p0 = _PH_M0 * c0
        p1 = _PH_M1 * c2
        c0, c1, c2, c3 = (p1 >> _SH32) ^ c1 ^ k0, p1 & _MASK32, (p0 >> _SH32) ^ c3 ^ k1, p0 & _MASK32
        k0 = (k0 + _PH_W0) & _MASK32
        k1 = (k1 + _PH_W1) & _MASK32
    return c0, c1, c2, c3


def philox4x32_10(counter, key):
    """Philox4x32-10 on numpy: counter (4 arrays or ints), key (2 ints) -> 4 uint64 arrays of 32-bit words."""
    c = [np.asarray(v, np.uint64) for v in counter]
    return _philox_rounds(c[0], c[1], c[2], c[3], np.uint64(key[0]), np.uint64(key[1]))


def seed_words(seed):
    """The Philox key (low and high 32-bit words) of a 64-bit seed, as np.uint64."""
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    return np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)


def philox_normals(seed, n, steps, d):
    """(steps, n, d) float32 standard normals, exactly the in-kernel draws: for sample i, step s,
    coordinate j, the words (x0, x1, x2, x3) = Philox(counter (i, s, j // 4, 0), key
    seed_words(seed)); component m = j % 4 takes (x0, x1) for m < 2 else (x2, x3) as
    u = ((x >> 8) + 1/2) 2^-24 in (0, 1), and returns sqrt(-2 log u1) times cos(2 pi u2) (m even)
    or sin(2 pi u2) (m odd), in float64 then rounded."""
    s, i, j = np.meshgrid(np.arange(steps), np.arange(n), np.arange(d), indexing="ij")
    k0, k1 = seed_words(seed)
    x0, x1, x2, x3 = philox4x32_10((i, s, j // 4, np.zeros_like(j)), (k0, k1))
    m = j % 4
    ua = np.where(m < 2, x0, x2)
    ub = np.where(m < 2, x1, x3)
    u1 = ((ua >> _SH8).astype(np.float64) + 0.5) * _U24
    u2 = ((ub >> _SH8).astype(np.float64) + 0.5) * _U24
    r = np.sqrt(-2.0 * np.log(u1))
    return np.where(m % 2 == 0, r * np.cos(_TWO_PI * u2), r * np.sin(_TWO_PI * u2)).astype(np.float32)


_philox_device = cuda.jit(device=True)(_philox_rounds)


@cuda.jit(device=True)
def philox_normal(k0, k1, i, s, j):
    """The standard normal of sample i, step s, coordinate j (as ``philox_normals``), float32."""
    x0, x1, x2, x3 = _philox_device(np.uint64(i), np.uint64(s), np.uint64(j // 4), np.uint64(0),
                                    np.uint64(k0), np.uint64(k1))
    m = j % 4
    ua = x0 if m < 2 else x2
    ub = x1 if m < 2 else x3
    u1 = (float64(ua >> _SH8) + 0.5) * _U24
    u2 = (float64(ub >> _SH8) + 0.5) * _U24
    r = math.sqrt(-2.0 * math.log(u1))
    return float32(r * math.cos(_TWO_PI * u2)) if m % 2 == 0 else float32(r * math.sin(_TWO_PI * u2))


@cuda.jit
def _philox_fill(out, k0, k1):
    # out (steps, n, d): one thread per element, the in-kernel normals (for their tests).
    e = cuda.grid(1)
    steps, n, d = out.shape
    if e < steps * n * d:
        s = e // (n * d)
        rem = e - s * n * d
        i = rem // d
        j = rem - i * d
        out[s, i, j] = philox_normal(k0, k1, i, s, j)


@cuda.jit
def _philox_words(out, c0, c1, c2, c3, k0, k1):
    # out (n, 4) uint32: the Philox words of counters (c0[i], c1[i], c2[i], c3[i]) (for the
    # known-answer test of the compiled round function).
    i = cuda.grid(1)
    if i < out.shape[0]:
        x0, x1, x2, x3 = _philox_device(np.uint64(c0[i]), np.uint64(c1[i]), np.uint64(c2[i]), np.uint64(c3[i]),
                                        np.uint64(k0), np.uint64(k1))
        out[i, 0] = x0
        out[i, 1] = x1
        out[i, 2] = x2
        out[i, 3] = x3


def kernel_normals(seed, n, steps, d):
    """(steps, n, d) float32 drawn by the compiled ``philox_normal`` (simulator or GPU)."""
    out = np.empty((steps, n, d), np.float32)
    k0, k1 = seed_words(seed)
    _philox_fill[max(1, (out.size + 63) // 64), 64](out, k0, k1)
    return out


def kernel_philox_words(counters, key):
    """The compiled round function on counters (n, 4) uint32 with key (2,) -> (n, 4) uint32."""
    c = np.asarray(counters, np.uint32)
    out = np.empty(c.shape, np.uint32)
    _philox_words[max(1, (len(c) + 63) // 64), 64](out, *(np.ascontiguousarray(c[:, k]) for k in range(4)),
                                                   np.uint64(key[0]), np.uint64(key[1]))
    return out


def check_philox_moments(draws):
    """Moments of a sample of the in-kernel normals against N(0, 1): mean, variance, skewness,
    excess kurtosis (each within 5 standard errors), lag-1 correlation along samples and along
    coordinates (within 5 / sqrt(n)). Returns the stats with ``ok``."""
    z = np.asarray(draws, np.float64)
    v = z.ravel()
    n = v.size
    mean, var = v.mean(), v.var()
    skew = np.mean((v - mean) ** 3) / var ** 1.5
    kurt = np.mean((v - mean) ** 4) / var ** 2 - 3.0
    corr_i = np.corrcoef(z[:, :-1].ravel(), z[:, 1:].ravel())[0, 1] if z.shape[1] > 1 else 0.0
    corr_j = np.corrcoef(z[..., :-1].ravel(), z[..., 1:].ravel())[0, 1] if z.shape[2] > 1 else 0.0
    bounds = dict(mean=5 / math.sqrt(n), var=5 * math.sqrt(2 / n), skew=5 * math.sqrt(6 / n),
                  kurt=5 * math.sqrt(24 / n), corr=5 / math.sqrt(n / 2))
    ok = (abs(mean) < bounds["mean"] and abs(var - 1) < bounds["var"] and abs(skew) < bounds["skew"]
          and abs(kurt) < bounds["kurt"] and abs(corr_i) < bounds["corr"] and abs(corr_j) < bounds["corr"])
    return dict(ok=bool(ok), n=n, mean=mean, var=var, skew=skew, kurt=kurt, corr_i=corr_i, corr_j=corr_j,
                bounds=bounds)


# ----------------------------------------------------------------------------- block-cooperative kernels

def sample_tile():
    return SIM_SAMPLE if SIM_ACTIVE else PROD_SAMPLE


_BLOCK_KERNELS = {}


def block_kernels(tile, act_code):
    """(em, heun) block-cooperative trajectory kernels for ``tile`` and the activation code.

    em[grid, NTH](theta, wts, lay, coef, hb, noise, use_noise, k0, k1, s_begin, s_end, dummy):
    steps s_begin .. s_end - 1 of Euler-Maruyama for the block's R samples (theta (N, d) in
    place); hb flat (steps h0,); noise (steps, N, d) read when use_noise, else in-kernel Philox
    with key (k0, k1) (np.uint64); dummy: any (1, 1) float32 array (the dense layer's unused cache).
    heun[grid, NTH](theta, wts, lay, coef, hs, hb, s_begin, s_end, dummy): Heun steps over
    build_heun_tables' coefficients (coef (steps + 1, 3), hs (steps,), hb flat ((steps + 1) h0,)).
    """
    key = (tile, act_code)
    if key in _BLOCK_KERNELS:
        return _BLOCK_KERNELS[key]
    dense_fwd = device_functions(tile, act_code).dense_fwd
    RG, CG, RT, CT, KT, NT, MAXCAT = tile
    R, MW, NTH = RG * RT, CG * CT, RG * CG

    @cuda.jit(device=True)
    def network(X, sW, wts, lay, hb, s, h0, dummy, row0, n):
        # X[:, :d] = c_in theta on entry; the network's output on exit (layers in place).
        for l in range(lay.shape[0]):
            fl = lay[l, 4]
            use_hb = (fl & 2) != 0
            dense_fwd(X, 0, lay[l, 0], X, 0, lay[l, 1], wts, lay[l, 2], hb if use_hb else wts,
                      s * h0 if use_hb else lay[l, 3], fl & 1, sW, dummy, -1, -1, row0, n)

    # 128 registers a thread: two blocks of 256 threads per multiprocessor (ptxas reported 136
    # uncapped, i.e. one block; capped it reports no spills, tests/test_cuda_ptx.py). The
    # simulator's jit takes no register cap.
    cap = {} if SIM_ACTIVE else {"max_registers": 128}

    @cuda.jit(**cap)
    def em(theta, wts, lay, coef, hb, noise, use_noise, k0, k1, s_begin, s_end, dummy):
        X = cuda.shared.array((R, MW), float32)
        sW = cuda.shared.array((KT, MW), float32)
        TH = cuda.shared.array((R, MAXD), float32)
        t = cuda.threadIdx.x
        n, d = theta.shape
        h0 = hb.shape[0] // coef.shape[0]
        row0 = cuda.blockIdx.x * R
        e = t
        while e < R * d:
            r = e // d
            TH[r, e - r * d] = theta[row0 + r, e - r * d] if row0 + r < n else float32(0.0)
            e += NTH
        cuda.syncthreads()
        for s in range(s_begin, s_end):
            c_in = coef[s, 0]
            e = t
            while e < R * d:
                r = e // d
                X[r, e - r * d] = c_in * TH[r, e - r * d]
                e += NTH
            cuda.syncthreads()
            network(X, sW, wts, lay, hb, s, h0, dummy, row0, n)
            a, b, c = coef[s, 1], coef[s, 2], coef[s, 3]
            e = t
            while e < R * d:  # theta = a theta + (b out + c z)
                r = e // d
                j = e - r * d
                i = row0 + r
                z = float32(0.0)
                if i < n:
                    z = noise[s, i, j] if use_noise else philox_normal(k0, k1, i, s, j)
                TH[r, j] = a * TH[r, j] + (b * X[r, j] + c * z)
                e += NTH
            cuda.syncthreads()
        e = t
        while e < R * d:
            r = e // d
            if row0 + r < n:
                theta[row0 + r, e - r * d] = TH[r, e - r * d]
            e += NTH

    @cuda.jit(**cap)
    def heun(theta, wts, lay, coef, hs, hb, s_begin, s_end, dummy):
        X = cuda.shared.array((R, MW), float32)
        sW = cuda.shared.array((KT, MW), float32)
        TH = cuda.shared.array((R, MAXD), float32)
        K1 = cuda.shared.array((R, MAXD), float32)
        t = cuda.threadIdx.x
        n, d = theta.shape
        h0 = hb.shape[0] // coef.shape[0]
        row0 = cuda.blockIdx.x * R
        e = t
        while e < R * d:
            r = e // d
            TH[r, e - r * d] = theta[row0 + r, e - r * d] if row0 + r < n else float32(0.0)
            e += NTH
        cuda.syncthreads()
        for s in range(s_begin, s_end):
            h = hs[s]
            e = t
            while e < R * d:  # k1 = v(theta, t_s): the network at c_in(t_s) theta
                r = e // d
                X[r, e - r * d] = coef[s, 0] * TH[r, e - r * d]
                e += NTH
            cuda.syncthreads()
            network(X, sW, wts, lay, hb, s, h0, dummy, row0, n)
            e = t
            while e < R * d:  # k1 = f theta - q out; the next input c_in(t_s+1) (theta + h k1)
                r = e // d
                j = e - r * d
                k1 = coef[s, 1] * TH[r, j] - coef[s, 2] * X[r, j]
                K1[r, j] = k1
                X[r, j] = coef[s + 1, 0] * (TH[r, j] + h * k1)
                e += NTH
            cuda.syncthreads()
            network(X, sW, wts, lay, hb, s + 1, h0, dummy, row0, n)
            e = t
            while e < R * d:  # k2 = v(theta + h k1, t_s+1); theta += h (k1 + k2) / 2
                r = e // d
                j = e - r * d
                th2 = TH[r, j] + h * K1[r, j]
                k2 = coef[s + 1, 1] * th2 - coef[s + 1, 2] * X[r, j]
                TH[r, j] = TH[r, j] + float32(0.5) * h * (K1[r, j] + k2)
                e += NTH
            cuda.syncthreads()
        e = t
        while e < R * d:
            r = e // d
            if row0 + r < n:
                theta[row0 + r, e - r * d] = TH[r, e - r * d]
            e += NTH

    _BLOCK_KERNELS[key] = (em, heun)
    return em, heun


_DUMMY2 = np.zeros((1, 1), np.float32)


def _check_block(prob, tile):
    net = prob.net
    if net.dim_theta > MAXD:
        raise ValueError(f"dim theta {net.dim_theta} > MAXD={MAXD}")
    widest = max(net.theta_sizes + net.head_sizes)
    if widest > tile.CG * tile.CT:
        raise ValueError(f"layer width {widest} > the tile's {tile.CG * tile.CT}")


class BlockSampler:
    """The block-cooperative kernels bound to one problem: device tables made once, launches on
    the current CuPy stream (GPU) or on numpy arrays (simulator).

    ``em(theta, steps, noise=None, seed=0, s_range=None)``; ``heun(theta, grid)``. theta: numpy
    (simulator) or CuPy (GPU) (N, d) float32, updated in place.
    """

    def __init__(self, prob, tile=None):
        self.prob, self.tile = prob, tile or sample_tile()
        _check_block(prob, self.tile)
        self.R = self.tile.RG * self.tile.RT
        self.nth = self.tile.RG * self.tile.CG
        self.em_kernel, self.heun_kernel = block_kernels(self.tile, ACT_CODES[prob.net.activation])
        self._gpu = not SIM_ACTIVE
        if self._gpu:
            import cupy
            self.xp, self._views, self._streams = cupy, _NK.DeviceViews(), {}
        else:
            self.xp = np
        self._tables = {}
        self.dummy = self.xp.asarray(_DUMMY2)
        self.launches = 0

    def tables(self, kind, arg):
        key = (kind, arg if kind == "em" else (len(arg), float(arg[0]), float(arg[-1])))
        if key not in self._tables:
            if kind == "em":
                wts, lay, coef, hb = build_tables(self.prob, arg)
                self._tables[key] = tuple(self.xp.asarray(a) for a in (wts, lay, coef, hb.ravel()))
            else:
                wts, lay, coef, hs, hb = build_heun_tables(self.prob, arg)
                self._tables[key] = tuple(self.xp.asarray(a) for a in (wts, lay, coef, hs, hb.ravel()))
        return self._tables[key]

    def configured(self, kern, n, stream_ptr=None):
        """The launch object kern[grid, NTH(, stream)] (numba's reused configuration)."""
        grid = (n + self.R - 1) // self.R
        if not self._gpu:
            return kern[grid, self.nth]
        ptr = self.xp.cuda.get_current_stream().ptr if stream_ptr is None else stream_ptr
        if ptr not in self._streams:
            self._streams[ptr] = cuda.external_stream(ptr)
        return kern[grid, self.nth, self._streams[ptr]]

    def args(self, *arrays):
        if not self._gpu:
            return arrays
        return [self._views(a) if hasattr(a, "data") and hasattr(a.data, "ptr") else a for a in arrays]

    def em(self, theta, steps, noise=None, seed=0, s_range=None):
        wts, lay, coef, hb = self.tables("em", steps)
        use = noise is not None
        nz = noise if use else self.xp.zeros((1, 1, 1), np.float32)
        k0, k1 = seed_words(seed)
        s0, s1 = s_range or (0, steps)
        self.launches += 1
        self.configured(self.em_kernel, theta.shape[0])(
            *self.args(theta, wts, lay, coef, hb, nz), np.int32(use), k0, k1, np.int64(s0), np.int64(s1),
            *self.args(self.dummy))
        return theta

    def heun(self, theta, grid):
        wts, lay, coef, hs, hb = self.tables("heun", grid)
        self.launches += 1
        self.configured(self.heun_kernel, theta.shape[0])(
            *self.args(theta, wts, lay, coef, hs, hb), np.int64(0), np.int64(len(grid) - 1), *self.args(self.dummy))
        return theta


def ptx_signatures(tile=PROD_SAMPLE, activation="silu"):
    """[(label, dispatcher, signature)] of the block kernels and the Philox kernels as the GPU
    launches them (tests/test_cuda_ptx.py compiles them for sm_90 without a GPU)."""
    em, heun = block_kernels(tile, ACT_CODES[activation])
    M, V, I2 = "float32[:, ::1]", "float32[::1]", "int32[:, ::1]"
    return [("em_trajectory.block_em", em,
             f"void({M}, {V}, {I2}, {M}, {V}, float32[:, :, ::1], int32, uint64, uint64, int64, int64, {M})"),
            ("em_trajectory.block_heun", heun, f"void({M}, {V}, {I2}, {M}, {V}, {V}, int64, int64, {M})"),
            ("em_trajectory.philox_fill", _philox_fill, "void(float32[:, :, ::1], uint64, uint64)")]


def _block(prob):
    key = ("block", SIM_ACTIVE)
    if key not in prob.cache:
        prob.cache[key] = BlockSampler(prob)
    return prob.cache[key]


def run_block_em(theta, noise, prob):
    """Variant 6 on the case's arrays (noise given)."""
    _block(prob).em(theta, noise.shape[0], noise=noise)


def run_block_heun(theta, grid, prob):
    """Variant 7 on the case's arrays (the grid may arrive as a device array: it is read on the host)."""
    _block(prob).heun(theta, grid.get() if hasattr(grid, "get") else np.asarray(grid))


def check_block_philox(prob, n=9, steps=3, seed=5):
    """Variant 6 with in-kernel Philox against the reference loop fed ``philox_normals(seed)``:
    max abs difference and whether it is inside the em_trajectory tolerance."""
    from kernels.common import assert_close_to_ref
    d = prob.net.dim_theta
    theta = (prob.sde.prior_std * np.random.default_rng(seed).standard_normal((n, d))).astype(np.float32)
    ref = theta.copy()
    REFERENCE.em_trajectory(ref, philox_normals(seed, n, steps, d), prob)
    bs = _block(prob)
    got = bs.xp.asarray(theta)
    bs.em(got, steps, noise=None, seed=seed)
    got = got if isinstance(got, np.ndarray) else got.get()
    assert_close_to_ref("em_trajectory", got, ref, np.float32, " [in-kernel Philox]")
    return float(np.abs(got - ref).max())


# ----------------------------------------------------------------------------- CUDA graph of per-step launches

class GraphEM:
    """Variant 8: the block EM kernel launched once per step (s, s + 1), the ``steps`` launches
    captured into one CUDA graph on a non-blocking CuPy stream (numba launches on it through
    ``cuda.external_stream``), replayed by ``run()``. GPU only. theta: a CuPy (N, d) float32
    array the graph reads and writes in place (its address is baked into the graph)."""

    def __init__(self, prob, theta, steps, noise=None, seed=0):
        import cupy
        self.bs = _block(prob)
        self.stream = cupy.cuda.Stream(non_blocking=True)
        wts, lay, coef, hb = self.bs.tables("em", steps)
        use = noise is not None
        nz = noise if use else cupy.zeros((1, 1, 1), np.float32)
        k0, k1 = seed_words(seed)
        cfg = self.bs.configured(self.bs.em_kernel, theta.shape[0], self.stream.ptr)
        views = self.bs.args(theta, wts, lay, coef, hb, nz)
        dummy = self.bs.args(self.bs.dummy)[0]
        with self.stream:
            cfg(*views, np.int32(use), k0, k1, np.int64(0), np.int64(0), dummy)  # load the module outside capture
            self.stream.synchronize()
            self.stream.begin_capture(cupy.cuda.runtime.streamCaptureModeRelaxed)
            for s in range(steps):
                cfg(*views, np.int32(use), k0, k1, np.int64(s), np.int64(s + 1), dummy)
            self.graph = self.stream.end_capture()
        self.graph.upload(self.stream)
        self.launches_captured = steps

    def run(self):
        self.graph.launch(self.stream)
        self.stream.synchronize()


def run_graph_em(theta, noise, prob):
    GraphEM(prob, theta, noise.shape[0], noise=noise).run()


# ----------------------------------------------------------------------------- PyTorch, same maths

def torch_available():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


class TorchEM:
    """The EM loop of variant 6 in PyTorch on ``device``: the same packed layers, coefficient
    rows and bias rows (build_tables), one op at a time (``run``), or, on a GPU, the whole loop
    captured into a torch.cuda.CUDAGraph (``capture`` then ``replay``). noise: a (steps, N, d)
    tensor, or None for torch.randn on the device."""

    ACT = {"silu": "silu", "relu": "relu", "gelu": "gelu", "tanh": "tanh"}

    def __init__(self, prob, steps, device):
        import torch
        self.torch, self.device, self.steps = torch, device, steps
        wts, lay, coef, hb = build_tables(prob, steps)
        T = lambda a: torch.as_tensor(np.ascontiguousarray(a), device=device)  # noqa: E731
        self.layers = [(T(wts[wo:wo + fi * fo].reshape(fi, fo)), T(wts[bo:bo + fo]), fl)
                       for fi, fo, wo, bo, fl in lay.tolist()]
        self.coef = coef.astype(np.float64)
        self.hb = T(hb)
        act = prob.net.activation
        fn = torch.nn.functional
        self.act = {"silu": fn.silu, "relu": fn.relu, "tanh": torch.tanh,
                    "gelu": lambda x: fn.gelu(x, approximate="tanh")}[act]
        self.graph = None

    def step(self, x, s, z):
        h = x * float(self.coef[s, 0])
        for W, b, fl in self.layers:
            h = self.torch.addmm(self.hb[s] if fl & 2 else b, h, W)
            if fl & 1:
                h = self.act(h)
        a, b, c = (float(v) for v in self.coef[s, 1:])
        return a * x + (b * h + c * z)

    def run(self, theta, noise=None):
        torch = self.torch
        x = theta
        with torch.inference_mode():
            for s in range(self.steps):
                z = noise[s] if noise is not None else torch.randn_like(x)
                x = self.step(x, s, z)
            theta.copy_(x)
        return theta

    def capture(self, theta, noise=None):
        torch = self.torch
        self.static = theta
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s), torch.inference_mode():
            self.step(theta.clone(), 0, torch.randn_like(theta))  # warm-up outside capture
        torch.cuda.current_stream().wait_stream(s)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode():
            x = self.static
            for k in range(self.steps):
                z = noise[k] if noise is not None else torch.randn_like(x)
                x = self.step(x, k, z)
            self.static.copy_(x)
        return self

    def replay(self):
        self.graph.replay()


def _torch_em_variant(graph):
    def run(theta, noise, prob):
        import torch
        device = "cuda" if graph else ("cuda" if gpu_available() and torch.cuda.is_available() else "cpu")
        te = TorchEM(prob, noise.shape[0], device)
        th = torch.as_tensor(np.asarray(theta), device=device)
        nz = torch.as_tensor(np.asarray(noise), device=device)
        if graph:
            te.capture(th, nz).replay()
            torch.cuda.synchronize()
        else:
            te.run(th, nz)
        theta[...] = th.cpu().numpy()
    return run


# ----------------------------------------------------------------------------- variants

def _cuda_variants():
    if not cuda.is_available():
        return {}

    def shared(theta, noise, prob):
        run_trajectory(theta, noise, prob, shared=True)

    def global_(theta, noise, prob):
        run_trajectory(theta, noise, prob, shared=False)

    out = {"cuda_v1_shared": Variant(SimpleNamespace(em_trajectory=shared)),
           "cuda_v2_global": Variant(SimpleNamespace(em_trajectory=global_)),
           "cuda_v3_block": Variant(SimpleNamespace(em_trajectory=run_block_em),
                                    xp="numpy" if SIM_ACTIVE else "cupy", note="block-cooperative EM"),
           "cuda_v4_block_heun": Variant(SimpleNamespace(heun_trajectory=run_block_heun),
                                         xp="numpy" if SIM_ACTIVE else "cupy", note="block-cooperative Heun")}
    if gpu_available():
        out["cuda_v5_graph"] = Variant(SimpleNamespace(em_trajectory=run_graph_em), xp="cupy",
                                       note="per-step block kernel in one CUDA graph")
    return out


def _variants():
    out = {"numpy": Variant(REFERENCE, note="package loop, numpy backend"),
           "prod": Variant(SimpleNamespace(em_trajectory=lambda th, nz, p: _em_loop("numba", th, nz, p),
                                           heun_trajectory=lambda th, g, p: _heun_loop("numba", th, g, p)),
                           note="package loop, numba backend"),
           "numba_v3_fused": Variant(SimpleNamespace(em_trajectory=_em_fused),
                                     note="proposed sampling path: shared time row, in place, chunked")}
    if gpu_available():
        out["prod_cuda"] = Variant(SimpleNamespace(em_trajectory=lambda th, nz, p: _em_loop("cuda", th, nz, p),
                                                   heun_trajectory=lambda th, g, p: _heun_loop("cuda", th, g, p)),
                                   note="package loop, cuda backend")
    if SIM_ACTIVE or gpu_available():
        out.update(_cuda_variants())
    if torch_available() and not SIM_ACTIVE:
        out["torch_eager"] = Variant(SimpleNamespace(em_trajectory=_torch_em_variant(False)),
                                     note="PyTorch, same maths, op by op")
        if gpu_available():
            import torch
            if torch.cuda.is_available():
                out["torch_graph"] = Variant(SimpleNamespace(em_trajectory=_torch_em_variant(True)),
                                             note="PyTorch, the loop in one CUDA graph")
    return out


VARIANTS = _variants()


# ----------------------------------------------------------------------------- timing

def _rate(prob, n, steps, seconds, evals=1):
    return f"{2 * evals * n * steps * _macs(prob) / seconds / 1e9:.1f} GFLOP/s"


def time_trajectories(sizes=None, variants=None, repeats=3, cpu_sizes=None):
    """Seconds per whole run (and per 1,000 steps) for each variant and size.

    GPU variants run 10,000 samples x 1,000 steps of the paper network (the one-thread-per-
    sample kernels: ``TIMING_SIZES``); the CPU loops (numpy, prod) a few steps, extrapolated per
    1,000. The trajectory kernels are timed with in-kernel draws (Philox for 6 and 8,
    xoroshiro128p for 4 and 5, torch.randn for 9 and 10), the package loops with the noise given
    as a device array. Heun rows time ``heun_trajectory`` (two evaluations a step).
    """
    from kernels.common import benchmark
    rows = []
    gpu = gpu_available()
    names = [v for v in (variants or VARIANTS) if v in VARIANTS]

    def row(vname, op, n, steps, kind, r, evals=1):
        prob = make_problem(kind)
        rows.append(dict(variant=vname, op=op, N=n, steps=steps, net=kind, s=f"{r['median']:.4f}",
                         s_per_1000_steps=f"{r['median'] * 1000 / steps:.3f}", first_call_s=f"{r['first']:.2f}",
                         rate=_rate(prob, n, steps, r["median"], evals)))

    for vname in names:
        on_gpu = vname.startswith(("cuda_", "torch_graph")) or vname == "prod_cuda"
        if gpu and not on_gpu and vname not in ("prod", "torch_eager"):
            continue  # on the GPU machine: the CPU baseline (prod) and torch only
        if vname.startswith("cuda_") and not gpu:
            continue  # the simulator: validation only, never timing
        torch_gpu = vname == "torch_eager" and gpu
        if vname.startswith("cuda_v") and vname in ("cuda_v1_shared", "cuda_v2_global"):
            sizes_v = sizes or TIMING_SIZES
        elif vname == "cuda_v4_block_heun":
            sizes_v = HEUN_TIMING_SIZES
        elif on_gpu or torch_gpu:
            sizes_v = sizes or BLOCK_TIMING_SIZES
        else:
            sizes_v = cpu_sizes or CPU_TIMING_SIZES
        for n, steps, kind in sizes_v:
            prob = make_problem(kind)
            d = prob.net.dim_theta
            rng = np.random.default_rng(0)
            theta0 = (prob.sde.prior_std * rng.standard_normal((n, d))).astype(np.float32)
            if vname == "prod_cuda":  # the package loop on device arrays: no transfers in the timing
                import cupy
                noise = cupy.asarray(rng.standard_normal((steps, n, d)).astype(np.float32))
                th = cupy.asarray(theta0)
                r = benchmark(lambda: _em_loop("cuda", th, noise, prob), cupy.cuda.Device().synchronize,
                              warmup=1, repeats=repeats)
                row(vname, "em", n, steps, kind, r)
                for hn, hsteps, hkind in HEUN_TIMING_SIZES:
                    hp = make_problem(hkind)
                    thh = cupy.asarray((hp.sde.prior_std * rng.standard_normal((hn, d))).astype(np.float32))
                    grid = time_grid(hp.sde, hsteps)
                    r = benchmark(lambda: _heun_loop("cuda", thh, grid, hp), cupy.cuda.Device().synchronize,
                                  warmup=1, repeats=repeats)
                    row(vname, "heun", hn, hsteps, hkind, r, evals=2)
            elif vname in ("cuda_v1_shared", "cuda_v2_global"):
                shared = vname == "cuda_v1_shared"
                if shared and build_tables(prob, steps)[0].size > SMEM:
                    continue
                prob.steps = steps
                th_d = cuda.to_device(theta0)
                states = make_states(n, 0)
                r = benchmark(lambda: run_trajectory(th_d, None, prob, shared=shared, states=states),
                              cuda.synchronize, warmup=1, repeats=repeats)
                row(vname, "em", n, steps, kind, r)
            elif vname == "cuda_v3_block":
                import cupy
                bs, th = _block(prob), cupy.asarray(theta0)
                r = benchmark(lambda: bs.em(th, steps, noise=None, seed=1), cupy.cuda.Device().synchronize,
                              warmup=1, repeats=repeats)
                row(vname, "em", n, steps, kind, r)
            elif vname == "cuda_v4_block_heun":
                import cupy
                bs, th, grid = _block(prob), cupy.asarray(theta0), time_grid(prob.sde, steps)
                r = benchmark(lambda: bs.heun(th, grid), cupy.cuda.Device().synchronize, warmup=1, repeats=repeats)
                row(vname, "heun", n, steps, kind, r, evals=2)
            elif vname == "cuda_v5_graph":
                import cupy
                th = cupy.asarray(theta0)
                t0 = time.perf_counter()
                g = GraphEM(prob, th, steps, noise=None, seed=1)
                capture_s = time.perf_counter() - t0
                r = benchmark(g.run, None, warmup=1, repeats=repeats)
                r["first"] = capture_s
                row(vname, "em", n, steps, kind, r)
            elif vname in ("torch_eager", "torch_graph"):
                import torch
                device = "cuda" if (gpu and torch.cuda.is_available()) else "cpu"
                te = TorchEM(prob, steps, device)
                th = torch.as_tensor(theta0, device=device)
                sync = torch.cuda.synchronize if device == "cuda" else None
                if vname == "torch_graph":
                    t0 = time.perf_counter()
                    te.capture(th)
                    capture_s = time.perf_counter() - t0
                    r = benchmark(te.replay, sync, warmup=1, repeats=repeats)
                    r["first"] = capture_s
                else:
                    r = benchmark(lambda: te.run(th), sync, warmup=1, repeats=repeats)
                row(vname, "em", n, steps, kind, r)
            else:
                var = VARIANTS[vname]
                noise = rng.standard_normal((steps, n, d)).astype(np.float32)
                th = theta0.copy()
                r = benchmark(lambda: var.impl.em_trajectory(th, noise, prob), None, warmup=1, repeats=repeats)
                row(vname, "em", n, steps, kind, r)
    return rows


def _macs(prob):
    """Multiply-adds per sample per step in the trajectory kernel's layers."""
    return sum(fi * fo for _, (fi, fo), _ in _dense_layers(prob))


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description="whole-trajectory Euler-Maruyama / Heun lab")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", nargs="*", help="time only these variants")
    args = ap.parse_args(argv)
    from kernels.common import device_name
    n = validate_module(sys.modules[__name__], dtypes=DTYPES)
    print(f"em_trajectory.py: {n} validations passed against the numpy step loops ({', '.join(VARIANTS)})")
    if cuda.is_available():
        st = check_moments(make_problem("tiny"), n_kernel=64 if not gpu_available() else 4096)
        print(f"in-kernel xoroshiro128p EM moments: ok={st['ok']} var ratio {np.round(st['var_ratio'], 3)} bounds "
              f"{np.round(st['bounds'], 3)}")
        err = check_block_philox(make_problem("tiny"))
        print(f"block EM with in-kernel Philox vs the reference loop on philox_normals: max |diff| {err:.2e}")
        m = check_philox_moments(kernel_normals(3, 64 if not gpu_available() else 100_000, 4, 5))
        print(f"in-kernel Philox normals: ok={m['ok']} n={m['n']} mean {m['mean']:+.4f} var {m['var']:.4f} "
              f"skew {m['skew']:+.4f} kurt {m['kurt']:+.4f} corr {m['corr_i']:+.4f}/{m['corr_j']:+.4f}")
    if not args.no_timing:
        t0 = time.perf_counter()
        print_table(time_trajectories(variants=args.variants, repeats=args.repeats), f"device: {device_name()}")
        print(f"(timing took {time.perf_counter() - t0:.1f}s)")


if __name__ == "__main__":
    main()
