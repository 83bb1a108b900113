"""TSNPSE: truncated sequential neural posterior score estimation (Sharrock et al. 2024, Sec. 3.2).

Round 1 is plain NPSE on prior draws. Every later round r draws M = N / R new parameters from
the prior truncated to the eps-highest-probability region of the round r-1 posterior at x_o
(``truncation.TruncatedPrior``), simulates them, pools the data of all rounds, and trains a FRESH
network on everything (``warm_start=True`` starts from the previous weights instead). Because
every proposal is the prior restricted to a region that (up to eps) contains the posterior, the
plain NPSE loss on the pooled data still targets the true posterior (paper Prop. 3.1): no
importance weights, no proposal correction. The linear-Gaussian fit of theta given x (the
samplers' start, and the score the network corrects with ``baseline=``) is made on round 1's
prior draws only: regressed over truncated draws its residual variance comes out too small.

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

The round loop itself (budget split, seeds, simulation, NaN filter, pooling, workdir and
resume) is ``rounds.RoundDriver``'s; this module adds TSNPSE's proposal and training.

Two ways to use it:

    posterior = TSNPSE(prior, simulator, x_o).run(num_simulations=10_000, num_rounds=10)

or the sbi-style loop, for people who simulate elsewhere:

    inference, proposal = NPSE(prior), prior
    for r in range(R):
        theta = proposal.sample(M, seed=r); x = my_simulator(theta)
        inference.append_simulations(theta, x)
        if r == 0:  # round 1's rows (its NaN rows dropped): the linear-Gaussian fit's
            n1 = len(inference.get_simulations()[0])
        posterior = inference.train(fit_rows=n1)
        proposal = TruncatedPrior(prior, posterior, x_o)
"""
import copy
import time

import json

import numpy as np

from .backend import get_backend
from .checks import integer, real
from .npse import NPSE
from .posterior import load
from .rng import child_seed
from .rounds import RoundDriver, describe, split_budget
from .sde import sde_from_config
from .truncation import TruncatedPrior


