"""Samplers and log-densities for a trained score model, in standardised theta space.

Reverse-time sampling from the base pi at t = 1 down to t_min (Song et al. 2021):

- ``"sde"``: Euler-Maruyama on the reverse SDE
      theta <- theta - [f theta - g^2 s] h + g sqrt(h) z;
- ``"pc"``: the same predictor followed by ``corrector_steps`` Langevin corrector steps with the
  signal-to-noise step size eps = 2 alpha (r |z| / |s|)^2 (Song et al. 2021, Alg. 4/5);
- ``"ald"``: annealed Langevin dynamics (Song & Ermon 2019): only the Langevin corrector,
  ``corrector_steps`` steps at each level of the time grid from t = 1 down, no predictor; for
  score fields that are not a diffusion's marginals (SNPSE-C's bridge, ``annealed_langevin``);
- ``"ode"``: the probability-flow ODE d theta/dt = v = f theta - g^2 s / 2 with fixed-step
  ``"euler"``, ``"heun"``, ``"rk4"`` (uniform in t), ``"edm"`` (Heun in Karras et al.'s scaled
  variables on their power-law noise grid: ``ode_edm``, the default for sampling), or adaptive
  ``"rk45"`` (Dormand-Prince 5(4)) with per-sample error control (each row has its own step
  size; the network takes per-row times anyway).

Log-density by the instantaneous change of variables (Chen et al. 2018; paper eq. 5):
    log p_0(theta) = log pi(theta_1) + int_{t_min}^1 div v(theta_t, t) dt,
integrating (theta, Delta) forward in time, with div v = d f(t) - g(t)^2 Tr(ds/dtheta) / 2 and
Tr(ds/dtheta) = (c_in / c_out) Tr(d net / d theta_in), the latter either exact (d forward-mode
tangents e_k through the network) or the Hutchinson estimate v . (J v) with Rademacher v
(``score.ScoreField.velocity_div``).

Every sampler drives a field (the protocol in ``score``: ``score``, ``velocity``,
``velocity_div``, ``to_device``, ``backend``, ``sde``, ``dtype``): ``score.ScoreField`` for a
trained network, ``iid.IIDField`` for composed i.i.d. scores, the exact Gaussian field of the tests.

The pieces are registered by name (dicts filled at import by the decorators below; unknown names
raise ValueError naming the choices): predictors (``register_predictor``: "euler_maruyama"),
correctors (``register_corrector``: "langevin"), fixed ODE steps (``register_ode_step``: "euler",
"heun", "rk4"), PF-ODE methods (``register_ode_solver``: those three, "rk45", "edm") and the
samplers ``ScorePosterior.sample`` offers ("ode", "sde", "pc", "ald": ``get_sampler`` / ``run_sampler``).

Shapes: theta (B, d), per-row times t (B,), x conditioning rows xc (1, h0) or (B, h0) (one per row).
"""
import numpy as np

from .score import CPU_CHUNK_ROWS, ScoreField  # noqa: F401  (re-exported: their home is score.py)

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


# ---- registries: filled at import by the decorators below, read by ``posterior`` and the
# truncation through the ``get_*`` functions (score_sde's sampling.py has the same shape) ----
PREDICTORS = {}  # name -> Predictor subclass: one reverse-SDE step
CORRECTORS = {}  # name -> Corrector subclass: MCMC steps at a fixed time
ODE_STEPS = {}  # name -> one fixed step of the probability-flow ODE on a uniform grid (``ode_fixed``)
ODE_SOLVERS = {}  # name -> ODESolver: a whole PF-ODE integration (sampling; log-densities where it can)
SAMPLER_RUNS = {}  # sampler name ("ode", "sde", "pc", "ald") -> the function ``run_sampler`` calls


def _registrar(registry, kind):
    def register(name):
        def add(obj):
            if name in registry:
                raise ValueError(f"{kind} {name!r} is registered twice")
            registry[name] = obj
            return obj
        return add
    return register


register_predictor = _registrar(PREDICTORS, "predictor")
register_corrector = _registrar(CORRECTORS, "corrector")
register_ode_step = _registrar(ODE_STEPS, "ODE step")
_register_sampler = _registrar(SAMPLER_RUNS, "sampler")


def _get(registry, name, what):
    if not isinstance(name, str) or name not in registry:
        raise ValueError(f"unknown {what} {name!r}; choose from {tuple(registry)}")
    return registry[name]


def get_predictor(name):
    """The Predictor class registered as ``name``; ValueError naming the choices otherwise."""
    return _get(PREDICTORS, name, "predictor")


def get_corrector(name):
    """The Corrector class registered as ``name``; ValueError naming the choices otherwise."""
    return _get(CORRECTORS, name, "corrector")


