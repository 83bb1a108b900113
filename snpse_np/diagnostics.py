"""Calibration checks of an amortised posterior: SBC, expected coverage, TARP, predictive checks.

All of them draw (theta*_j, x_j) from the joint, j = 1..m (theta*_j from the prior, x_j simulated
at it), and n posterior draws theta_jk ~ q(theta | x_j) (``ScorePosterior.sample_batched``: one
call for all m). A calibrated q gives uniform statistics:

- **SBC** (Talts et al. 2018): per dimension i the rank r_ji = #{k : theta_jk,i < theta*_j,i} is
  uniform on {0, ..., n}. ``uniformity_test``: a chi-square test on bins of consecutive ranks
  (exact expected counts under the discrete uniform) and a one-sample Kolmogorov-Smirnov test
  against the discrete uniform CDF (asymptotic p-value; conservative for discrete data).
- **Expected coverage** via highest-density regions (sbi's ``run_sbc(reduce_fns=log_prob)``):
  theta*_j lies in the alpha-HPD region of q(. | x_j) iff the fraction of draws with a higher
  density, f_j = #{k : log q(theta_jk | x_j) > log q(theta*_j | x_j)} / n, is below alpha. Under
  calibration u_j = (n f_j + 1/2) / (n + 1) is uniform, so coverage(alpha) = mean_j [u_j < alpha]
  equals alpha: below alpha is over-confident, above under-confident. Costs one ODE log-density
  per draw (``log_prob_batched``; m (n + 1) rows).
- **TARP** (Lemos et al. 2023): with a random reference point r_j (uniform in the box of the
  theta*, after min-max scaling of every dimension by the theta*), f_j = #{k : |theta_jk - r_j| <
  |theta*_j - r_j|} / n; ECP(alpha) = mean_j [u_j < alpha] = alpha iff q is calibrated (their
  Theorem; necessary AND sufficient over all reference laws). ATC = int_{1/2}^1 (ECP - alpha)
  d alpha: > 0 under-confident (too wide), < 0 over-confident (as sbi's ``check_tarp``); plus a
  KS test of the u_j against U(0, 1) (sbi compares the ECP curve with the alpha grid instead).
- **Posterior predictive** check: x~_k simulated at theta_k ~ q(. | x_o); per x dimension the
  quantile of x_o among the x~ (near 0 or 1: x_o is not reproduced), and a distance p-value: the
  fraction of x~ farther from the predictive mean than x_o (Mahalanobis, predictive covariance).

``ecdf_band`` gives simultaneous 1 - a bands for the ECDF of m uniform ranks (Saeilynoja et al.
2022, by simulation), for the rank ECDF plots in ``snpse_np.plot``. Every function that draws
takes a seed or a numpy Generator. numpy only.
"""
import math

import numpy as np

from .checks import integer, real, real_array
from .progress import Progress
from .rng import as_generator

DEFAULT_LEVELS = np.linspace(0.05, 0.95, 10)


# ----------------------------------------------------------------------------- input checks

def _check_pairs(theta, x, dim_theta=None):
    theta, x = real_array(theta, "theta"), real_array(x, "x")
    if theta.ndim != 2:
        raise ValueError(f"theta must have shape (m, d) (one true parameter per row), got {theta.shape}")
    if x.ndim != 2:
        raise ValueError(f"x must have shape (m, p) (one observation per row), got {x.shape}")
    if theta.shape[0] != x.shape[0]:
        raise ValueError(f"theta and x need the same number of rows, got {theta.shape[0]} and {x.shape[0]}")
    if theta.shape[0] == 0:
        raise ValueError("no (theta, x) pairs given: need m >= 1 rows")
    if dim_theta is not None and theta.shape[1] != dim_theta:
        raise ValueError(f"theta has {theta.shape[1]} columns, the posterior's dim_theta is {dim_theta}")
    if not np.all(np.isfinite(theta)):
        raise ValueError("theta contains NaN or inf")
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN or inf (drop those simulations first)")
    return theta, x


def _check_samples(samples, theta):
    samples, theta = real_array(samples, "samples"), real_array(theta, "theta")
    if theta.ndim != 2:
        raise ValueError(f"theta must have shape (m, d), got {theta.shape}")
    m, d = theta.shape
    if samples.ndim != 3 or samples.shape[0] != m or samples.shape[2] != d:
        raise ValueError(f"samples must have shape ({m}, n, {d}) (n draws per true parameter), got {samples.shape}")
    if m == 0 or samples.shape[1] == 0:
        raise ValueError("need m >= 1 true parameters and n >= 1 draws each")
    if not (np.all(np.isfinite(samples)) and np.all(np.isfinite(theta))):
        raise ValueError("samples or theta contain NaN or inf")
    return samples, theta


