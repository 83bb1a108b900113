"""The training schedule: warm-up and decay shapes, the budget in steps and seconds, the EMA's
warm-up, early stopping, and the step budget the trainer actually runs."""
import math

import numpy as np
import pytest

import snpse_np as sn
from snpse_np.backend import get_backend
from snpse_np.optim import Adam
from snpse_np.schedule import LRSchedule, auto_ema_decay, default_steps, ema_decay


def test_warmup_is_linear_then_cosine_reaches_final():
    s = LRSchedule(1e-3, total_steps=1000, warmup_steps=100, final=1e-5)
    warm = [s.lr(k) for k in range(100)]
    assert np.allclose(np.diff(warm), 1e-3 / 101)  # a straight ramp
    assert warm[-1] < 1e-3
    assert s.lr(100) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 0.1)))
    assert s.lr(500) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)  # half-way: the mean of peak and final
    assert s.lr(1000) == pytest.approx(1e-5)
    after = [s.lr(k) for k in range(100, 1001)]
    assert np.all(np.diff(after) <= 0)  # never increases after the warm-up


def test_linear_and_constant_shapes():
    lin = LRSchedule(2.0, total_steps=10, kind="linear")
    assert [lin.lr(k) for k in (0, 5, 10)] == pytest.approx([2.0, 1.0, 0.0])
    const = LRSchedule(2.0, total_steps=10, warmup_steps=2, kind="constant")
    assert [const.lr(k) for k in (0, 1, 2, 9)] == pytest.approx([2 / 3, 4 / 3, 2.0, 2.0])


def test_seconds_budget_anneals_to_the_deadline():
    s = LRSchedule(1.0, total_steps=10 ** 9, max_seconds=10.0)
    assert s.progress(5, elapsed=5.0) == pytest.approx(0.5)  # time is the nearer budget
    assert s.lr(5, elapsed=5.0) == pytest.approx(0.5)
    assert not s.finished(5, elapsed=9.99) and s.finished(5, elapsed=10.0)
    assert s.lr(5, elapsed=10.0) == pytest.approx(0.0)
    steps_first = LRSchedule(1.0, total_steps=10, max_seconds=1e6)
    assert steps_first.progress(5, elapsed=1.0) == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [dict(peak=0.0), dict(peak=float("nan")), dict(total_steps=0),
                                 dict(total_steps=2.5), dict(warmup_steps=-1), dict(final=2.0),
                                 dict(kind="step"), dict(max_seconds=0.0), dict(max_seconds=float("inf"))])
def test_schedule_rejects_bad_settings(bad):
    kw = dict(peak=1.0, total_steps=10)
    kw.update(bad)
    with pytest.raises(ValueError):
        LRSchedule(**kw)


def test_ema_warms_up_and_auto_decay_follows_the_budget():
    assert ema_decay(0, 0.999) == pytest.approx(0.1)
    assert ema_decay(10 ** 6, 0.999) == 0.999
    assert auto_ema_decay(20_000) == pytest.approx(1 - 1 / 1000)
    assert auto_ema_decay(2_000) == pytest.approx(1 - 1 / 100)
    # Adam's EMA after one step: e = 0.1 e0 + 0.9 p1 (the warmed-up decay), not 0.999 e0
    be = get_backend("numpy")
    p = np.zeros(4)
    opt = Adam(be, p, lr=0.5, ema_decay=0.999)
    opt.step(np.ones(4))
    assert np.allclose(opt.ema, 0.9 * p)
    assert np.allclose(p, -0.5, atol=1e-6)


def test_default_steps_grows_with_data_and_is_clipped():
    a, b, c = default_steps(850), default_steps(8_500), default_steps(85_000)
    assert 2_000 <= a < b < c <= 60_000
    assert b == pytest.approx(165 * np.sqrt(8_500), abs=1)
    assert c / b == pytest.approx(np.sqrt(10), rel=1e-3) and b / a == pytest.approx(np.sqrt(10), rel=1e-3)
    assert default_steps(8_500, batch=256) == pytest.approx(b / 2, abs=1)
    assert default_steps(10 ** 7) == 60_000 and default_steps(10) == 2_000


