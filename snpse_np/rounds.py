"""The round loop shared by the sequential methods (TSNPSE, SNPSE-A, SNPSE-B): one home for it.

A sequential run spends N simulations over R rounds. ``RoundDriver.run_rounds`` owns what every
method does the same way, and calls the method's hooks for the rest:

    for r in 0 .. R-1:
        theta_r  = draw_round(r, n_r, seed=(seed, r, 2))           hook: the method's proposal
        x_r      = simulate(simulator, theta_r, seed=(seed, r, 3))
        drop the rows whose x holds NaN/inf (counted, reported)
        pool (theta_r, x_r) with the earlier rounds in the NPSE
        NPSE's training generator <- (seed, r, 4)
        posterior = train_round(r, inference, n_r)                   hook: train (and correct)
        summary, log line; with a workdir: round_rr/ and state.json written atomically

The budget is split evenly, the first N mod R rounds one simulation larger (``split_budget``).
Every random stream is a ``child_seed`` of (seed, round, use), so a round does not depend on how
the run got there (resumes are exact). Uses: 0 (the NPSE's initial seed, ``child_seed(seed, 0)``),
1 (TSNPSE's truncated prior), 2 (the round's draws), 3 (its simulations), 4 (its training),
5 and 6 (TSNPSE: the x_o probe row, round 0 only; SNPSE-A/B: the training weights and the
posterior's SIR draws, every round).

Workdir (methods that implement ``restore_round``, i.e. TSNPSE): each round's raw simulations
(``round_rr/simulations.npz``, before the NaN filter), its posterior (``round_rr/posterior.npz``)
and the run's ``state.json`` (the settings that shape the result, and the round summaries) are
written as they finish, and simulation chunks as they come (``round_rr/chunks``). A run with
``resume=True`` reloads the finished rounds instead of redoing them and refuses a workdir whose
settings differ; ``resume=False`` refuses a used workdir unless ``overwrite=True``, which deletes
the run's files (only those) first.
"""
import copy
import hashlib
import json
import os
import re
import shutil
import sys
import time
import warnings

import numpy as np

from .checks import integer, real_array
from .files import write_atomic
from .rng import child_seed
from .sde import SDE
from .simulate import simulate

ROUND_DIR = re.compile(r"round_\d{2,}$")


def split_budget(num_simulations, num_rounds):
    """Simulations per round: N // R each, the first N % R rounds one more (list of R ints)."""
    num_simulations = integer(num_simulations, "num_simulations", minimum=1)
    num_rounds = integer(num_rounds, "num_rounds", minimum=1)
    if num_simulations < num_rounds:
        raise ValueError(f"need num_simulations >= num_rounds, got {num_simulations} < {num_rounds}")
    return [num_simulations // num_rounds + (1 if r < num_simulations % num_rounds else 0)
            for r in range(num_rounds)]