# ----------------------------------------------------------------------------- statistics

def chi2_sf(x, df):
    """P(X > x) for X ~ chi-square(df): the regularised upper incomplete gamma Q(df/2, x/2), by
    its series (x < a + 1) or continued fraction (Numerical Recipes' gser/gcf)."""
    a, z = 0.5 * df, 0.5 * float(x)
    if z <= 0:
        return 1.0
    log_pre = -z + a * math.log(z) - math.lgamma(a)
    if z < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1
            term *= z / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_pre))
    b, c, dd = z + 1 - a, 1e300, 1.0 / (z + 1 - a)
    h = dd
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        dd = an * dd + b
        dd = 1e-300 if abs(dd) < 1e-300 else dd
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        dd = 1.0 / dd
        delta = dd * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_pre) * h)


def kolmogorov_sf(d_stat, m):
    """Asymptotic P(D_m > d) of the one-sample KS statistic (Stephens' small-sample correction)."""
    lam = (math.sqrt(m) + 0.12 + 0.11 / math.sqrt(m)) * d_stat
    if lam < 0.2:
        return 1.0
    total = sum((-1) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam) for k in range(1, 101))
    return float(min(1.0, max(0.0, 2.0 * total)))


def rank_statistics(samples, theta):
    """SBC ranks (m, d) int: r_ji = #{k : samples[j, k, i] < theta[j, i]}, in 0..n.
    samples (m, n, d), theta (m, d)."""
    samples, theta = _check_samples(samples, theta)
    return np.sum(samples < theta[:, None, :], axis=1)