class Predictor:
    """One reverse-SDE step from t to t - h on the field's rows: ``update(theta, t, h, noise)``
    updates theta (B, d) in place; ``noise`` is a (B, d) buffer the step may fill by
    ``normal(noise)``. Built once per sampling run (buffers for B rows)."""

    def __init__(self, field, rows, normal):
        self.field, self.normal = field, normal

    def update(self, theta, t, h, noise):
        raise NotImplementedError


class Corrector:
    """``steps`` MCMC steps targeting p_t at time t (after a predictor step of size h):
    ``update(theta, t, h, noise)`` updates theta (B, d) in place."""

    def __init__(self, field, rows, normal, steps, snr):
        self.field, self.normal, self.steps, self.snr = field, normal, int(steps), snr

    def update(self, theta, t, h, noise):
        raise NotImplementedError


@register_predictor("euler_maruyama")
class EulerMaruyama(Predictor):
    """theta <- (1 - f h) theta + g^2 h s + g sqrt(h) z (``ops.affine_step``), the coefficient
    rows filled on the device."""

    def __init__(self, field, rows, normal):
        super().__init__(field, rows, normal)
        xp = field.backend.xp
        self.a, self.b, self.c = (xp.empty(rows, dtype=field.dtype) for _ in range(3))

    def update(self, theta, t, h, noise):
        sde = self.field.sde
        s = self.field.score(theta, t)
        f, g = float(sde.drift_coef(t)), float(sde.diffusion(t))
        self.normal(noise)
        self.a.fill(1.0 - f * h)
        self.b.fill(g * g * h)
        self.c.fill(g * np.sqrt(h))
        self.field.backend.ops.affine_step(theta, self.a, s, self.b, noise, self.c)


@register_corrector("langevin")
class Langevin(Corrector):
    """Song et al.'s Langevin corrector (``ops.langevin_step``: step eps = 2 alpha (r |z| / |s|)^2,
    per-row norms averaged over the batch), with alpha = 1 for VE and 1 - beta(t) h for VP-type SDEs."""

    def update(self, theta, t, h, noise):
        sde = self.field.sde
        alpha = 1.0 if sde.name == "ve" else max(1.0 - float(sde.beta(t)) * h, 1e-3)
        for _ in range(self.steps):
            s = self.field.score(theta, t)
            self.normal(noise)
            self.field.backend.ops.langevin_step(theta, s, noise, self.snr, alpha)


def reverse_sde(field, theta, steps, rng, predictor="euler_maruyama", corrector=None, corrector_steps=0, snr=0.16,
                normal=None):
    """Predictor steps on the uniform grid (``time_grid``) from t = 1 to t_min, each followed by
    the corrector's ``corrector_steps`` steps at the new time when ``corrector`` names one;
    theta (B, d) updated in place and returned.

    The noise is drawn where theta lives (``backend.normal_source``: on the GPU, on the device
    from a seed taken from ``rng``), or by ``normal(out)`` when given (the kernel lab feeds
    fixed draws). The loop makes no host-device transfer and no synchronisation (CuPy 14.2 still
    refuses to capture it as a CUDA graph: it rejects cuBLAS calls during capture).
    """
    be, n = field.backend, theta.shape[0]
    grid = time_grid(field.sde, steps)
    normal = normal or be.normal_source(rng)
    noise = be.xp.empty_like(theta)
    pred = get_predictor(predictor)(field, n, normal)
    corr = get_corrector(corrector)(field, n, normal, corrector_steps, snr) if corrector and corrector_steps else None
    for i in range(len(grid) - 1):
        t, h = float(grid[i]), float(grid[i] - grid[i + 1])
        pred.update(theta, t, h, noise)
        if corr is not None:
            corr.update(theta, float(grid[i + 1]), h, noise)
    return theta


def euler_maruyama(field, theta, steps, rng, corrector_steps=0, snr=0.16, normal=None):
    """Reverse-SDE Euler-Maruyama (+ ``corrector_steps`` Langevin corrector steps after each
    step); theta (B, d) updated in place and returned. ``reverse_sde`` with the registered
    "euler_maruyama" predictor and "langevin" corrector."""
    return reverse_sde(field, theta, steps, rng, "euler_maruyama", "langevin" if corrector_steps else None,
                       corrector_steps, snr, normal)


# One fixed step of (theta, Delta) from t0 to t1 = t0 + h: rhs(theta, t) -> (v, div v or None);
# delta is None when no divergence is integrated.
@register_ode_step("euler")
def _euler_step(rhs, theta, delta, t0, t1):
    h = t1 - t0
    k1, d1 = rhs(theta, t0)
    theta = theta + h * k1
    if delta is not None:
        delta = delta + h * d1
    return theta, delta


