"""The ``snpse`` command.

    snpse run two_moons                 simulate, train, sample, summarise, write results
                                        (the run of ``snpse bench --method npse``, one observation)
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
    from snpse_np.bench import npse_on_task, score_samples
    from snpse_np.files import write_atomic
    from snpse_np.tasks import get_task

    _check_out_dir(args.out)  # found out at the end, it would throw away simulation and training
    task = get_task(args.task)
    task.observation(args.obs)  # a bad observation number fails here, before any work
    print(f"task {task.name}: dim theta {task.dim_theta}, dim x {task.dim_x}, observation {args.obs}")
    train_kwargs = {k: v for k, v in dict(max_steps=args.max_steps, max_epochs=args.max_epochs,
                                          max_seconds=args.max_seconds).items() if v is not None}
    _, posterior, [(_, samples, _)] = npse_on_task(
        task, args.num_simulations, [args.obs], seed=args.seed, sde=args.sde, backend=args.backend,
        sampler=args.sampler, num_samples=args.num_samples, threads=args.threads, train_kwargs=train_kwargs,
        show_progress=not args.quiet, say=print, baseline=args.baseline)
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
        t0 = time.perf_counter()
        score = score_samples(ref, samples, classifier="fast")[0]
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
    run.add_argument("--baseline", default=None, choices=["gaussian", "auto"],
                     help="a linear-Gaussian score the network corrects: on, or kept only if it lowers the "
                          "validation loss (auto: trains twice)")
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
