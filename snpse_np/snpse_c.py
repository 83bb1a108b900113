"""SNPSE-C: sequential NPSE with an atomic-free proposal correction in the score (Sharrock et al.
2024, App. C; the score analogue of APT / SNPE-C, Greenberg et al. 2019). EXPERIMENTAL.

The paper proposes it, reports that it "failed to provide meaningful results (C2ST ≈ 1)" on SLCP
and GLU (App. C.5) and recommends TSNPSE; it is not in the authors' released code. It is here for
comparison (benchmarks/bench_sequential_variants.py, docs/sequential_variants.md). Use ``TSNPSE``
for inference.

Set-up (as SNPSE-A/B, ``snpse_ab``; rounds counted from 0). Round 0 simulates n_0 prior draws;
round r >= 1 draws n_r parameters from the previous round's posterior estimate at x_o. All rounds
are pooled, so round r trains on draws from

    p~^r(theta) = (n_0 / N_r) p(theta) + sum_{s=1}^{r} (n_s / N_r) q_s(theta),   N_r = n_0 + ... + n_r

(counts of parameters DRAWN: a failed simulation removes the same fraction from every component,
see ``snpse_ab``), and the plain loss would learn the proposal posterior p~^r(theta | x).

The correction (paper App. C, eq. for s~^r). Parameterise the score that the plain DSM loss
trains on the pooled data as

    s~^r(theta_t, x, t) = s_psi(theta_t, x, t) + grad log p~_t^r(theta_t) - grad log p_t(theta_t)
                          [+ grad log p~_t^r(x | theta_t) - grad log p_t(x | theta_t)],

p_t and p~_t^r the prior and the proposal diffused by the SDE (transition N(alpha_t theta_0,
sigma_t^2 I)). The likelihood-score terms in brackets are intractable and DROPPED (the paper's
practical version: they vanish at t = 0 and approximately at t = T). The loss then makes s~^r the
score of p~_t^r(theta_t | x), so s_psi learns the score of the bridge

    p_t^{r,seq}(theta_t | x) ∝ (p_t(theta_t) / p~_t^r(theta_t)) p~_t^r(theta_t | x),

which is the posterior p(theta | x) at t = 0 (p~^r(theta | x) ∝ p~^r(theta) p(x | theta)) but not
the diffused posterior at t > 0. The bridge is not the marginal of a diffusion, so the reverse SDE
and the probability-flow ODE follow the wrong path: s_psi must be sampled by annealed Langevin
dynamics (``sampler="ald"``, ``sampling.annealed_langevin``), which only needs each level's score
and that the last level (t_min ≈ 0) is the target.

The proposal's perturbed score (the paper's option (iii): a surrogate with a closed-form perturbed
score). In the network's z-scored theta space z = (theta - mean) / std (``theta_std``, fixed at
train time):

    p~^r ≈ w_0 p + (1 - w_0) g,      w_0 = n_0 / N_r,

p the prior in z space (``iid.diffused_prior``: Gaussian and box priors exact, others a fitted
diagonal mixture) and g a K-component diagonal Gaussian mixture (``iid.MixtureDiffusedPrior.fit``)
fitted to the pooled parameters of rounds >= 1, draws of the later components. Diffused,

    p~_t = w_0 p_t + (1 - w_0) g_t,     g_t = sum_k pi_k N(alpha mu_k, alpha^2 v_k + sigma^2),
    c(z, t) = grad log p~_t - grad log p_t = rho_g (grad log g_t - grad log p_t),
    rho_g = (1 - w_0) g_t / (w_0 p_t + (1 - w_0) g_t)          (computed in log space),

with log p_t closed-form: Gaussian N(alpha m, alpha^2 C + sigma^2 I); box U(a, b) per dimension
log[Phi((alpha b - z)/sigma) - Phi((alpha a - z)/sigma)] - log(alpha (b - a)), the normal-CDF
difference taken stably in the tails (``log_ndtr_diff``, compiled on the training path); a fitted prior mixture its mixture
density. In round 0 (prior draws only) c = 0 exactly and the network is a plain NPSE.

Training adds c to the network's score in the DSM loss (``NPSE._added_score``, the hook NLSE uses:
the target becomes z + sigma c, ``npse.target_shift``); the returned posterior is the network's
plain ``ScorePosterior`` (s_psi, no correction at sampling time: the bridge is the posterior at
t = 0 only). SAMPLE IT WITH ``sampler="ald"``: ``ScorePosterior.sample``'s default ("ode") follows
the probability-flow ODE of s_psi, a different distribution; ``log_prob`` (also the ODE) is not
the posterior's density either.

Limits (why the paper found C2ST ≈ 1, and what is approximate here):
  - the dropped likelihood-score terms: the bridge is only approximately what the loss targets at
    intermediate t, and the ALD levels between t = 1 and t_min follow it;
  - the surrogate: a diagonal Gaussian mixture with K components is a rough density for the later
    rounds' posterior draws (correlated or curved posteriors, e.g. SLCP, need many components),
    and its error enters the correction at every t; the prior part is exact only for Gaussian and
    box priors;
  - annealed Langevin with the signal-to-noise step is itself approximate (a discretisation bias
    and the lag of the annealing, ``sampling.annealed_langevin``) and needs hundreds of levels;
  - in the prior's tails the correction's two scores differ by much (a box prior's p_t falls as
    exp(-d^2 / 2 sigma^2) outside the box), so c, and the target shift sigma c, are large there.

References: Sharrock, Simons, Liu, Beaumont, "Sequential Neural Score Estimation", ICML 2024,
Sec. 3.2 and App. C; Greenberg, Nonnenmacher, Macke, "Automatic Posterior Transformation for
likelihood-free inference", ICML 2019 (APT / SNPE-C); Song & Ermon 2019 (annealed Langevin).

Usage:

    run = SNPSEC(prior, simulator, x_o)
    posterior = run.run(num_simulations=3000, num_rounds=3)
    samples = posterior.sample(1000, sampler="ald", seed=0)   # sampler="ald", not the default
"""
import copy
import functools
import math
import time

