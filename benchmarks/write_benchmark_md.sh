#!/usr/bin/env bash
# Regenerate docs/benchmark.md's table and docs/figures/c2st_budget.png from results/benchmark.csv.
set -e
cd "$(dirname "$0")/.."
mkdir -p docs/figures
{
  sed -n '1,/^<!-- table -->$/p' docs/benchmark.md
  python benchmarks/summarize.py results/benchmark.csv --plot docs/figures/c2st_budget.png
  echo
  sed -n '/^<!-- end table -->$/,$p' docs/benchmark.md
} > docs/benchmark.md.new
mv docs/benchmark.md.new docs/benchmark.md
