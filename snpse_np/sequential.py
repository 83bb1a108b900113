"""TSNPSE: truncated sequential neural posterior score estimation (Sharrock et al. 2024, Sec. 3.2).

Round 1 is plain NPSE on prior draws. Every later round r draws M = N / R new parameters from
the prior truncated to the eps-highest-probability region of the round r-1 posterior at x_o
(``truncation.TruncatedPrior``), simulates them, pools the data of all rounds, and trains a FRESH
network on everything (``warm_start=True`` starts from the previous weights instead). Because
every proposal is the prior restricted to a region that (up to eps) contains the posterior, the
plain NPSE loss on the pooled data still targets the true posterior (paper Prop. 3.1): no
importance weights, no proposal correction.

Nothing is lost: with ``workdir=``, each round's simulations, its posterior and the run's state
are written as they finish, and ``run(..., resume=True)`` continues a killed run without
re-simulating what was done (chunks of an interrupted simulation are kept too). Simulator
failures (exceptions, NaN/inf rows) are counted and reported, and never crash the run.

Two ways to use it:

    posterior = TSNPSE(prior, simulator, x_o).run(num_simulations=10_000, num_rounds=10)

or the sbi-style loop, for people who simulate elsewhere:

    inference, proposal = NPSE(prior), prior
    for r in range(R):
        theta = proposal.sample(M, seed=r); x = my_simulator(theta)
        posterior = inference.append_simulations(theta, x).train()
        proposal = TruncatedPrior(prior, posterior, x_o)
"""
import json
import os
import time

import numpy as np

from .npse import NPSE
from .posterior import load
from .rng import child_seed
from .simulate import simulate
from .truncation import TruncatedPrior


class TSNPSE:
    """Truncated sequential NPSE for one observation ``x_o``.

    simulator: callable (m, d) -> (m, p), optionally taking ``seed=``; executor: any
    concurrent.futures Executor for the simulations; sde, backend, seed and ``npse_kwargs``
    go to ``NPSE``; ``train_kwargs`` to ``NPSE.train`` every round.
    """

    def __init__(self, prior, simulator, x_o, sde="ve", backend=None, seed=0, workdir=None, executor=None,
                 show_progress=True, train_kwargs=None, **npse_kwargs):
        self.prior, self.simulator = prior, simulator
        self.x_o = np.asarray(x_o, dtype=np.float64).ravel()
        self.sde, self.backend, self.seed = sde, backend, int(seed)
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
        tmp = self._path("state.json.tmp")
        with open(tmp, "w") as fh:
            json.dump(dict(config=config, rounds=self.rounds), fh, indent=1)
        os.replace(tmp, self._path("state.json"))

    def _load_state(self, config):
        path = self._path("state.json")
        if not os.path.exists(path):
            return []
        with open(path) as fh:
            state = json.load(fh)
        if state["config"] != config:
            raise ValueError(f"workdir {self.workdir} holds a run with other settings: "
                             f"{state['config']} (this run: {config}); use another workdir")
        return state["rounds"]

    # ------------------------------------------------------------------ the run

    def run(self, num_simulations=10_000, num_rounds=10, epsilon=5e-4, num_hpr_samples=20_000,
            warm_start=False, resume=True, log_prob_kwargs=None):
        """Run the rounds; return the final round's ``ScorePosterior`` (default x set to x_o)."""
        if num_rounds < 1 or num_simulations < num_rounds:
            raise ValueError("need num_rounds >= 1 and num_simulations >= num_rounds")
        per_round = [num_simulations // num_rounds + (1 if r < num_simulations % num_rounds else 0)
                     for r in range(num_rounds)]
        config = dict(num_simulations=int(num_simulations), num_rounds=int(num_rounds), epsilon=float(epsilon),
                      num_hpr_samples=int(num_hpr_samples), seed=self.seed, sde=str(self.sde),
                      x_o=self.x_o.tolist())
        done = []
        if self.workdir is not None:
            os.makedirs(self.workdir, exist_ok=True)
            if resume:
                done = self._load_state(config)
        inference = NPSE(self.prior, sde=self.sde, backend=self.backend, seed=child_seed(self.seed, 0),
                         show_progress=self.show_progress, **self.npse_kwargs)
        self.rounds = []
        proposal = self.prior
        for r in range(num_rounds):
            if r < len(done):  # finished in an earlier, interrupted run: reload, don't redo
                with np.load(self._path(f"round_{r:02d}", "simulations.npz")) as f:
                    inference.append_simulations(f["theta"], f["x"], exclude_invalid_x=True)
                self.rounds.append(done[r])
                self.posterior = load(self._path(f"round_{r:02d}", "posterior.npz"), backend=self.backend)
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
                           epochs=s["epochs"], train_seconds=s["train_seconds"], best_val_loss=s["best_val_loss"])
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
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