import numpy as np

from .checks import integer
from .iid import BoxDiffusedPrior, GaussianDiffusedPrior, MixtureDiffusedPrior, diffused_prior, erfcx
from .npse import NPSE
from .rejection import draw_inside_prior
from .rng import as_generator, child_seed
from .rounds import RoundDriver, split_budget

_SQRT2 = math.sqrt(2.0)
_LOG2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------- log-densities in z space

def _marginal(sde, t, rows):
    """(alpha, sigma) as float64 (rows, 1) columns for one time or (rows,) per-row times."""
    t = np.broadcast_to(np.asarray(t, dtype=np.float64), (rows,))
    alpha, sigma = sde.marginal(t)
    return (np.asarray(alpha, dtype=np.float64).reshape(rows, 1),
            np.asarray(sigma, dtype=np.float64).reshape(rows, 1))


def _log_upper_tail(u):
    """log Q(u) = log(1 - Phi(u)) for u >= 0 (inf allowed: -inf), via erfcx: no underflow."""
    with np.errstate(divide="ignore"):
        return math.log(0.5) + np.log(erfcx(u / _SQRT2)) - 0.5 * u * u


def log_ndtr_diff(A, B):
    """log(Phi(B) - Phi(A)) elementwise for A < B (arrays of one shape, float64), stable in both tails.

    For 0 <= A < B: Phi(B) - Phi(A) = Q(A) - Q(B) with Q(u) = 0.5 erfcx(u / sqrt2) exp(-u^2 / 2),
    so log = log Q(A) + log(1 - Q(B) / Q(A)) and Q(B) / Q(A) = (erfcx(B/sqrt2) / erfcx(A/sqrt2))
    exp(-(B^2 - A^2) / 2) <= 1 never underflows the whole: e.g. A = 40, B = 41 (sigma = 1e-3 and a
    point 0.04 outside a box) is log 0.5 + log erfcx - 800 where the direct difference is 0.
    B <= 0 mirrors it (Phi(B) - Phi(A) = Q(-B) - Q(-A)). Mixed signs A < 0 < B: the difference is at
    least min(Phi(B) - 1/2, 1/2 - Phi(A)) > 0 and 1 - Q(B) - Q(-A) is computed directly.
    """
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    A, B = np.broadcast_arrays(A, B)
    out = np.empty(A.shape)
    right, left = A >= 0, B <= 0
    mid = ~(right | left)
    for mask, lo, hi in ((right, A, B), (left, -B, -A)):
        if np.any(mask):
            a, b = lo[mask], hi[mask]
            la, lb = _log_upper_tail(a), _log_upper_tail(b)
            with np.errstate(under="ignore"):
                out[mask] = la + np.log1p(-np.exp(lb - la))
    if np.any(mid):
        a, b = A[mid], B[mid]
        q = np.exp(_log_upper_tail(b)) + np.exp(_log_upper_tail(-a))
        out[mid] = np.log1p(-q)
    return out


