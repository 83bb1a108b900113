"""TSNPSE beside the experimental SNPSE-A, SNPSE-B and SNPSE-C on sbibm tasks (paper App. C.5, Fig. 6).

    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_sequential_variants.py \\
        --tasks slcp,gaussian_linear_uniform --methods tsnpse,snpse_a,snpse_b,snpse_c \\
        --obs 1 --budget 4000 --rounds 4 --max-steps 4000 --seed 0

Per (task, observation, method): one sequential run at x_o = the task's observation k with
``--budget`` simulations over ``--rounds`` rounds (``rounds.split_budget``), seed ``--seed``, the VE
SDE with the task's sigma_min (``snpse_np.bench.sde_kwargs``), every round's training capped by
``--max-steps`` Adam steps (``train_kwargs=dict(max_steps=...)``; never wall time, so the result
does not depend on the machine's load). Then ``--num-samples`` posterior draws inside the prior
(seed ``child_seed(seed, 3, k)``), scored by the fast C2ST, the posterior-mean error and the
variance ratio against sbibm's reference draws (``snpse_np.bench.score_samples``).

How each method is sampled:
  - tsnpse: the final network, probability-flow ODE (the package default, "edm" 20 steps);
  - snpse_a: its SIR posterior (oversample ``--oversample``), network draws and the proposal
    mixture's densities by fixed-step RK4 with 20 steps (``--ode-steps``), as tests/test_snpse_ab.py;
  - snpse_b: the final network, RK4 with ``--ode-steps`` steps (the same sampler its proposal used);
  - snpse_c: the final network by annealed Langevin (``sampler="ald"``, ``--ald-steps`` levels,
    one Langevin step each): its network learns a bridge that is the posterior at t = 0 only
    (``snpse_np.snpse_c``), so the ODE would sample the wrong law. Its proposals use the same.

One row per (task, method, observation) is appended to ``--csv`` as it finishes
(``snpse_np.bench.append_csv_row``): task, method, sde, budget, rounds, observation, seed,
max_steps, c2st, mean_error, variance_ratio, seconds (the whole run: simulations, training,
proposals, final samples), sample_seconds, machine, version. Run single-threaded (the variables
above): the package trains on one thread anyway (``snpse_np.threads``).
"""
import argparse
import time

FIELDS = ["task", "method", "sde", "budget", "rounds", "observation", "seed", "max_steps", "c2st", "mean_error",
          "variance_ratio", "seconds", "sample_seconds", "machine", "version"]
METHODS = ("tsnpse", "snpse_a", "snpse_b", "snpse_c")


def run_one(task_name, method, k, budget, rounds, seed, max_steps, num_samples, oversample, ode_steps, ald_steps,
            show_progress):
    """One method at observation k: returns the CSV row (dict)."""
    import snpse_np as sn
    from snpse_np import __version__
    from snpse_np.bench import machine_name, score_samples, sde_kwargs
    from snpse_np.rng import child_seed
    from snpse_np.tasks import get_task

    task = get_task(task_name)
    x_o = task.observation(k)
    kw = dict(sde="ve", seed=seed, show_progress=show_progress, train_kwargs=dict(max_steps=max_steps),
              **sde_kwargs(task, "ve"))
    ode = dict(method="rk4", steps=ode_steps)
    ald = dict(sampler="ald", steps=ald_steps)
    sample_seed = child_seed(seed, 3, k)
    t0 = time.perf_counter()
    if method == "tsnpse":
        post = sn.TSNPSE(task.prior, task.simulate, x_o, **kw).run(num_simulations=budget, num_rounds=rounds)
        draw = lambda: post.sample(num_samples, seed=sample_seed, reject_outside_prior=True)  # noqa: E731
    elif method == "snpse_a":
        post = sn.SNPSEA(task.prior, task.simulate, x_o, **kw).run(
            num_simulations=budget, num_rounds=rounds, oversample=oversample, sample_kwargs=ode, log_prob_kwargs=ode)
        draw = lambda: post.sample(num_samples, seed=sample_seed)  # noqa: E731  (SIR: weight 0 outside the prior)
    elif method == "snpse_b":
        post = sn.SNPSEB(task.prior, task.simulate, x_o, **kw).run(
            num_simulations=budget, num_rounds=rounds, sample_kwargs=ode, log_prob_kwargs=ode)
        draw = lambda: post.sample(num_samples, seed=sample_seed, reject_outside_prior=True, **ode)  # noqa: E731
    elif method == "snpse_c":
        post = sn.SNPSEC(task.prior, task.simulate, x_o, **kw).run(
            num_simulations=budget, num_rounds=rounds, sample_kwargs=ald)
        draw = lambda: post.sample(num_samples, seed=sample_seed, reject_outside_prior=True, **ald)  # noqa: E731
    else:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    t1 = time.perf_counter()
    samples = draw()
    t2 = time.perf_counter()
    c, me, vr = score_samples(task.reference_samples(k), samples, "fast")
    return dict(task=task_name, method=method, sde="ve", budget=budget, rounds=rounds, observation=k, seed=seed,
                max_steps=max_steps, c2st=c, mean_error=me, variance_ratio=vr, seconds=t2 - t0,
                sample_seconds=t2 - t1, machine=machine_name(), version=__version__)


def main(argv=None):
    from snpse_np.bench import append_csv_row, parse_obs

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog="Module docstring: the settings, samplers and the CSV columns.")
    p.add_argument("--tasks", default="slcp,gaussian_linear_uniform", help="comma-separated sbibm task names")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {','.join(METHODS)}")
    p.add_argument("--obs", default="1", help="observations, e.g. 1 or 1-5 or 1,3")
    p.add_argument("--budget", type=int, default=4000, help="simulations per run, all rounds together")
    p.add_argument("--rounds", type=int, default=4, help="rounds R (the budget split evenly)")
    p.add_argument("--max-steps", type=int, default=4000, help="Adam steps per round's training (a step cap)")
    p.add_argument("--num-samples", type=int, default=10_000, help="posterior draws scored per run")
    p.add_argument("--oversample", type=float, default=10.0, help="SNPSE-A: network draws per SIR sample")
    p.add_argument("--ode-steps", type=int, default=20, help="SNPSE-A/B: RK4 steps of samples and densities")
    p.add_argument("--ald-steps", type=int, default=500, help="SNPSE-C: annealed Langevin levels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--csv", default="results/sequential_variants.csv")
    p.add_argument("--quiet", action="store_true", help="no per-round progress lines")
    a = p.parse_args(argv)
    methods = a.methods.split(",")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        p.error(f"unknown methods {bad}; choose from {METHODS}")
    for t in a.tasks.split(","):
        for k in parse_obs(a.obs):
            for m in methods:
                row = run_one(t, m, k, a.budget, a.rounds, a.seed, a.max_steps, a.num_samples, a.oversample,
                              a.ode_steps, a.ald_steps, not a.quiet)
                append_csv_row(a.csv, row, FIELDS)
                print(f"{t} {m} obs {k}: C2ST {row['c2st']:.3f}, mean error {row['mean_error']:.3f}, "
                      f"variance ratio {row['variance_ratio']:.2f}, {row['seconds']:.0f}s "
                      f"(sampling {row['sample_seconds']:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
