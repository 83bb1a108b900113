"""The trained posterior: sampling, log-densities, persistence.

``ScorePosterior`` holds the score model (network + SDE + preconditioning), its weights, the
z-scoring of theta and x, and the prior. Everything happens in standardised theta space
theta~ = (theta - mu) / s and is mapped back; log-densities include the Jacobian of that map,
log p(theta | x) = log p~(theta~ | x) - sum_j log s_j, and are -inf outside the prior support.

``save(path)`` writes one ``.npz`` (weights, standardisation, SDE, network sizes, settings,
version, prior); ``snpse_np.load(path)`` restores it with numpy alone.
"""
import json

import numpy as np

from . import __version__
from .backend import get_backend
from .nn import ScoreNetwork
from .progress import Progress
from .rng import as_generator
from .sampling import CPU_CHUNK_ROWS, ODE_METHODS, SAMPLERS, ScoreField, euler_maruyama, ode_fixed, ode_rk45
from .score import ScoreModel
from .sde import sde_from_config
from .standardize import Standardizer

SAMPLE_DEFAULTS = {"ode": dict(method="rk45", steps=100), "sde": dict(steps=500), "pc": dict(steps=250)}


class ScorePosterior:
    def __init__(self, model, params, theta_std, x_std, prior, backend, dtype=np.float32, default_x=None):
        self.model, self.params = model, params
        self.theta_std, self.x_std = theta_std, x_std
        self.prior, self.backend, self.dtype = prior, backend, np.dtype(dtype)
        self.default_x = None
        self._xc_cache = (None, None)
        if default_x is not None:
            self.set_default_x(default_x)

    @property
    def dim_theta(self):
        return self.model.net.dim_theta

    @property
    def dim_x(self):
        return self.model.net.dim_x

    @property
    def sde(self):
        return self.model.sde

    def set_default_x(self, x):
        """Set the observation used when ``x`` is not given; returns self (sbi-style)."""
        self.default_x = self._check_x(x)
        return self

    def _check_x(self, x):
        if x is None:
            if self.default_x is None:
                raise ValueError("no observation: pass x=... or call set_default_x(x_o) first")
            return self.default_x
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 2 and x.shape[0] == 1:
            x = x[0]
        if x.ndim != 1 or x.shape[0] != self.dim_x:
            raise ValueError(f"x must be one observation of dimension {self.dim_x}, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("x contains NaN or inf")
        return x

    def _condition(self, x):
        """The network's x part for one observation, cached for repeated calls."""
        key, xc = self._xc_cache
        if key is not None and np.array_equal(key, x):
            return xc
        be = self.backend
        xs = be.to_device(self.x_std.forward(x[None, :]).astype(self.dtype))
        xc = self.model.net.condition(be, self.params, xs)
        self._xc_cache = (x.copy(), xc)
        return xc

    # ------------------------------------------------------------------ sampling

    def sample(self, n, x=None, sampler="ode", steps=None, method=None, seed=None, corrector_steps=1,
               snr=0.16, rtol=1e-4, atol=1e-4, batch_size=10_000, reject_outside_prior=False,
               max_rejection_rounds=100, show_progress=False):
        """Draw ``n`` samples (n, d) from p(theta | x).

        sampler: "ode" (probability-flow ODE; ``method`` "rk45" adaptive by default, or "euler",
        "heun", "rk4" with ``steps``), "sde" (Euler-Maruyama, ``steps`` default 500) or "pc"
        (Euler-Maruyama + ``corrector_steps`` Langevin steps with signal-to-noise ``snr``).
        reject_outside_prior: redraw samples that fall outside the prior support until n are
        inside (raises if the acceptance is too low to finish in ``max_rejection_rounds``).
        """
        if int(n) != n or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        n = int(n)
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose from {SAMPLERS}")
        opts = dict(SAMPLE_DEFAULTS[sampler])
        if steps is not None:
            opts["steps"] = steps
        if method is not None:
            if sampler != "ode":
                raise ValueError("method applies to sampler='ode' only")
            if method not in ODE_METHODS:
                raise ValueError(f"unknown ODE method {method!r}; choose from {ODE_METHODS}")
            opts["method"] = method
        x = self._check_x(x)
        rng = as_generator(seed)
        progress = Progress(show_progress)
        if not reject_outside_prior:
            out = self._sample_batches(n, x, sampler, opts, rng, batch_size, corrector_steps, snr, rtol, atol)
            progress.done(f"sampled {n} in {progress.elapsed:.1f}s")
            return out
        kept, have = [], 0
        for _ in range(max_rejection_rounds):
            if have >= n:
                break
            want = n - have
            draw = self._sample_batches(max(want, 64), x, sampler, opts, rng, batch_size, corrector_steps, snr,
                                        rtol, atol)
            ok = draw[self.prior.support_contains(draw)]
            kept.append(ok[:want])
            have += kept[-1].shape[0]
            progress.update(f"sampled {have}/{n} inside the prior support", force=True)
        if have < n:
            raise RuntimeError(f"only {have} of {n} samples fell inside the prior support after "
                               f"{max_rejection_rounds} rounds; the posterior may be poorly trained")
        progress.done(f"sampled {n} in {progress.elapsed:.1f}s")
        return np.concatenate(kept)[:n]

    def _sample_batches(self, n, x, sampler, opts, rng, batch_size, corrector_steps, snr, rtol, atol):
        be, d = self.backend, self.dim_theta
        xc = self._condition(x)
        out = np.empty((n, d), dtype=np.float64)
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            field = ScoreField(self.model, be, self.params, xc, b, self.dtype)
            theta = be.to_device(self.sde.prior_sample(b, d, rng).astype(self.dtype))
            if sampler == "ode":
                if opts["method"] == "rk45":
                    theta, _, _ = ode_rk45(field, theta, rtol=rtol, atol=atol)
                else:
                    theta, _ = ode_fixed(field, theta, opts["steps"], opts["method"])
            else:
                theta = euler_maruyama(field, theta, opts["steps"], rng,
                                       corrector_steps=corrector_steps if sampler == "pc" else 0, snr=snr)
            out[start:start + b] = self.theta_std.inverse(be.to_host(theta))
        return out

    # ------------------------------------------------------------------ densities

    def log_prob(self, theta, x=None, method="rk45", steps=100, exact=True, seed=None, rtol=1e-4, atol=1e-4,
                 batch_size=None):
        """log p(theta | x) for theta (n, d) -> (n,), by the probability-flow ODE.

        The divergence is the exact trace (``exact=True``, d forward-mode tangents) or the
        Hutchinson estimate (one Rademacher tangent; unbiased, noisy). Rows outside the prior
        support get -inf. The rows are integrated in chunks of ``batch_size`` (default: 1,024 rows
        on the CPU, whose d tangent buffers then stay in cache: 25% faster than 4,096 in 10-D here;
        4,096 on the GPU).
        """
        theta = np.asarray(theta, dtype=np.float64)
        if theta.ndim == 1:
            theta = theta[None, :]
        if theta.ndim != 2 or theta.shape[1] != self.dim_theta:
            raise ValueError(f"theta must have shape (n, {self.dim_theta}), got {theta.shape}")
        if method not in ODE_METHODS:
            raise ValueError(f"unknown ODE method {method!r}; choose from {ODE_METHODS}")
        x = self._check_x(x)
        rng = as_generator(seed)
        be = self.backend
        if batch_size is None:
            batch_size = 4096 if be.name == "cuda" else CPU_CHUNK_ROWS
        out = np.full(theta.shape[0], -np.inf)
        inside = self.prior.support_contains(theta) & np.all(np.isfinite(theta), axis=1)
        idx = np.flatnonzero(inside)
        xc = self._condition(x)
        for start in range(0, idx.size, batch_size):
            rows = idx[start:start + batch_size]
            field = ScoreField(self.model, be, self.params, xc, rows.size, self.dtype,
                               divergence="exact" if exact else "hutchinson", seed=rng)
            th = be.to_device(self.theta_std.forward(theta[rows]).astype(self.dtype))
            if method == "rk45":
                th1, delta, _ = ode_rk45(field, th, rtol=rtol, atol=atol, with_div=True, forward=True)
            else:
                th1, delta = ode_fixed(field, th, steps, method, with_div=True, forward=True)
            lp = self.sde.prior_log_prob(be.to_host(th1).astype(np.float64)) + be.to_host(delta).astype(np.float64)
            out[rows] = lp - self.theta_std.log_abs_det
        return out

    # ------------------------------------------------------------------ persistence

    def save(self, path):
        """Write the posterior to one ``.npz`` file (numpy alone reads it back with ``load``)."""
        meta = dict(version=__version__, net=self.model.net.config(), sde=self.sde.config(),
                    precondition=self.model.precondition, time_input=self.model.time_input, floor=self.model.floor,
                    dtype=self.dtype.name, prior=_prior_state(self.prior)[0])
        arrays = dict(params=self.backend.to_host(self.params), theta_mean=self.theta_std.mean,
                      theta_std=self.theta_std.std, x_mean=self.x_std.mean, x_std=self.x_std.std,
                      meta=np.array(json.dumps(meta)))
        for k, v in _prior_state(self.prior)[1].items():
            arrays["prior_" + k] = v
        if self.default_x is not None:
            arrays["default_x"] = self.default_x
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)

    def __repr__(self):
        return (f"ScorePosterior(dim_theta={self.dim_theta}, dim_x={self.dim_x}, sde={self.sde!r}, "
                f"backend={self.backend.name!r})")