@functools.lru_cache(maxsize=None)
def _compiled_log_ndtr_diff():
    """``log_ndtr_diff`` element by element in Numba (compiled on first use, once per process): the
    numpy version's 90-term erfcx series cost ~6 ms a call at 128 x 10 elements, more than a
    training step, and the box prior's log-density runs every step. Same mathematics; the tests
    compare the two."""
    import numba

    from ._truncnorm_numba import _erfcx

    log_half = math.log(0.5)

    @numba.njit
    def log_q(u):  # log Q(u) for 0 <= u < inf
        return log_half + math.log(_erfcx(u / _SQRT2)) - 0.5 * u * u

    @numba.njit
    def kernel(A, B, out):
        for i in range(A.size):
            a, b = A[i], B[i]
            if a >= 0.0 or b <= 0.0:
                lo, hi = (a, b) if a >= 0.0 else (-b, -a)
                la = log_q(lo)
                out[i] = la if math.isinf(hi) else la + math.log1p(-math.exp(log_q(hi) - la))
            else:
                qb = 0.0 if math.isinf(b) else math.exp(log_q(b))
                qa = 0.0 if math.isinf(a) else math.exp(log_q(-a))
                out[i] = math.log1p(-(qb + qa))

    def log_ndtr_diff_fast(A, B):
        A, B = np.broadcast_arrays(np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64))
        out = np.empty(A.shape)
        kernel(np.ascontiguousarray(A).ravel(), np.ascontiguousarray(B).ravel(), out.reshape(-1))
        return out

    return log_ndtr_diff_fast


def diffused_log_prob(prior_z, z, alpha, sigma):
    """log p_t(z) (B,) of a diffused prior in z space (``iid.GaussianDiffusedPrior``,
    ``BoxDiffusedPrior`` or ``MixtureDiffusedPrior``); z (B, d) float64, alpha and sigma (B, 1)."""
    if isinstance(prior_z, GaussianDiffusedPrior):
        return _gaussian_log_prob(prior_z.mean, prior_z.cov, z, alpha, sigma)
    if isinstance(prior_z, BoxDiffusedPrior):
        lo, hi = prior_z.low[None], prior_z.high[None]
        A, B = (alpha * lo - z) / sigma, (alpha * hi - z) / sigma
        return np.sum(_compiled_log_ndtr_diff()(A, B) - np.log(alpha * (hi - lo)), axis=1)
    if isinstance(prior_z, MixtureDiffusedPrior):
        return mixture_log_prob(prior_z.w, prior_z.mu, prior_z.v, z, alpha, sigma)
    raise ValueError(f"no log-density for a diffused prior of type {type(prior_z).__name__}")


def _gaussian_log_prob(mean, cov, z, alpha, sigma):
    """log N(z; alpha m, alpha^2 C + sigma^2 I) (B,), alpha/sigma (B, 1) per row (one Cholesky per
    distinct time: the training batch has B different times, a (B, d, d) stack)."""
    d = mean.size
    a, s = alpha[:, 0], sigma[:, 0]
    cov_t = (a * a)[:, None, None] * cov[None] + (s * s)[:, None, None] * np.eye(d)[None]
    chol = np.linalg.cholesky(cov_t)
    diff = z - alpha * mean[None]
    sol = np.linalg.solve(chol, diff[:, :, None])[:, :, 0]
    logdet = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=1, axis2=2)), axis=1)
    return -0.5 * (np.sum(sol * sol, axis=1) + logdet + d * _LOG2PI)


def mixture_log_prob(w, mu, v, z, alpha, sigma):
    """log sum_k w_k N(z; alpha mu_k, diag(alpha^2 v_k + sigma^2)) (B,): a diagonal Gaussian mixture
    (w (K,), mu and v (K, d)) diffused; z (B, d), alpha and sigma (B, 1). Log-sum-exp over k."""
    a3, s3 = alpha[:, :, None], sigma[:, :, None]  # (B, 1, 1)
    var_t = a3 * a3 * v[None] + s3 * s3  # (B, K, d)
    diff = z[:, None, :] - a3 * mu[None]
    with np.errstate(divide="ignore"):
        logk = np.log(w)[None] - 0.5 * np.sum(diff * diff / var_t + np.log(var_t) + _LOG2PI, axis=2)
    top = np.max(logk, axis=1, keepdims=True)
    return top[:, 0] + np.log(np.sum(np.exp(logk - top), axis=1))


