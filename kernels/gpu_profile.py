"""Where the time of one cuda training step and one Euler-Maruyama step goes (GPU only).

Each phase is timed on its own with a device synchronisation before and after (median of
``--repeats``), so the numbers are host-visible latencies: launch overhead plus device time.
Their sum exceeds the pipelined step (``examples/compare_torch.py``), whose launches overlap
with device work. Also counts the kernel launches of one step (CuPy's profiler hooks are not
used: the count is of op calls, read off the code path).

    PYTHONPATH=. python kernels/gpu_profile.py [--batch 256] [--samples 10000]
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from snpse_np.backends._cuda_kernels import ensure_row_stack  # noqa: E402

ensure_row_stack()

from snpse_np.backend import get_backend  # noqa: E402
from snpse_np.nn import ScoreNetwork  # noqa: E402
from snpse_np.npse import StepDraws  # noqa: E402
from snpse_np.optim import Adam  # noqa: E402
from snpse_np.sampling import ScoreField  # noqa: E402
from snpse_np.score import ScoreModel  # noqa: E402
from snpse_np.sde import make_sde  # noqa: E402


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


def train_phases(be, batch, d=5, p=8, dtype=np.float32, seed=0):
    xp = be.xp
    net = ScoreNetwork.paper(d, p)
    model = ScoreModel(net, make_sde("ve", sigma_max=10.0))
    rng = np.random.default_rng(seed)
    params = be.to_device(net.init(rng, dtype))
    grads = xp.empty_like(params)
    pv, gv = net.views(params), net.views(grads)
    opt = Adam(be, params, 5e-4)
    th0 = be.to_device(rng.standard_normal((batch, d)).astype(dtype))
    xb = be.to_device(rng.standard_normal((batch, p)).astype(dtype))
    ws = net.workspace(be, batch, dtype, train=True)
    theta_in, dout = xp.empty_like(th0), xp.empty_like(th0)
    draws = StepDraws(model, batch, d, dtype)
    st = {}

    def prep():
        draws.fill(rng.uniform(1e-4, 1.0, batch), rng.standard_normal((batch, d)))

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

    def views_each_call():
        net.views(params), net.views(grads)

    return [("host prep (rng, coefficients)", prep), ("one packed H2D copy", upload),
            ("dsm_perturb", perturb), ("forward", forward),
            ("dsm_loss + loss to host", loss), ("backward", backward), ("adam + ema", adam),
            ("[not in the step] net.views x2", views_each_call)]


def em_phases(be, n, d=5, p=8, dtype=np.float32, seed=0):
    xp = be.xp
    net = ScoreNetwork.paper(d, p)
    model = ScoreModel(net, make_sde("ve", sigma_max=10.0))
    params = be.to_device(net.init(seed, dtype))
    xc = net.condition(be, params, be.to_device(np.zeros((1, p), dtype)))
    field = ScoreField(model, be, params, xc, n, dtype)
    rng = np.random.default_rng(seed)
    theta = be.to_device(rng.standard_normal((n, d)).astype(dtype))
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--backend", default="cuda")
    args = ap.parse_args(argv)
    be = get_backend(args.backend)
    for title, phases in ((f"training step, batch {args.batch}", train_phases(be, args.batch)),
                          (f"Euler-Maruyama step, {args.samples} samples", em_phases(be, args.samples))):
        res = phase_times(phases, be.synchronize, args.repeats)
        print(f"{title} ({be.name}): phase latencies, each between two syncs (median of {args.repeats})")
        for k, v in res.items():
            print(f"  {k:40s} {1e6 * v:9.1f} us")
        print(f"  {'sum of the step phases':40s} {1e6 * sum(v for k, v in res.items() if not k.startswith('[')):9.1f} us")


if __name__ == "__main__":
    main()
