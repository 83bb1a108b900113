"""I.i.d. trials: the score of p(theta | x_1, ..., x_m) composed from a network trained on ONE x.

For m trials drawn i.i.d. given theta, Bayes' rule factorises the posterior into the per-trial
posteriors the network learned:

    p(theta | x_1..x_m)  ∝  p(theta)^(1 - m)  prod_i p(theta | x_i).

At t = 0 its score is (1 - m) grad log p(theta) + sum_i s(theta, x_i, 0) exactly; at t > 0 the
perturbed marginal of the product is NOT the product of the perturbed marginals, and the methods
differ in how they handle that (``IID_METHODS``; all in standardised theta space, see below):

- ``"fnpe"`` (Geffner et al. 2023, "compositional score modeling"; sbi's name): the bridge
      s_bridge(theta_t, t) = (1 - m) (1 - t / T) grad log p(theta_t) + sum_i s(theta_t, x_i, t),
  with the UNperturbed prior score annealed in. The bridge is not a diffusion's marginal, so it
  is sampled by annealed Langevin: ``sampler="pc"`` (predictor + ``corrector_steps`` Langevin
  steps per level), starting from the bridge's t = T law, the base pi shrunk by 1/sqrt(m).
- ``"fnpe_marginal"`` (the paper's App. D variant, Sharrock et al. 2024):
      (1 - m) grad log p_t(theta_t) + sum_i s(theta_t, x_i, t)
  with the PERTURBED prior p_t = p * N(0, sigma_t^2) (scaled by alpha_t); also sampled by
  annealed Langevin (``sampler="pc"``), from pi.
- ``"gauss"``, ``"auto_gauss"``, ``"jac_gauss"`` (Linhart et al. 2024, "diffusion posterior
  sampling for SBI in tall data settings"): if every denoising posterior p(theta_0 | theta_t, x_i)
  and the denoising prior p(theta_0 | theta_t) are Gaussian with precisions P_i and P_0, the
  marginal score of the product is exactly

      Lambda^-1 [ sum_i P_i s_i + (1 - m) P_0 grad log p_t(theta_t) ],
      Lambda = sum_i P_i + (1 - m) P_0,

  so the reverse SDE, the probability-flow ODE and PC all apply (exact for a linear-Gaussian model
  with a Gaussian prior). P_0 is the prior's (below, exact for Gaussian and box priors). Each
  trial's denoiser is the prior's times the trial's likelihood, so here P_i = P_0 + L_i with the
  likelihood precision L_i = psd(Sigma_i^-1 - C_0^-1) (Sigma_i the covariance of p(theta | x_i),
  C_0 the prior's; psd() drops negative eigenvalues). Then Lambda = P_0 + sum_i L_i is positive
  definite, and for a Gaussian prior this is Linhart et al.'s formula exactly; for a box prior it
  keeps the box's exact denoiser in every P_i where Linhart et al. (and sbi) use
  Sigma_i^-1 + alpha^2/sigma^2: with those, Lambda turned indefinite just outside the box (the box's
  P_0 grows without bound there while the trials' did not) and the composed score pushed samples
  OUT, diverging (measured: VP, 4 trials, U(-1, 1)^2). ``gauss`` takes Sigma_i^-1 from
  ``posterior_precision`` (default: 2 x the prior precision, sbi's heuristic); ``auto_gauss``
  estimates it from samples of every single-trial posterior (CENTRED covariance: sbi's estimate is
  an uncentred second moment), once per call; ``jac_gauss`` uses Tweedie's formula with the
  Jacobian of the learned score, Cov(theta_0 | theta_t, x_i) = (sigma^2 / alpha^2) (I + sigma^2
  ds_i/dtheta), P_i its inverse, every evaluation (d forward-mode tangents per trial and row:
  (1 + d) network passes).

The network works in z-scored theta space z = (theta - mu) / s, so the prior is mapped there:
theta = mu + s z makes N(loc, C) the Gaussian N((loc - mu)/s, C / (s s^T)) and the box [a, b]
the box [(a - mu)/s, (b - mu)/s]. Under every SDE here (VE, VP, sub-VP: transitions
N(alpha_t z_0, sigma_t^2 I)) the perturbed prior is then closed-form:

- Gaussian (``Normal``, ``MultivariateNormal``): p_t = N(alpha m, alpha^2 C + sigma^2 I);
  denoising precision C^-1 + alpha^2/sigma^2 I. EXACT.
- Box (``BoxUniform``): per dimension p_t(z) ∝ Phi(B) - Phi(A) with A = (alpha a - z)/sigma,
  B = (alpha b - z)/sigma; the denoising prior is N(z/alpha, (sigma/alpha)^2) truncated to [a, b]:
  score m_1/sigma and precision alpha^2 / (sigma^2 v) with m_1, v the mean and variance of the
  standard normal truncated to [A, B] (``truncated_normal_moments``, stable in both tails).
  EXACT; the unperturbed score (``fnpe``) is 0 inside the box.
- Anything else (``LogNormal``, user priors): APPROXIMATE. A K-component diagonal Gaussian
  mixture is fitted by EM to prior draws in z space (seeded); its perturbation and denoising are
  closed-form (``MixtureDiffusedPrior``). The error is the mixture's misfit, multiplied by m - 1
  in the composed score; ``mixture_components`` and ``mixture_samples`` control it.

Shapes: z (B, d) rows; per-trial scores (m, B, d); alpha, sigma a float (one time for every
row) or (B,) (per-row times, RK45); precisions (..., d, d). Host arithmetic in float64.
"""
import math

