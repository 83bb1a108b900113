"""How fast is snpse_np against plain PyTorch? Same network, loss, optimiser and sampler, one run.

Times, on the same machine and data:
- the training step of NPSE (draw a minibatch, times and noise; perturb; forward; DSM loss;
  backward; Adam), with the paper's network for d = 5, p = 8, at several batch sizes;
- one reverse-SDE Euler-Maruyama step for 10,000 samples (x-embedding computed once), timed
  over a few steps and extrapolated to 1,000 steps (on the GPU: all 1,000 steps).

Implementations: snpse_np on the "numpy" and "numba" backends (and "cuda" with --device cuda),
and plain PyTorch (when installed; never a dependency of snpse_np) on the same device.

    python examples/compare_torch.py                      # CPU, 1 thread each
    python examples/compare_torch.py --threads 2
    python examples/compare_torch.py --device cuda --batches 256 --em-steps 1000

Targets (docs/performance.md): numba >= 1.5x numpy and >= 1.5x PyTorch CPU for training at
batch 200-500; Euler-Maruyama for 10,000 samples >= 1.5x PyTorch CPU.
"""
import argparse
import math
import os
import sys
import time


def _early_threads(argv):
    # BLAS reads its thread count when numpy loads: set it before the imports below.
    n = "1"
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            n = argv[i + 1]
        elif a.startswith("--threads="):
            n = a.split("=", 1)[1]
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, n)
    return int(n)


if __name__ == "__main__":
    _early_threads(sys.argv)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from snpse_np.backend import get_backend  # noqa: E402
from snpse_np.nn import ScoreNetwork  # noqa: E402
from snpse_np.npse import TrainStep  # noqa: E402
from snpse_np.optim import Adam  # noqa: E402
from snpse_np.sampling import euler_maruyama  # noqa: E402
from snpse_np.score import ScoreField  # noqa: E402
from snpse_np.score import ScoreModel  # noqa: E402
from snpse_np.sde import make_sde  # noqa: E402

DIM_THETA, DIM_X, N_TRAIN, SIGMA_MAX = 5, 8, 10_000, 10.0


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N_TRAIN, DIM_THETA)), rng.standard_normal((N_TRAIN, DIM_X))


# ----------------------------------------------------------------------------- snpse_np

def package_train_step(backend, batch, seed=0, dtype=np.float32):
    """A closure running one training step: the package's own ``npse.TrainStep`` (the unit
    NPSE.train runs), fed a device-shuffled epoch as the trainer does."""
    be = get_backend(backend)
    xp = be.xp
    net = ScoreNetwork.paper(DIM_THETA, DIM_X)
    model = ScoreModel(net, make_sde("ve", sigma_max=SIGMA_MAX))
    rng = np.random.default_rng(seed)
    opt = Adam(be, be.to_device(net.init(rng, dtype)), 5e-4)
    train_step = TrainStep(model, be, opt, batch, dtype)
    th, xs = _data(seed)
    th_tr, x_tr = be.to_device(th.astype(dtype)), be.to_device(xs.astype(dtype))
    state = {"pos": N_TRAIN}

    def step():
        if state["pos"] + batch > N_TRAIN:  # a new epoch: shuffle on the device, then slice
            order = be.to_device(rng.permutation(N_TRAIN))
            state["th"], state["x"], state["pos"] = xp.take(th_tr, order, axis=0), xp.take(x_tr, order, axis=0), 0
        sl = slice(state["pos"], state["pos"] + batch)
        state["pos"] += batch
        return train_step(state["th"][sl], state["x"][sl], rng.uniform(model.sde.t_min, 1.0, batch),
                          rng.standard_normal((batch, DIM_THETA)))

    return step, be.synchronize


def package_sampler(backend, n, seed=0, dtype=np.float32):
    """A function running k Euler-Maruyama steps on n samples (snpse_np.sampling's loop)."""
    be = get_backend(backend)
    net = ScoreNetwork.paper(DIM_THETA, DIM_X)
    model = ScoreModel(net, make_sde("ve", sigma_max=SIGMA_MAX))
    params = be.to_device(net.init(seed, dtype))
    xc = net.condition(be, params, be.to_device(np.zeros((1, DIM_X), dtype)))
    field = ScoreField(model, be, params, xc, n, dtype)
    rng = np.random.default_rng(seed)
    theta = be.to_device(model.sde.prior_sample(n, DIM_THETA, rng).astype(dtype))

    def run(steps):
        euler_maruyama(field, theta, steps, rng)

    return run, be.synchronize


# ----------------------------------------------------------------------------- PyTorch

