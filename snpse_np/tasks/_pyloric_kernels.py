"""Numba kernel of the pyloric circuit integrator (see :mod:`snpse_np.tasks.pyloric` for the maths).

Importing this module imports numba, so :mod:`.pyloric` imports it lazily, on the first
simulation.

One call integrates one circuit (three neurons, seven synapses) for ``noise.shape[1]`` time
steps of exponential Euler and writes the membrane potentials after the burn-in. The state is
passed in and updated in place, so a caller (or a test) can start from any state and read the
state the integration ended in.

Layout of ``state`` (3, 13), one row per neuron (0 = AB/PD, 1 = LP, 2 = PY), columns
``STATE_NAMES`` of :mod:`.pyloric`:
    0 V (mV), 1 [Ca] (uM), 2 mNa, 3 mCaT, 4 mCaS, 5 mA, 6 mKCa, 7 mKd, 8 mH,
    9 hNa, 10 hCaT, 11 hCaS, 12 hA.
``s`` (7,): synapse activations in the order of ``SYNAPSE_NAMES`` of :mod:`.pyloric`.
"""
import math

import numpy as np
from numba import njit

# Constants of the model (the numpy reference in pyloric.py states them again on purpose:
# it is the independent check of this kernel).
_C = 0.6283e-3            # membrane capacitance, uF (1 uF/cm^2 on 0.628e-3 cm^2)
_E_NA = 50.0
_E_K = -80.0
_E_H = -20.0
_E_LEAK = -50.0
_CA_TAU = 200.0           # ms
_CA_F = 14961.0           # uM / uA
_CA_EXT = 3000.0          # uM
_CA_0 = 0.05              # uM
_RT_ZF = 8.31451e3 * 283.0 / (2.0 * 96485.3415)   # mV, Nernst factor at 283 K
_S_VTH = -35.0            # synaptic half-activation, mV
_S_DELTA = 5.0            # synaptic slope, mV


@njit(cache=True, inline="always")
def _sig(v, a, b):
    """1 / (1 + exp((v + a) / b))."""
    return 1.0 / (1.0 + math.exp((v + a) / b))


