"""One NPSE training step with the fewest launches: the fused kernels, and the step as one CUDA graph.

Op: ``train_step(params, m, v, ema, theta0, xdata, idx, draws, problem)``: what NPSE.train's
inner loop does for one minibatch, in place on the flat parameter buffer ``params``, Adam's
moments ``m``, ``v`` and the weight average ``ema``; returns the batch loss (a float):

    theta_in = c_in (alpha theta0[idx] + sigma z)           (dsm_perturb)
    out = net(theta_in, xdata[idx], tau)                     (forward, x-MLP included)
    loss, dout = DSM loss with c = sigma / c_out, z_loss     (dsm_loss)
    grads = backward(dout); Adam step ``problem.step``; EMA  (optim.Adam.step)

``draws`` is npse.StepDraws' packed host buffer (alpha, sigma, c_in, tau, c rows of B, then z
(B, d)) followed by one float32 holding the Adam step count (the graph reads it on the device,
so one captured graph serves every step). ``problem`` (``make_problem``): the network, the
model, Adam's settings.

Variants:
  0. ``numpy``          the package's ops and network on the numpy backend (the reference).
  1. ``prod``           the same on the numba backend.
  2. ``prod_cuda``      the same on the cuda backend (today's GPU step: ~60 launches and a host
                        read of the loss), GPU only.
  3. ``cuda_v1_fused``  kernels/fused_mlp.py: ``train_forward`` (gather, perturbation, whole
                        network, loss and dout in one launch), ``backward`` (one launch after a
                        memset of the gradient), ``adam_ema`` (Adam and the EMA in one launch,
                        step count read from the device): 3 launches, 2 memsets, 2 uploads and
                        the loss read; GPU or NUMBA_ENABLE_CUDASIM=1.
  4. ``cuda_v2_graph``  variant 3 captured once into a CUDA graph (uploads from pinned host
                        buffers, memsets, the 3 kernels); each step writes its draws into the
                        pinned buffers, replays the graph and reads the loss; GPU only.
  5. ``torch_eager`` / ``torch_graph``: not here: examples/compare_torch.py's step (eager) is
     timed next to these by kernels/gpu_profile.py; a captured PyTorch step needs a static
     optimiser and is left out (PyTorch's own torch.compile(mode="reduce-overhead") would be the
     comparison).

Not measured yet (no GPU in the session that wrote it): see docs/performance.md, "Awaiting a GPU".
Run: ``PYTHONPATH=. python kernels/train_step.py``.
"""
import math
import os
import sys
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kernels.common import Case, Variant, gpu_available, run_lab  # noqa: E402
from kernels.fused_mlp import SIM_ACTIVE, FusedNet  # noqa: E402
from kernels.fused_mlp import make_problem as _net_problem  # noqa: E402
from snpse_np.backend import get_backend  # noqa: E402
from snpse_np.npse import StepDraws  # noqa: E402
from snpse_np.score import ScoreModel  # noqa: E402
from snpse_np.sde import make_sde  # noqa: E402

from numba import cuda, float32, float64  # noqa: E402  (loaded by kernels.fused_mlp through the package loader)

OPS = ("train_step",)
DTYPES = (np.float32,)
TINY_SIZES = [(5, "tiny"), (9, "tiny16")]  # (batch, network)
TIMING_SIZES = [(256, "paper")]
N_DATA = 64  # simulations the minibatch indexes into (tiny cases); 10,000 for "paper"


def make_problem(kind="tiny", seed=0):
    prob = _net_problem(kind, seed)
    prob.model = ScoreModel(prob.net, make_sde("ve", sigma_max=4.0))
    prob.lr, prob.beta1, prob.beta2, prob.eps, prob.decay = 5e-4, 0.9, 0.999, 1e-8, 0.999
    prob.step = 3  # Adam's bias corrections are not trivial at step 3
    return prob


def make_case(op, size, dtype, rng):
    B, kind = size
    prob = make_problem(kind)
    net = prob.net
    n = 10_000 if kind == "paper" else N_DATA
    theta0 = rng.standard_normal((n, net.dim_theta)).astype(dtype)
    xdata = rng.standard_normal((n, net.dim_x)).astype(dtype)
    idx = rng.permutation(n)[:B].astype(np.int32)
    draws = StepDraws(prob.model, B, net.dim_theta, dtype)
    draws.fill(rng.uniform(prob.model.sde.t_min, 1.0, B), rng.standard_normal((B, net.dim_theta)))
    packed = np.concatenate([draws.host, np.array([prob.step], dtype)])
    params = prob.params.astype(dtype)
    m = (1e-3 * rng.standard_normal(net.size)).astype(dtype)
    v = (1e-6 * rng.uniform(0.5, 1.5, net.size)).astype(dtype)
    ema = params + (1e-3 * rng.standard_normal(net.size)).astype(dtype)
    return Case(op, [params, m, v, ema, theta0, xdata, idx, packed, prob], (0, 1, 2, 3),
                4.0 * net.size * 12, 6.0 * B * net.size, f"B={B} net={kind}")


