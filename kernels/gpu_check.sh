#!/usr/bin/env bash
# The whole GPU check in ONE call, well under 5 minutes on one GPU (each step has a time cap;
# the caps add up to 330 s):
#   1. the environment (GPU, numpy/cupy/numba versions, both "is there a GPU" checks);
#   2. pytest -m gpu (every op on the cuda backend against numpy_ref; training and sampling
#      on cuda against numpy);
#   3. the kernel table (numpy and prod_cuda variants; largest sizes; the CPU variants are
#      measured on the development machines);
#   4. the whole-trajectory Euler-Maruyama kernels (validation, RNG moments, timing);
#   5. end to end next to plain PyTorch: training step at batch 256, Euler-Maruyama for
#      10,000 samples x 1,000 steps;
#   6. where a cuda training step and EM step spend their time (kernels/gpu_profile.py).
# Log: $OUT/gpu_check.log when OUT is set, else ./gpu_check.log. Run from anywhere:
#   bash kernels/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
LOG="${OUT:-.}/gpu_check.log"
SITE="$(mktemp -d)"
# numba-cuda 0.30.4 under numpy >= 2.5 fails at import ("no attribute 'row_stack'"): a
# sitecustomize puts numpy.row_stack back in every Python process started below.
cat > "$SITE/sitecustomize.py" <<'PY'
import numpy
if not hasattr(numpy, "row_stack"):
    numpy.row_stack = numpy.vstack
PY
export PYTHONPATH=".:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS CMD...: run with a cap, report its time, remember a failure
  local name=$1 cap=$2 t0=$SECONDS rc
  shift 2
  echo
  echo "=== $name (cap ${cap}s) ==="
  timeout "$cap" "$@"
  rc=$?
  [ $rc -ne 0 ] && { echo "!!! $name failed (rc $rc)"; status=1; }
  echo "--- $name: $((SECONDS - t0)) s"
}

{
  status=0
  echo "gpu_check $(date -u +%FT%TZ) git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  step "environment" 20 python -c "
import numpy, cupy, numba
from numba import cuda
print('numpy', numpy.__version__, '| cupy', cupy.__version__, '| numba', numba.__version__)
print('cupy.cuda.is_available()', cupy.cuda.is_available(), '| numba cuda.is_available()', cuda.is_available())
try:
    import torch; print('torch', torch.__version__, torch.cuda.is_available())
except ImportError:
    print('torch not installed')"
  step "pytest -m gpu" 100 python -m pytest -q -m gpu -p no:cacheprovider tests/test_ops.py tests/test_backend_e2e.py
  step "kernel table" 40 python kernels/bench_all.py --quick --no-e2e --no-trajectory --variants numpy prod_cuda cuda_v1_cublas numba_cuda
  step "whole-trajectory EM kernels" 70 python kernels/em_trajectory.py --repeats 2
  step "end to end vs PyTorch" 60 python examples/compare_torch.py --device cuda --batches 256 --samples 10000 \
    --em-steps 1000 --repeats 20 --threads 16
  step "step profile" 40 python kernels/gpu_profile.py --batch 256 --samples 10000
  echo
  echo "gpu_check status $status (0: every step passed)"
  exit $status
} 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
