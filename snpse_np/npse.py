"""NPSE: amortised neural posterior score estimation (Sharrock et al. 2024, Sec. 2.2).

Train a conditional score network s(theta_t, x, t) ~ grad log p_t(theta_t | x) by denoising
score matching on simulated pairs (theta_i, x_i) ~ p(theta) p(x | theta):

    L = E_{t ~ U[t_min, 1], z ~ N(0, I)} [ mean_j (sigma_t s_j(alpha_t theta + sigma_t z, x, t) + z_j)^2 ]

(lambda_t = sigma_t^2, the authors' weighting), in z-scored theta and x space, with Adam over a
budget of steps on which the learning rate warms up and anneals (``schedule``), reshuffled
minibatches with fresh noise, a weight EMA, and a validation split whose best weights are kept.
The pieces: ``TrainStep`` (one step), ``ValidationSet`` (the held-out loss), ``NPSE.train``
(the loop). The result is a ``ScorePosterior`` that samples and evaluates log-densities.

Usage (sbi-style):

    inference = NPSE(prior, sde="ve", seed=0)
    posterior = inference.append_simulations(theta, x).train()
    samples = posterior.sample(10_000, x=x_o)
"""
import math
import warnings

import numpy as np

from .backend import get_backend
from .linear_gaussian import BASELINES, LinearGaussian
from .checks import integer, real, real_array
from .nn import ScoreNetwork
from .optim import Adam
from .posterior import ScorePosterior
from .progress import Progress
from .rng import as_generator
from .schedule import LR_SCHEDULES, LRSchedule, Plateau, auto_ema_decay, auto_learning_rate, default_steps
from .score import ScoreModel
from .sde import VESDE, make_sde, max_pairwise_distance
from .standardize import Standardizer
from .threads import check_threads, uses_threads
from .time_sampling import TimeSampler

# Measured on sbibm tasks at 10,000 simulations, observations 1-3, and on a 3-D linear Gaussian
# (NOTES.md has the tables): a cosine annealing over a budget from the data beats a constant rate
# (two_moons, 4,000 steps: C2ST 0.59 against 0.74); the peak rate 2e-3, lower with few
# simulations (``schedule.auto_learning_rate``); the weight EMA (window 5% of the budget) leaves
# C2ST unchanged and makes log-densities better (correlation 0.960 -> 0.974 at 2,125 rows);
# patience "auto": when the EMA validation loss has stopped improving for a quarter of the steps
# run, the rate anneals from its value there over a cool-down of a quarter of those steps
# (``LRSchedule.begin_cooldown``) instead of running on; stopping there instead, at a rate still
# high, lost accuracy (gaussian_linear at 10k, obs 1-5: C2ST 0.607 stopped, 0.575 cooled down).
# "wsd" (a constant rate until the plateau, then the cool-down) measured worse on slcp (0.80
# against 0.78) and is an option.
TRAIN_DEFAULTS = dict(max_steps=None, max_epochs=None, batch_size=128, learning_rate="auto", lr_schedule="cosine",
                      warmup_steps=200, final_learning_rate=0.0, validation_fraction=0.15, patience="auto",
                      min_improvement=0.0, ema_decay="auto", max_seconds=None, time_sampling="uniform",
                      min_steps_per_epoch=100)


