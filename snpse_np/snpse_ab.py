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

Usage:

    posterior = SNPSEA(prior, simulator, x_o).run(num_simulations=3000, num_rounds=3)
    samples = posterior.sample(1000, seed=0)
"""
import math
import sys
import time

import numpy as np

from .npse import NPSE, effective_sample_size
from .rng import as_generator, child_seed
from .simulate import simulate


# ---------------------------------------------------------------------------- log-space helpers

def _logsumexp(a, axis=None):
    """log sum exp(a) along ``axis``; -inf where every term is -inf."""
    a = np.asarray(a, dtype=np.float64)
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return np.squeeze(out, axis=axis) if axis is not None else float(out.ravel()[0])


def log_mean_exp(log_w):
    """log of the mean of exp(log_w) (m,): the Monte Carlo normaliser estimate, in log space."""
    log_w = np.asarray(log_w, dtype=np.float64)
    return _logsumexp(log_w) - math.log(log_w.size)


def log_weights_ess(log_w):
    """Kish's effective sample size of weights given as logs (m,); 0 if every weight is 0."""
    log_w = np.asarray(log_w, dtype=np.float64)
    if not np.any(np.isfinite(log_w)):
        return 0.0
    return effective_sample_size(np.exp(log_w - np.max(log_w)))


def resample(theta, log_w, n, seed=None):
    """n rows of theta (m, d) drawn with replacement in proportion to exp(log_w) (m,) (multinomial)."""
    log_w = np.asarray(log_w, dtype=np.float64)
    if not np.any(np.isfinite(log_w)):
        raise RuntimeError(f"all {log_w.size} importance weights are zero (every draw fell outside the "
                           f"prior support): nothing to resample")
    w = np.exp(log_w - np.max(log_w))
    idx = as_generator(seed).choice(log_w.size, size=int(n), replace=True, p=w / w.sum())
    return theta[idx]


# ---------------------------------------------------------------------------- the proposal mixture

class ProposalMixture:
    """log p~^k(theta) = log sum_{s<=k} (n_s / N_k) q_s(theta), the density the pooled data came from.

    q_0 is the prior. Component s >= 1 comes from network s-1 (a ``ScorePosterior``, evaluated at
    x_o with ``log_prob_kwargs``) and its log-normaliser log_norm_{s-1}:
      reweighted=False (SNPSE-B): log q_s = log p_psi^{s-1}(theta | x_o) - log a_{s-1};
      reweighted=True  (SNPSE-A): log q_s = log p~_psi^{s-1}(theta | x_o) + log p - log p~^{s-1} - log Z_{s-1}.
    Immutable: ``extended`` returns the next round's mixture, so a round's posterior keeps the
    mixture its network was trained on. The recursion of SNPSE-A (q_s needs p~^{s-1}) is
    evaluated bottom-up, every network once per call, so the cost is k PF-ODE log-densities.
    """

    def __init__(self, prior, x_o, counts, reweighted, log_prob_kwargs=None, components=()):
        self.prior, self.x_o = prior, np.asarray(x_o, dtype=np.float64).ravel()
        self.reweighted = bool(reweighted)
        self.log_prob_kwargs = dict(log_prob_kwargs or {})
        self.counts = tuple(int(c) for c in counts)  # n_0 .. n_k, parameters drawn per round
        self.components = tuple(components)  # ((network, log_norm), ...) for q_1 .. q_k
        if len(self.counts) != len(self.components) + 1:
            raise ValueError(f"need one count per round: {len(self.counts)} counts for "
                             f"{len(self.components) + 1} rounds")
        if any(c < 1 for c in self.counts):
            raise ValueError(f"every round needs at least one simulation, got counts {self.counts}")
        self.dim = prior.dim

    def extended(self, count, network, log_norm):
        """The mixture with one more round of ``count`` draws from network's (normalised) posterior."""
        return ProposalMixture(self.prior, self.x_o, (*self.counts, count), self.reweighted,
                               self.log_prob_kwargs, (*self.components, (network, float(log_norm))))

    @property
    def log_normalizers(self):
        """log a_s (SNPSE-B) or log Z_s (SNPSE-A) of the components q_1 .. q_k."""
        return [c[1] for c in self.components]

    def log_prob(self, theta, seed=None):
        """log p~^k(theta) for theta (n, d) -> (n,); -inf outside the prior support."""
        theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        rng = as_generator(seed)
        out = np.full(theta.shape[0], -np.inf)
        inside = np.flatnonzero(self.prior.support_contains(theta))
        if inside.size == 0:
            return out
        th = theta[inside]
        log_p = self.prior.log_prob(th)
        log_q = [log_p]
        log_mix = log_p  # p~^0 = q_0 = p
        for s, (network, log_norm) in enumerate(self.components, start=1):
            log_net = network.log_prob(th, x=self.x_o, seed=rng, **self.log_prob_kwargs)
            if self.reweighted:
                log_q.append(log_net + log_p - log_mix - log_norm)
            else:
                log_q.append(log_net - log_norm)
            counts = np.asarray(self.counts[:s + 1], dtype=np.float64)
            log_mix = _logsumexp(np.stack(log_q) + np.log(counts / counts.sum())[:, None], axis=0)
        out[inside] = log_mix
        return out