def torch_available():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def _torch_net(torch, device):
    nn = torch.nn

    def mlp(sizes):
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.SiLU())
        return nn.Sequential(*layers)

    class Net(nn.Module):
        # The paper's network as snpse_np.nn.ScoreNetwork: theta-MLP, x-MLP, 64 sinusoidal
        # time channels (sines then cosines), concatenated into the head.
        def __init__(self):
            super().__init__()
            h = 256
            self.theta = mlp([DIM_THETA, h, h, max(30, 4 * DIM_THETA)])
            self.x = mlp([DIM_X, h, h, max(30, 4 * DIM_X)])
            self.head = mlp([max(30, 4 * DIM_THETA) + max(30, 4 * DIM_X) + 64, h, h, DIM_THETA])
            half = 32
            self.register_buffer("freq", 10000.0 ** (-torch.arange(half, dtype=torch.float64) / (half - 1)))

        def temb(self, tau):
            a = tau.double()[:, None] * self.freq[None, :]
            return torch.cat([torch.sin(a), torch.cos(a)], dim=1).float()

        def forward(self, theta_in, tau, x=None, x_emb=None):
            xe = self.x(x) if x_emb is None else x_emb.expand(theta_in.shape[0], -1)
            return self.head(torch.cat([self.theta(theta_in), xe, self.temb(tau)], dim=1))

    return Net().to(device)


def _ve(torch, t, t_min=1e-4, sigma_min=0.01, sigma_max=SIGMA_MAX):
    """VE SDE with noise preconditioning (snpse_np's defaults): sigma, c_in, c = sigma/c_out = 1."""
    sigma = sigma_min * (sigma_max / sigma_min) ** t
    return sigma, 1.0 / torch.sqrt(1.0 + sigma * sigma)


def torch_train_step(device, batch, seed=0):
    import torch
    torch.manual_seed(seed)
    net = _torch_net(torch, device)
    opt = torch.optim.Adam(net.parameters(), lr=5e-4)
    th, xs = _data(seed)
    th_tr = torch.tensor(th, dtype=torch.float32, device=device)
    x_tr = torch.tensor(xs, dtype=torch.float32, device=device)
    state = {"order": torch.randperm(N_TRAIN, device=device), "pos": 0}

    def step():
        if state["pos"] + batch > N_TRAIN:
            state["order"], state["pos"] = torch.randperm(N_TRAIN, device=device), 0
        idx = state["order"][state["pos"]:state["pos"] + batch]
        state["pos"] += batch
        th0, xb = th_tr[idx], x_tr[idx]
        t = torch.rand(batch, device=device) * (1.0 - 1e-4) + 1e-4
        z = torch.randn(batch, DIM_THETA, device=device)
        sigma, c_in = _ve(torch, t)
        theta_in = c_in[:, None] * (th0 + sigma[:, None] * z)
        out = net(theta_in, sigma, x=xb)
        loss = ((out + z) ** 2).mean()  # c = sigma / c_out = 1 with noise preconditioning
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()  # as NPSE.train, which checks every loss on the host

    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    return step, sync


def torch_sampler(device, n, seed=0):
    import torch
    torch.manual_seed(seed)
    net = _torch_net(torch, device).eval()
    with torch.no_grad():
        x_emb = net.x(torch.zeros(1, DIM_X, device=device))
    theta = SIGMA_MAX * torch.randn(n, DIM_THETA, device=device)
    log_ratio = math.log(SIGMA_MAX / 0.01)

    def run(steps):
        nonlocal theta
        grid = np.linspace(1.0, 1e-4, steps + 1)
        with torch.inference_mode():
            for i in range(steps):
                t, h = grid[i], grid[i] - grid[i + 1]
                sigma = 0.01 * (SIGMA_MAX / 0.01) ** t
                g2 = sigma * sigma * 2.0 * log_ratio
                c_in = 1.0 / math.sqrt(1.0 + sigma * sigma)
                tau = torch.full((n,), sigma, device=device)
                s = net(theta * c_in, tau, x_emb=x_emb) / sigma
                theta = theta + g2 * h * s + math.sqrt(g2 * h) * torch.randn_like(theta)

    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    return run, sync


# ----------------------------------------------------------------------------- timing

def timed(fn, sync, warmup=3, repeats=20):
    """(median seconds, first-call seconds) of fn(); sync inside the timed region."""
    return interleaved({"f": (fn, sync)}, warmup, repeats)["f"]


def interleaved(fns, warmup=3, repeats=20):
    """{name: (median seconds, first-call seconds)} for {name: (fn, sync)}, timing the
    implementations in turn within each repeat, so that a change in the machine's load (shared
    machines) hits all of them alike and the ratios stay fair."""
    first, times = {}, {k: [] for k in fns}
    for k, (fn, sync) in fns.items():
        t0 = time.perf_counter()
        fn()
        sync()
        first[k] = time.perf_counter() - t0
        for _ in range(warmup):
            fn()
        sync()
    for _ in range(repeats):
        for k, (fn, sync) in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    return {k: (float(np.median(v)), first[k]) for k, v in times.items()}