class RoundDriver:
    """The round loop (module docstring); a sequential method subclasses it and fills in the hooks.

    prior: a snpse_np prior (dim, sample, log_prob); simulator: callable (m, d) -> (m, p),
    optionally taking ``seed=``; x_o: the observation (p,) or (1, p); sde: a name or an SDE
    instance (copied: the NPSE fits a VE sigma_max into its SDE); executor: any
    concurrent.futures Executor for the simulations; train_kwargs go to ``NPSE.train`` every
    round, npse_kwargs to ``NPSE``.

    Hooks: ``draw_round`` (required), ``train_round`` (required), ``round_notes`` (log text),
    ``restore_round`` (only for methods that can resume from a workdir). ``rounds`` holds the
    per-round summaries, ``posterior`` the last round's posterior.
    """

    probe_x_o = True  # simulate one probe row to check x_o's dimension before round 0 spends its budget

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

    # ------------------------------------------------------------------ hooks

    def draw_round(self, r, n, seed):
        """Round r's parameters: (theta (n, d), summary entries). Round 0 usually draws the prior."""
        raise NotImplementedError

    def train_round(self, r, inference, n):
        """Train on the pooled rows of ``inference`` (its generator already seeded for round r):
        (the round's posterior, default x set to x_o; summary entries)."""
        raise NotImplementedError

    def round_notes(self, summary):
        """Log text for a finished round: (after the simulation count, after the simulation time)."""
        return "", ""

    def restore_round(self, r, summary, inference, path):
        """A finished round reloaded from the workdir: restore the state fitted from the data into
        ``inference`` and return the round's posterior read from ``path`` (posterior.npz)."""
        raise NotImplementedError(f"{type(self).__name__} cannot resume from a workdir")

    # ------------------------------------------------------------------ persistence

    def _path(self, *parts):
        return os.path.join(self.workdir, *parts)

    def _save_state(self, config):
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
            raise ValueError(f"{path} is not a {type(self).__name__} state file ({type(err).__name__}: {err}); "
                             f"use another workdir, or run(resume=False, overwrite=True) to start over") from None
        if stored != config:
            diff = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
            raise ValueError(f"workdir {self.workdir} holds a run with other settings ({', '.join(diff)} differ: "
                             f"stored {[stored.get(k) for k in diff]}, this run {[config.get(k) for k in diff]}); "
                             f"use another workdir, or run(resume=False, overwrite=True) to start over")
        return rounds

    def _used_workdir_entries(self):
        """The run files in the workdir (state.json, round_NN folders)."""
        if not os.path.isdir(self.workdir):
            return []
        return sorted(e for e in os.listdir(self.workdir) if e == "state.json" or ROUND_DIR.match(e))

    def _open_workdir(self, config, resume, overwrite):
        """Prepare the workdir; return the summaries of the rounds a resumed run finished."""
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
        return self._load_state(config) if resume else []

    # ------------------------------------------------------------------ checks

    def _probe_x_dim(self):
        """Simulate one prior draw (its own seed: the run's draws are unchanged) and check that
        x_o has the simulator's dimension, before round 0 spends its budget. A probe whose row
        fails tells nothing; round 0's simulations are checked then."""
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

    # ------------------------------------------------------------------ the loop

    def run_rounds(self, inference, per_round, config=None, resume=True, overwrite=False):
        """Run the rounds (module docstring) on ``inference`` (an NPSE); return the last posterior.

        per_round: simulations per round (``split_budget``). config: the JSON-able settings that
        shape the result, recorded in (and checked against) the workdir's state.json; used only
        with a workdir.
        """
        done = [] if self.workdir is None else self._open_workdir(config, resume, overwrite)
        if not done and self.probe_x_o:
            self._probe_x_dim()
        self.rounds, self.posterior = [], None
        num_rounds = len(per_round)
        for r, n in enumerate(per_round):
            round_dir = None if self.workdir is None else self._path(f"round_{r:02d}")
            if r < len(done):  # finished in an earlier, interrupted run: reload, don't redo
                with np.load(os.path.join(round_dir, "simulations.npz")) as f:
                    theta, x = f["theta"], f["x"]
                if r == 0:
                    self._check_x_dim(x.shape[1])
                self._pool(inference, theta, x)
                self.rounds.append(done[r])
                self.posterior = self.restore_round(r, done[r], inference, os.path.join(round_dir, "posterior.npz"))
                self._say(f"round {r + 1}/{num_rounds}: loaded from {self.workdir}")
                continue
            theta, draw_info = self.draw_round(r, n, child_seed(self.seed, r, 2))
            t0 = time.perf_counter()
            x, report = simulate(self.simulator, theta, executor=self.executor, seed=child_seed(self.seed, r, 3),
                                 progress=self.show_progress, return_report=True,
                                 workdir=None if round_dir is None else os.path.join(round_dir, "chunks"))
            t_sim = time.perf_counter() - t0
            if r == 0:
                self._check_x_dim(x.shape[1])
            if round_dir is not None:
                _save_npz(os.path.join(round_dir, "simulations.npz"), theta=theta, x=x)
            n_bad = self._pool(inference, theta, x)
            inference.rng = np.random.default_rng(child_seed(self.seed, r, 4))  # resumable: per-round seed
            self.posterior, train_info = self.train_round(r, inference, n)
            s = inference.summary
            summary = dict(round=r + 1, simulations=n, failed_simulations=n_bad,
                           simulator_errors=report.first_error, total_simulations=int(sum(per_round[:r + 1])),
                           **draw_info, simulation_seconds=t_sim, **train_info,
                           epochs=s["epochs"], train_seconds=s["train_seconds"], best_val_loss=s["best_val_loss"])
            self.rounds.append(summary)
            if round_dir is not None:
                self.posterior.save(os.path.join(round_dir, "posterior.npz"))
                self._save_state(config)
            after_count, after_sim = self.round_notes(summary)
            self._say(f"round {r + 1}/{num_rounds}: {n} simulations ({n_bad} failed){after_count}, "
                      f"simulation {t_sim:.1f}s{after_sim}, training {s['epochs']} epochs {s['train_seconds']:.1f}s")
        return self.posterior

    @staticmethod
    def _pool(inference, theta, x):
        """Drop the rows with NaN/inf in x (the one NaN filter), append the rest to ``inference``;
        return the number dropped."""
        ok = np.all(np.isfinite(x), axis=1)
        inference.append_simulations(theta[ok], x[ok])
        return int(np.sum(~ok))

    def _say(self, text):
        if self.show_progress:
            print(text, file=sys.stderr, flush=True)


def _save_npz(path, **arrays):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, lambda fh: np.savez(fh, **arrays))


def describe(value):
    """A JSON-able description of a setting, equal for settings that give the same run: arrays
    by shape and hash, dtypes and types by name, backends by name, SDEs by their config."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float, np.integer, np.floating, np.bool_)):
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
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
