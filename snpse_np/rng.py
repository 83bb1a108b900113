"""Explicit randomness: every function that draws takes a seed or a ``numpy.random.Generator``.

``as_generator(seed)`` turns what a caller passed into a Generator:
an int (or None, for fresh OS entropy) seeds a new PCG64 generator; a Generator is used as is,
so a caller can thread one generator through several calls.
"""
import numpy as np


def as_generator(seed=None):
    """Return a ``numpy.random.Generator`` for ``seed`` (int, None, SeedSequence or Generator)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (bool, float)):
        raise ValueError(f"seed must be an int, None or a numpy Generator, got {seed!r}")
    return np.random.default_rng(seed)


def child_seed(seed, *keys):
    """An int seed derived from ``seed`` and integer ``keys`` (e.g. round, chunk index).

    The same (seed, keys) always gives the same child, independent of how many draws the
    parent made, so work split into pieces stays reproducible whatever the split order.
    """
    base = 0 if seed is None else int(seed)
    ss = np.random.SeedSequence([base, *map(int, keys)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])