def check_data(theta, x, dim_theta=None, dim_x=None, exclude_invalid=True, prior=None, allow_outside_prior=False):
    """Validate a (theta, x) batch and drop rows with NaN/inf x. Returns (theta, x, n_dropped).

    theta: (n, d), x: (n, p). Raises ValueError naming the problem for wrong shapes, mismatched
    row counts, empty data, 0 columns, complex or non-finite theta, theta outside the support of
    ``prior`` (unless ``allow_outside_prior``: simulations from a wider proposal on purpose) and
    columns whose values overflow the z-scoring (a value near 1e300 would zero its column).
    Warns (RuntimeWarning), naming the column, when a column of theta or x is constant: a constant
    theta column cannot be learnt (its samples would spread by the network's error), a constant x
    column carries no information (and ``ScorePosterior`` refuses an x that differs there).
    """
    theta = real_array(theta, "theta")
    x = real_array(x, "x")
    if theta.ndim == 1 and dim_theta == 1:
        theta = theta[:, None]
    if x.ndim == 1 and dim_x == 1:
        x = x[:, None]
    if theta.ndim != 2:
        raise ValueError(f"theta must be a 2-D array (n, dim_theta), got shape {theta.shape}")
    if x.ndim != 2:
        raise ValueError(f"x must be a 2-D array (n, dim_x), got shape {x.shape}")
    if theta.shape[0] != x.shape[0]:
        raise ValueError(f"theta and x must have the same number of rows, got {theta.shape[0]} and {x.shape[0]}")
    if theta.shape[0] == 0:
        raise ValueError("no simulations given (theta and x have 0 rows)")
    if theta.shape[1] == 0 or x.shape[1] == 0:
        raise ValueError(f"theta and x need at least one column each, got shapes {theta.shape} and {x.shape}")
    if dim_theta is not None and theta.shape[1] != dim_theta:
        raise ValueError(f"theta has {theta.shape[1]} columns, expected dim_theta = {dim_theta}")
    if dim_x is not None and x.shape[1] != dim_x:
        raise ValueError(f"x has {x.shape[1]} columns, expected dim_x = {dim_x} (as in earlier simulations)")
    if not np.all(np.isfinite(theta)):
        raise ValueError("theta contains NaN or inf")
    ok = np.all(np.isfinite(x), axis=1)
    n_bad = int((~ok).sum())
    if n_bad:
        if not exclude_invalid:
            raise ValueError(f"x contains NaN or inf in {n_bad} rows")
        theta, x = theta[ok], x[ok]
        if theta.shape[0] == 0:
            raise ValueError(f"all {n_bad} simulations have NaN or inf in x: nothing left to train on")
    if prior is not None and not allow_outside_prior:
        inside = prior.support_contains(theta) if hasattr(prior, "support_contains") else \
            np.isfinite(prior.log_prob(theta))
        if not np.all(inside):
            i = int(np.flatnonzero(~inside)[0])
            raise ValueError(f"{int((~inside).sum())} rows of theta lie outside the prior's support "
                             f"(first: row {i}, {theta[i].tolist()}); the posterior is zero there. "
                             f"Pass allow_outside_prior=True if they come from a wider proposal on purpose")
    for name, a in (("theta", theta), ("x", x)):
        try:
            constant = Standardizer.fit(a).constant
        except ValueError as err:  # "column j ... overflow"
            raise ValueError(f"{name} {err}") from None
        if a.shape[0] > 1:
            for j in np.flatnonzero(constant):
                what = ("it cannot be learnt (its posterior samples would spread by the network's error): "
                        "fix that parameter instead of inferring it" if name == "theta" else
                        "it carries no information, and an observation that differs there will be refused")
                warnings.warn(f"{name} column {j} (0-based) is constant ({a[0, j]:.6g}) in these {a.shape[0]} "
                              f"simulations: {what}", RuntimeWarning, stacklevel=3)
    return theta, x, n_bad


class StepDraws:
    """A training step's host draws, packed for ONE host-to-device copy (on the GPU each copy
    costs more than a layer). Shapes: batch B, theta dimension d.

    Packed rows (each B long): alpha, sigma, c_in, tau, c = sigma / c_out
    (``ScoreModel.dsm_coefficients``), then z (B, d) and,
    with weights, z' = sqrt(w) z (B, d). A weighted loss runs through the unweighted kernel: with
    c' = sqrt(w) c and z' = sqrt(w) z, r' = c' out + z' = sqrt(w) r, so dsm_loss gives mean w r^2
    and dout = 2 w c r / (B d). ``shifted``: the loss target is z + shift (B, d) (``fill``'s
    ``shift``; NLSE, ``snpse_np.nlse``), in the same second slot (times sqrt(w) with weights).
    """

    def __init__(self, model, batch, dim_theta, dtype, weighted=False, shifted=False):
        self.model, self.B, self.d = model, int(batch), int(dim_theta)
        self.weighted, self.shifted = bool(weighted), bool(shifted)
        self.separate = self.weighted or self.shifted  # a loss target apart from the perturbation's z
        self.host = np.empty((5 + self.d * (2 if self.separate else 1)) * self.B, dtype)

    def fill(self, t, z, sqrt_w=None, shift=None):
        """Host side: the coefficients at times t (B,), the noise z (B, d), weights' roots (B,),
        the loss target's shift (B, d) (only with ``shifted``)."""
        B, d, host = self.B, self.d, self.host
        if (shift is not None) != self.shifted:
            raise ValueError("a shift must be given exactly when the draws are shifted")
        for k, v in enumerate(self.model.dsm_coefficients(t)):  # alpha, sigma, c_in, tau, c
            host[k * B:(k + 1) * B] = v
        z_host = host[5 * B:(5 + d) * B].reshape(B, d)
        z_host[...] = z
        if self.separate:
            target = z + shift if self.shifted else z_host
            if self.weighted:
                host[4 * B:5 * B] *= sqrt_w
                target = target * sqrt_w[:, None]
            host[(5 + d) * B:].reshape(B, d)[...] = target

    def upload(self, backend):
        """One copy; returns device views (alpha, sigma, c_in, tau, c, z, z for the loss)."""
        B, d = self.B, self.d
        dev = backend.to_device(self.host)
        a, s, c_in, tau, c = (dev[k * B:(k + 1) * B] for k in range(5))
        z = dev[5 * B:(5 + d) * B].reshape(B, d)
        z_loss = dev[(5 + d) * B:].reshape(B, d) if self.separate else z
        return a, s, c_in, tau, c, z, z_loss


def target_shift(sde, added_score, theta0, t, z):
    """sigma_t g(theta_t, t) (B, d) float64: the DSM target's shift when the network's score is
    trained as s_net = s_target - g (``added_score`` g; NLSE: the diffused prior's score).

    With s = out / c_out + g the row loss mean_j (sigma s_j + z_j)^2 is mean_j (c out_j + z'_j)^2
    with z' = z + sigma g(theta_t, t), theta_t = alpha_t theta0 + sigma_t z (host float64 here).
    theta0 (B, d) host rows, t (B,), z (B, d).
    """
    alpha, sigma = sde.marginal(np.asarray(t, dtype=np.float64))
    theta_t = alpha[:, None] * np.asarray(theta0, dtype=np.float64) + sigma[:, None] * z
    return sigma[:, None] * added_score(theta_t, t)


