#!/usr/bin/env bash
# The committed benchmark grid: NPSE (VE, VP) on the eight paper tasks at 10k simulations,
# observations 1-5, one process per core, single-threaded BLAS/Numba (no oversubscription).
# Usage: bash benchmarks/run_grid.sh [csv] [budget]
set -u
csv=${1:-results/benchmark.csv}
budget=${2:-10000}
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1
tasks="two_moons slcp sir lotka_volterra gaussian_mixture gaussian_linear_uniform gaussian_linear bernoulli_glm"
run() { snpse bench --task "$1" --method npse --sde "$2" --budget "$budget" --obs 1-5 --seed 0 --csv "$csv" --max-seconds "${MAX_SECONDS:-400}" --quiet; }
for sde in ve vp; do
  for t in $tasks; do run "$t" "$sde"; done &
done
wait
