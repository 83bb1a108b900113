"""The pyloric network of the crab stomatogastric ganglion as an inference task (``pyloric``).

The model is the three-neuron circuit of Prinz, Bucher & Marder (Nat. Neurosci. 2004), with
the prior, simulation protocol and summary statistics of Goncalves et al. (eLife 2020) and
Deistler, Macke & Goncalves (PNAS 2022) as implemented in mackelab's ``pyloric`` package
(github.com/mackelab/pyloric), and the task set-up of Deistler et al. (NeurIPS 2022, TSNPE) and
Sharrock et al. (ICML 2024, paper section 5.3). Written here from those descriptions; the
``pyloric`` package was read as the reference, not copied.

Parameters theta (31,)
----------------------
theta[0:8], theta[8:16], theta[16:24]: maximal conductances gbar (mS/cm^2) of the channels
(Na, CaT, CaS, A, KCa, Kd, H, leak) of AB/PD, LP and PY (AB and PD are one lumped neuron);
theta[24:31]: natural logs of the synaptic conductances (log mS) of the synapses
AB-LP, PD-LP, AB-PY, PD-PY, LP-PD, LP-PY, PY-LP (``PARAMETER_NAMES``).
Prior: independent uniform on the box ``PRIOR_LOW``..``PRIOR_HIGH`` (the ``pyloric`` package's
``create_prior()``, "the values used in Goncalves et al. 2020"): the membrane bounds are the
ranges of Prinz et al.'s model neurons widened by a padding per channel and clipped at 0;
synapses log U(log 1e-8, log 1e-3) mS, AB-LP up to log 1e-2.

Membrane (each neuron; V in mV, t in ms, currents in uA, conductances in mS)
----------------------------------------------------------------------------
    C dV/dt = -sum_c g_c(t) (V - E_c) - sum_syn g_s s (V - E_s) + I_noise,
    g_c(t) = A gbar_c m_c^p_c h_c   (A = 0.628e-3 cm^2, C = 0.6283e-3 uF),
E_Na = 50, E_K = -80 (A, KCa, Kd), E_H = -20, E_leak = -50, E_Ca = Nernst (below).
Gates x in {m, h}: tau_x(V) dx/dt = x_inf(V) - x, with sig(V; a, b) = 1 / (1 + exp((V + a) / b)):

    channel  p  m_inf                        tau_m (ms)
    Na       3  sig(25.5, -5.29)             2.64 - 2.52 sig(120, -25)
    CaT      3  sig(27.1, -7.2)              43.4 - 42.6 sig(68.1, -20.5)
    CaS      3  sig(33, -8.1)                2.8 + 14 / (exp((V + 27) / 10) + exp((V + 70) / -13))
    A        3  sig(27.2, -8.7)              23.2 - 20.8 sig(32.9, -15.2)
    KCa      4  Ca/(Ca + 3) sig(28.3, -12.6) 180.6 - 150.2 sig(46, -22.7)
    Kd       4  sig(12.3, -11.8)             14.4 - 12.8 sig(28.3, -19.2)
    H        1  sig(75, 5.5)                 2 / (exp(-14.59 - 0.086 V) + exp(-1.87 + 0.0701 V))
    leak     0  (g = A gbar)

    channel  h_inf            tau_h (ms)
    Na       sig(48.9, 5.18)  1.34 sig(62.9, -10) (1.5 + sig(34.9, 3.6))
    CaT      sig(32.1, 5.5)   210 - 179.6 sig(55, -16.9)
    CaS      sig(60, 6.2)     120 + 300 / (exp((V + 55) / 9) + exp((V + 65) / -16))
    A        sig(56.9, 4.9)   77.2 - 58.4 sig(38.9, -26.5)
    (KCa, Kd, H and leak have no inactivation gate.)

Calcium (uM): tau_Ca d[Ca]/dt = Ca_0 - f I_Ca - [Ca], I_Ca = (g_CaT + g_CaS)(V - E_Ca),
E_Ca = (R T / z F) log(Ca_ext / [Ca]), tau_Ca = 200 ms, f = 14961 uM/uA, Ca_0 = 0.05 uM,
Ca_ext = 3000 uM, R = 8314.51 mJ/(mol K), F = 96485.3415 C/mol, z = 2, T = 283 K.

Synapses (Prinz et al. 2004; graded, from the presynaptic V): for synapse k from pre to post,
    ds/dt = (s_inf(V_pre) - s) / tau_s,  s_inf = 1 / (1 + exp((V_th - V_pre) / Delta)),
    tau_s = (1 - s_inf) / k_minus,  V_th = -35 mV, Delta = 5 mV,
glutamatergic (AB-LP, AB-PY, LP-PD, LP-PY, PY-LP): E_s = -70 mV, 1/k_minus = 40 ms;
cholinergic (PD-LP, PD-PY): E_s = -80 mV, 1/k_minus = 100 ms; g_s = exp(theta_s) mS.
Temperature is the reference temperature 283 K (10 C), at which every Q10 factor of the
``pyloric`` package is 1, so none appears here.

Integration (as the reference)
------------------------------
Exponential Euler with dt = 0.025 ms for V, [Ca] and every gate: over one step with the
other variables frozen at step i-1, y_i = y_inf + (y_{i-1} - y_inf) exp(-dt / tau), where for V
y_inf = (sum_c g_c E_c + sum_s g_s s E_s + I_noise) / (sum_c g_c + sum_s g_s) and
tau = C / (sum of conductances) (forward Euler if that sum is 0). The gates and synapses use V
and [Ca] of step i-1. The synapses use forward Euler, s_i = s_inf when dt > tau_s.
I_noise: N(0, 0.001^2) uA drawn afresh for every neuron and step (not scaled with dt).
Initial state: V = -50 mV, [Ca] = 0.05 uM, every gate and synapse 0. Duration 11,000 ms
(440,000 steps); the first 1,000 ms are burn-in, the statistics use 1,000..11,000 ms.

Summary statistics x (18,)  (``STATISTIC_NAMES``)
-------------------------------------------------
Per neuron, on the 10 s after burn-in: V is smoothed by a Savitzky-Golay filter (window 21
samples = 0.5 ms, cubic; the edges fitted as scipy's ``mode="interp"``). Spikes: local maxima of
the smoothed V above -10 mV (the time stamp is the sample before the maximum, as the reference).
Bursts: spikes split where consecutive spikes are >= 150 ms apart; bursts lasting <= 40 ms (first
to last spike) are discarded. Per neuron: burst duration = mean burst length; cycle = mean
interval between burst starts (needs >= 2 bursts). Circuit: cycle period T = AB/PD's cycle. The
rhythm is triphasic when in >= 90% of AB/PD's cycles [start_k, start_{k+1}) each neuron starts
exactly one burst; on those cycles the delays are averaged:
    x = (T,  burst durations (AB/PD, LP, PY),  duty cycles = durations / T,
         start phases (LP, PY) = starts-to-starts(AB/PD -> neuron) / T,
         starts-to-starts (AB/PD-LP, LP-PY),  ends-to-starts (AB/PD-LP, LP-PY),
         phase gaps = ends-to-starts / T (AB/PD-LP, LP-PY),  plateau durations (AB/PD, LP, PY)).
Plateau duration: from each burst's start to the next burst's start (the last burst: to the last
spike), the longest run of smoothed V > -30 mV on every 10th sample, counting only runs that end
inside the block (as the reference); the mean over bursts, set to 100 samples when below 200
samples (spikes are no plateaus), in ms (so 2.5 ms means "no plateau").
Undefined statistics are NaN: no bursts (durations, plateaus), fewer than 2 AB/PD bursts (T and
all ratios), not triphasic (the 8 phase and delay statistics). A simulation is *valid* when all
18 are finite.

Invalid statistics
------------------
``Pyloric.simulate`` returns x with every NaN replaced by a constant per statistic (paper:
"invalid summary statistics replaced by the prior-predictive mean minus two standard
deviations", following Deistler et al. 2022). The constants are in
``snpse_np/data/pyloric_prior_predictive.csv``: for each statistic, over the prior-predictive
simulations where it is finite, n, mean, std (ddof 0) and min, with ``replacement`` = mean - 2 std
(the paper's rule, used by default) and ``tsnpe_replacement`` = min - 2 std (what the TSNPE code of
Deistler et al. 2022 does: ``nanmin - 2 nanstd``). The file says which draws made it;
``benchmarks/bench_pyloric.py --constants N`` regenerates it. ``simulate_statistics`` returns the
raw statistics with NaN; ``valid_mask`` / ``fraction_valid`` recognise invalid rows in either form.

Observation
-----------
``OBSERVATION``: the 18 statistics of the experimental recording of Haddad & Marder (2018), prep
845_082_0044, as used by Goncalves et al. 2020 and, with the three plateau durations (2.5 ms), by
Deistler et al. 2022 (tsnpe_neurips, ``l5pc/multiround_pyloric.py``) and Sharrock et al. 2024.
There is no reference posterior: the task is judged by the fraction of valid simulations and by
posterior-predictive checks against the observed rhythm.

Shapes: theta (n, 31) -> x (n, 18) float64; voltage traces (n, 3, T).
"""
import csv
import math
from functools import lru_cache
from importlib import resources

