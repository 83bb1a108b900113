"""Time and compare the two C2ST classifiers: scikit-learn's (sbibm-exact) vs the compiled fast one.

For each dimension d: X ~ N(0, I_d), Y ~ N(0.3 e_1, I_d) (a moderately separated pair),
n vs n samples (default 10,000 as in the paper), seed 1, z-scored, 5 folds. Prints both C2ST
values, their difference, the wall times and the speed-up, and the machine. scikit-learn in
10-D takes ~20 min on 2 cores, so it runs there only with ``--full``.

    python benchmarks/bench_c2st.py            # d = 2, 5 (both), 10 (fast only)
    python benchmarks/bench_c2st.py --full     # also scikit-learn in 10-D
    python benchmarks/bench_c2st.py --f64      # also time the fast classifier in float64

The fast classifier's Numba compilation is done (and timed) before the table.
"""
import argparse
import os
import platform
import sys
import time
import warnings

import numpy as np

from snpse_np import metrics


def gaussian_pair(d, n, seed=0):
    """X ~ N(0, I_d), Y ~ N(0.3 e_1, I_d), each (n, d)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Y = rng.normal(size=(n, d))
    Y[:, 0] += 0.3
    return X, Y


def machine():
    import numba
    try:
        import sklearn
        skv = sklearn.__version__
    except ImportError:
        skv = "not installed"
    blas = "scipy BLAS" if metrics._scipy_blas_available() else "loops (no scipy)"
    return (f"{platform.platform()} | {platform.processor() or platform.machine()} | "
            f"os.cpu_count()={os.cpu_count()} | python {platform.python_version()} | "
            f"numpy {np.__version__} | numba {numba.__version__} | scikit-learn {skv} | "
            f"fast kernels: {blas}")


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def per_epoch_ms(d, n, epochs, dtype):
    """Milliseconds per training epoch on one fold (4/5 of 2n rows), scikit-learn vs fast.

    Both run exactly ``epochs`` epochs (stopping disabled), so the ratio is the speed-up of a
    full C2ST, whose epoch counts agree on average (same stopping rule). Returns (sk_ms, fast_ms);
    sk_ms is None without scikit-learn.
    """
    from snpse_np import _c2st_numba

    X, Y = gaussian_pair(d, n)
    Z, labels = metrics._c2st_data(X, Y, z_score=True)
    test = metrics._kfold_test_folds(len(Z), 5, 1)[0]
    train = np.setdiff1d(np.arange(len(Z)), test)
    Zf = np.ascontiguousarray(Z[train], dtype=dtype)
    yf = labels[train].astype(dtype)
    blas = 1 if metrics._scipy_blas_available() else None
    with metrics._single_threaded_blas():
        _, t_fast = timed(lambda: _c2st_numba.fit_predict_accuracy(
            Zf, yf, Zf[:10], yf[:10], np.random.default_rng(1), blas=blas,
            max_iter=epochs, n_iter_no_change=epochs + 1))
    try:
        from sklearn.neural_network import MLPClassifier
    except ImportError:
        return None, 1e3 * t_fast / epochs
    clf = MLPClassifier(activation="relu", hidden_layer_sizes=(10 * d, 10 * d), max_iter=epochs,
                        n_iter_no_change=epochs + 1, solver="adam", random_state=1)
    _, t_sk = timed(lambda: clf.fit(Z[train], labels[train]))
    return 1e3 * t_sk / clf.n_iter_, 1e3 * t_fast / epochs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="samples per side")
    parser.add_argument("--dims", default="2,5,10", help="comma-separated dimensions")
    parser.add_argument("--seed", type=int, default=1, help="C2ST seed")
    parser.add_argument("--full", action="store_true", help="run scikit-learn in 10-D too")
    parser.add_argument("--f64", action="store_true", help="also time the fast path in float64")
    parser.add_argument("--epochs", type=int, default=20, help="epochs for the per-epoch timing")
    args = parser.parse_args(argv)
    dims = [int(s) for s in args.dims.split(",")]
    warnings.simplefilter("ignore")  # scikit-learn's convergence chatter

    print(machine())
    Xw, Yw = gaussian_pair(2, 200)
    _, t_compile = timed(lambda: metrics.c2st(Xw, Yw))
    if args.f64:
        Zw, lw = metrics._c2st_data(Xw, Yw, z_score=True)
        metrics._c2st_fast(Zw, lw, 1, 5, dtype=np.float64)
    print(f"fast classifier: first call incl. Numba compile/cache load {t_compile:.1f} s\n")

    head = (f"{'d':>3} {'n':>6} | {'sklearn':>8} {'time s':>7} | {'fast':>8} {'time s':>7} "
            f"{'epochs':>6} | {'fast-sk':>8} {'speed-up':>8}")
    if args.f64:
        head += f" | {'fast f64':>8} {'time s':>7}"
    print(head)
    print("-" * len(head))
    for d in dims:
        X, Y = gaussian_pair(d, args.n)
        Z, labels = metrics._c2st_data(X, Y, z_score=True)
        (accs, epochs), t_fast = timed(lambda: metrics._c2st_fast(Z, labels, args.seed, 5))
        fast = accs.mean()
        run_sk = d < 10 or args.full
        if run_sk:
            sk, t_sk = timed(lambda: metrics.c2st(X, Y, seed=args.seed, classifier="sklearn"))
            sk_cols = f"{sk:8.4f} {t_sk:7.1f}"
            cmp_cols = f"{fast - sk:+8.4f} {t_sk / t_fast:7.1f}x"
        else:
            sk_cols = f"{'(--full)':>8} {'':>7}"
            cmp_cols = f"{'':>8} {'':>8}"
        line = (f"{d:3d} {args.n:6d} | {sk_cols} | {fast:8.4f} {t_fast:7.1f} "
                f"{int(np.mean(epochs)):6d} | {cmp_cols}")
        if args.f64:
            (acc64, _), t64 = timed(lambda: metrics._c2st_fast(Z, labels, args.seed, 5,
                                                               dtype=np.float64))
            line += f" | {acc64.mean():8.4f} {t64:7.1f}"
        print(line, flush=True)
    print("\nepochs: mean over the 5 folds of the fast classifier's training epochs "
          "(scikit-learn's stopping rule).")

    # per-epoch cost: the speed-up estimate where the full scikit-learn run is skipped (10-D)
    print(f"\nper-epoch cost, {args.epochs} epochs on one training fold ({8 * args.n // 5} rows):")
    head = f"{'d':>3} | {'sklearn ms':>10} {'fast ms':>8} {'ratio':>7}"
    if args.f64:
        head += f" | {'f64 ms':>8} {'ratio':>7}"
    print(head)
    print("-" * len(head))
    for d in dims:
        sk_ms, fast_ms = per_epoch_ms(d, args.n, args.epochs, np.float32)
        line = f"{d:3d} | {sk_ms or float('nan'):10.2f} {fast_ms:8.2f} {(sk_ms or np.nan) / fast_ms:6.1f}x"
        if args.f64:
            _, f64_ms = per_epoch_ms(d, args.n, args.epochs, np.float64)
            line += f" | {f64_ms:8.2f} {(sk_ms or np.nan) / f64_ms:6.1f}x"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