import numpy as np

from .rng import as_generator
from .score import Field, ScoreField, ScoreJacobian

IID_METHODS = ("auto_gauss", "gauss", "jac_gauss", "fnpe", "fnpe_marginal")
LANGEVIN_METHODS = ("fnpe", "fnpe_marginal")  # bridges, not marginals: annealed Langevin only
IID_PARAMS = {  # method -> the keys of iid_params it takes (and their defaults)
    "gauss": dict(posterior_precision=None, precision_scale=2.0),
    "auto_gauss": dict(budget=1000, steps=20),
    "jac_gauss": dict(precision_ratio=100.0),
    "fnpe": dict(),
    "fnpe_marginal": dict(),
}
MIXTURE_DEFAULTS = dict(mixture_components=8, mixture_samples=20_000)

_SQRT2 = math.sqrt(2.0)
_SQRT_PI = math.sqrt(math.pi)
_C = math.sqrt(2.0 / math.pi)  # 2 phi(0)


# ----------------------------------------------------------------------------- special functions

def erfcx(y):
    """The scaled complementary error function exp(y^2) erfc(y) for y >= 0, float64, vectorised.

    numpy has no erfc. For y < 2.5: erfcx = exp(y^2) - (2/sqrt(pi)) sum_n 2^n y^(2n+1)/(2n+1)!!
    (every term positive; loses at most 3 digits to the subtraction at y = 2.5). For y >= 2.5:
    Laplace's continued fraction erfcx = 1 / (sqrt(pi) (y + (1/2)/(y + 1/(y + (3/2)/(y + ...))))),
    evaluated backwards from a fixed depth. Relative error < 1e-13 on [0, 1e6] against
    scipy.special.erfcx (tests/test_iid.py).
    """
    y = np.asarray(y, dtype=np.float64)
    if np.any(y < 0):
        raise ValueError("erfcx here takes y >= 0")
    out = np.empty_like(y)
    small = y < 2.5
    if np.any(small):
        ys = y[small]
        y2 = ys * ys
        term = ys.copy()
        total = ys.copy()
        for n in range(90):
            term = term * (2.0 * y2 / (2 * n + 3))
            total += term
        out[small] = np.exp(y2) - (2.0 / _SQRT_PI) * total
    if np.any(~small):
        yl = y[~small]
        f = np.zeros_like(yl)
        for k in range(60, 0, -1):
            f = (0.5 * k) / (yl + f)
        out[~small] = 1.0 / (_SQRT_PI * (yl + f))
    return out


def _upper_tail(u):
    """Q(u) = 1 - Phi(u) for u >= 0."""
    return 0.5 * erfcx(u / _SQRT2) * np.exp(-0.5 * u * u)


