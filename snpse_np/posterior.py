"""The trained posterior: sampling, log-densities, persistence.

``ScorePosterior`` holds the score model (network + SDE + preconditioning), its weights, the
z-scoring of theta and x, and the prior. Everything happens in standardised theta space
theta~ = (theta - mu) / s and is mapped back; log-densities include the Jacobian of that map,
log p(theta | x) = log p~(theta~ | x) - sum_j log s_j, and are -inf outside the prior support.

``save(path)`` writes one ``.npz`` (weights, standardisation, SDE, network sizes, settings,
version, prior, and the posterior's kind: "npse", or "nlse" with its prior score, see
``snpse_np.nlse``); ``snpse_np.load(path)`` restores it with numpy alone.
"""
import json
import os
import warnings

import numpy as np

from . import __version__
from .backend import get_backend
from .linear_gaussian import BASELINES, LinearGaussian
from .checks import integer, real, real_array
from .files import write_atomic
from .nn import ScoreNetwork
from .progress import Progress
from .rejection import draw_until
from .rng import as_generator
from .sampling import get_ode_solver, get_sampler, run_sampler
from .score import CPU_CHUNK_ROWS, ScoreField, ScoreJacobian, ScoreModel
from .sde import sde_from_config
from .standardize import Standardizer
from .threads import check_threads, uses_threads

# The default sampler: Heun's method on Karras et al.'s grid, 20 steps (40 network evaluations), as
# accurate as RK45 at 1e-4 (85-100 evaluations) on the sbibm tasks (NOTES.md, measured).
# "ald" (annealed Langevin, no predictor): 500 levels x corrector_steps (default 1) Langevin steps;
# 200 levels lagged far behind the VE annealing on the exact Gaussian field (variance 40x), 500 did not.
SAMPLE_DEFAULTS = {"ode": dict(method="edm", steps=20), "sde": dict(steps=500), "pc": dict(steps=250),
                   "ald": dict(steps=500)}
ODE_DEFAULT_STEPS = {"edm": 20, "euler": 100, "heun": 100, "rk4": 100}


