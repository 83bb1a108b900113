"""``snpse bench``: NPSE / TSNPSE on sbibm tasks, one CSV row per (run, observation).

    snpse bench --task slcp --method npse --sde ve --budget 10000 --obs 1-5 --seed 0

Each row: task, method, sde, budget, observation, seed, c2st, c2st_classifier, mean_error,
variance_ratio, train_seconds, sample_seconds, truncation_seconds, simulations, backend,
machine, version. NPSE is amortised: one network is trained per (task, sde, budget, seed) and
sampled at every observation; TSNPSE runs once per observation. After the runs a table shows
our mean C2ST beside sbibm's published NPE and SNPE(-C) means on the same observations
(``data/sbibm_c2st.csv``, extracted from sbibm's results/main_paper.csv).
"""
import csv
import os
import platform
import time
from importlib import resources

import numpy as np

FIELDS = ["task", "method", "sde", "budget", "observation", "seed", "c2st", "c2st_classifier", "mean_error",
          "variance_ratio", "train_seconds", "sample_seconds", "truncation_seconds", "simulations", "backend",
          "machine", "version"]


def machine_name():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu} x{os.cpu_count()}"


def published_c2st(task, budget, algorithm, observations):
    """Mean of sbibm's published C2ST over ``observations`` (None if not in the table)."""
    text = resources.files("snpse_np").joinpath("data/sbibm_c2st.csv").read_text()
    vals = [float(r["c2st"]) for r in csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
            if r["task"] == task and int(r["budget"]) == budget and r["algorithm"] == algorithm
            and int(r["observation"]) in observations]
    return float(np.mean(vals)) if vals else None