def _prior_state(prior):
    from . import priors
    kinds = {priors.BoxUniform: ("BoxUniform", ("low", "high")),
             priors.Normal: ("Normal", ("loc", "scale")),
             priors.LogNormal: ("LogNormal", ("loc", "scale")),
             priors.MultivariateNormal: ("MultivariateNormal", ("mean", "cov"))}
    if type(prior) in kinds:
        name, fields = kinds[type(prior)]
        return name, {f: getattr(prior, f) for f in fields}
    return None, {}


def load(path, backend=None):
    """Restore a posterior written by ``ScorePosterior.save``; needs numpy only (backend "numpy"
    works everywhere). A custom prior class is not stored: pass it back with ``posterior.prior = ...``."""
    from . import priors
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        arrays = {k: f[k] for k in f.files}
    be = get_backend(backend)
    net = ScoreNetwork(**meta["net"])
    model = ScoreModel(net, sde_from_config(meta["sde"]), meta["precondition"], meta["time_input"], meta["floor"])
    dtype = np.dtype(meta["dtype"])
    prior = None
    if meta["prior"] is not None:
        kw = {k[len("prior_"):]: v for k, v in arrays.items() if k.startswith("prior_")}
        prior = getattr(priors, meta["prior"])(**kw)
    post = ScorePosterior(model, be.to_device(arrays["params"].astype(dtype)),
                          Standardizer(arrays["theta_mean"], arrays["theta_std"]),
                          Standardizer(arrays["x_mean"], arrays["x_std"]), prior, be, dtype,
                          default_x=arrays.get("default_x"))
    return post