def uniformity_test(ranks, num_samples, bins=None):
    """Tests that ranks (m, d) (or (m,)) in 0..num_samples are uniform, per column.

    Returns dict: ``chi2``, ``chi2_pvalue`` (d,) on ``bins`` bins of consecutive ranks (default:
    min(20, m // 5, n + 1), so >= 5 expected per bin), ``ks``, ``ks_pvalue`` (d,) against the
    discrete uniform CDF, and ``bins``.
    """
    ranks = np.asarray(ranks)
    if ranks.ndim == 1:
        ranks = ranks[:, None]
    n = integer(num_samples, "num_samples", minimum=1)
    if ranks.ndim != 2 or ranks.shape[0] == 0:
        raise ValueError(f"ranks must have shape (m, d) with m >= 1, got {ranks.shape}")
    if np.any(ranks < 0) or np.any(ranks > n) or np.any(ranks != np.round(ranks)):
        raise ValueError(f"ranks must be integers in 0..{n}")
    m = ranks.shape[0]
    bins = max(2, min(20, m // 5, n + 1)) if bins is None else integer(bins, "bins", minimum=2)
    bins = min(bins, n + 1)
    edges = np.floor(np.arange(bins + 1) * (n + 1) / bins).astype(int)  # rank values per bin
    expected = m * np.diff(edges) / (n + 1)
    which = np.searchsorted(edges, ranks, side="right") - 1
    chi2, p_chi2, ks, p_ks = (np.empty(ranks.shape[1]) for _ in range(4))
    cdf = np.arange(1, n + 2) / (n + 1)
    for i in range(ranks.shape[1]):
        counts = np.bincount(which[:, i], minlength=bins)
        chi2[i] = float(np.sum((counts - expected) ** 2 / expected))
        p_chi2[i] = chi2_sf(chi2[i], bins - 1)
        ecdf = np.cumsum(np.bincount(ranks[:, i].astype(int), minlength=n + 1)) / m
        ks[i] = np.max(np.abs(ecdf - cdf))  # both step functions jump only at the integers
        p_ks[i] = kolmogorov_sf(ks[i], m)
    return dict(chi2=chi2, chi2_pvalue=p_chi2, ks=ks, ks_pvalue=p_ks, bins=bins)


def _uniform_scores(counts, n):
    """(counts + 1/2) / (n + 1): fractions of n draws made uniform on (0, 1) under calibration."""
    return (np.asarray(counts, dtype=np.float64) + 0.5) / (n + 1)


def coverage_curve(counts, n, levels=None):
    """coverage(alpha) = mean_j [u_j < alpha] at ``levels`` (default 10 levels 0.05..0.95), with
    u = (counts + 1/2) / (n + 1); counts (m,) of draws ranked above the truth. Returns (levels, coverage)."""
    levels = DEFAULT_LEVELS if levels is None else real_array(levels, "levels")
    if levels.ndim != 1 or np.any((levels <= 0) | (levels >= 1)):
        raise ValueError("levels must be a 1-D array of credibility levels in (0, 1)")
    u = _uniform_scores(counts, n)
    return levels, np.mean(u[:, None] < levels[None, :], axis=0)


def _ks_uniform(u):
    """KS statistic and p-value of u (m,) against U(0, 1)."""
    u = np.sort(u)
    m = u.size
    d_stat = max(np.max(np.arange(1, m + 1) / m - u), np.max(u - np.arange(m) / m))
    return float(d_stat), kolmogorov_sf(d_stat, m)


def hpd_counts(log_prob_samples, log_prob_true):
    """#{k : log q(theta_jk) > log q(theta*_j)} (m,) from log_prob_samples (m, n), log_prob_true (m,)."""
    lps, lpt = real_array(log_prob_samples, "log_prob_samples"), real_array(log_prob_true, "log_prob_true")
    if lps.ndim != 2 or lpt.shape != (lps.shape[0],):
        raise ValueError(f"log_prob_samples must be (m, n) and log_prob_true (m,), got {lps.shape} and {lpt.shape}")
    if np.any(np.isnan(lps)) or np.any(np.isnan(lpt)):
        raise ValueError("log-densities contain NaN")
    return np.sum(lps > lpt[:, None], axis=1)


def tarp(samples, theta, references=None, seed=None, levels=None, z_score=True):
    """TARP (Lemos et al. 2023) from samples (m, n, d) of q(. | x_j) and the truths theta (m, d).

    references: (m, d) reference points in theta units, or None: uniform in the box of the
    (scaled) truths, drawn with ``seed``. z_score: min-max scale every dimension by the truths
    first (as sbi). Returns dict: ``alpha`` (the levels, default 0..1 in 101 steps), ``ecp``,
    ``atc`` (> 0 under-, < 0 over-confident), ``ks``, ``ks_pvalue`` (u against U(0, 1)),
    ``counts`` (m,).
    """
    samples, theta = _check_samples(samples, theta)
    m, n, d = samples.shape
    lo, hi = theta.min(axis=0), theta.max(axis=0)
    scale = np.where(hi > lo, hi - lo, 1.0) if z_score else np.ones(d)
    shift = lo if z_score else np.zeros(d)
    s, th = (samples - shift) / scale, (theta - shift) / scale
    if references is None:
        rng = as_generator(seed)
        box_lo, box_hi = th.min(axis=0), th.max(axis=0)
        ref = box_lo + (box_hi - box_lo) * rng.random((m, d))
    else:
        ref = real_array(references, "references")
        if ref.shape != (m, d) or not np.all(np.isfinite(ref)):
            raise ValueError(f"references must be finite with shape ({m}, {d}), got {ref.shape}")
        ref = (ref - shift) / scale
    d_samples = np.sqrt(np.sum((s - ref[:, None, :]) ** 2, axis=2))
    d_true = np.sqrt(np.sum((th - ref) ** 2, axis=1))
    counts = np.sum(d_samples < d_true[:, None], axis=1)
    alpha = np.linspace(0.0, 1.0, 101) if levels is None else real_array(levels, "levels")
    u = _uniform_scores(counts, n)
    ecp = np.mean(u[:, None] < alpha[None, :], axis=0)
    upper = alpha >= 0.5
    gap, grid = ecp[upper] - alpha[upper], alpha[upper]
    atc = float(np.sum(0.5 * (gap[1:] + gap[:-1]) * np.diff(grid))) if grid.size > 1 else float("nan")
    ks, p = _ks_uniform(u)
    return dict(alpha=alpha, ecp=ecp, atc=atc, ks=ks, ks_pvalue=p, counts=counts)


def ecdf_band(m, n, confidence=0.95, grid=101, simulations=2000, seed=0):
    """Simultaneous ``confidence`` band for the ECDF of m ranks uniform on {0..n}, scaled to
    u = (r + 1/2)/(n + 1), at ``grid`` points z in (0, 1) (Saeilynoja, Buerkner & Vehtari 2022):
    pointwise binomial(m, F(z)) quantiles at a level gamma tuned by bisection so that the band
    holds ``confidence`` of ``simulations`` simulated uniform ECDFs everywhere at once.
    Returns (z, lower, upper), the bounds as ECDF values."""
    m, n = integer(m, "m", minimum=1), integer(n, "n", minimum=1)
    confidence = real(confidence, "confidence", above=0.0)
    if confidence >= 1:
        raise ValueError("confidence must lie in (0, 1)")
    z = np.linspace(0.0, 1.0, integer(grid, "grid", minimum=3))[1:-1]
    # u < z  <=>  r < z (n + 1) - 1/2: P(u < z) = ceil(z (n + 1) - 1/2) / (n + 1) under the discrete uniform
    p = np.clip(np.ceil(z * (n + 1) - 0.5), 0, n + 1) / (n + 1)
    p = np.clip(p, 1e-300, 1.0 - 1e-16)
    k = np.arange(m + 1)
    lgam = np.array([math.lgamma(v + 1) for v in range(m + 1)])
    logpmf = (lgam[m] - lgam[k][None] - lgam[m - k][None] + k[None] * np.log(p[:, None])
              + (m - k[None]) * np.log1p(-p[:, None]))
    cdf = np.cumsum(np.exp(logpmf), axis=1)
    rng = as_generator(seed)
    sims = rng.integers(0, n + 1, size=(int(simulations), m))
    u = (np.sort(sims, axis=1) + 0.5) / (n + 1)
    counts = np.stack([np.searchsorted(row, z, side="left") for row in u])  # #(u < z)

    def bounds(gamma):
        lower = np.argmax(cdf >= gamma / 2, axis=1)
        upper = np.argmax(cdf >= 1 - gamma / 2, axis=1)
        return lower, upper

    lo_g, hi_g = 1e-6, 1.0 - confidence
    for _ in range(40):
        gamma = 0.5 * (lo_g + hi_g)
        lower, upper = bounds(gamma)
        inside = np.mean(np.all((counts >= lower) & (counts <= upper), axis=1))
        if inside >= confidence:
            lo_g = gamma
        else:
            hi_g = gamma
    lower, upper = bounds(lo_g)
    return z, lower / m, upper / m


# ----------------------------------------------------------------------------- runners

def _draws(posterior, x, num_samples, seed, sample_kwargs, progress):
    kw = dict(sample_kwargs or {})
    kw.setdefault("seed", seed)
    out = posterior.sample_batched(num_samples, x, **kw)
    progress.update(f"drew {x.shape[0]} x {num_samples} posterior samples  {progress.elapsed:.1f}s", force=True)
    return out


def sbc(posterior, theta, x, num_samples=1000, seed=None, bins=None, sample_kwargs=None, show_progress=False,
        return_samples=False):
    """Simulation-based calibration: ranks of theta (m, d) among ``num_samples`` draws of
    q(. | x_j), x (m, p), and their uniformity tests. Returns dict: ``ranks`` (m, d),
    ``num_samples``, the ``uniformity_test`` entries, ``seconds`` (and ``samples`` (m, n, d) with
    return_samples). sample_kwargs go to ``posterior.sample_batched``."""
    theta, x = _check_pairs(theta, x, getattr(posterior, "dim_theta", None))
    n = integer(num_samples, "num_samples", minimum=1)
    progress = Progress(show_progress)
    samples = _draws(posterior, x, n, as_generator(seed), sample_kwargs, progress)
    ranks = rank_statistics(samples, theta)
    out = dict(ranks=ranks, num_samples=n, seconds=progress.elapsed, **uniformity_test(ranks, n, bins))
    if return_samples:
        out["samples"] = samples
    progress.done(f"SBC: {theta.shape[0]} x {n} in {progress.elapsed:.1f}s")
    return out


def expected_coverage(posterior, theta, x, num_samples=200, levels=None, seed=None, samples=None,
                      sample_kwargs=None, log_prob_kwargs=None, show_progress=False):
    """Expected coverage of the highest-density regions of q(. | x_j) at ``levels`` (default 10
    levels 0.05..0.95). theta (m, d), x (m, p). ``samples`` (m, n, d) reuses draws (e.g. SBC's);
    otherwise ``num_samples`` are drawn. Each draw and each truth costs one ODE log-density
    (``log_prob_batched``, ``log_prob_kwargs``). Returns dict: ``levels``, ``coverage``,
    ``counts`` (m,), ``ks``, ``ks_pvalue`` (u against U(0, 1)), ``seconds``."""
    theta, x = _check_pairs(theta, x, getattr(posterior, "dim_theta", None))
    progress = Progress(show_progress)
    if samples is None:
        n = integer(num_samples, "num_samples", minimum=1)
        samples = _draws(posterior, x, n, as_generator(seed), sample_kwargs, progress)
    samples, theta = _check_samples(samples, theta)
    n = samples.shape[1]
    both = np.concatenate([samples, theta[:, None, :]], axis=1)
    lp = posterior.log_prob_batched(both, x, **dict(log_prob_kwargs or {}))
    lps, lpt = lp[:, :n], lp[:, n]
    if np.any(np.isneginf(lpt)):
        raise ValueError(f"{int(np.isneginf(lpt).sum())} true parameters have log-density -inf (outside the "
                         f"prior support?): draw theta from the prior")
    counts = hpd_counts(lps, lpt)
    levels, cov = coverage_curve(counts, n, levels)
    ks, p = _ks_uniform(_uniform_scores(counts, n))
    progress.done(f"coverage: {theta.shape[0]} x {n} log-densities in {progress.elapsed:.1f}s")
    return dict(levels=levels, coverage=cov, counts=counts, ks=ks, ks_pvalue=p, seconds=progress.elapsed)


def run_tarp(posterior, theta, x, num_samples=1000, seed=None, samples=None, references=None, sample_kwargs=None,
             show_progress=False):
    """TARP on (theta (m, d), x (m, p)) with ``num_samples`` draws per x (or the given ``samples``);
    see ``tarp``. Returns its dict plus ``seconds``."""
    theta, x = _check_pairs(theta, x, getattr(posterior, "dim_theta", None))
    rng = as_generator(seed)
    progress = Progress(show_progress)
    if samples is None:
        samples = _draws(posterior, x, integer(num_samples, "num_samples", minimum=1), rng, sample_kwargs, progress)
    out = tarp(samples, theta, references=references, seed=rng)
    out["seconds"] = progress.elapsed
    return out


def posterior_predictive(posterior, simulator, x_o, num_samples=1000, seed=None, sample_kwargs=None,
                         executor=None):
    """Posterior predictive check at one observation x_o (p,): simulate at ``num_samples`` draws of
    q(. | x_o). ``simulator`` as ``snpse_np.simulate`` takes it (theta (k, d) -> x (k, p), with or
    without a ``seed`` parameter). Returns dict: ``theta`` (n, d), ``x`` (n, p) (rows whose
    simulation failed are NaN and left out of the statistics), ``quantile`` (p,) = fraction of
    predictive x below x_o per dimension, ``distance_pvalue`` = fraction of predictive x farther
    (Mahalanobis, predictive covariance) from the predictive mean than x_o."""
    from .simulate import simulate
    x_o = real_array(x_o, "x_o")
    if x_o.ndim == 2 and x_o.shape[0] == 1:
        x_o = x_o[0]
    if x_o.ndim != 1 or not np.all(np.isfinite(x_o)):
        raise ValueError(f"x_o must be one finite observation (p,), got shape {x_o.shape}")
    if getattr(posterior, "dim_x", x_o.size) != x_o.size:
        raise ValueError(f"x_o has {x_o.size} entries, the posterior's dim_x is {posterior.dim_x}")
    rng = as_generator(seed)
    kw = dict(sample_kwargs or {})
    kw.setdefault("seed", rng)
    theta = posterior.sample(integer(num_samples, "num_samples", minimum=2), x=x_o, **kw)
    x = np.asarray(simulate(simulator, theta, seed=int(rng.integers(2 ** 31)), executor=executor, progress=False),
                   dtype=float)
    if x.ndim != 2 or x.shape[1] != x_o.size:
        raise ValueError(f"the simulator returned shape {x.shape}, expected (n, {x_o.size})")
    ok = np.all(np.isfinite(x), axis=1)
    if ok.sum() < 2:
        raise ValueError("fewer than 2 predictive simulations succeeded")
    xs = x[ok]
    quantile = np.mean(xs < x_o[None], axis=0)
    mean, cov = xs.mean(axis=0), np.atleast_2d(np.cov(xs.T))
    prec = np.linalg.pinv(cov)
    dist = np.einsum("ni,ij,nj->n", xs - mean, prec, xs - mean)
    dist_o = float((x_o - mean) @ prec @ (x_o - mean))
    return dict(theta=theta, x=x, quantile=quantile, distance_pvalue=float(np.mean(dist >= dist_o)),
                n_failed=int((~ok).sum()))
