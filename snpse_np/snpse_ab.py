"""SNPSE-A and SNPSE-B: sequential NPSE with a proposal correction (Sharrock et al. 2024, Sec. 3.2, App. C).

EXPERIMENTAL. The paper proposes these two methods, reports that both are worse than TSNPSE
(App. C.5, Fig. 6: TSNPSE is significantly better on SLCP and GLU, "replicated in other tasks")
and recommends TSNPSE; neither is in the authors' released code. They are here for comparison.
Use ``TSNPSE`` for inference.

Set-up (paper Sec. 3). Rounds are counted from 0 here (the paper counts from 1). Round 0
simulates n_0 parameters drawn from the prior, q_0 = p. Round r >= 1 draws its n_r parameters
from the previous round's posterior estimate at the observation, q_r = p_psi^{r-1}(theta | x_o).
The data of all rounds are pooled, so round r's network is trained on draws from the mixture

    p~^r(theta) = sum_{s=0}^{r} (n_s / N_r) q_s(theta),      N_r = n_0 + ... + n_r

(the paper's (1/r) sum of the previous posteriors with its even split of the budget). The
mixture is weighted by the parameters DRAWN per round, failed simulations included: dropping a
row whose x is NaN/inf removes the same fraction v(theta) from every component, and v cancels in
p(theta) v(theta) / sum_s n_s q_s(theta) v(theta). Plain NPSE on these data would learn the
proposal posterior p~^r(theta | x) ∝ p~^r(theta) p(x | theta), not the posterior. The two
methods correct for the proposal in different places:

SNPSE-A (analogue of SNPE-A): train with the plain loss, so the network learns the proposal
posterior p~_psi^r(theta | x), and correct at the density level,

    p_psi^r(theta | x_o) = p(theta) / p~^r(theta) * p~_psi^r(theta | x_o) / Z_r,
    Z_r = E_{p~_psi^r(theta | x_o)} [ p(theta) / p~^r(theta) ]

(= p(x_o) / p~^r(x_o) for an exact network; the paper writes the reciprocal, p~^r(x_o) / p(x_o)).

It is sampled by sampling-importance-resampling (``SIRPosterior``): M' draws from the network,
weights h_i = p(theta_i) / p~^r(theta_i), n of them resampled in proportion to h. Z_r is the
Monte Carlo mean of the h_i (kept as a log-mean-exp) and is what makes q_{r+1} = p_psi^r a
normalised density in the next rounds' mixtures. The limits the paper states:
  - p~^r can be evaluated exactly from CNF densities only in the first two rounds (paper r <= 2,
    rounds 0 and 1 here); after that the intractable normaliser enters, replaced here by its
    Monte Carlo estimate, whose error propagates into every later round;
  - SIR with finite M' draws from a distribution between p~_psi^r and p_psi^r, so the density
    used for q_{r+1} is only approximately that of the parameters actually simulated (and the
    resampled parameters repeat: about n / ESS copies each);
  - the method is fundamentally limited by the mismatch between the network's p~_psi^r and the
    true proposal posterior p~^r(theta | x_o): the correction p / p~^r is exact only for an exact
    network, and the paper's alternatives (proposals fitted by KDE or flows, density-ratio
    estimation) are not implemented. The weights p / p~^r themselves are bounded (see SNPSE-B),
    but they reweight the network's tails, where its errors are largest.

SNPSE-B (analogue of SNPE-B): importance-weighted denoising score matching,

    J(psi) = 1/2 int lambda_t E_{p~^r(theta_0) p(x | theta_0) p_{t|0}(theta_t | theta_0)}
             [ p(theta_0) / p~^r(theta_0) || s_psi(theta_t, x, t) - grad log p_{t|0}(theta_t | theta_0) ||^2 ] dt,

whose minimiser is the true posterior score, so the network's posterior is used directly
(a ``ScorePosterior``). q_s for s >= 1 is network s-1's probability-flow-ODE density restricted
to the prior support and divided by its in-prior mass a_{s-1} (estimated by Monte Carlo as the
acceptance fraction when its draws were rejected outside the prior). The weights are
self-normalised (``NPSE.train(sample_weights=...)``) and recomputed for ALL pooled rows every
round, because p~^r changes with every round. The limits the paper states: the weights need
p~^r, with the same difficulties as SNPSE-A; they have high variance, so training is unstable
(the techniques of Xiong et al. 2023 might help; not implemented). No clipping: because the prior
is the first mixture component, p~^r >= (n_0 / N_r) p exactly, so every weight is at most
N_r / n_0 (= r + 1 with an even split) and none can explode; the effective sample size of the
weights is reported every round.

Cost. Evaluating p~^r needs the log-densities of the r earlier networks (one PF-ODE with a trace
each) at every point: SNPSE-A evaluates it at the M' = oversample * n SIR draws of every round
and of every ``sample`` call, SNPSE-B at all N_r pooled parameters every round, so the cost grows
quadratically (A) or cubically (B) with the number of rounds. Hence the small default
``num_rounds=3``; ``log_prob_kwargs`` (e.g. ``dict(method="rk4", steps=20)``) makes the
densities cheaper. The density of a component must be that of the parameters drawn from it, so
give ``sample_kwargs`` an ODE sampler (the default) of similar accuracy, not the SDE sampler.

Where things live: the round loop is ``rounds.RoundDriver`` (shared with TSNPSE);
``CorrectedRounds`` below adds the proposal mixture and the hooks both methods share;
``snpse_a.SNPSEA``, ``snpse_b.SNPSEB`` the methods; ``mixture.ProposalMixture`` the density p~^r;
``sir.SIRPosterior`` SNPSE-A's posterior; ``logweights`` the log-space weight helpers.

Usage:

    posterior = SNPSEA(prior, simulator, x_o).run(num_simulations=3000, num_rounds=3)
    samples = posterior.sample(1000, seed=0)
"""
import copy
import time

