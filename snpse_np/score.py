"""The score: network + SDE + preconditioning = s(theta_t, x, t) in standardised space, and the
field the samplers evaluate it through. The one home of "the score" in the package.

    s(theta_t, x, t) = net(c_in(t) theta_t, x, tau(t)) / c_out(t)

- ``precondition="none"`` (the paper): c_in = c_out = 1; the raw output is the score, so it must
  grow like 1/sigma_t as t -> 0.
- ``precondition="noise"``: c_in = 1/sqrt(alpha_t^2 + sigma_t^2) (unit-variance input for
  standardised theta), c_out = sqrt(sigma_t^2 + floor^2): for sigma_t >> floor the network
  predicts -z, an O(1) target (the usual noise-prediction form; Karras et al. 2022 call c_in the
  input scaling); for sigma_t << floor it predicts floor * score, also O(1). Without the floor,
  c_out = sigma_t amplifies any O(1) output error by 1/sigma_t where DSM carries no signal
  (sigma_t far below the posterior width): measured, the learned VP score at t = 1e-4 was 35x
  off, which wrecked log-densities. ``floor=0`` gives pure noise prediction.
- ``time_input="sigma"`` (the authors' code) feeds tau = sigma_t to the sinusoidal embedding;
  ``"t"`` (the paper's text) feeds tau = t; ``"log_sigma"`` feeds tau = log sigma_t, which
  resolves small noise levels (with tau = sigma, every channel is nearly constant for
  sigma << 1, exactly where samples get their detail).

With the weight lambda = sigma_t^2 the DSM loss per row is mean_j (sigma s_j + z_j)^2
= mean_j (c out_j + z_j)^2 with c = sigma / c_out (``ScoreModel.dsm_coefficients``): see
``backends.numpy_ref.dsm_loss``. Training never forms the score itself; sampling applies
s = out / c_out through ``score_from_output``.

The field protocol (``Field``): what the samplers (``sampling``), the log-densities, the
truncation and the i.i.d. compositions (``iid.IIDField``) drive, and what test doubles
(tests/gaussian_field.py) implement. A field is the score bound to parameters and conditioning
for a batch of B rows; theta is a (B, d) array on ``backend`` of ``dtype``; t is one float (the
same time for every row: the fixed-step samplers) or a float64 numpy array (B,) of per-row times
(adaptive RK45). It offers

- ``backend``, ``sde``, ``dtype``: where theta lives, the SDE (``sde.SDE``), the float type;
- ``score(theta, t)`` -> s (B, d);
- ``velocity(theta, t)`` -> v = f(t) theta - g(t)^2 s / 2 (B, d), the probability-flow ODE's
  right-hand side (``Field`` derives it from ``score``);
- ``velocity_div(theta, t)`` -> (v (B, d), div v (B,)) for log-densities (optional: a field
  that has none raises NotImplementedError);
- ``to_device(a)`` -> the host array ``a`` as a contiguous ``dtype`` array on ``backend``: the
  integrators move per-row step sizes and masks with it.
"""
import abc

import numpy as np

from .rng import as_generator

PRECONDITIONS = ("none", "noise")
TIME_INPUTS = ("sigma", "t", "log_sigma")
# On the CPU the network runs over chunks of this many rows: a chunk's 256-wide float32
# activations (1 MB) stay in cache between a GEMM and its activation (~15% faster per
# Euler-Maruyama step at 10,000 rows here, kernels/em_trajectory.py). The GPU takes the batch whole.
CPU_CHUNK_ROWS = 1024


