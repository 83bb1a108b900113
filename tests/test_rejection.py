"""The one rejection loop: batches sized by the acceptance seen so far, exact counts, clear errors."""
import numpy as np
import pytest

from snpse_np.rejection import RejectionError, draw_until


class Source:
    """N(0, 1) rows in 1-D; records the batch sizes asked for."""

    def __init__(self, seed=0):
        self.rng, self.asked = np.random.default_rng(seed), []

    def __call__(self, m):
        self.asked.append(m)
        return self.rng.standard_normal((m, 1))


def tail(rows):
    return np.abs(rows[:, 0]) > 2.5  # acceptance 2 (1 - Phi(2.5)) = 1.24%


def test_low_acceptance_takes_few_rounds_of_the_right_size():
    src = Source()
    out = draw_until(2000, 1, src, tail)
    assert out.shape == (2000, 1) and np.all(np.abs(out) > 2.5)
    assert len(src.asked) <= 4, src.asked  # the old loop asked for the missing count: ~80 rounds
    assert src.asked[0] == 2000 and src.asked[1] > 50 * 2000 * 0.5
    # the kept rows are the truncated normal: mean |x| = phi(2.5) / (1 - Phi(2.5)) = 2.8227
    assert abs(np.abs(out).mean() - 2.8227) < 0.03


def test_all_accepted_is_one_round_and_zero_is_no_round():
    src = Source()
    assert draw_until(500, 1, src, lambda r: np.ones(len(r), bool)).shape == (500, 1)
    assert src.asked == [500]
    src = Source()
    assert draw_until(0, 3, src, tail).shape == (0, 3) and src.asked == []


def test_too_few_rounds_raise_with_the_acceptance():
    with pytest.raises(RejectionError, match=r"acceptance 0\.01") as err:
        draw_until(2000, 1, Source(), tail, max_rounds=1)
    assert 0.008 < err.value.acceptance < 0.017
    assert isinstance(err.value, RuntimeError)  # callers catching RuntimeError keep working
    with pytest.raises(RejectionError, match=r"acceptance 0\)"):
        draw_until(10, 1, Source(), lambda r: np.zeros(len(r), bool), max_rounds=3, max_batch=1000)


def test_a_candidate_cap_cuts_the_last_batch_and_raises_when_spent():
    src = Source()
    with pytest.raises(RejectionError, match="after 2 rounds") as err:
        draw_until(2000, 1, src, tail, max_rounds=None, max_candidates=5000)
    assert src.asked == [2000, 3000] and sum(src.asked) == 5000  # the second batch cut to the cap
    assert 0.006 < err.value.acceptance < 0.02
    src = Source()
    out = draw_until(100, 1, src, tail, max_rounds=None, max_candidates=10 ** 7, min_batch=256, max_batch=4000)
    assert out.shape == (100, 1) and src.asked[0] == 256 and max(src.asked) == 4000  # batches stay in range
    with pytest.raises(ValueError, match="max_rounds or max_candidates"):
        draw_until(10, 1, Source(), tail, max_rounds=None)
