"""The score model: network + SDE + preconditioning = s(theta_t, x, t) in standardised space.

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
= mean_j (c out_j + z_j)^2 with c = sigma / c_out: see ``backends.numpy_ref.dsm_loss``.
"""
import numpy as np

PRECONDITIONS = ("none", "noise")
TIME_INPUTS = ("sigma", "t", "log_sigma")


class ScoreModel:
    def __init__(self, net, sde, precondition="noise", time_input="sigma", floor=0.1):
        if precondition not in PRECONDITIONS:
            raise ValueError(f"precondition must be one of {PRECONDITIONS}, got {precondition!r}")
        if time_input not in TIME_INPUTS:
            raise ValueError(f"time_input must be one of {TIME_INPUTS}, got {time_input!r}")
        self.net, self.sde = net, sde
        self.precondition, self.time_input, self.floor = precondition, time_input, float(floor)

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
