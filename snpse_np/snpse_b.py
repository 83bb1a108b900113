"""SNPSE-B: importance-weighted denoising score matching on the pooled rounds. EXPERIMENTAL.

Every round trains on all pooled rows with self-normalised weights p / p~^r, whose minimiser is
the posterior score; round r+1 draws from the network's posterior restricted to the prior support.
The maths, its limits and costs: ``snpse_ab``'s module docstring (Sharrock et al. 2024, Sec. 3.2,
App. C).
"""
import math

import numpy as np

from .logweights import log_weights_ess
from .rejection import draw_inside_prior
from .rng import as_generator
from .snpse_ab import CorrectedRounds


class SNPSEB(CorrectedRounds):
    """SNPSE-B (paper Sec. 3.2, App. C): importance-weighted DSM loss. EXPERIMENTAL.

    The paper found it worse than TSNPSE (high-variance weights, unstable training) and recommends
    TSNPSE; see the module docstring. ``run`` returns the final network's ``ScorePosterior`` (as for
    TSNPSE, its ``sample`` keeps draws outside the prior unless ``reject_outside_prior=True``). Per-round
    summaries (``rounds``): ``ess`` and ``ess_fraction`` of the training weights p / p~^r over all
    pooled rows, ``acceptance`` (in-prior fraction of the round's draws from the previous
    posterior, its log is that component's log a), ``log_normalizers``, epochs, seconds.
    """

    reweighted = False
    draw_keys = ("acceptance",)

    def draw_from_previous(self, network, n, seed):
        # draws outside the prior are rejected, so q_r is the network density on the prior support
        # divided by its in-prior mass a; the acceptance fraction over every candidate drawn is its
        # Monte Carlo estimate
        rng = as_generator(seed)
        theta, acceptance = draw_inside_prior(
            n, self.prior, lambda m: network.sample(m, x=self.x_o, seed=rng, **self.sample_kwargs))
        return theta, math.log(acceptance), dict(acceptance=acceptance)

    def training_weights(self, inference, r, seed):
        theta, _ = inference.get_simulations()
        n = theta.shape[0]
        if r == 0:  # the prior is the proposal: all weights 1
            return None, dict(ess=float(n), ess_fraction=1.0)
        log_w = self.prior.log_prob(theta) - self.mixture.log_prob(theta, seed=seed)
        ess = log_weights_ess(log_w)
        # any positive scale works (they are self-normalised): largest 1, and a floor of e^-700
        # (effectively zero) so that no weight underflows to 0, which NPSE.train rejects
        return np.exp(np.maximum(log_w - np.max(log_w), -700.0)), dict(ess=ess, ess_fraction=ess / n)

    def round_posterior(self, network, n, seed):
        return network, {}
