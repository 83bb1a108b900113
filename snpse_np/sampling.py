"""Samplers and log-densities for a trained score model, in standardised theta space.

Reverse-time sampling from the base pi at t = 1 down to t_min (Song et al. 2021):

- ``"sde"``: Euler-Maruyama on the reverse SDE
      theta <- theta - [f theta - g^2 s] h + g sqrt(h) z;
- ``"pc"``: the same predictor followed by ``corrector_steps`` Langevin corrector steps with the
  signal-to-noise step size eps = 2 alpha (r |z| / |s|)^2 (Song et al. 2021, Alg. 4/5);
- ``"ode"``: the probability-flow ODE d theta/dt = v = f theta - g^2 s / 2 with fixed-step
  ``"euler"``, ``"heun"``, ``"rk4"`` (uniform in t), ``"edm"`` (Heun in Karras et al.'s scaled
  variables on their power-law noise grid: ``ode_edm``, the default for sampling), or adaptive
  ``"rk45"`` (Dormand-Prince 5(4)) with per-sample error control (each row has its own step
  size; the network takes per-row times anyway).

Log-density by the instantaneous change of variables (Chen et al. 2018; paper eq. 5):
    log p_0(theta) = log pi(theta_1) + int_{t_min}^1 div v(theta_t, t) dt,
integrating (theta, Delta) forward in time, with div v = d f(t) - g(t)^2 Tr(ds/dtheta) / 2 and
Tr(ds/dtheta) = (c_in / c_out) Tr(d net / d theta_in), the latter either exact (d forward-mode
tangents e_k through the network) or the Hutchinson estimate v . (J v) with Rademacher v.

Shapes: theta (B, d), per-row times t (B,), x conditioning rows xc (1, h0) or (B, h0) (one per row).
"""
import numpy as np

SAMPLERS = ("ode", "sde", "pc")
# On the CPU the network runs over chunks of this many rows: a chunk's 256-wide float32
# activations (1 MB) stay in cache between a GEMM and its activation (~15% faster per
# Euler-Maruyama step at 10,000 rows here, kernels/em_trajectory.py). The GPU takes the batch whole.
CPU_CHUNK_ROWS = 1024
FIXED_STEP_METHODS = ("euler", "heun", "rk4")  # uniform in t (``time_grid``); "edm" is its own grid
ODE_METHODS = FIXED_STEP_METHODS + ("rk45",)  # sampling and log-densities
SAMPLE_ODE_METHODS = ODE_METHODS + ("edm",)  # sampling only (``ode_edm`` integrates no divergence)