class ScoreModel:
    """The score network ``net`` (``nn.ScoreNetwork``) and SDE ``sde`` with the preconditioning
    and time input above; the coefficients every user of the score takes from here.

    ``gaussian``: None, or the linear-Gaussian fit of theta | x (``linear_gaussian.LinearGaussian``):
    sampling starts from its diffused p_T (``base_sample``) and log-densities end on it
    (``base_log_prob``); with ``baseline=True`` its diffused score is also added to the network's,
    s = s_G + net / c_out. The conditioning rows of one observation (``condition``) are then the
    network's x part (h0 columns) followed by the fit's mean m(x) (d columns), so everything that
    gathers, repeats or caches conditioning rows carries both; ``split`` parts them.
    """

    def __init__(self, net, sde, precondition="noise", time_input="sigma", floor=0.1, gaussian=None,
                 baseline=False):
        if precondition not in PRECONDITIONS:
            raise ValueError(f"precondition must be one of {PRECONDITIONS}, got {precondition!r}")
        if time_input not in TIME_INPUTS:
            raise ValueError(f"time_input must be one of {TIME_INPUTS}, got {time_input!r}")
        self.net, self.sde = net, sde
        self.precondition, self.time_input, self.floor = precondition, time_input, float(floor)
        if gaussian is not None and net is not None and (gaussian.dim_theta, gaussian.dim_x) != (net.dim_theta,
                                                                                                  net.dim_x):
            raise ValueError(f"the Gaussian fit is for (d, p) = ({gaussian.dim_theta}, {gaussian.dim_x}), "
                             f"the network for ({net.dim_theta}, {net.dim_x})")
        if baseline and gaussian is None:
            raise ValueError("a baseline needs the Gaussian fit (gaussian=...)")
        self.gaussian, self.baseline = gaussian, bool(baseline)

    def condition(self, backend, params, xs):
        """Conditioning rows for standardised observations xs (n, p) on the backend: the network's
        x part (n, h0) (``nn.ScoreNetwork.condition``), with a Gaussian fit followed by m(x) (n, h0 + d)."""
        xc = self.net.condition(backend, params, xs)
        if self.gaussian is None:
            return xc
        mean = self.gaussian.mean(backend.to_host(xs)).astype(xc.dtype)
        return backend.xp.concatenate([xc, backend.to_device(mean)], axis=1)

    def base_sample(self, n, rng, mean=None):
        """(n, d) host draws at t = T where sampling starts: the Gaussian fit's p_T for the rows'
        means ``mean`` (1 or n, d host rows, z space) when the model has a fit, else the SDE's base."""
        if self.gaussian is None or mean is None:
            return self.sde.prior_sample(n, self.net.dim_theta, rng)
        return self.gaussian.diffused_sample(n, mean, *self._marginal_T(), rng)

    def base_log_prob(self, theta, mean=None):
        """log density (n,) of host rows theta (n, d) at t = T under the distribution ``base_sample`` draws."""
        if self.gaussian is None or mean is None:
            return self.sde.prior_log_prob(theta)
        return self.gaussian.diffused_log_prob(theta, mean, *self._marginal_T())

    def _marginal_T(self):
        alpha, sigma = self.sde.marginal(np.float64(self.sde.T))
        return float(alpha), float(sigma)

    def split(self, xc):
        """(the network's x part, the Gaussian fit's mean rows or None) of conditioning rows, each
        contiguous (the network's kernels take contiguous rows)."""
        if self.gaussian is None:
            return xc, None
        return xc[:, :xc.shape[1] - self.net.dim_theta].copy(), self.fit_means(xc)

    def fit_means(self, xc):
        """The Gaussian fit's mean rows m(x) (rows, d) of conditioning rows xc (a contiguous copy), or None."""
        if self.gaussian is None:
            return None
        return xc[:, xc.shape[1] - self.net.dim_theta:].copy()

    def coefficients(self, t):
        """(alpha, sigma, c_in, c_out, tau) as float64 arrays of the shape of t."""
        alpha, sigma = self.sde.marginal(t)
        if self.precondition == "noise":
            c_in, c_out = 1.0 / np.sqrt(alpha * alpha + sigma * sigma), np.sqrt(sigma * sigma + self.floor ** 2)
        else:
            c_in, c_out = np.ones_like(sigma), np.ones_like(sigma)
        if self.time_input == "sigma":
            tau = sigma
        elif self.time_input == "log_sigma":
            tau = np.log(sigma)
        else:
            tau = np.asarray(t, dtype=np.float64) * np.ones_like(sigma)
        return alpha, sigma, c_in, c_out, tau

    def dsm_coefficients(self, t):
        """(alpha, sigma, c_in, tau, c) float64 arrays of the shape of t for a DSM step: the
        perturbation theta_in = c_in (alpha theta_0 + sigma z), the time input tau, and the loss
        coefficient c = sigma / c_out (sigma s + z = c out + z)."""
        alpha, sigma, c_in, c_out, tau = self.coefficients(t)
        return alpha, sigma, c_in, tau, sigma / c_out