@register_ode_step("heun")
def _heun_step(rhs, theta, delta, t0, t1):
    h = t1 - t0
    k1, d1 = rhs(theta, t0)
    k2, d2 = rhs(theta + h * k1, t1)
    theta = theta + 0.5 * h * (k1 + k2)
    if delta is not None:
        delta = delta + 0.5 * h * (d1 + d2)
    return theta, delta


@register_ode_step("rk4")
def _rk4_step(rhs, theta, delta, t0, t1):
    h = t1 - t0
    k1, d1 = rhs(theta, t0)
    tm = t0 + 0.5 * h
    k2, d2 = rhs(theta + 0.5 * h * k1, tm)
    k3, d3 = rhs(theta + 0.5 * h * k2, tm)
    k4, d4 = rhs(theta + h * k3, t1)
    theta = theta + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
    if delta is not None:
        delta = delta + (h / 6.0) * (d1 + 2 * d2 + 2 * d3 + d4)
    return theta, delta


FIXED_STEP_METHODS = tuple(ODE_STEPS)  # uniform in t (``time_grid``); "edm" is its own grid


def ode_fixed(field, theta, steps, method, with_div=False, forward=False):
    """Fixed-step probability-flow ODE (``method`` a registered ODE step: "euler", "heun",
    "rk4"). Reverse (1 -> t_min) for sampling; ``forward`` and ``with_div`` integrate
    (theta, Delta) from t_min to 1 for log-densities. Returns (theta, Delta)."""
    if not isinstance(method, str) or method not in ODE_STEPS:
        raise ValueError(f"unknown ODE method {method!r}; choose from {FIXED_STEP_METHODS}")
    step = ODE_STEPS[method]
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
        theta, delta = step(rhs, theta, delta, grid[i], grid[i + 1])
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
        hd = field.to_device(h)
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
        acc_d = field.to_device(accept.astype(np.float64)).astype(bool)
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


class ODESolver:
    """A registered probability-flow ODE method. ``solve(field, theta, steps, rtol, atol,
    with_div=False, forward=False)`` -> (theta, Delta or None): reverse from t = 1 to t_min for
    sampling, or, where ``log_density``, forward from t_min to 1 with the divergence integral
    Delta (B,). ``adaptive`` methods pick their own steps (rtol/atol; ``steps`` is None);
    fixed-step ones ignore rtol/atol."""

    def __init__(self, name, solve, adaptive, log_density):
        self.name, self.solve, self.adaptive, self.log_density = name, solve, adaptive, log_density

    def __repr__(self):
        return f"ODESolver({self.name!r}, adaptive={self.adaptive}, log_density={self.log_density})"


def register_ode_solver(name, adaptive=False, log_density=True):
    """Decorator: register ``solve`` (the signature of ``ODESolver.solve``) as the ODE method ``name``."""
    def add(solve):
        if name in ODE_SOLVERS:
            raise ValueError(f"ODE method {name!r} is registered twice")
        ODE_SOLVERS[name] = ODESolver(name, solve, adaptive, log_density)
        return solve
    return add


def get_ode_solver(name, log_density=False):
    """The ODESolver registered as ``name`` (among those that integrate the divergence when
    ``log_density``); ValueError "unknown ODE method" naming the choices otherwise."""
    choices = tuple(k for k, s in ODE_SOLVERS.items() if s.log_density or not log_density)
    if not isinstance(name, str) or name not in choices:
        raise ValueError(f"unknown ODE method {name!r}; choose from {choices}")
    return ODE_SOLVERS[name]


def _fixed_step_solver(method):
    def solve(field, theta, steps, rtol=None, atol=None, with_div=False, forward=False):
        return ode_fixed(field, theta, steps, method, with_div=with_div, forward=forward)
    return solve


for _method in ODE_STEPS:  # "euler", "heun", "rk4": ``ode_fixed`` with that step
    register_ode_solver(_method)(_fixed_step_solver(_method))


@register_ode_solver("rk45", adaptive=True)
def _solve_rk45(field, theta, steps, rtol, atol, with_div=False, forward=False):
    theta, delta, _ = ode_rk45(field, theta, rtol=rtol, atol=atol, with_div=with_div, forward=forward)
    return theta, delta


@register_ode_solver("edm", log_density=False)
def _solve_edm(field, theta, steps, rtol=None, atol=None, with_div=False, forward=False):
    if with_div or forward:
        raise ValueError("the edm method integrates no divergence (sampling only); use euler, heun, rk4 or rk45")
    return ode_edm(field, theta, steps), None


ODE_METHODS = tuple(k for k, s in ODE_SOLVERS.items() if s.log_density)  # sampling and log-densities
SAMPLE_ODE_METHODS = tuple(ODE_SOLVERS)  # sampling only: adds "edm" (``ode_edm`` integrates no divergence)


