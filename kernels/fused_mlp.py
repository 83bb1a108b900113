"""The whole score network in ONE launch: fused MLP forward and backward numba.cuda kernels.

Ops (training mode, the network of snpse_np.nn.ScoreNetwork with x given):
``mlp_forward(out, theta_in, tau, x, problem)``: out (B, d) = net(theta_in, x, tau);
``mlp_backward(grads, theta_in, tau, x, dout, problem)``: grads (P,) = d <dout, net(...)> / d params
in the package's flat parameter layout (a forward runs first: the backward needs its caches).
``problem`` (``make_problem``) holds the network and its flat float32 parameters.

Why: on the lent H100 a cuda training step at batch 256 made 20-40 launches at 10-25 us of
Python each while the GEMMs took a few us (docs/performance.md); one launch per evaluation
removes that. The kernels (variant 3):

- a block owns a tile of R rows for the whole network; layer by layer its activations stay in
  shared memory (one (R, MAXW) buffer, overwritten in place: a layer's outputs are held in
  registers until every thread has read its inputs), so nothing goes back to device memory
  between layers except what the backward needs;
- the weights are streamed through shared memory in tiles of KT input rows (coalesced loads;
  every block reads each weight once per evaluation, from L2 after the first block);
- thread t = (row group rg, column group cg) of RG x CG threads accumulates an RT x CT register
  tile: rows rg RT .. rg RT + RT - 1, columns cg + CG j (j < CT). A warp shares rg, so the
  activation it reads is one shared-memory broadcast, and its CT weight reads are consecutive;
  per input k a thread does RT + CT shared loads for RT CT multiply-adds;
- the three branches (theta-MLP, x-MLP, sinusoidal time embedding, computed in-kernel in
  float64 as numpy_ref) write their outputs side by side into a (R, MAXCAT) buffer, so the
  head's first layer is ONE dense layer over [theta_emb, x_emb, t_emb] with the stacked
  (Wtheta; Wx; Wt), which lie contiguously in the package's flat buffer;
- the forward writes each layer's pre-activation z and activation h (and the inputs and the
  concatenation) into a row-major cache (B, CW) in device memory; the backward runs the
  layers in reverse over the same row tiles: dz in shared memory, the previous activations
  loaded tile-wise, dW = h_prev^T dz and db summed over the tile's rows and added to the
  gradient buffer with one atomic add per weight per block (the caller zeroes it: a memset),
  dh = dz W^T through transposed weight tiles (padded by one word against bank conflicts),
  times act'(z) read back from the cache;
- float32 throughout (the time embedding in float64), as the package.

Tile shapes: ``PROD_TRAIN`` (R = 16 rows, 256 threads, 4 x 4 register tiles, MAXW = 256,
about 32 KB of shared memory forward and 45 KB backward, under the 48 KB static limit),
``SIM`` (R = 4, 16 threads, MAXW = 16) for the CUDA simulator at tiny widths. The same source
compiles for both (the shapes are closure constants).

Variants:
  0. ``numpy``          the package's ScoreNetwork forward / backward on the numpy backend.
  1. ``prod``           the same on the numba backend.
  2. ``prod_cuda``      the same on the cuda backend (CuPy: ~20 launches forward, ~40 backward),
                        GPU only.
  3. ``cuda_v1_fused``  the fused kernels above: one launch forward, one backward (plus a
                        memset of the gradient); GPU (PROD_TRAIN) or NUMBA_ENABLE_CUDASIM=1 (SIM).

Not measured yet (no GPU in the session that wrote it): see docs/performance.md, "Awaiting a GPU".
Run: ``PYTHONPATH=. python kernels/fused_mlp.py`` (CPU: variants 0-1; the simulator:
``NUMBA_ENABLE_CUDASIM=1 ... --no-timing`` validates variant 3 at tiny sizes).
"""
import functools
import math
import os
import sys
from collections import namedtuple
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kernels.common import Case, Variant, gpu_available, load_numba_cuda, run_lab  # noqa: E402
from snpse_np.backend import get_backend  # noqa: E402
from snpse_np.nn import ScoreNetwork  # noqa: E402

_NK = load_numba_cuda()  # the package's loader (numba-cuda 0.30.4 under numpy >= 2.5)
from numba import cuda, float32, float64  # noqa: E402