import numpy as np

from ..priors import BoxUniform
from ..rng import as_generator
from .base import Task

NEURON_NAMES = ("AB/PD", "LP", "PY")
CHANNEL_NAMES = ("Na", "CaT", "CaS", "A", "KCa", "Kd", "H", "Leak")
SYNAPSE_NAMES = ("AB-LP", "PD-LP", "AB-PY", "PD-PY", "LP-PD", "LP-PY", "PY-LP")
PARAMETER_NAMES = tuple(f"{n} {c}" for n in NEURON_NAMES for c in CHANNEL_NAMES) + SYNAPSE_NAMES
STATISTIC_NAMES = (
    "cycle_period",
    "burst_duration AB/PD", "burst_duration LP", "burst_duration PY",
    "duty_cycle AB/PD", "duty_cycle LP", "duty_cycle PY",
    "start_phase LP", "start_phase PY",
    "start_to_start AB/PD-LP", "start_to_start LP-PY",
    "end_to_start AB/PD-LP", "end_to_start LP-PY",
    "phase_gap AB/PD-LP", "phase_gap LP-PY",
    "plateau_duration AB/PD", "plateau_duration LP", "plateau_duration PY",
)
STATE_NAMES = ("V", "Ca", "mNa", "mCaT", "mCaS", "mA", "mKCa", "mKd", "mH", "hNa", "hCaT", "hCaS", "hA")

