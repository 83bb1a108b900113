"""Checks of the GPU code without a GPU: every numba.cuda kernel compiled to PTX for sm_90 and
through ptxas (registers, shared memory, spills), the CuPy RawModule source through nvcc, and
numba.cuda imported only through the package's loader (no import patches numpy).

The CUDA simulator runs kernels as Python, so it never types them: a kernel can pass every
simulator test and still fail to compile for the device (seen while writing the fused kernels:
``min`` of two ints, a namespace attribute as a callee, a shared-array shape written as an
expression). Numba's CUDA target compiles PTX with NVVM and no driver; ptxas (CUDA 13) turns it
into sm_90 code and reports the resources. Checked, for the shapes the GPU runs:

- it compiles; no register spills; static shared memory <= 48 KB (the per-block static limit);
- the fused and block kernels fit the register budget that gives the occupancy they are
  designed for (<= 128 registers a thread: two 256-thread blocks per multiprocessor).

Skipped where numba cannot find NVVM or ptxas / nvcc are missing, and under
NUMBA_ENABLE_CUDASIM=1 (the simulator has no compiler). Numba's built-in CUDA target (0.68 here)
stands in for numba-cuda 0.30.4 on the GPU machines; typing rules are shared, the code generator
differs in details, so the GPU run still decides.
"""
import ast
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
PTXAS = shutil.which("ptxas") or ("/usr/local/cuda/bin/ptxas" if os.path.exists("/usr/local/cuda/bin/ptxas") else None)
NVCC = shutil.which("nvcc")
SMEM_LIMIT = 48 * 1024
pytestmark = pytest.mark.skipif(SIM, reason="the CUDA simulator has no compiler")


@pytest.fixture(scope="module")
def compiler():
    """numba's compile_ptx with a stand-in device of compute capability 9.0 (device functions
    ask the current device for it; there is none here)."""
    if PTXAS is None:
        pytest.skip("ptxas not found")
    from numba import cuda
    import numba.cuda.dispatcher as dispatcher

    class _Device:
        compute_capability = (9, 0)

    saved = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: _Device()

    def probe(a):
        i = cuda.grid(1)
        if i < a.shape[0]:
            a[i] = 1.0

    try:
        cuda.compile_ptx(probe, "void(float32[::1])", cc=(9, 0))
    except Exception as e:  # no NVVM: nothing to check here
        dispatcher.get_current_device = saved
        pytest.skip(f"numba cannot compile PTX here: {type(e).__name__}: {str(e).splitlines()[0]}")
    yield cuda.compile_ptx
    dispatcher.get_current_device = saved


def ptxas_report(compile_ptx, dispatcher, signature, tmp_path, name):
    """(registers, static shared bytes, spill bytes, text) of ``dispatcher.py_func`` compiled for sm_90."""
    ptx, _ = compile_ptx(dispatcher.py_func, signature, cc=(9, 0))
    path = tmp_path / f"{name}.ptx"
    path.write_text(ptx)
    cmd = [PTXAS, "-arch=sm_90", "-v", str(path), "-o", str(tmp_path / f"{name}.cubin")]
    max_regs = getattr(dispatcher, "targetoptions", {}).get("max_registers")
    if max_regs:
        cmd.insert(2, f"-maxrregcount={max_regs}")
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # the entry function's report comes after its "Compiling entry function" line
    text = r.stderr.split("Compiling entry function", 1)[1]
    regs = int(re.search(r"Used (\d+) registers", text).group(1))
    smem = re.search(r"(\d+) bytes smem", text)
    spills = [int(a) + int(b) for a, b in re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)]
    return regs, int(smem.group(1)) if smem else 0, max(spills or [0]), r.stderr


def _package_kernels():
    from snpse_np.backends._numba_cuda import load
    nk = load()
    return [(f"_cuda_kernels.{name}.{np.dtype(dt).name}", kern, nk._signature(name, dt))
            for name, kern in nk.KERNELS.items() for dt in (np.float32, np.float64)]