def mixture_score(w, mu, v, z, alpha, sigma):
    """grad_z of ``mixture_log_prob`` (B, d)."""
    a3, s3 = alpha[:, :, None], sigma[:, :, None]
    var_t = a3 * a3 * v[None] + s3 * s3
    diff = z[:, None, :] - a3 * mu[None]
    with np.errstate(divide="ignore"):
        logk = np.log(w)[None] - 0.5 * np.sum(diff * diff / var_t + np.log(var_t), axis=2)
    r = np.exp(logk - np.max(logk, axis=1, keepdims=True))
    r /= np.sum(r, axis=1, keepdims=True)
    return -np.sum(r[:, :, None] * diff / var_t, axis=1)


def diffused_score(prior_z, z, alpha, sigma):
    """grad log p_t(z) (B, d) of a diffused prior in z space; alpha, sigma (B, 1). The box's is
    m_1 / sigma (truncated-normal mean, compiled ``_truncnorm_numba``: it runs every training step)."""
    if isinstance(prior_z, BoxDiffusedPrior):
        from ._truncnorm_numba import truncated_normal_moments
        m1, _ = truncated_normal_moments((alpha * prior_z.low[None] - z) / sigma,
                                         (alpha * prior_z.high[None] - z) / sigma)
        return m1 / sigma
    if isinstance(prior_z, GaussianDiffusedPrior):
        return prior_z.score(z, alpha[:, 0], sigma[:, 0])
    if isinstance(prior_z, MixtureDiffusedPrior):
        return mixture_score(prior_z.w, prior_z.mu, prior_z.v, z, alpha, sigma)
    raise ValueError(f"no score for a diffused prior of type {type(prior_z).__name__}")


class ProposalSurrogate:
    """The surrogate proposal p~ ≈ w_0 p + (1 - w_0) g in z space, diffused by ``sde`` (module
    docstring): ``log_prob(z, t)`` (B,), ``score(z, t)`` (B, d) of p~_t, ``prior_log_prob`` /
    ``prior_score`` of p_t, and ``correction(z, t)`` (B, d) = grad log p~_t - grad log p_t, the
    ``NPSE._added_score`` of SNPSE-C. z (B, d) host float64, t one float or (B,) per-row times.

    prior_z: the diffused prior (``iid.diffused_prior``); mixture: the fitted ``MixtureDiffusedPrior``
    g of the later rounds' parameters, or None (round 0: p~ = p, w_0 = 1, correction 0 exactly).
    """

    def __init__(self, prior_z, mixture, w0, sde):
        w0 = float(w0)
        if not 0.0 < w0 <= 1.0:
            raise ValueError(f"w0 (the prior's weight in the proposal) must lie in (0, 1], got {w0}")
        if mixture is None and w0 != 1.0:
            raise ValueError(f"w0 = {w0} < 1 needs the later rounds' mixture g")
        self.prior_z, self.mixture, self.w0, self.sde = prior_z, mixture, w0, sde

    def _z(self, z, t):
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 2:
            raise ValueError(f"z must have shape (B, d), got {z.shape}")
        return (z,) + _marginal(self.sde, t, z.shape[0])

    def prior_log_prob(self, z, t):
        z, a, s = self._z(z, t)
        return diffused_log_prob(self.prior_z, z, a, s)

    def prior_score(self, z, t):
        z, a, s = self._z(z, t)
        return diffused_score(self.prior_z, z, a, s)

    def _parts(self, z, a, s):
        """(log w_0 p_t, log (1 - w_0) g_t) (B,) each."""
        g = self.mixture
        return (math.log(self.w0) + diffused_log_prob(self.prior_z, z, a, s),
                math.log1p(-self.w0) + mixture_log_prob(g.w, g.mu, g.v, z, a, s))

    def _rho(self, z, a, s):
        """rho_g (B, 1): the g part's responsibility, a logistic of the log ratio (no overflow)."""
        lp, lg = self._parts(z, a, s)
        with np.errstate(over="ignore"):
            return (1.0 / (1.0 + np.exp(lp - lg)))[:, None]

    def log_prob(self, z, t):
        z, a, s = self._z(z, t)
        if self.mixture is None:
            return diffused_log_prob(self.prior_z, z, a, s)
        return np.logaddexp(*self._parts(z, a, s))

    def score(self, z, t):
        return self.prior_score(z, t) + self.correction(z, t)

    def correction(self, z, t):
        """c(z, t) = rho_g (grad log g_t - grad log p_t) (B, d); exactly 0 without later rounds."""
        z, a, s = self._z(z, t)
        if self.mixture is None:
            return np.zeros_like(z)
        g = self.mixture
        rho = self._rho(z, a, s)
        return rho * (mixture_score(g.w, g.mu, g.v, z, a, s) - diffused_score(self.prior_z, z, a, s))