from .mixture import ProposalMixture
from .npse import NPSE
from .rng import child_seed
from .rounds import RoundDriver, split_budget


class CorrectedRounds(RoundDriver):
    """The rounds of SNPSE-A and SNPSE-B: the proposal mixture p~^r and the hooks they share.

    A subclass sets ``reweighted`` (does the mixture hold SIR-corrected components?) and fills in
    ``draw_from_previous``, ``round_posterior`` and, if it weights the loss, ``training_weights``.
    No workdir: neither method can resume (their posteriors and mixtures are not saved).
    """

    experimental = True
    reweighted = None  # does the proposal mixture hold reweighted (SNPSE-A) components?
    draw_keys = ()  # summary entries of draw_from_previous (None in round 0)
    # no probe row: seeds (0, 5) and (0, 6) are round 0's weights and posterior draws here
    probe_x_o = False

    def __init__(self, prior, simulator, x_o, sde="ve", backend=None, seed=0, executor=None,
                 show_progress=True, train_kwargs=None, **npse_kwargs):
        super().__init__(prior, simulator, x_o, sde=sde, backend=backend, seed=seed, executor=executor,
                         show_progress=show_progress, train_kwargs=train_kwargs, **npse_kwargs)
        self.mixture = None  # p~^r of the last round
        self.network = None  # the last round's network (a ScorePosterior)

    def run(self, num_simulations=3000, num_rounds=3, sample_kwargs=None, log_prob_kwargs=None):
        """Run the rounds; return the final round's posterior (default x set to x_o).

        num_simulations are split evenly over num_rounds. sample_kwargs go to every network
        ``sample`` call (e.g. ``dict(method="rk4", steps=20)``), log_prob_kwargs to every network
        ``log_prob`` inside the proposal mixture. Costs grow with the rounds (module docstring).
        """
        per_round = split_budget(num_simulations, num_rounds)
        if sample_kwargs is not None and not isinstance(sample_kwargs, dict):
            raise ValueError(f"sample_kwargs must be a dict, got {type(sample_kwargs).__name__}")
        if log_prob_kwargs is not None and not isinstance(log_prob_kwargs, dict):
            raise ValueError(f"log_prob_kwargs must be a dict, got {type(log_prob_kwargs).__name__}")
        self.sample_kwargs = dict(sample_kwargs or {})
        inference = NPSE(self.prior, sde=copy.deepcopy(self.sde), backend=self.backend,
                         seed=child_seed(self.seed, 0), show_progress=self.show_progress, **self.npse_kwargs)
        self.mixture = ProposalMixture(self.prior, self.x_o, per_round[:1], self.reweighted, log_prob_kwargs)
        self.network = None
        return self.run_rounds(inference, per_round)

    # the RoundDriver hooks ---------------------------------------------------

    def draw_round(self, r, n, seed):
        t0 = time.perf_counter()
        info = dict.fromkeys(self.draw_keys)
        if r == 0:
            theta = self.prior.sample(n, seed=seed)
        else:
            theta, log_norm, info = self.draw_from_previous(self.network, n, seed)
            self.mixture = self.mixture.extended(n, self.network, log_norm)
        return theta, dict(info, proposal_seconds=time.perf_counter() - t0)

    def train_round(self, r, inference, n):
        t0 = time.perf_counter()
        weights, winfo = self.training_weights(inference, r, child_seed(self.seed, r, 5))
        t_weights = time.perf_counter() - t0
        self.network = inference.train(sample_weights=weights, **self.train_kwargs).set_default_x(self.x_o)
        t0 = time.perf_counter()
        posterior, pinfo = self.round_posterior(self.network, n, child_seed(self.seed, r, 6))
        t_post = time.perf_counter() - t0
        return posterior, dict(**winfo, **pinfo, log_normalizers=self.mixture.log_normalizers,
                               weight_seconds=t_weights, posterior_seconds=t_post)

    def round_notes(self, summary):
        return (f", ESS {summary['ess']:.0f}, proposal {summary['proposal_seconds']:.1f}s",
                f", weights {summary['weight_seconds']:.1f}s")

    # the methods' hooks ------------------------------------------------------

    def draw_from_previous(self, network, n, seed):
        """Round r >= 1: (theta (n, d), log-normaliser of q_r, summary entries ``draw_keys``)."""
        raise NotImplementedError

    def training_weights(self, inference, r, seed):
        """(sample_weights or None, summary entries) for the pooled rows of ``inference``."""
        return None, {}

    def round_posterior(self, network, n, seed):
        """(the round's posterior, summary entries)."""
        raise NotImplementedError
