"""The whole kernel lab in one table: every op x variant x size, with the device name, then the
end-to-end rows.

Sections:
- ops: each kernels/<op>.py file (bias_act, time_embedding, dsm_loss, adam, sampler_step):
  validated against numpy_ref at tiny sizes, then timed (median; the first call, i.e. the Numba
  compile or cache load, in its own column);
- em_trajectory: the sampler loop per backend (CPU: a few steps, extrapolated per 1,000) and,
  with a GPU, the whole-trajectory kernels at 10,000 samples x 1,000 steps;
- end to end: the NPSE training step (draws, perturb, forward, loss, backward, Adam) of the
  paper network (d = 5, p = 8) at batch 50/200/500 on each backend (and PyTorch with --torch),
  and one Euler-Maruyama step for 10,000 samples; implementations timed in turn (interleaved)
  so load changes on a shared machine hit all alike.

    PYTHONPATH=. python kernels/bench_all.py [--quick] [--torch] [--skip-parallel]
"""
import argparse
import importlib
import importlib.util
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from kernels.common import (device_name, gpu_available, print_table, time_module,  # noqa: E402
                            use_lab_threading_layer, validate_module)

OP_FILES = ("matmul", "bias_act", "time_embedding", "dsm_loss", "adam", "sampler_step")


def _compare_torch():
    """examples/compare_torch.py as a module (the end-to-end closures live there)."""
    path = os.path.join(ROOT, "examples", "compare_torch.py")
    spec = importlib.util.spec_from_file_location("compare_torch", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def op_rows(files, quick=False, skip_parallel=False, only=None):
    rows = []
    for name in files:
        mod = importlib.import_module(f"kernels.{name}")
        variants = [v for v in mod.VARIANTS if not (skip_parallel and "parallel" in v) and (not only or v in only)]
        n = validate_module(mod, variants=variants)
        print(f"{name}: {n} validations passed", flush=True)
        sizes = getattr(mod, "QUICK_SIZES", mod.TIMING_SIZES[-1:]) if quick else None
        for r in time_module(mod, sizes=sizes, variants=variants, repeats=5 if quick else 20,
                             min_time=0.02 if quick else 0.05):
            rows.append(dict(section="ops", **r))
    return rows


def trajectory_rows(quick=False):
    from kernels import em_trajectory as em
    rows = []
    for r in em.time_trajectories(repeats=2 if quick else 3):
        rows.append(dict(section="em_trajectory", op="em_trajectory", variant=r["variant"],
                         size=f"N={r['N']} steps={r['steps']} net={r['net']}", dtype="float32",
                         ms=f"{float(r['s']) * 1e3 / int(r['steps']):.4f} /step", first_call_s=r["first_call_s"],
                         rate=r["rate"], vs_numpy=""))
    return rows


def e2e_rows(batches=(50, 200, 500), n_samples=10_000, em_steps=3, with_torch=False, quick=False):
    ct = _compare_torch()
    backends = ["numpy", "numba"] + (["cuda"] if gpu_available() else [])
    impls = backends + (["torch"] if with_torch and ct.torch_available() else [])
    if "torch" in impls:
        import torch
        torch.set_num_threads(int(os.environ.get("OPENBLAS_NUM_THREADS", os.cpu_count())))
    rows = []
    repeats = 5 if quick else 20
    for batch in batches:
        fns = {}
        for b in impls:
            fns[b] = ct.torch_train_step("cpu", batch) if b == "torch" else ct.package_train_step(b, batch)
        res = ct.interleaved(fns, repeats=repeats)
        for b in impls:
            rows.append(dict(section="end-to-end", op="train_step", variant=b, size=f"B={batch}", dtype="float32",
                             ms=f"{res[b][0] * 1e3:.3f}", first_call_s=f"{res[b][1]:.3f}", rate="",
                             vs_numpy=f"{res['numpy'][0] / res[b][0]:.2f}x"))
    runs = {b: (ct.torch_sampler("cpu", n_samples) if b == "torch" else ct.package_sampler(b, n_samples))
            for b in impls}
    fns = {b: ((lambda run=run: run(em_steps)), sync) for b, (run, sync) in runs.items()}
    res = ct.interleaved(fns, warmup=0, repeats=2 if quick else 3)
    for b in impls:
        rows.append(dict(section="end-to-end", op="em_step", variant=b, size=f"N={n_samples}", dtype="float32",
                         ms=f"{res[b][0] * 1e3 / em_steps:.3f}", first_call_s=f"{res[b][1]:.3f}",
                         rate=f"{res[b][0] / em_steps * 1000:.1f} s/1000 steps",
                         vs_numpy=f"{res['numpy'][0] / res[b][0]:.2f}x"))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description="kernel lab: every op x variant x size in one table")
    ap.add_argument("--quick", action="store_true", help="largest size only, fewer repeats")
    ap.add_argument("--ops", nargs="*", default=list(OP_FILES))
    ap.add_argument("--no-e2e", action="store_true")
    ap.add_argument("--no-trajectory", action="store_true")
    ap.add_argument("--torch", action="store_true", help="PyTorch rows in the end-to-end section")
    ap.add_argument("--skip-parallel", action="store_true", help="leave out the prange variants")
    ap.add_argument("--variants", nargs="*", help="only these variant names (e.g. numpy prod prod_cuda)")
    args = ap.parse_args(argv)
    use_lab_threading_layer()  # before the first prange launch
    t0 = time.perf_counter()
    rows = op_rows(args.ops, args.quick, args.skip_parallel, args.variants)
    if not args.no_trajectory:
        rows += trajectory_rows(args.quick)
    if not args.no_e2e:
        rows += e2e_rows(with_torch=args.torch, quick=args.quick)
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print_table(rows, f"\ndevice: {device_name()}; BLAS threads: {threads}; {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