class TSNPSE(RoundDriver):
    """Truncated sequential NPSE for one observation ``x_o``.

    simulator: callable (m, d) -> (m, p), optionally taking ``seed=``; executor: any
    concurrent.futures Executor for the simulations; sde, backend, seed and ``npse_kwargs``
    go to ``NPSE``; ``train_kwargs`` to ``NPSE.train`` every round. workdir: where the run is
    kept and resumed from (module docstring).
    """

    def _config(self, num_simulations, num_rounds, epsilon, num_hpr_samples, warm_start, log_prob_kwargs):
        """Everything that shapes the result, JSON-normalised (what a resume must match)."""
        sde = self.sde if isinstance(self.sde, str) else self.sde.config()
        config = dict(num_simulations=num_simulations, num_rounds=num_rounds, epsilon=epsilon,
                      num_hpr_samples=num_hpr_samples, seed=self.seed, sde=sde, x_o=self.x_o.tolist(),
                      backend=get_backend(self.backend).name, warm_start=warm_start,
                      train_kwargs=describe(self.train_kwargs), npse_kwargs=describe(self.npse_kwargs),
                      log_prob_kwargs=describe(log_prob_kwargs))
        return json.loads(json.dumps(config))

    def run(self, num_simulations=10_000, num_rounds=10, epsilon=5e-4, num_hpr_samples=20_000,
            warm_start=False, resume=True, log_prob_kwargs=None, overwrite=False):
        """Run the rounds; return the final round's ``ScorePosterior`` (default x set to x_o).

        resume: continue the run in ``workdir`` (its settings must match). resume=False in a
        workdir that holds a run raises, unless ``overwrite=True``: then its state.json and
        round_NN folders are deleted first.
        """
        per_round = split_budget(num_simulations, num_rounds)
        num_simulations, num_rounds = sum(per_round), len(per_round)
        epsilon = real(epsilon, "epsilon", at_least=0.0)
        if not epsilon < 1.0:
            raise ValueError(f"epsilon must lie in [0, 1), got {epsilon}")
        num_hpr_samples = integer(num_hpr_samples, "num_hpr_samples", minimum=self.prior.dim + 2)
        for name, flag in (("warm_start", warm_start), ("resume", resume), ("overwrite", overwrite)):
            if not isinstance(flag, (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        if log_prob_kwargs is not None and not isinstance(log_prob_kwargs, dict):
            raise ValueError(f"log_prob_kwargs must be a dict, got {type(log_prob_kwargs).__name__}")
        config = self._config(num_simulations, num_rounds, epsilon, num_hpr_samples, bool(warm_start),
                              log_prob_kwargs)
        # the settings of this run's rounds (read by the hooks below)
        self.epsilon, self.num_hpr_samples = epsilon, num_hpr_samples
        self.warm_start, self.log_prob_kwargs = bool(warm_start), log_prob_kwargs
        inference = NPSE(self.prior, sde=copy.deepcopy(self.sde), backend=self.backend,
                         seed=child_seed(self.seed, 0), show_progress=self.show_progress, **self.npse_kwargs)
        return self.run_rounds(inference, per_round, config, resume=bool(resume), overwrite=bool(overwrite))

    # ------------------------------------------------------------------ the RoundDriver hooks

    def draw_round(self, r, n, seed):
        """Round 0 draws the prior; round r >= 1 the prior truncated to round r-1's HPR at x_o."""
        if r == 0:
            theta = self.prior.sample(n, seed=seed)
            return theta, dict(acceptance=None, truncation_seconds=0.0, hpr_seconds=0.0, rejection_seconds=0.0,
                               hpr_full_evaluations=None, screened_candidates=None)
        proposal = TruncatedPrior(self.prior, self.posterior, self.x_o, epsilon=self.epsilon,
                                  num_samples=self.num_hpr_samples, seed=child_seed(self.seed, r, 1),
                                  log_prob_kwargs=self.log_prob_kwargs)
        t0 = time.perf_counter()
        theta = proposal.sample(n, seed=seed)
        t_reject = time.perf_counter() - t0  # candidates and their log-densities
        t_hpr = proposal.setup_seconds  # the posterior samples, their log-densities, kappa
        return theta, dict(acceptance=proposal.acceptance, truncation_seconds=t_hpr + t_reject,
                           hpr_seconds=t_hpr, rejection_seconds=t_reject,
                           hpr_full_evaluations=proposal.hpr_full_evaluations,
                           screened_candidates=proposal.screened_candidates)

    def train_round(self, r, inference, n):
        """A fresh network on the pooled rounds (or warm-started from the last round's weights). The
        linear-Gaussian fit (start and baseline) uses the prior round's rows only: the truncated rounds'
        draws would shrink its residual variance (``NPSE.train``'s ``fit_rows``)."""
        if r == 0:
            self._prior_rows = inference.get_simulations()[0].shape[0]
        train_kwargs = dict(self.train_kwargs)
        train_kwargs.setdefault("fit_rows", self._prior_rows)
        if self.warm_start and r > 0:
            train_kwargs["init_params"] = self.posterior.params
        posterior = inference.train(**train_kwargs).set_default_x(self.x_o)
        # saved with the round: a resume restores it instead of refitting it to the pooled rounds
        return posterior, dict(sde=inference.sde.config())

    def round_notes(self, summary):
        acc = "" if summary["round"] == 1 else (
            f", acceptance {summary['acceptance']:.3g}, kappa from {summary['hpr_full_evaluations']} full "
            f"log-densities, {summary['screened_candidates']} candidates decided by the screen")
        return (f"{acc}, truncation {summary['truncation_seconds']:.1f}s (HPR {summary['hpr_seconds']:.1f}s, "
                f"rejection {summary['rejection_seconds']:.1f}s)"), ""

    def restore_round(self, r, summary, inference, path):
        # state fitted from the data (the VE sigma_max from round 1) as the round saved it:
        # a fresh NPSE would refit it to the pooled rounds and train differently
        inference.sde = sde_from_config(summary["sde"])
        if r == 0:  # what train_round would have recorded (only round 0's rows are pooled yet)
            self._prior_rows = inference.get_simulations()[0].shape[0]
        return load(path, backend=self.backend, prior=self.prior)
