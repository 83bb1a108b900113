"""The proposal mixture of SNPSE-A/B: the density the pooled parameters of all rounds came from.

Round s drew n_s parameters from q_s (q_0 = the prior p), so the pooled N_k = n_0 + ... + n_k
parameters after round k are draws from

    p~^k(theta) = sum_{s=0}^{k} (n_s / N_k) q_s(theta),

evaluated in log space. The maths of the components and why the counts include failed
simulations: ``snpse_ab``'s module docstring (Sharrock et al. 2024, Sec. 3.2, App. C).
"""
import numpy as np

from .logweights import logsumexp
from .rng import as_generator


class ProposalMixture:
    """log p~^k(theta) = log sum_{s<=k} (n_s / N_k) q_s(theta), the density the pooled data came from.

    q_0 is the prior. Component s >= 1 comes from network s-1 (a ``ScorePosterior``, evaluated at
    x_o with ``log_prob_kwargs``) and its log-normaliser log_norm_{s-1}:
      reweighted=False (SNPSE-B): log q_s = log p_psi^{s-1}(theta | x_o) - log a_{s-1};
      reweighted=True  (SNPSE-A): log q_s = log p~_psi^{s-1}(theta | x_o) + log p - log p~^{s-1} - log Z_{s-1}.
    Immutable: ``extended`` returns the next round's mixture, so a round's posterior keeps the
    mixture its network was trained on. The recursion of SNPSE-A (q_s needs p~^{s-1}) is
    evaluated bottom-up, every network once per call, so the cost is k PF-ODE log-densities.
    """

    def __init__(self, prior, x_o, counts, reweighted, log_prob_kwargs=None, components=()):
        self.prior, self.x_o = prior, np.asarray(x_o, dtype=np.float64).ravel()
        self.reweighted = bool(reweighted)
        self.log_prob_kwargs = dict(log_prob_kwargs or {})
        self.counts = tuple(int(c) for c in counts)  # n_0 .. n_k, parameters drawn per round
        self.components = tuple(components)  # ((network, log_norm), ...) for q_1 .. q_k
        if len(self.counts) != len(self.components) + 1:
            raise ValueError(f"need one count per round: {len(self.counts)} counts for "
                             f"{len(self.components) + 1} rounds")
        if any(c < 1 for c in self.counts):
            raise ValueError(f"every round needs at least one simulation, got counts {self.counts}")
        self.dim = prior.dim

    def extended(self, count, network, log_norm):
        """The mixture with one more round of ``count`` draws from network's (normalised) posterior."""
        return ProposalMixture(self.prior, self.x_o, (*self.counts, count), self.reweighted,
                               self.log_prob_kwargs, (*self.components, (network, float(log_norm))))

    @property
    def log_normalizers(self):
        """log a_s (SNPSE-B) or log Z_s (SNPSE-A) of the components q_1 .. q_k."""
        return [c[1] for c in self.components]

    def log_prob(self, theta, seed=None):
        """log p~^k(theta) for theta (n, d) -> (n,); -inf outside the prior support."""
        theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        rng = as_generator(seed)
        out = np.full(theta.shape[0], -np.inf)
        inside = np.flatnonzero(self.prior.support_contains(theta))
        if inside.size == 0:
            return out
        th = theta[inside]
        log_p = self.prior.log_prob(th)
        log_q = [log_p]
        log_mix = log_p  # p~^0 = q_0 = p
        for s, (network, log_norm) in enumerate(self.components, start=1):
            log_net = network.log_prob(th, x=self.x_o, seed=rng, **self.log_prob_kwargs)
            if self.reweighted:
                log_q.append(log_net + log_p - log_mix - log_norm)
            else:
                log_q.append(log_net - log_norm)
            counts = np.asarray(self.counts[:s + 1], dtype=np.float64)
            log_mix = logsumexp(np.stack(log_q) + np.log(counts / counts.sum())[:, None], axis=0)
        out[inside] = log_mix
        return out
