"""NLSE: neural likelihood score estimation (Sharrock et al. 2024, App. B).

Instead of the posterior score, learn the score of the (perturbed) likelihood,

    s_lik(theta_t, x, t) ~ grad log p_t(theta_t | x) - grad log p_t(theta_t),

and form the posterior score as

    s_post(theta_t, x, t) = s_lik(theta_t, x, t) + grad log p_t(theta_t),        (1)

with p_t the prior diffused by the SDE's transition N(alpha_t theta_0, sigma_t^2 I). At t = 0 (1)
is Bayes' rule grad log p(theta | x) = grad log p(x | theta) + grad log p(theta); at t > 0 the
network learns exactly the difference of the two perturbed scores, so (1) holds by construction.

Training (App. B, eq. for L_NLSE): denoising score matching of s_post, i.e. of s_lik + g with
g = grad log p_t fixed. In the package's preconditioned form s_lik = out / c_out (``score``), with
lambda_t = sigma_t^2 and c = sigma / c_out, the row loss is

    mean_j (sigma (out_j / c_out + g_j(theta_t, t)) + z_j)^2 = mean_j (c out_j + z'_j)^2,
    z' = z + sigma_t g(theta_t, t),   theta_t = alpha_t theta_0 + sigma_t z,

the NPSE loss with a shifted target (the perturbation still uses z): ``npse.TrainStep`` with
``added_score`` = g (``npse.target_shift`` forms sigma g on the host; one more (B, d) slot in the
step's packed draws).

The diffused prior score g, in the network's z-scored theta space (``iid.diffused_prior``):

- ``"analytic"`` (Gaussian ``Normal``/``MultivariateNormal`` and box ``BoxUniform`` priors, every
  SDE here; the paper's App. B.2.1 gives the VE case, alpha = 1):
    * Gaussian N(m, C): p_t = N(alpha m, alpha^2 C + sigma^2 I), score -(alpha^2 C + sigma^2 I)^-1
      (z - alpha m), Laplacian -tr (alpha^2 C + sigma^2 I)^-1;
    * box U(a, b): p_t(z) = prod_i [Phi((alpha b_i - z_i)/sigma) - Phi((alpha a_i - z_i)/sigma)]
      / (alpha (b_i - a_i)) (products of normal-CDF differences), score m_1 / sigma and Laplacian
      sum_i (v_i - 1) / sigma^2, with m_1, v the mean and variance of the standard normal truncated
      to [(alpha a_i - z_i)/sigma, (alpha b_i - z_i)/sigma] (``iid.truncated_normal_moments``:
      z - alpha theta_0 = -sigma u given z_t, so Cov(alpha theta_0 | z) = sigma^2 v and the Hessian
      of log p_t is Cov / sigma^4 - 1 / sigma^2). Evaluated every training step, so compiled
      (``_truncnorm_numba``; the numpy oracle cost ~10 ms a call at B = 128, more than the step).
- ``"learned"`` (any prior; the paper's Alg. 2): an unconditional score network trained by DSM on
  fresh prior draws, in the same z space and with the same SDE as the likelihood network (so its
  score is exactly the g of (1)); ``train_prior_score``. It is the package's ``ScoreNetwork`` with
  ONE constant x column (x = 0): the training step, the score field and the exact-trace
  divergence of the posterior network are reused unchanged, at the cost of one constant
  x-embedding (computed once per field; a dedicated x-free network would save nothing measurable).
  Prior draws are unlimited, so each step takes new ones (no validation split, no over-fitting);
  the budget is the package's default for the number of simulations.
- ``"auto"``: analytic where the prior has a closed form, learned otherwise.

Sampling and log-densities run the existing samplers on the field (1) (``NLSEField``): the
probability-flow ODE's divergence adds the prior's Laplacian (analytic) or the prior network's
exact trace (learned) to the likelihood network's.

Files (``NLSEPosterior.save``, ``snpse_np.load``): the NPSE file (likelihood network, SDE,
standardisation, prior) with meta["kind"] = "nlse" and meta["nlse"] = {"prior_score": ...}.
"analytic" stores nothing more: the score is a function of the stored prior, theta_std and SDE,
rebuilt as at training (``diffused_prior``). "learned" adds the prior network's architecture and
score settings (meta) and its weights (array ``nlse_prior_params``); its SDE is the likelihood
network's (one SDE, as (1) needs), stored once.

The paper (Fig. 5): NLSE is similar to NPSE with an analytic prior score and clearly worse with a
learned one. Measured here: docs/nlse.md.

Reference: Sharrock, Simons, Liu, Beaumont, "Sequential Neural Score Estimation", ICML 2024,
App. B (NLSE, Alg. 2); Song et al. 2021 (DSM, probability-flow ODE).
"""
import math

