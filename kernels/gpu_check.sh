#!/usr/bin/env bash
# The whole GPU check in ONE call, under 5 minutes on one GPU (a 285 s deadline: each step runs
# with the smaller of its cap and the time left, and steps that no longer fit are skipped and
# named). Each step that cannot run says why and the script carries on.
#   1. environment: GPU, numpy / cupy / numba / numba-cuda / torch versions, both "is there a
#      GPU" checks, whether the sbibm reference files for the end-to-end C2ST are in the checkout;
#   2. pytest -m gpu: every op on the cuda backend against numpy_ref, training and sampling on
#      cuda against numpy, the numba.cuda loss/sampler path in both launch modes, TF32 GEMM;
#   3. kernels/gpu_profile.py: the host cost of one launch each way; launches per loop (CUPTI)
#      and time per launch; step phases; whether the package's CuPy loops can be captured as a
#      graph; then, in a second process, the lab's fused network, fused training step and
#      trajectory kernels validated then timed beside today's CuPy path and PyTorch eager and
#      CUDA graph (each kernel compiled once there);
#   4. end to end: two_moons 10k trained on cuda with the default settings (training capped at
#      40 s; the stop reason is printed), 10,000 samples, C2ST when the reference is present;
#   5. the kernel table (numpy, the CuPy ops, the numba.cuda ops three ways, direct cuBLAS, TF32);
#   6. examples/compare_torch.py: the package's training step (batch 256) and EM (10,000 x 1,000)
#      next to PyTorch eager (the lowest priority: gpu_profile's loops have PyTorch rows too).
# Outputs: $OUT/gpu_check.log (everything) and $OUT/gpu_check_summary.txt (the step list with
# times and outcomes); ./ when OUT is unset.
#
#   bash kernels/gpu_check.sh          # the check above
#   bash kernels/gpu_check.sh tf32     # only the TF32 C2ST comparison (two_moons, slcp; ~3 min)
#
# For the C2ST, copy the reference files into the checkout before the call (they are not tracked):
#   mkdir -p shared/sbibm/tasks && cp -r ../shared/sbibm/tasks/{two_moons,slcp} shared/sbibm/tasks/
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR="${OUT:-.}"
LOG="$OUTDIR/gpu_check.log"
SUMMARY="$OUTDIR/gpu_check_summary.txt"
MODE="${1:-check}"
DEADLINE=285
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 SNPSE_NO_DOWNLOAD=1
: > "$SUMMARY"

step() {  # step NAME CAP CMD...: run with min(CAP, time left), record time and outcome
  local name=$1 cap=$2 t0=$SECONDS rc left
  shift 2
  left=$((DEADLINE - SECONDS))
  echo
  if [ "$left" -lt 10 ]; then
    echo "=== $name: SKIPPED (out of time: ${SECONDS}s of the ${DEADLINE}s budget used)"
    echo "SKIPPED  $name (out of time)" >> "$SUMMARY"
    status=1
    return
  fi
  [ "$cap" -gt "$left" ] && cap=$left
  echo "=== $name (cap ${cap}s, at ${SECONDS}s) ==="
  timeout "$cap" "$@"
  rc=$?
  if [ $rc -eq 0 ]; then
    echo "ok       $name ($((SECONDS - t0)) s)" >> "$SUMMARY"
  else
    [ $rc -eq 124 ] && echo "!!! $name hit its ${cap}s cap" || echo "!!! $name failed (rc $rc)"
    echo "FAILED   $name (rc $rc, $((SECONDS - t0)) s)" >> "$SUMMARY"
    status=1
  fi
  echo "--- $name: $((SECONDS - t0)) s"
}

{
  status=0
  echo "gpu_check $MODE $(date -u +%FT%TZ) git $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git status --porcelain 2>/dev/null | wc -l) uncommitted paths"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader || echo "nvidia-smi: not available"
  step "environment" 20 python -c "
import os, numpy
print('numpy', numpy.__version__)
try:
    import cupy; print('cupy', cupy.__version__, '| cupy.cuda.is_available()', cupy.cuda.is_available())
except Exception as e: print('cupy: MISSING or broken:', e)
from snpse_np.backends._numba_cuda import load
load()  # the package's loader (numba-cuda 0.30.4 under numpy >= 2.5 needs numpy.row_stack)
import numba
from numba import cuda
try:
    from importlib.metadata import version; nc = version('numba-cuda')
except Exception: nc = 'not installed (numba built-in cuda target)'
print('numba', numba.__version__, '| numba-cuda', nc, '| numba cuda.is_available()', cuda.is_available())
try:
    import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available())
except ImportError: print('torch: not installed (PyTorch rows and the CUPTI launch counts will be missing)')
for t in ('two_moons', 'slcp'):
    p = os.path.join('shared', 'sbibm', 'tasks', t)
    print(f'sbibm files for {t}:', 'present' if os.path.isdir(p) else 'MISSING (no C2ST for it; see the header of gpu_check.sh)')
"
  if ! python -c "import sys; from snpse_np.backend import gpu_available; sys.exit(0 if gpu_available() else 1)"; then
    echo
    echo "!!! no CUDA GPU visible to CuPy: the GPU steps cannot run (environment above)"
    echo "FAILED   no CUDA GPU: GPU steps not run" >> "$SUMMARY"
    cat "$SUMMARY"
    exit 1
  fi
  if [ "$MODE" = "tf32" ]; then
    step "TF32 C2ST: two_moons and slcp, float32 vs TF32" 280 python kernels/gpu_profile.py --sections e2e_tf32 \
      --max-seconds 30
  else
    step "pytest -m gpu" 75 python -m pytest -q -m gpu -p no:cacheprovider tests/test_ops.py tests/test_backend_e2e.py \
      tests/test_cuda_gpu.py
    step "gpu_profile: launches, loops, graphs, phases" 75 python kernels/gpu_profile.py \
      --sections launches loops graphs phases
    step "gpu_profile: the lab on the GPU (validation, then timing)" 90 python kernels/gpu_profile.py --sections lab
    step "end to end: two_moons 10k, default training (capped 40 s)" 70 python kernels/gpu_profile.py --sections e2e \
      --max-seconds 40
    step "kernel table" 35 python kernels/bench_all.py --quick --no-e2e --no-trajectory \
      --ops matmul bias_act dsm_loss adam sampler_step \
      --variants numpy prod_cuda cuda_v1_cublas cuda_v2_tf32 numba_cuda numba_cuda_dispatcher numba_cuda_v0_interface
    step "end to end vs PyTorch eager (examples/compare_torch.py)" 25 python examples/compare_torch.py --device cuda \
      --batches 256 --samples 10000 --em-steps 1000 --repeats 10 --threads 16
  fi
  echo
  echo "=== summary (${SECONDS}s) ==="
  cat "$SUMMARY"
  echo "gpu_check status $status (0: every step passed)"
  exit $status
} 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
