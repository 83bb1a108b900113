"""Z-scoring of theta and x, with a guard for constant columns.

The diffusion runs in standardised theta space (paper App. E.3.3): theta~ = (theta - mu) / s.
Statistics come from the whole current data set (training and validation together, as the
authors' code). A column with std below ``min_std`` (e.g. a constant x entry) gets s = 1, so
it never divides by zero, and is marked in ``constant`` (k,) bool. Such a column carries no
information, and the network's weights on it never move from their initial values (their
gradient is zero: the input is always 0), so an observation that DIFFERS there would be fed
through random weights: ``ScorePosterior`` refuses such an x (``differs_on_constant``).
Statistics that overflow (a column with values near 1e300: its variance is inf, and z-scoring
would zero the column) raise a ValueError naming the column.
"""
import numpy as np


class Standardizer:
    def __init__(self, mean, std, constant=None):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        self.constant = (np.zeros(self.mean.shape, dtype=bool) if constant is None
                         else np.asarray(constant, dtype=bool))

    @classmethod
    def fit(cls, a, min_std=1e-8):
        """Column statistics of a (n, k)."""
        a = np.asarray(a, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            mean = a.mean(axis=0)
            std = a.std(axis=0)
        bad = np.flatnonzero(~(np.isfinite(mean) & np.isfinite(std)))
        if bad.size:
            j = int(bad[0])
            raise ValueError(f"column {j} (0-based) cannot be z-scored: its values reach "
                             f"{np.max(np.abs(a[:, j])):.3g} and its mean/std overflow; rescale it")
        constant = ~(std > min_std * np.maximum(1.0, np.abs(mean)))
        return cls(mean, np.where(constant, 1.0, std), constant)

    def differs_on_constant(self, a, rtol=1e-6):
        """Indices of the constant columns where the row(s) a (k,) or (n, k) differ from the
        fitted value by more than rtol * max(1, |value|)."""
        a = np.atleast_2d(np.asarray(a, dtype=np.float64))
        tol = rtol * np.maximum(1.0, np.abs(self.mean))
        off = np.any(np.abs(a - self.mean) > tol, axis=0) & self.constant
        return np.flatnonzero(off)

    def forward(self, a):
        return (np.asarray(a, dtype=np.float64) - self.mean) / self.std

    def inverse(self, a):
        return np.asarray(a, dtype=np.float64) * self.std + self.mean

    @property
    def log_abs_det(self):
        """sum_j log s_j: log p(theta) = log p~(theta~) - sum_j log s_j."""
        return float(np.sum(np.log(self.std)))
