#!/usr/bin/env bash
# TSNPSE benchmark rows (issues 5, 15): 10 rounds, one run per observation (TSNPSE is not
# amortised), runs one after another on one core, single-threaded BLAS/Numba. Each round trains
# by the package's default step budget (from the pooled number of simulations), or by
# MAX_EPOCHS epochs when that variable is set (session 1's rows used MAX_EPOCHS=200): never by
# wall time, so the results do not depend on the machine's load. Rows append as each run ends.
# Usage: bash benchmarks/run_tsnpse.sh [tasks] [obs] [csv] [budgets] [sdes]
#   e.g. bash benchmarks/run_tsnpse.sh "slcp lotka_volterra" 1-5 results/benchmark.csv "1000 10000" "ve vp"
set -u
tasks=${1:-"slcp lotka_volterra bernoulli_glm two_moons"}
obs=${2:-1-5}
csv=${3:-results/benchmark.csv}
budgets=${4:-10000}
sdes=${5:-ve}
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1
cap=()
if [ -n "${MAX_EPOCHS:-}" ]; then cap=(--max-epochs "$MAX_EPOCHS"); fi
for sde in $sdes; do
  for budget in $budgets; do
    for t in $tasks; do
      echo "== $(date -u +%H:%M:%S) $t tsnpse-$sde $budget obs $obs"
      snpse bench --task "$t" --method tsnpse --sde "$sde" --budget "$budget" --rounds 10 --obs "$obs" \
        --seed 0 --csv "$csv" --quiet "${cap[@]}"
    done
  done
done