# ----------------------------------------------------------------------------- training

class BridgeNPSE(NPSE):
    """``NPSE`` whose network learns SNPSE-C's bridge score s_psi (module docstring): the DSM loss
    trains s_psi + c with c = ``ProposalSurrogate.correction`` built from the pooled data at each
    ``train`` (in that call's z space and SDE).

    One ``append_simulations`` call is one round: the first call's rows are round 0's (prior
    draws), later calls' rows are draws from later proposals. ``round_drawn``: the parameters
    DRAWN per round (failed simulations included: the mixture weights), set by ``SNPSEC``; None
    uses the rows kept. components: the size K of the later rounds' mixture g. surrogate_seed:
    seeds the mixture fits (``child_seed(surrogate_seed, rounds)``: the NPSE's own generator is
    not touched, so round 0 trains bit for bit like a plain NPSE). After ``train``: ``surrogate``
    (None in round 0) and ``summary["w0"]``.
    """

    _fit_gaussian = False  # its network learns the bridge score, not the posterior's: the SDE's base stays

    def __init__(self, prior, sde="ve", *args, components=8, surrogate_seed=0, **kwargs):
        super().__init__(prior, sde, *args, **kwargs)
        if self.baseline is not None:
            raise ValueError("baseline: SNPSE-C's network learns a bridge score, not the posterior's: the Gaussian "
                             "baseline (a fit of theta given x) does not apply")
        self.components = integer(components, "components", minimum=1)
        self.surrogate_seed = integer(surrogate_seed, "surrogate_seed", minimum=0)
        self.round_rows = []  # rows kept per append_simulations call (= per round)
        self.round_drawn = None
        self.surrogate = None

    def append_simulations(self, theta, x, exclude_invalid_x=True, allow_outside_prior=False):
        before = sum(a.shape[0] for a in self._theta)
        super().append_simulations(theta, x, exclude_invalid_x, allow_outside_prior)
        self.round_rows.append(sum(a.shape[0] for a in self._theta) - before)
        return self

    def _proposal_weight(self):
        drawn = self.round_rows if self.round_drawn is None else list(self.round_drawn)
        if len(drawn) != len(self.round_rows) or min(drawn) < 0 or drawn[0] < 1:
            raise ValueError(f"round_drawn {drawn} must give one count per round appended "
                             f"({len(self.round_rows)}), the first >= 1")
        return drawn[0] / sum(drawn)

    def build_surrogate(self, theta_std):
        """The ``ProposalSurrogate`` of the pooled rows in ``theta_std``'s z space."""
        w0 = self._proposal_weight()
        prior_z = diffused_prior(self.prior, theta_std, seed=child_seed(self.surrogate_seed, 0))
        n0, later = self.round_rows[0], sum(self.round_rows[1:])
        if later == 0:  # round 0 only (or every later simulation failed): p~ = p
            return ProposalSurrogate(prior_z, None, 1.0, self.sde)
        theta, _ = self.get_simulations()
        z_later = theta_std.forward(theta[n0:]).astype(np.float64)
        g = MixtureDiffusedPrior.fit(z_later, self.components,
                                     seed=child_seed(self.surrogate_seed, len(self.round_rows)))
        return ProposalSurrogate(prior_z, g, w0, self.sde)

    def _added_score(self, theta_std):
        self.surrogate = self.build_surrogate(theta_std)
        # no later rounds: c = 0, and None trains exactly the plain NPSE (no target shift at all)
        return None if self.surrogate.mixture is None else self.surrogate.correction

    def train(self, *args, **kwargs):
        """As ``NPSE.train``; the returned ``ScorePosterior`` is s_psi's: sample it with sampler="ald"."""
        post = super().train(*args, **kwargs)
        self.summary.update(w0=self.surrogate.w0, surrogate_components=(
            0 if self.surrogate.mixture is None else int(self.surrogate.mixture.w.size)))
        return post


# ----------------------------------------------------------------------------- the rounds