def _tn_right(A, B):
    """Mean and variance of N(0, 1) truncated to [A, B], 0 <= A < B <= inf (the right tail)."""
    ex_a = erfcx(A / _SQRT2)
    finite = np.isfinite(B)
    Bf = np.where(finite, B, A + 1.0)
    r = np.where(finite, np.exp(-0.5 * (Bf - A) * (Bf + A)), 0.0)  # phi(B) / phi(A) in (0, 1]
    ex_b = np.where(finite, erfcx(Bf / _SQRT2), 0.0)
    D = ex_a - ex_b * r  # (Q(A) - Q(B)) / (phi(A) sqrt(pi/2))
    with np.errstate(invalid="ignore", divide="ignore"):  # D ~ 0 only for intervals narrow enough
        m1 = _C * (1.0 - r) / D                            # that the quadrature below replaces them
        v = 1.0 + _C * (A - np.where(finite, Bf, 0.0) * r) / D - m1 * m1
    # beyond A ~ 200 the subtraction above (terms ~A^2, result ~1/A^2) loses digits: there the law
    # is, to relative O(1/A^2) <= 5e-5, an exponential truncated to [0, B - A] with the rate
    # A + 2/A that matches the normal tail's mean excess 1/A - 2/A^3
    far = A > 200.0
    if np.any(far):
        a_f = A[far]
        lam = a_f + 2.0 / a_f
        w = (np.where(finite, Bf, np.inf) - A)[far]
        fin = np.isfinite(w)
        ww = np.where(fin, w, 0.0)
        e = np.where(fin, np.exp(-lam * ww), 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            m1[far] = a_f + 1.0 / lam - np.where(fin, ww * e / (1.0 - e), 0.0)
            v[far] = 1.0 / lam ** 2 - np.where(fin, ww * ww * e / (1.0 - e) ** 2, 0.0)
    return m1, np.maximum(v, 1e-300)


def truncated_normal_moments(A, B):
    """(mean, variance) of the standard normal truncated to [A, B], elementwise, A < B.

    Stable for intervals deep in either tail (the cases that matter at small t, when a sample sits
    far outside a box prior): the right tail goes through erfcx, the left tail by symmetry, and an
    interval straddling 0 directly. A = -inf or B = inf allowed.
    """
    A, B = np.broadcast_arrays(np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64))
    m1, v = np.empty(A.shape), np.empty(A.shape)
    right, left = A >= 0, B <= 0
    mid = ~(right | left)
    if np.any(right):
        m1[right], v[right] = _tn_right(A[right], B[right])
    if np.any(left):
        mr, vr = _tn_right(-B[left], -A[left])
        m1[left], v[left] = -mr, vr
    if np.any(mid):
        a, b = A[mid], B[mid]
        Z = 1.0 - _upper_tail(b) - _upper_tail(-a)
        fa, fb = np.isfinite(a), np.isfinite(b)
        a0, b0 = np.where(fa, a, 0.0), np.where(fb, b, 0.0)
        pa = np.where(fa, np.exp(-0.5 * a0 * a0), 0.0) / math.sqrt(2 * math.pi)
        pb = np.where(fb, np.exp(-0.5 * b0 * b0), 0.0) / math.sqrt(2 * math.pi)
        apa, bpb = a0 * pa, b0 * pb
        mm = (pa - pb) / Z
        m1[mid] = mm
        v[mid] = np.maximum(1.0 + (apa - bpb) / Z - mm * mm, 1e-300)
    # narrow intervals (the log-density changes by < 1 across them): the closed forms above
    # subtract O(A^2) terms to get ~w^2/12; Gauss-Legendre quadrature of the tilted uniform,
    # exp(-c u - u^2/2) on [-w/2, w/2] around the midpoint c, has no cancellation
    with np.errstate(invalid="ignore"):
        w = B - A
        c = 0.5 * (A + B)
        narrow = np.isfinite(w) & (w * (np.abs(c) + 1.0) < 1.0)
    if np.any(narrow):
        nodes, weights = np.polynomial.legendre.leggauss(20)
        wn, cn = w[narrow][:, None], c[narrow][:, None]
        u = 0.5 * wn * nodes[None]
        f = weights[None] * np.exp(-cn * u - 0.5 * u * u)
        mean_u = np.sum(f * u, axis=1) / np.sum(f, axis=1)
        m1[narrow] = c[narrow] + mean_u
        v[narrow] = np.maximum(np.sum(f * (u - mean_u[:, None]) ** 2, axis=1) / np.sum(f, axis=1), 1e-300)
    return m1, v