# Prior box. Membrane: Prinz et al.'s model-neuron ranges (rows AB/PD, LP, PY), widened by a
# padding per channel and clipped at 0; synapses in log mS.
_MEMBRANE_MIN = np.array([[100, 2.5, 2, 10, 5, 50, 0.01, 0.0],
                          [100, 0.0, 4, 20, 0, 25, 0.0, 0.02],
                          [100, 2.5, 0, 40, 0, 75, 0.0, 0.0]])
_MEMBRANE_MAX = np.array([[400, 5, 6, 50, 10, 125, 0.01, 0.0],
                          [100, 0, 10, 50, 5, 100, 0.05, 0.03],
                          [500, 10, 2, 50, 0, 125, 0.05, 0.03]])
_MEMBRANE_PAD = np.array([100, 2.5, 2, 10, 5, 25, 0.01, 0.01])
_SYNAPSE_MIN = np.full(7, math.log(1e-8))
_SYNAPSE_MAX = np.array([math.log(1e-2)] + [math.log(1e-3)] * 6)
PRIOR_LOW = np.concatenate([np.maximum(_MEMBRANE_MIN - _MEMBRANE_PAD, 0.0).ravel(), _SYNAPSE_MIN])
PRIOR_HIGH = np.concatenate([(_MEMBRANE_MAX + _MEMBRANE_PAD).ravel(), _SYNAPSE_MAX])

MEMBRANE_AREA = 0.628e-3      # cm^2: gbar (mS/cm^2) * area = g (mS)
DT = 0.025                    # ms
T_MAX = 11_000.0              # ms simulated
BURN_IN = 1_000.0             # ms dropped before the statistics
NOISE_STD = 0.001             # uA, per neuron and step

# Synapses: postsynaptic neuron, presynaptic neuron, reversal potential (mV), 1/k_minus (ms).
SYNAPSE_POST = np.array([1, 1, 2, 2, 0, 2, 1], dtype=np.int64)
SYNAPSE_PRE = np.array([0, 0, 0, 0, 1, 1, 2], dtype=np.int64)
SYNAPSE_E = np.array([-70.0, -80.0, -70.0, -80.0, -70.0, -70.0, -70.0])
SYNAPSE_TAU = np.array([40.0, 100.0, 40.0, 100.0, 40.0, 40.0, 40.0])

# Thresholds of the statistics (ms unless said).
SPIKE_THRESHOLD = -10.0       # mV
PLATEAU_THRESHOLD = -30.0     # mV
BURST_GAP = 150.0             # spikes this far apart are in different bursts
MIN_BURST_LENGTH = 40.0       # bursts must last longer than this
TRIPHASIC_FRACTION = 0.9
SMOOTHING_WINDOW = 0.5        # ms (21 samples at dt = 0.025)
SMOOTHING_ORDER = 3
PLATEAU_STRIDE = 10           # samples
PLATEAU_MIN = 200             # samples: a shorter mean run is "no plateau" ...
PLATEAU_NONE = 100            # samples: ... and is reported as this

OBSERVATION = np.array([
    1.17085859e03, 2.06036434e02, 2.14307031e02, 4.12842187e02, 1.75970382e-01, 1.83034085e-01,
    3.52597820e-01, 4.11600328e-01, 6.30544893e-01, 4.81925781e02, 2.56353125e02, 2.75164844e02,
    4.20460938e01, 2.35011166e-01, 3.59104797e-02, 2.5, 2.5, 2.5,
])
OBSERVATION.flags.writeable = False