OPS = ("mlp_forward", "mlp_backward")
DTYPES = (np.float32,)
TINY_SIZES = [(5, "tiny"), (9, "tiny16")]  # (B rows, network); 9 rows = 3 tiles of 4, the last ragged
TIMING_SIZES = [(256, "paper"), (10_000, "paper")]
ACT_CODES = {"identity": 0, "silu": 1, "relu": 2, "gelu": 3, "tanh": 4}
SIM_ACTIVE = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"

# RG x CG threads; each an RT x CT register tile; KT weight rows per forward tile, NT weight
# columns per transposed backward tile; MAXCAT: widest concatenation [theta_emb, x_emb, t_emb].
Tile = namedtuple("Tile", "RG CG RT CT KT NT MAXCAT")
PROD_TRAIN = Tile(RG=4, CG=64, RT=4, CT=4, KT=8, NT=4, MAXCAT=128)
SIM = Tile(RG=2, CG=8, RT=2, CT=2, KT=4, NT=4, MAXCAT=32)


def rows(tile):
    return tile.RG * tile.RT


def width(tile):
    return tile.CG * tile.CT


def threads(tile):
    return tile.RG * tile.CG


def default_tile():
    return SIM if SIM_ACTIVE else PROD_TRAIN


# ----------------------------------------------------------------------------- problems

def make_problem(kind="tiny", seed=0, activation="silu"):
    """A ScoreNetwork with random float32 weights: "tiny" (widths 8, two layers per MLP),
    "tiny16" (widths 16, three layers), "paper" (d = 5, p = 8, widths 256)."""
    if kind == "tiny":
        net = ScoreNetwork([2, 8, 6], [3, 8, 6], [8, 8, 2], activation, t_embed_dim=8)
    elif kind == "tiny16":
        net = ScoreNetwork([3, 16, 16, 6], [4, 16, 16, 6], [16, 16, 3], activation, t_embed_dim=8)
    elif kind == "paper":
        net = ScoreNetwork.paper(5, 8, activation=activation)
    else:
        raise ValueError(kind)
    return SimpleNamespace(kind=kind, net=net, params=net.init(seed, np.float32), cache={})


def make_case(op, size, dtype, rng):
    B, kind = size
    prob = make_problem(kind)
    net = prob.net
    theta_in = rng.standard_normal((B, net.dim_theta)).astype(dtype)
    x = rng.standard_normal((B, net.dim_x)).astype(dtype)
    tau = rng.uniform(0.01, 3.0, B).astype(dtype)
    macs = _macs(net)
    label = f"B={B} net={kind}"
    if op == "mlp_forward":
        out = np.empty((B, net.dim_theta), dtype)
        return Case(op, [out, theta_in, tau, x, prob], (0,), 4.0 * net.size, 2.0 * B * macs, label)
    if op == "mlp_backward":
        dout = rng.standard_normal((B, net.dim_theta)).astype(dtype) / B
        grads = np.empty(net.size, dtype)
        return Case(op, [grads, theta_in, tau, x, dout, prob], (0,), 8.0 * net.size, 6.0 * B * macs, label)
    raise ValueError(op)


def _macs(net):
    sizes = [net.theta_sizes, net.x_sizes]
    m = sum(a * b for s in sizes for a, b in zip(s[:-1], s[1:]))
    cat = net.theta_sizes[-1] + net.x_sizes[-1] + net.t_embed_dim
    hs = [cat] + net.head_sizes
    return m + sum(a * b for a, b in zip(hs[:-1], hs[1:]))


# ----------------------------------------------------------------------------- the package's passes

def _package(backend):
    be = get_backend(backend)

    def params(prob):
        key = ("params", be.name)
        if key not in prob.cache:
            prob.cache[key] = prob.net.views(be.to_device(prob.params))
        return prob.cache[key]

    def workspace(prob, B):
        key = ("ws", be.name, B)
        if key not in prob.cache:
            prob.cache[key] = prob.net.workspace(be, B, np.float32, train=True)
        return prob.cache[key]

    def mlp_forward(out, theta_in, tau, x, prob):
        ws = workspace(prob, theta_in.shape[0])
        out[...] = prob.net.forward(be, params(prob), theta_in, tau, ws, x=x)

    def mlp_backward(grads, theta_in, tau, x, dout, prob):
        ws = workspace(prob, theta_in.shape[0])
        pv = params(prob)
        prob.net.forward(be, pv, theta_in, tau, ws, x=x)
        prob.net.backward(be, pv, dout, ws, grads)

    return SimpleNamespace(mlp_forward=mlp_forward, mlp_backward=mlp_backward)


