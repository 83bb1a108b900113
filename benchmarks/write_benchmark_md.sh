#!/usr/bin/env bash
# Regenerate docs/benchmark.md's table from results/benchmark.csv.
set -e
cd "$(dirname "$0")/.."
{
  sed -n '1,/^<!-- table -->$/p' docs/benchmark.md
  python benchmarks/summarize.py results/benchmark.csv
  echo
  sed -n '/^<!-- end table -->$/,$p' docs/benchmark.md
} > docs/benchmark.md.new
mv docs/benchmark.md.new docs/benchmark.md