def append_csv_row(path, row, fields):
    """Append one dict row to the CSV at ``path`` (header first when the file is new); a row is
    one line appended, so a killed run keeps every row written before it."""
    new = not os.path.exists(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        if new:
            w.writeheader()
        w.writerow(row)


def parse_obs(text):
    """"1-5" or "1,3,7" -> [1, ..., 5] / [1, 3, 7]."""
    out = []
    for part in str(text).split(","):
        if "-" in part:
            a, b = part.split("-")
            out += list(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    if not out or min(out) < 1 or max(out) > 10:
        raise ValueError(f"observations must lie in 1..10, got {text!r}")
    return out


def sde_kwargs(task, sde):
    """The task's SDE settings (VE: sigma_min from the authors' per-task table)."""
    if sde == "ve" and task.ve_sigma_limits is not None:
        return dict(sigma_min=task.ve_sigma_limits[0])
    return {}


def npse_on_task(task, num_simulations, observations, seed=0, sde="ve", backend=None, sampler="ode",
                 num_samples=10_000, threads=None, train_kwargs=None, show_progress=True, say=None, baseline=None):
    """Simulate, train, sample: one amortised NPSE on ``task`` (``snpse run`` and the NPSE benchmark).

    Draws ``num_simulations`` parameters from the task's prior (seed ``child_seed(seed, 1)``),
    simulates them (``child_seed(seed, 2)``), trains one NPSE (seed ``seed``; ``train_kwargs`` to
    ``NPSE.train``; ``baseline`` to ``NPSE``; the VE sigma_min from the task where it gives one) and
    draws ``num_samples`` at each observation number k in ``observations`` with ``sampler``,
    rejecting draws outside the prior (``child_seed(seed, 3, k)``). say: None or a callable told a
    line after the simulations and after each sampling. Returns (inference, posterior, draws), draws a list of
    (k, samples (num_samples, dim_theta), sample seconds).
    """
    from .npse import NPSE
    from .rng import child_seed
    from .simulate import simulate

    t0 = time.perf_counter()
    theta = task.prior.sample(num_simulations, seed=child_seed(seed, 1))
    x = simulate(task.simulate, theta, seed=child_seed(seed, 2), progress=show_progress)
    if say is not None:
        say(f"simulated {num_simulations} in {time.perf_counter() - t0:.1f}s")
    inference = NPSE(task.prior, sde=sde, backend=backend, seed=seed, show_progress=show_progress,
                     threads=threads, baseline=baseline, **sde_kwargs(task, sde))
    posterior = inference.append_simulations(theta, x).train(**dict(train_kwargs or {}))
    draws = []
    for k in observations:
        t0 = time.perf_counter()
        samples = posterior.sample(num_samples, x=task.observation(k), sampler=sampler, seed=child_seed(seed, 3, k),
                                   reject_outside_prior=True)
        t_sample = time.perf_counter() - t0
        if say is not None:
            say(f"sampled {num_samples} in {t_sample:.1f}s ({sampler} sampler)")
        draws.append((k, samples, t_sample))
    return inference, posterior, draws


def score_samples(reference, samples, classifier="fast"):
    """(C2ST, posterior mean error, variance ratio) of samples (n, d) against reference draws (m, d);
    the C2ST on the first min(n, m) rows of each."""
    from .metrics import c2st, posterior_mean_error, posterior_variance_ratio
    n = min(len(reference), len(samples))
    return (c2st(reference[:n], samples[:n], classifier=classifier), posterior_mean_error(samples, reference),
            posterior_variance_ratio(samples, reference))


def run_benchmark(task_name, method="npse", sde="ve", budget=10_000, observations=(1,), seed=0, backend=None,
                  num_samples=10_000, classifier="fast", csv_path=None, num_rounds=10, max_seconds=None,
                  show_progress=True, train_kwargs=None, baseline=None):
    """Run, score and (optionally) append rows to ``csv_path``; returns the list of row dicts.

    ``baseline``: None, "gaussian" or "auto" (``NPSE``'s option; TSNPSE passes it to every round's
    NPSE); rows with one name the method "<method>/<baseline>" so they form their own cells."""
    import snpse_np as sn
    from . import __version__
    from .rng import child_seed
    from .backend import get_backend
    from .tasks import get_task

    task = get_task(task_name)
    be = get_backend(backend)
    train_kwargs = dict(train_kwargs or {})
    if max_seconds is not None:
        train_kwargs["max_seconds"] = max_seconds
    label = method if baseline is None else f"{method}/{baseline}"
    base = dict(task=task_name, method=label, sde=sde, budget=budget, seed=seed, c2st_classifier=classifier,
                backend=be.name, machine=machine_name(), version=__version__)
    rows = []

    def emit(row):
        rows.append(row)
        if csv_path:
            append_csv_row(csv_path, row, FIELDS)
        if show_progress:
            print(f"  {task_name} {label}-{sde} {budget} obs {row['observation']}: C2ST {row['c2st']:.3f} "
                  f"(train {row['train_seconds']:.0f}s, sample {row['sample_seconds']:.0f}s)", flush=True)

    if method == "npse":
        inference, _, draws = npse_on_task(task, budget, observations, seed=seed, sde=sde, backend=be,
                                           num_samples=num_samples, train_kwargs=train_kwargs,
                                           show_progress=show_progress, baseline=baseline)
        for k, samples, t_sample in draws:
            c, me, vr = score_samples(task.reference_samples(k), samples, classifier)
            emit(dict(base, observation=k, c2st=c, mean_error=me, variance_ratio=vr,
                      train_seconds=inference.summary["train_seconds"], sample_seconds=t_sample,
                      truncation_seconds=0.0, simulations=budget - inference.n_invalid))
    elif method == "tsnpse":
        for k in observations:
            # baseline only when set: TSNPSE records its NPSE arguments for resuming, and a run without
            # one must keep resuming the workdirs written before the option existed
            run = sn.TSNPSE(task.prior, task.simulate, task.observation(k), sde=sde, backend=be, seed=seed,
                            show_progress=show_progress, train_kwargs=train_kwargs,
                            **({} if baseline is None else dict(baseline=baseline)), **sde_kwargs(task, sde))
            posterior = run.run(num_simulations=budget, num_rounds=num_rounds)
            t0 = time.perf_counter()
            samples = posterior.sample(num_samples, seed=child_seed(seed, 3, k), reject_outside_prior=True)
            t_sample = time.perf_counter() - t0
            c, me, vr = score_samples(task.reference_samples(k), samples, classifier)
            emit(dict(base, observation=k, c2st=c, mean_error=me, variance_ratio=vr,
                      train_seconds=sum(r["train_seconds"] for r in run.rounds), sample_seconds=t_sample,
                      truncation_seconds=sum(r["truncation_seconds"] for r in run.rounds),
                      simulations=sum(r["simulations"] - r["failed_simulations"] for r in run.rounds)))
    else:
        raise ValueError(f"unknown method {method!r}; choose 'npse' or 'tsnpse'")
    return rows


REFERENCES = ("NPE", "SNPE", "NLE", "SNLE")  # sbibm's algorithms shown beside ours (SNPE is SNPE-C)
TUNING, CHECKING = tuple(range(1, 6)), tuple(range(6, 11))  # observations 1-5 tune, 6-10 check


def _version_key(text):
    return tuple(int(p) if p.isdigit() else 0 for p in str(text).split("."))


def latest_rows(rows):
    """The rows a summary shows: per (task, method, sde, budget), only the newest package version's
    rows (a recipe change bumps the version, and its rows must not be averaged with older ones),
    and of those the last row per (observation, seed): a rerun supersedes, nothing is deleted."""
    newest = {}
    for r in rows:
        cell = (r["task"], r["method"], r["sde"], int(r["budget"]))
        if cell not in newest or _version_key(r["version"]) > _version_key(newest[cell]):
            newest[cell] = r["version"]
    kept = {}
    for r in rows:
        cell = (r["task"], r["method"], r["sde"], int(r["budget"]))
        if r["version"] == newest[cell]:
            kept[cell + (int(r["observation"]), int(r["seed"]))] = r
    return list(kept.values())


def _cells(rows):
    """{(task, method, sde, budget): [rows sorted by observation]} of ``latest_rows``."""
    groups = {}
    for r in latest_rows(rows):
        groups.setdefault((r["task"], r["method"], r["sde"], int(r["budget"])), []).append(r)
    return {k: sorted(v, key=lambda r: int(r["observation"])) for k, v in sorted(groups.items())}


def _mean_c2st(rs, observations):
    vals = [float(r["c2st"]) for r in rs if int(r["observation"]) in observations]
    return float(np.mean(vals)) if vals else None


def summary_table(rows):
    """Mean C2ST per (task, method, sde, budget) on observations 1-5 and 6-10 (``latest_rows``),
    beside sbibm's NPE and SNPE(-C) means on the same observations; plain text."""
    fmt = lambda v: f"{v:6.3f}" if v is not None else f"{'-':>6}"  # noqa: E731
    lines = [f"{'task':<24} {'method':<12} {'budget':>7} {'obs':>5} {'1-5':>6} {'6-10':>6} {'NPE':>6} {'SNPE':>6}"]
    for (task, method, sde, budget), rs in _cells(rows).items():
        obs = sorted({int(r["observation"]) for r in rs})
        npe, snpe = (published_c2st(task, budget, a, obs) for a in ("NPE", "SNPE"))
        lines.append(f"{task:<24} {method + '-' + sde:<12} {budget:>7} {len(obs):>5} "
                     f"{fmt(_mean_c2st(rs, TUNING))} {fmt(_mean_c2st(rs, CHECKING))} {fmt(npe)} {fmt(snpe)}")
    return "\n".join(lines)


def markdown_table(rows):
    """docs/benchmark.md's table: per (task, method, sde, budget) the package version, mean C2ST on
    observations 1-5 and 6-10, every observation's C2ST, sbibm's published means (NPE, SNPE-C, NLE,
    SNLE) over the same observations as ours, and the mean train / sample seconds."""
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    out = ["| task | method | budget | version | C2ST obs 1-5 | obs 6-10 | per observation (1, 2, ...) | "
           + " | ".join(f"sbibm {a if a != 'SNPE' else 'SNPE-C'}" for a in REFERENCES) + " | train s | sample s |",
           "|---|---|---|---|---|---|---|" + "---|" * len(REFERENCES) + "---|---|"]
    cells = _cells(rows)
    for (task, method, sde, budget), rs in cells.items():
        obs = [int(r["observation"]) for r in rs]
        refs = " | ".join(f(published_c2st(task, budget, a, obs)) for a in REFERENCES)
        per_obs = " ".join(f"{float(r['c2st']):.2f}" for r in rs)
        out.append(f"| {task} | {method}-{sde} | {budget} | {rs[0]['version']} | {f(_mean_c2st(rs, TUNING))} | "
                   f"{f(_mean_c2st(rs, CHECKING))} | {per_obs} | {refs} | "
                   f"{np.mean([float(r['train_seconds']) for r in rs]):.0f} | "
                   f"{np.mean([float(r['sample_seconds']) for r in rs]):.0f} |")
    machines = sorted({r["machine"] for rs in cells.values() for r in rs})
    out.append(f"\nMachines: {'; '.join(machines)}.")
    return "\n".join(out)


def read_rows(csv_path):
    with open(csv_path) as fh:
        return list(csv.DictReader(fh))


def plot_c2st(rows, path, columns=4):
    """C2ST against the simulation budget, one panel per task: our methods (mean over the
    observations each has, ``latest_rows``; bars: min-max over them) beside sbibm's NPE, SNPE-C,
    NLE and SNLE (published means over the same observations). PNG via matplotlib (optional)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cells = _cells(rows)
    tasks = sorted({k[0] for k in cells})
    if not tasks:
        raise ValueError("no rows to plot")
    ncol = min(columns, len(tasks))
    nrow = -(-len(tasks) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol, 3.0 * nrow), squeeze=False)
    ref_style = dict(NPE=("0.35", "--"), SNPE=("0.35", ":"), NLE=("0.65", "--"), SNLE=("0.65", ":"))
    ours = sorted({k[1:3] for k in cells})
    color = {m: f"C{i}" for i, m in enumerate(ours)}  # one colour per method in every panel
    for ax, task in zip(axes.ravel(), tasks):
        mine = {k[1:]: rs for k, rs in cells.items() if k[0] == task}
        budgets = sorted({k[2] for k in mine})
        obs = sorted({int(r["observation"]) for rs in mine.values() for r in rs})
        for alg in REFERENCES:
            pts = [(b, published_c2st(task, b, alg, obs)) for b in (1_000, 10_000, 100_000)]
            pts = [p for p in pts if p[1] is not None]
            if pts:
                grey, ls = ref_style[alg]
                ax.plot(*zip(*pts), color=grey, linestyle=ls, marker=".",
                        label=f"sbibm {alg if alg != 'SNPE' else 'SNPE-C'}")
        for method, sde in sorted({k[:2] for k in mine}):
            bs = [b for b in budgets if (method, sde, b) in mine]
            vals = [[float(r["c2st"]) for r in mine[(method, sde, b)]] for b in bs]
            mean = [np.mean(v) for v in vals]
            err = [[m - min(v) for m, v in zip(mean, vals)], [max(v) - m for m, v in zip(mean, vals)]]
            ax.errorbar(bs, mean, yerr=err, marker="o", capsize=2, color=color[(method, sde)],
                        label=f"ours {method.upper()}-{sde.upper()}")
        ax.set_xscale("log")
        ax.set_xticks([1_000, 10_000, 100_000])
        ax.set_ylim(0.45, 1.02)
        ax.axhline(0.5, color="0.85", linewidth=0.8, zorder=0)
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("simulations")
        ax.set_ylabel("C2ST")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(tasks):]:
        ax.axis("off")
    handles = {}
    for ax in axes.ravel():
        for h, l in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(l, h)
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=min(len(handles), 8),
               fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bench(args):
    rows = run_benchmark(args.task, args.method, args.sde, args.budget, parse_obs(args.obs), args.seed,
                         args.backend, args.num_samples, args.c2st, args.csv, args.rounds, args.max_seconds,
                         show_progress=not args.quiet, baseline=args.baseline,
                         train_kwargs={k: v for k, v in dict(max_epochs=args.max_epochs,
                                                             max_steps=args.max_steps).items() if v is not None})
    print(summary_table(rows))
    if args.plot:
        plot_c2st(read_rows(args.csv) if args.csv else rows, args.plot)


def add_parser(sub):
    p = sub.add_parser("bench", help="benchmark on sbibm tasks; appends rows to a CSV")
    p.add_argument("--task", default="two_moons")
    p.add_argument("--method", default="npse", choices=["npse", "tsnpse"])
    p.add_argument("--sde", default="ve", choices=["ve", "vp", "subvp"])
    p.add_argument("--budget", type=int, default=10_000)
    p.add_argument("--obs", default="1-5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default=None)
    p.add_argument("--rounds", type=int, default=10, help="TSNPSE rounds")
    p.add_argument("--num-samples", type=int, default=10_000)
    p.add_argument("--c2st", default="fast", choices=["fast", "sklearn"])
    p.add_argument("--csv", default="results/benchmark.csv")
    p.add_argument("--plot", default=None, help="write a C2ST-vs-budget plot (matplotlib) to this path")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="each training's wall-clock budget (the learning rate anneals to it; load-dependent)")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="each training's budget in epochs (unlike --max-seconds, independent of the machine's load)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="each training's budget in Adam steps (default: the package's, from the number of simulations)")
    p.add_argument("--baseline", default=None, choices=["gaussian", "auto"],
                   help="NPSE's Gaussian baseline: on, or chosen by the validation loss (rows: method <method>/<baseline>)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_bench)
