"""The pyloric task: simulator speed, and the prior-predictive constants and fraction of valid runs.

    python benchmarks/bench_pyloric.py --speed 20
    python benchmarks/bench_pyloric.py --constants 2000 [--seed 0] [--workdir runs/pyloric_prior]

--speed K   Times K simulations of prior draws (seed 0) in this process after one warm-up call
            (numba compile and cache load reported separately): seconds per simulation split into
            noise draws, the numba integration (440,000 steps of 0.025 ms) and the statistics,
            and simulations per second per core. One thread: OPENBLAS/NUMBA/OMP_NUM_THREADS=1
            are set before numpy and numba load. Prints the load average before and after.
--constants N  Simulates N prior draws (theta from prior.sample(N, seed), noise from
            snpse_np.simulate's seed rule with the same seed, 100-row seed blocks) with the raw
            statistics (NaN where undefined), streamed to --workdir so a killed run resumes; then
            writes snpse_np/data/pyloric_prior_predictive.csv (atomically): per statistic, over the
            draws where it is finite, n, mean, std (ddof 0), min, replacement = mean - 2 std (the
            paper's rule) and tsnpe_replacement = min - 2 std (Deistler et al.'s code), with a
            header saying how it was made; and prints the fraction of valid simulations (all 18
            finite) with a 95% Wilson interval, and the fraction finite per statistic.

Both print markdown that docs/pyloric.md quotes.
"""
import argparse
import datetime
import math
import os
import platform
import sys
import tempfile
import time

for _var in ("OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from snpse_np.simulate import simulate  # noqa: E402
from snpse_np.tasks import get_task  # noqa: E402
from snpse_np.tasks import pyloric as P  # noqa: E402

DATA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "snpse_np", P.CONSTANTS_FILE)


def _load():
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def _cpu():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _threads():
    return ", ".join(f"{v}={os.environ.get(v)}" for v in
                     ("OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS"))


def bench_speed(k):
    task = get_task("pyloric")
    theta = task.prior.sample(k + 1, seed=0)
    n_steps, n_burn = P._steps(P.T_MAX, P.DT, P.BURN_IN)
    rng = np.random.default_rng(0)
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {_cpu()}; "
          f"{_threads()}; {_load()} before")
    t0 = time.perf_counter()
    P.integrate(theta[0], np.zeros((3, 10)), 0)
    print(f"first call (numba compile or cache load): {time.perf_counter() - t0:.2f} s")
    t_noise = t_int = t_stats = 0.0
    n_valid = 0
    for row in theta[1:]:
        a = time.perf_counter()
        noise = P.NOISE_STD * rng.standard_normal((3, n_steps))
        b = time.perf_counter()
        v = P.integrate(row, noise, n_burn)
        c = time.perf_counter()
        x = P.summary_statistics(v)
        d = time.perf_counter()
        t_noise += b - a
        t_int += c - b
        t_stats += d - c
        n_valid += bool(np.all(np.isfinite(x)))
    total = t_noise + t_int + t_stats
    print(f"\n{k} simulations of {P.T_MAX:.0f} ms at dt = {P.DT} ms ({n_steps} steps), one core; {_load()} after\n")
    print("| part | s per simulation |\n|---|---|")
    print(f"| noise draws (3 x {n_steps} normals) | {t_noise / k:.4f} |")
    print(f"| numba integration | {t_int / k:.4f} |")
    print(f"| summary statistics | {t_stats / k:.4f} |")
    print(f"| total | {total / k:.4f} |")
    print(f"\n**{k / total:.2f} simulations per second per core** "
          f"({1e9 * t_int / k / (n_steps - 1):.0f} ns per integration step of the 3-neuron circuit); "
          f"{n_valid}/{k} of these prior draws valid")