def combined_shift(model, added_score, theta0, residual, t, z, backend):
    """The DSM target's shift of a batch (B, d), or None: the added score's (``target_shift``) plus
    the baseline's, sigma_t s_G(theta_t) (``linear_gaussian.LinearGaussian.target_shift``). theta0: device
    rows; residual: the rows' rotated residuals r_0 (host) or None."""
    if (residual is not None) != model.baseline:
        raise ValueError("residual rows must be given exactly when the model has a baseline")
    shift = None
    if added_score is not None:
        shift = target_shift(model.sde, added_score, backend.to_host(theta0), t, z)
    if residual is not None:
        alpha, sigma = model.sde.marginal(np.asarray(t, dtype=np.float64))
        b = model.gaussian.target_shift(residual, alpha, sigma, z)
        shift = b if shift is None else shift + b
    return shift


class TrainStep:
    """One denoising score-matching step on batches of B rows: the unit that ``NPSE.train``
    runs and that the benchmarks and the kernel lab time (so they time the shipped loop).

        theta_in = c_in (alpha_t theta_0 + sigma_t z)     ops.dsm_perturb
        out      = net(theta_in, x, tau)                  ScoreNetwork.forward
        loss     = mean_ij (c_i out_ij + z_ij)^2          ops.dsm_loss  (c = sigma / c_out)
        grads    = d loss / d params                      ScoreNetwork.backward
        params  <- Adam(params, grads)                    optim.Adam.step (lr: opt.lr)

    Buffers (workspace, parameter and gradient views, the packed draws) are made once here.
    ``opt`` holds the flat parameter buffer the step updates. ``added_score``: None, or a host
    function g(theta_t (B, d) float64, t (B,)) -> (B, d) added to the network's score in the loss
    (the target becomes z + sigma g, see ``target_shift``; NLSE's diffused prior score). A model
    with a baseline (``model.baseline``) shifts the target by sigma s_G (``combined_shift``): each
    call then takes the batch's rotated residuals r_0 (``LinearGaussian.residual``, host rows).
    """

    def __init__(self, model, backend, opt, batch, dtype, weighted=False, added_score=None):
        xp, net = backend.xp, model.net
        self.model, self.backend, self.net, self.opt = model, backend, net, opt
        self.B, self.d = int(batch), net.dim_theta
        self.grads = xp.empty_like(opt.params)
        # views once: ~30 views cost ~0.2 ms a step on the GPU otherwise
        self.pv, self.gv = net.views(opt.params), net.views(self.grads)
        self.ws = net.workspace(backend, self.B, dtype, train=True)
        self.theta_in, self.dout = xp.empty((self.B, self.d), dtype), xp.empty((self.B, self.d), dtype)
        self.added_score = added_score
        self.draws = StepDraws(model, self.B, self.d, dtype, weighted=weighted,
                               shifted=added_score is not None or model.baseline)

    def __call__(self, theta0, x, t, z, sqrt_w=None, residual=None):
        """theta0 (B, d) and x (B, p): device rows (standardised); t (B,) float64 host times;
        z (B, d) host noise; sqrt_w (B,) roots of the importance weights or None; residual (B, d)
        the rows' r_0 (host), exactly when the model has a baseline.

        Returns the batch loss (float). A non-finite loss returns before the update (the caller
        decides what to tell the user)."""
        be = self.backend
        self.draws.fill(t, z, sqrt_w, combined_shift(self.model, self.added_score, theta0, residual, t, z, be))
        a, s, c_in, tau, c, z_d, z_loss = self.draws.upload(be)
        be.ops.dsm_perturb(self.theta_in, theta0, z_d, a, s, c_in)
        out = self.net.forward(be, self.pv, self.theta_in, tau, self.ws, x=x)
        loss = be.ops.dsm_loss(self.dout, out, z_loss, c)
        if math.isfinite(loss):
            self.net.backward(be, self.pv, self.dout, self.ws, self.gv)
            self.opt.step(self.grads)
        return loss