import numpy as np

from .checks import integer, real
from .iid import BoxDiffusedPrior, GaussianDiffusedPrior, diffused_prior
from .nn import ScoreNetwork
from .npse import NPSE, TrainStep
from .optim import Adam
from .posterior import ScorePosterior
from .progress import Progress
from .rng import as_generator
from .schedule import LRSchedule, auto_ema_decay, auto_learning_rate, default_steps
from .score import Field, ScoreField, ScoreModel
from .time_sampling import TimeSampler

PRIOR_SCORES = ("auto", "analytic", "learned")


def has_closed_form(prior):
    """True for the priors whose diffused score is exact here (``Normal``, ``MultivariateNormal``,
    ``BoxUniform``: exact types, a subclass may change the density)."""
    from . import priors
    return type(prior) in (priors.Normal, priors.MultivariateNormal, priors.BoxUniform)


def _marginal(sde, t):
    """(alpha, sigma): floats for one time, float64 (B,) arrays for per-row times."""
    alpha, sigma = sde.marginal(np.asarray(t, dtype=np.float64))
    if np.ndim(t) == 0:
        return float(alpha), float(sigma)
    return alpha, sigma


class AnalyticPriorScore:
    """The exact diffused prior's score and Laplacian in z space (Gaussian or box prior).

    ``score(z, t)`` -> (B, d), ``laplacian(z, t)`` -> (B,) = div_z grad log p_t(z); z (B, d) host
    float64, t one float or (B,) per-row times. Host arithmetic in float64.
    """

    exact = True

    def __init__(self, diffused, sde):
        if not isinstance(diffused, (GaussianDiffusedPrior, BoxDiffusedPrior)):
            raise ValueError(f"no closed-form diffused prior score for {type(diffused).__name__}: "
                             "use prior_score='learned'")
        self.diffused, self.sde = diffused, sde

    def _box_moments(self, z, alpha, sigma):
        """(m_1, v) (B, d) of the standard normal truncated to [(alpha a - z)/sigma, (alpha b - z)/sigma]
        (compiled: ``_truncnorm_numba``, the hot path of every training step)."""
        from ._truncnorm_numba import truncated_normal_moments
        a, s = (v if np.ndim(v) == 0 else np.asarray(v)[:, None] for v in (alpha, sigma))
        return truncated_normal_moments((a * self.diffused.low - z) / s, (a * self.diffused.high - z) / s)

    def score(self, z, t):
        z = np.asarray(z, dtype=np.float64)
        alpha, sigma = _marginal(self.sde, t)
        if isinstance(self.diffused, BoxDiffusedPrior):
            m1, _ = self._box_moments(z, alpha, sigma)
            return m1 / (sigma if np.ndim(sigma) == 0 else sigma[:, None])
        return self.diffused.score(z, alpha, sigma)

    def laplacian(self, z, t):
        z = np.asarray(z, dtype=np.float64)
        alpha, sigma = _marginal(self.sde, t)
        if isinstance(self.diffused, BoxDiffusedPrior):
            _, v = self._box_moments(z, alpha, sigma)
            return np.sum(v - 1.0, axis=1) / np.asarray(sigma, dtype=np.float64) ** 2
        d = self.diffused.d
        if np.ndim(alpha) == 0:
            cov_t = alpha * alpha * self.diffused.cov + sigma * sigma * np.eye(d)
            return np.full(z.shape[0], -np.trace(np.linalg.inv(cov_t)))
        cov_t = (alpha ** 2)[:, None, None] * self.diffused.cov[None] + (sigma ** 2)[:, None, None] * np.eye(d)[None]
        return -np.trace(np.linalg.inv(cov_t), axis1=1, axis2=2)


class LearnedPriorScore:
    """An unconditional score network for the diffused prior (paper Alg. 2), in the likelihood
    network's z space and SDE: a ``ScoreNetwork`` with one constant x column (x = 0).

    ``score(z, t)`` -> (B, d) host float64 (the training target's g); ``field(rows, divergence,
    seed)`` -> a ``ScoreField`` for the samplers (with its exact or Hutchinson divergence).
    """

    exact = False

    def __init__(self, model, params, backend, dtype):
        self.model, self.params, self.backend, self.dtype = model, params, backend, np.dtype(dtype)
        self.xc = model.net.condition(backend, params, backend.to_device(np.zeros((1, 1), self.dtype)))
        self._fields = {}

    def field(self, rows, divergence=None, seed=None):
        return ScoreField(self.model, self.backend, self.params, self.xc, rows, self.dtype, divergence=divergence,
                          seed=seed)

    def score(self, z, t):
        rows = z.shape[0]
        if rows not in self._fields:
            self._fields[rows] = self.field(rows)
        be = self.backend
        s = self._fields[rows].score(be.to_device(np.ascontiguousarray(z, dtype=self.dtype)), t)
        return be.to_host(s).astype(np.float64)


