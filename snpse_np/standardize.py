"""Z-scoring of theta and x, with a guard for constant columns.

The diffusion runs in standardised theta space (paper App. E.3.3): theta~ = (theta - mu) / s.
Statistics come from the whole current data set (training and validation together, as the
authors' code). A column with std below ``min_std`` (e.g. a constant x entry) gets s = 1, so
it never divides by zero; it then carries no information and the network learns to ignore it.
"""
import numpy as np


class Standardizer:
    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)

    @classmethod
    def fit(cls, a, min_std=1e-8):
        """Column statistics of a (n, k)."""
        a = np.asarray(a, dtype=np.float64)
        mean = a.mean(axis=0)
        std = a.std(axis=0)
        std = np.where(std > min_std * np.maximum(1.0, np.abs(mean)), std, 1.0)
        return cls(mean, std)

    def forward(self, a):
        return (np.asarray(a, dtype=np.float64) - self.mean) / self.std

    def inverse(self, a):
        return np.asarray(a, dtype=np.float64) * self.std + self.mean

    @property
    def log_abs_det(self):
        """sum_j log s_j: log p(theta) = log p~(theta~) - sum_j log s_j."""
        return float(np.sum(np.log(self.std)))