CONSTANTS_FILE = "data/pyloric_prior_predictive.csv"
REPLACEMENT_RULES = ("paper", "tsnpe")


class NoReferenceError(NotImplementedError):
    """The pyloric task has no reference posterior samples and no true parameters."""


# --- parameters and state ------------------------------------------------------------------------

def conductances(theta):
    """theta (31,) -> (g_mem (3, 8) mS, g_syn (7,) mS) as the integrator takes them."""
    theta = np.asarray(theta, dtype=np.float64)
    if theta.shape != (31,):
        raise ValueError(f"pyloric: one parameter row must have shape (31,), got {theta.shape}")
    g_mem = np.ascontiguousarray(theta[:24].reshape(3, 8) * MEMBRANE_AREA)
    g_syn = np.exp(theta[24:])
    return g_mem, g_syn


def initial_state():
    """(state (3, 13), s (7,)) at t = 0: V = -50 mV, [Ca] = 0.05 uM, gates and synapses 0."""
    state = np.zeros((3, len(STATE_NAMES)))
    state[:, 0] = -50.0
    state[:, 1] = 0.05
    return state, np.zeros(7)


def _steps(t_max, dt, burn_in):
    """(number of steps including t = 0, first step kept) as the reference: arange(0, t_max, dt)."""
    n_steps = len(np.arange(0.0, t_max, dt))
    n_burn = int(burn_in / dt)
    if not 0 <= n_burn < n_steps:
        raise ValueError(f"pyloric: burn_in ({burn_in} ms) must lie in [0, t_max = {t_max} ms)")
    return n_steps, n_burn


def integrate(theta, noise, n_burn=0, dt=DT, state=None):
    """Integrate one circuit with the given input noise.

    theta (31,); noise (3, T) input currents in uA (column 0 unused: step 0 is the initial state);
    n_burn: the first step returned; state: None (``initial_state()``) or a tuple (state (3, 13),
    s (7,)) that is updated in place to the final state. Returns V (3, T - n_burn) in mV.
    """
    from ._pyloric_kernels import integrate as kernel

    g_mem, g_syn = conductances(theta)
    noise = np.ascontiguousarray(noise, dtype=np.float64)
    if noise.ndim != 2 or noise.shape[0] != 3 or noise.shape[1] < 1:
        raise ValueError(f"pyloric: noise must have shape (3, T), got {noise.shape}")
    if not 0 <= n_burn < noise.shape[1]:
        raise ValueError(f"pyloric: n_burn must lie in [0, {noise.shape[1]}), got {n_burn}")
    st, s = initial_state() if state is None else state
    for a, shape in ((st, (3, len(STATE_NAMES))), (s, (7,))):
        if not (isinstance(a, np.ndarray) and a.dtype == np.float64 and a.shape == shape
                and a.flags.c_contiguous and a.flags.writeable):
            raise ValueError(f"pyloric: state must be writeable C-contiguous float64 arrays of shapes "
                             f"(3, 13) and (7,), got {getattr(a, 'dtype', type(a))} {np.shape(a)}")
    v_out = np.empty((3, noise.shape[1] - n_burn))
    kernel(g_mem, g_syn, SYNAPSE_POST, SYNAPSE_PRE, SYNAPSE_E, SYNAPSE_TAU, noise, float(dt),
           int(n_burn), st, s, v_out)
    return v_out


def voltage_traces(theta, seed=None, t_max=T_MAX, dt=DT, burn_in=BURN_IN, noise_std=NOISE_STD):
    """Membrane potentials after the burn-in, theta (n, 31) -> (n, 3, T) float64 (mV).

    T = len(arange(0, t_max, dt)) - int(burn_in / dt) (400,000 by default: 9.6 MB per row in
    float64, so ask for few rows). The noise of row i is the i-th draw from ``seed``'s generator.
    """
    theta = _check_rows(theta)
    rng = as_generator(seed)
    n_steps, n_burn = _steps(t_max, dt, burn_in)
    out = np.empty((theta.shape[0], 3, n_steps - n_burn))
    for i, row in enumerate(theta):
        out[i] = integrate(row, noise_std * rng.standard_normal((3, n_steps)), n_burn, dt)
    return out


def simulate_statistics(theta, seed=None, t_max=T_MAX, dt=DT, burn_in=BURN_IN, noise_std=NOISE_STD):
    """The 18 raw statistics (NaN where undefined), theta (n, 31) -> (n, 18) float64.

    Row i is simulated with the i-th noise draw from ``seed``'s generator (same seed, same rows:
    same x). One row at a time: its noise and voltage (about 10 MB each) are dropped after it.
    """
    theta = _check_rows(theta)
    rng = as_generator(seed)
    n_steps, n_burn = _steps(t_max, dt, burn_in)
    x = np.empty((theta.shape[0], len(STATISTIC_NAMES)))
    for i, row in enumerate(theta):
        v = integrate(row, noise_std * rng.standard_normal((3, n_steps)), n_burn, dt)
        x[i] = summary_statistics(v, dt)
    return x


