"""Throughput of ``sample_batched`` (m observations x n draws, one per-row x part each) against
single-observation ``sample`` at the same network batch size, per sample.

Issue 14's target: within 20% per sample at m = 1,000, n = 1,000. The posterior is a two_moons
NPSE (trained here in --epochs, or loaded with --posterior); timing only, accuracy is irrelevant.
Both run the default sampler (the "edm" probability-flow ODE) with batch_size rows per network
call. On the shared, loaded development machine wall times swing by 2x between minutes, so the
ratio is measured on interleaved blocks of one network batch each way (CPU time, median of
--blocks); then --repeats full runs (m x n batched, --single draws at one x) report both clocks.

    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_batched.py --m 1000 --n 1000
"""
import argparse
import time

import numpy as np

import snpse_np as sn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--posterior", default=None)
    ap.add_argument("--m", type=int, default=1000)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--single", type=int, default=100_000, help="draws of the single-observation run")
    ap.add_argument("--batch-size", type=int, default=10_000)
    ap.add_argument("--backend", default=None)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=1, help="full runs (m x n, and --single draws)")
    ap.add_argument("--blocks", type=int, default=20, help="interleaved one-batch blocks")
    args = ap.parse_args()
    task = sn.get_task("two_moons")
    if args.posterior:
        post = sn.load(args.posterior, backend=args.backend)
    else:
        theta = task.prior.sample(2000, seed=0)
        x = sn.simulate(task.simulate, theta, seed=1, progress=False)
        post = sn.NPSE(task.prior, seed=0, backend=args.backend, show_progress=False).append_simulations(
            theta, x).train(max_epochs=args.epochs)
    X = sn.simulate(task.simulate, task.prior.sample(args.m, seed=2), seed=3, progress=False)
    post.sample(2000, x=X[0], seed=0)  # warm (compilation, caches)
    post.sample_batched(2, X[:4], seed=0)
    print(f"backend {post.backend.name}; batch {args.batch_size} rows; m {args.m} x n {args.n}; single {args.single}")
    # interleaved blocks of one network batch each (single: batch_size draws at X[0]; batched:
    # batch_size / n observations x n draws), CPU time per sample: robust to the machine's load
    k = max(1, args.batch_size // args.n)
    ratios = []
    for r in range(args.blocks):
        c0 = time.process_time()
        post.sample(args.batch_size, x=X[r % args.m], seed=r, batch_size=args.batch_size)
        c1 = time.process_time()
        post.sample_batched(args.n, X[(r * k) % args.m:(r * k) % args.m + k], seed=r, batch_size=args.batch_size)
        c2 = time.process_time()
        ratios.append(((c2 - c1) / (k * args.n)) / ((c1 - c0) / args.batch_size))
    print(f"interleaved blocks ({args.blocks} x {args.batch_size} rows each way): CPU time ratio batched/single "
          f"median {np.median(ratios):.3f} (quartiles {np.percentile(ratios, 25):.3f}, {np.percentile(ratios, 75):.3f})",
          flush=True)
    for r in range(args.repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        post.sample(args.single, x=X[0], seed=r, batch_size=args.batch_size)
        c_single, t_single = (time.process_time() - c0) / args.single, (time.perf_counter() - t0) / args.single
        c0, t0 = time.process_time(), time.perf_counter()
        s = post.sample_batched(args.n, X, seed=r, batch_size=args.batch_size)
        c_b, t_b = (time.process_time() - c0) / (args.m * args.n), (time.perf_counter() - t0) / (args.m * args.n)
        assert s.shape == (args.m, args.n, 2)
        print(f"repeat {r}: single {c_single * 1e6:.1f} us/sample CPU ({t_single * 1e6:.1f} wall), batched "
              f"{c_b * 1e6:.1f} us/sample CPU ({t_b * 1e6:.1f} wall); CPU ratio {c_b / c_single:.3f}", flush=True)

if __name__ == "__main__":
    main()