def compare(device="cpu", batches=(50, 200, 500), n_samples=10_000, em_steps=5, repeats=20, backends=None,
            threads=1, with_torch=True, log=print):
    """Run the comparison; returns (train rows, sampling rows) as lists of dicts (seconds)."""
    backends = list(backends or (["numpy", "numba"] if device == "cpu" else ["cuda"]))
    use_torch = with_torch and torch_available()
    if use_torch:
        import torch
        torch.set_num_threads(threads)
    impls = backends + (["torch"] if use_torch else [])
    train_rows = []
    for batch in batches:
        fns = {b: (torch_train_step(device, batch) if b == "torch" else package_train_step(b, batch)) for b in impls}
        res = interleaved(fns, repeats=repeats)
        row = {"batch": batch, **{b: res[b][0] for b in impls}}
        train_rows.append(row)
        log(_fmt_train(row, backends, use_torch))
    runs = {b: (torch_sampler(device, n_samples) if b == "torch" else package_sampler(b, n_samples)) for b in impls}
    # EM: each timed call runs em_steps steps (a few on the CPU: seconds each), in turn.
    fns = {b: ((lambda run=run: run(em_steps)), sync) for b, (run, sync) in runs.items()}
    res = interleaved(fns, warmup=0, repeats=max(2, repeats // 10))
    samp_rows = []
    for b in impls:
        sec = res[b][0]
        samp_rows.append({"impl": b, "steps_timed": em_steps, "s_per_step": sec / em_steps,
                          "s_per_1000_steps": sec / em_steps * 1000})
        log(f"Euler-Maruyama, {n_samples} samples: {b:6s} {1e3 * sec / em_steps:8.2f} ms/step -> "
            f"{sec / em_steps * 1000:7.2f} s per 1,000 steps" + ("" if em_steps >= 1000 else
                                                                 f" (extrapolated from {em_steps} steps)"))
    return train_rows, samp_rows


def _fmt_train(row, backends, use_torch):
    parts = [f"batch {row['batch']:4d}:"]
    for b in backends + (["torch"] if use_torch else []):
        parts.append(f"{b} {1e3 * row[b]:7.2f} ms")
    if "numba" in row:
        parts.append(f"| numba vs numpy {row['numpy'] / row['numba']:.2f}x" if "numpy" in row else "")
        if use_torch:
            parts.append(f"numba vs torch {row['torch'] / row['numba']:.2f}x")
    if "cuda" in row and use_torch:
        parts.append(f"| cuda vs torch {row['torch'] / row['cuda']:.2f}x")
    return "  ".join(p for p in parts if p)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--batches", type=int, nargs="+", default=[50, 200, 500])
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--em-steps", type=int, default=None, help="EM steps timed (default 5 on CPU, 1000 on GPU)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="BLAS / torch / numba threads (default 1)")
    ap.add_argument("--backends", nargs="+", default=None)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--tf32", action="store_true",
                    help="GPU matmuls in TF32 on both sides (CUPY_TF32=1, torch allow_tf32); default float32")
    args = ap.parse_args(argv)
    if args.tf32:
        os.environ["CUPY_TF32"] = "1"  # read when CuPy loads (imported lazily by the cuda backend)
        if torch_available():
            import torch
            torch.backends.cuda.matmul.allow_tf32 = True
    em_steps = args.em_steps or (5 if args.device == "cpu" else 1000)
    print(f"device: {describe(args.device)}; threads: {args.threads}; torch: "
          f"{_torch_version() if not args.no_torch else 'off'}; matmuls: {'TF32' if args.tf32 else 'float32'}")
    train, samp = compare(args.device, args.batches, args.samples, em_steps, args.repeats, args.backends,
                          args.threads, not args.no_torch)
    by = {r["impl"]: r["s_per_step"] for r in samp}
    if "numba" in by and "torch" in by:
        print(f"Euler-Maruyama: numba vs torch {by['torch'] / by['numba']:.2f}x")
    if "cuda" in by and "torch" in by:
        print(f"Euler-Maruyama: cuda vs torch {by['torch'] / by['cuda']:.2f}x")


def _torch_version():
    if not torch_available():
        return "not installed"
    import torch
    return torch.__version__


def describe(device="cpu"):
    """The CPU model and core count, plus the GPU when device is cuda."""
    name = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    out = f"{name}, {os.cpu_count()} cores"
    if device == "cuda":
        try:
            import cupy
            props = cupy.cuda.runtime.getDeviceProperties(0)
            gpu = props["name"]
            out += f"; GPU {gpu.decode() if isinstance(gpu, bytes) else gpu}"
        except Exception:
            out += "; GPU (name unavailable)"
    return out


if __name__ == "__main__":
    main()