def _unpack(draws, B, d):
    rows = [draws[k * B:(k + 1) * B] for k in range(5)]
    z = draws[5 * B:(5 + d) * B].reshape(B, d)
    return rows, z, float(draws[-1])


# ----------------------------------------------------------------------------- the package's step

def _package(backend):
    be = get_backend(backend)

    def train_step(params, m, v, ema, theta0, xdata, idx, draws, prob):
        net, ops, xp = prob.net, be.ops, be.xp
        B, d = idx.shape[0], net.dim_theta
        key = ("ws", be.name, B)
        if key not in prob.cache:
            prob.cache[key] = (net.workspace(be, B, np.float32, train=True), xp.empty((B, d), np.float32),
                               xp.empty((B, d), np.float32), xp.empty(net.size, np.float32))
        ws, theta_in, dout, grads = prob.cache[key]
        (alpha, sigma, c_in, tau, c), z, step = _unpack(draws, B, d)
        pv, gv = net.views(params), net.views(grads)
        ops.dsm_perturb(theta_in, xp.take(theta0, idx, axis=0), z, alpha, sigma, c_in)
        out = net.forward(be, pv, theta_in, tau, ws, x=xp.take(xdata, idx, axis=0))
        loss = ops.dsm_loss(dout, out, z, c)
        net.backward(be, pv, dout, ws, gv)
        ops.adam_step(params, grads, m, v, prob.lr, prob.beta1, prob.beta2, prob.eps, int(step))
        ops.ema_update(ema, params, prob.decay)
        return loss

    return SimpleNamespace(train_step=train_step)


REFERENCE = _package("numpy")


# ----------------------------------------------------------------------------- Adam + EMA, one launch

@cuda.jit
def _adam_ema(p, g, m, v, e, draws, lr, b1, b2, eps, decay):
    # One thread per parameter: numpy_ref's adam_step then ema_update in float32, the step count
    # read from the device (draws[-1]) so a captured graph serves every step.
    k = cuda.grid(1)
    if k < p.shape[0]:
        step = float64(draws[draws.shape[0] - 1])
        bc1 = 1.0 - b1 ** step
        bc2 = 1.0 - b2 ** step
        gk = g[k]
        mk = float32(b1) * m[k] + float32(1.0 - b1) * gk
        vk = float32(b2) * v[k] + float32(1.0 - b2) * gk * gk
        m[k] = mk
        v[k] = vk
        pk = p[k] - float32(lr / bc1) * mk / (math.sqrt(vk / float32(bc2)) + float32(eps))
        p[k] = pk
        e[k] = float32(decay) * e[k] + float32(1.0 - decay) * pk

_TPB = 256


def ptx_signatures():
    """[(label, dispatcher, signature)] for tests/test_cuda_ptx.py."""
    return [("train_step.adam_ema", _adam_ema,
             "void(float32[::1], float32[::1], float32[::1], float32[::1], float32[::1], float32[::1], "
             "float64, float64, float64, float64, float64)")]