# Dormand-Prince 5(4) tableau (Dormand & Prince 1980), FSAL.
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = ((),
         (1 / 5,),
         (3 / 40, 9 / 40),
         (44 / 45, -56 / 15, 32 / 9),
         (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
         (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
         (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
_DP_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)  # b5 - b4


class ScoreField:
    """The score model bound to parameters and one observation (xc (1, h0)), or one x part per
    row (xc (B, h0): ``ScorePosterior.sample_batched`` and the i.i.d. trials), for a batch of B rows.

    ``score(theta, t)``, ``velocity(theta, t)`` and ``velocity_div(theta, t)`` evaluate the
    network on the backend; t is one float (the same time for every row: the fixed-step
    samplers; nothing is copied to the device and the time row is folded into the network's
    bias) or a float64 numpy array (B,) of per-row times (adaptive RK45).
    ``score`` returns the network's output buffer scaled in place: use it before the next call.
    """

    def __init__(self, model, backend, params, xc, batch, dtype, divergence=None, seed=None):
        from .rng import as_generator
        self.model, self.backend, self.xc = model, backend, xc
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
            host = backend.to_host(xc)
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

    def _dev(self, a):
        return self.backend.to_device(np.ascontiguousarray(a, dtype=self.dtype))

    def _col(self, a):
        """A per-row coefficient as a (B, 1) device column, or a float when t is one float."""
        return float(a) if np.ndim(a) == 0 else self._dev(a)[:, None]

    def _buffers(self, rows):
        if rows == self.chunk:
            return self.ws, self.theta_in
        if rows not in self._ragged:
            self._ragged[rows] = (self.net.workspace(self.backend, rows, self.dtype),
                                  self.backend.xp.empty((rows, self.net.dim_theta), dtype=self.dtype))
        return self._ragged[rows]

    def _net(self, theta, t):
        """(network output (B, d), c_in, c_out) at theta_in = c_in theta; chunked on the CPU."""
        xp, n = self.backend.xp, theta.shape[0]
        if np.ndim(t) == 0:
            _, _, c_in, c_out, tau = (float(c) for c in self.model.coefficients(np.float64(t)))
        else:
            _, _, c_in, c_out, tau = self.model.coefficients(t)
            c_in_d, tau_d = self._dev(c_in), self._dev(tau)
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
                return out, c_in, c_out
            self.out[s:e] = out
        return self.out[:n], c_in, c_out

    def score(self, theta, t):
        out, _, c_out = self._net(theta, t)
        if np.ndim(t) == 0:
            out *= 1.0 / c_out
        else:
            out /= self._dev(c_out)[:, None]
        return out

    def velocity(self, theta, t):
        """v = f(t) theta - g(t)^2 s / 2 (the probability-flow ODE right-hand side)."""
        s = self.score(theta, t)
        f, g = self.sde.drift_coef(t), self.sde.diffusion(t)
        return self._col(f) * theta - self._col(0.5 * g * g) * s

    def velocity_div(self, theta, t):
        """(v, div v) with the divergence exact or Hutchinson (see module docstring)."""
        xp = self.backend.xp
        out, c_in, c_out = self._net(theta, t)
        f, g = self.sde.drift_coef(t), self.sde.diffusion(t)
        half_g2 = 0.5 * g * g
        v = self._col(f) * theta - self._col(half_g2 / c_out) * out
        if self.divergence == "exact":
            t_in = self.t_in
        else:
            t_in = self._dev(self.rng.choice(np.array([-1.0, 1.0]), size=(1,) + theta.shape))
        t_out = self.net.tangent(self.backend, self.params, t_in, self.ws)
        tr = xp.empty(theta.shape[0], dtype=self.dtype)
        self.backend.ops.trace_rows(tr, t_out, t_in)
        d = theta.shape[1]
        if np.ndim(t) == 0:
            div = float(d * f) - float(half_g2 * c_in / c_out) * tr
        else:
            div = self._dev(d * f) - self._dev(half_g2 * c_in / c_out) * tr
        return v, div


def time_grid(sde, steps):
    """steps + 1 times from 1 down to t_min, uniform in t (geometric in sigma for VE)."""
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    return np.linspace(sde.T, sde.t_min, int(steps) + 1)


def edm_time_grid(sde, steps, rho=7.0, table=4097):
    """steps + 1 times from T down to t_min at which the scaled noise sigma~ = sigma_t / alpha_t
    follows Karras et al. (2022)'s power law (their eq. 5):

        sigma~_i = (sigma~_max^(1/rho) + i / steps (sigma~_min^(1/rho) - sigma~_max^(1/rho)))^rho.

    rho = 7 puts most steps at small noise, where the ODE bends. sigma~(t) increases in t for
    every SDE here; t(sigma~) is read off a table of ``table`` points geometric in t (VP-type
    SDEs have sigma~ ~ sqrt(t) near t_min, where a uniform table is far too coarse), linear in
    log t and log sigma~, so any SDE subclass works. The solvers use the exact coefficients at
    the returned t, so the table's error only moves the grid, never the ODE.
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    t_tab = np.geomspace(sde.t_min, sde.T, table)
    alpha, sigma = sde.marginal(t_tab)
    log_s = np.log(sigma / alpha)
    lo, hi = np.exp(log_s[0]), np.exp(log_s[-1])
    i = np.arange(int(steps) + 1) / int(steps)
    s = (hi ** (1 / rho) + i * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    t = np.exp(np.interp(np.log(s), log_s, np.log(t_tab)))
    t[0], t[-1] = sde.T, sde.t_min
    return t


def ode_edm(field, theta, steps, rho=7.0):
    """Probability-flow ODE by Heun's method in Karras et al. (2022)'s variables (their Alg. 1).

    With x~ = theta / alpha_t and sigma~ = sigma_t / alpha_t, x~ follows a variance-exploding
    process whatever the SDE (x~ = theta_0 + sigma~ z), whose probability-flow ODE is

        d x~ / d sigma~ = -sigma~ grad_x~ log p = -sigma~ alpha_t s(alpha_t x~, t),

    nearly linear in sigma~ when the posterior is concentrated, so a second-order step is
    accurate on few points of ``edm_time_grid``. Heun: d_i at sigma~_i, an Euler predictor to
    sigma~_{i+1}, the average slope. 2 * steps network evaluations; theta (B, d) from pi at
    t = 1 to t_min. Returns theta.
    """
    sde = field.sde
    t = edm_time_grid(sde, steps, rho)
    alpha, sigma = sde.marginal(t)
    s_hat = sigma / alpha
    x = theta * (1.0 / float(alpha[0]))

    def slope(x_hat, i):
        s = field.score(x_hat * float(alpha[i]), float(t[i]))
        return s * float(-s_hat[i] * alpha[i])

    for i in range(len(t) - 1):
        h = float(s_hat[i + 1] - s_hat[i])
        d1 = slope(x, i).copy()  # score() hands out its output buffer: keep a copy
        x_pred = x + h * d1
        d2 = slope(x_pred, i + 1)
        x = x + (0.5 * h) * (d1 + d2)
    return x * float(alpha[-1])


def euler_maruyama(field, theta, steps, rng, corrector_steps=0, snr=0.16, normal=None):
    """Reverse-SDE Euler-Maruyama (+ optional Langevin corrector); theta (B, d) updated in place.

    The noise is drawn where theta lives (``backend.normal_source``: on the GPU, on the device
    from a seed taken from ``rng``), or by ``normal(out)`` when given (the kernel lab feeds
    fixed draws); the per-step coefficient rows are filled on the device. The loop makes no
    host-device transfer and no synchronisation (CuPy 14.2 still refuses to capture it as a
    CUDA graph: it rejects cuBLAS calls during capture).
    """
    be, xp = field.backend, field.backend.xp
    ops, sde, n = be.ops, field.sde, theta.shape[0]
    grid = time_grid(sde, steps)
    normal = normal or be.normal_source(rng)
    noise = xp.empty_like(theta)
    a, b, c = (xp.empty(n, dtype=theta.dtype) for _ in range(3))
    for i in range(len(grid) - 1):
        t, h = float(grid[i]), float(grid[i] - grid[i + 1])
        s = field.score(theta, t)
        f, g = float(sde.drift_coef(t)), float(sde.diffusion(t))
        normal(noise)
        a.fill(1.0 - f * h)
        b.fill(g * g * h)
        c.fill(g * np.sqrt(h))
        ops.affine_step(theta, a, s, b, noise, c)
        if corrector_steps:
            t_next = float(grid[i + 1])
            alpha = _langevin_alpha(sde, t_next, h)
            for _ in range(corrector_steps):
                s = field.score(theta, t_next)
                normal(noise)
                ops.langevin_step(theta, s, noise, snr, alpha)
    return theta


def _langevin_alpha(sde, t, h):
    """Song et al.'s alpha_i in the corrector step: 1 for VE, 1 - beta(t) h for VP-type SDEs."""
    return 1.0 if sde.name == "ve" else max(1.0 - float(sde.beta(t)) * h, 1e-3)


def ode_fixed(field, theta, steps, method, with_div=False, forward=False):
    """Fixed-step probability-flow ODE. Reverse (1 -> t_min) for sampling; ``forward`` and
    ``with_div`` integrate (theta, Delta) from t_min to 1 for log-densities. Returns (theta, Delta)."""
    xp = field.backend.xp
    n = theta.shape[0]
    grid = time_grid(field.sde, steps)
    if forward:
        grid = grid[::-1]
    delta = xp.zeros(n, dtype=field.dtype) if with_div else None

    def rhs(th, t):
        if with_div:
            return field.velocity_div(th, float(t))
        return field.velocity(th, float(t)), None

    for i in range(len(grid) - 1):
        t0, t1 = grid[i], grid[i + 1]
        h = t1 - t0  # negative in reverse time
        k1, d1 = rhs(theta, t0)
        if method == "euler":
            theta = theta + h * k1
            if with_div:
                delta = delta + h * d1
        elif method == "heun":
            k2, d2 = rhs(theta + h * k1, t1)
            theta = theta + 0.5 * h * (k1 + k2)
            if with_div:
                delta = delta + 0.5 * h * (d1 + d2)
        elif method == "rk4":
            tm = t0 + 0.5 * h
            k2, d2 = rhs(theta + 0.5 * h * k1, tm)
            k3, d3 = rhs(theta + 0.5 * h * k2, tm)
            k4, d4 = rhs(theta + h * k3, t1)
            theta = theta + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
            if with_div:
                delta = delta + (h / 6.0) * (d1 + 2 * d2 + 2 * d3 + d4)
        else:
            raise ValueError(f"unknown ODE method {method!r}; choose from {ODE_METHODS}")
    return theta, delta


def ode_rk45(field, theta, rtol=1e-4, atol=1e-4, with_div=False, forward=False, max_steps=2000,
             h0=0.02):
    """Adaptive Dormand-Prince 5(4) with per-row step sizes and error control.

    Each row integrates over [t_min, 1] (reverse for sampling) on its own step sequence;
    finished rows are held fixed. The error norm is the RMS over theta's dims (and Delta,
    when integrated) of err / (atol + rtol max(|y|, |y_new|)). Returns (theta, Delta, n_evals).
    """
    xp, be = field.backend.xp, field.backend
    n = theta.shape[0]
    sde = field.sde
    t_start, t_end = (sde.t_min, sde.T) if forward else (sde.T, sde.t_min)
    direction = 1.0 if forward else -1.0
    t = np.full(n, t_start)
    h = np.full(n, h0 * direction)
    done = np.zeros(n, dtype=bool)
    delta = xp.zeros(n, dtype=field.dtype) if with_div else None

    def rhs(th, tt):
        if with_div:
            return field.velocity_div(th, tt)
        return field.velocity(th, tt), xp.zeros(n, dtype=field.dtype)

    k = [None] * 7
    k[0] = rhs(theta, t)
    evals = 1
    for _ in range(max_steps):
        if done.all():
            break
        # clip the last step onto the end time
        h = np.where(direction * (t + h - t_end) > 0, t_end - t, h)
        h = np.where(done, 0.0, h)
        hd = field._dev(h)
        for s in range(1, 7):
            th = theta.copy()
            dl = None if delta is None else delta.copy()
            for j, a in enumerate(_DP_A[s]):
                if a:
                    th += (a * hd)[:, None] * k[j][0]
                    if dl is not None:
                        dl += a * hd * k[j][1]
            k[s] = rhs(th, t + _DP_C[s] * h)
            evals += 1
        # th, dl now hold the 5th-order solution (row 6 of the tableau = b5)
        err = xp.zeros_like(theta)
        for j, e in enumerate(_DP_E):
            if e:
                err += (e * hd)[:, None] * k[j][0]
        scale = atol + rtol * xp.maximum(xp.abs(theta), xp.abs(th))
        terms = xp.sum((err / scale) ** 2, axis=1)
        dims = theta.shape[1]
        if delta is not None:
            err_d = xp.zeros_like(delta)
            for j, e in enumerate(_DP_E):
                if e:
                    err_d += e * hd * k[j][1]
            terms = terms + (err_d / (atol + rtol * xp.maximum(xp.abs(delta), xp.abs(dl)))) ** 2
            dims += 1
        err_norm = np.sqrt(be.to_host(terms).astype(np.float64) / dims)
        accept = (err_norm <= 1.0) & ~done
        acc_d = field._dev(accept.astype(np.float64)).astype(bool)
        theta = xp.where(acc_d[:, None], th, theta)
        if delta is not None:
            delta = xp.where(acc_d, dl, delta)
        k0_theta = xp.where(acc_d[:, None], k[6][0], k[0][0])
        k0_div = xp.where(acc_d, k[6][1], k[0][1])
        k[0] = (k0_theta, k0_div)
        t = np.where(accept, t + h, t)
        done |= accept & (np.abs(t - t_end) <= 1e-12)
        factor = np.clip(0.9 * np.maximum(err_norm, 1e-10) ** -0.2, 0.2, 5.0)
        h = np.where(done, 0.0, h * np.where(np.isfinite(factor), factor, 0.2))
    if not done.all():  # (not a for-else: the last allowed step may finish every row)
        raise RuntimeError(f"rk45 did not finish within {max_steps} steps for {int((~done).sum())} rows; "
                           "loosen rtol/atol or use a fixed-step method")
    return theta, delta, evals