# ----------------------------------------------------------------------------- priors in z space

def _col(a):
    """alpha/sigma as a broadcastable column: a float stays, (B,) becomes (B, 1)."""
    return a if np.ndim(a) == 0 else np.asarray(a, dtype=np.float64)[:, None]


def _mat(a):
    """alpha/sigma for (B, d, d) stacks: a float stays, (B,) becomes (B, 1, 1)."""
    return a if np.ndim(a) == 0 else np.asarray(a, dtype=np.float64)[:, None, None]


class GaussianDiffusedPrior:
    """N(mean, cov) in z space; everything closed-form (exact)."""

    exact = True

    def __init__(self, mean, cov):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.cov = np.asarray(cov, dtype=np.float64)
        self.d = self.mean.size
        self._prec = np.linalg.inv(self.cov)

    def score(self, z, alpha, sigma):
        """grad log p_t(z) (B, d), p_t = N(alpha m, alpha^2 C + sigma^2 I)."""
        a, s = _mat(alpha), _mat(sigma)
        cov_t = a * a * self.cov + s * s * np.eye(self.d)
        diff = z - _col(alpha) * self.mean
        if cov_t.ndim == 2:  # one time for every row: one inverse
            return -diff @ np.linalg.inv(cov_t)
        return -np.linalg.solve(cov_t, diff[:, :, None])[:, :, 0]

    def score0(self, z):
        """grad log p(z) (B, d), the unperturbed prior."""
        return -(z - self.mean) @ self._prec

    def precision(self):
        """The prior precision C^-1 (d, d)."""
        return self._prec

    def denoising_precision(self, z, alpha, sigma):
        """Precision of p(z_0 | z_t = z): C^-1 + alpha^2/sigma^2 I, (B or 1, d, d)."""
        a2s2 = _mat(np.asarray(alpha) ** 2 / np.asarray(sigma) ** 2)
        return self._prec[None] + a2s2 * np.eye(self.d)[None]


class BoxDiffusedPrior:
    """The uniform prior on the box [low, high] in z space; closed-form (exact)."""

    exact = True

    def __init__(self, low, high):
        self.low = np.asarray(low, dtype=np.float64)
        self.high = np.asarray(high, dtype=np.float64)
        self.d = self.low.size

    def _moments(self, z, alpha, sigma):
        a, s = _col(alpha), _col(sigma)
        A = (a * self.low - z) / s
        B = (a * self.high - z) / s
        return truncated_normal_moments(A, B)

    def score(self, z, alpha, sigma):
        """grad log p_t(z) = m_1 / sigma per dimension (B, d)."""
        m1, _ = self._moments(z, alpha, sigma)
        return m1 / _col(sigma)

    def score0(self, z):
        """0: the uniform density is flat inside the box (and the score is undefined outside)."""
        return np.zeros_like(z)

    def precision(self):
        """The prior precision: 12 / (b - a)^2 on the diagonal (the uniform's variance)."""
        return np.diag(12.0 / (self.high - self.low) ** 2)

    def denoising_precision(self, z, alpha, sigma):
        """alpha^2 / (sigma^2 v) on the diagonal (B, d, d), v the truncated normal variance."""
        _, v = self._moments(z, alpha, sigma)
        a2s2 = _col(np.asarray(alpha) ** 2 / np.asarray(sigma) ** 2)
        prec = a2s2 / v
        out = np.zeros(z.shape + (self.d,))
        idx = np.arange(self.d)
        out[:, idx, idx] = prec
        return out


