"""NLSE vs NPSE (VE) on sbibm tasks: the paper's Fig. 5 comparison (Sharrock et al. 2024, App. B).

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_nlse.py \\
        --tasks two_moons,gaussian_linear_uniform,slcp,gaussian_mixture \\
        --methods npse,nlse-analytic,nlse-learned --budget 10000 --obs 1-5 --seed 0 [--resume]

Per task: ``budget`` simulations drawn and simulated ONCE with the seeds of ``snpse_np.bench``
(prior ``child_seed(seed, 1)``, simulator ``child_seed(seed, 2)``) and shared by every method;
each method trains one amortised network with seed ``seed`` and the package's default step
budget (never wall time), samples 10,000 draws at each observation (PF-ODE "edm", draws outside
the prior rejected, seed ``child_seed(seed, 3, k)``) and is scored by the fast C2ST against
sbibm's reference (``snpse_np.bench.score_samples``). Methods: ``npse`` (NPSE), ``nlse-analytic``
(NLSE with the closed-form diffused prior score), ``nlse-learned`` (NLSE with the prior score
learned by DSM on prior draws, Alg. 2). The runs go pairs first (npse and nlse-analytic on every
task), then the learned variant, so a cut-short run has the main comparison. One row per (task,
method, observation) is appended to ``--csv`` as it finishes; a table of mean C2ST and the gap
to NPSE is printed at the end.
"""
import argparse
import csv
import os
import time

import numpy as np

FIELDS = ["task", "method", "sde", "budget", "observation", "seed", "c2st", "c2st_classifier", "mean_error",
          "variance_ratio", "train_seconds", "prior_score_seconds", "steps", "sample_seconds", "load1",
          "machine", "version"]


def run(task_name, method, theta, x, observations, seed, budget, csv_path, num_samples=10_000):
    import snpse_np as sn
    from snpse_np import __version__
    from snpse_np.bench import append_csv_row, machine_name, score_samples, sde_kwargs
    from snpse_np.rng import child_seed
    from snpse_np.tasks import get_task

    task = get_task(task_name)
    kw = dict(sde="ve", seed=seed, show_progress=False, **sde_kwargs(task, "ve"))
    if method == "npse":
        inference = sn.NPSE(task.prior, **kw)
    elif method in ("nlse-analytic", "nlse-learned"):
        inference = sn.NLSE(task.prior, prior_score=method.split("-")[1], **kw)
    else:
        raise ValueError(f"unknown method {method!r}")
    posterior = inference.append_simulations(theta, x).train()
    rows = []
    for k in observations:
        t0 = time.perf_counter()
        samples = posterior.sample(num_samples, x=task.observation(k), seed=child_seed(seed, 3, k),
                                   reject_outside_prior=True)
        t_sample = time.perf_counter() - t0
        c, me, vr = score_samples(task.reference_samples(k), samples, "fast")
        row = dict(task=task_name, method=method, sde="ve", budget=budget, observation=k, seed=seed, c2st=c,
                   c2st_classifier="fast", mean_error=me, variance_ratio=vr,
                   train_seconds=inference.summary["train_seconds"],
                   prior_score_seconds=inference.summary.get("prior_score_seconds", 0.0),
                   steps=inference.summary["steps"], sample_seconds=t_sample, load1=os.getloadavg()[0],
                   machine=machine_name(), version=__version__)
        append_csv_row(csv_path, row, FIELDS)
        rows.append(row)
        print(f"  {task_name} {method} obs {k}: C2ST {c:.3f} (train {row['train_seconds']:.0f}s "
              f"+ prior {row['prior_score_seconds']:.0f}s, {row['steps']} steps, sample {t_sample:.0f}s, "
              f"load {row['load1']:.1f})", flush=True)
    return rows


def table(rows):
    out = [f"{'task':<26} {'method':<14} {'obs':>4} {'C2ST':>6} {'gap to NPSE':>12}"]
    tasks = sorted({r["task"] for r in rows})
    for t in tasks:
        means = {}
        for m in ("npse", "nlse-analytic", "nlse-learned"):
            v = [float(r["c2st"]) for r in rows if r["task"] == t and r["method"] == m]
            if v:
                means[m] = (np.mean(v), len(v))
        for m, (v, n) in means.items():
            gap = f"{v - means['npse'][0]:+12.3f}" if m != "npse" and "npse" in means else f"{'':>12}"
            out.append(f"{t:<26} {m:<14} {n:>4} {v:6.3f} {gap}")
    return "\n".join(out)


def main(argv=None):
    from snpse_np.bench import parse_obs
    from snpse_np.rng import child_seed
    from snpse_np.simulate import simulate
    from snpse_np.tasks import get_task

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="two_moons,gaussian_linear_uniform,slcp,gaussian_mixture")
    p.add_argument("--methods", default="npse,nlse-analytic,nlse-learned")
    p.add_argument("--budget", type=int, default=10_000)
    p.add_argument("--obs", default="1-5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--csv", default="results/nlse.csv")
    p.add_argument("--resume", action="store_true",
                   help="skip (task, method) pairs whose every observation is in --csv for this budget and seed")
    a = p.parse_args(argv)
    tasks, methods = a.tasks.split(","), a.methods.split(",")
    observations = parse_obs(a.obs)
    data = {}
    rows = []
    old, done = [], set()
    if a.resume and os.path.exists(a.csv):
        with open(a.csv) as fh:
            old = [r for r in csv.DictReader(fh) if int(r["budget"]) == a.budget and int(r["seed"]) == a.seed
                   and int(r["observation"]) in observations]
        done = {(r["task"], r["method"]) for r in old
                if {int(q["observation"]) for q in old if (q["task"], q["method"]) == (r["task"], r["method"])}
                >= set(observations)}
        print(f"resuming: {sorted(done)} done", flush=True)
    groups = [[m for m in methods if m != "nlse-learned"], [m for m in methods if m == "nlse-learned"]]
    for group in groups:
        for t in tasks:
            if t not in data:
                task = get_task(t)
                theta = task.prior.sample(a.budget, seed=child_seed(a.seed, 1))
                data[t] = (theta, simulate(task.simulate, theta, seed=child_seed(a.seed, 2), progress=False))
            for m in group:
                if (t, m) in done:
                    rows += [r for r in old if (r["task"], r["method"]) == (t, m)]
                    continue
                rows += run(t, m, *data[t], observations, a.seed, a.budget, a.csv)
    print(table(rows))


if __name__ == "__main__":
    main()
