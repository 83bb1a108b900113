"""The pyloric task: the numba integrator against a numpy reference step, a published parameter set
against its published rhythm, the statistics on hand-made spike trains and voltage traces, the
invalid-statistic handling, seeds and shapes.

Published numbers: mackelab/pyloric, tests/test_simulator.py::test_valid_simulation (the
reference implementation of the simulator and statistics used by Goncalves et al. 2020 and
Deistler et al. 2022): a 31-parameter set, noise ``RandomState(5340).normal(scale=0.001,
size=(3, 440000))``, 11,000 ms at dt = 0.025 ms, burn-in 1,000 ms, and its 18 statistics,
asserted there to relative 3e-3; the same tolerance here. scipy is a test-only dependency
(the Savitzky-Golay filter the reference uses).
"""
import math
import subprocess
import sys

import numpy as np
import pytest

from snpse_np.tasks import TASK_NAMES, get_task
from snpse_np.tasks import pyloric as P

PUBLISHED_THETA = np.array([
    2.86921725e02, 9.75099899e-02, 5.53758392e00, 2.17553840e01, 1.21938578e01, 1.23777092e02,
    9.64585042e-03, 5.16584517e-03, 1.67802913e02, 9.94858342e-01, 7.71058188e00, 1.92827439e01,
    7.30915903e00, 4.33907960e01, 5.03816170e-02, 2.12142250e-02, 4.77249899e02, 5.10924385e00,
    7.13955321e-01, 3.96705037e01, 4.89271588e00, 5.92566636e01, 5.51743568e-02, 1.21729756e-02,
    -1.08318439e01, -1.05837408e01, -1.38916890e01, -9.07825715e00, -8.90034224e00,
    -1.57819342e01, -7.23973359e00])
PUBLISHED_X = np.array([
    9.82763889e02, 9.51450000e01, 1.96325000e02, 9.00375000e01, 9.68136915e-02, 1.99768227e-01,
    9.16166141e-02, 4.32694074e-01, 6.65015051e-01, 4.25236111e02, 2.28316667e02, 3.32486111e02,
    2.39500000e01, 3.38317387e-01, 2.43700448e-02, 2.50000000e00, 9.32500000e00, 2.50000000e00])
PHASES = slice(7, 15)


# --- prior, names, registry ----------------------------------------------------------------------

def test_prior_box_and_names():
    task = get_task("pyloric")
    assert (task.name, task.dim_theta, task.dim_x, task.prior.dim) == ("pyloric", 31, 18, 31)
    assert len(P.PARAMETER_NAMES) == 31 and len(P.STATISTIC_NAMES) == 18
    low, high = task.prior.low, task.prior.high
    # Spot checks against the pyloric package's create_prior(): (Prinz range -/+ padding, >= 0).
    i = P.PARAMETER_NAMES.index
    assert (low[i("AB/PD Na")], high[i("AB/PD Na")]) == (0.0, 500.0)
    assert (low[i("AB/PD Kd")], high[i("AB/PD Kd")]) == (25.0, 150.0)
    assert (low[i("LP CaS")], high[i("LP CaS")]) == (2.0, 12.0)
    assert low[i("LP Leak")] == pytest.approx(0.01) and high[i("LP Leak")] == pytest.approx(0.04)
    assert (low[i("PY A")], high[i("PY A")]) == (30.0, 60.0)
    assert high[i("PY Na")] == 600.0
    np.testing.assert_allclose(low[24:], np.log(1e-8))
    np.testing.assert_allclose(high[24:], np.log([1e-2] + [1e-3] * 6))
    assert task.prior.support_contains(PUBLISHED_THETA[None])[0]
    assert "pyloric" not in TASK_NAMES          # the sbibm grid does not iterate over it


def test_no_reference_posterior():
    task = get_task("pyloric")
    np.testing.assert_array_equal(task.observation(1), P.OBSERVATION)
    assert task.observation(1).shape == (18,) and task.num_observations == 1
    with pytest.raises(ValueError, match="one observation"):
        task.observation(2)
    for method in (task.reference_samples, task.true_parameters, task.observation_seed):
        with pytest.raises(P.NoReferenceError, match="no reference posterior exists"):
            method(1)
    with pytest.raises(NotImplementedError):
        task.log_likelihood(PUBLISHED_THETA, x=P.OBSERVATION)


