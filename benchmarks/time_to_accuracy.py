"""Time to accuracy: C2ST against wall time (training + 10,000 posterior samples), snpse_np beside sbi.

For one sbibm task and simulation budget, in ONE run on the same simulations, one thread each:

- snpse_np's NPSE trained to several step budgets (``--steps``; each a fresh run whose learning
  rate anneals to its own budget), sampled at each observation with the package's default
  sampler; the row with ``--steps default`` is the package's default budget;
- ``sbi``'s NPSE (VE, all defaults: ``NPSE(prior, sde_type="ve").append_simulations(theta,
  x).train()``, ``posterior.sample((10000,), x=x_o)``) when sbi is installed in this
  environment (it is never a dependency of snpse_np: ``pip install sbi`` beside it).

C2ST is sbibm's classifier (scikit-learn MLP, 5 folds: ``--c2st sklearn``, the default) or the
project's compiled twin (``--c2st fast``). Training is capped by steps, not seconds, so the
C2ST of a row does not depend on the machine's load; its times do, so the load is printed.
The end of the output compares: the least snpse_np time reaching sbi's C2ST (mean over the
observations) against sbi's end-to-end time, and the least time within 0.01 of snpse_np's own
best.

    python benchmarks/time_to_accuracy.py --task two_moons --obs 1-3
    python benchmarks/time_to_accuracy.py --task slcp --steps 1000,2000,4000,default --no-sbi
"""
import argparse
import json
import os
import sys
import time

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads: one BLAS thread for both packages

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import snpse_np as sn  # noqa: E402
from snpse_np.bench import machine_name, parse_obs  # noqa: E402
from snpse_np.metrics import c2st  # noqa: E402
from snpse_np.rng import child_seed  # noqa: E402
from snpse_np.tasks import get_task  # noqa: E402


def _load():
    return os.getloadavg()[0]


def _score(task, k, samples, classifier):
    ref = task.reference_samples(k)
    m = min(len(ref), len(samples))
    return float(c2st(ref[:m], samples[:m], classifier=classifier))


def run_ours(task, theta, x, observations, steps, seed, classifier, num_samples, say, train_kwargs=None):
    """One fresh training per step budget; rows (method, steps, obs, train_s, sample_s, c2st)."""
    rows = []
    kw = {}
    if task.ve_sigma_limits is not None:
        kw["sigma_min"] = task.ve_sigma_limits[0]
    for s in steps:
        inference = sn.NPSE(task.prior, sde="ve", seed=seed, show_progress=False, threads=1, **kw)
        tk = dict(train_kwargs or {})
        if s != "default":
            tk["max_steps"] = int(s)
        t0 = time.perf_counter()
        posterior = inference.append_simulations(theta, x).train(**tk)
        t_train = time.perf_counter() - t0
        for k in observations:
            t0 = time.perf_counter()
            samples = posterior.sample(num_samples, x=task.observation(k), seed=child_seed(seed, 3, k),
                                       reject_outside_prior=True)
            t_sample = time.perf_counter() - t0
            method = "snpse_np" if "learning_rate" not in tk else f"snpse_np lr {tk['learning_rate']:g}"
            row = dict(method=method, steps=inference.summary["steps"], budget_arg=str(s), obs=k,
                       train_s=t_train, sample_s=t_sample, c2st=_score(task, k, samples, classifier), load=_load())
            rows.append(row)
            say(row)
    return rows


def run_sbi(task, theta, x, observations, seed, classifier, num_samples, say):
    """sbi's NPSE with its defaults, one thread; rows as ``run_ours`` (steps = sbi's epochs)."""
    import torch
    from sbi.inference import NPSE as SbiNPSE
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    prior = torch_prior(task.prior)
    # sbi's default tracker writes TensorBoard logs into ./sbi-logs: a tracker that keeps nothing
    inference = SbiNPSE(prior=prior, sde_type="ve", show_progress_bars=False, tracker=_NullTracker())
    t0 = time.perf_counter()
    estimator = inference.append_simulations(torch.as_tensor(theta, dtype=torch.float32),
                                             torch.as_tensor(x, dtype=torch.float32)).train()
    t_train = time.perf_counter() - t0
    epochs = int(inference._summary["epochs_trained"][-1]) if "epochs_trained" in inference._summary else -1
    posterior = inference.build_posterior(estimator)
    rows = []
    for k in observations:
        x_o = torch.as_tensor(task.observation(k), dtype=torch.float32)[None, :]
        t0 = time.perf_counter()
        samples = posterior.sample((num_samples,), x=x_o, show_progress_bars=False).numpy().astype(np.float64)
        t_sample = time.perf_counter() - t0
        row = dict(method="sbi", steps=epochs, budget_arg="defaults (epochs)", obs=k, train_s=t_train,
                   sample_s=t_sample, c2st=_score(task, k, samples, classifier), load=_load())
        rows.append(row)
        say(row)
    return rows


class _NullTracker:
    """sbi's Tracker protocol, recording nothing (timing sbi, not its logging)."""
    log_dir = None

    def log_metric(self, name, value, step=None):
        pass

    def log_metrics(self, metrics, step=None):
        pass

    def log_params(self, params):
        pass

    def add_figure(self, name, figure, step=None):
        pass

    def flush(self):
        pass