def _wilson(k, n, z=1.96):
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _write_atomic(path, text):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=".csv")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def bench_constants(n, seed, workdir):
    task = get_task("pyloric")
    theta = task.prior.sample(n, seed=seed)
    print(f"{_threads()}; {_load()} before", flush=True)
    t0 = time.perf_counter()
    x, report = simulate(task.simulate_statistics, theta, seed=seed, workdir=workdir,
                         chunk_size=100, return_report=True)
    seconds = time.perf_counter() - t0
    print(report.summary())
    print(f"{_load()} after; {seconds:.0f} s in this call "
          f"({report.n_loaded_chunks} chunks loaded from {workdir})")

    finite = np.isfinite(x)
    valid = finite.all(axis=1)
    lo, hi = _wilson(int(valid.sum()), n)
    stats = {}
    for key, fn in (("mean", np.nanmean), ("std", np.nanstd), ("min", np.nanmin)):
        stats[key] = np.array([fn(x[finite[:, j], j]) if finite[:, j].any() else math.nan
                               for j in range(18)])
    replacement = stats["mean"] - 2.0 * stats["std"]
    tsnpe = stats["min"] - 2.0 * stats["std"]

    today = datetime.date.today().isoformat()
    lines = [
        "# Prior-predictive constants of the pyloric task (snpse_np.tasks.pyloric).",
        f"# Made by benchmarks/bench_pyloric.py --constants {n} --seed {seed} on {today}: theta = "
        f"get_task('pyloric').prior.sample({n}, seed={seed}),",
        f"# raw statistics by snpse_np.simulate(task.simulate_statistics, theta, seed={seed}) "
        "(100-row seed blocks); dt 0.025 ms, 11,000 ms, burn-in 1,000 ms, noise 0.001 uA.",
        "# Per statistic over the draws where it is finite: n_finite, mean, std (ddof 0), min;",
        "# replacement = mean - 2 std (Sharrock et al. 2024, used by default); "
        "tsnpe_replacement = min - 2 std (Deistler et al. 2022 code).",
        f"# Valid simulations (all 18 finite): {int(valid.sum())} of {n}.",
        "statistic,n_finite,mean,std,min,replacement,tsnpe_replacement",
    ]
    for j, name in enumerate(P.STATISTIC_NAMES):
        values = (stats["mean"][j], stats["std"][j], stats["min"][j], replacement[j], tsnpe[j])
        lines.append(f"{name},{int(finite[:, j].sum())}," + ",".join(repr(float(v)) for v in values))
    _write_atomic(DATA_PATH, "\n".join(lines) + "\n")
    print(f"wrote {os.path.normpath(DATA_PATH)}\n")

    print(f"**Valid under the prior: {int(valid.sum())} / {n} = {valid.mean():.4f} "
          f"(95% Wilson interval {lo:.4f}-{hi:.4f})**\n")
    print("| statistic | finite | mean | std | min | max | mean - 2 std | min - 2 std | observed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for j, name in enumerate(P.STATISTIC_NAMES):
        col = x[finite[:, j], j]
        mx = col.max() if col.size else math.nan
        print(f"| {name} | {finite[:, j].mean():.3f} | {stats['mean'][j]:.4g} | {stats['std'][j]:.4g} | "
              f"{stats['min'][j]:.4g} | {mx:.4g} | {replacement[j]:.4g} | {tsnpe[j]:.4g} | "
              f"{P.OBSERVATION[j]:.4g} |")
    inside = [P.STATISTIC_NAMES[j] for j in range(18)
              if finite[:, j].any() and replacement[j] >= stats["min"][j]]
    print(f"\nStatistics whose paper replacement (mean - 2 std) lies inside the range of finite values: "
          f"{', '.join(inside) if inside else 'none'}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--speed", type=int, default=0, metavar="K", help="time K simulations")
    p.add_argument("--constants", type=int, default=0, metavar="N",
                   help="simulate N prior draws and write the prior-predictive constants")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="runs/pyloric_prior_predictive")
    args = p.parse_args()
    if not (args.speed or args.constants):
        p.error("give --speed K and/or --constants N")
    if args.speed:
        bench_speed(args.speed)
    if args.constants:
        bench_constants(args.constants, args.seed, args.workdir)


if __name__ == "__main__":
    main()