class ValidationSet:
    """The DSM loss on held-out rows with times and noise drawn ONCE, so that the loss of
    different weights is comparable (only the weights change between evaluations).

    theta (n, d), x (n, p): standardised host rows, tiled until at least ``min_rows`` rows are
    scored; weights (n,) importance weights (mean 1) or None, folded in as in training. The
    perturbation runs through the same ops as a training step (``StepDraws``, ``dsm_perturb``);
    ``added_score`` and a baseline (``residual`` (n, d): the rows' r_0) shift the target as in
    ``TrainStep``.
    """

    def __init__(self, model, backend, theta, x, batch, times, rng, dtype, weights=None, min_rows=1000,
                 added_score=None, residual=None):
        be, xp, net = backend, backend.xp, model.net
        self.model, self.backend, self.net = model, backend, net
        reps = max(1, int(math.ceil(min_rows / theta.shape[0])))
        theta, x = np.tile(theta, (reps, 1)), np.tile(x, (reps, 1))
        if residual is not None:
            residual = np.tile(residual, (reps, 1))
        sqrt_w = None if weights is None else np.sqrt(np.tile(weights, reps))
        t = times.sample(theta.shape[0], rng)
        z = rng.standard_normal(theta.shape)
        self.batches, self._ws = [], {}
        for s in range(0, theta.shape[0], batch):
            sl = slice(s, s + batch)
            b = theta[sl].shape[0]
            draws = StepDraws(model, b, net.dim_theta, dtype, weighted=weights is not None,
                              shifted=added_score is not None or model.baseline)
            shift = combined_shift(model, added_score, theta[sl], None if residual is None else residual[sl],
                                   t[sl], z[sl], be)
            draws.fill(t[sl], z[sl], None if sqrt_w is None else sqrt_w[sl], shift)
            a, sg, c_in, tau, c, z_d, z_loss = draws.upload(be)
            theta_in = xp.empty((b, net.dim_theta), dtype)
            be.ops.dsm_perturb(theta_in, be.to_device(theta[sl].astype(dtype)), z_d, a, sg, c_in)
            self.batches.append((theta_in, be.to_device(x[sl].astype(dtype)), z_loss, tau, c))
            if b not in self._ws:
                self._ws[b] = (net.workspace(be, b, dtype, train=True), xp.empty((b, net.dim_theta), dtype))
        self.rows = theta.shape[0]

    def loss(self, params):
        """Mean validation loss (float) of the flat parameter buffer ``params``."""
        be, total = self.backend, 0.0
        pv = self.net.views(params)
        for theta_in, xb, z, tau, c in self.batches:
            ws, dout = self._ws[theta_in.shape[0]]
            out = self.net.forward(be, pv, theta_in, tau, ws, x=xb)
            total += be.ops.dsm_loss(dout, out, z, c) * theta_in.shape[0]
        return total / self.rows