class FusedTrainStep:
    """Variant 3 bound to one problem and batch size: device buffers made once. ``__call__``
    takes the case's arrays (numpy under the simulator, CuPy on a GPU); the step count is the
    last float of ``draws``."""

    def __init__(self, prob, B):
        self.prob, self.B = prob, B
        self.fn = FusedNet(prob.net, prob.params)
        xp = self.xp = self.fn.xp
        d = prob.net.dim_theta
        self.dout = xp.empty((B, d), np.float32)
        self.grads = xp.empty(prob.net.size, np.float32)
        self.acc = xp.zeros(1, np.float64)

    def _adam(self, params, m, v, ema, draws):
        p = self.prob
        n = params.shape[0]
        self.fn.launches += 1
        args = (params, self.grads, m, v, ema, draws)
        if self.fn._gpu:
            stream = self.fn._streams.get(self.xp.cuda.get_current_stream().ptr)
            if stream is None:
                ptr = self.xp.cuda.get_current_stream().ptr
                stream = self.fn._streams[ptr] = cuda.external_stream(ptr)
            _adam_ema[(n + _TPB - 1) // _TPB, _TPB, stream](*[self.fn._views(a) for a in args], p.lr, p.beta1,
                                                            p.beta2, p.eps, p.decay)
        else:
            _adam_ema[(n + _TPB - 1) // _TPB, _TPB](*args, p.lr, p.beta1, p.beta2, p.eps, p.decay)

    def enqueue(self, params, m, v, ema, theta0, xdata, idx, draws):
        """Everything but the loss read (so a graph can capture it)."""
        self.fn.params = params  # the kernels read the live weights
        self.acc.fill(0)
        self.fn.train_forward(theta0, xdata, idx, draws, self.dout, self.acc)
        self.fn.backward(self.grads, self.dout)
        self._adam(params, m, v, ema, draws)

    def loss(self):
        a = self.acc if isinstance(self.acc, np.ndarray) else self.acc.get()
        return float(a[0]) / (self.B * self.prob.net.dim_theta)

    def __call__(self, params, m, v, ema, theta0, xdata, idx, draws):
        self.enqueue(params, m, v, ema, theta0, xdata, idx, draws)
        return self.loss()


class GraphTrainStep:
    """Variant 4: FusedTrainStep captured into one CUDA graph on a non-blocking CuPy stream,
    with the step's draws and indices uploaded inside the graph from pinned host buffers. GPU
    only. ``step(draws_host, idx_host)`` copies them into the pinned buffers, replays, returns
    the loss (one device-to-host read)."""

    def __init__(self, prob, params, m, v, ema, theta0, xdata, B, draws_size):
        import cupy
        import cupyx
        self.ts = FusedTrainStep(prob, B)
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.h_draws = cupyx.empty_pinned((draws_size,), np.float32)
        self.h_idx = cupyx.empty_pinned((B,), np.int32)
        self.d_draws = cupy.empty(draws_size, np.float32)
        self.d_idx = cupy.zeros(B, np.int32)
        self.h_draws[...] = 0
        self.h_draws[-1] = 1
        self.h_idx[...] = 0
        bufs = (params, m, v, ema, theta0, xdata)
        with self.stream:
            # a first run outside capture compiles and loads the kernels; it must not move the
            # weights, so it runs on copies
            scratch = [b.copy() for b in bufs[:4]]
            self.d_draws.set(self.h_draws, self.stream)
            self.ts.enqueue(*scratch, theta0, xdata, self.d_idx, self.d_draws)
            self.stream.synchronize()
            self.stream.begin_capture(cupy.cuda.runtime.streamCaptureModeRelaxed)
            self.d_draws.set(self.h_draws, self.stream)
            self.d_idx.set(self.h_idx, self.stream)
            self.ts.enqueue(*bufs, self.d_idx, self.d_draws)
            self.graph = self.stream.end_capture()
        self.graph.upload(self.stream)

    def step(self, draws_host, idx_host):
        self.h_draws[...] = draws_host
        self.h_idx[...] = idx_host
        self.graph.launch(self.stream)
        return float(self.ts.acc.get(stream=self.stream)[0]) / (self.ts.B * self.ts.prob.net.dim_theta)


def _fused_variant():
    def train_step(params, m, v, ema, theta0, xdata, idx, draws, prob):
        key = ("fused_step", SIM_ACTIVE, idx.shape[0])
        if key not in prob.cache:
            prob.cache[key] = FusedTrainStep(prob, idx.shape[0])
        return prob.cache[key](params, m, v, ema, theta0, xdata, idx, draws)
    return SimpleNamespace(train_step=train_step)


def _graph_variant():
    def train_step(params, m, v, ema, theta0, xdata, idx, draws, prob):
        g = GraphTrainStep(prob, params, m, v, ema, theta0, xdata, idx.shape[0], draws.shape[0])
        import cupy
        return g.step(cupy.asnumpy(draws), cupy.asnumpy(idx))
    return SimpleNamespace(train_step=train_step)


def _variants():
    out = {"numpy": Variant(REFERENCE, note="package step, numpy backend"),
           "prod": Variant(_package("numba"), note="package step, numba backend")}
    if gpu_available():
        out["prod_cuda"] = Variant(_package("cuda"), xp="cupy", note="package step, cuda backend")
    if SIM_ACTIVE or gpu_available():
        out["cuda_v1_fused"] = Variant(_fused_variant(), xp="numpy" if SIM_ACTIVE else "cupy",
                                       note="3 fused launches")
    if gpu_available():
        out["cuda_v2_graph"] = Variant(_graph_variant(), xp="cupy", note="the fused step in one CUDA graph")
    return out


VARIANTS = _variants()


def main(argv=None):
    run_lab(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