class SNPSEC(RoundDriver):
    """SNPSE-C (paper App. C): the bridge score with a surrogate proposal, sampled by annealed
    Langevin. EXPERIMENTAL: the paper reports C2ST ≈ 1 and recommends ``TSNPSE``.

    Arguments as ``SNPSEB``: prior, simulator, x_o, sde, backend, seed, executor, show_progress,
    train_kwargs (to ``NPSE.train`` every round), ``npse_kwargs`` (to the NPSE); components: the
    size K of the surrogate's mixture g (>= 1). No workdir / resume.

    ``run`` returns the final network's ``ScorePosterior`` with default x = x_o. ITS ``sample``
    MUST BE CALLED WITH ``sampler="ald"``: the default probability-flow ODE follows s_psi as if it
    were a diffusion's marginal score, which it is not (module docstring); ``log_prob`` is not the
    posterior's density. Like SNPSE-B's, its draws may fall outside the prior's support
    (``reject_outside_prior=True`` drops them). Per-round summaries (``rounds``): ``w0`` (the
    prior's weight in the surrogate proposal, 1 in round 0), ``acceptance`` (in-prior fraction of
    the round's draws from the previous network, None in round 0), ``proposal_seconds``,
    ``train_seconds``, epochs.

    Seeds (``rounds``' uses): the round's draws (seed, r, 2), simulations (seed, r, 3), training
    (seed, r, 4); the surrogate's mixture fits child_seed(child_seed(seed, 0, 7), r + 1).
    """

    experimental = True

    def __init__(self, prior, simulator, x_o, sde="ve", backend=None, seed=0, executor=None,
                 show_progress=True, train_kwargs=None, components=8, **npse_kwargs):
        self.components = integer(components, "components", minimum=1)
        super().__init__(prior, simulator, x_o, sde=sde, backend=backend, seed=seed, executor=executor,
                         show_progress=show_progress, train_kwargs=train_kwargs, **npse_kwargs)
        self.network = None  # the last round's ScorePosterior
        self.sample_kwargs = dict(sampler="ald")
        self._drawn = []

    def run(self, num_simulations=3000, num_rounds=3, sample_kwargs=None):
        """Run the rounds; return the final round's ``ScorePosterior`` (default x = x_o), to be
        sampled with ``sampler="ald"`` (NOT the default "ode": see the class docstring).

        num_simulations are split evenly over num_rounds (``split_budget``). sample_kwargs go to
        the network's ``sample`` when round r >= 1 draws from round r-1's posterior at x_o; default
        ``dict(sampler="ald")`` (500 levels, one Langevin step each: ``posterior.SAMPLE_DEFAULTS``).
        """
        per_round = split_budget(num_simulations, num_rounds)
        if sample_kwargs is not None and not isinstance(sample_kwargs, dict):
            raise ValueError(f"sample_kwargs must be a dict, got {type(sample_kwargs).__name__}")
        self.sample_kwargs = dict(dict(sampler="ald"), **(sample_kwargs or {}))
        self._drawn = list(per_round)
        inference = BridgeNPSE(self.prior, sde=copy.deepcopy(self.sde), backend=self.backend,
                               seed=child_seed(self.seed, 0), show_progress=self.show_progress,
                               components=self.components, surrogate_seed=child_seed(self.seed, 0, 7),
                               **self.npse_kwargs)
        self.network = None
        return self.run_rounds(inference, per_round)

    # the RoundDriver hooks ---------------------------------------------------

    def draw_round(self, r, n, seed):
        t0 = time.perf_counter()
        if r == 0:
            theta, acceptance = self.prior.sample(n, seed=seed), None
        else:
            theta, acceptance = self.draw_from_previous(self.network, n, seed)
        return theta, dict(acceptance=acceptance, proposal_seconds=time.perf_counter() - t0)

    def draw_from_previous(self, network, n, seed):
        """n draws (n, d) from ``network`` at x_o (ALD by default) inside the prior support, and the
        in-prior fraction of all candidates drawn (``rejection.draw_inside_prior``, as ``SNPSEB``)."""
        rng = as_generator(seed)
        return draw_inside_prior(n, self.prior,
                                 lambda m: network.sample(m, x=self.x_o, seed=rng, **self.sample_kwargs))

    def train_round(self, r, inference, n):
        # the mixture weights count the parameters drawn (failed simulations too), see snpse_ab
        inference.round_drawn = self._drawn[:r + 1]
        self.network = inference.train(**self.train_kwargs).set_default_x(self.x_o)
        return self.network, dict(w0=inference.summary["w0"])

    def round_notes(self, summary):
        acc = summary["acceptance"]
        return (f", w0 {summary['w0']:.3f}" + ("" if acc is None else f", acceptance {acc:.3f}"),
                f", proposal {summary['proposal_seconds']:.1f}s")
