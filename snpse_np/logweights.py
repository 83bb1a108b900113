"""Importance weights kept as logs: log-sum-exp, the Monte Carlo normaliser, Kish's ESS, resampling.

Weights w_i = p(theta_i) / q(theta_i) of draws theta_i ~ q span hundreds of orders of magnitude,
so they are handled as log w_i. The normaliser estimate is the mean weight,
log Z ~ log (1/m) sum_i w_i (``log_mean_exp``); Kish's effective sample size is
ESS = (sum_i w_i)^2 / sum_i w_i^2 (``log_weights_ess``); sampling-importance-resampling draws n
rows with replacement in proportion to w (``resample``, multinomial). Used by SNPSE-A/B
(``snpse_ab``, ``mixture``, ``sir``).
"""
import math

import numpy as np

from .npse import effective_sample_size
from .rng import as_generator


def logsumexp(a, axis=None):
    """log sum exp(a) along ``axis``; -inf where every term is -inf."""
    a = np.asarray(a, dtype=np.float64)
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return np.squeeze(out, axis=axis) if axis is not None else float(out.ravel()[0])


def log_mean_exp(log_w):
    """log of the mean of exp(log_w) (m,): the Monte Carlo normaliser estimate, in log space."""
    log_w = np.asarray(log_w, dtype=np.float64)
    return logsumexp(log_w) - math.log(log_w.size)


def log_weights_ess(log_w):
    """Kish's effective sample size of weights given as logs (m,); 0 if every weight is 0."""
    log_w = np.asarray(log_w, dtype=np.float64)
    if not np.any(np.isfinite(log_w)):
        return 0.0
    return effective_sample_size(np.exp(log_w - np.max(log_w)))


def resample(theta, log_w, n, seed=None):
    """n rows of theta (m, d) drawn with replacement in proportion to exp(log_w) (m,) (multinomial)."""
    log_w = np.asarray(log_w, dtype=np.float64)
    if not np.any(np.isfinite(log_w)):
        raise RuntimeError(f"all {log_w.size} importance weights are zero (every draw fell outside the "
                           f"prior support): nothing to resample")
    w = np.exp(log_w - np.max(log_w))
    idx = as_generator(seed).choice(log_w.size, size=int(n), replace=True, p=w / w.sum())
    return theta[idx]
