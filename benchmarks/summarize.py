"""Print the benchmark CSV as docs/benchmark.md's table, and optionally draw its figure.

    python benchmarks/summarize.py results/benchmark.csv [--plot docs/figures/c2st_budget.png]

Per (task, method, sde, budget) only the newest package version's rows count, the last row per
observation (``snpse_np.bench.latest_rows``): older rows stay in the CSV as history.
"""
import argparse

from snpse_np.bench import markdown_table, plot_c2st, read_rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", nargs="?", default="results/benchmark.csv")
    ap.add_argument("--plot", default=None, help="also write the C2ST-vs-budget figure (PNG) here")
    args = ap.parse_args()
    rows = read_rows(args.csv)
    print(markdown_table(rows))
    if args.plot:
        plot_c2st(rows, args.plot)


if __name__ == "__main__":
    main()
