"""Sample-based metrics for posterior quality: C2ST, MMD, posterior mean error and variance ratio.

C2ST (classifier two-sample test) measures how well a classifier tells reference posterior
samples ``X`` from an algorithm's samples ``Y``: the mean cross-validated accuracy of a small
neural network trained on the labelled union. 0.5 means indistinguishable, 1.0 perfectly
separable. It is the metric of the sbibm benchmark (Lueckmann et al., "Benchmarking
Simulation-Based Inference", AISTATS 2021; ``sbibm/metrics/c2st.py``), which the SNPSE paper
reports: 10,000 reference vs 10,000 algorithm samples, z-scored with the reference's mean and
unbiased std, scikit-learn ``MLPClassifier(activation="relu", hidden_layer_sizes=(10 d, 10 d),
max_iter=10000, solver="adam")``, 5-fold shuffled ``KFold``, seed 1.

Two classifiers implement it (``c2st(..., classifier=...)``):

* ``"sklearn"`` -- sbibm's exact recipe with scikit-learn (an optional dependency, imported only
  inside the call), run with BLAS limited to one thread (bit-identical results; OpenBLAS's
  default threading on a busy 2-core machine made 10-D runs ~7x slower). 10k vs 10k on 2 cores:
  ~5 s in 2-D, ~1.5 min in 5-D, ~3 min in 10-D (~20 min in 10-D with the default threads).
  Use it for spot checks and for the record.
* ``"fast"`` -- the project's own: the same network, loss, L2 penalty, initialisation scheme,
  Adam settings, minibatches, stopping rule (training loss not improved by 1e-4 for more than
  10 epochs) and the same KFold test folds, compiled with Numba (``_c2st_numba``) in float32
  (sbibm's inputs are float32 tensors, so scikit-learn trains in float32 there too; float64
  gives the same numbers within noise at 1.1-1.7x the time). Its random stream
  (initialisation, epoch shuffles) is numpy's ``Generator`` seeded from ``seed``, not
  scikit-learn's, so its numbers are **not identical** to sbibm's: on Gaussian pairs at 10k vs
  10k they agreed within 0.007 (2-D, 5-D, 10-D; see ``benchmarks/bench_c2st.py``), at 8-9x the
  speed in 2-D, ~6x in 5-D and 3-7x in 10-D (the BLAS products dominate there). It needs
  neither scikit-learn nor (for its slower loop variant) scipy.
* ``"auto"`` (default) -- ``"fast"``. The benchmark grid uses it; it is also what runs where
  scikit-learn is missing.

The recipe's stopping rule makes C2ST a lottery for small but learnable differences: a fold whose
classifier does not leave the loss plateau at log 2 within ~12 epochs stops there and scores ~0.5,
one that does trains for hundreds of epochs and scores what it learns. Measured (session 6) on one
set of two_moons samples (NPSE-VE, 4,000 training steps, observation 1): scikit-learn with sbibm's
seed 1 scored 0.647 (its folds 0 and 1 trained 481 and 243 epochs), the fast classifier 0.520
(folds stopped after 13-24 epochs in 4 of 5); scikit-learn's fold 1 alone stopped after 13 epochs with
random_state 2 and 3, and the fast classifier's folds escaped in 1-2 of 5 for seeds 1-3 and in none
for seed 4 (fold accuracies 0.48-0.66). Both follow the recipe, and one number from either can be
off by ~0.1 there (whether the two escape equally often on average is not measured yet). Far from that regime (C2ST >= 0.7, or
differences a classifier finds in the first epochs) the two agree as above. Compare methods on
several observations, and treat single values between 0.5 and ~0.65 as noisy.

Why not early stopping on held-out data, which would be much faster still: scikit-learn trains
until the *training* loss plateaus (hundreds of epochs in 5-D), so on overlapping distributions it
overfits and reports a lower accuracy than an early-stopped network (e.g. 0.536 vs 0.556 for a
0.3 mean shift in 5-D). Matching sbibm's numbers needs sbibm's stopping rule.

Cheap metrics (sbibm ``metrics/moments.py``, ``metrics/mmd.py``): ``posterior_mean_error``,
``posterior_variance_ratio`` and ``mmd`` (unbiased MMD^2, Gaussian kernel with the median
heuristic). All functions take samples as arrays of shape (n, d) and raise ``ValueError`` for
wrong shapes, mismatched dimensions, non-finite rows or too few rows.
"""
import contextlib