class MixtureDiffusedPrior:
    """A diagonal Gaussian mixture sum_k w_k N(mu_k, diag v_k) in z space: closed-form in itself,
    an APPROXIMATION of the prior it was fitted to (``fit``)."""

    exact = False

    def __init__(self, weights, means, variances):
        self.w = np.asarray(weights, dtype=np.float64)
        self.mu = np.asarray(means, dtype=np.float64)
        self.v = np.asarray(variances, dtype=np.float64)
        self.d = self.mu.shape[1]

    @classmethod
    def fit(cls, z, components=8, seed=0, iterations=200, tol=1e-7):
        """EM on draws z (n, d); means started at random draws (seeded), variances floored."""
        rng = as_generator(seed)
        n, d = z.shape
        k = int(min(components, n))
        mu = z[rng.choice(n, size=k, replace=False)].copy()
        var = np.tile(z.var(axis=0) + 1e-6, (k, 1))
        w = np.full(k, 1.0 / k)
        floor = 1e-6 * (z.var(axis=0) + 1e-12)
        last = -np.inf
        for _ in range(iterations):
            logr = cls._log_components(z, w, mu, var)
            top = logr.max(axis=1, keepdims=True)
            ll = float(np.sum(top[:, 0] + np.log(np.exp(logr - top).sum(axis=1))))
            r = np.exp(logr - top)
            r /= r.sum(axis=1, keepdims=True)
            nk = r.sum(axis=0) + 1e-12
            w = nk / n
            mu = (r.T @ z) / nk[:, None]
            var = np.maximum((r.T @ (z * z)) / nk[:, None] - mu * mu, floor)
            if ll - last < tol * n:
                break
            last = ll
        return cls(w, mu, var)

    @staticmethod
    def _log_components(z, w, mu, var):
        diff = z[:, None, :] - mu[None]
        return (np.log(w)[None] - 0.5 * np.sum(diff * diff / var[None] + np.log(2 * np.pi * var)[None], axis=2))

    def _resp(self, z, alpha, sigma):
        a, s = _col(alpha), _col(sigma)
        a3 = a if np.ndim(a) == 0 else a[:, :, None]
        s3 = s if np.ndim(s) == 0 else s[:, :, None]
        var_t = a3 * a3 * self.v[None] + s3 * s3  # (B or 1, K, d)
        diff = z[:, None, :] - a3 * self.mu[None]
        logr = np.log(self.w)[None] - 0.5 * np.sum(diff * diff / var_t + np.log(2 * np.pi * var_t), axis=2)
        logr -= logr.max(axis=1, keepdims=True)
        r = np.exp(logr)
        return r / r.sum(axis=1, keepdims=True), diff, var_t

    def score(self, z, alpha, sigma):
        r, diff, var_t = self._resp(z, alpha, sigma)
        return -np.sum(r[:, :, None] * diff / var_t, axis=1)

    def score0(self, z):
        return self.score(z, 1.0, 0.0)

    def precision(self):
        m = self.w @ self.mu
        cov = np.einsum("k,ki,kj->ij", self.w, self.mu - m, self.mu - m) + np.diag(self.w @ self.v)
        return np.linalg.inv(cov)

    def denoising_precision(self, z, alpha, sigma):
        """Inverse of the denoised mixture's covariance (law of total covariance), (B, d, d)."""
        r, _, _ = self._resp(z, alpha, sigma)
        a, s = _col(alpha), _col(sigma)
        a3 = a if np.ndim(a) == 0 else a[:, :, None]
        s3 = s if np.ndim(s) == 0 else s[:, :, None]
        prec_k = 1.0 / self.v[None] + a3 * a3 / (s3 * s3)  # (B or 1, K, d)
        mean_k = (self.mu[None] / self.v[None] + a3 * z[:, None, :] / (s3 * s3)) / prec_k
        mean = np.sum(r[:, :, None] * mean_k, axis=1)
        second = np.einsum("bk,bki,bkj->bij", r, mean_k, mean_k)
        diag = np.sum(r[:, :, None] * np.broadcast_to(1.0 / prec_k, mean_k.shape), axis=1)
        cov = second - mean[:, :, None] * mean[:, None, :]
        idx = np.arange(self.d)
        cov[:, idx, idx] += diag
        return np.linalg.inv(cov)


