"""The linear-Gaussian fit of theta | x: where sampling starts, and an optional baseline score the network corrects.

In standardised space (z-scored theta and x, as the network sees them) fit by least squares

    theta = A^T [x, 1] + e,    e ~ N(0, S),       A (p + 1, d), S (d, d) the residual covariance,

so that p(theta | x) ~= N(m(x), S) with m(x) = A^T [x, 1]. Diffused by the SDE (theta_t = alpha_t theta +
sigma_t eps) a Gaussian stays Gaussian, p_t(theta_t | x) = N(alpha m(x), alpha^2 S + sigma^2 I), whose score is

    s_G(theta_t, x, t) = -(alpha^2 S + sigma^2 I)^-1 (theta_t - alpha m(x))
                       = -V diag(lam) V^T (theta_t - alpha m(x)),    lam_j = 1 / (alpha^2 e_j + sigma^2),

with S = V diag(e) V^T (eigenvalues floored at ``min_var``, below). The model's score is

    s(theta_t, x, t) = s_G(theta_t, x, t) + net(c_in theta_t, x, tau) / c_out        (``score.ScoreModel``)

Any fixed function of (theta_t, x, t) may stand there: denoising score matching still has the true score
as its minimiser, the network just learns the remainder. Where the posterior is close to Gaussian with a
mean nearly linear in x (sbibm's gaussian_linear: exactly) the remainder is small, and the network no
longer has to build the linear map x -> m(x) out of 256-wide layers. It is Karras et al. (2022)'s skip
connection (c_skip: the score of N(0, sigma_data^2 I)) made conditional.

The same fit gives the samplers' starting distribution. The SDE's own base, N(0, sigma_max^2 I) (VE) or
N(0, I) (VP), misses p_T's mean alpha_T m(x) and covariance; the probability-flow ODE carries that miss to
t = 0, scaled by roughly sqrt(v) / sigma_max for a posterior of variance v: every draw is pulled toward the
prior mean. Measured on gaussian_linear (VE, v = 0.5, sigma_max = 10.3 in z space): -0.068 predicted,
-0.067 observed (NOTES). Sampling therefore starts from N(alpha_T m(x), alpha_T^2 S + sigma_T^2 I)
(``diffused_sample``; ``score.ScoreModel.base_sample``) and log-densities end on its density
(``diffused_log_prob``), with or without the baseline score.

Why the baseline: the 10-D Gaussian tasks lost to NPE through a posterior-mean bias toward the prior mean (draws
pulled in by 11%) that no training change removed (NOTES). Measured in ``docs/benchmark.md`` / NOTES.

The floor ``min_var`` (standardised units): a residual variance far below the posterior's local width
happens where theta is a curved function of x (two_moons: 0.015 along one axis). A linear mean is then off
the posterior's ridge by more than that width and s_G ~ (offset) / e is a large wrong pull the network has
to cancel; with the floor the baseline stays a broad guide there.

Training (``npse.TrainStep``): the DSM loss with weight sigma^2 on the total score,
mean_j (sigma s_j + z_j)^2 = mean_j (c out_j + z'_j)^2, has the target z' = z + sigma s_G(theta_t) (the
same shift NLSE's prior score makes). With theta_t = alpha theta_0 + sigma z and the rotated residual
r_0 = V^T (theta_0 - m(x)) of each training row, fixed for the whole run:

    sigma s_G = -sigma V (lam * (alpha r_0 + sigma V^T z))                      (``target_shift``)

Log-densities (``score.ScoreField.velocity_div``): Tr(d s_G / d theta) = -sum_j lam_j, exact and the same for
every row at one time; the Jacobian is -V diag(lam) V^T (``jacobian``: the i.i.d. compositions and the MAP).

Shapes: theta rows (n, d), x rows (n, p), t / alpha / sigma one float or (B,) per-row values.
"""
import numpy as np

BASELINES = (None, "gaussian")