def _check_rows(theta):
    theta = np.asarray(theta, dtype=np.float64)
    if theta.ndim == 1 and theta.shape[0] == 31:
        theta = theta[None, :]
    if theta.ndim != 2 or theta.shape[1] != 31:
        raise ValueError(f"pyloric: theta must have shape (n, 31), got {np.shape(theta)}")
    return theta


# --- the numpy reference step (the oracle of the numba kernel) ------------------------------------

# (half-activation a, slope b) of x_inf = 1 / (1 + exp((V + a) / b)) for the gates mNa..mH, hNa..hA.
_REF_INF = np.array([[25.5, -5.29], [27.1, -7.2], [33.0, -8.1], [27.2, -8.7], [28.3, -12.6],
                     [12.3, -11.8], [75.0, 5.5], [48.9, 5.18], [32.1, 5.5], [60.0, 6.2], [56.9, 4.9]])
# tau = c0 + c1 sig(V; a, b) for mNa, mCaT, mA, mKCa, mKd, hCaT, hA (gate indices below).
_REF_TAU_SIG = {0: (2.64, -2.52, 120.0, -25.0), 1: (43.4, -42.6, 68.1, -20.5),
                3: (23.2, -20.8, 32.9, -15.2), 4: (180.6, -150.2, 46.0, -22.7),
                5: (14.4, -12.8, 28.3, -19.2), 8: (210.0, -179.6, 55.0, -16.9),
                10: (77.2, -58.4, 38.9, -26.5)}
_REF_POWERS = np.array([3, 3, 3, 3, 4, 4, 1])
_REF_E_FIXED = np.array([50.0, np.nan, np.nan, -80.0, -80.0, -80.0, -20.0, -50.0])


def _ref_sig(v, a, b):
    return 1.0 / (1.0 + np.exp((v + a) / b))


def reference_step(state, s, g_mem, g_syn, noise, dt=DT):
    """One exponential-Euler step in plain numpy, vectorised over the three neurons.

    state (3, 13), s (7,): the state at step i-1; g_mem (3, 8), g_syn (7,) in mS; noise (3,) the
    input current at step i. Returns the new (state, s); the inputs are not changed. Written
    independently of the numba kernel (tables instead of unrolled code) to check it.
    """
    v, ca = state[:, 0], state[:, 1]
    m, h = state[:, 2:9], state[:, 9:13]
    gates = np.ones((3, 8))
    gates[:, :7] = m ** _REF_POWERS
    gates[:, :4] *= h
    g = g_mem * gates                                                    # (3, 8) mS
    e_ca = 8.31451e3 * 283.0 / (2.0 * 96485.3415) * np.log(3000.0 / ca)
    e = np.where(np.isnan(_REF_E_FIXED), e_ca[:, None], _REF_E_FIXED)    # (3, 8)
    post_g = np.zeros(3)
    post_ge = np.zeros(3)
    np.add.at(post_g, SYNAPSE_POST, g_syn * s)
    np.add.at(post_ge, SYNAPSE_POST, g_syn * s * SYNAPSE_E)
    g_sum = g.sum(axis=1) + post_g
    v_inf = ((g * e).sum(axis=1) + post_ge + noise) / g_sum
    new = np.empty_like(state)
    new[:, 0] = v_inf + (v - v_inf) * np.exp(-dt * g_sum / 0.6283e-3)
    ca_inf = 0.05 - 14961.0 * (g[:, 1] + g[:, 2]) * (v - e_ca)
    new[:, 1] = ca_inf + (ca - ca_inf) * np.exp(-dt / 200.0)

    vv = v[:, None]
    x_inf = _ref_sig(vv, _REF_INF[:, 0], _REF_INF[:, 1])                # (3, 11)
    x_inf[:, 4] *= ca / (ca + 3.0)
    tau = np.empty((3, 11))
    for k, (c0, c1, a, b) in _REF_TAU_SIG.items():
        tau[:, k] = c0 + c1 * _ref_sig(v, a, b)
    tau[:, 2] = 2.8 + 14.0 / (np.exp((v + 27.0) / 10.0) + np.exp((v + 70.0) / -13.0))
    tau[:, 6] = 2.0 / (np.exp(-14.59 - 0.086 * v) + np.exp(-1.87 + 0.0701 * v))
    tau[:, 7] = 1.34 * _ref_sig(v, 62.9, -10.0) * (1.5 + _ref_sig(v, 34.9, 3.6))
    tau[:, 9] = 120.0 + 300.0 / (np.exp((v + 55.0) / 9.0) + np.exp((v + 65.0) / -16.0))
    x = state[:, 2:13]
    new[:, 2:13] = x_inf + (x - x_inf) * np.exp(-dt / tau)

    s_inf = 1.0 / (1.0 + np.exp((-35.0 - v[SYNAPSE_PRE]) / 5.0))
    tau_s = SYNAPSE_TAU * (1.0 - s_inf)
    new_s = np.where(dt > tau_s, s_inf, s + (s_inf - s) * dt / np.where(dt > tau_s, 1.0, tau_s))
    return new, new_s


