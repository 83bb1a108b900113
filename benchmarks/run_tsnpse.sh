#!/usr/bin/env bash
# TSNPSE benchmark rows (issue 5): 10 rounds, 10k simulations, VE, one process per task,
# single-threaded BLAS/Numba; each round's training capped at MAX_EPOCHS (default 200) epochs of
# >= 100 Adam steps: an epoch cap keeps the results independent of the machine's load.
# Usage: bash benchmarks/run_tsnpse.sh "slcp lotka_volterra" [obs] [csv]
set -u
tasks=${1:-"slcp lotka_volterra two_moons gaussian_linear_uniform"}
obs=${2:-1-5}
csv=${3:-results/benchmark.csv}
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1
mkdir -p results/logs
for t in $tasks; do
  snpse bench --task "$t" --method tsnpse --sde ve --budget 10000 --rounds 10 --obs "$obs" --seed 0 \
    --csv "$csv" --max-epochs "${MAX_EPOCHS:-200}" > "results/logs/tsnpse_$t.log" 2>&1 &
done
wait