class LinearGaussian:
    """The fitted baseline: coef A (p + 1, d) (last row: the intercept), the eigenvalues e (d,) and
    eigenvectors V (d, d) (columns) of the residual covariance, e already floored."""

    def __init__(self, coef, evals, evecs):
        self.coef = np.asarray(coef, dtype=np.float64)
        self.evals = np.asarray(evals, dtype=np.float64)
        self.evecs = np.asarray(evecs, dtype=np.float64)
        d = self.evals.shape[0]
        if (self.coef.ndim != 2 or self.coef.shape[1] != d or self.evecs.shape != (d, d)
                or not np.all(np.isfinite(self.coef)) or not np.all(self.evals > 0)
                or not np.all(np.isfinite(self.evals)) or not np.all(np.isfinite(self.evecs))):
            raise ValueError("a Gaussian baseline needs coef (p + 1, d), positive finite evals (d,) and evecs (d, d)")
        self._device = {}  # backend name -> (V, V^T) on that backend, made once

    @property
    def dim_theta(self):
        return self.evals.shape[0]

    @property
    def dim_x(self):
        return self.coef.shape[0] - 1

    @classmethod
    def fit(cls, theta, x, min_var=0.0):
        """Least squares of theta (n, d) on [x, 1] (x (n, p)), both standardised; S is the residuals'
        covariance with n - p - 1 degrees of freedom, its eigenvalues floored at ``min_var`` (and at
        1e-6: a residual that vanishes, theta a linear function of x, still gives a finite score)."""
        theta, x = np.asarray(theta, dtype=np.float64), np.asarray(x, dtype=np.float64)
        n, p = x.shape
        design = np.hstack([x, np.ones((n, 1))])
        coef, *_ = np.linalg.lstsq(design, theta, rcond=None)  # min-norm where columns are constant
        resid = theta - design @ coef
        cov = resid.T @ resid / max(n - p - 1, 1)
        evals, evecs = np.linalg.eigh(0.5 * (cov + cov.T))
        return cls(coef, np.maximum(evals, max(float(min_var), 1e-6)), evecs)

    def mean(self, x):
        """m(x) = A^T [x, 1]: (n, p) standardised rows -> (n, d), float64 on the host."""
        x = np.asarray(x, dtype=np.float64)
        return x @ self.coef[:-1] + self.coef[-1]

    def residual(self, theta, x):
        """r_0 = V^T (theta - m(x)) per row (n, d), host float64: a training row's part of the target shift."""
        return (np.asarray(theta, dtype=np.float64) - self.mean(x)) @ self.evecs

    def lam(self, alpha, sigma):
        """lam_j = 1 / (alpha^2 e_j + sigma^2): (d,) for one time, (B, d) for per-row times."""
        alpha, sigma = np.asarray(alpha, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
        if alpha.ndim == 0:
            return 1.0 / (alpha * alpha * self.evals + sigma * sigma)
        return 1.0 / (alpha[:, None] ** 2 * self.evals + sigma[:, None] ** 2)

    def target_shift(self, r0, alpha, sigma, z):
        """sigma s_G(theta_t) (B, d) host float64 at theta_t = alpha theta_0 + sigma z, from the rows'
        rotated residuals r0 (B, d), alpha and sigma (B,), the noise z (B, d)."""
        alpha, sigma = np.asarray(alpha, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
        rot = alpha[:, None] * r0 + sigma[:, None] * (np.asarray(z, dtype=np.float64) @ self.evecs)
        return -(sigma[:, None] * self.lam(alpha, sigma) * rot) @ self.evecs.T

    def score(self, theta, mean, alpha, sigma):
        """s_G (B, d), host float64: the plain version of ``add_score`` (tests, reference).
        mean: m(x) rows (1 or B, d)."""
        rot = (np.asarray(theta, dtype=np.float64) - np.asarray(alpha)[..., None] * mean) @ self.evecs
        return -(self.lam(alpha, sigma) * rot) @ self.evecs.T

    def add_score(self, backend, s, theta, mean, alpha, sigma):
        """s += s_G(theta, x, t) in place on ``backend`` (what the fields run). s, theta (B, d) and
        mean (1 or B, d) device arrays of one dtype; alpha, sigma one float or host (B,) arrays."""
        xp = backend.xp
        V, Vt = self._on(backend, s.dtype)
        lam = self.lam(alpha, sigma)
        if np.ndim(alpha) == 0:
            rot = (theta - float(alpha) * mean) @ V
            rot *= backend.to_device(lam.astype(s.dtype))[None, :]
        else:
            a = backend.to_device(np.asarray(alpha, dtype=s.dtype))
            rot = (theta - a[:, None] * mean) @ V
            rot *= backend.to_device(lam.astype(s.dtype))
        s -= xp.matmul(rot, Vt)
        return s

    def diffused_sample(self, n, mean, alpha, sigma, rng):
        """(n, d) host draws from N(alpha m, alpha^2 S + sigma^2 I) for mean rows m (1 or n, d) at one
        time: where the samplers start (t = T). seed: int or Generator."""
        from .rng import as_generator
        eps = as_generator(rng).standard_normal((n, self.dim_theta))
        return alpha * np.asarray(mean) + (eps * np.sqrt(alpha * alpha * self.evals + sigma * sigma)) @ self.evecs.T

    def diffused_log_prob(self, theta, mean, alpha, sigma):
        """log N(theta; alpha m, alpha^2 S + sigma^2 I) per row (n,) at one time; theta (n, d), mean (1 or n, d)."""
        var = alpha * alpha * self.evals + sigma * sigma
        rot = (np.asarray(theta, dtype=np.float64) - alpha * np.asarray(mean)) @ self.evecs
        return -0.5 * (np.sum(rot * rot / var, axis=1) + np.sum(np.log(2.0 * np.pi * var)))

    def trace(self, alpha, sigma):
        """Tr(d s_G / d theta) = -sum_j lam_j: a float for one time, (B,) for per-row times."""
        return -np.sum(self.lam(alpha, sigma), axis=-1)

    def jacobian(self, alpha, sigma):
        """d s_G / d theta = -V diag(lam) V^T: (d, d) for one time, (B, d, d) for per-row times."""
        lam = self.lam(alpha, sigma)
        return -np.einsum("ik,...k,jk->...ij", self.evecs, lam, self.evecs)

    def _on(self, backend, dtype):
        key = (backend.name, np.dtype(dtype).name)
        if key not in self._device:
            V = backend.to_device(np.ascontiguousarray(self.evecs.astype(dtype)))
            self._device[key] = (V, backend.to_device(np.ascontiguousarray(self.evecs.T.astype(dtype))))
        return self._device[key]

    def arrays(self):
        """{name: array} for a posterior file (``ScorePosterior.save``)."""
        return dict(gaussian_coef=self.coef, gaussian_evals=self.evals, gaussian_evecs=self.evecs)

    @classmethod
    def from_arrays(cls, arrays):
        return cls(arrays["gaussian_coef"], arrays["gaussian_evals"], arrays["gaussian_evecs"])