# ---------------------------------------------------------------------------- SNPSE-A's posterior

class SIRPosterior:
    """p_psi(theta | x) = p(theta) / p~(theta) * p~_psi(theta | x) / Z(x), sampled by SIR. EXPERIMENTAL.

    network: a ``ScorePosterior`` trained with the plain loss on draws from p~, so it estimates
    the proposal posterior p~_psi(theta | x). proposal: anything with ``log_prob(theta, seed=None)``
    (n, d) -> (n,) giving the NORMALISED log p~ (a ``ProposalMixture``). oversample: draws per
    returned sample, M' = oversample * n. sample_kwargs go to ``network.sample``.

    ``sample`` draws M' from the network, weights them by h = p / p~ and resamples n with
    replacement; it sets ``ess`` (Kish's effective sample size of those M' weights) and
    ``num_draws``. ``log_prob`` needs Z(x) = E_{p~_psi}[h]: estimated once per x from
    ``num_normalizer_samples`` draws and cached, or set from existing draws by
    ``set_log_normalizer`` (SNPSE-A does that with its SIR draws). The correction holds for any x
    (the network is amortised), but p~ is built around x_o, so it is accurate near x_o only.
    Sampling costs M' network samples plus the proposal's log-density at M' points.
    """

    experimental = True

    def __init__(self, network, proposal, oversample=10, num_normalizer_samples=10_000, sample_kwargs=None):
        if oversample < 1:
            raise ValueError(f"oversample must be >= 1, got {oversample}")
        self.network, self.proposal = network, proposal
        self.prior = network.prior
        self.oversample = float(oversample)
        self.num_normalizer_samples = int(num_normalizer_samples)
        self.sample_kwargs = dict(sample_kwargs or {})
        self._log_z = {}  # x.tobytes() -> log Z(x)
        self.ess, self.num_draws = None, None

    @property
    def dim_theta(self):
        return self.network.dim_theta

    @property
    def dim_x(self):
        return self.network.dim_x

    @property
    def default_x(self):
        return self.network.default_x

    def set_default_x(self, x):
        self.network.set_default_x(x)
        return self

    def _check_x(self, x):
        return self.network._check_x(x)

    def log_weights(self, theta, seed=None):
        """log h = log p(theta) - log p~(theta) for theta (m, d) -> (m,); -inf outside the prior."""
        theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        out = np.full(theta.shape[0], -np.inf)
        inside = np.flatnonzero(self.prior.support_contains(theta))
        if inside.size:
            out[inside] = self.prior.log_prob(theta[inside]) - self.proposal.log_prob(theta[inside], seed=seed)
        return out

    def weighted_draws(self, m, x=None, seed=None, **sample_kwargs):
        """m draws from the network at x and their log SIR weights: ((m, d), (m,))."""
        x = self._check_x(x)
        rng = as_generator(seed)
        theta = self.network.sample(int(m), x=x, seed=rng, **{**self.sample_kwargs, **sample_kwargs})
        return theta, self.log_weights(theta, seed=rng)

    def sample(self, n, x=None, seed=None, oversample=None, **sample_kwargs):
        """(n, d) samples by sampling-importance-resampling from M' = oversample * n network draws."""
        if int(n) != n or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        rng = as_generator(seed)
        m = max(1, int(math.ceil((self.oversample if oversample is None else oversample) * n)))
        theta, log_w = self.weighted_draws(m, x=x, seed=rng, **sample_kwargs)
        self.ess, self.num_draws = log_weights_ess(log_w), m
        return resample(theta, log_w, int(n), rng)

    def set_log_normalizer(self, x, log_w):
        """Set Z(x) to the mean of the weights exp(log_w) (m,) of draws from the network at x."""
        x = self._check_x(x)
        self._log_z[x.tobytes()] = log_mean_exp(log_w)

    def log_normalizer(self, x=None, seed=None):
        """log Z(x), the Monte Carlo estimate (drawn on first use for this x, then cached)."""
        x = self._check_x(x)
        if x.tobytes() not in self._log_z:
            _, log_w = self.weighted_draws(self.num_normalizer_samples, x=x, seed=seed)
            self.set_log_normalizer(x, log_w)
        return self._log_z[x.tobytes()]

    def log_prob(self, theta, x=None, seed=None, **log_prob_kwargs):
        """log p_psi(theta | x) for theta (n, d) -> (n,); -inf outside the prior support.

        log_prob_kwargs go to the network's ``log_prob`` (the proposal uses its own settings).
        """
        theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        x = self._check_x(x)
        rng = as_generator(seed)
        out = self.network.log_prob(theta, x=x, seed=rng, **log_prob_kwargs)
        ok = np.flatnonzero(np.isfinite(out))
        if ok.size:
            out[ok] += self.log_weights(theta[ok], seed=rng) - self.log_normalizer(x, seed=rng)
        return out

    def __repr__(self):
        return f"SIRPosterior(network={self.network!r}, oversample={self.oversample:g}) [experimental]"