REFERENCE = _package("numpy")


# ----------------------------------------------------------------------------- tables

# Layer table columns (int32): fan-in K, fan-out N, weight and bias offsets in the flat buffer,
# activation on (1) or linear (0), cache columns of z and h (-1: not cached), cache columns of
# the previous activation (the layer's input) and of the previous pre-activation (-1: the
# input is linear, no act'), and how many input columns need a gradient dh (0: none).
K_, N_, W_, B_, ACT_, Z_, H_, HPREV_, ZPREV_, KDH_ = range(10)
# meta (int32): layer counts of the theta, x and head MLPs; d; p; the time-embedding width;
# the widths of theta_emb and x_emb; cache columns of theta_in, x, tau and the concatenation;
# the cache width.
(M_NTH, M_NX, M_NHD, M_D, M_P, M_T, M_ETH, M_EX, M_IN_TH, M_IN_X, M_TAU, M_CAT, M_CW) = range(13)


def train_tables(net, tile):
    """(lay (L, 10) int32, meta (13,) int32) for the fused training kernels: rows in forward
    order, theta layers, x layers, then head layers; head.0 is one layer over the concatenation."""
    off, o = {}, 0
    for name, shape, _ in net.layout:
        off[name] = o
        o += int(np.prod(shape))
    d, p, T = net.dim_theta, net.dim_x, net.t_embed_dim
    e_th, e_x = net.theta_sizes[-1], net.x_sizes[-1]
    kcat = e_th + e_x + T
    if kcat > tile.MAXCAT:
        raise ValueError(f"concatenation width {kcat} exceeds the tile's MAXCAT {tile.MAXCAT}")
    widest = max(net.theta_sizes + net.x_sizes + net.head_sizes + [e_th + e_x])
    if widest > width(tile):
        raise ValueError(f"layer width {widest} exceeds the tile's MAXW {width(tile)}")
    col = {"in_th": 0, "in_x": d, "tau": d + p}
    cw = d + p + 1
    lay = []
    for tag, sizes, inp in (("theta", net.theta_sizes, "in_th"), ("x", net.x_sizes, "in_x")):
        n = len(sizes) - 1
        prev_h, prev_z = col[inp], -1
        for i, (K, N) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = i == n - 1
            z_col = h_col = -1
            if not last:
                z_col, h_col, cw = cw, cw + N, cw + 2 * N
            lay.append((K, N, off[f"{tag}.{i}.W"], off[f"{tag}.{i}.b"], 0 if last else 1, z_col, h_col,
                        prev_h, prev_z, 0 if i == 0 else K))
            prev_h, prev_z = h_col, z_col
    col["cat"] = cw
    cw += kcat
    hs = net.head_sizes
    prev_h, prev_z = col["cat"], -1
    for i, N in enumerate(hs):
        K = kcat if i == 0 else hs[i - 1]
        last = i == len(hs) - 1
        z_col = h_col = -1
        if not last:
            z_col, h_col, cw = cw, cw + N, cw + 2 * N
        w = off["head.0.Wtheta"] if i == 0 else off[f"head.{i}.W"]
        b = off["head.0.b"] if i == 0 else off[f"head.{i}.b"]
        lay.append((K, N, w, b, 0 if last else 1, z_col, h_col, prev_h, prev_z, e_th + e_x if i == 0 else K))
        prev_h, prev_z = h_col, z_col
    meta = (len(net.theta_sizes) - 1, len(net.x_sizes) - 1, len(hs), d, p, T, e_th, e_x,
            col["in_th"], col["in_x"], col["tau"], col["cat"], cw)
    return np.array(lay, np.int32), np.array(meta, np.int32)


# ----------------------------------------------------------------------------- device functions
# Built per (tile, activation) by factories: the tile shape and the activation are closure
# constants, so shared arrays get constant shapes and the register tiles constant trip counts.
# Module-level ``cuda``: the simulator swaps this module's global for its per-block fake.