@njit(cache=True)
def integrate(g_mem, g_syn, syn_post, syn_pre, syn_e, syn_k, noise, dt, n_burn, state, s, v_out):
    """Advance the circuit by ``noise.shape[1] - 1`` steps of ``dt`` ms.

    g_mem (3, 8) float64: maximal conductances in mS (Na, CaT, CaS, A, KCa, Kd, H, leak);
    g_syn (7,) float64: synaptic conductances in mS; syn_post, syn_pre (7,) int64: the
    postsynaptic and presynaptic neuron of each synapse; syn_e (7,): reversal potentials (mV);
    syn_k (7,): 1 / k_minus (ms); noise (3, T): input current (uA) added at step i = 1..T-1
    (column 0 is not used: step 0 is the initial state); n_burn: the first step written to
    v_out; state (3, 13), s (7,): the state at step 0, overwritten with the state at step T-1;
    v_out (3, T - n_burn): V at steps n_burn..T-1.
    """
    n_steps = noise.shape[1]
    decay_ca = math.exp(-dt / _CA_TAU)
    if n_burn == 0:
        for j in range(3):
            v_out[j, 0] = state[j, 0]
    g_tot = np.empty(3)         # summed synaptic conductance onto each neuron
    i_tot = np.empty(3)         # summed g_syn * E_syn onto each neuron
    s_inf_pre = np.empty(3)     # synaptic steady state set by each presynaptic neuron
    for i in range(1, n_steps):
        for j in range(3):
            g_tot[j] = 0.0
            i_tot[j] = 0.0
        for k in range(7):
            gs = g_syn[k] * s[k]
            g_tot[syn_post[k]] += gs
            i_tot[syn_post[k]] += gs * syn_e[k]

        for j in range(3):
            v = state[j, 0]
            ca = state[j, 1]
            m_na = state[j, 2]
            m_cat = state[j, 3]
            m_cas = state[j, 4]
            m_a = state[j, 5]
            m_kca = state[j, 6]
            m_kd = state[j, 7]
            m_h = state[j, 8]
            h_na = state[j, 9]
            h_cat = state[j, 10]
            h_cas = state[j, 11]
            h_a = state[j, 12]

            # Conductances from the gates at step i-1 (integer powers: no pow call).
            c_na = g_mem[j, 0] * m_na * m_na * m_na * h_na
            c_cat = g_mem[j, 1] * m_cat * m_cat * m_cat * h_cat
            c_cas = g_mem[j, 2] * m_cas * m_cas * m_cas * h_cas
            c_a = g_mem[j, 3] * m_a * m_a * m_a * h_a
            m2 = m_kca * m_kca
            c_kca = g_mem[j, 4] * m2 * m2
            m2 = m_kd * m_kd
            c_kd = g_mem[j, 5] * m2 * m2
            c_h = g_mem[j, 6] * m_h
            c_leak = g_mem[j, 7]

            # Calcium: Nernst potential from [Ca] at i-1, exponential Euler towards
            # Ca_0 - f I_Ca with time constant 200 ms.
            e_ca = _RT_ZF * math.log(_CA_EXT / ca)
            i_ca = (c_cat + c_cas) * (v - e_ca)
            ca_inf = _CA_0 - _CA_F * i_ca
            state[j, 1] = ca_inf + (ca - ca_inf) * decay_ca

            # Membrane: exponential Euler towards V_inf = sum(g E) / sum(g).
            g_sum = (g_tot[j] + c_na + c_cat + c_cas + c_a + c_kca + c_kd + c_h + c_leak)
            i_sum = (i_tot[j] + c_na * _E_NA + (c_cat + c_cas) * e_ca
                     + (c_a + c_kca + c_kd) * _E_K + c_h * _E_H + c_leak * _E_LEAK + noise[j, i])
            if g_sum == 0.0:
                state[j, 0] = v + dt * i_sum / _C
            else:
                v_inf = i_sum / g_sum
                state[j, 0] = v_inf + (v - v_inf) * math.exp(-dt * g_sum / _C)

            # Gates: exponential Euler with V and [Ca] at step i-1.
            x_inf = _sig(v, 25.5, -5.29)
            tau = 2.64 - 2.52 * _sig(v, 120.0, -25.0)
            state[j, 2] = x_inf + (m_na - x_inf) * math.exp(-dt / tau)

            x_inf = _sig(v, 27.1, -7.2)
            tau = 43.4 - 42.6 * _sig(v, 68.1, -20.5)
            state[j, 3] = x_inf + (m_cat - x_inf) * math.exp(-dt / tau)

            x_inf = _sig(v, 33.0, -8.1)
            tau = 2.8 + 14.0 / (math.exp((v + 27.0) / 10.0) + math.exp((v + 70.0) / -13.0))
            state[j, 4] = x_inf + (m_cas - x_inf) * math.exp(-dt / tau)

            x_inf = _sig(v, 27.2, -8.7)
            tau = 23.2 - 20.8 * _sig(v, 32.9, -15.2)
            state[j, 5] = x_inf + (m_a - x_inf) * math.exp(-dt / tau)

            x_inf = ca / (ca + 3.0) * _sig(v, 28.3, -12.6)
            tau = 180.6 - 150.2 * _sig(v, 46.0, -22.7)
            state[j, 6] = x_inf + (m_kca - x_inf) * math.exp(-dt / tau)

            x_inf = _sig(v, 12.3, -11.8)
            tau = 14.4 - 12.8 * _sig(v, 28.3, -19.2)
            state[j, 7] = x_inf + (m_kd - x_inf) * math.exp(-dt / tau)

            x_inf = _sig(v, 75.0, 5.5)
            tau = 2.0 / (math.exp(-14.59 - 0.086 * v) + math.exp(-1.87 + 0.0701 * v))
            state[j, 8] = x_inf + (m_h - x_inf) * math.exp(-dt / tau)

            x_inf = _sig(v, 48.9, 5.18)
            tau = 1.34 * _sig(v, 62.9, -10.0) * (1.5 + _sig(v, 34.9, 3.6))
            state[j, 9] = x_inf + (h_na - x_inf) * math.exp(-dt / tau)

            x_inf = _sig(v, 32.1, 5.5)
            tau = 210.0 - 179.6 * _sig(v, 55.0, -16.9)
            state[j, 10] = x_inf + (h_cat - x_inf) * math.exp(-dt / tau)

            x_inf = _sig(v, 60.0, 6.2)
            tau = 120.0 + 300.0 / (math.exp((v + 55.0) / 9.0) + math.exp((v + 65.0) / -16.0))
            state[j, 11] = x_inf + (h_cas - x_inf) * math.exp(-dt / tau)

            x_inf = _sig(v, 56.9, 4.9)
            tau = 77.2 - 58.4 * _sig(v, 38.9, -26.5)
            state[j, 12] = x_inf + (h_a - x_inf) * math.exp(-dt / tau)

            # The synaptic steady state depends on the presynaptic V only: one exp per neuron.
            s_inf_pre[j] = 1.0 / (1.0 + math.exp((_S_VTH - v) / _S_DELTA))

        # Synapses: forward Euler with tau_s = (1 - s_inf) / k_minus, set to s_inf when the
        # step is longer than tau_s (Prinz et al. 2004).
        for k in range(7):
            s_inf = s_inf_pre[syn_pre[k]]
            tau_s = syn_k[k] * (1.0 - s_inf)
            if dt > tau_s:
                s[k] = s_inf
            else:
                s[k] += (s_inf - s[k]) * dt / tau_s

        if i >= n_burn:
            for j in range(3):
                v_out[j, i - n_burn] = state[j, 0]
