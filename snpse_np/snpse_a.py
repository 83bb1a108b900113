"""SNPSE-A: plain loss on the pooled rounds, the proposal corrected by SIR. EXPERIMENTAL.

Round r's network learns the proposal posterior p~_psi^r(theta | x); its posterior is
p_psi^r ∝ p / p~^r * p~_psi^r (``sir.SIRPosterior``), and round r+1 draws from it. The maths,
its limits and costs: ``snpse_ab``'s module docstring (Sharrock et al. 2024, Sec. 3.2, App. C).
"""
import math

from .logweights import log_weights_ess, resample
from .sir import SIRPosterior
from .snpse_ab import CorrectedRounds


class SNPSEA(CorrectedRounds):
    """SNPSE-A (paper Sec. 3.2, App. C): plain loss on pooled data, SIR correction. EXPERIMENTAL.

    The paper found it worse than TSNPSE and recommends TSNPSE; see the module docstring for the
    maths and its limits. ``run`` returns a ``SIRPosterior``. Per-round summaries (``rounds``):
    ``ess`` and ``ess_fraction`` of the SIR weights of the round's posterior (over its M' =
    oversample * n_r network draws), ``log_normalizer`` (its log Z_r), ``log_normalizers`` (log Z_s
    of the mixture's components so far), simulations, epochs, train and other seconds.
    """

    reweighted = True

    def run(self, num_simulations=3000, num_rounds=3, oversample=10, sample_kwargs=None, log_prob_kwargs=None):
        """As ``CorrectedRounds.run``; oversample: network draws per SIR sample (M' / n), in the
        rounds and as the returned posterior's default."""
        if oversample < 1:
            raise ValueError(f"oversample must be >= 1, got {oversample}")
        self.oversample = float(oversample)
        return super().run(num_simulations, num_rounds, sample_kwargs, log_prob_kwargs)

    def draw_from_previous(self, network, n, seed):
        # q_r = the previous round's SIR posterior: resample its weighted draws, whose mean weight
        # was its normaliser Z_{r-1} (set in round_posterior), so q_r is a normalised density
        theta, log_w = self._draws
        return resample(theta, log_w, n, seed), self.posterior.log_normalizer(self.x_o), {}

    def round_posterior(self, network, n, seed):
        post = SIRPosterior(network, self.mixture, oversample=self.oversample, sample_kwargs=self.sample_kwargs)
        m = int(math.ceil(self.oversample * n))
        self._draws = post.weighted_draws(m, x=self.x_o, seed=seed)
        post.set_log_normalizer(self.x_o, self._draws[1])
        ess = log_weights_ess(self._draws[1])
        return post, dict(ess=ess, ess_fraction=ess / m, log_normalizer=post.log_normalizer(self.x_o))
