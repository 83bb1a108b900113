"""TSNPSE: truncated sequential neural posterior score estimation (Sharrock et al. 2024, Sec. 3.2).

Round 1 is plain NPSE on prior draws. Every later round r draws M = N / R new parameters from
the prior truncated to the eps-highest-probability region of the round r-1 posterior at x_o
(``truncation.TruncatedPrior``), simulates them, pools the data of all rounds, and trains a FRESH
network on everything (``warm_start=True`` starts from the previous weights instead). Because
every proposal is the prior restricted to a region that (up to eps) contains the posterior, the
plain NPSE loss on the pooled data still targets the true posterior (paper Prop. 3.1): no
importance weights, no proposal correction.

Nothing is lost: with ``workdir=``, each round's simulations, its posterior and the run's state
are written as they finish (atomically), and ``run(..., resume=True)`` continues a killed run
without re-simulating what was done (chunks of an interrupted simulation are kept too). A
resumed run gives the same result as an uninterrupted one, bit for bit: every round's training
is seeded by (seed, round), and state fitted from the data (the VE SDE's sigma_max, fitted to
round 1's simulations and kept for later rounds) is saved with each round and restored, not
refitted to the pooled data. The workdir's ``state.json`` records every setting that shapes the
result (budget, rounds, epsilon, seed, SDE, x_o, backend, warm start, ``train_kwargs``,
``npse_kwargs``, ``log_prob_kwargs``); a resume with other settings is refused.
``resume=False`` in a used workdir refuses to touch it unless ``overwrite=True``, which deletes
the run's files first (old simulation chunks are never reused for a new run).

Simulator failures (exceptions, NaN/inf rows) are counted and reported, and never crash the run:
a row that raises is one failed row (``simulate`` isolates it), dropped like a NaN row. Bad
settings are refused before anything is simulated: x_o must be finite, and its dimension is
checked on one probe simulation before round 1 (and again on round 1's simulations).

Two ways to use it:

    posterior = TSNPSE(prior, simulator, x_o).run(num_simulations=10_000, num_rounds=10)

or the sbi-style loop, for people who simulate elsewhere:

    inference, proposal = NPSE(prior), prior
    for r in range(R):
        theta = proposal.sample(M, seed=r); x = my_simulator(theta)
        posterior = inference.append_simulations(theta, x).train()
        proposal = TruncatedPrior(prior, posterior, x_o)
"""
import copy
import hashlib
import json
import os
import re
import shutil
import time
import warnings

import numpy as np

from .backend import get_backend
from .checks import integer, real, real_array
from .files import write_atomic
from .npse import NPSE
from .posterior import load
from .rng import child_seed
from .sde import SDE, sde_from_config
from .simulate import simulate
from .truncation import TruncatedPrior

_ROUND_DIR = re.compile(r"round_\d{2,}$")