def score_from_output(out, c_out, to_device):
    """s = out / c_out, in place on the network output ``out`` (B, d), which it returns.

    c_out: one float (every row at the same time) or a float64 host array (B,), moved by
    ``to_device`` (a field's ``to_device``)."""
    if np.ndim(c_out) == 0:
        out *= 1.0 / c_out
    else:
        out /= to_device(c_out)[:, None]
    return out


class Field(abc.ABC):
    """Base of the fields (the protocol in the module docstring): subclasses set ``backend``,
    ``sde``, ``dtype`` and implement ``score``; ``velocity`` and ``to_device`` come from here."""

    backend = sde = dtype = None

    @abc.abstractmethod
    def score(self, theta, t):
        """s (B, d) at theta (B, d) and time t (a float or (B,) float64)."""

    def to_device(self, a):
        """Host array -> contiguous ``dtype`` array on ``backend``."""
        return self.backend.to_device(np.ascontiguousarray(a, dtype=self.dtype))

    def column(self, a):
        """A per-row coefficient as a (B, 1) device column, or a float when t is one float."""
        return float(a) if np.ndim(a) == 0 else self.to_device(a)[:, None]

    def velocity(self, theta, t):
        """v = f(t) theta - g(t)^2 s / 2 (the probability-flow ODE right-hand side), (B, d)."""
        s = self.score(theta, t)
        f, g = self.sde.drift_coef(t), self.sde.diffusion(t)
        return self.column(f) * theta - self.column(0.5 * g * g) * s

    def velocity_div(self, theta, t):
        """(v (B, d), div v (B,)); fields without a divergence say so."""
        raise NotImplementedError(f"{type(self).__name__} has no divergence (velocity_div): "
                                  "it cannot give log-densities")