class ScorePosterior:
    def __init__(self, model, params, theta_std, x_std, prior, backend, dtype=np.float32, default_x=None,
                 threads=None):
        self.model, self.params = model, params
        self.theta_std, self.x_std = theta_std, x_std
        self.prior, self.backend, self.dtype = prior, backend, np.dtype(dtype)
        self.threads = check_threads(threads)  # BLAS/Numba threads for sampling and log-densities
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
        self.default_x = self.check_x(x)
        return self

    def check_x(self, x):
        """One observation x (p,) or (1, p) checked (dimension, finite, z-scorable) as a (p,)
        array; None gives the default observation. Samplers, the truncated prior and the
        sequential methods call it so every entry point refuses a bad x the same way."""
        if x is None:
            if self.default_x is None:
                raise ValueError("no observation: pass x=... or call set_default_x(x_o) first")
            return self.default_x
        x = real_array(x, "x")
        if x.ndim == 2 and x.shape[0] == 1:
            x = x[0]
        if x.ndim != 1 or x.shape[0] != self.dim_x:
            raise ValueError(f"x must be one observation of dimension {self.dim_x}, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("x contains NaN or inf")
        with np.errstate(over="ignore", invalid="ignore"):
            z = self.x_std.forward(x).astype(self.dtype)
        if not np.all(np.isfinite(z)):
            raise ValueError(f"x is too far from every training simulation: its z-scores "
                             f"{self.x_std.forward(x).tolist()} overflow {self.dtype.name}")
        off = self.x_std.differs_on_constant(x)
        if off.size:
            j = int(off[0])
            raise ValueError(
                f"x column {j} (0-based) was constant ({self.x_std.mean[j]:.6g}) in every training "
                f"simulation, but this x has {x[j]:.6g} there: no simulation resembles x, and the "
                f"network never saw that column vary (its posterior there would be noise)")
        return x

    def _condition(self, x):
        """The network's x part for one observation, cached for repeated calls."""
        key, xc = self._xc_cache
        if key is not None and np.array_equal(key, x):
            return xc
        be = self.backend
        xs = be.to_device(self.x_std.forward(x[None, :]).astype(self.dtype))
        xc = self.model.condition(be, self.params, xs)
        self._xc_cache = (x.copy(), xc)
        return xc

    def _field(self, xc, rows, divergence=None, seed=None):
        """The posterior's score field (``score.Field``) for ``rows`` rows with x part(s) xc (1 or
        rows, h0): what sampling, log-densities and the MAP drive (``nlse.NLSEPosterior`` adds
        the diffused prior's score to the network's here)."""
        return ScoreField(self.model, self.backend, self.params, xc, rows, self.dtype, divergence=divergence,
                          seed=seed)

    # ------------------------------------------------------------------ sampling

    @uses_threads
    def sample(self, n, x=None, sampler="ode", steps=None, method=None, seed=None, corrector_steps=1,
               snr=0.16, rtol=1e-4, atol=1e-4, batch_size=10_000, reject_outside_prior=False,
               max_rejection_rounds=100, show_progress=False, iid_method="auto_gauss", iid_params=None):
        """Draw ``n`` samples (n, d) from p(theta | x).

        sampler: "ode" (probability-flow ODE; ``method`` "edm" by default: Heun on Karras et al.'s
        grid, ``steps`` 20 = 40 network evaluations; or "rk45" adaptive with ``rtol``/``atol``, or
        "euler", "heun", "rk4" uniform in t with ``steps``, default 100), "sde" (Euler-Maruyama,
        ``steps`` default 500), "pc"
        (Euler-Maruyama + ``corrector_steps`` Langevin steps with signal-to-noise ``snr``) or "ald"
        (annealed Langevin, Song & Ermon 2019: ``corrector_steps`` >= 1 Langevin steps at each of
        ``steps`` + 1 levels, default 500, no predictor; for fields that are not a diffusion's
        marginals, e.g. SNPSE-C's network, ``snpse_np.snpse_c``).
        reject_outside_prior: redraw samples that fall outside the prior support until n are
        inside (raises if the acceptance is too low to finish in ``max_rejection_rounds``).
        x with m > 1 rows: m i.i.d. trials of one theta, p(theta | x_1..x_m) by the composed score
        of ``iid_method`` ("auto_gauss", "gauss", "jac_gauss"; "fnpe", "fnpe_marginal" with
        sampler="pc"), ``iid_params`` its options (``snpse_np.iid``); one row is one observation.
        """
        n = integer(n, "n", minimum=0)
        opts = _sampler_opts(sampler, steps, method)
        batch_size = integer(batch_size, "batch_size", minimum=1)
        rtol, atol = real(rtol, "rtol", above=0.0), real(atol, "atol", above=0.0)
        corrector_steps = _check_corrector_steps(sampler, corrector_steps)
        snr = real(snr, "snr", at_least=0.0)
        max_rejection_rounds = integer(max_rejection_rounds, "max_rejection_rounds", minimum=1)
        trials = self._iid_trials(x)
        if trials is not None:  # m > 1 i.i.d. trials: the composed score (snpse_np.iid)
            return self._sample_iid(n, trials, sampler, opts, as_generator(seed), batch_size, corrector_steps, snr,
                                    rtol, atol, reject_outside_prior, max_rejection_rounds, Progress(show_progress),
                                    iid_method, iid_params)
        x = self.check_x(x)
        rng = as_generator(seed)
        progress = Progress(show_progress)
        if not reject_outside_prior:
            out = self._sample_batches(n, x, sampler, opts, rng, batch_size, corrector_steps, snr, rtol, atol)
            progress.done(f"sampled {n} in {progress.elapsed:.1f}s")
            return out
        out = draw_until(n, self.dim_theta,
                         lambda m: self._sample_batches(m, x, sampler, opts, rng, batch_size, corrector_steps, snr,
                                                        rtol, atol),
                         self.prior.support_contains, max_rounds=max_rejection_rounds, progress=progress)
        progress.done(f"sampled {n} in {progress.elapsed:.1f}s")
        return out

    def _sample_batches(self, n, x, sampler, opts, rng, batch_size, corrector_steps, snr, rtol, atol):
        be, d = self.backend, self.dim_theta
        xc = self._condition(x)
        mean = self._start_means(xc)
        out = np.empty((n, d), dtype=np.float64)
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            field = self._field(xc, b)
            theta = be.to_device(self.model.base_sample(b, rng, mean).astype(self.dtype))
            theta = run_sampler(sampler, field, theta, opts, rng, corrector_steps, snr, rtol, atol)
            out[start:start + b] = self.theta_std.inverse(be.to_host(theta))
        return out

    # ------------------------------------------------------------------ densities

    @uses_threads
    def log_prob(self, theta, x=None, method="rk45", steps=None, exact=True, seed=None, rtol=1e-4, atol=1e-4,
                 batch_size=None):
        """log p(theta | x) for theta (n, d) -> (n,), by the probability-flow ODE.

        The divergence is the exact trace (``exact=True``, d forward-mode tangents) or the
        Hutchinson estimate (one Rademacher tangent; unbiased, noisy). Rows outside the prior
        support get -inf, and so do rows with NaN or inf. x with m > 1 rows (i.i.d. trials):
        sum_j log p(theta | x_j) - (m - 1) log p(theta), which is log p(theta | x_1..x_m) up to the
        constant log p(x_1..x_m) - sum_j log p(x_j): UNNORMALISED (``log_prob_batched`` runs the m
        ODEs as one batch). The rows are integrated in chunks of
        ``batch_size`` (default: 1,024 rows on the CPU, whose d tangent buffers then stay in cache:
        25% faster than 4,096 in 10-D here; 4,096 on the GPU). ``steps`` (default 100) is for the
        fixed-step methods; rk45 takes rtol/atol instead and refuses ``steps``.
        """
        theta = real_array(theta, "theta")
        if theta.ndim == 1:
            theta = theta[None, :]
        if theta.ndim != 2 or theta.shape[1] != self.dim_theta:
            raise ValueError(f"theta must have shape (n, {self.dim_theta}), got {theta.shape}")
        solver = get_ode_solver(method, log_density=True)
        if solver.adaptive and steps is not None:
            raise ValueError("steps does not apply to the adaptive rk45 method (it picks its own steps; "
                             "set rtol/atol), pass method='euler', 'heun' or 'rk4' for a fixed number of steps")
        steps = 100 if steps is None else integer(steps, "steps", minimum=1)
        rtol, atol = real(rtol, "rtol", above=0.0), real(atol, "atol", above=0.0)
        trials = self._iid_trials(x)
        if trials is not None:  # m > 1 i.i.d. trials: sum of per-trial log-densities (unnormalised)
            return self._log_prob_iid(theta, trials, method, None if solver.adaptive else steps, exact, seed,
                                      rtol, atol, batch_size)
        x = self.check_x(x)
        rng = as_generator(seed)
        be = self.backend
        if batch_size is None:
            batch_size = 4096 if be.name == "cuda" else CPU_CHUNK_ROWS
        batch_size = integer(batch_size, "batch_size", minimum=1)
        out = np.full(theta.shape[0], -np.inf)
        inside = self.prior.support_contains(theta) & np.all(np.isfinite(theta), axis=1)
        with np.errstate(over="ignore", invalid="ignore"):  # rows beyond the network's float range: -inf
            inside &= np.all(np.abs(self.theta_std.forward(theta)) < np.finfo(self.dtype).max, axis=1)
        idx = np.flatnonzero(inside)
        xc = self._condition(x)
        for start in range(0, idx.size, batch_size):
            rows = idx[start:start + batch_size]
            out[rows] = self._log_density_rows(self.theta_std.forward(theta[rows]), xc, method, steps, exact, rng,
                                               rtol, atol)
        return out

    # ------------------------------------------------------------------ many observations

    def _check_trials(self, x, name="x"):
        """x (m, p) (or one row (p,)) as a checked float64 (m, p) array, m >= 1."""
        if x is None:
            raise ValueError(f"{name} is required: an array of observations of shape (m, {self.dim_x})")
        x = real_array(x, name)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim_x:
            raise ValueError(f"{name} must have shape (m, {self.dim_x}) (one observation per row), got {x.shape}")
        if x.shape[0] == 0:
            raise ValueError(f"{name} has 0 rows: pass at least one observation")
        bad = np.flatnonzero(~np.all(np.isfinite(x), axis=1))
        if bad.size:
            raise ValueError(f"{name} row {int(bad[0])} contains NaN or inf ({bad.size} such rows)")
        off = self.x_std.differs_on_constant(x)
        if off.size:
            j = int(off[0])
            raise ValueError(f"{name} column {j} (0-based) was constant ({self.x_std.mean[j]:.6g}) in every "
                             f"training simulation, but some rows differ there: the network never saw it vary")
        return x

    def _iid_trials(self, x):
        """The (m, p) i.i.d. trials when x holds m != 1 rows, else None (one observation)."""
        if x is None:
            return None
        arr = real_array(x, "x")
        return self._check_trials(arr) if arr.ndim == 2 and arr.shape[0] != 1 else None

    def embed(self, x):
        """The conditioning rows of every observation, computed once: x (m, p) -> xc (m, h0) on the
        backend (the x-MLP and the head's x block; with a baseline its mean follows: (m, h0 + d);
        ``ScoreModel.condition``; 10,000 rows at a time)."""
        x = self._check_trials(x)
        be = self.backend
        parts = []
        for a in range(0, x.shape[0], 10_000):
            xs = be.to_device(self.x_std.forward(x[a:a + 10_000]).astype(self.dtype))
            parts.append(self.model.condition(be, self.params, xs))
        return parts[0] if len(parts) == 1 else be.xp.concatenate(parts)

    def _draw_rows(self, trial, xc_trials, sampler, opts, rng, batch_size, corrector_steps, snr, rtol, atol,
                   progress=None, done=0, total=0):
        """One draw per row (R, d) in theta space: row r from p(theta | x_{trial[r]}), in batches of
        ``batch_size`` rows with per-row x parts gathered from xc_trials (m, h0)."""
        be, d, xp = self.backend, self.dim_theta, self.backend.xp
        out = np.empty((trial.size, d))
        for a in range(0, trial.size, batch_size):
            b = min(trial.size, a + batch_size)
            xc = xp.take(xc_trials, be.to_device(trial[a:b]), axis=0)
            field = self._field(xc, b - a)
            theta = be.to_device(self.model.base_sample(b - a, rng, self._start_means(xc)).astype(self.dtype))
            theta = run_sampler(sampler, field, theta, opts, rng, corrector_steps, snr, rtol, atol)
            out[a:b] = self.theta_std.inverse(be.to_host(theta))
            if progress is not None:
                progress.update(f"sampled {done + b}/{total}  {progress.elapsed:.1f}s")
        return out

    @uses_threads
    def sample_batched(self, n, x, sampler="ode", steps=None, method=None, seed=None, corrector_steps=1,
                       snr=0.16, rtol=1e-4, atol=1e-4, batch_size=10_000, reject_outside_prior=False,
                       max_rejection_rounds=100, show_progress=False):
        """n draws from p(theta | x_j) for EACH of the m observations x (m, p) -> (m, n, d).

        The m observations are separate (not i.i.d. trials of one theta: pass those to ``sample``).
        One call, one network batch of ``batch_size`` rows at a time whatever m (the network takes
        a per-row x part, each observation's embedded once). Sampler options as ``sample``;
        reject_outside_prior redraws, per row, the draws outside the prior support.
        """
        n = integer(n, "n", minimum=0)
        opts = _sampler_opts(sampler, steps, method)
        batch_size = integer(batch_size, "batch_size", minimum=1)
        rtol, atol = real(rtol, "rtol", above=0.0), real(atol, "atol", above=0.0)
        corrector_steps = _check_corrector_steps(sampler, corrector_steps)
        snr = real(snr, "snr", at_least=0.0)
        max_rejection_rounds = integer(max_rejection_rounds, "max_rejection_rounds", minimum=1)
        x = self._check_trials(x)
        m, d = x.shape[0], self.dim_theta
        rng = as_generator(seed)
        progress = Progress(show_progress)
        xc = self.embed(x)
        trial = np.repeat(np.arange(m), n)
        args = (sampler, opts, rng, batch_size, corrector_steps, snr, rtol, atol)
        out = self._draw_rows(trial, xc, *args, progress=progress, total=trial.size)
        if reject_outside_prior:
            pending = np.flatnonzero(~self.prior.support_contains(out))
            accepted = 1.0 - pending.size / max(out.shape[0], 1)
            for _ in range(max_rejection_rounds):
                if pending.size == 0:
                    break
                # each pending row gets reps candidates, reps ~ 1 / acceptance (capped)
                reps = int(min(64, np.ceil(1.0 / max(accepted, 1.0 / 64))))
                cand = self._draw_rows(np.repeat(trial[pending], reps), xc, *args).reshape(pending.size, reps, d)
                ok = self.prior.support_contains(cand.reshape(-1, d)).reshape(pending.size, reps)
                hit = ok.any(axis=1)
                accepted = max(ok.mean(), 1e-3)
                out[pending[hit]] = cand[hit, np.argmax(ok[hit], axis=1)]
                pending = pending[~hit]
                progress.update(f"{pending.size} draws still outside the prior support", force=True)
            if pending.size:
                raise RuntimeError(f"{pending.size} of {out.shape[0]} draws still fell outside the prior support "
                                   f"after {max_rejection_rounds} rounds; the posterior may be poorly trained")
        progress.done(f"sampled {m} x {n} in {progress.elapsed:.1f}s")
        return out.reshape(m, n, d)

    def _log_density_rows(self, z, xc, method, steps, exact, rng, rtol, atol):
        """log p(theta | x) (R,) by the PF-ODE (with the standardisation's Jacobian) for z-space rows
        z (R, d) on the host and their x parts xc (1 or R, h0); one integration (callers chunk)."""
        be = self.backend
        field = self._field(xc, z.shape[0], divergence="exact" if exact else "hutchinson", seed=rng)
        th = be.to_device(z.astype(self.dtype))
        solver = get_ode_solver(method, log_density=True)
        th1, delta = solver.solve(field, th, steps, rtol, atol, with_div=True, forward=True)
        return (self.model.base_log_prob(be.to_host(th1).astype(np.float64), self._start_means(xc))
                + be.to_host(delta).astype(np.float64) - self.theta_std.log_abs_det)

    def _start_means(self, xc):
        """The Gaussian fit's mean rows m(x) (1 or R, d) of conditioning rows xc, host float64, or None
        (no fit: the SDE's base). Sampling starts from, and log-densities end on, its diffused p_T."""
        mean = self.model.fit_means(xc)
        return None if mean is None else self.backend.to_host(mean).astype(np.float64)

    @uses_threads
    def log_prob_batched(self, theta, x, method="rk45", steps=None, exact=True, seed=None, rtol=1e-4,
                         atol=1e-4, batch_size=None):
        """log p(theta | x_j) for each of the m observations x (m, p) -> (m, n).

        theta: (m, n, d), row block j evaluated at x_j (``sample_batched``'s output), or (n, d),
        every theta at every x_j. ODE options as ``log_prob``; -inf outside the prior support.
        """
        x = self._check_trials(x)
        m, d = x.shape[0], self.dim_theta
        theta = real_array(theta, "theta")
        if theta.ndim == 2 and theta.shape[1] == d:
            theta = np.broadcast_to(theta[None], (m,) + theta.shape)
        if theta.ndim != 3 or theta.shape[0] != m or theta.shape[2] != d:
            raise ValueError(f"theta must have shape ({m}, n, {d}) (one block per row of x) or (n, {d}), "
                             f"got {theta.shape}")
        solver = get_ode_solver(method, log_density=True)
        if solver.adaptive and steps is not None:
            raise ValueError("steps does not apply to the adaptive rk45 method (set rtol/atol)")
        steps = 100 if steps is None else integer(steps, "steps", minimum=1)
        rtol, atol = real(rtol, "rtol", above=0.0), real(atol, "atol", above=0.0)
        be = self.backend
        if batch_size is None:
            batch_size = 4096 if be.name == "cuda" else CPU_CHUNK_ROWS
        batch_size = integer(batch_size, "batch_size", minimum=1)
        rng = as_generator(seed)
        n = theta.shape[1]
        rows = theta.reshape(m * n, d)
        out = np.full(m * n, -np.inf)
        idx = np.flatnonzero(self.prior.support_contains(rows) & np.all(np.isfinite(rows), axis=1))
        xc = self.embed(x)
        z = self.theta_std.forward(rows[idx])
        trial = idx // n
        for a in range(0, idx.size, batch_size):
            b = min(idx.size, a + batch_size)
            xc_rows = be.xp.take(xc, be.to_device(trial[a:b]), axis=0)
            out[idx[a:b]] = self._log_density_rows(z[a:b], xc_rows, method, steps, exact, rng, rtol, atol)
        return out.reshape(m, n)

    # ------------------------------------------------------------------ i.i.d. trials (snpse_np.iid)

    def _diffused_prior(self, opts, rng):
        from .iid import diffused_prior
        return diffused_prior(self.prior, self.theta_std, seed=rng, mixture_components=opts["mixture_components"],
                              mixture_samples=opts["mixture_samples"])

    @uses_threads
    def trial_precisions(self, x, budget=1000, steps=20, seed=None):
        """Precisions (m, d, d) in theta space of the m single-observation posteriors p(theta | x_j),
        from ``budget`` draws each (probability-flow ODE, "edm" with ``steps`` steps; centred
        covariances). What ``iid_method="auto_gauss"`` uses; pass the result to
        ``iid_method="gauss"`` as ``iid_params=dict(posterior_precision=...)`` to reuse it."""
        x = self._check_trials(x)
        P = self._post_precision_z("auto_gauss", dict(budget=budget, steps=steps), x, None, as_generator(seed),
                                   self.embed(x), 10_000)
        s = self.theta_std.std
        return P / np.outer(s, s)  # theta = mu + s z: P_theta = S^-1 P_z S^-1

    def _post_precision_z(self, method, opts, trials, prior_z, rng, xc, batch_size):
        """The single-trial posterior precisions (m, d, d) in z space for the Gauss methods;
        xc (m, h0): the trials' x parts (embedded once by the caller)."""
        m, d, s = trials.shape[0], self.dim_theta, self.theta_std.std
        if method == "gauss":
            given = opts["posterior_precision"]
            if given is None:
                scale = real(opts["precision_scale"], "precision_scale", above=0.0)
                return np.broadcast_to(scale * prior_z.precision(), (m, d, d))
            given = real_array(given, "posterior_precision")
            if given.shape == (d, d):
                given = np.broadcast_to(given, (m, d, d))
            if given.shape != (m, d, d) or not np.all(np.isfinite(given)):
                raise ValueError(f"posterior_precision must be finite, of shape ({d}, {d}) or ({m}, {d}, {d}), "
                                 f"got {given.shape}")
            return given * np.outer(s, s)  # theta = mu + s z: P_z = S P_theta S
        if method == "auto_gauss":
            budget = integer(opts["budget"], "budget", minimum=d + 1)
            steps = integer(opts["steps"], "steps", minimum=1)
            draws = self._draw_rows(np.repeat(np.arange(m), budget), xc, "ode", dict(method="edm", steps=steps), rng,
                                    batch_size, 0, 0.0, 1e-4, 1e-4)
            return np.linalg.inv(_centred_cov(self.theta_std.forward(draws).reshape(m, budget, d)))
        return None

    def _sample_iid(self, n, trials, sampler, opts, rng, batch_size, corrector_steps, snr, rtol, atol,
                    reject_outside_prior, max_rejection_rounds, progress, iid_method, iid_params):
        """n draws (n, d) from p(theta | x_1..x_m) by the composed score (see ``snpse_np.iid``)."""
        from .iid import LANGEVIN_METHODS, IIDField, check_iid_params
        iid = check_iid_params(iid_method, iid_params)
        if iid_method in LANGEVIN_METHODS and sampler != "pc":
            raise ValueError(f"iid_method {iid_method!r} composes a bridge that is not a diffusion's marginal: "
                             f"sample it by annealed Langevin, sampler='pc' (with corrector_steps >= 1)")
        m, d, be = trials.shape[0], self.dim_theta, self.backend
        xc = self.embed(trials)
        prior_z = self._diffused_prior(iid, rng)
        post = self._post_precision_z(iid_method, iid, trials, prior_z, rng, xc, batch_size)
        rows = max(1, batch_size // m)  # a network batch holds m rows per draw
        start_scale = 1.0 / np.sqrt(m) if iid_method == "fnpe" else 1.0  # the bridge at T: pi^m

        def draw(k):
            out = np.empty((k, d))
            for a in range(0, k, rows):
                b = min(k, a + rows)
                field = IIDField(self.model, be, self.params, xc, b - a, self.dtype, iid_method, prior_z, post,
                                 iid.get("precision_ratio", 100.0))
                theta = be.to_device((start_scale * self.sde.prior_sample(b - a, d, rng)).astype(self.dtype))
                theta = run_sampler(sampler, field, theta, opts, rng, corrector_steps, snr, rtol, atol)
                out[a:b] = self.theta_std.inverse(be.to_host(theta))
                progress.update(f"sampled {b}/{k} (i.i.d., {m} trials)  {progress.elapsed:.1f}s")
            return out

        if not reject_outside_prior:
            out = draw(n)
            # the composed score can push a row out of a bounded prior's support, where the
            # network never saw data and the m - 1 subtracted prior scores dominate: that row then
            # runs away (measured: VP, U(-2, 2)^2, 20 trials, 21 of 1,000 rows at |theta| ~ 1e13).
            # Say so, rather than hand back a mean that one such row decides.
            gone = int(np.sum(~self.prior.support_contains(out)))
            if gone:
                warnings.warn(f"{gone} of {n} i.i.d. draws ({m} trials, {iid_method}) lie outside the prior support "
                              f"(the composed score can run away there); reject_outside_prior=True redraws them",
                              RuntimeWarning, stacklevel=3)
        else:
            out = draw_until(n, d, draw, self.prior.support_contains, max_rounds=max_rejection_rounds)
        progress.done(f"sampled {n} ({m} i.i.d. trials, {iid_method}) in {progress.elapsed:.1f}s")
        return out

    def _log_prob_iid(self, theta, trials, method, steps, exact, seed, rtol, atol, batch_size):
        """sum_j log p(theta | x_j) - (m - 1) log p(theta): log p(theta | x_1..x_m) up to a constant."""
        theta = real_array(theta, "theta")
        if theta.ndim == 1:
            theta = theta[None, :]
        if theta.ndim != 2 or theta.shape[1] != self.dim_theta:
            raise ValueError(f"theta must have shape (n, {self.dim_theta}), got {theta.shape}")
        m = trials.shape[0]
        per_trial = self.log_prob_batched(theta, trials, method=method, steps=steps, exact=exact, seed=seed,
                                          rtol=rtol, atol=atol, batch_size=batch_size)
        inside = np.isfinite(per_trial).all(axis=0)
        out = np.full(theta.shape[0], -np.inf)
        out[inside] = per_trial[:, inside].sum(axis=0) - (m - 1) * self.prior.log_prob(theta[inside])
        return out

    # ------------------------------------------------------------------ MAP

    @uses_threads
    def map(self, x=None, num_init=256, num_ascend=16, num_iter=200, num_candidates=4, init_steps=10,
            noise=0.3, t=None, tol=1e-6, polish_rounds=0, log_prob_method="rk4", log_prob_steps=10, seed=None,
            iid_method="gauss", iid_params=None, show_progress=False):
        """The posterior mode (d,) in theta space, for one observation or m i.i.d. trials x (m, p).

        1. ``num_init`` posterior draws (probability-flow ODE, "edm", ``init_steps`` steps; for
           trials, the composed score of ``iid_method``, default "gauss": the draws only start the
           ascent), and of them the ``num_ascend`` with the highest kernel density estimate
           (Scott's bandwidth, z space).
        2. Gradient ascent on the LEARNED SCORE at t_min, which is grad log p(theta | x) up to the
           smallest noise, with no ODE (for trials: sum_j s_j + (1 - m) grad log p_t): steps
           preconditioned by the draws' variances, each row's step halved when the score turns
           against its last step and grown by 1.2 otherwise, projected into the prior support;
           ``num_iter`` steps at most, until every step is below ``tol`` (z units). The endpoints
           merged within 1e-3 (z units); the ``num_candidates`` best-supported go on.
        3. The same ascent continued at a slightly larger noise: per candidate, the time t* where
           sigma_t / alpha_t = ``noise`` x the local posterior scale, the smallest standard
           deviation of the Laplace approximation -J^-1 with J the score's Jacobian there
           (forward-mode tangents; a candidate where -J is not positive definite stays at t_min).
           Why: DSM carries little signal at the smallest noise, so the learned score is least
           accurate exactly there (bench_map: the zero of the t_min score sat 0.15 from the mode,
           squared error 2.3e-2, where the posterior's sample mean was at 2e-3); the mode of
           p_t = p * N(0, sigma_t^2) moves from the mode of p only by O(noise^2) of the local
           scale (not at all for a Gaussian), and the scale is local, so narrow modes (two_moons'
           crescents) are smoothed no more than broad ones. The mode of p_t is alpha_t times
           the mode of p: endpoints are divided by alpha_t*. ``noise=0`` (or ``t=``, a fixed time
           for every candidate) skips the choice.
        4. Of the candidates, the one with the highest exact-trace PF-ODE log-density wins
           (``log_prob_method``, ``log_prob_steps``: fixed-step RK4 by default, smooth in theta).
        5. ``polish_rounds`` (default 0) trust-region Newton steps on that log-density, from
           quadratics fitted on a stencil (the centre, +-h e_i, +-h (e_i + e_j)), h = 0.5, 0.15,
           ... posterior standard deviations; a step that does not raise it is refused. Off by
           default: the ODE log-density of a learned score can peak away from the mass (bench_map,
           VP seed 1: its maximum sat 0.2 from the true mode while the samples' mean was exact).
        """
        from .iid import BoxDiffusedPrior, IIDField, check_iid_params
        num_init = integer(num_init, "num_init", minimum=1)
        num_ascend = min(integer(num_ascend, "num_ascend", minimum=1), num_init)
        num_iter = integer(num_iter, "num_iter", minimum=0)
        num_candidates = integer(num_candidates, "num_candidates", minimum=1)
        polish_rounds = integer(polish_rounds, "polish_rounds", minimum=0)
        tol = real(tol, "tol", above=0.0)
        noise = real(noise, "noise", at_least=0.0)
        if t is not None:
            t = real(t, "t")
            if not self.sde.t_min <= t <= self.sde.T:
                raise ValueError(f"t must lie in [t_min, T] = [{self.sde.t_min}, {self.sde.T}], got {t}")
        lp_adaptive = get_ode_solver(log_prob_method, log_density=True).adaptive
        lp_kw = dict(method=log_prob_method, steps=None if lp_adaptive else log_prob_steps)
        rng = as_generator(seed)
        progress = Progress(show_progress)
        trials = self._iid_trials(x)
        be, d, t_min = self.backend, self.dim_theta, self.sde.t_min
        if trials is None:
            x = self.check_x(x)
            init = self.sample(num_init, x=x, method="edm", steps=init_steps, seed=rng)
            xc = self._condition(x)

            def field(rows):
                return self._field(xc, rows)
        else:
            x = trials
            init = self.sample(num_init, x=trials, method="edm", steps=init_steps, seed=rng, iid_method=iid_method,
                               iid_params=iid_params)
            xc = self.embed(trials)
            prior_z = self._diffused_prior(check_iid_params("fnpe_marginal", None), rng)

            def field(rows):
                return IIDField(self.model, be, self.params, xc, rows, self.dtype, "fnpe_marginal", prior_z)
        z_init = self.theta_std.forward(init)
        lo, hi = self.theta_std.forward(self.prior.low), self.theta_std.forward(self.prior.high)
        with np.errstate(invalid="ignore"):  # inside an open support side stays open
            lo = np.where(np.isfinite(lo), lo + 1e-9 * np.maximum(1.0, np.abs(lo)), -np.inf)
            hi = np.where(np.isfinite(hi), hi - 1e-9 * np.maximum(1.0, np.abs(hi)), np.inf)
        precond = np.maximum(z_init.var(axis=0), 1e-8)

        def ascend(z0, tt):
            """Ascent of the score at times tt (float or per-row) from z0 (k, d) in p's units."""
            alpha = self.sde.marginal(tt)[0]
            a = float(alpha) if np.ndim(tt) == 0 else alpha[:, None]
            f = field(z0.shape[0])
            z, eta, g_prev = np.clip(z0, lo, hi) * a, np.ones(z0.shape[0]), None
            for it in range(num_iter):
                g = be.to_host(f.score(be.to_device(z.astype(self.dtype)), tt)).astype(np.float64)
                if g_prev is not None:
                    turned = np.sum(g * g_prev * precond, axis=1) < 0
                    eta = np.where(turned, 0.5 * eta, np.minimum(1.2 * eta, 1.0))
                step = eta[:, None] * precond * g
                z = np.clip(z + step, a * lo, a * hi)
                g_prev = g
                if np.max(np.abs(step) / np.sqrt(precond)) < tol:
                    break
                progress.update(f"MAP ascent step {it + 1}  {progress.elapsed:.1f}s")
            return z / a

        cand = _merge(ascend(z_init[_kde_top(z_init, num_ascend)], t_min), 1e-3)[:num_candidates]
        if t is not None:
            cand = ascend(cand, t)
        elif noise > 0:
            k, m = cand.shape[0], 1 if trials is None else trials.shape[0]
            jac = ScoreJacobian(self.model, be, self.params, be.xp.repeat(xc, k, axis=0), self.dtype)
            J = jac(np.tile(cand, (m, 1)), t_min)[1].reshape(m, k, d, d).sum(axis=0)
            if m > 1 and not isinstance(prior_z, BoxDiffusedPrior):
                # plus (1 - m) times the prior's Hessian: -C^-1 for a Gaussian (a fitted mixture's is
                # approximated by its overall precision; a box's is 0 inside)
                J = J + (m - 1) * prior_z.precision()[None]
            w = np.linalg.eigvalsh(-0.5 * (J + np.swapaxes(J, 1, 2)))
            scale = np.where(w.min(axis=1) > 0, 1.0 / np.sqrt(np.maximum(w.max(axis=1), 1e-300)), 0.0)
            grid = np.linspace(t_min, self.sde.T, 4097)
            a_g, s_g = self.sde.marginal(grid)
            t_star = np.interp(noise * scale, s_g / a_g, grid)  # sigma~ increases in t
            cand = ascend(cand, np.maximum(t_star, t_min))
        lp = self.log_prob(self.theta_std.inverse(cand), x=x, **lp_kw)
        if not np.any(np.isfinite(lp)):
            raise RuntimeError("every MAP candidate fell outside the prior support")
        best = int(np.argmax(lp))
        best_z, best_value = cand[best], float(lp[best])
        centre, h = best_z, 0.5 * np.sqrt(precond)
        design = _quadratic_design(d)  # row 0 is the centre
        for r in range(polish_rounds + 1 if polish_rounds else 0):
            if r == polish_rounds:  # the last Newton point alone
                value = float(self.log_prob(self.theta_std.inverse(centre[None]), x=x, **lp_kw)[0])
                if value > best_value:
                    best_z, best_value = centre, value
                break
            pts = np.clip(centre + design * h, lo, hi)
            vals = self.log_prob(self.theta_std.inverse(pts), x=x, **lp_kw)
            if r > 0 and not vals[0] > best_value:  # the last step did not help: back, smaller region
                centre, h = best_z, 0.3 * h
                continue
            best_z, best_value = centre, float(vals[0])
            new = _newton_from_fit((pts - centre) / h, vals)
            if new is not None:
                centre = np.clip(centre + h * new, lo, hi)
            h = 0.3 * h
            progress.update(f"MAP polish  {progress.elapsed:.1f}s")
        progress.done(f"MAP in {progress.elapsed:.2f}s")
        return self.theta_std.inverse(best_z)

    # ------------------------------------------------------------------ persistence

    def _kind_state(self):
        """(meta entries, {name: array}) this class adds to the file. meta["kind"] tells ``load``
        which class to rebuild ("npse": this one; ``NLSEPosterior`` adds "nlse" and its prior
        score). Array names must not start with "prior_" (the prior's arrays)."""
        return {"kind": "npse"}, {}

    def save(self, path):
        """Write the posterior to one ``.npz`` file (numpy alone reads it back with ``load``).

        Atomic: the file is written next to ``path`` under a temporary name and renamed onto it,
        so a write that fails half-way (disk full, a kill) leaves the previous file intact. The
        package's priors are stored by their parameters; any other prior (a subclass included:
        its overrides are code) is not, with a warning: ``load(path, prior=...)`` takes it back.
        """
        name, state = _prior_state(self.prior)
        prior_type = None if self.prior is None else f"{type(self.prior).__module__}.{type(self.prior).__qualname__}"
        meta = dict(version=__version__, net=self.model.net.config(), sde=self.sde.config(),
                    precondition=self.model.precondition, time_input=self.model.time_input, floor=self.model.floor,
                    dtype=self.dtype.name, prior=name, prior_type=prior_type)
        kind_meta, kind_arrays = self._kind_state()
        meta.update(kind_meta)
        if self.model.gaussian is not None:
            meta["baseline"] = "gaussian" if self.model.baseline else None
            kind_arrays = dict(kind_arrays, **self.model.gaussian.arrays())
        arrays = dict(params=self.backend.to_host(self.params), theta_mean=self.theta_std.mean,
                      theta_std=self.theta_std.std, theta_constant=self.theta_std.constant,
                      x_mean=self.x_std.mean, x_std=self.x_std.std, x_constant=self.x_std.constant,
                      meta=np.array(json.dumps(meta)), **kind_arrays)
        for k, v in state.items():
            arrays["prior_" + k] = v
        if self.default_x is not None:
            arrays["default_x"] = self.default_x
        if name is None and self.prior is not None:
            warnings.warn(f"the prior ({prior_type}) is not one of snpse_np's priors and is not stored in "
                          f"{os.fspath(path)}; load the file with snpse_np.load(path, prior=<the prior>)",
                          UserWarning, stacklevel=2)
        write_atomic(path, lambda fh: np.savez(fh, **arrays))

    def __repr__(self):
        return (f"ScorePosterior(dim_theta={self.dim_theta}, dim_x={self.dim_x}, sde={self.sde!r}, "
                f"backend={self.backend.name!r})")


# The priors ``save`` stores by state, and the arrays each needs: also the allow-list ``load``
# checks a file's prior name against (a name never reaches getattr unchecked).
_PRIOR_FIELDS = {"BoxUniform": ("low", "high"), "Normal": ("loc", "scale"), "LogNormal": ("loc", "scale"),
                 "MultivariateNormal": ("mean", "cov")}


def _prior_state(prior):
    """(name, {field: array}) for the package's priors (exact type), (None, {}) otherwise."""
    from . import priors
    name = type(prior).__name__
    if name in _PRIOR_FIELDS and type(prior) is getattr(priors, name):
        return name, {f: getattr(prior, f) for f in _PRIOR_FIELDS[name]}
    return None, {}


_REQUIRED_ARRAYS = ("params", "theta_mean", "theta_std", "x_mean", "x_std", "meta")
_REQUIRED_META = ("version", "net", "sde", "precondition", "time_input", "floor", "dtype", "prior")
# meta["kind"]: the posterior class a file holds (absent: "npse"); "nlse" adds its prior score (snpse_np.nlse).
_KINDS = ("npse", "nlse")
_NET_KEYS = ("theta_sizes", "x_sizes", "head_sizes", "activation", "t_embed_dim")


def load(path, backend=None, prior=None):
    """Restore a posterior written by ``ScorePosterior.save``; needs numpy only (backend "numpy"
    works everywhere). Returns a ``ScorePosterior``, or an ``NLSEPosterior`` for a file of kind
    "nlse" (a file without a kind is an NPSE posterior; an unknown kind is a ValueError).

    prior: the prior to attach; required when the file was saved with a prior that is not one of
    snpse_np's (those are not stored), otherwise it replaces the stored one. Everything read is
    checked: a file that is not a posterior .npz (truncated, empty, another kind of file), lacks
    a key, holds bad metadata or arrays of the wrong shape raises a ValueError naming the file
    and the problem. Pickled objects are never read (``allow_pickle=False``).
    """
    path_s = os.fspath(path)
    arrays = _read_npz(path_s)
    meta = _read_meta(path_s, arrays)

    def bad(what):
        return ValueError(f"{path_s}: not a valid snpse_np posterior file: {what}")

    try:
        net = ScoreNetwork(**meta["net"])
        baseline = meta.get("baseline")
        if baseline not in BASELINES:
            raise ValueError(f"unknown baseline {baseline!r}")
        # files written before the fit existed have none: their samplers start from the SDE's base
        gaussian = LinearGaussian.from_arrays(arrays) if "gaussian_coef" in arrays else None
        model = ScoreModel(net, sde_from_config(meta["sde"]), meta["precondition"], meta["time_input"],
                           real(meta["floor"], "floor", at_least=0.0), gaussian=gaussian,
                           baseline=baseline is not None)
    except (TypeError, ValueError, KeyError) as err:
        raise bad(f"bad metadata ({type(err).__name__}: {err})") from None
    d, p = net.dim_theta, net.dim_x
    expect = dict(params=(net.size,), theta_mean=(d,), theta_std=(d,), x_mean=(p,), x_std=(p,))
    for key, shape in expect.items():
        a = arrays[key]
        if a.dtype.kind not in "fiu" or a.shape != shape:
            raise bad(f"{key} must be a real array of shape {shape} for the network it describes, "
                      f"got dtype {a.dtype} and shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise bad(f"{key} holds NaN or inf")
    for key in ("theta_std", "x_std"):
        if not np.all(arrays[key] > 0):
            raise bad(f"{key} must be positive")
    constant = {}
    for key, k in (("theta_constant", d), ("x_constant", p)):
        if key in arrays:  # absent in files written before it existed
            if arrays[key].dtype != np.bool_ or arrays[key].shape != (k,):
                raise bad(f"{key} must be a bool array of shape ({k},), got {arrays[key].dtype} {arrays[key].shape}")
            constant[key] = arrays[key]
    default_x = arrays.get("default_x")
    if default_x is not None and (default_x.dtype.kind not in "fiu" or default_x.shape != (p,)
                                  or not np.all(np.isfinite(default_x))):
        raise bad(f"default_x must be a finite real array of shape ({p},), got {default_x.dtype} {default_x.shape}")
    if prior is None:
        prior = _read_prior(path_s, arrays, meta, bad)
    elif getattr(prior, "dim", d) != d:
        raise ValueError(f"prior= has dim {prior.dim}, but {path_s} holds a posterior over {d} parameters")
    if prior is not None and getattr(prior, "dim", d) != d:
        raise bad(f"its prior has dim {prior.dim}, the network {d}")
    be = get_backend(backend)
    dtype = np.dtype(meta["dtype"])
    params = be.to_device(arrays["params"].astype(dtype))
    theta_std = Standardizer(arrays["theta_mean"], arrays["theta_std"], constant.get("theta_constant"))
    x_std = Standardizer(arrays["x_mean"], arrays["x_std"], constant.get("x_constant"))
    if meta["kind"] == "nlse":
        from .nlse import NLSEPosterior, read_prior_score  # here: snpse_np.nlse imports this module
        post = NLSEPosterior(model, params, theta_std, x_std, prior, be, dtype,
                             prior_score=read_prior_score(arrays, meta, model, theta_std, prior, be, bad))
    else:
        post = ScorePosterior(model, params, theta_std, x_std, prior, be, dtype)
    if default_x is not None:
        post.set_default_x(default_x)
    return post


def _read_npz(path):
    """{name: array} of an .npz file, ValueError (naming the file) for anything else."""
    with open(path, "rb") as fh:  # FileNotFoundError / PermissionError pass through: they name the file
        head = fh.read(4)
    if not head:
        raise ValueError(f"{path}: the file is empty (not a snpse_np posterior .npz)")
    if head not in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip's first entry, or an empty zip
        raise ValueError(f"{path}: not an .npz file (a snpse_np posterior is a zip of .npy arrays)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as err:
        if "pickle" in str(err):
            raise ValueError(f"{path}: holds an object (pickled) array, which load never reads") from None
        raise ValueError(f"{path}: cannot read it as an .npz file ({err})") from None
    except Exception as err:  # noqa: BLE001 - zipfile.BadZipFile, EOFError, OSError, ...: a damaged file
        raise ValueError(f"{path}: cannot read it as an .npz file, truncated or damaged? "
                         f"({type(err).__name__}: {err})") from None
    not_npy = [k for k, v in arrays.items() if not isinstance(v, np.ndarray)]
    if not_npy:
        raise ValueError(f"{path}: not a valid snpse_np posterior file: members {not_npy} are not .npy arrays")
    missing = [k for k in _REQUIRED_ARRAYS if k not in arrays]
    if missing:
        raise ValueError(f"{path}: not a valid snpse_np posterior file: missing {missing}")
    return arrays


def _read_meta(path, arrays):
    """The metadata dict, with every key ``load`` needs, of the right kind."""
    raw = arrays["meta"]
    try:
        if raw.dtype.kind != "U" or raw.ndim != 0:
            raise ValueError(f"meta must be one string, got dtype {raw.dtype} shape {raw.shape}")
        meta = json.loads(str(raw))
        if not isinstance(meta, dict):
            raise ValueError("meta is not a JSON object")
        kind = meta.setdefault("kind", "npse")  # files from before "kind" existed hold NPSE posteriors
        if not isinstance(kind, str) or kind not in _KINDS:
            raise ValueError(f"unknown posterior kind {kind!r}; snpse_np {__version__} reads {_KINDS} "
                             "(a file from a newer version?)")
        missing = [k for k in _REQUIRED_META if k not in meta]
        if missing:
            raise ValueError(f"meta lacks {missing}")
        net = meta["net"]
        if not isinstance(net, dict) or sorted(net) != sorted(_NET_KEYS):
            raise ValueError(f"meta net must have the keys {_NET_KEYS}, got {net!r}")
        for key in ("theta_sizes", "x_sizes", "head_sizes"):
            sizes = net[key]
            if (not isinstance(sizes, list) or len(sizes) < 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes)):
                raise ValueError(f"net {key} must be a list of >= 2 positive ints, got {sizes!r}")
        if not isinstance(net["activation"], str):
            raise ValueError(f"net activation must be a name, got {net['activation']!r}")
        from .backends.numpy_ref import ACTIVATIONS
        if net["activation"] not in ACTIVATIONS:
            raise ValueError(f"unknown activation {net['activation']!r}; choose from {ACTIVATIONS}")
        t_dim = net["t_embed_dim"]
        if not isinstance(t_dim, int) or isinstance(t_dim, bool) or t_dim < 2:
            raise ValueError(f"net t_embed_dim must be an int >= 2, got {t_dim!r}")
        if not isinstance(meta["sde"], dict):
            raise ValueError(f"meta sde must be an object, got {meta['sde']!r}")
        if meta["dtype"] not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {meta['dtype']!r}")
        if meta["prior"] is not None and (not isinstance(meta["prior"], str) or meta["prior"] not in _PRIOR_FIELDS):
            raise ValueError(f"unknown prior {meta['prior']!r}; a file names one of {tuple(_PRIOR_FIELDS)} or none")
    except ValueError as err:
        raise ValueError(f"{path}: not a valid snpse_np posterior file: bad metadata ({err})") from None
    return meta


def _read_prior(path, arrays, meta, bad):
    """The stored prior, or None for a file saved without one; ValueError for a custom prior
    (not stored) or bad prior arrays."""
    from . import priors
    name = meta["prior"]
    if name is None:
        if meta.get("prior_type") is not None:  # a custom prior's class name, for the message
            raise ValueError(f"{path} was saved with a prior of type {meta['prior_type']}, which is not stored: "
                             f"pass it back with snpse_np.load(path, prior=<the prior>)")
        return None
    fields = _PRIOR_FIELDS[name]
    stored = {k[len("prior_"):] for k in arrays if k.startswith("prior_")}
    if stored != set(fields):
        raise bad(f"a {name} prior needs the arrays {['prior_' + f for f in fields]}, "
                  f"the file has {sorted('prior_' + f for f in stored)}")
    try:
        return getattr(priors, name)(**{f: arrays["prior_" + f] for f in fields})
    except ValueError as err:
        raise bad(f"its {name} prior: {err}") from None


def _sampler_opts(sampler, steps, method):
    """The sampler's options {method, steps} from ``SAMPLE_DEFAULTS`` and the caller's steps/method,
    checked (``sample``, ``sample_batched``)."""
    get_sampler(sampler)  # ValueError "unknown sampler" naming the registered ones
    opts = dict(SAMPLE_DEFAULTS[sampler])
    if steps is not None:
        opts["steps"] = integer(steps, "steps", minimum=1)
    if method is not None:
        if sampler != "ode":
            raise ValueError("method applies to sampler='ode' only")
        get_ode_solver(method)  # ValueError "unknown ODE method" naming the registered ones
        opts["method"] = method
        if steps is None and method in ODE_DEFAULT_STEPS:
            opts["steps"] = ODE_DEFAULT_STEPS[method]
    if sampler == "ode" and get_ode_solver(opts["method"]).adaptive and steps is not None:
        raise ValueError("steps does not apply to the adaptive rk45 method (it picks its own steps; "
                         "set rtol/atol), pass method='euler', 'heun' or 'rk4' for a fixed number of steps")
    return opts


def _check_corrector_steps(sampler, corrector_steps):
    """corrector_steps checked: >= 0, and >= 1 for "ald" (it moves by the corrector only)."""
    corrector_steps = integer(corrector_steps, "corrector_steps", minimum=0)
    if sampler == "ald" and corrector_steps < 1:
        raise ValueError("sampler='ald' (annealed Langevin) moves by the Langevin corrector only: "
                         "it needs corrector_steps >= 1")
    return corrector_steps


def _centred_cov(z):
    """Centred sample covariances (m, d, d) of z (m, n, d), with a 1e-9 ridge (d ones would be singular)."""
    c = z - z.mean(axis=1, keepdims=True)
    cov = np.einsum("mni,mnj->mij", c, c) / (z.shape[1] - 1)
    return cov + 1e-9 * np.eye(z.shape[2])[None]


def _kde_top(z, k, block=2048):
    """Indices of the k rows of z (n, d) with the highest Gaussian kernel density estimate
    (Scott's bandwidth per dimension); O(n^2 d) in blocks of ``block`` rows."""
    n, d = z.shape
    if k >= n:
        return np.arange(n)
    h = np.maximum(z.std(axis=0), 1e-12) * n ** (-1.0 / (d + 4))
    u = z / h
    sq = np.sum(u * u, axis=1)
    dens = np.empty(n)
    for a in range(0, n, block):
        d2 = sq[a:a + block, None] + sq[None, :] - 2.0 * u[a:a + block] @ u.T
        dens[a:a + block] = np.exp(-0.5 * np.maximum(d2, 0.0)).sum(axis=1)
    return np.argsort(-dens)[:k]


def _merge(z, tol):
    """Greedy merge of the rows of z (n, d) closer than ``tol`` (max norm) to a kept row; the kept
    rows (K, d), most-supported first."""
    keep, count = [], []
    for row in z:
        for i, k in enumerate(keep):
            if np.max(np.abs(row - k)) < tol:
                count[i] += 1
                break
        else:
            keep.append(row)
            count.append(1)
    order = np.argsort(-np.asarray(count), kind="stable")
    return np.asarray(keep)[order]


def _quadratic_design(d):
    """Stencil (1 + 2d + d(d - 1), d) in units of h: the centre, +-e_i, +-(e_i + e_j) for i < j;
    enough points to fit a full quadratic (1 + d + d(d + 1)/2 coefficients) with some to spare."""
    eye = np.eye(d)
    rows = [np.zeros(d)] + [s * e for e in eye for s in (1.0, -1.0)]
    rows += [s * (eye[i] + eye[j]) for i in range(d) for j in range(i + 1, d) for s in (1.0, -1.0)]
    return np.asarray(rows)


def _newton_from_fit(u, values):
    """Least-squares quadratic f(u) = c + b.u + u^T A u / 2 through the finite values at u (k, d);
    the maximiser of the fit, clipped to the trust region |u_i| <= 2, or None when the fit is
    underdetermined or not concave (then no step is taken)."""
    d = u.shape[1]
    ok = np.isfinite(values)
    iu = np.triu_indices(d)
    cols = 1 + d + iu[0].size
    if ok.sum() < cols:
        return None
    uu = u[ok]
    quad = uu[:, iu[0]] * uu[:, iu[1]]
    coef = np.linalg.lstsq(np.column_stack([np.ones(len(uu)), uu, quad]), values[ok], rcond=None)[0]
    b = coef[1:1 + d]
    A = np.zeros((d, d))
    A[iu] = coef[1 + d:]
    A = A + A.T  # diagonal entries doubled (c_ii u_i^2 has second derivative 2 c_ii), off-diagonals c_ij
    w = np.linalg.eigvalsh(A)
    if not np.all(w < 0):
        return None
    return np.clip(np.linalg.solve(A, -b), -2.0, 2.0)