@functools.lru_cache(maxsize=None)
def device_functions(tile, act_code):
    """Namespace of device functions for ``tile`` and activation code: act, act_grad,
    dense_fwd (one layer, smem -> smem), dense_bwd (one layer backward), forward_tile (the
    whole training forward for the block's rows)."""
    RG, CG, RT, CT, KT, NT, MAXCAT = tile
    R, NTH = RG * RT, RG * CG
    ACT = act_code

    @cuda.jit(device=True)
    def act(x):
        # numpy_ref's activations in float32; sigmoid from exp of a non-positive argument.
        if ACT == 1:
            e = math.exp(-abs(x))
            s = float32(1.0) / (float32(1.0) + e)
            return x * (s if x >= float32(0.0) else e * s)
        if ACT == 2:
            return x if x > float32(0.0) else float32(0.0)
        if ACT == 3:
            u = float32(0.7978845608028654) * (x + float32(0.044715) * x * x * x)
            return float32(0.5) * x * (float32(1.0) + math.tanh(u))
        if ACT == 4:
            return math.tanh(x)
        return x

    @cuda.jit(device=True)
    def act_grad(x):
        if ACT == 1:
            e = math.exp(-abs(x))
            s0 = float32(1.0) / (float32(1.0) + e)
            s = s0 if x >= float32(0.0) else e * s0
            return s * (float32(1.0) + x * (float32(1.0) - s))
        if ACT == 2:
            return float32(1.0) if x > float32(0.0) else float32(0.0)
        if ACT == 3:
            c = float32(0.7978845608028654)
            th = math.tanh(c * (x + float32(0.044715) * x * x * x))
            return (float32(0.5) * (float32(1.0) + th)
                    + float32(0.5) * x * (float32(1.0) - th * th) * c * (float32(1.0) + float32(3.0 * 0.044715) * x * x))
        if ACT == 4:
            th = math.tanh(x)
            return float32(1.0) - th * th
        return float32(1.0)

    @cuda.jit(device=True)
    def dense_fwd(src, src_col, K, dst, dst_col, N, wts, w_off, bias, b_off, act_on, sW,
                  cache, z_col, h_col, row0, nrows):
        # dst[r, dst_col + n] = act(sum_k src[r, src_col + k] W[k, n] + bias[b_off + n]) for the
        # block's R rows; W row-major (K, N) at wts[w_off]. src may be dst (outputs wait in
        # registers until the last tile's barrier). z and h of valid rows go to the cache
        # columns z_col, h_col when >= 0. Ends with a barrier.
        t = cuda.threadIdx.x
        rg = t // CG
        cg = t - rg * CG
        acc = cuda.local.array((RT, CT), float32)
        for i in range(RT):
            for j in range(CT):
                acc[i, j] = float32(0.0)
        for k0 in range(0, K, KT):
            kt = K - k0 if K - k0 < KT else KT  # (min() of ints does not type in numba.cuda 0.68)
            e = t
            while e < kt * N:  # the tile W[k0:k0+kt, :N], coalesced
                kk = e // N
                sW[kk, e - kk * N] = wts[w_off + (k0 + kk) * N + (e - kk * N)]
                e += NTH
            cuda.syncthreads()
            for kk in range(kt):
                for i in range(RT):
                    a = src[rg * RT + i, src_col + k0 + kk]  # one broadcast per warp
                    for j in range(CT):
                        acc[i, j] += a * sW[kk, cg + CG * j]
            cuda.syncthreads()
        for i in range(RT):
            r = rg * RT + i
            valid = row0 + r < nrows
            for j in range(CT):
                n = cg + CG * j
                if n < N:
                    v = acc[i, j] + bias[b_off + n]
                    h = act(v) if act_on else v
                    if valid:
                        if z_col >= 0:
                            cache[row0 + r, z_col + n] = v
                        if h_col >= 0:
                            cache[row0 + r, h_col + n] = h
                    dst[r, dst_col + n] = h
        cuda.syncthreads()

    @cuda.jit(device=True)
    def load_rows(dst, dst_col, ncols, cache, col, row0, nrows):
        # dst[r, dst_col + j] = cache[row0 + r, col + j] (zero past the last row). Ends with a barrier.
        t = cuda.threadIdx.x
        e = t
        while e < R * ncols:
            r = e // ncols
            j = e - r * ncols
            dst[r, dst_col + j] = cache[row0 + r, col + j] if row0 + r < nrows else float32(0.0)
            e += NTH
        cuda.syncthreads()

    @cuda.jit(device=True)
    def forward_tile(X, C, sW, wts, lay, meta, cache, row0, nrows):
        # The training forward for rows row0 .. row0 + R - 1, inputs read from the cache
        # (theta_in, x, tau columns, written by the caller's loading phase). Leaves the output
        # (R, d) in X[:, :d]; caches z, h, the concatenation.
        t = cuda.threadIdx.x
        n_th, n_x, n_hd = meta[M_NTH], meta[M_NX], meta[M_NHD]
        e_th, e_x, T = meta[M_ETH], meta[M_EX], meta[M_T]
        l0 = 0
        for branch in range(2):
            nl = n_th if branch == 0 else n_x
            load_rows(X, 0, meta[M_D] if branch == 0 else meta[M_P], cache,
                      meta[M_IN_TH] if branch == 0 else meta[M_IN_X], row0, nrows)
            for l in range(l0, l0 + nl):
                if l < l0 + nl - 1:
                    dense_fwd(X, 0, lay[l, K_], X, 0, lay[l, N_], wts, lay[l, W_], wts, lay[l, B_], 1, sW,
                              cache, lay[l, Z_], lay[l, H_], row0, nrows)
                else:  # linear output layer into the concatenation
                    dense_fwd(X, 0, lay[l, K_], C, 0 if branch == 0 else e_th, lay[l, N_], wts, lay[l, W_], wts,
                              lay[l, B_], 0, sW, cache, -1, -1, row0, nrows)
            l0 += nl
        # sinusoidal time embedding into C[:, e_th + e_x:], float64 maths as numpy_ref
        half = T // 2
        e = t
        while e < R * T:
            r = e // T
            jj = e - r * T
            j = jj if jj < half else jj - half
            tau = float64(cache[row0 + r, meta[M_TAU]]) if row0 + r < nrows else 0.0
            a = tau * math.pow(10000.0, -float64(j) / float64(half - 1 if half > 1 else 1))
            C[r, e_th + e_x + jj] = float32(math.sin(a) if jj < half else math.cos(a))
            e += NTH
        cuda.syncthreads()
        kcat = e_th + e_x + T
        e = t
        while e < R * kcat:  # cache the concatenation (the head's first input)
            r = e // kcat
            j = e - r * kcat
            if row0 + r < nrows:
                cache[row0 + r, meta[M_CAT] + j] = C[r, j]
            e += NTH
        for l in range(l0, l0 + n_hd):
            src = C if l == l0 else X
            dense_fwd(src, 0, lay[l, K_], X, 0, lay[l, N_], wts, lay[l, W_], wts, lay[l, B_], lay[l, ACT_], sW,
                      cache, lay[l, Z_], lay[l, H_], row0, nrows)

    @cuda.jit(device=True)
    def dense_bwd(D, lrow, lay, wts, cache, grads, H, sWt, dst, dst_col, row0, nrows):
        # Layer lrow backward for the block's rows, D[:, :N] = dz (zero rows past the last):
        # grads[W] += h_prev^T dz and grads[b] += sum_r dz (one atomic add per element per block);
        # then, for the first kdh input columns, dst[r, dst_col + k] = (dz W^T)[r, k] * act'(z_prev)
        # (no act' when zprev < 0). dst may be D. Ends with a barrier.
        t = cuda.threadIdx.x
        K, N = lay[lrow, K_], lay[lrow, N_]
        w_off, b_off = lay[lrow, W_], lay[lrow, B_]
        hprev, zprev, kdh = lay[lrow, HPREV_], lay[lrow, ZPREV_], lay[lrow, KDH_]
        e = t
        while e < R * K:  # the layer's input tile
            r = e // K
            k = e - r * K
            H[r, k] = cache[row0 + r, hprev + k] if row0 + r < nrows else float32(0.0)
            e += NTH
        cuda.syncthreads()
        e = t
        while e < K * N:
            k = e // N
            n = e - k * N
            s = float32(0.0)
            for r in range(R):
                s += H[r, k] * D[r, n]
            cuda.atomic.add(grads, w_off + e, s)
            e += NTH
        e = t
        while e < N:
            s = float32(0.0)
            for r in range(R):
                s += D[r, e]
            cuda.atomic.add(grads, b_off + e, s)
            e += NTH
        if kdh > 0:
            rg = t // CG
            cg = t - rg * CG
            acc = cuda.local.array((RT, CT), float32)
            for i in range(RT):
                for j in range(CT):
                    acc[i, j] = float32(0.0)
            for n0 in range(0, N, NT):
                nt = N - n0 if N - n0 < NT else NT
                e = t
                while e < kdh * nt:  # sWt[k, nn] = W[k, n0 + nn]
                    k = e // nt
                    nn = e - k * nt
                    sWt[k, nn] = wts[w_off + k * N + n0 + nn]
                    e += NTH
                cuda.syncthreads()
                for nn in range(nt):
                    for i in range(RT):
                        dv = D[rg * RT + i, n0 + nn]
                        for j in range(CT):
                            acc[i, j] += dv * sWt[cg + CG * j, nn]
                cuda.syncthreads()
            for i in range(RT):
                r = rg * RT + i
                valid = row0 + r < nrows
                for j in range(CT):
                    k = cg + CG * j
                    if k < kdh:
                        g = acc[i, j]
                        if zprev >= 0:
                            g *= act_grad(cache[row0 + r, zprev + k]) if valid else float32(0.0)
                        dst[r, dst_col + k] = g if valid else float32(0.0)
        cuda.syncthreads()  # also when kdh == 0: the caller's next write to D or H waits for the dW reads

    @cuda.jit(device=True)
    def backward_tile(D, H, G, sWt, wts, lay, meta, cache, grads, row0, nrows):
        # The training backward for the block's rows, D[:, :d] = dout on entry (zero past the
        # last row): the head in reverse, its first layer's input gradient into G (the
        # concatenation's theta and x parts), then each branch in reverse.
        t = cuda.threadIdx.x
        n_th, n_x, n_hd = meta[M_NTH], meta[M_NX], meta[M_NHD]
        e_th, e_x = meta[M_ETH], meta[M_EX]
        first_head = n_th + n_x
        for l in range(first_head + n_hd - 1, first_head, -1):
            dense_bwd(D, l, lay, wts, cache, grads, H, sWt, D, 0, row0, nrows)
        dense_bwd(D, first_head, lay, wts, cache, grads, H, sWt, G, 0, row0, nrows)
        l0 = 0
        for branch in range(2):
            nl = n_th if branch == 0 else n_x
            ne = e_th if branch == 0 else e_x
            c0 = 0 if branch == 0 else e_th
            e = t
            while e < R * ne:
                r = e // ne
                j = e - r * ne
                D[r, j] = G[r, c0 + j]
                e += NTH
            cuda.syncthreads()
            for l in range(l0 + nl - 1, l0 - 1, -1):
                dense_bwd(D, l, lay, wts, cache, grads, H, sWt, D, 0, row0, nrows)
            l0 += nl

    return SimpleNamespace(act=act, act_grad=act_grad, dense_fwd=dense_fwd, load_rows=load_rows,
                           forward_tile=forward_tile, dense_bwd=dense_bwd, backward_tile=backward_tile)