def test_auto_learning_rate_is_lower_with_few_simulations():
    from snpse_np.schedule import auto_learning_rate
    assert auto_learning_rate(8_500) == auto_learning_rate(10 ** 6) == pytest.approx(2e-3)
    assert auto_learning_rate(2_125) == pytest.approx(1e-3)  # sqrt(1/4) of the peak
    assert auto_learning_rate(850) == pytest.approx(2e-3 * np.sqrt(0.1))
    assert auto_learning_rate(100) == pytest.approx(5e-4)  # the floor
    # shorter runs than the default budget: up to 3x, by sqrt(default / total)
    full = default_steps(8_500)
    assert auto_learning_rate(8_500, full) == auto_learning_rate(8_500, 2 * full) == pytest.approx(2e-3)
    assert auto_learning_rate(8_500, full // 4) == pytest.approx(4e-3, rel=1e-3)
    assert auto_learning_rate(8_500, 10) == pytest.approx(6e-3)
    assert auto_learning_rate(8_500, full // 4, batch=256) == pytest.approx(2e-3 * np.sqrt(2), rel=1e-3)
    theta, x = _data(300)
    inf = _npse().append_simulations(theta, x)
    inf.train(max_steps=default_steps(255), max_seconds=0.05)  # the rate is set by the step budget
    assert inf.summary["learning_rate"] == pytest.approx(5e-4)
    inf.train(max_steps=3)
    assert inf.summary["learning_rate"] == pytest.approx(1.5e-3)  # a 3-step run: 3x
    inf.train(max_steps=3, learning_rate=1e-2)
    assert inf.summary["learning_rate"] == 1e-2


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((n, 2))
    return theta, theta + 0.3 * rng.standard_normal((n, 2))


def _npse():
    return sn.NPSE(sn.Normal(np.zeros(2), np.ones(2)), sde="ve", backend="numpy", seed=0, hidden=16,
                   show_progress=False)


def test_train_runs_exactly_the_step_budget():
    theta, x = _data()
    inf = _npse().append_simulations(theta, x)
    inf.train(max_steps=37, batch_size=64, min_steps_per_epoch=10, lr_schedule="cosine")
    s = inf.summary
    assert s["steps"] == 37 and s["total_steps"] == 37 and s["stop_reason"] == "budget done"
    assert s["history"][-1, 0] == 37  # the last validation saw the final weights
    inf.train(max_epochs=3, batch_size=64, min_steps_per_epoch=10)
    # 255 training rows, batch 64: 3 steps a pass, 4 passes an epoch (>= 10 steps)
    assert inf.summary["steps_per_epoch"] == 12 and inf.summary["steps"] == 36


def test_seconds_budget_ends_the_run_annealed():
    theta, x = _data()
    inf = _npse().append_simulations(theta, x)
    inf.train(max_steps=10 ** 7, max_seconds=0.5, batch_size=64, lr_schedule="cosine")
    s = inf.summary
    assert s["stop_reason"] == "max_seconds"
    assert 0 < s["steps"] < 10 ** 7
    inf.train(max_steps=10 ** 7, max_seconds=0.5, batch_size=64, lr_schedule="wsd", patience=float("inf"))
    s = inf.summary
    assert s["stop_reason"] == f"cooled down (cool-down from step {s['cooldown_step']}: budget)"
    assert 0 < s["steps"] < 10 ** 7


def test_patience_stops_early_and_keeps_the_best_weights():
    theta, x = _data(80)
    inf = _npse().append_simulations(theta, x)
    # a constant, far too high rate: the validation loss stops improving quickly
    inf.train(max_epochs=200, learning_rate=0.05, lr_schedule="constant", patience=30, min_steps_per_epoch=10,
              ema_decay=0)
    s = inf.summary
    hist = s["history"]
    best_row = int(np.argmin(hist[:, 2]))
    assert s["stop_reason"] == "early stopping"
    assert s["epochs"] < 200 and 30 <= s["steps"] - hist[best_row, 0] < 30 + s["steps_per_epoch"]
    assert s["best_val_loss"] == pytest.approx(hist[:, 2].min()) and s["best_epoch"] == best_row + 1


@pytest.mark.parametrize("bad, phrase", [(dict(learning_rate=float("nan")), "learning_rate"),
                                         (dict(learning_rate=-1.0), "learning_rate"),
                                         (dict(max_steps=0), "max_steps"), (dict(max_steps=2.5), "max_steps"),
                                         (dict(warmup_steps=-3), "warmup_steps"), (dict(patience=0), "patience"),
                                         (dict(patience="soon"), "patience"), (dict(min_improvement=2.0), "min_improvement"),
                                         (dict(ema_decay=1.5), "ema_decay"), (dict(ema_decay=True), "ema_decay"),
                                         (dict(lr_schedule="exp"), "lr_schedule"),
                                         (dict(max_seconds=-1.0), "max_seconds"),
                                         (dict(final_learning_rate=1.0), "final_learning_rate"),
                                         (dict(batch_size=0), "batch_size"),
                                         (dict(init_params=[1.0, 2.0]), "init_params")])
def test_train_rejects_bad_options(bad, phrase):
    theta, x = _data(50)
    inf = _npse().append_simulations(theta, x)
    with pytest.raises(ValueError, match=phrase):
        inf.train(**dict(dict(max_steps=5), **bad))


def test_wsd_is_stable_then_cools_down_over_a_fifth_of_the_run():
    s = LRSchedule(1.0, total_steps=1000, warmup_steps=10, kind="wsd", cooldown_fraction=0.2)
    assert s.lr(5) < 1.0 and s.lr(10) == 1.0 and s.lr(799) == 1.0 and not s.cooling
    assert s.lr(800) == pytest.approx(1.0) and s.cooling  # the budget starts the cool-down at 80%
    assert s.cooldown[:3] == (800, 0.0, 200)
    assert s.lr(900) == pytest.approx(0.5) and s.lr(1000) == pytest.approx(0.0)
    assert not s.finished(999) and s.finished(1000)


def test_wsd_cooldown_begun_by_a_plateau_lasts_a_quarter_of_the_steps_so_far():
    s = LRSchedule(2.0, total_steps=10_000, kind="wsd")
    s.lr(3000)
    s.begin_cooldown(3000)
    assert s.cooldown[:3] == (3000, 0.0, 750)  # 0.2 / 0.8 of 3,000: the cool-down is 20% of the run
    assert s.lr(3375) == pytest.approx(1.0) and s.finished(3750) and not s.finished(3749)
    s.begin_cooldown(3500)  # a second call changes nothing
    assert s.cooldown[:3] == (3000, 0.0, 750)
    late = LRSchedule(2.0, total_steps=1000, kind="wsd")
    late.begin_cooldown(790)
    assert late.cooldown[2] == 198  # capped: the budget ends at 1,000 steps
    timed = LRSchedule(1.0, total_steps=10 ** 9, kind="wsd", max_seconds=100.0)
    assert timed.lr(10, elapsed=79.0) == 1.0 and timed.lr(11, elapsed=80.0) == pytest.approx(1.0)
    assert timed.lr(12, elapsed=90.0) == pytest.approx(0.5) and timed.finished(13, elapsed=100.0)


def test_plateau_waits_for_patience_steps_without_a_real_improvement():
    from snpse_np.schedule import Plateau
    p = Plateau(patience=300, min_improvement=0.01)
    assert not p.update(100, 1.0)
    assert not p.update(200, 0.995)  # 0.5% better: not enough to reset the clock
    assert not p.update(399, 0.994)
    assert p.update(400, 0.993) and p.triggered_at == 400
    q = Plateau(patience=300)
    for k, v in ((100, 1.0), (200, 0.9), (400, 0.8), (600, 0.85)):
        assert not q.update(k, v)
    assert q.update(700, 0.81)
    auto = Plateau("auto")
    assert auto.window(1000) == 1000 and auto.window(8000) == 2000  # 25% of the run, at least 1,000
    never = Plateau(float("inf"))
    assert not never.update(10 ** 9, 1.0)
    with pytest.raises(ValueError, match="patience"):
        Plateau(0)
    with pytest.raises(ValueError, match="min_improvement"):
        Plateau(10, min_improvement=-0.1)


def test_train_with_wsd_cools_down_at_a_plateau_and_keeps_cooldown_weights():
    theta, x = _data(200)
    inf = _npse().append_simulations(theta, x)
    # a tiny data set and a high rate: the validation loss stops improving early
    inf.train(max_steps=5000, lr_schedule="wsd", learning_rate=5e-3, patience=200, min_steps_per_epoch=20,
              batch_size=32)
    s = inf.summary
    assert s["cooldown_step"] is not None and s["cooldown_step"] < 0.8 * 5000
    assert "plateau" in s["stop_reason"]
    assert s["steps"] == s["cooldown_step"] + int(np.ceil(0.25 * s["cooldown_step"]))
    hist = s["history"]
    cool = hist[hist[:, 0] > s["cooldown_step"]]
    assert s["best_val_loss"] == pytest.approx(cool[:, 2].min())  # taken from the cool-down only
    # the last step ran at peak / (cool-down steps): the rate annealed to zero
    assert cool[-1, 3] == pytest.approx(5e-3 / (s["steps"] - s["cooldown_step"]))


def test_cosine_cooldown_anneals_from_the_current_rate():
    s = LRSchedule(1.0, total_steps=1000, warmup_steps=0, kind="cosine")
    lr_at = s.lr(400)
    s.begin_cooldown(400)
    assert s.cooling and s.cooldown[:3] == (400, 0.0, 100)  # a quarter of the 400 steps run
    assert s.lr(400) == pytest.approx(lr_at)  # continuous where the cool-down begins
    assert s.lr(450) == pytest.approx(lr_at / 2)  # then linear to final = 0
    assert not s.finished(499) and s.finished(500) and s.lr(500) == pytest.approx(0.0)
    const = LRSchedule(1.0, total_steps=1000, kind="constant")
    const.begin_cooldown(400)  # a constant rate has no cool-down: the trainer stops instead
    assert not const.cooling and const.lr(450) == 1.0


def test_a_plateau_in_a_cosine_run_starts_the_cooldown():
    theta, x = _data(80)
    inf = _npse().append_simulations(theta, x)
    # a far too high rate: the validation loss stops improving quickly, long before the budget
    inf.train(max_steps=20_000, learning_rate=0.05, patience=30, min_steps_per_epoch=10, ema_decay=0)
    s = inf.summary
    hist = s["history"]
    k0 = s["cooldown_step"]
    assert k0 is not None and s["stop_reason"] == f"cooled down (cool-down from step {k0}: plateau)"
    assert s["steps"] == k0 + int(np.ceil(0.25 * k0)) < 20_000
    # ended annealed: the last step ran at 1/ks of the rate where the cool-down began (<= peak)
    assert hist[-1, 3] <= 0.05 / (s["steps"] - k0) * (1 + 1e-9)
    cool = hist[hist[:, 0] > k0]
    assert np.all(np.diff(cool[:, 3]) <= 0)  # the rate only falls in the cool-down
    # the kept weights are the best of the cool-down
    assert s["best_val_loss"] == pytest.approx(hist[hist[:, 0] >= k0, 2].min())