# --- summary statistics --------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _savgol_weights(window, order):
    """(centre (w,), head (w//2, w), tail (w//2, w)) least-squares polynomial smoothing weights.

    centre: the fit of degree ``order`` over samples -m..m evaluated at 0; head/tail: the fit over
    the first/last w samples evaluated at the first/last m of them (scipy's mode="interp").
    """
    m = window // 2
    pos = np.arange(window, dtype=np.float64) - m
    powers = np.arange(order + 1)
    fit = np.linalg.pinv(pos[:, None] ** powers)          # (order+1, w): coefficients from data
    evaluate = pos[:, None] ** powers                      # (w, order+1): values at every sample
    rows = evaluate @ fit                                  # (w, w): smoothed value j from the window
    out = (rows[m].copy(), rows[:m].copy(), rows[m + 1:].copy())
    for a in out:
        a.flags.writeable = False
    return out


def smooth(v, dt=DT):
    """Savitzky-Golay smoothing of each row of v (k, L) (window 0.5 ms, cubic), like
    ``scipy.signal.savgol_filter(v, 21, 3)`` at dt = 0.025 ms. Returns (k, L) float64."""
    v = np.atleast_2d(np.asarray(v, dtype=np.float64))
    window = int(SMOOTHING_WINDOW / dt)
    window += 1 - window % 2                                # odd, as the reference
    if v.shape[1] < window:
        raise ValueError(f"pyloric: traces need >= {window} samples to smooth, got {v.shape[1]}")
    centre, head, tail = _savgol_weights(window, SMOOTHING_ORDER)
    m = window // 2
    out = np.empty_like(v)
    for r in range(v.shape[0]):
        out[r, m:v.shape[1] - m] = np.convolve(v[r], centre[::-1], mode="valid")
    out[:, :m] = v[:, :window] @ head.T
    out[:, v.shape[1] - m:] = v[:, -window:] @ tail.T
    return out


def spike_indices(v_smooth):
    """Spikes of one smoothed trace (L,): sample indices i with a local maximum above -10 mV at
    i + 1 (v[i+1] >= v[i] and v[i+2] <= v[i+1]); the reference stamps the spike at sample i."""
    a = np.asarray(v_smooth)
    d = np.diff(a)
    return np.flatnonzero((a[1:-1] > SPIKE_THRESHOLD) & (d[:-1] >= 0) & (d[1:] <= 0))


def bursts(spikes, dt=DT):
    """Kept bursts of one neuron from its sorted spike samples (k,): (starts, ends) sample arrays.

    Consecutive spikes >= 150 ms apart separate bursts; a burst is kept when last - first spike
    > 40 ms. Thresholds in samples: round(150 / dt) and round(40 / dt).
    """
    spikes = np.asarray(spikes, dtype=np.int64)
    if spikes.size == 0:
        return spikes[:0], spikes[:0]
    gap = int(round(BURST_GAP / dt))
    min_len = int(round(MIN_BURST_LENGTH / dt))
    last = np.append(np.flatnonzero(np.diff(spikes) >= gap), spikes.size - 1)
    first = np.concatenate([[0], last[:-1] + 1])
    starts, ends = spikes[first], spikes[last]
    keep = ends - starts > min_len
    return starts[keep], ends[keep]


def _longest_closed_run(block):
    """Longest run of True in a bool array that a later False ends (open final runs not counted)."""
    false_at = np.flatnonzero(~block)
    if false_at.size == 0:
        return 0
    return int(np.max(np.diff(false_at, prepend=-1) - 1))


def plateau_duration(v_smooth, spikes, starts, dt=DT):
    """Plateau duration (ms) of one neuron: NaN without kept bursts; see the module docstring."""
    if len(starts) == 0:
        return math.nan
    above = np.asarray(v_smooth) > PLATEAU_THRESHOLD
    runs = []
    for b in range(len(starts)):
        stop = starts[b + 1] if b + 1 < len(starts) else spikes[-1]
        runs.append(_longest_closed_run(above[starts[b]:stop:PLATEAU_STRIDE]) * PLATEAU_STRIDE)
    mean = float(np.mean(runs))
    return (PLATEAU_NONE if mean < PLATEAU_MIN else mean) * dt


