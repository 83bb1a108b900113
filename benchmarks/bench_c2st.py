"""Time and compare the two C2ST classifiers: scikit-learn's (sbibm-exact) vs the compiled fast one.

For each dimension d: X ~ N(0, I_d), Y ~ N(0.3 e_1, I_d) (a moderately separated pair),
n vs n samples (default 10,000 as in the paper), seed 1, z-scored, 5 folds. Prints both C2ST
values, their difference, the wall times and the speed-up, and the machine; then the cost of one
training epoch of each (20 epochs on one fold), which is the speed-up of a full run since both
use the same stopping rule. scikit-learn runs as ``c2st(classifier="sklearn")`` runs it, with
BLAS limited to one thread; the per-epoch table also times it with its default threads.
The full scikit-learn C2ST in 10-D takes minutes, so it runs only with ``--full``.

    python benchmarks/bench_c2st.py            # d = 2, 5 (both), 10 (fast only)
    python benchmarks/bench_c2st.py --full     # also scikit-learn in 10-D
    python benchmarks/bench_c2st.py --f64      # also time the fast classifier in float64

The fast classifier's Numba compilation is done (and timed) before the table.

Output of ``python benchmarks/bench_c2st.py --full --f64`` on the shared 2-core development
machine (other jobs were running: load average 2-5, so times vary by up to ~2x between runs;
without load the fast 10-D epoch took ~16 ms, i.e. ~6.5x scikit-learn's single-thread epoch)::

    Linux-6.18.44-fc-v657-x86_64-with-glibc2.36 | x86_64 | os.cpu_count()=2 | python 3.11.7 | numpy 2.4.6 | numba 0.68.1 | scikit-learn 1.9.1 | fast kernels: scipy BLAS
    fast classifier: first call incl. Numba compile/cache load 0.5 s

      d      n |  sklearn  time s |     fast  time s epochs |  fast-sk speed-up | fast f64  time s
    ----------------------------------------------------------------------------------------------
      2  10000 |   0.5600     5.9 |   0.5585     0.7     23 |  -0.0015     9.0x |   0.5579     0.6
      5  10000 |   0.5359   103.5 |   0.5298    17.1    318 |  -0.0061     6.0x |   0.5341    28.5
     10  10000 |   0.5129   182.6 |   0.5102    60.4    571 |  -0.0028     3.0x |   0.5092    92.6

    epochs: mean over the 5 folds of the fast classifier's training epochs (scikit-learn's stopping rule).

    per-epoch cost, 20 epochs on one training fold (16000 rows):
      d |    sk ms sk 1thr ms |  fast ms   vs sk vs 1thr |   f64 ms vs 1thr
    -----------------------------------------------------------------------
      2 |     23.5       23.0 |     2.76    8.5x    8.4x |     2.96    7.8x
      5 |     36.6       36.2 |     5.62    6.5x    6.4x |     8.86    4.1x
     10 |    837.4      106.5 |    27.73   30.2x    3.8x |    47.14    2.3x
    sk: scikit-learn with its default BLAS threads; sk 1thr: limited to one BLAS thread (as c2st(classifier='sklearn') runs it; identical results).

Earlier prototype runs of the same classifier on more 10k vs 10k pairs (fast - sklearn):
2-D same/shift/var/shift-1/banana: -0.001/-0.001/-0.001/-0.002/-0.003;
5-D same/shift/var/banana: -0.002/+0.004/-0.003/-0.004.
"""
import argparse
import contextlib
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
    full C2ST, whose epoch counts agree on average (same stopping rule). Returns
    (sklearn ms with default BLAS threads, sklearn ms with one BLAS thread, fast ms); the first
    two are None without scikit-learn.
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
        return None, None, 1e3 * t_fast / epochs
    sk_ms = []
    for limit in (False, True):  # scikit-learn as installed, then with one BLAS thread
        clf = MLPClassifier(activation="relu", hidden_layer_sizes=(10 * d, 10 * d),
                            max_iter=epochs, n_iter_no_change=epochs + 1, solver="adam",
                            random_state=1)
        ctx = metrics._single_threaded_blas() if limit else contextlib.nullcontext()
        with ctx:
            _, t_sk = timed(lambda: clf.fit(Z[train], labels[train]))
        sk_ms.append(1e3 * t_sk / clf.n_iter_)
    return sk_ms[0], sk_ms[1], 1e3 * t_fast / epochs


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
    head = (f"{'d':>3} | {'sk ms':>8} {'sk 1thr ms':>10} | {'fast ms':>8} {'vs sk':>7} "
            f"{'vs 1thr':>7}")
    if args.f64:
        head += f" | {'f64 ms':>8} {'vs 1thr':>7}"
    print(head)
    print("-" * len(head))
    nan = float("nan")
    for d in dims:
        sk_ms, sk1_ms, fast_ms = per_epoch_ms(d, args.n, args.epochs, np.float32)
        sk_ms = nan if sk_ms is None else sk_ms
        sk1_ms = nan if sk1_ms is None else sk1_ms
        line = (f"{d:3d} | {sk_ms:8.1f} {sk1_ms:10.1f} | {fast_ms:8.2f} {sk_ms / fast_ms:6.1f}x "
                f"{sk1_ms / fast_ms:6.1f}x")
        if args.f64:
            _, _, f64_ms = per_epoch_ms(d, args.n, args.epochs, np.float64)
            line += f" | {f64_ms:8.2f} {sk1_ms / f64_ms:6.1f}x"
        print(line, flush=True)
    print("sk: scikit-learn with its default BLAS threads; sk 1thr: limited to one BLAS thread "
          "(as c2st(classifier='sklearn') runs it; identical results).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