@functools.lru_cache(maxsize=None)
def train_kernels(tile, act_code):
    """(forward, backward, train_forward) kernels for ``tile`` and the activation code.

    forward[grid, NTH](theta_in, x, tau, wts, lay, meta, cache, out): copies the inputs into the
    cache, runs the network, writes out (B, d).
    backward[grid, NTH](dout, wts, lay, meta, cache, grads): ADDS the parameter gradient to grads.
    train_forward[grid, NTH](theta0, xdata, idx, draws, zl, wts, lay, meta, cache, dout, acc): one
    training step's forward: rows idx of the data, theta_in = c_in (alpha theta0 + sigma z)
    from the packed draws (npse.StepDraws' layout: alpha, sigma, c_in, tau, c rows of B, then
    z (B, d), then, weighted, the loss's z), the network, and the DSM loss epilogue
    dout = 2 c r / (B d), r = c out + z_loss with z_loss at draws[zl:] (5 B unweighted),
    acc[0] += sum r^2 (float64, one atomic add per block).
    """
    f = device_functions(tile, act_code)
    forward_tile, backward_tile = f.forward_tile, f.backward_tile  # closure names: numba types them
    RG, CG, RT, CT, KT, NT, MAXCAT = tile
    R, MAXW, NTH = RG * RT, CG * CT, RG * CG
    HW = max(MAXW, MAXCAT)
    NTP = NT + 1  # shared-array shapes must be plain constants

    @cuda.jit
    def forward(theta_in, x, tau, wts, lay, meta, cache, out):
        X = cuda.shared.array((R, MAXW), float32)
        C = cuda.shared.array((R, MAXCAT), float32)
        sW = cuda.shared.array((KT, MAXW), float32)
        t = cuda.threadIdx.x
        B = theta_in.shape[0]
        d, p = theta_in.shape[1], x.shape[1]
        row0 = cuda.blockIdx.x * R
        e = t
        while e < R * (d + p + 1):  # inputs into the cache (the backward reads them there)
            r = e // (d + p + 1)
            j = e - r * (d + p + 1)
            if row0 + r < B:
                if j < d:
                    cache[row0 + r, meta[M_IN_TH] + j] = theta_in[row0 + r, j]
                elif j < d + p:
                    cache[row0 + r, meta[M_IN_X] + j - d] = x[row0 + r, j - d]
                else:
                    cache[row0 + r, meta[M_TAU]] = tau[row0 + r]
            e += NTH
        cuda.syncthreads()
        forward_tile(X, C, sW, wts, lay, meta, cache, row0, B)
        e = t
        while e < R * d:
            r = e // d
            j = e - r * d
            if row0 + r < B:
                out[row0 + r, j] = X[r, j]
            e += NTH

    @cuda.jit
    def backward(dout, wts, lay, meta, cache, grads):
        D = cuda.shared.array((R, MAXW), float32)
        H = cuda.shared.array((R, HW), float32)  # a layer's input: up to the concatenation's width
        G = cuda.shared.array((R, MAXCAT), float32)
        sWt = cuda.shared.array((MAXW, NTP), float32)  # padded by one word: no bank conflicts
        t = cuda.threadIdx.x
        B, d = dout.shape
        row0 = cuda.blockIdx.x * R
        e = t
        while e < R * d:
            r = e // d
            j = e - r * d
            D[r, j] = dout[row0 + r, j] if row0 + r < B else float32(0.0)
            e += NTH
        cuda.syncthreads()
        backward_tile(D, H, G, sWt, wts, lay, meta, cache, grads, row0, B)

    @cuda.jit
    def train_forward(theta0, xdata, idx, draws, zl, wts, lay, meta, cache, dout, acc):
        X = cuda.shared.array((R, MAXW), float32)
        C = cuda.shared.array((R, MAXCAT), float32)
        sW = cuda.shared.array((KT, MAXW), float32)
        part = cuda.shared.array(NTH, float64)
        t = cuda.threadIdx.x
        B = idx.shape[0]
        d, p = theta0.shape[1], xdata.shape[1]
        row0 = cuda.blockIdx.x * R
        e = t
        while e < R * (d + p + 1):
            r = e // (d + p + 1)
            j = e - r * (d + p + 1)
            i = row0 + r
            if i < B:
                src = idx[i]
                if j < d:  # theta_in = c_in (alpha theta0 + sigma z)
                    cache[i, meta[M_IN_TH] + j] = draws[2 * B + i] * (draws[i] * theta0[src, j]
                                                                      + draws[B + i] * draws[5 * B + i * d + j])
                elif j < d + p:
                    cache[i, meta[M_IN_X] + j - d] = xdata[src, j - d]
                else:
                    cache[i, meta[M_TAU]] = draws[3 * B + i]
            e += NTH
        cuda.syncthreads()
        forward_tile(X, C, sW, wts, lay, meta, cache, row0, B)
        v = 0.0
        e = t
        n = B * d
        while e < R * d:  # loss epilogue; R d <= NTH in the shipped tiles, the loop covers any
            r = e // d
            j = e - r * d
            i = row0 + r
            if i < B:
                c = draws[4 * B + i]
                res = c * X[r, j] + draws[zl + i * d + j]
                dout[i, j] = (float32(2.0) / float32(n)) * c * res
                v += float64(res) * float64(res)
            e += NTH
        part[t] = v
        cuda.syncthreads()
        s = NTH // 2
        while s > 0:
            if t < s:
                part[t] += part[t + s]
            cuda.syncthreads()
            s //= 2
        if t == 0:
            cuda.atomic.add(acc, 0, part[0])

    return forward, backward, train_forward