def circuit_statistics(starts, ends, dt=DT):
    """The first 15 statistics (all but the plateaus) from the kept bursts of the three neurons.

    starts, ends: sequences of 3 integer sample arrays (AB/PD, LP, PY), sorted. Returns (15,).
    """
    out = np.full(15, np.nan)
    starts = [np.asarray(a, dtype=np.int64) for a in starts]
    ends = [np.asarray(a, dtype=np.int64) for a in ends]
    for n in range(3):
        if starts[n].size:
            out[1 + n] = np.mean(ends[n] - starts[n]) * dt
    pm = starts[0]
    if pm.size < 2:
        return out
    period = np.mean(np.diff(pm)) * dt
    out[0] = period
    out[4:7] = out[1:4] / period
    cycles = []                                   # (start, end) of each neuron in triphasic cycles
    for k in range(pm.size - 1):
        inside = [(starts[n] >= pm[k]) & (starts[n] < pm[k + 1]) for n in range(3)]
        if all(np.count_nonzero(sel) == 1 for sel in inside):
            cycles.append([(starts[n][sel][0], ends[n][sel][0]) for n, sel in enumerate(inside)])
    if len(cycles) / (pm.size - 1) < TRIPHASIC_FRACTION:
        return out
    c = np.asarray(cycles, dtype=np.float64)      # (cycles, neuron, start/end)
    s, e = c[:, :, 0], c[:, :, 1]
    s2s_pm_lp = np.mean(s[:, 1] - s[:, 0]) * dt
    s2s_lp_py = np.mean(s[:, 2] - s[:, 1]) * dt
    s2s_pm_py = np.mean(s[:, 2] - s[:, 0]) * dt
    e2s_pm_lp = np.mean(s[:, 1] - e[:, 0]) * dt
    e2s_lp_py = np.mean(s[:, 2] - e[:, 1]) * dt
    out[7:15] = (s2s_pm_lp / period, s2s_pm_py / period, s2s_pm_lp, s2s_lp_py,
                 e2s_pm_lp, e2s_lp_py, e2s_pm_lp / period, e2s_lp_py / period)
    return out


def spike_train_statistics(spike_times, dt=DT):
    """The first 15 statistics from spike times: spike_times is 3 arrays of times in ms (AB/PD,
    LP, PY), rounded to samples of ``dt``. Returns (15,); for hand-made trains and checks."""
    if len(spike_times) != 3:
        raise ValueError(f"pyloric: need spike times of 3 neurons, got {len(spike_times)}")
    b = [bursts(np.sort(np.round(np.asarray(t, dtype=np.float64) / dt).astype(np.int64)), dt)
         for t in spike_times]
    return circuit_statistics([x[0] for x in b], [x[1] for x in b], dt)


def summary_statistics(v, dt=DT):
    """The 18 statistics of voltage traces after burn-in: v (3, L) -> (18,), (n, 3, L) -> (n, 18)."""
    v = np.asarray(v, dtype=np.float64)
    if v.ndim == 3:
        return np.stack([summary_statistics(row, dt) for row in v]) if len(v) else np.empty((0, 18))
    if v.ndim != 2 or v.shape[0] != 3:
        raise ValueError(f"pyloric: v must have shape (3, L) or (n, 3, L), got {v.shape}")
    vs = smooth(v, dt)
    spikes = [spike_indices(row) for row in vs]
    b = [bursts(sp, dt) for sp in spikes]
    x = np.empty(18)
    x[:15] = circuit_statistics([a[0] for a in b], [a[1] for a in b], dt)
    for n in range(3):
        x[15 + n] = plateau_duration(vs[n], spikes[n], b[n][0], dt)
    return x


# --- invalid statistics --------------------------------------------------------------------------

@lru_cache(maxsize=1)
def prior_predictive_constants():
    """The stored prior-predictive constants: dict of (18,) arrays 'n_finite', 'mean', 'std', 'min',
    'replacement' (mean - 2 std), 'tsnpe_replacement' (min - 2 std), and 'header' (the file's
    comment lines: how the constants were made)."""
    ref = resources.files("snpse_np").joinpath(CONSTANTS_FILE)
    if not ref.is_file():
        raise FileNotFoundError(
            f"pyloric: {CONSTANTS_FILE} is missing; make it with "
            "`python benchmarks/bench_pyloric.py --constants 2000`")
    lines = ref.read_text().splitlines()
    header = [ln[1:].strip() for ln in lines if ln.startswith("#")]
    rows = list(csv.DictReader(ln for ln in lines if ln and not ln.startswith("#")))
    names = tuple(r["statistic"] for r in rows)
    if names != STATISTIC_NAMES:
        raise ValueError(f"pyloric: {CONSTANTS_FILE} lists {names}, expected {STATISTIC_NAMES}")
    out = {key: np.array([float(r[key]) for r in rows])
           for key in ("n_finite", "mean", "std", "min", "replacement", "tsnpe_replacement")}
    for a in out.values():
        a.flags.writeable = False
    out["header"] = tuple(header)
    return out