def diffused_prior(prior, theta_std, seed=0, mixture_components=8, mixture_samples=20_000):
    """The prior in the network's z space, with its perturbed score and denoising precision.

    ``Normal``, ``MultivariateNormal``: ``GaussianDiffusedPrior`` (exact); ``BoxUniform``:
    ``BoxDiffusedPrior`` (exact); any other prior: ``MixtureDiffusedPrior.fit`` on
    ``mixture_samples`` prior draws (approximate, seeded).
    """
    from . import priors
    mu, s = theta_std.mean, theta_std.std
    if type(prior) is priors.Normal:
        return GaussianDiffusedPrior((prior.loc - mu) / s, np.diag((prior.scale / s) ** 2))
    if type(prior) is priors.MultivariateNormal:
        return GaussianDiffusedPrior((prior.mean - mu) / s, prior.cov / np.outer(s, s))
    if type(prior) is priors.BoxUniform:
        return BoxDiffusedPrior((prior.low - mu) / s, (prior.high - mu) / s)
    draws = theta_std.forward(prior.sample(int(mixture_samples), seed=as_generator(seed)))
    return MixtureDiffusedPrior.fit(draws, mixture_components, seed=as_generator(seed))


# ----------------------------------------------------------------------------- composition

def compose(method, s, z, t, alpha, sigma, T, prior, post_precision=None, jac=None, precision_ratio=100.0):
    """The composed score (B, d) at z (B, d) from the per-trial scores s (m, B, d).

    t, alpha, sigma: floats or (B,). ``post_precision`` (m, d, d): z-space precisions of the
    single-trial posteriors (``gauss``, ``auto_gauss``); ``jac`` (m, B, d, d): ds_i/dz (``jac_gauss``,
    with ``precision_ratio`` the bound on its Tweedie factor, see below).
    """
    m = s.shape[0]
    if method == "fnpe":
        lam = 1.0 - _col(np.asarray(t, dtype=np.float64)) / T
        return s.sum(axis=0) + (1 - m) * lam * prior.score0(z)
    if method == "fnpe_marginal":
        return s.sum(axis=0) + (1 - m) * prior.score(z, alpha, sigma)
    B, d = z.shape
    P0 = prior.denoising_precision(z, alpha, sigma)  # (B or 1, d, d)
    g0 = prior.score(z, alpha, sigma)
    if method == "jac_gauss":
        # Tweedie: Cov(z0 | zt, x_i) = (sigma^2/alpha^2) F_i, F_i = I + sigma^2 J_i (J symmetrised).
        # At large sigma F is a small difference of O(1) numbers, so the network's error swamps it
        # (measured, linear Gaussian VE at t = 1: learned F from -0.011 to 0.076 about the true
        # 0.0064). Its eigenvalues are kept >= F0_min / precision_ratio, F0 the prior's factor
        # alpha^2 C0 (alpha^2 C0 + sigma^2 I)^-1: by assumption no trial's posterior is more than
        # ``precision_ratio`` times more precise than the prior.
        a2, s2 = np.asarray(alpha, dtype=np.float64) ** 2, np.asarray(sigma, dtype=np.float64) ** 2
        w, V = np.linalg.eigh(np.eye(d) + _mat(s2) * (0.5 * (jac + np.swapaxes(jac, -1, -2))))
        c0 = np.linalg.eigvalsh(np.linalg.inv(prior.precision()))  # prior variances along its axes
        f0 = a2[..., None] * c0 / (a2[..., None] * c0 + s2[..., None])  # (d,) or (B, d)
        w = np.maximum(w, (f0.min(axis=-1) / precision_ratio)[..., None])
        P = np.einsum("mbij,mbj,mbkj->mbik", V, 1.0 / w, V) * _mat(a2 / s2)
        L = _psd(P - P0[None])  # (m, B, d, d)
        sum_l, sum_ls = L.sum(axis=0), np.einsum("mbij,mbj->bi", L, s)
    else:
        L = _psd(post_precision - prior.precision()[None])  # (m, d, d)
        sum_l, sum_ls = L.sum(axis=0)[None], np.einsum("mij,mbj->bi", L, s)
    # Lambda = sum_i P_i + (1 - m) P0 with P_i = P0 + L_i: the trial's denoiser is the prior's
    # times its likelihood (L_i >= 0), so Lambda = P0 + sum_i L_i is positive definite
    lam = P0 + sum_l
    base = s.sum(axis=0) + (1 - m) * g0
    num = (base @ P0[0] if P0.shape[0] == 1 else np.einsum("bij,bj->bi", P0, base)) + sum_ls
    if lam.shape[0] == 1:  # one matrix for every row (Gaussian prior, one time): one inverse
        return num @ np.linalg.inv(lam[0]).T
    return np.linalg.solve(lam, num[:, :, None])[:, :, 0]