def torch_prior(prior):
    """The torch twin of a snpse_np prior (BoxUniform, Normal, LogNormal, MultivariateNormal)."""
    import torch
    from torch.distributions import Independent, LogNormal, MultivariateNormal, Normal
    from sbi.utils import BoxUniform
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    kind = type(prior).__name__
    if kind == "BoxUniform":
        return BoxUniform(t(prior.low), t(prior.high))
    if kind == "Normal":
        return Independent(Normal(t(prior.loc), t(prior.scale)), 1)
    if kind == "LogNormal":
        return Independent(LogNormal(t(prior.loc), t(prior.scale)), 1)
    if kind == "MultivariateNormal":
        return MultivariateNormal(t(prior.mean), covariance_matrix=t(prior.cov))
    raise ValueError(f"no torch twin for prior {kind}")


def summarise(rows, observations):
    """Mean C2ST and end-to-end time (train + mean sample time) per (method, steps)."""
    groups = {}
    for r in rows:
        groups.setdefault((r["method"], r["budget_arg"], r["steps"]), []).append(r)
    out = []
    for (method, arg, steps), rs in groups.items():
        out.append(dict(method=method, budget_arg=arg, steps=steps, c2st=float(np.mean([r["c2st"] for r in rs])),
                        per_obs=[round(r["c2st"], 3) for r in rs], train_s=rs[0]["train_s"],
                        sample_s=float(np.mean([r["sample_s"] for r in rs])),
                        total_s=rs[0]["train_s"] + float(np.mean([r["sample_s"] for r in rs]))))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="two_moons")
    p.add_argument("--obs", default="1-3")
    p.add_argument("--budget", type=int, default=10_000, help="simulations")
    p.add_argument("--steps", default="500,1000,2000,4000,8000,default",
                   help="snpse_np step budgets, comma-separated ('default': the package's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--c2st", default="sklearn", choices=["sklearn", "fast"])
    p.add_argument("--num-samples", type=int, default=10_000)
    p.add_argument("--no-sbi", action="store_true", help="skip sbi even when it is installed")
    p.add_argument("--json", default=None, help="append every row to this JSON-lines file")
    p.add_argument("--learning-rate", type=float, default=None,
                   help="snpse_np's peak rate (default: the package's 'auto'); rows are labelled with it")
    args = p.parse_args(argv)

    task = get_task(args.task)
    observations = parse_obs(args.obs)
    steps = [s if s == "default" else int(s) for s in args.steps.split(",")]
    print(f"machine: {machine_name()}; load at start {_load():.2f}; one thread each "
          f"(OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, snpse_np threads=1, torch 1)")
    print(f"task {task.name}, {args.budget} simulations, observations {observations}, C2ST {args.c2st}")
    theta = task.prior.sample(args.budget, seed=child_seed(args.seed, 1))
    x = sn.simulate(task.simulate, theta, seed=child_seed(args.seed, 2), progress=False)

    def say(row):
        print(f"  {row['method']:17} steps {row['steps']:>6} obs {row['obs']:>2}: C2ST {row['c2st']:.3f}  "
              f"train {row['train_s']:7.1f}s  sample {row['sample_s']:6.1f}s  (load {row['load']:.1f})", flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(dict(row, task=task.name, budget=args.budget, c2st_classifier=args.c2st,
                                         machine=machine_name(), version=sn.__version__)) + "\n")

    tk = None if args.learning_rate is None else dict(learning_rate=args.learning_rate)
    rows = run_ours(task, theta, x, observations, steps, args.seed, args.c2st, args.num_samples, say, tk)
    have_sbi = False
    if not args.no_sbi:
        try:
            import sbi  # noqa: F401
            have_sbi = True
        except ImportError:
            print("(sbi is not installed here: its rows are skipped)")
    if have_sbi:
        rows += run_sbi(task, theta, x, observations, args.seed, args.c2st, args.num_samples, say)

    table = summarise(rows, observations)
    print(f"\n{'method':18} {'steps':>7} {'C2ST':>6} {'per obs':>22} {'train s':>8} {'sample s':>9} {'total s':>8}")
    for r in table:
        print(f"{r['method']:18} {str(r['steps']):>7} {r['c2st']:6.3f} {str(r['per_obs']):>22} {r['train_s']:8.1f} "
              f"{r['sample_s']:9.1f} {r['total_s']:8.1f}")
    ours = [r for r in table if r["method"].startswith("snpse_np")]
    best = min(r["c2st"] for r in ours)
    near = min((r for r in ours if r["c2st"] <= best + 0.01), key=lambda r: r["total_s"])
    print(f"\nsnpse_np best C2ST {best:.3f}; within 0.01 of it at {near['total_s']:.1f}s ({near['steps']} steps)")
    sb = [r for r in table if r["method"] == "sbi"]
    if sb:
        sb = sb[0]
        hit = [r for r in ours if r["c2st"] <= sb["c2st"]]
        print(f"sbi NPSE: C2ST {sb['c2st']:.3f} in {sb['total_s']:.1f}s end to end "
              f"(train {sb['train_s']:.1f}s + sample {sb['sample_s']:.1f}s)")
        if hit:
            first = min(hit, key=lambda r: r["total_s"])
            print(f"snpse_np reaches sbi's C2ST at {first['total_s']:.1f}s ({first['steps']} steps, C2ST "
                  f"{first['c2st']:.3f}): {sb['total_s'] / first['total_s']:.1f}x sooner (target >= 10x); "
                  f"within 0.01 of its best {sb['total_s'] / near['total_s']:.1f}x sooner (target >= 3x)")
        else:
            print("snpse_np does not reach sbi's C2ST at the step budgets run")
    print(f"load at end {_load():.2f}")


if __name__ == "__main__":
    main()
