#!/usr/bin/env bash
# The amortised NPSE grid (issue 15): one network per (task, sde, budget) serves every observation
# in OBS. Training runs the package's default step budget (from the number of simulations: no
# wall-clock cap, so rows do not depend on the machine's load); single-threaded BLAS/Numba.
# Rows append to the CSV as each observation is scored, so a killed grid loses at most one cell.
# Usage: bash benchmarks/run_grid.sh [csv] [sdes] [budgets] [obs] [tasks]
#   e.g. bash benchmarks/run_grid.sh results/benchmark.csv "ve vp" "1000 10000" 1-10
set -u
csv=${1:-results/benchmark.csv}
sdes=${2:-"ve vp"}
budgets=${3:-"1000 10000 100000"}
obs=${4:-1-10}
tasks=${5:-"two_moons slcp sir lotka_volterra gaussian_mixture gaussian_linear_uniform gaussian_linear bernoulli_glm"}
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1
for sde in $sdes; do
  for budget in $budgets; do
    for t in $tasks; do
      echo "== $(date -u +%H:%M:%S) $t npse-$sde $budget obs $obs"
      snpse bench --task "$t" --method npse --sde "$sde" --budget "$budget" --obs "$obs" --seed 0 \
        --csv "$csv" --quiet
    done
  done
done