def _lab_kernels():
    from kernels import em_trajectory, fused_mlp, train_step
    return fused_mlp.ptx_signatures() + em_trajectory.ptx_signatures() + train_step.ptx_signatures()


# 128 registers a thread keeps two 256-thread blocks per multiprocessor for the fused and block kernels
REGISTER_BUDGET = {"fused_mlp.": 128, "em_trajectory.block": 128}


@pytest.mark.parametrize("which", ["package", "lab"])
def test_numba_cuda_kernels_compile_for_sm90_without_spills(compiler, tmp_path, which):
    kernels = _package_kernels() if which == "package" else _lab_kernels()
    report = []
    for label, kern, sig in kernels:
        regs, smem, spill, _ = ptxas_report(compiler, kern, sig, tmp_path, label.replace(".", "_"))
        report.append(f"{label}: {regs} registers, {smem} B static shared, {spill} B spilled")
        assert spill == 0, f"{label} spills {spill} bytes"
        assert smem <= SMEM_LIMIT, f"{label} needs {smem} B of static shared memory"
        for prefix, budget in REGISTER_BUDGET.items():
            if label.startswith(prefix):
                assert regs <= budget, f"{label}: {regs} registers > {budget}"
    print("\n".join(report))


def _cuda_py_sources():
    tree = ast.parse(open(os.path.join(ROOT, "snpse_np", "backends", "cuda.py")).read())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("_REDUCE_SRC", "_PREAMBLE"):
                out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


@pytest.mark.skipif(NVCC is None, reason="nvcc not found")
def test_cupy_raw_module_source_compiles_for_sm90(tmp_path):
    src = _cuda_py_sources()
    instances = []
    for T in ("float", "double"):
        instances += [f"template __global__ void dsm_loss<{T}>({T}*, const {T}*, const {T}*, const {T}*, double*, int, int);",
                      f"template __global__ void row_norm_sums<{T}>(const {T}*, const {T}*, double*, int, int);",
                      f"template __global__ void trace_rows<{T}>({T}*, const {T}*, const {T}*, int, int, int);"]
    acts = "".join(f"__global__ void use_{a}_{T}({T}* x) {{ x[0] = F_{a}(x[0]) + G_{a}(x[1]); }}\n"
                   for a in ("identity", "silu", "relu", "gelu", "tanh") for T in ("float", "double"))
    cu = tmp_path / "cuda_py.cu"
    cu.write_text(src["_PREAMBLE"] + "\n" + src["_REDUCE_SRC"] + "\n" + "\n".join(instances) + "\n" + acts)
    r = subprocess.run([NVCC, "-ptx", "-arch=sm_90", "--std=c++11", str(cu), "-o", str(tmp_path / "cuda_py.ptx")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_numba_cuda_loads_through_the_loader_only():
    """Importing the kernels module directly on a numpy without row_stack (numpy >= 2.5) fails
    and names the loader; the loader adds the alias and imports them; importing snpse_np or the
    cuda backend's neighbours patches nothing."""
    code = ("import numpy, sys\n"
            "had = hasattr(numpy, 'row_stack')\n"
            "if had: del numpy.row_stack\n"
            "import snpse_np, snpse_np.backends.numpy_ref, snpse_np.backends._numba_cuda\n"
            "assert not hasattr(numpy, 'row_stack'), 'an import patched numpy'\n"
            "try:\n"
            "    import snpse_np.backends._cuda_kernels\n"
            "    raise SystemExit('imported without the loader')\n"
            "except ImportError as e:\n"
            "    assert '_numba_cuda.load()' in str(e), e\n"
            "from snpse_np.backends._numba_cuda import load\n"
            "nk = load()\n"
            "assert numpy.row_stack is numpy.vstack and hasattr(nk, 'NumbaLaunches')\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"})
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr
