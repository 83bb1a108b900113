"""NPSE: amortised neural posterior score estimation (Sharrock et al. 2024, Sec. 2.2).

Train a conditional score network s(theta_t, x, t) ~ grad log p_t(theta_t | x) by denoising
score matching on simulated pairs (theta_i, x_i) ~ p(theta) p(x | theta):

    L = E_{t ~ U[t_min, 1], z ~ N(0, I)} [ mean_j (sigma_t s_j(alpha_t theta + sigma_t z, x, t) + z_j)^2 ]

(lambda_t = sigma_t^2, the authors' weighting), in z-scored theta and x space, with Adam,
reshuffled minibatches, a validation split with early stopping, and the best-validation
weights kept. The result is a ``ScorePosterior`` that samples and evaluates log-densities.

Usage (sbi-style):

    inference = NPSE(prior, sde="ve", seed=0)
    posterior = inference.append_simulations(theta, x).train()
    samples = posterior.sample(10_000, x=x_o)
"""
import math
import warnings

import numpy as np

from .backend import get_backend
from .checks import integer, real, real_array
from .nn import ScoreNetwork
from .optim import Adam
from .posterior import ScorePosterior
from .progress import Progress
from .rng import as_generator
from .score import ScoreModel
from .sde import VESDE, make_sde, max_pairwise_distance
from .standardize import Standardizer
from .time_sampling import TimeSampler