class TSNPSE:
    """Truncated sequential NPSE for one observation ``x_o``.

    simulator: callable (m, d) -> (m, p), optionally taking ``seed=``; executor: any
    concurrent.futures Executor for the simulations; sde, backend, seed and ``npse_kwargs``
    go to ``NPSE``; ``train_kwargs`` to ``NPSE.train`` every round.
    """

    def __init__(self, prior, simulator, x_o, sde="ve", backend=None, seed=0, workdir=None, executor=None,
                 show_progress=True, train_kwargs=None, **npse_kwargs):
        if not all(hasattr(prior, a) for a in ("dim", "sample", "log_prob")):
            raise ValueError("prior must be a snpse_np prior (with dim, sample, log_prob)")
        if not callable(simulator):
            raise ValueError(f"simulator must be callable, got {type(simulator).__name__}")
        x_o = real_array(x_o, "x_o")
        if not (x_o.ndim == 1 or (x_o.ndim == 2 and x_o.shape[0] == 1)) or x_o.size == 0:
            raise ValueError(f"x_o must be one observation, shape (p,) or (1, p), got shape {x_o.shape}")
        if not np.all(np.isfinite(x_o)):
            raise ValueError(f"x_o contains NaN or inf: {x_o.ravel().tolist()}")
        if not isinstance(sde, (str, SDE)):
            raise ValueError(f"sde must be a name ('ve', 'vp', 'subvp') or an SDE instance, got {sde!r}")
        if train_kwargs is not None and not isinstance(train_kwargs, dict):
            raise ValueError(f"train_kwargs must be a dict, got {type(train_kwargs).__name__}")
        self.prior, self.simulator = prior, simulator
        self.x_o = x_o.ravel()
        # an SDE instance is copied: NPSE fits a VE sigma_max into its SDE, and the caller's
        # object (and this run's settings, recorded for resuming) must not change under them
        self.sde = sde if isinstance(sde, str) else copy.deepcopy(sde)
        self.backend, self.seed = backend, integer(seed, "seed", minimum=0)
        self.workdir, self.executor = workdir, executor
        self.show_progress = show_progress
        self.train_kwargs = dict(train_kwargs or {})
        self.npse_kwargs = npse_kwargs
        self.rounds = []  # per-round summaries
        self.posterior = None

    # ------------------------------------------------------------------ persistence

    def _path(self, *parts):
        return os.path.join(self.workdir, *parts)

    def _save_state(self, config):
        if self.workdir is None:
            return
        text = json.dumps(dict(config=config, rounds=self.rounds), indent=1)
        write_atomic(self._path("state.json"), lambda fh: fh.write(text), mode="w")

    def _load_state(self, config):
        path = self._path("state.json")
        if not os.path.exists(path):
            return []
        try:
            with open(path) as fh:
                state = json.load(fh)
            stored, rounds = state["config"], list(state["rounds"])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a TSNPSE state file ({type(err).__name__}: {err}); "
                             f"use another workdir, or run(resume=False, overwrite=True) to start over") from None
        if stored != config:
            diff = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
            raise ValueError(f"workdir {self.workdir} holds a run with other settings ({', '.join(diff)} differ: "
                             f"stored {[stored.get(k) for k in diff]}, this run {[config.get(k) for k in diff]}); "
                             f"use another workdir, or run(resume=False, overwrite=True) to start over")
        return rounds

    def _used_workdir_entries(self):
        """The run files in the workdir (state.json, round_NN folders)."""
        if self.workdir is None or not os.path.isdir(self.workdir):
            return []
        return sorted(e for e in os.listdir(self.workdir) if e == "state.json" or _ROUND_DIR.match(e))

    def _config(self, num_simulations, num_rounds, epsilon, num_hpr_samples, warm_start, log_prob_kwargs):
        """Everything that shapes the result, JSON-normalised (what a resume must match)."""
        sde = self.sde if isinstance(self.sde, str) else self.sde.config()
        config = dict(num_simulations=num_simulations, num_rounds=num_rounds, epsilon=epsilon,
                      num_hpr_samples=num_hpr_samples, seed=self.seed, sde=sde, x_o=self.x_o.tolist(),
                      backend=get_backend(self.backend).name, warm_start=warm_start,
                      train_kwargs=_describe(self.train_kwargs), npse_kwargs=_describe(self.npse_kwargs),
                      log_prob_kwargs=_describe(log_prob_kwargs))
        return json.loads(json.dumps(config))

    def _probe_x_dim(self):
        """Simulate one prior draw (its own seed: the run's draws are unchanged) and check that
        x_o has the simulator's dimension, before round 1 spends its budget. A probe whose row
        fails tells nothing; round 1's simulations are checked then."""
        theta = self.prior.sample(1, seed=child_seed(self.seed, 0, 5))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a failed probe row is not the run's failure
            try:
                x = simulate(self.simulator, theta, executor=self.executor, seed=child_seed(self.seed, 0, 6),
                             progress=False, max_retries=0)
            except RuntimeError:
                return
        self._check_x_dim(x.shape[1])

    def _check_x_dim(self, p):
        if p != self.x_o.size:
            raise ValueError(f"x_o has {self.x_o.size} entries, but the simulator returns x with {p} columns")

    # ------------------------------------------------------------------ the run

    def run(self, num_simulations=10_000, num_rounds=10, epsilon=5e-4, num_hpr_samples=20_000,
            warm_start=False, resume=True, log_prob_kwargs=None, overwrite=False):
        """Run the rounds; return the final round's ``ScorePosterior`` (default x set to x_o).

        resume: continue the run in ``workdir`` (its settings must match). resume=False in a
        workdir that holds a run raises, unless ``overwrite=True``: then its state.json and
        round_NN folders are deleted first.
        """
        num_simulations = integer(num_simulations, "num_simulations", minimum=1)
        num_rounds = integer(num_rounds, "num_rounds", minimum=1)
        if num_simulations < num_rounds:
            raise ValueError(f"need num_simulations >= num_rounds, got {num_simulations} < {num_rounds}")
        epsilon = real(epsilon, "epsilon", at_least=0.0)
        if not epsilon < 1.0:
            raise ValueError(f"epsilon must lie in [0, 1), got {epsilon}")
        num_hpr_samples = integer(num_hpr_samples, "num_hpr_samples", minimum=self.prior.dim + 2)
        for name, flag in (("warm_start", warm_start), ("resume", resume), ("overwrite", overwrite)):
            if not isinstance(flag, (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        if log_prob_kwargs is not None and not isinstance(log_prob_kwargs, dict):
            raise ValueError(f"log_prob_kwargs must be a dict, got {type(log_prob_kwargs).__name__}")
        per_round = [num_simulations // num_rounds + (1 if r < num_simulations % num_rounds else 0)
                     for r in range(num_rounds)]
        config = self._config(num_simulations, num_rounds, epsilon, num_hpr_samples, bool(warm_start),
                              log_prob_kwargs)
        done = []
        if self.workdir is not None:
            used = self._used_workdir_entries()
            if used and not resume:
                if not overwrite:
                    raise ValueError(f"workdir {self.workdir} holds a run ({', '.join(used[:4])}"
                                     f"{', ...' if len(used) > 4 else ''}); resume=False would reuse nothing of it: "
                                     f"pass overwrite=True to delete it and start over, or resume=True to continue it")
                for entry in used:  # only the run's own files: anything else in the folder stays
                    path = self._path(entry)
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            os.makedirs(self.workdir, exist_ok=True)
            if resume:
                done = self._load_state(config)
        inference = NPSE(self.prior, sde=copy.deepcopy(self.sde), backend=self.backend,
                         seed=child_seed(self.seed, 0), show_progress=self.show_progress, **self.npse_kwargs)
        if not done:
            self._probe_x_dim()
        self.rounds = []
        proposal = self.prior
        for r in range(num_rounds):
            if r < len(done):  # finished in an earlier, interrupted run: reload, don't redo
                with np.load(self._path(f"round_{r:02d}", "simulations.npz")) as f:
                    theta_r, x_r = f["theta"], f["x"]
                if r == 0:
                    self._check_x_dim(x_r.shape[1])
                ok = np.all(np.isfinite(x_r), axis=1)
                inference.append_simulations(theta_r[ok], x_r[ok])
                self.rounds.append(done[r])
                self.posterior = load(self._path(f"round_{r:02d}", "posterior.npz"), backend=self.backend,
                                      prior=self.prior)
                # state fitted from the data (the VE sigma_max from round 1) as the round saved it:
                # a fresh NPSE would refit it to the pooled rounds and train differently
                inference.sde = sde_from_config(done[r]["sde"])
                self._say(f"round {r + 1}/{num_rounds}: loaded from {self.workdir}")
                continue
            if r > 0:
                proposal = TruncatedPrior(self.prior, self.posterior, self.x_o, epsilon=epsilon,
                                          num_samples=num_hpr_samples, seed=child_seed(self.seed, r, 1),
                                          log_prob_kwargs=log_prob_kwargs)
            t0 = time.perf_counter()
            theta = proposal.sample(per_round[r], seed=child_seed(self.seed, r, 2))
            t_reject = time.perf_counter() - t0 if r > 0 else 0.0  # candidates and their log-densities
            t_hpr = proposal.setup_seconds if r > 0 else 0.0  # 20k posterior samples, log-densities, kappa
            t_trunc = t_hpr + t_reject
            t0 = time.perf_counter()
            sim_dir = None if self.workdir is None else self._path(f"round_{r:02d}", "chunks")
            x, report = simulate(self.simulator, theta, executor=self.executor, seed=child_seed(self.seed, r, 3),
                                 progress=self.show_progress, workdir=sim_dir, return_report=True)
            t_sim = time.perf_counter() - t0
            if r == 0:
                self._check_x_dim(x.shape[1])
            if self.workdir is not None:
                _save_npz(self._path(f"round_{r:02d}", "simulations.npz"), theta=theta, x=x)
            n_bad = int(np.sum(~np.all(np.isfinite(x), axis=1)))
            if n_bad:
                ok = np.all(np.isfinite(x), axis=1)
                theta, x = theta[ok], x[ok]
            inference.append_simulations(theta, x)
            train_kwargs = dict(self.train_kwargs)
            if warm_start and r > 0:
                train_kwargs["init_params"] = self.posterior.params
            inference.rng = np.random.default_rng(child_seed(self.seed, r, 4))  # resumable: per-round seed
            self.posterior = inference.train(**train_kwargs).set_default_x(self.x_o)
            s = inference.summary
            summary = dict(round=r + 1, simulations=per_round[r], failed_simulations=n_bad,
                           simulator_errors=report.first_error, total_simulations=int(sum(per_round[:r + 1])),
                           acceptance=None if r == 0 else proposal.acceptance,
                           truncation_seconds=t_trunc, hpr_seconds=t_hpr, rejection_seconds=t_reject,
                           hpr_full_evaluations=None if r == 0 else proposal.hpr_full_evaluations,
                           screened_candidates=None if r == 0 else proposal.screened_candidates,
                           simulation_seconds=t_sim,
                           epochs=s["epochs"], train_seconds=s["train_seconds"], best_val_loss=s["best_val_loss"],
                           sde=inference.sde.config())
            self.rounds.append(summary)
            if self.workdir is not None:
                self.posterior.save(self._path(f"round_{r:02d}", "posterior.npz"))
                self._save_state(config)
            acc = "" if r == 0 else (f", acceptance {proposal.acceptance:.3g}, kappa from "
                                     f"{proposal.hpr_full_evaluations} full log-densities, "
                                     f"{proposal.screened_candidates} candidates decided by the screen")
            self._say(f"round {r + 1}/{num_rounds}: {per_round[r]} simulations ({n_bad} failed){acc}, "
                      f"truncation {t_trunc:.1f}s (HPR {t_hpr:.1f}s, rejection {t_reject:.1f}s), "
                      f"simulation {t_sim:.1f}s, "
                      f"training {s['epochs']} epochs {s['train_seconds']:.1f}s")
        return self.posterior

    def _say(self, text):
        if self.show_progress:
            import sys
            print(text, file=sys.stderr, flush=True)


def _save_npz(path, **arrays):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, lambda fh: np.savez(fh, **arrays))


def _describe(value):
    """A JSON-able description of a setting, equal for settings that give the same run: arrays
    by shape and hash, dtypes and types by name, backends by name, SDEs by their config."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float, np.integer, np.floating, np.bool_)):
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, dict):
        return {str(k): _describe(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if isinstance(value, np.ndarray) or hasattr(value, "__cuda_array_interface__"):
        host = np.asarray(value.get() if hasattr(value, "get") else value)
        return dict(shape=list(host.shape), dtype=host.dtype.name,
                    sha256=hashlib.sha256(np.ascontiguousarray(host).tobytes()).hexdigest())
    if isinstance(value, SDE):
        return value.config()
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return np.dtype(value).name
    if hasattr(value, "name") and hasattr(value, "xp"):  # a Backend
        return value.name
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__qualname__)}"
    # memory addresses in default reprs differ between processes, not between settings
    return re.sub(r" at 0x[0-9a-fA-F]+", "", f"{type(value).__module__}.{type(value).__qualname__}: {value!r}")
