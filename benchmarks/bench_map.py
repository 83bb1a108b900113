"""MAP on the linear-Gaussian task of sbi's test (tests/linearGaussian_vector_field_test.py):
theta in R^2, prior N(0, I), x ~ N(theta - 1, 0.3 I) (sbi: likelihood_shift -1), 3,000
simulations, 100 epochs, x_o = 0. The posterior is Gaussian, so its mode is its mean
m = v (x_o + 1) / 0.3 with v = 1 / (1 + 1/0.3). sbi accepts ||map - m||^2 < 0.5; the target here
is < 0.01, in under a second for one observation on one core. Also printed: the variants
``noise=0`` (the ascent at t_min only) and ``polish_rounds=3`` (Newton steps on the ODE
log-density), and the squared error of the posterior's sample mean (the mode, for this Gaussian
posterior): how good the model itself is.

    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_map.py --sde ve vp --seeds 0 1 2
"""
import argparse
import os
import time

import numpy as np

import snpse_np as sn

NOISE, SHIFT, D = 0.3, -1.0, 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sde", nargs="+", default=["ve", "vp"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--num-simulations", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=100, help="0: the default training budget")
    ap.add_argument("--workdir", default="runs/bench_map", help="trained posteriors are cached here")
    ap.add_argument("--repeats", type=int, default=5, help="MAP calls timed per posterior")
    args = ap.parse_args()
    x_o = np.zeros(D)
    var = 1.0 / (1.0 + 1.0 / NOISE)
    mode = var * (x_o - SHIFT) / NOISE
    prior = sn.MultivariateNormal(np.zeros(D), np.eye(D))
    print(f"true mode {mode}")
    for sde in args.sde:
        for seed in args.seeds:
            path = os.path.join(args.workdir, f"map_{sde}_{seed}_{args.num_simulations}_{args.epochs}.npz")
            if os.path.exists(path):
                post, t_train = sn.load(path), float("nan")
            else:
                theta = prior.sample(args.num_simulations, seed=seed)
                rng = np.random.default_rng(seed + 100)
                x = theta + SHIFT + np.sqrt(NOISE) * rng.standard_normal(theta.shape)
                t0 = time.perf_counter()
                post = sn.NPSE(prior, sde=sde, seed=seed, show_progress=False).append_simulations(theta, x).train(
                    max_epochs=args.epochs or None)
                t_train = time.perf_counter() - t0
                os.makedirs(args.workdir, exist_ok=True)
                post.save(path)
            post.map(x=x_o, seed=0)  # compile/warm
            times, cpu, errs = [], [], []
            for r in range(args.repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                m = post.map(x=x_o, seed=r)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                errs.append(float(np.sum((m - mode) ** 2)))
            mean_err = float(np.sum((post.sample(20_000, x=x_o, seed=1).mean(0) - mode) ** 2))
            at_t_min = float(np.sum((post.map(x=x_o, seed=0, noise=0.0) - mode) ** 2))
            polished = float(np.sum((post.map(x=x_o, seed=0, polish_rounds=3) - mode) ** 2))
            print(f"sde {sde} seed {seed}: train {t_train:.0f}s; MAP sq. error {np.mean(errs):.2e} "
                  f"(max {np.max(errs):.2e}); wall {np.median(times):.3f}s median (max {np.max(times):.3f}s), "
                  f"CPU {np.median(cpu):.3f}s; "
                  f"variants: ascent at t_min only {at_t_min:.2e}, with the log-density polish {polished:.2e}; "
                  f"sample-mean sq. error {mean_err:.2e}", flush=True)


if __name__ == "__main__":
    main()
