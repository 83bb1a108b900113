"""``snpse check``: calibration checks of a saved posterior on a task (``snpse_np.diagnostics``).

    snpse check runs/latest/posterior.npz --task two_moons --num-sbc 1000 --num-samples 1000

1. m = ``--num-sbc`` pairs (theta_j ~ prior, x_j ~ simulator(theta_j)) (rows whose x has NaN/inf
   are dropped and counted);
2. SBC: ``--num-samples`` posterior draws per x_j in one ``sample_batched`` call; ranks, chi-square
   and KS uniformity tests per dimension; TARP on the same draws;
3. expected coverage (HPD, via log-densities) on the first ``--num-coverage`` pairs with the first
   ``--coverage-samples`` draws of each (one exact-trace ODE log-density per draw: the expensive
   part, so smaller by default);
4. a posterior-predictive check at the task's observation ``--obs``;
5. a summary on stdout, ``check.json`` (every number), and, with matplotlib, ``sbc_ranks.png``,
   ``coverage.png``, ``tarp.png``, ``predictive.png`` in ``--out``.

A progress line shows the stage, rows done and the elapsed time. Returns the summary dict.
"""
import json
import os
import time

import numpy as np


def add_parser(sub):
    p = sub.add_parser("check", help="calibration checks (SBC, coverage, TARP, predictive) of a saved posterior")
    p.add_argument("posterior", help="a posterior .npz written by ScorePosterior.save / snpse run")
    p.add_argument("--task", required=True, help="the sbibm task it was trained on (prior and simulator)")
    p.add_argument("--num-sbc", type=int, default=1000, help="SBC / TARP rounds m")
    p.add_argument("--num-samples", type=int, default=1000, help="posterior draws per round")
    p.add_argument("--num-coverage", type=int, default=200, help="rounds for the HPD coverage")
    p.add_argument("--coverage-samples", type=int, default=100, help="draws per coverage round (log-densities)")
    p.add_argument("--log-prob-method", default="rk4", choices=["rk4", "heun", "euler", "rk45"])
    p.add_argument("--log-prob-steps", type=int, default=10)
    p.add_argument("--sampler-steps", type=int, default=None, help="steps of the default 'edm' ODE sampler")
    p.add_argument("--obs", type=int, default=1, help="observation for the posterior-predictive check")
    p.add_argument("--num-predictive", type=int, default=1000)
    p.add_argument("--backend", default=None, choices=[None, "numpy", "numba", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/check")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args):
    import snpse_np as sn
    from snpse_np import diagnostics as dg
    from snpse_np.files import write_atomic
    from snpse_np.progress import Progress
    from snpse_np.tasks import get_task

    for name in ("num_sbc", "num_samples", "num_coverage", "coverage_samples", "num_predictive", "log_prob_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    os.makedirs(args.out, exist_ok=True)
    task = get_task(args.task)
    post = sn.load(args.posterior, backend=args.backend, prior=task.prior)
    if post.dim_theta != task.dim_theta or post.dim_x != task.dim_x:
        raise ValueError(f"{args.posterior} is a posterior for dim theta {post.dim_theta}, dim x {post.dim_x}; "
                         f"task {task.name} has {task.dim_theta}, {task.dim_x}")
    show = not args.quiet
    progress = Progress(show)
    rng = np.random.default_rng(args.seed)
    summary = dict(task=task.name, posterior=os.fspath(args.posterior), backend=post.backend.name)

    t0 = time.perf_counter()
    theta = task.prior.sample(args.num_sbc, seed=rng)
    x = sn.simulate(task.simulate, theta, seed=int(rng.integers(2 ** 31)), progress=False)
    ok = np.all(np.isfinite(x), axis=1)
    theta, x = theta[ok], x[ok]
    summary.update(rounds=int(ok.sum()), dropped_invalid=int((~ok).sum()), simulate_seconds=time.perf_counter() - t0)
    progress.update(f"simulated {ok.sum()} pairs ({(~ok).sum()} dropped)", force=True)

    sample_kw = dict(seed=rng, reject_outside_prior=True, show_progress=show)
    if args.sampler_steps is not None:
        sample_kw["steps"] = args.sampler_steps
    sbc = dg.sbc(post, theta, x, num_samples=args.num_samples, sample_kwargs=sample_kw, return_samples=True)
    samples = sbc.pop("samples")
    tarp = dg.tarp(samples, theta, seed=rng)
    summary["sbc"] = dict(seconds=sbc["seconds"], chi2_pvalue=sbc["chi2_pvalue"].tolist(),
                          ks_pvalue=sbc["ks_pvalue"].tolist(), bins=sbc["bins"])
    summary["tarp"] = dict(atc=tarp["atc"], ks_pvalue=tarp["ks_pvalue"])
    progress.update(f"SBC {samples.shape[0]} x {samples.shape[1]} in {sbc['seconds']:.1f}s", force=True)

    mc, nc = min(args.num_coverage, theta.shape[0]), min(args.coverage_samples, samples.shape[1])
    lp_kw = dict(method=args.log_prob_method, steps=None if args.log_prob_method == "rk45" else args.log_prob_steps)
    cov = dg.expected_coverage(post, theta[:mc], x[:mc], samples=samples[:mc, :nc], log_prob_kwargs=lp_kw)
    summary["coverage"] = dict(levels=cov["levels"].tolist(), coverage=cov["coverage"].tolist(),
                               ks_pvalue=cov["ks_pvalue"], rounds=mc, samples=nc, seconds=cov["seconds"])
    progress.update(f"coverage {mc} x {nc} log-densities in {cov['seconds']:.1f}s", force=True)

    ppc = None
    try:
        x_o = task.observation(args.obs)
    except Exception as err:  # tasks without stored observations still get SBC, TARP and coverage
        summary["predictive"] = f"skipped: {err}"
    else:
        ppc = dg.posterior_predictive(post, task.simulate, x_o, num_samples=args.num_predictive, seed=rng,
                                      sample_kwargs=dict(reject_outside_prior=True))
        summary["predictive"] = dict(obs=args.obs, quantile=ppc["quantile"].tolist(),
                                     distance_pvalue=ppc["distance_pvalue"], n_failed=ppc["n_failed"])
    summary["seconds"] = progress.elapsed
    progress.done(f"checks done in {progress.elapsed:.1f}s")

    _print(summary, task)
    write_atomic(os.path.join(args.out, "check.json"), lambda fh: json.dump(summary, fh, indent=1), mode="w")
    written = ["check.json"]
    try:
        from snpse_np import plot
        plot.rank_plot(sbc["ranks"], sbc["num_samples"], path=os.path.join(args.out, "sbc_ranks.png"))
        plot.coverage_plot(cov["levels"], cov["coverage"], mc, path=os.path.join(args.out, "coverage.png"))
        plot.tarp_plot(tarp["alpha"], tarp["ecp"], theta.shape[0], atc=tarp["atc"],
                       path=os.path.join(args.out, "tarp.png"))
        written += ["sbc_ranks.png", "coverage.png", "tarp.png"]
        if ppc is not None and task.dim_x <= 10:
            ok_x = ppc["x"][np.all(np.isfinite(ppc["x"]), axis=1)]
            plot.pairplot(ok_x, truth=x_o, labels=[f"$x_{{{j + 1}}}$" for j in range(task.dim_x)],
                          sample_label="posterior predictive", path=os.path.join(args.out, "predictive.png"))
            written.append("predictive.png")
    except ImportError:
        pass
    print(f"wrote {', '.join(written)} to {args.out}/")
    return summary


def _print(summary, task):
    print(f"task {summary['task']}: {summary['rounds']} rounds ({summary['dropped_invalid']} invalid x dropped)")
    s = summary["sbc"]
    print(f"SBC ({s['seconds']:.1f}s): per dimension chi-square p "
          + ", ".join(f"{p:.3g}" for p in s["chi2_pvalue"]) + "; KS p " + ", ".join(f"{p:.3g}" for p in s["ks_pvalue"]))
    t = summary["tarp"]
    print(f"TARP: ATC {t['atc']:+.4f} (< 0 over-, > 0 under-confident), KS p {t['ks_pvalue']:.3g}")
    c = summary["coverage"]
    pairs = ", ".join(f"{lv:.2f}:{cv:.3f}" for lv, cv in zip(c["levels"], c["coverage"]))
    print(f"HPD coverage ({c['rounds']} x {c['samples']}, {c['seconds']:.1f}s) level:coverage {pairs}; "
          f"KS p {c['ks_pvalue']:.3g}")
    p = summary["predictive"]
    if isinstance(p, dict):
        print(f"predictive at observation {p['obs']}: x_o quantiles " + ", ".join(f"{q:.2f}" for q in p["quantile"])
              + f"; distance p-value {p['distance_pvalue']:.3f}")
    else:
        print(f"predictive: {p}")
    print(f"total {summary['seconds']:.1f}s")