# The samplers ``ScorePosterior.sample`` offers: f(field, theta, opts, rng, corrector_steps, snr,
# rtol, atol) -> theta at t_min, with opts {"steps", "method" (ode)} from ``posterior.SAMPLE_DEFAULTS``.
@_register_sampler("ode")
def _sample_ode(field, theta, opts, rng, corrector_steps, snr, rtol, atol):
    return get_ode_solver(opts["method"]).solve(field, theta, opts.get("steps"), rtol, atol)[0]


@_register_sampler("sde")
def _sample_sde(field, theta, opts, rng, corrector_steps, snr, rtol, atol):
    return reverse_sde(field, theta, opts["steps"], rng, "euler_maruyama", snr=snr)


@_register_sampler("pc")
def _sample_pc(field, theta, opts, rng, corrector_steps, snr, rtol, atol):
    return reverse_sde(field, theta, opts["steps"], rng, "euler_maruyama", "langevin", corrector_steps, snr)


def annealed_langevin(field, theta, steps, rng, corrector="langevin", corrector_steps=1, snr=0.16, normal=None):
    """Annealed Langevin dynamics (Song & Ermon 2019): ``corrector_steps`` steps of the registered
    ``corrector`` at each of the steps + 1 levels of ``time_grid(sde, steps)``, from t = 1 down to
    t_min, and NO predictor move between levels; theta (B, d) updated in place and returned.

    At level t_i the Langevin chain targets p_{t_i}, the law whose score the field returns there:
        theta <- theta + eps s(theta, t_i) + sqrt(2 eps) z,   z ~ N(0, I),
    with Song et al.'s signal-to-noise step eps = 2 a (snr |z| / |s|)^2 (``Langevin``; a = 1 for VE,
    1 - beta(t) h for VP-type SDEs, h the level spacing). Each level starts from the previous
    level's state, a draw close to p_{t_{i-1}}, which overlaps p_{t_i} when the levels are close.
    Unlike the reverse SDE / probability-flow ODE (and "pc", whose predictor follows the SDE's
    drift), this uses only the score at each level as the score of SOME distribution: it needs
    no relation between the levels (the field need not be the marginal score of one diffusion),
    only that the t_min level is the target. That is why the bridges that are not a diffusion's
    marginals are sampled by it: SNPSE-C's network learns the score of
    p_t^{r,seq} ∝ (p_t / p~_t^r) p~_t^r(theta_t | x), which equals the posterior only at t = 0
    (``snpse_c``), so the reverse SDE would follow the wrong path and end at the wrong law.

    Accuracy: the last level's chain is a Langevin chain on p_{t_min} with step eps, so the result
    carries its discretisation bias and the lag of the annealing. For N(m, v I) (|z|^2 ~ d,
    |s|^2 ~ d / v, so eps ~ 2 snr^2 v) a step contracts theta - m by 1 - eps / v = 1 - 2 snr^2
    (relaxation over ~1 / (2 snr^2) ~ 20 steps at snr 0.16) and the stationary variance is
    v / (1 - eps / (2 v)) = v / (1 - snr^2), 2.6% wide at snr 0.16. Use many levels (``steps``) or
    several ``corrector_steps`` per level. Cost: (steps + 1) x corrector_steps score evaluations.
    """
    if int(corrector_steps) != corrector_steps or corrector_steps < 1:
        raise ValueError(f"annealed Langevin needs corrector_steps >= 1 (it moves by the corrector only), "
                         f"got {corrector_steps!r}")
    be, n = field.backend, theta.shape[0]
    grid = time_grid(field.sde, steps)
    normal = normal or be.normal_source(rng)
    noise = be.xp.empty_like(theta)
    corr = get_corrector(corrector)(field, n, normal, corrector_steps, snr)
    h = float(grid[0] - grid[1])  # the level spacing (uniform grid): the VP step's a = 1 - beta h
    for t in grid:
        corr.update(theta, float(t), h, noise)
    return theta


@_register_sampler("ald")
def _sample_ald(field, theta, opts, rng, corrector_steps, snr, rtol, atol):
    return annealed_langevin(field, theta, opts["steps"], rng, "langevin", corrector_steps, snr)


SAMPLERS = tuple(SAMPLER_RUNS)


def get_sampler(name):
    """The sampler function registered as ``name`` ("ode", "sde", "pc", "ald"); ValueError "unknown
    sampler" naming the choices otherwise."""
    return _get(SAMPLER_RUNS, name, "sampler")


def run_sampler(name, field, theta, opts, rng, corrector_steps=0, snr=0.16, rtol=1e-4, atol=1e-4):
    """Run the sampler ``name`` on ``field`` from theta (B, d) at t = 1 down to t_min; returns theta."""
    return get_sampler(name)(field, theta, opts, rng, corrector_steps, snr, rtol, atol)