class ScoreField(Field):
    """The score model bound to parameters and one observation (xc (1, h0)), or one x part per
    row (xc (B, h0): ``ScorePosterior.sample_batched`` and the i.i.d. trials), for a batch of B rows.

    ``score(theta, t)``, ``velocity(theta, t)`` and ``velocity_div(theta, t)`` evaluate the
    network on the backend; t is one float (the same time for every row: the fixed-step
    samplers; nothing is copied to the device and the time row is folded into the network's
    bias) or a float64 numpy array (B,) of per-row times (adaptive RK45).
    ``score`` returns the network's output buffer scaled in place: use it before the next call.
    """

    def __init__(self, model, backend, params, xc, batch, dtype, divergence=None, seed=None):
        self.model, self.backend = model, backend
        self.xc, mean = model.split(xc)  # the network's x part; the Gaussian fit's m(x) rows (or None)
        self.mean = mean if model.baseline else None  # the baseline's score needs them
        if xc.shape[0] not in (1, batch):
            raise ValueError(f"xc must have 1 or {batch} rows (one per row of the batch), got {xc.shape[0]}")
        self.per_row_x = xc.shape[0] != 1 or batch == 1
        self.net, self.sde = model.net, model.sde
        self.params = self.net.views(params)  # built once: the loops below reuse them
        self.dtype = dtype
        self.divergence = divergence
        d = self.net.dim_theta
        tangents = {None: 0, "exact": d, "hutchinson": 1}[divergence]
        xp = backend.xp
        # tangents reuse the last forward's caches, so with a divergence the batch runs whole
        chunked = divergence is None and backend.name != "cuda" and batch > CPU_CHUNK_ROWS
        self.chunk = CPU_CHUNK_ROWS if chunked else batch
        self.ws = self.net.workspace(backend, self.chunk, dtype, tangents=tangents)
        self.theta_in = xp.empty((self.chunk, d), dtype=dtype)
        self.out = xp.empty((batch, d), dtype=dtype) if chunked else None
        self._ragged = {}  # rows -> (workspace, theta_in) for a last chunk of another size
        # Per-row x parts in runs of equal rows (sample_batched and the i.i.d. trials keep an
        # observation's rows together) run segment by segment with the run's ONE row, so the network
        # folds the x part and a shared time into its bias as for one observation; the per-row path
        # embeds the time in every row (20-25% more work per evaluation). Runs under 64 rows stay per row.
        self.segments = None
        if self.per_row_x and divergence is None and backend.name != "cuda" and batch > 1:
            host = backend.to_host(self.xc)
            bounds = np.concatenate([[0], np.flatnonzero(np.any(host[1:] != host[:-1], axis=1)) + 1, [batch]])
            if np.min(np.diff(bounds)) >= 64:
                self.segments = [(s, min(b, s + self.chunk)) for a, b in zip(bounds[:-1], bounds[1:])
                                 for s in range(a, b, self.chunk)]
                if len(self.segments) > 1 and self.out is None:
                    self.out = xp.empty((batch, d), dtype=dtype)
        self.rng = as_generator(seed)
        if divergence == "exact":
            eye = np.zeros((d, batch, d), dtype=dtype)
            for k in range(d):
                eye[k, :, k] = 1.0
            self.t_in = backend.to_device(eye)

    def _buffers(self, rows):
        if rows == self.chunk:
            return self.ws, self.theta_in
        if rows not in self._ragged:
            self._ragged[rows] = (self.net.workspace(self.backend, rows, self.dtype),
                                  self.backend.xp.empty((rows, self.net.dim_theta), dtype=self.dtype))
        return self._ragged[rows]

    def _net(self, theta, t):
        """(network output (B, d), (alpha, sigma, c_in, c_out)) at theta_in = c_in theta; chunked on
        the CPU. The coefficients are floats for one t, float64 (B,) host arrays for per-row times."""
        xp, n = self.backend.xp, theta.shape[0]
        if np.ndim(t) == 0:
            alpha, sigma, c_in, c_out, tau = (float(c) for c in self.model.coefficients(np.float64(t)))
        else:
            alpha, sigma, c_in, c_out, tau = self.model.coefficients(t)
            c_in_d, tau_d = self.to_device(c_in), self.to_device(tau)
        coefs = alpha, sigma, c_in, c_out
        spans = self.segments or [(s, min(n, s + self.chunk)) for s in range(0, n, self.chunk)]
        for s, e in spans:
            ws, theta_in = self._buffers(e - s)
            if np.ndim(t) == 0:
                xp.multiply(theta[s:e], c_in, out=theta_in)
                tau_c = tau
            else:
                xp.multiply(theta[s:e], c_in_d[s:e, None], out=theta_in)
                tau_c = tau_d[s:e]
            if self.segments is not None:
                xc = self.xc[s:s + 1]  # one run: its one row
            else:
                xc = self.xc[s:e] if self.per_row_x else self.xc  # per-row x parts follow the chunk
            out = self.net.forward(self.backend, self.params, theta_in, tau_c, ws, xc=xc)
            if self.out is None:
                return out, coefs
            self.out[s:e] = out
        return self.out[:n], coefs

    def score(self, theta, t):
        """s (B, d): the network's output buffer scaled in place (use it before the next call)."""
        out, (alpha, sigma, _, c_out) = self._net(theta, t)
        s = score_from_output(out, c_out, self.to_device)
        if self.mean is not None:
            self.model.gaussian.add_score(self.backend, s, theta, self.mean, alpha, sigma)
        return s

    def velocity_div(self, theta, t):
        """(v (B, d), div v (B,)) with div v = d f - g^2 Tr(ds/dtheta) / 2 and
        Tr(ds/dtheta) = (c_in / c_out) Tr(d net / d theta_in): exact (d forward-mode tangents e_k)
        or Hutchinson's estimate u . (J u) with one Rademacher u per call (unbiased). 1/c_out is
        folded into the g^2 / 2 coefficient here rather than applied by ``score_from_output``.
        A baseline adds its score to v and its exact trace (``LinearGaussian.trace``) to div v."""
        xp = self.backend.xp
        out, (alpha, sigma, c_in, c_out) = self._net(theta, t)
        f, g = self.sde.drift_coef(t), self.sde.diffusion(t)
        half_g2 = 0.5 * g * g
        v = self.column(f) * theta - self.column(half_g2 / c_out) * out
        if self.mean is not None:
            s_g = self.model.gaussian.add_score(self.backend, xp.zeros_like(theta), theta, self.mean, alpha, sigma)
            v -= self.column(half_g2) * s_g
        if self.divergence == "exact":
            t_in = self.t_in
        else:
            t_in = self.to_device(self.rng.choice(np.array([-1.0, 1.0]), size=(1,) + theta.shape))
        t_out = self.net.tangent(self.backend, self.params, t_in, self.ws)
        tr = xp.empty(theta.shape[0], dtype=self.dtype)
        self.backend.ops.trace_rows(tr, t_out, t_in)
        d = theta.shape[1]
        tr_g = 0.0 if self.mean is None else self.model.gaussian.trace(alpha, sigma)
        if np.ndim(t) == 0:
            div = float(d * f - half_g2 * tr_g) - float(half_g2 * c_in / c_out) * tr
        else:
            div = self.to_device(d * f - half_g2 * tr_g) - self.to_device(half_g2 * c_in / c_out) * tr
        return v, div