# ----------------------------------------------------------------------------- launching

class FusedNet:
    """The fused kernels bound to one network and tile: ``forward(out, theta_in, tau, x)``,
    ``backward(grads, dout)`` (zeroes grads, then one launch; needs the last forward's cache),
    ``train_forward(...)``. Arrays: numpy (simulator) or CuPy (GPU: launched on CuPy's current
    stream through the package's DeviceViews, views made once per buffer)."""

    def __init__(self, net, params, tile=None, max_rows=None):
        self.net, self.tile = net, tile or default_tile()
        self.lay, self.meta = train_tables(net, self.tile)
        self.kernels = train_kernels(self.tile, ACT_CODES[net.activation])
        self.R, self.nth = rows(self.tile), threads(self.tile)
        self._gpu = not SIM_ACTIVE
        self.xp = np
        if self._gpu:
            import cupy
            self.xp = cupy
            self._views = _NK.DeviceViews()
            self._streams = {}
        self.params = self.xp.asarray(params, dtype=np.float32)
        self._lay, self._meta = self.xp.asarray(self.lay), self.xp.asarray(self.meta)
        self._cache = {}
        self.launches = 0

    def cache(self, B):
        """The (B, CW) float32 activation cache for batches of B rows (made once per B)."""
        c = self._cache.get(B)
        if c is None:
            c = self._cache[B] = self.xp.empty((B, int(self.meta[M_CW])), np.float32)
        return c

    def _go(self, kern, B, args):
        grid = (B + self.R - 1) // self.R
        self.launches += 1
        if not self._gpu:
            kern[grid, self.nth](*args)
            return
        ptr = self.xp.cuda.get_current_stream().ptr
        stream = self._streams.get(ptr)
        if stream is None:
            stream = self._streams[ptr] = cuda.external_stream(ptr)
        kern[grid, self.nth, stream](*[self._views(a) if hasattr(a, "data") and hasattr(a.data, "ptr") else a
                                        for a in args])

    def forward(self, out, theta_in, tau, x):
        B = theta_in.shape[0]
        self._go(self.kernels[0], B, (theta_in, x, tau, self.params, self._lay, self._meta, self.cache(B), out))
        return out

    def backward(self, grads, dout):
        B = dout.shape[0]
        grads.fill(0)
        self._go(self.kernels[1], B, (dout, self.params, self._lay, self._meta, self.cache(B), grads))
        return grads

    def train_forward(self, theta0, xdata, idx, draws, dout, acc, z_loss_offset=None):
        """acc[0] += sum r^2 (the caller zeroes it); z_loss_offset: where the loss's z starts in
        draws (None: 5 B, the unweighted z)."""
        B = idx.shape[0]
        zl = np.int64(5 * B if z_loss_offset is None else z_loss_offset)
        self._go(self.kernels[2], B, (theta0, xdata, idx, draws, zl, self.params, self._lay, self._meta,
                                      self.cache(B), dout, acc))
        return dout


