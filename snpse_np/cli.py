"""The ``snpse`` command.

    snpse run two_moons                 simulate, train, sample, summarise, write results
    snpse bench --task slcp ...         benchmark runs appended to a CSV (see snpse_np.bench)
    snpse check post.npz --task ...     SBC, coverage, TARP, predictive checks (see snpse_np.check)

A bad argument (a ValueError from the package) ends with one line on stderr and exit status 2,
as argparse's own usage errors do, not a traceback.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np


def _check_out_dir(out):
    """Create ``out`` and make sure a file can be written there, before any work is done."""
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise ValueError(f"--out {out}: cannot write there ({err.strerror or err})") from None


def _run(args):
    import snpse_np as sn
    from snpse_np.files import write_atomic
    from snpse_np.tasks import get_task

    _check_out_dir(args.out)  # found out at the end, it would throw away simulation and training
    task = get_task(args.task)
    x_o = task.observation(args.obs)
    print(f"task {task.name}: dim theta {task.dim_theta}, dim x {task.dim_x}, observation {args.obs}")
    t0 = time.perf_counter()
    theta = task.prior.sample(args.num_simulations, seed=args.seed)
    x = sn.simulate(task.simulate, theta, seed=args.seed + 1, progress=not args.quiet)
    t_sim = time.perf_counter() - t0
    print(f"simulated {args.num_simulations} in {t_sim:.1f}s")
    sde_kwargs = {}
    if args.sde == "ve" and task.ve_sigma_limits is not None:
        sde_kwargs["sigma_min"] = task.ve_sigma_limits[0]
    inference = sn.NPSE(task.prior, sde=args.sde, backend=args.backend, seed=args.seed,
                        show_progress=not args.quiet, threads=args.threads, **sde_kwargs)
    posterior = inference.append_simulations(theta, x).train(max_steps=args.max_steps, max_epochs=args.max_epochs,
                                                             max_seconds=args.max_seconds)
    t0 = time.perf_counter()
    samples = posterior.sample(args.num_samples, x=x_o, sampler=args.sampler, seed=args.seed + 2,
                               reject_outside_prior=True)
    t_sample = time.perf_counter() - t0
    print(f"sampled {args.num_samples} in {t_sample:.1f}s ({args.sampler} sampler)")
    ref = None
    try:
        ref = task.reference_samples(args.obs)
    except Exception as err:  # the reference files are optional for a run
        print(f"(no reference samples: {err})")
    true = task.true_parameters(args.obs)
    print(f"{'dim':>4} {'mean':>9} {'std':>9} {'ref mean':>9} {'ref std':>9} {'true':>9}")
    for j in range(task.dim_theta):
        rm = f"{ref[:, j].mean():9.4f}" if ref is not None else f"{'-':>9}"
        rs = f"{ref[:, j].std():9.4f}" if ref is not None else f"{'-':>9}"
        print(f"{j + 1:>4} {samples[:, j].mean():9.4f} {samples[:, j].std():9.4f} {rm} {rs} {true[j]:9.4f}")
    if ref is not None and not args.no_c2st:
        from snpse_np.metrics import c2st
        t0 = time.perf_counter()
        score = c2st(ref[:args.num_samples], samples[:len(ref)], classifier="fast")
        print(f"C2ST against the sbibm reference (fast classifier): {score:.3f} "
              f"({time.perf_counter() - t0:.1f}s; 0.5 is perfect)")
    header = ",".join(f"theta_{j + 1}" for j in range(task.dim_theta))
    write_atomic(os.path.join(args.out, "samples.csv"),
                 lambda fh: np.savetxt(fh, samples, delimiter=",", header=header, comments=""), mode="w")
    posterior.save(os.path.join(args.out, "posterior.npz"))
    written = ["samples.csv", "posterior.npz"]
    try:
        from snpse_np.plot import pairplot
        pairplot(samples, reference=ref, truth=true, path=os.path.join(args.out, "pairplot.png"))
        written.append("pairplot.png")
    except ImportError:
        pass
    print(f"wrote {', '.join(written)} to {args.out}/")


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {value}")
    return value


def _backend(text):
    """'auto' (or 'None'): the best available backend, passed on as None."""
    return None if text in ("auto", "None", "none") else text


def main(argv=None):
    parser = argparse.ArgumentParser(prog="snpse", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="one inference on an sbibm task")
    run.add_argument("task", nargs="?", default="two_moons")
    run.add_argument("--num-simulations", type=_positive_int, default=10_000)
    run.add_argument("--obs", type=int, default=1, help="sbibm observation number 1..10")
    run.add_argument("--sde", default="ve", choices=["ve", "vp", "subvp"])
    run.add_argument("--sampler", default="ode", choices=["ode", "sde", "pc"])
    run.add_argument("--num-samples", type=_positive_int, default=10_000)
    run.add_argument("--backend", default=None, type=_backend, choices=[None, "numpy", "numba", "cuda"],
                     metavar="{auto,numpy,numba,cuda}", help="auto (the default): the best available")
    run.add_argument("--max-steps", type=_positive_int, default=None,
                     help="training budget in Adam steps (default: chosen from the number of simulations)")
    run.add_argument("--max-epochs", type=_positive_int, default=None, help="training budget in epochs")
    run.add_argument("--max-seconds", type=float, default=None,
                     help="wall-clock training budget (s): the learning rate anneals to it")
    run.add_argument("--threads", type=_positive_int, default=None,
                     help="BLAS/Numba threads for training and sampling (default 1, or $SNPSE_THREADS)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", default="runs/latest")
    run.add_argument("--no-c2st", action="store_true")
    run.add_argument("--quiet", action="store_true")
    run.set_defaults(func=_run)
    try:
        from snpse_np.bench import add_parser as add_bench
        add_bench(sub)
    except ImportError:
        pass
    from snpse_np.check import add_parser as add_check
    add_check(sub)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ValueError as err:
        message = " ".join(str(err).split())
        parser.exit(2, f"{parser.prog} {args.command}: error: {message}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