def train_prior_score(prior, theta_std, sde, backend, steps, batch_size=128, learning_rate=2e-3, warmup_steps=200,
                      hidden=256, activation="silu", precondition="noise", time_input="sigma", floor=0.1,
                      dtype=np.float32, seed=None, show_progress=False, chunk_steps=500):
    """Alg. 2: DSM on prior draws z = theta_std.forward(prior.sample(...)) with ``sde`` (its VE
    sigma_max already fixed), ``steps`` Adam steps of ``batch_size`` rows, new draws every step
    (drawn ``chunk_steps`` steps at a time), cosine-annealed rate peaking at ``learning_rate``,
    weight EMA over 5% of the budget. Returns a ``LearnedPriorScore`` holding the EMA weights."""
    steps = integer(steps, "prior_score_steps", minimum=1)
    B = integer(batch_size, "batch_size", minimum=1)
    rng = as_generator(seed)
    be, dt = backend, np.dtype(dtype)
    d = int(prior.dim)
    net = ScoreNetwork.paper(d, 1, hidden, activation)
    model = ScoreModel(net, sde, precondition, time_input, floor)
    params = be.to_device(net.init(rng, dt))
    sched = LRSchedule(float(learning_rate), steps, min(int(warmup_steps), steps // 2), 0.0, "cosine")
    opt = Adam(be, params, sched.lr(0), ema_decay=auto_ema_decay(steps))
    step = TrainStep(model, be, opt, B, dt)
    x0 = be.to_device(np.zeros((B, 1), dt))
    times = TimeSampler(sde, "uniform")
    progress = Progress(show_progress)
    total = 0.0
    for k in range(steps):
        j = k % chunk_steps
        if j == 0:
            pool = be.to_device(theta_std.forward(prior.sample(chunk_steps * B, seed=rng)).astype(dt))
        opt.lr = sched.lr(k)
        loss = step(pool[j * B:(j + 1) * B], x0, times.sample(B, rng), rng.standard_normal((B, d)))
        if not math.isfinite(loss):
            raise FloatingPointError(f"prior-score training loss became {loss} at step {k + 1}; lower the "
                                     f"learning rate (now {learning_rate:g})")
        total += loss
        if (k + 1) % chunk_steps == 0:
            progress.update(f"prior score: step {k + 1}/{steps}  loss {total / chunk_steps:.4f}  "
                            f"{progress.elapsed:6.1f}s")
            total = 0.0
    progress.done(f"prior score: trained {steps} steps in {progress.elapsed:.1f}s")
    return LearnedPriorScore(model, opt.eval_params.copy(), be, dt)


class NLSEField(Field):
    """The posterior score (1) = likelihood network (``ScoreField`` ``lik``) + diffused prior score
    (``AnalyticPriorScore``, evaluated on the host, or a learned prior's ``ScoreField``), with the
    ``score.Field`` protocol (``score``, ``velocity``, ``velocity_div``).

    velocity_div: v = v_lik - (g^2/2) g_prior and div v = div v_lik - (g^2/2) Lap log p_t
    (analytic), or v = v_lik + v_prior - f theta and div v = div v_lik + div v_prior - d f
    (learned: both fields' velocities carry the drift f theta once each).
    """

    def __init__(self, lik, prior):
        self.lik, self.prior = lik, prior
        self.backend, self.sde, self.dtype = lik.backend, lik.sde, lik.dtype
        self.learned = isinstance(prior, Field)

    def _host(self, theta):
        return self.backend.to_host(theta).astype(np.float64)

    def score(self, theta, t):
        s = self.lik.score(theta, t)  # the likelihood field's buffer, scaled in place
        if self.learned:
            s += self.prior.score(theta, t)
        else:
            s += self.to_device(self.prior.score(self._host(theta), t))
        return s

    def velocity_div(self, theta, t):
        v, div = self.lik.velocity_div(theta, t)
        if self.learned:
            vp, divp = self.prior.velocity_div(theta, t)
            f = self.sde.drift_coef(t)
            d = theta.shape[1]
            v = v + vp - self.column(f) * theta
            div = div + divp - (float(d * f) if np.ndim(t) == 0 else self.to_device(d * f))
            return v, div
        z = self._host(theta)
        g = self.sde.diffusion(t)
        half_g2 = 0.5 * g * g
        v = v - self.column(half_g2) * self.to_device(self.prior.score(z, t))
        div = div - self.to_device(half_g2 * self.prior.laplacian(z, t))
        return v, div


class NLSEPosterior(ScorePosterior):
    """A ``ScorePosterior`` whose field is (1): the likelihood network plus the diffused prior
    score ``prior_score`` (``AnalyticPriorScore`` or ``LearnedPriorScore``, in z space). sample,
    log_prob, sample_batched, log_prob_batched, map and save/``snpse_np.load`` work as for NPSE;
    i.i.d. trials (x with m > 1 rows) are not implemented (NotImplementedError)."""

    def __init__(self, model, params, theta_std, x_std, prior, backend, dtype=np.float32, default_x=None,
                 threads=None, prior_score=None):
        if not isinstance(prior_score, (AnalyticPriorScore, LearnedPriorScore)):
            raise ValueError("NLSEPosterior needs prior_score: an AnalyticPriorScore or a LearnedPriorScore")
        super().__init__(model, params, theta_std, x_std, prior, backend, dtype, default_x, threads)
        self.prior_score = prior_score

    def _field(self, xc, rows, divergence=None, seed=None):
        lik = super()._field(xc, rows, divergence=divergence, seed=seed)
        if isinstance(self.prior_score, LearnedPriorScore):
            return NLSEField(lik, self.prior_score.field(rows, divergence=divergence, seed=seed))
        return NLSEField(lik, self.prior_score)

    def _iid_trials(self, x):
        trials = super()._iid_trials(x)
        if trials is not None:
            raise NotImplementedError(
                "NLSEPosterior: i.i.d. trials (x with m > 1 rows) are not implemented; the natural "
                "composition (the sum of the m likelihood scores plus the diffused prior score) is future work. "
                "For m separate observations use sample_batched / log_prob_batched")
        return None

    def _kind_state(self):
        """The file's NLSE entries (``ScorePosterior.save`` writes them; ``read_prior_score`` reads
        them). Raises ValueError where the file could not rebuild the same prior score: a prior
        score on another SDE than the likelihood network's, or an analytic one beside a prior that
        has no closed form (the analytic score is rebuilt from the prior)."""
        ps = self.prior_score
        sde = ps.sde if isinstance(ps, AnalyticPriorScore) else ps.model.sde
        if sde.config() != self.sde.config():
            raise ValueError(f"cannot save: the prior score's SDE {sde!r} is not the likelihood network's "
                             f"{self.sde!r} (a file holds one SDE)")
        if isinstance(ps, AnalyticPriorScore):
            if not has_closed_form(self.prior):
                raise ValueError(f"cannot save: an analytic prior score beside a {type(self.prior).__name__} "
                                 "prior (the file rebuilds it from a Normal, MultivariateNormal or BoxUniform)")
            return {"kind": "nlse", "nlse": {"prior_score": "analytic"}}, {}
        m = ps.model
        block = dict(prior_score="learned", net=m.net.config(), precondition=m.precondition,
                     time_input=m.time_input, floor=m.floor)
        return {"kind": "nlse", "nlse": block}, {"nlse_prior_params": ps.backend.to_host(ps.params)}

    def __repr__(self):
        kind = "analytic" if self.prior_score.exact else "learned"
        return (f"NLSEPosterior(dim_theta={self.dim_theta}, dim_x={self.dim_x}, sde={self.sde!r}, "
                f"prior_score={kind!r}, backend={self.backend.name!r})")


def read_prior_score(arrays, meta, model, theta_std, prior, backend, bad):
    """The prior score of an "nlse" file (``snpse_np.load``): arrays {name: array} and meta as
    read, ``model`` the likelihood network's ``ScoreModel`` (its SDE is the prior score's),
    ``theta_std`` and ``prior`` as loaded, ``bad(what)`` -> the ValueError naming the file.

    "analytic": ``AnalyticPriorScore(diffused_prior(prior, theta_std), sde)``, as ``NLSE`` built it
    (a ValueError if the attached prior has no closed form, e.g. another prior passed to load);
    "learned": ``LearnedPriorScore`` from the stored architecture and weights (``nlse_prior_params``
    (P,), float32 or float64: its dtype is the network's). Every entry is checked."""
    block = meta.get("nlse")
    kind = block.get("prior_score") if isinstance(block, dict) else None
    if kind not in ("analytic", "learned"):
        raise bad(f"an nlse file needs meta nlse = {{'prior_score': 'analytic' or 'learned', ...}}, got {block!r}")
    d = model.net.dim_theta
    if kind == "analytic":
        if not has_closed_form(prior):
            raise bad(f"its analytic prior score is rebuilt from a Normal, MultivariateNormal or BoxUniform prior, "
                      f"got {type(prior).__name__}")
        return AnalyticPriorScore(diffused_prior(prior, theta_std), model.sde)
    try:
        net = ScoreNetwork(**block["net"])
        pmodel = ScoreModel(net, model.sde, block["precondition"], block["time_input"],
                            real(block["floor"], "floor", at_least=0.0))
    except (TypeError, ValueError, KeyError) as err:
        raise bad(f"bad prior-score metadata ({type(err).__name__}: {err})") from None
    if net.dim_theta != d or net.dim_x != 1:
        raise bad(f"the prior-score network must map {d} parameters and one constant x column, "
                  f"its sizes say {net.dim_theta} and {net.dim_x}")
    params = arrays.get("nlse_prior_params")
    if params is None:
        raise bad("a learned prior score needs the array nlse_prior_params")
    if params.dtype not in (np.float32, np.float64) or params.shape != (net.size,):
        raise bad(f"nlse_prior_params must be a float32/float64 array of shape ({net.size},), "
                  f"got {params.dtype} {params.shape}")
    if not np.all(np.isfinite(params)):
        raise bad("nlse_prior_params holds NaN or inf")
    return LearnedPriorScore(pmodel, backend.to_device(params), backend, params.dtype)


class NLSE(NPSE):
    """Neural likelihood score estimation: ``NPSE``'s API (``append_simulations``, ``train`` ->
    a posterior with sample / log_prob), training the likelihood score with the diffused prior
    score added in the loss and in the posterior's field.

    prior_score: "auto" (analytic for ``Normal``, ``MultivariateNormal``, ``BoxUniform``, learned
    otherwise), "analytic" (ValueError for other priors) or "learned" (Alg. 2, any prior).
    prior_score_steps: the learned prior network's Adam steps (default: ``schedule.default_steps``
    of the number of simulations, as the likelihood network). Other arguments as ``NPSE``.
    """

    def __init__(self, prior, sde="ve", *args, prior_score="auto", prior_score_steps=None, **kwargs):
        super().__init__(prior, sde, *args, **kwargs)
        if self.baseline is not None:
            raise ValueError("baseline: NLSE learns a likelihood score, not the posterior's: the Gaussian "
                             "baseline (a fit of theta given x) does not apply")
        if not isinstance(prior_score, str) or prior_score not in PRIOR_SCORES:
            raise ValueError(f"prior_score must be one of {PRIOR_SCORES}, got {prior_score!r}")
        if prior_score == "analytic" and not has_closed_form(prior):
            raise ValueError(f"prior_score='analytic' needs a Normal, MultivariateNormal or BoxUniform prior "
                             f"(a closed-form diffused score), got {type(prior).__name__}: use 'learned' or 'auto'")
        if prior_score == "auto":
            prior_score = "analytic" if has_closed_form(prior) else "learned"
        self.prior_score = prior_score
        self.prior_score_steps = None if prior_score_steps is None else integer(prior_score_steps,
                                                                                "prior_score_steps", minimum=1)
        self._prior_score = None
        self._prior_seconds = 0.0

    def _added_score(self, theta_std):
        if self.prior_score == "analytic":
            self._prior_score = AnalyticPriorScore(diffused_prior(self.prior, theta_std), self.sde)
        else:
            import time
            t0 = time.perf_counter()
            n = sum(a.shape[0] for a in self._theta)
            steps = self.prior_score_steps or default_steps(n)
            self._prior_score = train_prior_score(
                self.prior, theta_std, self.sde, self.backend, steps, learning_rate=auto_learning_rate(n),
                hidden=self.hidden, activation=self.activation, precondition=self.precondition,
                time_input=self.time_input, floor=self.floor, dtype=self.dtype,
                seed=np.random.default_rng(self.rng.integers(2 ** 63)), show_progress=self.show_progress)
            self._prior_seconds = time.perf_counter() - t0
        return self._prior_score.score

    def train(self, *args, **kwargs):
        """As ``NPSE.train`` (same arguments); returns an ``NLSEPosterior``. With a learned prior
        score, its network is trained first (inside this call; ``summary["prior_score"]``)."""
        post = super().train(*args, **kwargs)
        self._posterior = NLSEPosterior(post.model, post.params, post.theta_std, post.x_std, self.prior,
                                        self.backend, dtype=self.dtype, threads=self.threads,
                                        prior_score=self._prior_score)
        self.summary.update(prior_score=self.prior_score, prior_score_seconds=self._prior_seconds)
        return self._posterior
