"""I.i.d. trials on sbi's test problem (tests/linearGaussian_vector_field_test.py, iid tests):
theta in R^2, x ~ N(theta - 1, 0.9 I), 12,000 simulations, prior N(0, I) or U(-2, 2)^2, VE and VP.

Prints, per (sde, prior, iid_method, trials):
- C2ST of 1,000 posterior draws at x_o = 0 (m rows) against the analytic posterior
  (sbi accepts 0.5 + 0.07 max(m, 2); the targets here: <= 0.60 at 5 trials, <= 0.65 at 20);
- for the Gaussian prior, the i.i.d. log_prob at 1,000 draws of the analytic posterior, x_j
  simulated at theta_o = 0 (sbi's test): mean absolute error per trial against (a) the same
  UNNORMALISED quantity sum_j log p(theta | x_j) - (m - 1) log p(theta) computed analytically
  (the method's own error: target < 0.1 per trial), (b) the normalised analytic log posterior
  (sbi's comparison, < 0.3 per trial; it includes the constant log p(x_1..m) - sum_j log p(x_j)),
  (c) (b) after removing the mean offset (the shape error);
- seconds per call.

The analytic posterior with m trials: Gaussian prior N(0, I): N(mu, v I), v = 1 / (1 + m / 0.9),
mu = v sum_j (x_j + 1) / 0.9; uniform prior: N(mean_j x_j + 1, 0.9 / m I) truncated to the box.

Trained posteriors are cached in --workdir (retrained with --retrain). Training uses the public
NPSE(...).append_simulations(...).train() with its default schedule.

    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_iid.py --sde ve vp --prior gaussian uniform
"""
import argparse
import os
import time

import numpy as np

import snpse_np as sn
from snpse_np.metrics import c2st

NOISE, SHIFT, D = 0.9, -1.0, 2


def simulate(theta, rng):
    return theta + SHIFT + np.sqrt(NOISE) * rng.standard_normal(theta.shape)


def make_prior(kind):
    if kind == "gaussian":
        return sn.MultivariateNormal(np.zeros(D), np.eye(D))
    return sn.BoxUniform(-2 * np.ones(D), 2 * np.ones(D))


def reference(kind, x, n, rng):
    m = x.shape[0]
    if kind == "gaussian":
        v = 1.0 / (1.0 + m / NOISE)
        mu = v * np.sum(x - SHIFT, axis=0) / NOISE
        return mu + np.sqrt(v) * rng.standard_normal((n, D))
    mu, sd = np.mean(x - SHIFT, axis=0), np.sqrt(NOISE / m)
    out = np.empty((0, D))
    while out.shape[0] < n:
        c = mu + sd * rng.standard_normal((4 * n, D))
        out = np.concatenate([out, c[np.all(np.abs(c) <= 2, axis=1)]])
    return out[:n]


def gaussian_log_post(theta, x):
    """Normalised analytic log posterior, Gaussian prior N(0, I), m trials x (m, D)."""
    m = x.shape[0]
    v = 1.0 / (1.0 + m / NOISE)
    mu = v * np.sum(x - SHIFT, axis=0) / NOISE
    return -0.5 * np.sum((theta - mu) ** 2, axis=1) / v - 0.5 * D * np.log(2 * np.pi * v)


def trained(workdir, sde, kind, n_sims, retrain, baseline=None):
    tag = "" if baseline is None else f"_{baseline}"
    path = os.path.join(workdir, f"iid_{sde}_{kind}_{n_sims}{tag}.npz")
    if os.path.exists(path) and not retrain:
        return sn.load(path), None
    prior = make_prior(kind)
    theta = prior.sample(n_sims, seed=0)
    x = simulate(theta, np.random.default_rng(1))
    t0 = time.perf_counter()
    inference = sn.NPSE(prior, sde=sde, seed=0, show_progress=False, baseline=baseline)
    post = inference.append_simulations(theta, x).train()
    seconds = time.perf_counter() - t0
    if baseline == "auto":
        losses = inference.summary["baseline_val_losses"]
        print(f"baseline auto: validation loss {losses[None]:.5f} without, {losses['gaussian']:.5f} with; "
              f"kept {inference.summary['baseline']}", flush=True)
    os.makedirs(workdir, exist_ok=True)
    post.save(path)
    return post, seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sde", nargs="+", default=["ve", "vp"])
    ap.add_argument("--prior", nargs="+", default=["gaussian", "uniform"])
    ap.add_argument("--methods", nargs="+", default=["auto_gauss", "gauss", "jac_gauss", "fnpe", "fnpe_marginal"])
    ap.add_argument("--trials", nargs="+", type=int, default=[5, 20])
    ap.add_argument("--logprob-trials", nargs="*", type=int, default=[1, 2, 5])
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--num-simulations", type=int, default=12_000)
    ap.add_argument("--pc-steps", type=int, default=250)
    ap.add_argument("--corrector-steps", type=int, default=2)
    ap.add_argument("--workdir", default="runs/bench_iid")
    ap.add_argument("--retrain", action="store_true")
    ap.add_argument("--c2st", default="sklearn", choices=["sklearn", "fast"])
    ap.add_argument("--baseline", default=None, choices=["gaussian", "auto"], help="NPSE's Gaussian baseline")
    args = ap.parse_args()
    for sde in args.sde:
        for kind in args.prior:
            post, secs = trained(args.workdir, sde, kind, args.num_simulations, args.retrain, args.baseline)
            print(f"== {sde} {kind}: " + (f"trained in {secs:.0f}s" if secs else "cached"), flush=True)
            for m in args.trials:
                x_o = np.zeros((m, D))
                ref = reference(kind, x_o, args.num_samples, np.random.default_rng(7))
                for method in args.methods:
                    kw = dict(sampler="pc", steps=args.pc_steps, corrector_steps=args.corrector_steps) \
                        if method.startswith("fnpe") else {}
                    t0 = time.perf_counter()
                    s = post.sample(args.num_samples, x=x_o, iid_method=method, seed=3,
                                    reject_outside_prior=kind == "uniform", **kw)
                    dt = time.perf_counter() - t0
                    score = c2st(ref, s, classifier=args.c2st)
                    print(f"{sde} {kind} {method:13s} trials {m:3d}: C2ST {score:.3f}  mean {s.mean(0).round(3)} "
                          f"(ref {ref.mean(0).round(3)})  std {s.std(0).round(3)} (ref {ref.std(0).round(3)})  "
                          f"{dt:.1f}s", flush=True)
            if kind != "gaussian":
                continue
            for m in args.logprob_trials:
                rng = np.random.default_rng(11 + m)
                x = simulate(np.zeros((m, D)), rng)
                theta = reference(kind, x, args.num_samples, rng)
                t0 = time.perf_counter()
                lp = post.log_prob(theta, x=x if m > 1 else x[0])
                dt = time.perf_counter() - t0
                prior = make_prior(kind)
                unnorm = sum(gaussian_log_post(theta, x[j:j + 1]) for j in range(m)) - (m - 1) * prior.log_prob(theta)
                norm = gaussian_log_post(theta, x)
                a = np.mean(np.abs(lp - unnorm)) / m
                b = np.mean(np.abs(lp - norm)) / m
                c = np.mean(np.abs(lp - norm - np.mean(lp - norm))) / m
                print(f"{sde} {kind} log_prob trials {m}: MAE per trial (a) unnormalised {a:.3f}  "
                      f"(b) normalised {b:.3f}  (c) shape {c:.3f}  {dt:.1f}s", flush=True)


if __name__ == "__main__":
    main()
