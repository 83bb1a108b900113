"""Do more BLAS/Numba threads pay for the package's own work? Training steps and sampling, 1..N threads.

Times, side by side in one process (``threads.limit_threads``), on two_moons-sized data (d = 2,
p = 2) and slcp-sized data (d = 5, p = 8), the paper's 256-wide network:
- 400 training steps at batch 128 (``NPSE.train(max_steps=400)``, validation included);
- 10,000 posterior samples with the default sampler.
The package's default is one thread (``snpse_np.threads``); this is the measurement behind it.
Run it on a quiet machine (the load is printed): on a busy one, extra threads only lose.

    python benchmarks/bench_threads.py --threads 1,2
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import snpse_np as sn  # noqa: E402
from snpse_np.bench import machine_name  # noqa: E402


def case(d, p, threads, repeats):
    rng = np.random.default_rng(0)
    theta = rng.uniform(-1, 1, (10_000, d))
    x = theta @ rng.standard_normal((d, p)) + 0.1 * rng.standard_normal((10_000, p))
    prior = sn.BoxUniform(-np.ones(d), np.ones(d))
    out = {}
    for n in threads:
        best_train, best_sample = np.inf, np.inf
        for _ in range(repeats):
            inf = sn.NPSE(prior, seed=0, show_progress=False, threads=n)
            t0 = time.perf_counter()
            post = inf.append_simulations(theta, x).train(max_steps=400)
            best_train = min(best_train, time.perf_counter() - t0)
            t0 = time.perf_counter()
            post.sample(10_000, x=x[0], seed=1)
            best_sample = min(best_sample, time.perf_counter() - t0)
        out[n] = (best_train, best_sample)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    print(f"machine: {machine_name()}; load {os.getloadavg()[0]:.2f}")
    case(2, 2, threads[:1], 1)  # compile once before timing
    for d, p in ((2, 2), (5, 8)):
        res = case(d, p, threads, args.repeats)
        base = res[threads[0]]
        for n, (tr, sa) in res.items():
            print(f"d={d} p={p} threads {n}: 400 training steps {tr:6.2f}s ({base[0] / tr:4.2f}x), "
                  f"10k samples {sa:6.2f}s ({base[1] / sa:4.2f}x)")
    print(f"load at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