TRAIN_DEFAULTS = dict(max_epochs=2000, batch_size=128, learning_rate=5e-4, validation_fraction=0.15,
                      patience=50, ema_decay=0.999, max_seconds=None, time_sampling="uniform",
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

    Packed rows (each B long): alpha, sigma, c_in, tau, c = sigma / c_out, then z (B, d) and,
    with weights, z' = sqrt(w) z (B, d). A weighted loss runs through the unweighted kernel: with
    c' = sqrt(w) c and z' = sqrt(w) z, r' = c' out + z' = sqrt(w) r, so dsm_loss gives mean w r^2
    and dout = 2 w c r / (B d).
    """

    def __init__(self, model, batch, dim_theta, dtype, weighted=False):
        self.model, self.B, self.d = model, int(batch), int(dim_theta)
        self.weighted = bool(weighted)
        self.host = np.empty((5 + self.d * (2 if weighted else 1)) * self.B, dtype)

    def fill(self, t, z, sqrt_w=None):
        """Host side: the coefficients at times t (B,), the noise z (B, d), weights' roots (B,)."""
        B, d, host = self.B, self.d, self.host
        alpha, sigma, c_in, c_out, tau = self.model.coefficients(t)
        for k, v in enumerate((alpha, sigma, c_in, tau, sigma / c_out)):
            host[k * B:(k + 1) * B] = v
        z_host = host[5 * B:(5 + d) * B].reshape(B, d)
        z_host[...] = z
        if self.weighted:
            host[4 * B:5 * B] *= sqrt_w
            host[(5 + d) * B:].reshape(B, d)[...] = z_host * sqrt_w[:, None]

    def upload(self, backend):
        """One copy; returns device views (alpha, sigma, c_in, tau, c, z, z for the loss)."""
        B, d = self.B, self.d
        dev = backend.to_device(self.host)
        a, s, c_in, tau, c = (dev[k * B:(k + 1) * B] for k in range(5))
        z = dev[5 * B:(5 + d) * B].reshape(B, d)
        z_loss = dev[(5 + d) * B:].reshape(B, d) if self.weighted else z
        return a, s, c_in, tau, c, z, z_loss


class NPSE:
    """Neural posterior score estimation.

    prior: a ``snpse_np`` prior (or any object with ``dim``, ``sample``, ``log_prob``,
    ``support_contains``). sde: "ve", "vp", "subvp" or an SDE instance; ``sde_kwargs`` go to
    its constructor (VE: sigma_min, sigma_max; VP: beta_min, beta_max). The VE sigma_max defaults
    to the largest pairwise distance of the standardised training theta (Song & Ermon 2020).
    backend: None (best available), "numpy", "numba" or "cuda". precondition: "noise"
    (default; ``floor`` is its small-noise output scale, see ``score``) or "none" (the paper);
    time_input: "sigma" (the authors' code), "t" or "log_sigma".
    """

    def __init__(self, prior, sde="ve", backend=None, seed=0, hidden=256, activation="silu",
                 precondition="noise", time_input="sigma", floor=0.1, dtype=np.float32, show_progress=True,
                 **sde_kwargs):
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

    def train(self, max_epochs=None, batch_size=None, learning_rate=None, validation_fraction=None,
              patience=None, ema_decay=None, max_seconds=None, time_sampling=None, min_steps_per_epoch=None,
              show_progress=None, init_params=None, sample_weights=None):
        """Train a fresh score network on all simulations; return the ``ScorePosterior``.

        Arguments left None take ``TRAIN_DEFAULTS``. An epoch is as many reshuffled passes over the
        training split (each with fresh t and z) as make at least ``min_steps_per_epoch`` Adam
        steps: with few simulations one pass is a handful of steps, and an epoch-based budget
        would starve the optimiser (the authors' code makes the same point with its repeated
        "t_sample_size" passes). ``patience`` counts epochs without a new best validation loss. The
        validation loss uses noise and times drawn once, so it is comparable between epochs.
        ``max_seconds`` caps the wall time. A NaN/inf loss stops with a FloatingPointError.
        ``time_sampling``: "uniform" t or "lognormal" sigma (see ``time_sampling``).
        ``init_params`` starts from given weights (a warm start) instead of a fresh initialisation.

        ``sample_weights``: optional importance weights, one per simulation, shape (n,), aligned
        with the rows of ``get_simulations()`` (so after rows with NaN/inf x were dropped), all
        positive and finite. The loss becomes sum_i w_i l_i / sum_i w_i (a self-normalised
        importance-weighted DSM loss, as SNPSE-B needs): the weights follow their rows through the
        train/validation split and are rescaled to mean 1 on each split separately, so the training
        and validation losses both estimate the same weighted objective and early stopping tracks
        it. They are a training argument, not stored with the rows, because importance weights
        p(theta)/p~(theta) change whenever the proposal mixture p~ gains a round. With all weights
        equal to 1, training is bit-identical to training without weights.
        """
        opts = dict(TRAIN_DEFAULTS)
        for k, v in dict(max_epochs=max_epochs, batch_size=batch_size, learning_rate=learning_rate,
                         validation_fraction=validation_fraction, patience=patience,
                         ema_decay=ema_decay, max_seconds=max_seconds, time_sampling=time_sampling,
                         min_steps_per_epoch=min_steps_per_epoch).items():
            if v is not None:
                opts[k] = v
        if not 0.0 < opts["validation_fraction"] < 1.0:
            raise ValueError("validation_fraction must lie in (0, 1)")
        for k in ("max_epochs", "batch_size", "patience"):
            if int(opts[k]) != opts[k] or opts[k] < 1:
                raise ValueError(f"{k} must be a positive int, got {opts[k]!r}")
        show = self.show_progress if show_progress is None else show_progress
        theta, x = self.get_simulations()
        n = theta.shape[0]
        weights = None if sample_weights is None else _check_weights(sample_weights, n)
        n_val = max(1, int(round(n * opts["validation_fraction"])))
        if n - n_val < 1:
            raise ValueError(f"too few simulations ({n}) for a validation split")

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
        model = ScoreModel(net, self.sde, self.precondition, self.time_input, self.floor)
        if init_params is None:
            params = be.to_device(net.init(self.rng, dt))
        else:
            if init_params.shape != (net.size,):
                raise ValueError(f"init_params must have shape ({net.size},), got {init_params.shape}")
            params = be.to_device(be.to_host(init_params).astype(dt))
        grads = xp.empty_like(params)
        opt = Adam(be, params, opts["learning_rate"], ema_decay=opts["ema_decay"])

        th_tr, x_tr = be.to_device(th[tr_idx].astype(dt)), be.to_device(xs[tr_idx].astype(dt))
        ws = net.workspace(be, B, dt, train=True)
        pv, gv = net.views(params), net.views(grads)  # once: ~30 views cost ~0.2 ms a step otherwise
        d = net.dim_theta
        theta_in, dout = xp.empty((B, d), dt), xp.empty((B, d), dt)
        draws = StepDraws(model, B, d, dt, weighted=weights is not None)
        if weights is not None:
            w_tr = weights[tr_idx] / weights[tr_idx].mean()
            sw_tr = np.sqrt(w_tr)

        times = TimeSampler(self.sde, opts["time_sampling"])
        w_val = None if weights is None else weights[val_idx] / weights[val_idx].mean()
        val = self._validation_set(model, th[val_idx], xs[val_idx], B, times, w_val)
        best, best_epoch, best_params = math.inf, 0, opt.eval_params.copy()
        progress = Progress(show)
        history = []
        stop_reason = "max_epochs"
        epoch = 0
        steps_per_pass = n_tr // B  # the ragged last batch is dropped: fixed shapes, no reallocation
        passes = max(1, -(-int(opts["min_steps_per_epoch"]) // steps_per_pass))
        for epoch in range(1, int(opts["max_epochs"]) + 1):
            order = np.concatenate([self.rng.permutation(n_tr)[:steps_per_pass * B] for _ in range(passes)])
            # gathered once per epoch on the device; each step then takes a contiguous slice
            order_d = be.to_device(order)
            th_ep, x_ep = xp.take(th_tr, order_d, axis=0), xp.take(x_tr, order_d, axis=0)
            total, count = 0.0, 0
            for start in range(0, order.size, B):
                th0, xb = th_ep[start:start + B], x_ep[start:start + B]
                t = times.sample(B, self.rng)
                draws.fill(t, self.rng.standard_normal((B, d)),
                           None if weights is None else sw_tr[order[start:start + B]])
                a_d, s_d, cin_d, tau_d, c_d, z, z_loss = draws.upload(be)
                be.ops.dsm_perturb(theta_in, th0, z, a_d, s_d, cin_d)
                out = net.forward(be, pv, theta_in, tau_d, ws, x=xb)
                loss = be.ops.dsm_loss(dout, out, z_loss, c_d)
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"training loss became {loss} at epoch {epoch}; lower the learning rate "
                        f"(now {opts['learning_rate']}) or check the data for extreme values")
                net.backward(be, pv, dout, ws, gv)
                opt.step(grads)
                total += loss
                count += 1
            train_loss = total / max(count, 1)
            val_loss = self._validation_loss(model, opt.eval_params, val)
            if not math.isfinite(val_loss):
                raise FloatingPointError(
                    f"validation loss became {val_loss} at epoch {epoch}; lower the learning rate "
                    f"(now {opts['learning_rate']}) or check the data for extreme values")
            history.append((train_loss, val_loss))
            if val_loss < best:
                best, best_epoch = val_loss, epoch
                best_params[...] = opt.eval_params
            progress.update(f"epoch {epoch:4d}  train {train_loss:.4f}  val {val_loss:.4f}  "
                            f"best {best:.4f} (epoch {best_epoch})  {progress.elapsed:6.1f}s")
            if epoch - best_epoch >= opts["patience"]:
                stop_reason = "early stopping"
                break
            if opts["max_seconds"] is not None and progress.elapsed > opts["max_seconds"]:
                stop_reason = "max_seconds"
                break
        progress.done(f"trained {epoch} epochs in {progress.elapsed:.1f}s ({stop_reason}); "
                      f"best validation loss {best:.4f} at epoch {best_epoch}")
        self.summary = dict(epochs=epoch, best_epoch=best_epoch, best_val_loss=best, stop_reason=stop_reason,
                            train_seconds=progress.elapsed, n_train=n_tr, n_val=n_val, n_invalid=self.n_invalid,
                            weights_ess=None if weights is None else effective_sample_size(weights),
                            history=np.array(history), **opts)
        self._posterior = ScorePosterior(model, best_params, theta_std, x_std, self.prior, be, dtype=dt)
        return self._posterior

    def build_posterior(self):
        """The posterior of the last ``train`` (sbi-style)."""
        if self._posterior is None:
            raise ValueError("train() has not run yet")
        return self._posterior

    # ------------------------------------------------------------------ validation

    def _validation_set(self, model, th, xs, batch, times, weights=None):
        """Fixed (theta_in, x, z, c) in batches, repeated so that at least ~1,000 rows are scored.

        weights (n_val,) or None: importance weights (mean 1), folded into z and c as in training.
        """
        be, dt = self.backend, self.dtype
        reps = max(1, int(math.ceil(1000 / th.shape[0])))
        th, xs = np.tile(th, (reps, 1)), np.tile(xs, (reps, 1))
        rng = np.random.default_rng(self.rng.integers(2 ** 63))
        t = times.sample(th.shape[0], rng)
        z = rng.standard_normal(th.shape)
        alpha, sigma, c_in, c_out, tau = model.coefficients(t)
        theta_in = c_in[:, None] * (alpha[:, None] * th + sigma[:, None] * z)
        c = sigma / c_out
        if weights is not None:
            sw = np.sqrt(np.tile(weights, reps))
            z, c = sw[:, None] * z, sw * c
        batches = []
        for s in range(0, th.shape[0], batch):
            sl = slice(s, s + batch)
            batches.append(tuple(be.to_device(np.ascontiguousarray(a[sl], dtype=dt))
                                 for a in (theta_in, xs, z, tau, c)))
        ws = {}
        return batches, ws

    def _validation_loss(self, model, params, val):
        batches, wss = val
        be, net = self.backend, model.net
        total, rows = 0.0, 0
        for theta_in, xb, z, tau, c in batches:
            b = theta_in.shape[0]
            if b not in wss:
                wss[b] = (net.workspace(be, b, self.dtype, train=True), be.xp.empty_like(theta_in))
            ws, dout = wss[b]
            out = net.forward(be, params, theta_in, tau, ws, x=xb)
            total += be.ops.dsm_loss(dout, out, z, c) * b
            rows += b
        return total / rows


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