# ---------------------------------------------------------------------------- the rounds

class _CorrectedSequential:
    """The round loop shared by SNPSE-A and SNPSE-B; subclasses fill in the three hooks."""

    experimental = True
    reweighted = None  # does the proposal mixture hold reweighted (SNPSE-A) components?
    _draw_keys = ()  # summary entries of _draw (None in round 0)

    def __init__(self, prior, simulator, x_o, sde="ve", backend=None, seed=0, executor=None,
                 show_progress=True, train_kwargs=None, **npse_kwargs):
        self.prior, self.simulator = prior, simulator
        self.x_o = np.asarray(x_o, dtype=np.float64).ravel()
        self.sde, self.backend, self.seed = sde, backend, int(seed)
        self.executor, self.show_progress = executor, show_progress
        self.train_kwargs = dict(train_kwargs or {})
        self.npse_kwargs = npse_kwargs
        self.rounds = []  # per-round summaries
        self.posterior = None
        self.mixture = None

    def run(self, num_simulations=3000, num_rounds=3, sample_kwargs=None, log_prob_kwargs=None):
        """Run the rounds; return the final round's posterior (default x set to x_o).

        num_simulations are split evenly over num_rounds. sample_kwargs go to every network
        ``sample`` call (e.g. ``dict(method="rk4", steps=20)``), log_prob_kwargs to every network
        ``log_prob`` inside the proposal mixture. Costs grow with the rounds (module docstring).
        """
        if num_rounds < 1 or num_simulations < num_rounds:
            raise ValueError("need num_rounds >= 1 and num_simulations >= num_rounds")
        per_round = [num_simulations // num_rounds + (1 if r < num_simulations % num_rounds else 0)
                     for r in range(num_rounds)]
        self.sample_kwargs = dict(sample_kwargs or {})
        inference = NPSE(self.prior, sde=self.sde, backend=self.backend, seed=child_seed(self.seed, 0),
                         show_progress=self.show_progress, **self.npse_kwargs)
        self.rounds, self.posterior = [], None
        self.mixture = ProposalMixture(self.prior, self.x_o, per_round[:1], self.reweighted, log_prob_kwargs)
        network = None
        for r in range(num_rounds):
            t0 = time.perf_counter()
            info = dict.fromkeys(self._draw_keys)
            if r == 0:
                theta = self.prior.sample(per_round[0], seed=child_seed(self.seed, r, 2))
            else:
                theta, log_norm, info = self._draw(network, per_round[r], child_seed(self.seed, r, 2))
                self.mixture = self.mixture.extended(per_round[r], network, log_norm)
            t_prop = time.perf_counter() - t0
            t0 = time.perf_counter()
            x, report = simulate(self.simulator, theta, executor=self.executor, seed=child_seed(self.seed, r, 3),
                                 progress=self.show_progress, return_report=True)
            t_sim = time.perf_counter() - t0
            ok = np.all(np.isfinite(x), axis=1)
            n_bad = int(np.sum(~ok))
            inference.append_simulations(theta[ok], x[ok])
            t0 = time.perf_counter()
            weights, winfo = self._training_weights(inference, r, child_seed(self.seed, r, 5))
            t_weights = time.perf_counter() - t0
            inference.rng = np.random.default_rng(child_seed(self.seed, r, 4))
            network = inference.train(sample_weights=weights, **self.train_kwargs).set_default_x(self.x_o)
            t0 = time.perf_counter()
            self.posterior, pinfo = self._posterior(network, per_round[r], child_seed(self.seed, r, 6))
            t_post = time.perf_counter() - t0
            s = inference.summary
            summary = dict(round=r + 1, simulations=per_round[r], failed_simulations=n_bad,
                           simulator_errors=report.first_error, total_simulations=int(sum(per_round[:r + 1])),
                           **info, **winfo, **pinfo, log_normalizers=self.mixture.log_normalizers,
                           proposal_seconds=t_prop, simulation_seconds=t_sim, weight_seconds=t_weights,
                           posterior_seconds=t_post, epochs=s["epochs"], train_seconds=s["train_seconds"],
                           best_val_loss=s["best_val_loss"])
            self.rounds.append(summary)
            self._say(f"round {r + 1}/{num_rounds}: {per_round[r]} simulations ({n_bad} failed), "
                      f"ESS {summary['ess']:.0f}, proposal {t_prop:.1f}s, simulation {t_sim:.1f}s, "
                      f"weights {t_weights:.1f}s, training {s['epochs']} epochs {s['train_seconds']:.1f}s")
        return self.posterior

    # hooks -----------------------------------------------------------------

    def _draw(self, network, n, seed):
        """Round r >= 1: (theta (n, d), log-normaliser of q_r, summary entries)."""
        raise NotImplementedError

    def _training_weights(self, inference, r, seed):
        """(sample_weights or None, summary entries) for the pooled rows of ``inference``."""
        return None, {}

    def _posterior(self, network, n, seed):
        """(the round's posterior, summary entries)."""
        raise NotImplementedError

    def _say(self, text):
        if self.show_progress:
            print(text, file=sys.stderr, flush=True)