class ScoreJacobian:
    """Per-row score and its Jacobian ds/dz of the learned score, for rows with per-row x parts.

    ``__call__(z, t)`` -> (s (R, d), J (R, d, d)) on the host in float64, with
    ds/dz = (c_in / c_out) d net / d theta_in by d forward-mode tangents (``ScoreNetwork.tangent``),
    over chunks of ``CPU_CHUNK_ROWS`` rows on the CPU (the tangent buffers stay in cache), plus a
    baseline's score and Jacobian (``LinearGaussian.score`` / ``jacobian``).
    xc: (R, h0) device conditioning rows (``ScoreModel.condition``), one per row of z.
    """

    def __init__(self, model, backend, params, xc, dtype):
        self.model, self.backend, self.dtype = model, backend, dtype
        self.xc, mean = model.split(xc)
        self.mean = None if mean is None or not model.baseline else backend.to_host(mean).astype(np.float64)
        self.net = model.net
        self.params = self.net.views(params)
        self.rows = xc.shape[0]
        self.chunk = self.rows if backend.name == "cuda" else min(self.rows, CPU_CHUNK_ROWS)
        self._ws = {}

    def _buffers(self, rows):
        if rows not in self._ws:
            d = self.net.dim_theta
            eye = np.zeros((d, rows, d), dtype=self.dtype)
            for k in range(d):
                eye[k, :, k] = 1.0
            self._ws[rows] = (self.net.workspace(self.backend, rows, self.dtype, tangents=d),
                              self.backend.to_device(eye))
        return self._ws[rows]

    def __call__(self, z, t):
        be, d = self.backend, self.net.dim_theta
        n = z.shape[0]
        alpha, sigma, c_in, c_out, tau = self.model.coefficients(np.asarray(t, dtype=np.float64))
        s_out, j_out = np.empty((n, d)), np.empty((n, d, d))
        for a in range(0, n, self.chunk):
            b = min(n, a + self.chunk)
            ws, eye = self._buffers(b - a)
            if np.ndim(t) == 0:
                ci, co, ta = float(c_in), float(c_out), float(tau)
                theta_in = be.to_device((z[a:b] * ci).astype(self.dtype))
                tau_c = ta
                scale_s, scale_j = 1.0 / co, ci / co
            else:
                ci, co = c_in[a:b], c_out[a:b]
                theta_in = be.to_device((z[a:b] * ci[:, None]).astype(self.dtype))
                tau_c = be.to_device(tau[a:b].astype(self.dtype))
                scale_s, scale_j = (1.0 / co)[:, None], (ci / co)[:, None, None]
            out = self.net.forward(be, self.params, theta_in, tau_c, ws, xc=self.xc[a:b])
            s_out[a:b] = be.to_host(out).astype(np.float64) * scale_s
            tan = be.to_host(self.net.tangent(be, self.params, eye, ws)).astype(np.float64)  # (d, R, d)
            j_out[a:b] = np.transpose(tan, (1, 2, 0)) * scale_j  # J[r, i, k] = d out_i / d in_k
        if self.mean is not None:
            bl = self.model.gaussian
            al, sg = (alpha, sigma) if np.ndim(t) == 0 else (alpha[:n], sigma[:n])
            s_out += bl.score(z, self.mean[:n], al, sg)
            j_out += bl.jacobian(al, sg)
        return s_out, j_out