def ptx_signatures(tile=PROD_TRAIN, activation="silu"):
    """[(label, dispatcher, signature)] of the fused kernels as the GPU launches them, for the
    compile-only check (tests/test_cuda_ptx.py: PTX for sm_90, then ptxas' resource report)."""
    fwd, bwd, trf = train_kernels(tile, ACT_CODES[activation])
    M, V, I2, I1 = "float32[:, ::1]", "float32[::1]", "int32[:, ::1]", "int32[::1]"
    return [("fused_mlp.forward", fwd, f"void({M}, {M}, {V}, {V}, {I2}, {I1}, {M}, {M})"),
            ("fused_mlp.backward", bwd, f"void({M}, {V}, {I2}, {I1}, {M}, {V})"),
            ("fused_mlp.train_forward", trf, f"void({M}, {M}, {I1}, {V}, int64, {V}, {I2}, {I1}, {M}, {M}, float64[::1])")]


def _fused_variant():
    def fused(prob):
        key = ("fused", SIM_ACTIVE)
        if key not in prob.cache:
            prob.cache[key] = FusedNet(prob.net, prob.params)
        return prob.cache[key]

    def mlp_forward(out, theta_in, tau, x, prob):
        fused(prob).forward(out, theta_in, tau, x)

    def mlp_backward(grads, theta_in, tau, x, dout, prob):
        fn = fused(prob)
        out = fn.xp.empty_like(dout)
        fn.forward(out, theta_in, tau, x)
        fn.backward(grads, dout)

    return SimpleNamespace(mlp_forward=mlp_forward, mlp_backward=mlp_backward)


def _variants():
    out = {"numpy": Variant(REFERENCE, note="package network, numpy backend"),
           "prod": Variant(_package("numba"), note="package network, numba backend")}
    if gpu_available():
        out["prod_cuda"] = Variant(_package("cuda"), xp="cupy", note="package network, cuda backend")
    if SIM_ACTIVE or gpu_available():
        out["cuda_v1_fused"] = Variant(_fused_variant(), xp="numpy" if SIM_ACTIVE else "cupy",
                                       note=f"fused kernels, tile {default_tile()}")
    return out


VARIANTS = _variants()


def main(argv=None):
    run_lab(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