class NPSE:
    """Neural posterior score estimation.

    prior: a ``snpse_np`` prior (or any object with ``dim``, ``sample``, ``log_prob``,
    ``support_contains``). sde: "ve", "vp", "subvp" or an SDE instance; ``sde_kwargs`` go to
    its constructor (VE: sigma_min, sigma_max; VP: beta_min, beta_max). The VE sigma_max defaults
    to the largest pairwise distance of the standardised training theta (Song & Ermon 2020).
    backend: None (best available), "numpy", "numba" or "cuda". precondition: "noise"
    (default; ``floor`` is its small-noise output scale, see ``score``) or "none" (the paper);
    time_input: "sigma" (the authors' code), "t" or "log_sigma". threads: how many BLAS and
    Numba threads training and sampling use (None: ``threads.default_threads()``).
    baseline: None (the network is the whole score) or "gaussian": a linear-Gaussian fit of theta
    given x supplies a score the network corrects (``snpse_np.linear_gaussian``; it helps where the
    posterior is close to Gaussian with a mean nearly linear in x, and hurts curved posteriors:
    measured in NOTES.md); "auto": ``train`` runs twice from the same random state, without and with
    the baseline, and keeps the run with the lower held-out DSM loss (both estimate the loss of the
    total score on the same draws; twice the training time; ``summary["baseline"]`` says which was kept,
    ``summary["baseline_val_losses"]`` the two losses). ``baseline_min_var``: the fit's variance floor
    (standardised units). With or without the baseline, sampling starts from the fit's diffused p_T rather than the
    SDE's N(0, sigma_max^2 I) (``linear_gaussian``: the SDE's base pulls every draw toward the
    prior mean).
    """

    # Fit the linear-Gaussian of theta | x at training (sampling starts from its diffused p_T); a
    # subclass whose network learns another score than the posterior's (SNPSE-C's bridge) turns it off.
    _fit_gaussian = True

    def __init__(self, prior, sde="ve", backend=None, seed=0, hidden=256, activation="silu",
                 precondition="noise", time_input="sigma", floor=0.1, dtype=np.float32, show_progress=True,
                 threads=None, baseline=None, baseline_min_var=0.0, **sde_kwargs):
        if not all(hasattr(prior, a) for a in ("dim", "sample", "log_prob")):
            raise ValueError("prior must be a snpse_np prior (with dim, sample, log_prob)")
        integer(prior.dim, "prior.dim", minimum=1)
        self.prior = prior
        self.sde = make_sde(sde, **sde_kwargs)
        self.backend = get_backend(backend)
        self.rng = as_generator(seed)
        self.hidden = integer(hidden, "hidden", minimum=1)
        from .backends.numpy_ref import ACTIVATIONS
        if not isinstance(activation, str) or activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {ACTIVATIONS}")
        self.activation = activation
        self.precondition = precondition
        self.time_input = time_input
        self.floor = real(floor, "floor", at_least=0.0)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError("dtype must be float32 or float64")
        self.show_progress = show_progress
        self.threads = check_threads(threads)
        if baseline not in BASELINES + ("auto",):
            raise ValueError(f"baseline must be one of {BASELINES + ('auto',)}, got {baseline!r}")
        self.baseline = baseline
        self.baseline_min_var = real(baseline_min_var, "baseline_min_var", at_least=0.0)
        self._theta, self._x = [], []
        self.n_invalid = 0
        self.summary = {}
        self._posterior = None
        ScoreModel(None, self.sde, precondition, time_input)  # validate the options now

    # ------------------------------------------------------------------ data

    def append_simulations(self, theta, x, exclude_invalid_x=True, allow_outside_prior=False):
        """Add simulations; rows whose x has NaN/inf are dropped and counted (``n_invalid``).
        theta outside the prior's support is refused unless ``allow_outside_prior`` (see ``check_data``)."""
        dim_x = self._x[0].shape[1] if self._x else None
        theta, x, n_bad = check_data(theta, x, self.prior.dim, dim_x, exclude_invalid_x, self.prior,
                                     allow_outside_prior)
        if n_bad:
            warnings.warn(f"dropped {n_bad} simulations whose x contains NaN or inf "
                          f"({theta.shape[0]} kept)", stacklevel=2)
        self.n_invalid += n_bad
        self._theta.append(theta)
        self._x.append(x)
        return self

    def get_simulations(self):
        if not self._theta:
            raise ValueError("no simulations appended yet: call append_simulations(theta, x) first")
        return np.concatenate(self._theta), np.concatenate(self._x)

    # ------------------------------------------------------------------ training

    @uses_threads
    def train(self, max_steps=None, max_epochs=None, batch_size=None, learning_rate=None, lr_schedule=None,
              warmup_steps=None, final_learning_rate=None, validation_fraction=None, patience=None,
              min_improvement=None, ema_decay=None, max_seconds=None, time_sampling=None,
              min_steps_per_epoch=None, show_progress=None, init_params=None, sample_weights=None,
              fit_rows=None):
        """Train a fresh score network on all simulations; return the ``ScorePosterior``.

        Arguments left None take ``TRAIN_DEFAULTS``. The run is a budget of Adam steps over
        which the learning rate warms up (``warmup_steps``) to its peak (``learning_rate``: a
        float, or "auto" = ``schedule.auto_learning_rate`` of the training rows) and anneals to
        ``final_learning_rate`` (``lr_schedule``: "cosine", "linear", "constant" or "wsd"; see
        ``schedule``). The budget: ``max_steps``, else ``max_epochs`` epochs, else
        ``schedule.default_steps`` (from the number of simulations); ``max_seconds`` is a
        wall-clock budget the schedule anneals to as well (whichever ends first; with
        ``baseline="auto"`` each of the two runs gets half).

        An epoch is as many reshuffled passes over the training split (each with fresh t and z)
        as make at least ``min_steps_per_epoch`` steps (with few simulations one pass is a
        handful of steps); after each epoch the validation loss of the evaluation weights (the
        weight EMA, when on) is computed on noise and times drawn once, and the weights with the
        best one are kept (once a cool-down began: the best of the cool-down). ``patience``
        counts steps without an improvement by more than ``min_improvement`` (relative): an
        int, "auto" (a quarter of the steps run so far, at least 1,000) or ``math.inf`` (never);
        it starts the cool-down (the rate anneals linearly from its current value to
        ``final_learning_rate`` over a quarter of the steps run, within the budget), or, with
        ``lr_schedule="constant"``, stops the run. ``ema_decay``: a float in (0, 1), "auto" (an
        averaging window of 5% of the budget) or 0 (off). A NaN/inf loss stops with a
        FloatingPointError. ``time_sampling``: "uniform" t, "lognormal" sigma (see
        ``time_sampling``; measured worse on two_moons and slcp with VE), "log_uniform" sigma (the
        same as "uniform" for VE; for VP it helped three sbibm tasks and hurt gaussian_linear badly: NOTES.md)
        or "mixed" (a coin per draw between the two). ``init_params`` starts from given weights (a warm
        start) instead of a fresh initialisation.

        ``sample_weights``: optional importance weights, one per simulation, shape (n,), aligned
        with the rows of ``get_simulations()`` (so after rows with NaN/inf x were dropped), all
        positive and finite. The loss becomes sum_i w_i l_i / sum_i w_i (a self-normalised
        importance-weighted DSM loss, as SNPSE-B needs): the weights follow their rows through the
        train/validation split and are rescaled to mean 1 on each split separately, so the training
        and validation losses both estimate the same weighted objective and early stopping tracks
        it. They are a training argument, not stored with the rows, because importance weights
        p(theta)/p~(theta) change whenever the proposal mixture p~ gains a round. With all weights
        equal to 1, training is bit-identical to training without weights.

        ``fit_rows``: fit the linear-Gaussian (the samplers' start, and the baseline score when there is
        one) on the training rows among the first ``fit_rows`` simulations only, not on all of them. A
        sequential run passes its prior round's count: later rounds draw from a truncated prior, and a
        regression of theta on x over truncated draws has too small a residual variance (TSNPSE with the
        baseline on gaussian_linear was 13-16% too narrow; NOTES.md).
        """
        given = dict(max_steps=max_steps, max_epochs=max_epochs, batch_size=batch_size,
                     learning_rate=learning_rate, lr_schedule=lr_schedule, warmup_steps=warmup_steps,
                     final_learning_rate=final_learning_rate, validation_fraction=validation_fraction,
                     patience=patience, min_improvement=min_improvement, ema_decay=ema_decay,
                     max_seconds=max_seconds,
                     time_sampling=time_sampling, min_steps_per_epoch=min_steps_per_epoch)
        opts = dict(TRAIN_DEFAULTS)
        opts.update({k: v for k, v in given.items() if v is not None})
        _check_train_options(opts)
        show = self.show_progress if show_progress is None else show_progress
        theta, x = self.get_simulations()
        n = theta.shape[0]
        weights = None if sample_weights is None else _check_weights(sample_weights, n)
        n_val = max(1, int(round(n * opts["validation_fraction"])))
        if n - n_val < 1:
            raise ValueError(f"too few simulations ({n}) for a validation split")
        fit_rows = n if fit_rows is None else integer(fit_rows, "fit_rows", minimum=1)
        if fit_rows > n:
            raise ValueError(f"fit_rows ({fit_rows}) exceeds the number of simulations ({n})")
        if self.baseline != "auto":
            return self._train_one(theta, x, n_val, opts, show, init_params, weights, fit_rows,
                                   baseline=self.baseline is not None)
        # baseline="auto": the same run twice from the same generator state (the same split,
        # batches, times, noise and validation draws), kept by the lower held-out DSM loss. Both
        # losses estimate E |sigma_t s(theta_t) + z|^2 of the TOTAL score on the same draws, so they
        # compare the two models directly.
        state = self.rng.bit_generator.state
        if opts["max_seconds"] is not None:  # the wall-clock budget bounds the whole call: half each
            opts = dict(opts, max_seconds=0.5 * opts["max_seconds"])
        runs = {}  # baseline name -> (posterior, summary)
        for name in (None, "gaussian"):
            self.rng.bit_generator.state = state
            if show:
                print(f"baseline auto: training {'with' if name else 'without'} the Gaussian baseline", flush=True)
            posterior = self._train_one(theta, x, n_val, opts, show, init_params, weights, fit_rows,
                                        baseline=name is not None)
            runs[name] = posterior, self.summary
        losses = {name: summary["best_val_loss"] for name, (_, summary) in runs.items()}
        kept = "gaussian" if losses["gaussian"] < losses[None] else None  # a tie keeps no baseline
        posterior, summary = runs[kept]
        self.summary = dict(summary, baseline_val_losses=losses,
                            train_seconds=sum(s["train_seconds"] for _, s in runs.values()))
        if show:
            print(f"baseline auto: validation loss {losses[None]:.5f} without, {losses['gaussian']:.5f} with; "
                  f"kept {'the baseline' if kept else 'no baseline'}", flush=True)
        self._posterior = posterior
        return posterior

    def _train_one(self, theta, x, n_val, opts, show, init_params, weights, fit_rows, baseline):
        """One training run on the simulations theta (n, d), x (n, p) with ``n_val`` validation rows and
        checked options ``opts`` (see ``train``); the Gaussian is fitted on the training rows among the first
        ``fit_rows``; ``baseline``: whether the network corrects the Gaussian
        fit's score. Sets ``summary`` and returns the posterior."""
        n = theta.shape[0]

        be, xp, dt = self.backend, self.backend.xp, self.dtype
        theta_std, x_std = Standardizer.fit(theta), Standardizer.fit(x)
        th, xs = theta_std.forward(theta), x_std.forward(x)
        if isinstance(self.sde, VESDE) and self.sde.sigma_max is None:
            self.sde.sigma_max = max(max_pairwise_distance(th), 2.0 * self.sde.sigma_min)
        perm = self.rng.permutation(n)
        val_idx, tr_idx = perm[:n_val], perm[n_val:]
        n_tr = tr_idx.size
        B = int(min(opts["batch_size"], n_tr))

        net = ScoreNetwork.paper(theta.shape[1], x.shape[1], self.hidden, self.activation)
        # the linear-Gaussian fit: where sampling starts; with baseline="gaussian" also a score the net corrects
        fit_idx = tr_idx[tr_idx < fit_rows]  # == tr_idx unless the caller limits the fit
        if self._fit_gaussian and fit_rows < n and fit_idx.size < x.shape[1] + 2:  # a fit of all rows never refuses
            raise ValueError(f"fit_rows={fit_rows} leaves {fit_idx.size} training rows for the Gaussian fit; "
                             f"it needs at least dim(x) + 2 = {x.shape[1] + 2}")
        gaussian = (LinearGaussian.fit(th[fit_idx], xs[fit_idx], min_var=self.baseline_min_var)
                    if self._fit_gaussian else None)
        model = ScoreModel(net, self.sde, self.precondition, self.time_input, self.floor, gaussian=gaussian,
                           baseline=baseline)
        residual = gaussian.residual(th, xs) if model.baseline else None  # r_0 of every row, fixed
        params = be.to_device(self._initial_params(net, init_params, dt))

        # the budget, in steps and epochs
        steps_per_pass = n_tr // B  # the ragged last batch is dropped: fixed shapes, no reallocation
        passes = max(1, -(-int(opts["min_steps_per_epoch"]) // steps_per_pass))
        steps_per_epoch = passes * steps_per_pass
        if opts["max_steps"] is not None:
            total = int(opts["max_steps"])
            if opts["max_epochs"] is not None:
                total = min(total, int(opts["max_epochs"]) * steps_per_epoch)
        elif opts["max_epochs"] is not None:
            total = int(opts["max_epochs"]) * steps_per_epoch
        else:
            total = default_steps(n_tr, B)
        warmup = min(int(opts["warmup_steps"]), total // 2)
        peak = auto_learning_rate(n_tr, total, B) if opts["learning_rate"] == "auto" else float(opts["learning_rate"])
        if opts["final_learning_rate"] > peak:
            raise ValueError(f"final_learning_rate must lie in [0, learning_rate = {peak:g}], "
                             f"got {opts['final_learning_rate']!r}")
        sched = LRSchedule(peak, total, warmup, opts["final_learning_rate"], opts["lr_schedule"], opts["max_seconds"])
        decay = auto_ema_decay(total) if opts["ema_decay"] == "auto" else (opts["ema_decay"] or None)
        opt = Adam(be, params, sched.lr(0), ema_decay=decay)
        added = self._added_score(theta_std)  # None; NLSE (snpse_np.nlse): the diffused prior's score
        step = TrainStep(model, be, opt, B, dt, weighted=weights is not None, added_score=added)
        th_tr, x_tr = be.to_device(th[tr_idx].astype(dt)), be.to_device(xs[tr_idx].astype(dt))
        d = net.dim_theta
        if weights is not None:
            sw_tr = np.sqrt(weights[tr_idx] / weights[tr_idx].mean())

        times = TimeSampler(self.sde, opts["time_sampling"])
        w_val = None if weights is None else weights[val_idx] / weights[val_idx].mean()
        val = ValidationSet(model, be, th[val_idx], xs[val_idx], B, times,
                            np.random.default_rng(self.rng.integers(2 ** 63)), dt, w_val, added_score=added,
                            residual=None if residual is None else residual[val_idx])
        r_tr = None if residual is None else residual[tr_idx]
        best, best_epoch, best_params = math.inf, 0, opt.eval_params.copy()
        plateau = Plateau(opts["patience"], opts["min_improvement"])
        progress = Progress(show)
        history = []
        stop_reason = None
        k = epoch = 0
        cooldown_seen = False  # after a cool-down began, the best weights are taken from it only
        max_epochs = -(-total // steps_per_epoch)
        while epoch < max_epochs and stop_reason is None:
            epoch += 1
            order = np.concatenate([self.rng.permutation(n_tr)[:steps_per_pass * B] for _ in range(passes)])
            # gathered once per epoch on the device; each step then takes a contiguous slice
            order_d = be.to_device(order)
            th_ep, x_ep = xp.take(th_tr, order_d, axis=0), xp.take(x_tr, order_d, axis=0)
            total_loss, count = 0.0, 0
            for start in range(0, order.size, B):
                opt.lr = sched.lr(k, progress.elapsed)
                loss = step(th_ep[start:start + B], x_ep[start:start + B], times.sample(B, self.rng),
                            self.rng.standard_normal((B, d)),
                            None if weights is None else sw_tr[order[start:start + B]],
                            None if r_tr is None else r_tr[order[start:start + B]])
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"training loss became {loss} at step {k + 1}; lower the learning rate "
                        f"(now {peak:g}) or check the data for extreme values")
                total_loss += loss
                count += 1
                k += 1
                if sched.finished(k, progress.elapsed):
                    stop_reason = ("cooled down" if sched.cooling else
                                   "max_seconds" if k < total else "budget done")
                    break
            train_loss = total_loss / max(count, 1)
            val_loss = val.loss(opt.eval_params)
            if not math.isfinite(val_loss):
                raise FloatingPointError(
                    f"validation loss became {val_loss} at epoch {epoch}; lower the learning rate "
                    f"(now {peak:g}) or check the data for extreme values")
            history.append((k, train_loss, val_loss, opt.lr))
            if sched.cooling and not cooldown_seen:  # the cool-down began in this epoch
                cooldown_seen, best = True, math.inf
            if val_loss < best:
                best, best_epoch = val_loss, epoch
                best_params[...] = opt.eval_params
            if stop_reason is None and plateau.update(k, val_loss):
                if sched.kind == "constant":
                    stop_reason = "early stopping"
                elif not sched.cooling:  # anneal from here instead of stopping at a high rate
                    sched.begin_cooldown(k, progress.elapsed)
                    cooldown_seen, best = True, math.inf
            phase = "cool-down" if sched.cooling else "stable" if sched.kind == "wsd" else sched.kind
            progress.update(f"step {k:6d}/{total} ({phase})  lr {opt.lr:.2e}  train {train_loss:.4f}  "
                            f"val {val_loss:.4f}  best {best:.4f} (epoch {best_epoch})  {progress.elapsed:6.1f}s")
        if stop_reason is None:
            stop_reason = "budget done"
        cooldown_step = sched.cooldown[0] if sched.cooldown is not None else None
        if cooldown_step is not None:
            why = "plateau" if plateau.triggered_at == cooldown_step else "budget"
            stop_reason += f" (cool-down from step {cooldown_step}: {why})"
        progress.done(f"trained {k} steps ({epoch} epochs) in {progress.elapsed:.1f}s, {stop_reason}; "
                      f"best validation loss {best:.4f} at epoch {best_epoch}")
        self.summary = dict(steps=k, total_steps=total, epochs=epoch, steps_per_epoch=steps_per_epoch,
                            best_epoch=best_epoch, best_val_loss=best, stop_reason=stop_reason,
                            cooldown_step=cooldown_step, train_seconds=progress.elapsed, n_train=n_tr, n_val=n_val,
                            n_invalid=self.n_invalid, baseline="gaussian" if baseline else None,
                            weights_ess=None if weights is None else effective_sample_size(weights),
                            history=np.array(history),
                            **dict(opts, ema_decay=decay, warmup_steps=warmup, learning_rate=peak))
        self._posterior = ScorePosterior(model, best_params, theta_std, x_std, self.prior, be, dtype=dt,
                                         threads=self.threads)
        return self._posterior

    def _added_score(self, theta_std):
        """A score g(z_t, t) added to the network's in the DSM loss (``TrainStep``), or None: the
        hook a variant that learns part of the score overrides (``nlse.NLSE``); called in ``train``
        after the z-scoring ``theta_std`` and the VE sigma_max are fixed."""
        return None

    def _initial_params(self, net, init_params, dtype):
        """A fresh initialisation, or the given weights (a warm start), as a host (size,) array."""
        if init_params is None:
            return net.init(self.rng, dtype)
        try:
            host = np.asarray(self.backend.to_host(init_params), dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"init_params must be a numeric array of shape ({net.size},): {err}") from None
        if host.shape != (net.size,):
            raise ValueError(f"init_params must have shape ({net.size},), got {host.shape}")
        if not np.all(np.isfinite(host)):
            raise ValueError("init_params contain NaN or inf")
        return host.astype(dtype)

    def build_posterior(self):
        """The posterior of the last ``train`` (sbi-style)."""
        if self._posterior is None:
            raise ValueError("train() has not run yet")
        return self._posterior


def _check_train_options(opts):
    """ValueError naming the option for anything train() cannot use."""
    def positive_int(name, allow_none=False):
        v = opts[name]
        if v is None and allow_none:
            return
        if isinstance(v, bool) or not isinstance(v, (int, np.integer, float)) or int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")

    for name in ("max_steps", "max_epochs"):
        positive_int(name, allow_none=True)
    pat = opts["patience"]
    if not (pat == "auto" or pat == math.inf):
        positive_int("patience")
    mi = opts["min_improvement"]
    if not isinstance(mi, (int, float, np.floating)) or not (math.isfinite(mi) and 0.0 <= mi < 1.0):
        raise ValueError(f"min_improvement must lie in [0, 1), got {mi!r}")
    for name in ("batch_size", "min_steps_per_epoch"):
        positive_int(name)
    v = opts["warmup_steps"]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer, float)) or int(v) != v or v < 0:
        raise ValueError(f"warmup_steps must be a non-negative int, got {v!r}")
    vf = opts["validation_fraction"]
    if not isinstance(vf, (int, float, np.floating)) or not 0.0 < vf < 1.0:
        raise ValueError(f"validation_fraction must lie in (0, 1), got {vf!r}")
    lr = opts["learning_rate"]
    if lr != "auto" and (isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating))
                         or not (math.isfinite(lr) and lr > 0)):
        raise ValueError(f"learning_rate must be 'auto' or a positive finite number, got {lr!r}")
    flr = opts["final_learning_rate"]
    if not isinstance(flr, (int, float, np.floating)) or not (math.isfinite(flr) and 0 <= flr
                                                              and (lr == "auto" or flr <= lr)):
        raise ValueError(f"final_learning_rate must lie in [0, learning_rate], got {flr!r}")
    if opts["lr_schedule"] not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {opts['lr_schedule']!r}")
    ms = opts["max_seconds"]
    if ms is not None and (not isinstance(ms, (int, float, np.floating)) or not (math.isfinite(ms) and ms > 0)):
        raise ValueError(f"max_seconds must be a positive number or None, got {ms!r}")
    ema = opts["ema_decay"]
    if ema != "auto" and (isinstance(ema, bool) or not isinstance(ema, (int, float, np.floating))
                          or not 0.0 <= ema < 1.0):
        raise ValueError(f"ema_decay must be 'auto', 0 (off) or a float in (0, 1), got {ema!r}")


def _check_weights(sample_weights, n):
    """sample_weights as a float64 (n,) array; ValueError unless it has n positive finite entries."""
    w = np.asarray(sample_weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"sample_weights must have shape ({n},), one per row of get_simulations() "
                         f"(after dropping invalid x), got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("sample_weights contain NaN or inf")
    if not np.all(w > 0):
        raise ValueError(f"sample_weights must be positive, got {int(np.sum(w <= 0))} entries <= 0")
    return w


def effective_sample_size(weights):
    """Kish's effective sample size (sum w)^2 / sum w^2 of non-negative weights (n,)."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.max()
    return float(w.sum() ** 2 / np.sum(w * w))
