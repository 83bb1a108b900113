"""TSNPSE's truncation: cost and accuracy of the log-density estimators, side by side.

Trains NPSE (VE) on a task's prior simulations, then, at the task's observation:

1. times 20,000 posterior samples (the HPR samples, adaptive RK45 at rtol 1e-4);
2. for each log-density estimator: seconds for the 20,000 log-densities, the error against RK45
   at rtol = atol = 1e-6 (on 2,000 of the samples; a constant offset cancels in the quantile, so
   the sd matters), the threshold kappa (eps-quantile of its own values), and the share of box
   candidates (the truncation's, 5,000) that land on the other side of the region's boundary
   than with RK4 at 40 steps (the most accurate setting here);
3. the whole truncation of a round (TruncatedPrior: samples, log-densities, kappa; then 1,000
   accepted draws), one change at a time: the old default (RK45 at 1e-3, 4,096-row chunks), RK4
   with 10 steps, 1,024-row chunks, the half-step screen (kappa and clear candidates: the new default).

    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_truncation.py --task slcp
"""
import argparse
import time

import numpy as np

import snpse_np as sn
from snpse_np.bench import machine_name
from snpse_np.tasks import get_task
from snpse_np.truncation import TruncatedPrior

ESTIMATORS = [("rk45 1e-3 (old default)", dict(rtol=1e-3, atol=1e-3)),
              ("rk45 1e-2", dict(rtol=1e-2, atol=1e-2)),
              ("rk4 5", dict(method="rk4", steps=5)),
              ("rk4 10 (default)", dict(method="rk4", steps=10)),
              ("rk4 20", dict(method="rk4", steps=20)),
              ("heun 20", dict(method="heun", steps=20)),
              ("rk4 40 (reference)", dict(method="rk4", steps=40))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="slcp")
    ap.add_argument("--obs", type=int, default=1)
    ap.add_argument("--simulations", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--candidates", type=int, default=5000)
    ap.add_argument("--backend", default="numba")
    args = ap.parse_args()
    eps = 5e-4
    task = get_task(args.task)
    prior, x_o = task.prior, task.observation(args.obs)
    theta = prior.sample(args.simulations, seed=1)
    x = task.simulate(theta, seed=2)
    t0 = time.perf_counter()
    post = sn.NPSE(prior, sde="ve", backend=args.backend, seed=0, show_progress=False) \
        .append_simulations(theta, x).train(max_epochs=args.epochs).set_default_x(x_o)
    print(f"# {args.task} obs {args.obs}: NPSE-VE on {args.simulations} prior simulations, {args.epochs} epochs "
          f"in {time.perf_counter() - t0:.1f}s; backend {args.backend}; {machine_name()}")

    t0 = time.perf_counter()
    samples = post.sample(args.samples, seed=1, reject_outside_prior=True)
    t_sample = time.perf_counter() - t0
    print(f"{args.samples} HPR samples (RK45 1e-4): {t_sample:.1f}s")
    span = samples.max(0) - samples.min(0)
    low = np.maximum(samples.min(0) - 0.05 * span, prior.low)
    high = np.minimum(samples.max(0) + 0.05 * span, prior.high)
    cand, _ = prior.sample_in_box(args.candidates, low, high, seed=3)
    exact = post.log_prob(samples[:2000], rtol=1e-6, atol=1e-6)

    rows = []
    for name, kw in ESTIMATORS:
        t0 = time.perf_counter()
        logq = post.log_prob(samples, **kw)
        seconds = time.perf_counter() - t0
        kappa = np.quantile(logq, eps)
        inside = post.log_prob(cand, **kw) > kappa
        err = logq[:2000] - exact
        rows.append((name, seconds, err, kappa, inside))
    ref_inside = rows[-1][4]
    print(f"| estimator | {args.samples} log-densities s | error mean | error sd | error max | kappa | "
          f"candidates inside | side changed vs rk4 40 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, seconds, err, kappa, inside in rows:
        print(f"| {name} | {seconds:.1f} | {err.mean():+.3f} | {err.std():.3f} | {np.abs(err).max():.3f} | "
              f"{kappa:.2f} | {inside.mean():.3f} | {np.mean(inside != ref_inside):.4f} |")

    print("whole truncation of a round (HPR + 1,000 accepted draws), one change at a time:")
    rk4 = dict(method="rk4", steps=10)
    for name, kw, screen in [("rk45 1e-3, 4096 rows (old default)", dict(rtol=1e-3, atol=1e-3, batch_size=4096), False),
                             ("rk4 10, 4096 rows", dict(rk4, batch_size=4096), False),
                             ("rk4 10, 1024 rows", rk4, False),
                             ("rk4 10, 1024 rows, screen (default)", rk4, True)]:
        t0 = time.perf_counter()
        tp = TruncatedPrior(prior, post, x_o, epsilon=eps, num_samples=args.samples, seed=4, log_prob_kwargs=kw,
                            screen=screen)
        tp.sample(1000, seed=5)
        print(f"  {name}: {time.perf_counter() - t0:.1f}s (HPR {tp.setup_seconds:.1f}s with "
              f"{tp.hpr_full_evaluations} full log-densities, rejection {tp.seconds:.1f}s with {tp.screened_candidates} "
              f"candidates decided by the screen, kappa {tp.threshold:.3f}, "
              f"acceptance {tp.acceptance:.3g})")


if __name__ == "__main__":
    main()
