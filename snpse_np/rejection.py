"""Rejection sampling with batches sized by the acceptance seen so far (one home for the loop).

    keep = draw_until(n, d, draw, accept)

``draw(m)`` returns m candidate rows (m, d); ``accept(rows)`` a boolean mask (m,). Each round
asks for (missing / acceptance so far) x 1.2 candidates, at least ``min_batch`` and at most
``max_batch``, so a posterior with 2% of its mass inside a 31-D prior box (the pyloric task's
first round) costs a few rounds of the right size instead of 100 rounds of the missing count
(which stopped at ~87% of n there). The acceptance estimate counts every candidate so far.
"""
import math

import numpy as np


class RejectionError(RuntimeError):
    """Too few candidates were accepted within the allowed rounds (carries the acceptance rate)."""

    def __init__(self, message, acceptance):
        super().__init__(message)
        self.acceptance = acceptance


def draw_until(n, dim, draw, accept, max_rounds=100, min_batch=64, max_batch=1_000_000, progress=None,
               what="inside the prior support", max_candidates=None):
    """n accepted rows (n, dim) from ``draw`` / ``accept`` (see the module docstring).

    progress: an optional ``Progress`` told the count after each round. ``max_candidates``: an
    optional cap on all candidates drawn (the last batch is cut to it); ``max_rounds=None`` leaves
    the rounds unbounded (then ``max_candidates`` is required). Raises RejectionError naming the
    acceptance rate when the rounds or the candidates run out before n rows.
    """
    if max_rounds is None and max_candidates is None:
        raise ValueError("draw_until needs max_rounds or max_candidates")
    kept, have, tried, rounds = [np.empty((0, dim))], 0, 0, 0
    while have < n:
        if (max_rounds is not None and rounds >= max_rounds) or (
                max_candidates is not None and tried >= max_candidates):
            acc = have / max(tried, 1)
            raise RejectionError(f"only {have} of {n} samples fell {what} after {rounds} rounds "
                                 f"({tried} candidates, acceptance {acc:.3g}); the posterior may be poorly "
                                 f"trained", acc)
        missing = n - have
        rate = have / tried if tried else 1.0
        m = missing if not tried else math.ceil(1.2 * missing / max(rate, 1.0 / max_batch))
        m = int(min(max(m, min_batch), max_batch))
        if max_candidates is not None:
            m = min(m, max_candidates - tried)
        cand = draw(m)
        ok = np.asarray(accept(cand), dtype=bool)
        tried += m
        rounds += 1
        got = cand[ok][:missing]
        kept.append(got)
        have += got.shape[0]
        if progress is not None:
            progress.update(f"{have}/{n} {what} (acceptance {have / tried:.3g})", force=True)
    return np.concatenate(kept)[:n]


def draw_inside_prior(n, prior, draw):
    """n rows (n, prior.dim) of ``draw(m)`` inside the prior support, and the fraction of every
    candidate drawn that was inside (a Monte Carlo estimate of the proposal's in-prior mass; the
    sequential variants SNPSE-B and SNPSE-C use it for their proposals)."""
    counts = [0, 0]  # candidates inside the prior support, candidates

    def inside(cand):
        ok = prior.support_contains(cand)
        counts[0], counts[1] = counts[0] + int(np.sum(ok)), counts[1] + len(ok)
        return ok

    theta = draw_until(n, prior.dim, draw, inside)
    return theta, counts[0] / counts[1]
