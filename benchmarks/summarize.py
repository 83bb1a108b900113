"""Print the benchmark CSV as the markdown tables of docs/benchmark.md.

    python benchmarks/summarize.py results/benchmark.csv
"""
import sys

import numpy as np

from snpse_np.bench import published_c2st, read_rows


def trunc(rs):
    """Mean truncation seconds per run (all rounds), '-' for methods without truncation."""
    t = [float(r.get("truncation_seconds") or 0.0) for r in rs]
    return f"{np.mean(t):.0f}" if any(t) else "-"


def main(path):
    rows = read_rows(path)
    groups = {}
    for r in rows:
        groups.setdefault((r["task"], r["method"], r["sde"], int(r["budget"])), []).append(r)
    print("| task | method | budget | observations | C2ST (mean) | per observation | sbibm NPE | sbibm SNPE-C "
          "| train s | truncation s | sample s (per obs) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (task, method, sde, budget), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: int(r["observation"]))
        obs = [int(r["observation"]) for r in rs]
        c = [float(r["c2st"]) for r in rs]
        npe, snpe = (published_c2st(task, budget, a, obs) for a in ("NPE", "SNPE"))
        f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"| {task} | {method}-{sde} | {budget} | {','.join(map(str, obs))} | {np.mean(c):.3f} | "
              f"{' '.join(f'{v:.2f}' for v in c)} | {f(npe)} | {f(snpe)} | "
              f"{np.mean([float(r['train_seconds']) for r in rs]):.0f} | "
              f"{trunc(rs)} | {np.mean([float(r['sample_seconds']) for r in rs]):.0f} |")
    machines = sorted({r["machine"] for r in rows})
    print(f"\nMachine: {'; '.join(machines)}. Backends: {', '.join(sorted({r['backend'] for r in rows}))}.")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/benchmark.csv")