import numpy as np

from .rng import child_seed

__all__ = ["c2st", "mmd", "posterior_mean_error", "posterior_variance_ratio"]

_CLASSIFIERS = ("auto", "fast", "sklearn")


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------

def _as_samples(a, name, min_rows):
    """``a`` as a float64 array (n, d) with finite entries and at least ``min_rows`` rows."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n, d), got shape {a.shape}"
                         " (for a single parameter pass x[:, None])")
    if a.shape[1] < 1:
        raise ValueError(f"{name} has no columns (shape {a.shape})")
    if a.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {a.shape[0]}")
    finite = np.isfinite(a).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(f"{name} has {bad.size} row(s) with NaN or inf (first at row {bad[0]})")
    return a


def _as_pair(X, Y, names, min_rows):
    X = _as_samples(X, names[0], min_rows)
    Y = _as_samples(Y, names[1], min_rows)
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"{names[0]} and {names[1]} have different dimensions: "
                         f"{X.shape[1]} vs {Y.shape[1]}")
    return X, Y


def _reference_std(X, name):
    """Unbiased per-column std of ``X`` (n, d) -> (d,); a constant column is an error."""
    std = X.std(axis=0, ddof=1)
    if np.any(std == 0):
        raise ValueError(f"{name} has constant column(s) {np.flatnonzero(std == 0).tolist()}:"
                         " zero standard deviation")
    return std


# --------------------------------------------------------------------------------------------
# C2ST
# --------------------------------------------------------------------------------------------

def c2st(X, Y, seed=1, n_folds=5, z_score=True, classifier="auto", max_samples=None):
    """Classifier two-sample test accuracy of reference samples ``X`` vs algorithm samples ``Y``.

    Args:
        X: reference samples, (n_x, d).
        Y: algorithm samples, (n_y, d).
        seed: int; seeds the KFold shuffle (as scikit-learn's ``random_state``) and the
            classifier (scikit-learn's ``random_state``, or the fast classifier's Generator).
        n_folds: number of cross-validation folds (sbibm: 5).
        z_score: standardise X and Y with X's mean and unbiased std (sbibm's paper metric).
        classifier: ``"auto"`` (= ``"fast"``), ``"fast"`` (compiled, this project's) or
            ``"sklearn"`` (sbibm's exact recipe; needs scikit-learn). See the module docstring.
        max_samples: if given, use only the first ``max_samples`` rows of X and of Y
            (sbibm: the first 10,000 of each).

    Returns:
        float: mean test accuracy over the folds; 0.5 = indistinguishable, 1.0 = separable.
    """
    if classifier not in _CLASSIFIERS:
        raise ValueError(f"classifier must be one of {_CLASSIFIERS}, got {classifier!r}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    n_folds = int(n_folds)
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    if max_samples is not None:
        if int(max_samples) < 1:
            raise ValueError(f"max_samples must be a positive int, got {max_samples!r}")
        X = np.asarray(X)[: int(max_samples)]
        Y = np.asarray(Y)[: int(max_samples)]
    X, Y = _as_pair(X, Y, ("X", "Y"), min_rows=max(2, n_folds))
    Z, labels = _c2st_data(X, Y, z_score)
    if classifier == "sklearn":
        accs = _c2st_sklearn(Z, labels, seed, n_folds)
    else:
        accs, _ = _c2st_fast(Z, labels, seed, n_folds)
    return float(np.mean(accs))


def _c2st_data(X, Y, z_score):
    """Labelled union as sbibm builds it: data = concat(X, Y) (n_x + n_y, d) in float32, labels 0 / 1.

    z-scoring uses X's statistics only (mean, std with ddof 1), applied to both X and Y.
    """
    if z_score:
        mean = X.mean(axis=0)
        std = _reference_std(X, "X")
        X = (X - mean) / std
        Y = (Y - mean) / std
    Z = np.ascontiguousarray(np.concatenate([X, Y]), dtype=np.float32)
    labels = np.concatenate([np.zeros(len(X)), np.ones(len(Y))])
    return Z, labels


def _kfold_test_folds(n, n_folds, seed):
    """Test indices of scikit-learn's ``KFold(n_folds, shuffle=True, random_state=seed)``.

    Same algorithm (legacy ``RandomState(seed).shuffle`` of arange(n), then consecutive folds,
    the first ``n % n_folds`` one longer), so both classifiers are scored on the same folds.
    Returns a list of ``n_folds`` sorted int arrays (scikit-learn's ``split`` yields them sorted).
    """
    if n < n_folds:
        raise ValueError(f"need at least n_folds={n_folds} rows in total, got {n}")
    idx = np.arange(n)
    np.random.RandomState(seed).shuffle(idx)
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [np.sort(idx[bounds[i]:bounds[i + 1]]) for i in range(n_folds)]


def _c2st_sklearn(Z, labels, seed, n_folds):
    """sbibm's C2ST classifier and CV on prepared data; returns the fold accuracies (n_folds,)."""
    try:
        from sklearn.model_selection import KFold, cross_val_score
        from sklearn.neural_network import MLPClassifier
    except ImportError as err:  # optional extra
        raise ImportError("c2st(classifier='sklearn') needs scikit-learn; install it or use "
                          "classifier='fast'") from err
    d = Z.shape[1]
    clf = MLPClassifier(activation="relu", hidden_layer_sizes=(10 * d, 10 * d), max_iter=10000,
                        solver="adam", random_state=seed)
    cv = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    # one BLAS thread gives bit-identical weights (OpenBLAS splits the output, not the sums)
    # and avoids the oversubscription that makes 10-D runs take ~20 min on a shared machine
    with _single_threaded_blas():
        return cross_val_score(clf, Z, labels, cv=cv, scoring="accuracy")


def _scipy_blas_available():
    """Numba's ``np.dot`` calls scipy's BLAS; without scipy the kernels fall back to loops."""
    try:
        import scipy.linalg.cython_blas  # noqa: F401  (also loads the library for threadpoolctl)
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def _single_threaded_blas():
    """Limit BLAS to one thread while a C2ST classifier trains (if threadpoolctl is installed).

    The products are small (200 x 10 d x 10 d); OpenBLAS still splits them over threads, which on
    a busy 2-core machine costs far more than it gains: scikit-learn's 10-D epochs measured
    ~1.2 s with the default threads vs ~0.1 s with one, with identical results. The limit is
    process-wide while it lasts (threadpoolctl restores the previous setting on exit).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _c2st_fast(Z, labels, seed, n_folds, dtype=np.float32, blas=True):
    """The fast classifier's cross-validation on prepared data (see ``_c2st_data``).

    Z: (n, d); labels: (n,) in {0, 1}; dtype: float32 or float64 (network arithmetic);
    blas: use scipy's BLAS when available (False forces the loop kernels).
    Fold k trains from ``numpy.random.default_rng(child_seed(seed, k))``.
    Returns ``(fold accuracies (n_folds,), epochs per fold (n_folds,))``.
    """
    from . import _c2st_numba  # numba loads here, not at import of this module

    Z = np.ascontiguousarray(Z, dtype=dtype)
    y = np.ascontiguousarray(labels, dtype=dtype)
    use_blas = 1 if (blas and _scipy_blas_available()) else None
    n = len(Z)
    accs = np.empty(n_folds)
    epochs = np.empty(n_folds, dtype=np.int64)
    with _single_threaded_blas():
        for k, test in enumerate(_kfold_test_folds(n, n_folds, seed)):
            train = np.ones(n, dtype=bool)
            train[test] = False
            rng = np.random.default_rng(child_seed(seed, k))
            accs[k], epochs[k] = _c2st_numba.fit_predict_accuracy(
                Z[train], y[train], Z[test], y[test], rng, blas=use_blas)
    return accs, epochs


# --------------------------------------------------------------------------------------------
# moments
# --------------------------------------------------------------------------------------------

def posterior_mean_error(samples, reference):
    """Mean over dimensions of |mean(samples) - mean(reference)| / std(reference).

    samples: (n, d); reference: (m, d); std unbiased (ddof 1). Returns a float >= 0.
    sbibm's ``posterior_mean_error`` documents the absolute error but averages the *signed*
    normalised differences (errors of opposite sign cancel); this takes the absolute value.
    """
    samples, reference = _as_pair(samples, reference, ("samples", "reference"), min_rows=2)
    std = _reference_std(reference, "reference")
    return float(np.mean(np.abs(samples.mean(axis=0) - reference.mean(axis=0)) / std))


def posterior_variance_ratio(samples, reference):
    """Mean over dimensions of var(samples) / var(reference) (unbiased variances).

    samples: (n, d); reference: (m, d). 1 is ideal; < 1 over-concentrated, > 1 too wide.
    """
    samples, reference = _as_pair(samples, reference, ("samples", "reference"), min_rows=2)
    var_ref = _reference_std(reference, "reference") ** 2
    return float(np.mean(samples.var(axis=0, ddof=1) / var_ref))


# --------------------------------------------------------------------------------------------
# MMD
# --------------------------------------------------------------------------------------------

_BLOCK = 2048        # rows per block: a (2048, 2048) float64 block is 32 MiB
_MEDIAN_BINS = 1 << 16
_MEDIAN_CAP = 1 << 22  # collect at most this many candidate values for the exact selection


def _sq_dist_block(A, sa, B, sb):
    """Squared distances (len(A), len(B)) from rows and their squared norms; clipped at 0.

    |a|^2 + |b|^2 - 2 a.b, in place in the BLAS product's buffer (one block-sized array).
    """
    D = A @ B.T
    D *= -2.0
    D += sa[:, None]
    D += sb[None, :]
    np.maximum(D, 0.0, out=D)
    return D


def _pair_sq_dists(X):
    """Yield the squared distances of all pairs i < j of rows of ``X`` (n, d), block by block (1-D)."""
    n = len(X)
    sq = np.einsum("ij,ij->i", X, X)
    upper = {}  # block size -> boolean mask of its strict upper triangle
    for i0 in range(0, n, _BLOCK):
        i1 = min(i0 + _BLOCK, n)
        for j0 in range(i0, n, _BLOCK):
            j1 = min(j0 + _BLOCK, n)
            D = _sq_dist_block(X[i0:i1], sq[i0:i1], X[j0:j1], sq[j0:j1])
            if j0 == i0:
                size = i1 - i0
                if size not in upper:
                    upper[size] = np.triu(np.ones((size, size), dtype=bool), k=1)
                yield D[upper[size]]
            else:
                yield D.ravel()


def _median_pairwise_distance(X):
    """Exact (lower) median of the n (n - 1) / 2 pairwise Euclidean distances of the rows of ``X``.

    The lower of the two middle values, as ``torch.median(torch.pdist(X))`` in sbibm. Computed
    without holding all distances: histogram passes over blocks narrow down the bin holding the
    median rank until it has few enough values to select from exactly.
    """
    X = X - X.mean(axis=0)  # centring makes |a|^2 + |b|^2 - 2 a.b cancel less
    n = len(X)
    rank = (n * (n - 1) // 2 - 1) // 2
    max_sq = float(np.max(np.einsum("ij,ij->i", X, X)))
    if max_sq == 0.0:  # all rows equal
        return 0.0
    hi0 = 4.0 * max_sq * (1 + 1e-9)  # |a - b|^2 <= (|a| + |b|)^2 after centring
    levels = []  # (lo, hi, bin) of earlier passes: a value survives if it fell in each bin

    def binned(v, lo, hi):
        """Bin index in [0, _MEDIAN_BINS) of each value of v on [lo, hi) (edges clipped)."""
        idx = (v - lo) * (_MEDIAN_BINS / (hi - lo))
        idx = idx.astype(np.int64)  # truncation = floor for the values >= lo that matter
        return np.clip(idx, 0, _MEDIAN_BINS - 1, out=idx)

    def surviving(v):
        for lo_, hi_, b_ in levels:
            v = v[binned(v, lo_, hi_) == b_]
        return v

    lo, hi = 0.0, hi0
    while True:
        counts = np.zeros(_MEDIAN_BINS, dtype=np.int64)
        for D in _pair_sq_dists(X):
            counts += np.bincount(binned(surviving(D), lo, hi), minlength=_MEDIAN_BINS)
        cum = np.cumsum(counts)
        b = int(np.searchsorted(cum, rank, side="right"))
        rank -= int(cum[b] - counts[b])
        width = (hi - lo) / _MEDIAN_BINS
        if counts[b] <= _MEDIAN_CAP:
            vals = np.concatenate([v[binned(v, lo, hi) == b]
                                   for v in map(surviving, _pair_sq_dists(X))])
            return float(np.sqrt(np.partition(vals, rank)[rank]))
        if width <= 1e-15 * hi0:  # all remaining candidates are equal to rounding
            return float(np.sqrt(lo + b * width))
        levels.append((lo, hi, b))
        lo, hi = lo + b * width, lo + (b + 1) * width


def _kernel_sum(A, B, gamma, same):
    """Sum of exp(-gamma |a - b|^2) over a in A (m, d), b in B (k, d), blockwise.

    With ``same`` (A is B), the sum over ordered pairs a != b (off-diagonal), using symmetry:
    blocks above the diagonal count twice, diagonal blocks once minus their trace.
    """
    sa = np.einsum("ij,ij->i", A, A)
    sb = sa if same else np.einsum("ij,ij->i", B, B)
    total = 0.0
    for i0 in range(0, len(A), _BLOCK):
        i1 = min(i0 + _BLOCK, len(A))
        for j0 in range(i0 if same else 0, len(B), _BLOCK):
            j1 = min(j0 + _BLOCK, len(B))
            K = _sq_dist_block(A[i0:i1], sa[i0:i1], B[j0:j1], sb[j0:j1])
            K *= -gamma
            np.exp(K, out=K)
            if not same:
                total += K.sum()
            elif j0 == i0:
                total += K.sum() - np.trace(K)
            else:
                total += 2.0 * K.sum()
    return total


def mmd(X, Y):
    """Unbiased squared maximum mean discrepancy between ``X`` (m, d) and ``Y`` (n, d).

    Gaussian kernel k(a, b) = exp(-|a - b|^2 / (2 sigma^2)) with sigma = median pairwise distance
    of X (reference), no z-scoring, as sbibm's default (``tp_sutherland``):
    MMD^2 = mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j).
    Can be slightly negative when the distributions agree. Memory: blocks of 2048 x 2048.
    """
    X, Y = _as_pair(X, Y, ("X", "Y"), min_rows=2)
    sigma = _median_pairwise_distance(X)
    if sigma == 0:
        raise ValueError("X has a median pairwise distance of 0 (mostly duplicate rows)")
    # shift both by X's mean: distances are unchanged, the norm expansion cancels less
    mean = X.mean(axis=0)
    X = X - mean
    Y = Y - mean
    gamma = 1.0 / (2.0 * sigma ** 2)
    m, n = len(X), len(Y)
    kxx = _kernel_sum(X, X, gamma, same=True) / (m * (m - 1))
    kyy = _kernel_sum(Y, Y, gamma, same=True) / (n * (n - 1))
    kxy = _kernel_sum(X, Y, gamma, same=False) / (m * n)
    return float(kxx + kyy - 2.0 * kxy)