class SNPSEA(_CorrectedSequential):
    """SNPSE-A (paper Sec. 3.2, App. C): plain loss on pooled data, SIR correction. EXPERIMENTAL.

    The paper found it worse than TSNPSE and recommends TSNPSE; see the module docstring for the
    maths and its limits. ``run`` returns a ``SIRPosterior``. Per-round summaries (``rounds``):
    ``ess`` and ``ess_fraction`` of the SIR weights of the round's posterior (over its M' =
    oversample * n_r network draws), ``log_normalizer`` (its log Z_r), ``log_normalizers`` (log Z_s
    of the mixture's components so far), simulations, epochs, train and other seconds.
    """

    reweighted = True

    def run(self, num_simulations=3000, num_rounds=3, oversample=10, sample_kwargs=None, log_prob_kwargs=None):
        """As ``_CorrectedSequential.run``; oversample: network draws per SIR sample (M' / n), in the
        rounds and as the returned posterior's default."""
        if oversample < 1:
            raise ValueError(f"oversample must be >= 1, got {oversample}")
        self.oversample = float(oversample)
        return super().run(num_simulations, num_rounds, sample_kwargs, log_prob_kwargs)

    def _draw(self, network, n, seed):
        # q_r = the previous round's SIR posterior: resample its weighted draws, whose mean weight
        # was its normaliser Z_{r-1} (set in _posterior), so q_r is a normalised density
        theta, log_w = self._draws
        return resample(theta, log_w, n, seed), self.posterior.log_normalizer(self.x_o), {}

    def _posterior(self, network, n, seed):
        post = SIRPosterior(network, self.mixture, oversample=self.oversample, sample_kwargs=self.sample_kwargs)
        m = int(math.ceil(self.oversample * n))
        self._draws = post.weighted_draws(m, x=self.x_o, seed=seed)
        post.set_log_normalizer(self.x_o, self._draws[1])
        ess = log_weights_ess(self._draws[1])
        return post, dict(ess=ess, ess_fraction=ess / m, log_normalizer=post.log_normalizer(self.x_o))