def test_importing_does_not_import_numba():
    code = ("import sys, numpy as np\n"
            "from snpse_np.tasks import get_task, pyloric as P\n"
            "t = get_task('pyloric'); t.prior.sample(3, seed=0)\n"
            "P.summary_statistics(np.full((3, 100), -60.0)); P.replace_invalid(np.full(18, np.nan))\n"
            "assert 'numba' not in sys.modules, 'numba imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the integrator ------------------------------------------------------------------------------

def _reference_run(theta, noise, state, s):
    g_mem, g_syn = P.conductances(theta)
    v = [state[:, 0].copy()]
    for i in range(1, noise.shape[1]):
        state, s = P.reference_step(state, s, g_mem, g_syn, noise[:, i])
        v.append(state[:, 0].copy())
    return np.array(v).T, state, s


@pytest.mark.parametrize("start", ["initial", "random"])
def test_kernel_matches_numpy_reference(start):
    """float64 kernel vs the plain numpy step: 400 steps (10 ms), prior draws; the random start
    (V, [Ca], every gate and synapse drawn) makes every term of the step matter at once."""
    rng = np.random.default_rng(7)
    thetas = np.vstack([PUBLISHED_THETA, get_task("pyloric").prior.sample(3, seed=3)])
    for theta in thetas:
        if start == "initial":
            state, s = P.initial_state()
        else:
            state = np.column_stack([rng.uniform(-75, 10, 3), rng.uniform(0.05, 5.0, 3),
                                     rng.uniform(0, 1, (3, 11))])
            s = rng.uniform(0, 1, 7)
        noise = 0.01 * rng.standard_normal((3, 400))
        v_ref, state_ref, s_ref = _reference_run(theta, noise, state.copy(), s.copy())
        end = (state.copy(), s.copy())
        v = P.integrate(theta, noise, 0, state=end)
        np.testing.assert_allclose(v, v_ref, rtol=1e-11, atol=1e-9)
        np.testing.assert_allclose(end[0], state_ref, rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(end[1], s_ref, rtol=1e-11, atol=1e-12)
        # n_burn drops the first steps and nothing else.
        np.testing.assert_array_equal(P.integrate(theta, noise, 150, state=(state.copy(), s.copy())), v[:, 150:])


def test_published_parameter_set_reproduces_published_rhythm():
    noise = np.random.RandomState(5340).normal(scale=0.001, size=(3, 440000))
    v = P.integrate(PUBLISHED_THETA, noise, 40000)
    assert v.shape == (3, 400000)
    x = P.summary_statistics(v)
    np.testing.assert_allclose(x, PUBLISHED_X, rtol=3e-3)


def test_published_parameter_set_other_noise_is_still_pyloric():
    """With this package's own noise stream the rhythm stays pyloric: every statistic defined,
    period within 10% and start phases within 0.1 of the published ones (6 seeds measured: period
    -4.5..+6.4%, phases within 0.056)."""
    x = P.simulate_statistics(PUBLISHED_THETA, seed=0)[0]
    assert np.all(np.isfinite(x))
    assert abs(x[0] / PUBLISHED_X[0] - 1) < 0.1
    np.testing.assert_allclose(x[7:9], PUBLISHED_X[7:9], atol=0.1)


# --- statistics on hand-made spike trains --------------------------------------------------------

def _burst(start, length, isi=10.0):
    return np.arange(start, start + length + 1e-9, isi)


def _trains(period=1000.0, n=10, lp=(450.0, 250.0), py=(750.0, 200.0), pm_len=200.0):
    pm = np.concatenate([_burst(k * period, pm_len) for k in range(n)])
    lp_t = np.concatenate([_burst(k * period + lp[0], lp[1]) for k in range(n)])
    py_t = np.concatenate([_burst(k * period + py[0], py[1]) for k in range(n)])
    return [pm, lp_t, py_t]


def test_spike_train_triphasic_rhythm():
    x = P.spike_train_statistics(_trains())
    expected = [1000, 200, 250, 200, 0.2, 0.25, 0.2, 0.45, 0.75, 450, 300, 250, 50, 0.25, 0.05]
    np.testing.assert_allclose(x, expected, rtol=1e-12)
    # Another period and ordering: phases scale with the period.
    x = P.spike_train_statistics(_trains(period=1500.0, lp=(600.0, 300.0), py=(1000.0, 400.0)))
    np.testing.assert_allclose(x, [1500, 200, 300, 400, 200 / 1500, 0.2, 400 / 1500, 0.4, 1000 / 1500,
                                   600, 400, 400, 100, 400 / 1500, 100 / 1500], rtol=1e-12)


def test_burst_thresholds():
    dt = P.DT
    first = np.round(_burst(0.0, 50.0) / dt).astype(int)
    for gap, n in ((150.0, 2), (150.0 - dt, 1)):
        second = np.round(_burst(50.0 + gap, 50.0) / dt).astype(int)
        starts, ends = P.bursts(np.concatenate([first, second]))
        assert len(starts) == n
    # A burst must last longer than 40 ms (first to last spike).
    for length, kept in ((40.0, 0), (40.0 + dt, 1)):
        spikes = np.round(np.array([0.0, 20.0, length]) / dt).astype(int)
        assert len(P.bursts(spikes)[0]) == kept
    assert len(P.bursts(np.array([], dtype=int))[0]) == 0


def test_triphasic_needs_90_percent_of_cycles():
    """11 AB/PD bursts = 10 cycles; LP bursts twice in a cycle spoil it. One spoiled cycle (90%):
    triphasic, delays averaged over the 9 clean cycles; two (80%): the 8 phase statistics are NaN."""
    def trains(bad_cycles):
        pm, lp, py = _trains(n=11)
        lp = np.concatenate([_burst(k * 1000.0 + 450.0, 250.0) for k in range(11) if k not in bad_cycles]
                            + [np.concatenate([_burst(k * 1000 + 100.0, 100.0), _burst(k * 1000 + 600.0, 100.0)])
                               for k in bad_cycles])
        return [pm, np.sort(lp), py]

    x = P.spike_train_statistics(trains([3]))
    np.testing.assert_allclose(x[[0, 7, 8, 9, 10, 11, 12]], [1000, 0.45, 0.75, 450, 300, 250, 50], rtol=1e-12)
    assert x[2] == pytest.approx((10 * 250 + 2 * 100) / 12)       # LP duration: every kept burst
    x = P.spike_train_statistics(trains([3, 6]))
    assert np.all(np.isnan(x[PHASES])) and np.all(np.isfinite(x[:7]))


def test_undefined_statistics_are_nan():
    pm, lp, py = _trains()
    # AB/PD bursts once: no cycle period, no duty cycles, no phases; burst durations stay.
    x = P.spike_train_statistics([_burst(0.0, 200.0), lp, py])
    assert np.isnan(x[0]) and np.all(np.isnan(x[4:])) and np.allclose(x[1:4], [200, 250, 200])
    # Silent LP: its duration and every phase statistic are NaN.
    x = P.spike_train_statistics([pm, [], py])
    assert np.isnan(x[2]) and np.isnan(x[5]) and np.all(np.isnan(x[PHASES]))
    assert x[0] == 1000 and x[4] == pytest.approx(0.2)
    # Only single spikes (no burst lasts > 40 ms) in PY.
    x = P.spike_train_statistics([pm, lp, np.arange(10) * 1000.0 + 750.0])
    assert np.isnan(x[3]) and np.all(np.isnan(x[PHASES]))


# --- statistics on voltage traces ----------------------------------------------------------------

def test_smoothing_matches_scipy_savgol():
    signal = pytest.importorskip("scipy.signal")
    rng = np.random.default_rng(0)
    v = np.cumsum(rng.standard_normal((3, 2000)), axis=1)
    np.testing.assert_allclose(P.smooth(v), signal.savgol_filter(v, 21, 3, axis=1), rtol=0, atol=1e-9)


def _voltage(trains, length_ms=10_000.0, plateaus=None):
    """Synthetic traces: -60 mV rest, Gaussian spikes (80 mV, sigma 0.3 ms) at sample-exact times,
    and optional plateaus (-20 mV) given as (neuron, start ms, duration ms)."""
    dt = P.DT
    t = np.arange(int(length_ms / dt)) * dt
    v = np.full((3, t.size), -60.0)
    for n, plateau in (plateaus or []):
        for start, dur in plateau:
            v[n, (t >= start) & (t < start + dur)] = -20.0
    for n, times in enumerate(trains):
        for s in times:
            k = int(round(s / dt))
            lo, hi = max(k - 80, 0), min(k + 81, t.size)
            v[n, lo:hi] += 80.0 * np.exp(-0.5 * ((np.arange(lo, hi) - k) * dt / 0.3) ** 2)
    return v


def test_voltage_statistics_match_spike_trains_and_plateaus():
    trains = [tr + 20.0 for tr in _trains(n=9)]        # start 20 ms into the trace
    v = _voltage(trains)
    vs = P.smooth(v)
    # A spike at sample k is stamped k - 1 (the reference's convention), for every spike.
    for n in range(3):
        np.testing.assert_array_equal(P.spike_indices(vs[n]), np.round(trains[n] / P.DT).astype(int) - 1)
    x = P.summary_statistics(v)
    np.testing.assert_allclose(x[:15], P.spike_train_statistics(trains), rtol=1e-12)
    np.testing.assert_array_equal(x[15:], [2.5, 2.5, 2.5])      # spikes are no plateaus
    # A 100 ms plateau in every LP burst (from 5 ms after its first spike, between spikes, so
    # that no spike peak sits on a step): measured on every 10th sample.
    lp_starts = [(k * 1000.0 + 475.0, 100.0) for k in range(9)]
    x = P.summary_statistics(_voltage(trains, plateaus=[(1, lp_starts)]))
    assert x[16] == pytest.approx(100.0, abs=0.5)
    np.testing.assert_allclose(x[:15], P.spike_train_statistics(trains), rtol=1e-12)
    assert x[15] == 2.5 and x[17] == 2.5
    # Silent traces: every statistic undefined.
    assert np.all(np.isnan(P.summary_statistics(np.full((3, 4000), -60.0))))


# --- invalid statistics --------------------------------------------------------------------------

def test_prior_predictive_constants_file():
    c = P.prior_predictive_constants()
    np.testing.assert_allclose(c["replacement"], c["mean"] - 2 * c["std"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c["tsnpe_replacement"], c["min"] - 2 * c["std"], rtol=1e-12, atol=1e-12)
    assert any("bench_pyloric.py --constants" in line for line in c["header"])
    assert np.all(np.isfinite(c["replacement"])) and np.all(c["n_finite"] >= 2)
    # mean - 2 std lies below the mean, and min - 2 std below every finite prior-predictive value.
    assert np.all(c["replacement"] < c["mean"]) and np.all(c["tsnpe_replacement"] < c["min"])


def test_replace_invalid_and_valid_mask():
    r = P.replacement_values("paper")
    x = np.tile(P.OBSERVATION, (4, 1))
    x[1, 0] = np.nan                       # no cycle period
    x[2, PHASES] = np.nan                  # not triphasic
    x[3, :] = np.nan                       # silent
    before = x.copy()
    y = P.replace_invalid(x)
    np.testing.assert_array_equal(x, before)                       # input untouched
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(y[np.isnan(x)], np.broadcast_to(r, x.shape)[np.isnan(x)])
    np.testing.assert_array_equal(y[~np.isnan(x)], x[~np.isnan(x)])
    expected = [True, False, False, False]
    for arr in (x, y, y.astype(np.float32), P.replace_invalid(x, rule="tsnpe")):
        np.testing.assert_array_equal(P.valid_mask(arr), expected)
    assert P.fraction_valid(y) == 0.25 and P.fraction_valid(x[:1]) == 1.0
    np.testing.assert_array_equal(P.replace_invalid(x, rule="tsnpe")[3], P.replacement_values("tsnpe"))
    with pytest.raises(ValueError, match="rule"):
        P.replace_invalid(x, rule="median")
    with pytest.raises(ValueError, match="18"):
        P.valid_mask(np.zeros((2, 17)))


# --- seeds and shapes ----------------------------------------------------------------------------

def test_determinism_per_seed_and_shapes():
    theta = np.vstack([PUBLISHED_THETA, PUBLISHED_THETA])
    kw = dict(t_max=3000.0)
    a = P.simulate_statistics(theta, seed=5, **kw)
    np.testing.assert_array_equal(a, P.simulate_statistics(theta, seed=5, **kw))
    np.testing.assert_array_equal(a, P.simulate_statistics(theta, seed=np.random.default_rng(5), **kw))
    assert a.shape == (2, 18) and not np.array_equal(a[0], a[1])   # rows draw their own noise
    assert not np.array_equal(a, P.simulate_statistics(theta, seed=6, **kw))
    v = P.voltage_traces(theta, seed=5, t_max=1100.0)
    assert v.shape == (2, 3, 4000)
    assert P.simulate_statistics(PUBLISHED_THETA, seed=5, t_max=1100.0).shape == (1, 18)   # one row (31,)
    with pytest.raises(ValueError, match="31"):
        P.simulate_statistics(np.zeros((2, 30)))
    with pytest.raises(ValueError, match="burn_in"):
        P.simulate_statistics(theta, t_max=500.0)
    with pytest.raises(ValueError, match="state"):        # the state is updated in place
        P.integrate(PUBLISHED_THETA, np.zeros((3, 10)), 0, state=(np.zeros((3, 13), np.float32), np.zeros(7)))
    with pytest.raises(ValueError, match="noise"):
        P.integrate(PUBLISHED_THETA, np.zeros((2, 10)), 0)


def test_task_simulate_is_replaced_statistics():
    task = get_task("pyloric")
    theta = np.vstack([PUBLISHED_THETA, task.prior.low])     # the second row is silent
    raw = task.simulate_statistics(theta, seed=11)
    x = task.simulate(theta, seed=11)
    assert x.shape == (2, 18) and x.dtype == np.float64 and np.all(np.isfinite(x))
    np.testing.assert_array_equal(x, P.replace_invalid(raw))
    np.testing.assert_array_equal(task.valid_mask(x), [True, False])
    assert math.isclose(task.fraction_valid(raw), 0.5)