def replacement_values(rule="paper"):
    """(18,) the value each invalid statistic is replaced by: "paper" (prior-predictive mean - 2 std,
    Sharrock et al. 2024) or "tsnpe" (min - 2 std, the code of Deistler et al. 2022)."""
    if rule not in REPLACEMENT_RULES:
        raise ValueError(f"pyloric: rule must be one of {REPLACEMENT_RULES}, got {rule!r}")
    c = prior_predictive_constants()
    return c["replacement"] if rule == "paper" else c["tsnpe_replacement"]


def replace_invalid(x, rule="paper"):
    """x (n, 18) or (18,) with every NaN replaced by its column's ``replacement_values(rule)``."""
    x = np.array(x, dtype=np.float64)
    if x.shape[-1] != 18:
        raise ValueError(f"pyloric: x must have 18 columns, got shape {x.shape}")
    r = np.broadcast_to(replacement_values(rule), x.shape)
    bad = np.isnan(x)
    x[bad] = r[bad]
    return x


def valid_mask(x):
    """(n,) bool: rows with all 18 statistics defined. Works on raw x (NaN = undefined) and on x
    from ``Pyloric.simulate`` (an entry equal to its replacement value, under either rule, in the
    precision of x, e.g. float32 after training, = undefined)."""
    x = np.atleast_2d(np.asarray(x))
    if x.ndim != 2 or x.shape[1] != 18:
        raise ValueError(f"pyloric: x must have shape (n, 18), got {x.shape}")
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    bad = ~np.isfinite(x)
    for rule in REPLACEMENT_RULES:
        bad |= x == replacement_values(rule).astype(dtype)
    return ~bad.any(axis=1)


def fraction_valid(x):
    """The fraction of rows of x (n, 18) that are valid simulations (see ``valid_mask``)."""
    mask = valid_mask(x)
    return float(mask.mean()) if mask.size else math.nan


# --- the task ------------------------------------------------------------------------------------

class Pyloric(Task):
    """The pyloric STG circuit: 31 conductances -> 18 rhythm statistics; one observation (the
    experimental rhythm), no reference posterior."""

    name = "pyloric"
    dim_theta = 31
    dim_x = 18
    ve_sigma_limits = None          # the paper ran this task with the VP SDE
    num_simulations = (200_000,)    # the paper's budget: 30,000 then 20,000 per round, 9 rounds
    num_observations = 1

    def _make_prior(self):
        return BoxUniform(PRIOR_LOW, PRIOR_HIGH)

    def _simulate(self, theta, rng):
        return replace_invalid(simulate_statistics(theta, rng))

    def simulate_statistics(self, theta, seed=None):
        """The raw statistics, NaN where undefined: (n, 31) -> (n, 18). ``simulate`` is this with
        the NaN replaced (``replace_invalid``) and draws the same noise for the same seed."""
        theta = self._check_theta(theta)
        return simulate_statistics(theta, as_generator(seed))

    def voltage_traces(self, theta, seed=None, t_max=T_MAX):
        """(n, 3, T) membrane potentials after burn-in (see :func:`voltage_traces`)."""
        return voltage_traces(self._check_theta(theta), seed, t_max=t_max)

    @staticmethod
    def valid_mask(x):
        """See :func:`valid_mask`."""
        return valid_mask(x)

    @staticmethod
    def fraction_valid(x):
        """See :func:`fraction_valid`."""
        return fraction_valid(x)

    def observation(self, k=1):
        """The observed rhythm (18,) (k = 1, the only observation)."""
        if k != 1:
            raise ValueError(f"pyloric has one observation (k = 1), got k = {k}")
        return OBSERVATION.copy()

    def _no_reference(self, what):
        raise NoReferenceError(
            f"pyloric has no {what}: no reference posterior exists for the experimental rhythm; "
            "judge a posterior by fraction_valid of its predictive simulations and by "
            "posterior-predictive checks against observation(1)")

    def true_parameters(self, k=1):
        self._no_reference("true parameters")

    def reference_samples(self, k=1):
        self._no_reference("reference posterior samples")

    def observation_seed(self, k=1):
        self._no_reference("observation seed (the observation is experimental data)")