class SNPSEB(_CorrectedSequential):
    """SNPSE-B (paper Sec. 3.2, App. C): importance-weighted DSM loss. EXPERIMENTAL.

    The paper found it worse than TSNPSE (high-variance weights, unstable training) and recommends
    TSNPSE; see the module docstring. ``run`` returns the final network's ``ScorePosterior`` (as for
    TSNPSE, its ``sample`` keeps draws outside the prior unless ``reject_outside_prior=True``). Per-round
    summaries (``rounds``): ``ess`` and ``ess_fraction`` of the training weights p / p~^r over all
    pooled rows, ``acceptance`` (in-prior fraction of the round's draws from the previous
    posterior, its log is that component's log a), ``log_normalizers``, epochs, seconds.
    """

    reweighted = False
    _draw_keys = ("acceptance",)

    def _draw(self, network, n, seed):
        # draws outside the prior are rejected, so q_r is the network density on the prior support
        # divided by its in-prior mass a; the acceptance fraction is its Monte Carlo estimate
        rng = as_generator(seed)
        kept, have, drawn = [], 0, 0
        while have < n:
            if drawn >= 100 * n:
                raise RuntimeError(f"only {have} of {drawn} posterior draws fell inside the prior support; "
                                   f"the posterior may be poorly trained")
            rate = have / drawn if drawn else 1.0
            m = int(min(max((n - have) * 1.2 / max(rate, 1e-2), 64), 100 * n - drawn))
            cand = network.sample(m, x=self.x_o, seed=rng, **self.sample_kwargs)
            ok = cand[self.prior.support_contains(cand)]
            kept.append(ok)
            have, drawn = have + ok.shape[0], drawn + m
        acceptance = have / drawn
        return np.concatenate(kept)[:n], math.log(acceptance), dict(acceptance=acceptance)

    def _training_weights(self, inference, r, seed):
        theta, _ = inference.get_simulations()
        n = theta.shape[0]
        if r == 0:  # the prior is the proposal: all weights 1
            return None, dict(ess=float(n), ess_fraction=1.0)
        log_w = self.prior.log_prob(theta) - self.mixture.log_prob(theta, seed=seed)
        ess = log_weights_ess(log_w)
        # any positive scale works (they are self-normalised): largest 1, and a floor of e^-700
        # (effectively zero) so that no weight underflows to 0, which NPSE.train rejects
        return np.exp(np.maximum(log_w - np.max(log_w), -700.0)), dict(ess=ess, ess_fraction=ess / n)

    def _posterior(self, network, n, seed):
        return network, {}