def _psd(M):
    """The positive semi-definite part of symmetric matrices M (..., d, d): negative eigenvalues set to 0."""
    w, V = np.linalg.eigh(0.5 * (M + np.swapaxes(M, -1, -2)))
    return np.einsum("...ij,...j,...kj->...ik", V, np.maximum(w, 0.0), V)


class IIDField(Field):
    """The composed score for B rows and m trials, with the interface the samplers drive
    (``score.Field``: ``score``, ``velocity``, ``backend``, ``sde``, ``dtype``, ``to_device``), like
    ``ScoreField``; no ``velocity_div`` (composed scores give no log-densities).

    The m x B per-trial scores come from ONE network batch of m B rows (theta tiled, trial-major)
    with per-row x parts: xc_trials (m, h0) is each trial's x-embedding, computed once per call by
    the caller. The composition runs on the host in float64 (m B d numbers a step: small next to
    the network).
    """

    def __init__(self, model, backend, params, xc_trials, batch, dtype, method, prior, post_precision=None,
                 precision_ratio=100.0):
        if method not in IID_METHODS:
            raise ValueError(f"unknown iid_method {method!r}; choose from {IID_METHODS}")
        self.model, self.backend, self.sde, self.dtype = model, backend, model.sde, dtype
        self.method, self.prior, self.post_precision = method, prior, post_precision
        self.precision_ratio = float(precision_ratio)
        self.m, self.batch = int(xc_trials.shape[0]), int(batch)
        xc_rows = backend.xp.repeat(xc_trials, self.batch, axis=0)
        if method == "jac_gauss":
            self.jac = ScoreJacobian(model, backend, params, xc_rows, dtype)
        else:
            self.trials = ScoreField(model, backend, params, xc_rows, self.m * self.batch, dtype)

    def score(self, theta, t):
        be, m = self.backend, self.m
        z = be.to_host(theta).astype(np.float64)
        n, d = z.shape
        t_rows = t if np.ndim(t) == 0 else np.tile(np.asarray(t, dtype=np.float64), m)
        alpha, sigma = self.sde.marginal(t)
        if self.method == "jac_gauss":
            s, jac = self.jac(np.tile(z, (m, 1)), t_rows)
            s, jac = s.reshape(m, n, d), jac.reshape(m, n, d, d)
        else:
            out = self.trials.score(be.xp.tile(theta, (m, 1)), t_rows)
            s, jac = be.to_host(out).astype(np.float64).reshape(m, n, d), None
        if np.ndim(t) == 0:
            alpha, sigma = float(alpha), float(sigma)
        S = compose(self.method, s, z, t, alpha, sigma, self.sde.T, self.prior, self.post_precision, jac,
                    self.precision_ratio)
        return self.to_device(S)  # velocity (from Field) is f theta - g^2 S / 2


def check_iid_params(method, iid_params):
    """The iid_params for ``method`` with defaults filled in; ValueError on unknown keys."""
    if method not in IID_METHODS:
        raise ValueError(f"unknown iid_method {method!r}; choose from {IID_METHODS}")
    allowed = dict(IID_PARAMS[method], **MIXTURE_DEFAULTS)
    given = dict(iid_params or {})
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"iid_params {unknown} do not apply to iid_method {method!r}; it takes {sorted(allowed)}")
    allowed.update(given)
    return allowed
