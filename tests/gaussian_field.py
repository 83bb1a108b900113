"""The exact score field of a Gaussian: a ``snpse_np.score.Field``, the protocol the samplers drive.

For data theta_0 ~ N(m, C) and transitions N(alpha_t theta_0, sigma_t^2 I), the perturbed
marginal is p_t = N(alpha_t m, Sigma_t) with Sigma_t = alpha_t^2 C + sigma_t^2 I, so
    score = -Sigma_t^{-1} (theta - alpha_t m),  div v = d f(t) + g(t)^2 tr(Sigma_t^{-1}) / 2.
Driving the samplers with it isolates sampler error from network error.
"""
import numpy as np

from snpse_np.backend import get_backend
from snpse_np.score import Field


class GaussianField(Field):
    def __init__(self, sde, mean, cov, dtype=np.float64):
        self.sde, self.mean, self.cov = sde, np.asarray(mean, float), np.asarray(cov, float)
        self.backend = get_backend("numpy")
        self.dtype = dtype
        self.d = self.mean.size

    @staticmethod
    def _rows(t, theta):
        # the samplers pass one float (fixed steps) or per-row times (RK45)
        return np.broadcast_to(np.asarray(t, dtype=np.float64), (theta.shape[0],))

    def _prec(self, t):
        alpha, sigma = self.sde.marginal(t)
        covs = alpha[:, None, None] ** 2 * self.cov + sigma[:, None, None] ** 2 * np.eye(self.d)
        return alpha, np.linalg.inv(covs)

    def score(self, theta, t):
        t = self._rows(t, theta)
        alpha, prec = self._prec(t)
        return -np.einsum("bij,bj->bi", prec, theta - alpha[:, None] * self.mean).astype(self.dtype)

    def velocity(self, theta, t):
        t = self._rows(t, theta)
        s = self.score(theta, t)
        f, g = self.sde.drift_coef(t), self.sde.diffusion(t)
        return (f[:, None] * theta - 0.5 * (g * g)[:, None] * s).astype(self.dtype)

    def velocity_div(self, theta, t):
        t = self._rows(t, theta)
        _, prec = self._prec(t)
        f, g = self.sde.drift_coef(t), self.sde.diffusion(t)
        div = self.d * f + 0.5 * g * g * np.trace(prec, axis1=1, axis2=2)
        return self.velocity(theta, t), div.astype(self.dtype)

    def log_density_at(self, theta, t):
        """log p_t(theta) in closed form."""
        alpha, sigma = self.sde.marginal(t)
        cov = alpha ** 2 * self.cov + sigma ** 2 * np.eye(self.d)
        diff = theta - alpha * self.mean
        sol = np.linalg.solve(cov, diff.T).T
        return -0.5 * np.sum(diff * sol, 1) - 0.5 * np.linalg.slogdet(2 * np.pi * cov)[1]
