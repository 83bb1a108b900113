"""Tests for snpse_np.metrics: C2ST (fast and scikit-learn), MMD, moment metrics, input checks.

Sample sizes are small (<= 2000 rows per side) to keep the file well under 90 s; the
comparisons with scikit-learn skip when it is not installed.
"""
import subprocess
import sys

import numpy as np
import pytest

from snpse_np import metrics
from snpse_np.metrics import c2st, mmd, posterior_mean_error, posterior_variance_ratio


def gaussian_pair(kind, d, n, seed=0):
    """Two (n, d) standard-normal samples; Y shifted by 0.3 in dim 0 ("shift"), scaled to
    variance 1.5 ("var"), both in dims 0 and 1 ("shift+var"), moved far away ("disjoint")
    or left alone ("same")."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Y = rng.normal(size=(n, d))
    if kind == "shift":
        Y[:, 0] += 0.3
    elif kind == "var":
        Y *= np.sqrt(1.5)
    elif kind == "shift+var":
        Y[:, 0] += 0.3
        Y[:, 1] *= np.sqrt(1.5)
    elif kind == "disjoint":
        Y += 10.0
    return X, Y


# ------------------------------------------------------------------ C2ST, fast classifier

def test_c2st_fast_same_distribution_is_chance():
    X, Y = gaussian_pair("same", 2, 2000)
    assert abs(c2st(X, Y) - 0.5) < 0.03


def test_c2st_fast_disjoint_is_one():
    X, Y = gaussian_pair("disjoint", 2, 1000)
    assert c2st(X, Y, classifier="fast") > 0.98


def test_c2st_auto_is_fast_and_deterministic():
    X, Y = gaussian_pair("shift", 2, 1000)
    a = c2st(X, Y, classifier="auto")
    assert a == c2st(X, Y, classifier="fast")
    assert a == c2st(X, Y)
    assert 0.5 < a < 0.65


def test_c2st_zscore_uses_reference_statistics():
    X, Y = gaussian_pair("var", 3, 500)
    Z, labels = metrics._c2st_data(X, Y, z_score=True)
    zx, zy = Z[labels == 0], Z[labels == 1]
    np.testing.assert_allclose(zx.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(zx.std(axis=0, ddof=1), 1.0, atol=1e-5)
    # Y is standardised with X's statistics, so it keeps its larger spread
    np.testing.assert_allclose(zy, ((Y - X.mean(0)) / X.std(0, ddof=1)).astype(np.float32),
                               rtol=1e-5, atol=1e-6)
    assert np.all(zy.std(axis=0) > 1.1)


def test_c2st_invariant_to_affine_map_of_both_samples():
    X, Y = gaussian_pair("shift", 2, 1000)
    scale = np.array([3.0, 0.02])
    shift = np.array([-50.0, 7.0])
    Z0, _ = metrics._c2st_data(X, Y, z_score=True)
    Z1, _ = metrics._c2st_data(X * scale + shift, Y * scale + shift, z_score=True)
    np.testing.assert_allclose(Z1, Z0, atol=1e-5)
    assert abs(c2st(X * scale + shift, Y * scale + shift) - c2st(X, Y)) < 0.01


def test_c2st_max_samples_takes_first_rows():
    X, Y = gaussian_pair("shift", 2, 800)
    assert c2st(X, Y, max_samples=500) == c2st(X[:500], Y[:500])


def test_c2st_loop_kernels_match_blas_kernels():
    # the scipy-free loop variant computes the same network up to float rounding
    X, Y = gaussian_pair("shift", 2, 1000)
    Z, labels = metrics._c2st_data(X, Y, z_score=True)
    acc_blas, _ = metrics._c2st_fast(Z, labels, seed=1, n_folds=5)
    acc_loop, _ = metrics._c2st_fast(Z, labels, seed=1, n_folds=5, blas=False)
    assert abs(acc_blas.mean() - acc_loop.mean()) < 0.01


def test_kfold_matches_sklearn():
    model_selection = pytest.importorskip("sklearn.model_selection")
    for n, k, seed in ((103, 5, 1), (20, 3, 7)):
        ours = metrics._kfold_test_folds(n, k, seed)
        theirs = [test for _, test in
                  model_selection.KFold(k, shuffle=True, random_state=seed).split(np.zeros(n))]
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a, b)


def test_import_loads_neither_numba_nor_sklearn():
    code = ("import sys, snpse_np.metrics; "
            "assert 'numba' not in sys.modules and 'sklearn' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_c2st_without_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes `import sklearn...` fail
    X, Y = gaussian_pair("disjoint", 2, 300)
    assert c2st(X, Y) > 0.98
    with pytest.raises(ImportError, match="scikit-learn"):
        c2st(X, Y, classifier="sklearn")


# ------------------------------------------------------------------ C2ST vs scikit-learn

def test_c2st_sklearn_same_and_disjoint():
    pytest.importorskip("sklearn")
    X, Y = gaussian_pair("same", 2, 2000)
    assert abs(c2st(X, Y, classifier="sklearn") - 0.5) < 0.03
    X, Y = gaussian_pair("disjoint", 2, 1000)
    assert c2st(X, Y, classifier="sklearn") > 0.98


# 5-D: one pair with both differences, since each scikit-learn run there costs ~25 s
@pytest.mark.parametrize("kind,d,n", [("shift", 2, 2000), ("var", 2, 2000),
                                      ("shift+var", 5, 2000)])
def test_c2st_fast_agrees_with_sklearn(kind, d, n):
    pytest.importorskip("sklearn")
    X, Y = gaussian_pair(kind, d, n)
    reference = c2st(X, Y, classifier="sklearn")
    assert 0.52 < reference < 0.65  # moderately separated
    assert abs(c2st(X, Y, classifier="fast") - reference) < 0.02


# ------------------------------------------------------------------ MMD

def brute_force_mmd(X, Y):
    def sq(A, B):
        return ((A[:, None, :] - B[None, :, :]) ** 2).sum(-1)
    dxx = sq(X, X)
    pairs = np.sqrt(dxx[np.triu_indices(len(X), k=1)])
    sigma = np.sort(pairs)[(len(pairs) - 1) // 2]  # lower median, as torch.median
    gamma = 1.0 / (2 * sigma ** 2)
    m, n = len(X), len(Y)
    kxx = (np.exp(-gamma * dxx).sum() - m) / (m * (m - 1))
    kyy = (np.exp(-gamma * sq(Y, Y)).sum() - n) / (n * (n - 1))
    return kxx + kyy - 2 * np.exp(-gamma * sq(X, Y)).mean()


def test_mmd_matches_brute_force():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 3)) * [1.0, 4.0, 0.1] + 5.0
    Y = rng.normal(size=(250, 3)) + 5.2
    assert mmd(X, Y) == pytest.approx(brute_force_mmd(X, Y), rel=1e-9, abs=1e-12)


def test_mmd_blocks_match_one_block(monkeypatch):
    X, Y = gaussian_pair("shift", 2, 700)
    whole = mmd(X, Y)
    monkeypatch.setattr(metrics, "_BLOCK", 128)
    assert mmd(X, Y) == pytest.approx(whole, rel=1e-9)


def test_median_pairwise_distance_exact(monkeypatch):
    rng = np.random.default_rng(4)
    for X in (rng.normal(size=(501, 2)),                       # odd number of pairs
              np.repeat(rng.normal(size=(3, 2)), 200, axis=0)):  # many tied distances
        diff = X[:, None, :] - X[None, :, :]
        d = np.sqrt((diff ** 2).sum(-1))[np.triu_indices(len(X), k=1)]
        expected = np.sort(d)[(len(d) - 1) // 2]
        assert metrics._median_pairwise_distance(X) == pytest.approx(expected, rel=1e-9)
        monkeypatch.setattr(metrics, "_MEDIAN_CAP", 10)  # forces the refinement passes
        assert metrics._median_pairwise_distance(X) == pytest.approx(expected, rel=1e-9)
        monkeypatch.undo()


def test_mmd_same_near_zero_shifted_positive():
    X, Y = gaussian_pair("same", 2, 1000)
    same = mmd(X, Y)
    X, Y = gaussian_pair("shift", 2, 1000)
    shifted = mmd(X, Y)
    assert abs(same) < 2e-3
    assert shifted > 5e-3
    X, Y = gaussian_pair("disjoint", 2, 500)
    assert mmd(X, Y) > 0.5


# ------------------------------------------------------------------ moments

def test_posterior_mean_error_and_variance_ratio():
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(4000, 3)) * [1.0, 2.0, 0.5]
    std = ref.std(axis=0, ddof=1)
    shifted = ref + 0.2 * std * np.array([1.0, -1.0, 1.0])  # signs must not cancel
    assert posterior_mean_error(shifted, ref) == pytest.approx(0.2)
    assert posterior_mean_error(ref, ref) == 0.0
    widened = (ref - ref.mean(0)) * np.array([1.0, 2.0, 0.5]) + ref.mean(0)
    assert posterior_variance_ratio(widened, ref) == pytest.approx((1 + 4 + 0.25) / 3)
    assert posterior_variance_ratio(ref, ref) == pytest.approx(1.0)


# ------------------------------------------------------------------ bad inputs

@pytest.mark.parametrize("fn", [c2st, mmd, posterior_mean_error, posterior_variance_ratio])
def test_bad_inputs(fn):
    rng = np.random.default_rng(6)
    X = rng.normal(size=(50, 2))
    with pytest.raises(ValueError, match="different dimensions"):
        fn(X, rng.normal(size=(50, 3)))
    for bad in (np.nan, np.inf):
        Y = rng.normal(size=(50, 2))
        Y[7, 1] = bad
        with pytest.raises(ValueError, match="NaN or inf.*row 7"):
            fn(X, Y)
    with pytest.raises(ValueError, match="at least"):
        fn(X, X[:1])
    with pytest.raises(ValueError, match="2-D"):
        fn(X[:, 0], X[:, 1])


def test_degenerate_reference():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(50, 2))
    flat = np.column_stack([X[:, 0], np.ones(50)])  # a constant column has no std
    with pytest.raises(ValueError, match="constant"):
        c2st(flat, X)
    with pytest.raises(ValueError, match="constant"):
        posterior_mean_error(X, flat)
    with pytest.raises(ValueError, match="constant"):
        posterior_variance_ratio(X, flat)
    with pytest.raises(ValueError, match="median pairwise distance of 0"):
        mmd(np.ones((50, 2)), X)
    assert c2st(X, flat, z_score=True) > 0.9  # only the reference's spread matters


def test_c2st_bad_arguments():
    X, Y = gaussian_pair("same", 2, 50)
    with pytest.raises(ValueError, match="classifier"):
        c2st(X, Y, classifier="torch")
    with pytest.raises(ValueError, match="seed"):
        c2st(X, Y, seed=1.5)
    with pytest.raises(ValueError, match="n_folds"):
        c2st(X, Y, n_folds=1)
    with pytest.raises(ValueError, match="at least"):
        c2st(X[:3], Y[:3])
    with pytest.raises(ValueError, match="max_samples"):
        c2st(X, Y, max_samples=0)
