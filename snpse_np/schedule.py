"""How training spends its steps: the learning-rate schedule, the weight EMA, the default budget.

A constant learning rate wastes a run: the loss it reaches is set by the noise of the last
steps, and stopping it anywhere leaves it there. Annealing the rate to ~0 at the end reaches a
lower loss in the same steps (measured on two_moons, 4,000 steps: C2ST 0.74 constant, 0.59
cosine). ``LRSchedule`` offers, after a linear warm-up over ``warmup_steps``:

    ``"cosine"``    lr(p) = final + (peak - final) (1 + cos(pi p)) / 2,
    ``"linear"``    lr(p) = final + (peak - final) (1 - p),
    ``"constant"``  lr = peak,
    ``"wsd"``       warmup-stable-decay: lr = peak until the cool-down begins, then linear to
                    ``final`` over the cool-down (Hu et al. 2024, MiniCPM; Haegele et al. 2024).

where p in [0, 1] is the progress through the budget: p = max(k / total_steps, elapsed /
max_seconds). With a wall-clock budget the rate anneals to the deadline itself, so a run cut by
``max_seconds`` ends annealed instead of wherever a constant-rate run happened to be.

The fixed-budget shapes need the right budget in advance, and it depends on the task: at 10,000
simulations slcp's C2ST is best near 8,000-10,000 steps and worse at 16,000 (the validation loss
rises: over-fitting), while sir still improves at 20,000 (NOTES.md). ``"wsd"`` lets the data
decide: the stable phase runs at the peak rate until the validation loss of the weight EMA stops
improving (the trainer calls ``begin_cooldown``) or until (1 - f) of the step / time budget is
spent; the cool-down then lasts f / (1 - f) of the steps run so far (f = ``cooldown_fraction``,
so it is f of the whole run), capped by what is left of the budget.

The weight EMA e <- d e + (1 - d) w smooths the noise of the steps; it is what the stable
phase's plateau is judged on. ``ema_decay(k, decay)`` warms up as min(decay, (1 + k) / (10 + k))
(the usual form: a fixed 0.999 from step 1 holds the average near the initial weights for ~1,000
steps), and ``auto_ema_decay(total)`` ties d to the budget: an averaging window of ``fraction``
of the run.

``default_steps(n_train, batch)`` is the step budget used when none is given (see its docstring
for what it was measured on).
"""
import math

LR_SCHEDULES = ("wsd", "cosine", "linear", "constant")


class LRSchedule:
    """The learning rate at step k (counting from 0) and wall time ``elapsed`` (s).

    peak: the rate after warm-up; total_steps: the step budget (> 0); warmup_steps: linear
    ramp from ~0 to peak; final: the rate at the end of the budget; kind: one of
    ``LR_SCHEDULES``; max_seconds: an optional wall-clock budget (None: steps only);
    cooldown_fraction: the share of a ``"wsd"`` run spent cooling down.
    """

    def __init__(self, peak, total_steps, warmup_steps=0, final=0.0, kind="cosine", max_seconds=None,
                 cooldown_fraction=0.2):
        if kind not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {kind!r}")
        if not (math.isfinite(peak) and peak > 0):
            raise ValueError(f"learning_rate must be a positive finite number, got {peak!r}")
        if not (math.isfinite(final) and 0 <= final <= peak):
            raise ValueError(f"final learning rate must lie in [0, learning_rate], got {final!r}")
        if int(total_steps) != total_steps or total_steps < 1:
            raise ValueError(f"the step budget must be a positive int, got {total_steps!r}")
        if int(warmup_steps) != warmup_steps or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative int, got {warmup_steps!r}")
        if max_seconds is not None and not (math.isfinite(max_seconds) and max_seconds > 0):
            raise ValueError(f"max_seconds must be a positive number or None, got {max_seconds!r}")
        if not 0.0 < cooldown_fraction < 1.0:
            raise ValueError(f"cooldown_fraction must lie in (0, 1), got {cooldown_fraction!r}")
        self.peak, self.final, self.kind = float(peak), float(final), kind
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)
        self.max_seconds = None if max_seconds is None else float(max_seconds)
        self.cooldown_fraction = float(cooldown_fraction)
        self.cooldown = None  # wsd: (start step, start time, steps, seconds) once the cool-down began

    def progress(self, step, elapsed=0.0):
        """p in [0, 1]: how much of the budget (steps or seconds, whichever is nearer) is spent.
        Once a cool-down began: how much of the cool-down is spent."""
        if self.cooldown is not None:
            k0, e0, ks, es, _ = self.cooldown
            p = (step - k0) / ks
            if es is not None:
                p = max(p, (elapsed - e0) / es)
            return min(max(p, 0.0), 1.0)
        return self._budget_progress(step, elapsed)

    def _budget_progress(self, step, elapsed):
        """The share of the whole budget spent (steps or seconds, whichever is nearer), in [0, 1]."""
        p = step / self.total_steps
        if self.max_seconds is not None:
            p = max(p, elapsed / self.max_seconds)
        return min(p, 1.0)

    def begin_cooldown(self, step, elapsed=0.0):
        """Anneal linearly from the rate of this moment to ``final`` over f / (1 - f) of the steps
        and seconds run so far, capped by what is left of the budgets (at least one step). No-op
        if a cool-down began or the schedule is "constant". The trainer calls it when the
        validation loss stops improving: a run ends annealed, not wherever its rate happened to be
        (measured: stopping a cosine run at a plateau lost accuracy, NOTES.md)."""
        if self.kind == "constant" or self.cooldown is not None:
            return
        lr0 = self._shape_lr(step, elapsed)
        r = self.cooldown_fraction / (1.0 - self.cooldown_fraction)
        ks = max(1, min(int(math.ceil(r * step)), self.total_steps - step))
        es = None
        if self.max_seconds is not None:
            es = max(min(r * elapsed, self.max_seconds - elapsed), 1e-9)
        self.cooldown = (int(step), float(elapsed), ks, es, lr0)

    @property
    def cooling(self):
        return self.cooldown is not None

    def finished(self, step, elapsed=0.0):
        if self.kind == "wsd":
            self._budget_check(step, elapsed)
            return self.cooldown is not None and self.progress(step, elapsed) >= 1.0
        return self.progress(step, elapsed) >= 1.0  # the cool-down's progress once one began

    def _budget_check(self, step, elapsed):
        """wsd: begin the cool-down once (1 - f) of the step or time budget is spent."""
        if self.cooldown is None:
            f = 1.0 - self.cooldown_fraction
            if step >= f * self.total_steps or (self.max_seconds is not None and elapsed >= f * self.max_seconds):
                self.begin_cooldown(step, elapsed)

    def lr(self, step, elapsed=0.0):
        if self.kind == "wsd":
            self._budget_check(step, elapsed)
        if self.cooldown is not None:
            return self.final + (self.cooldown[4] - self.final) * (1.0 - self.progress(step, elapsed))
        return self._shape_lr(step, elapsed)

    def _shape_lr(self, step, elapsed):
        """The rate of the schedule's own shape (warm-up, then the kind's curve), no cool-down."""
        if step < self.warmup_steps:
            return self.peak * (step + 1) / (self.warmup_steps + 1)
        if self.kind in ("constant", "wsd"):
            return self.peak
        p = self._budget_progress(step, elapsed)
        shape = 0.5 * (1.0 + math.cos(math.pi * p)) if self.kind == "cosine" else 1.0 - p
        return self.final + (self.peak - self.final) * shape


class Plateau:
    """Has the validation loss stopped paying? ``update(step, loss)`` after each evaluation
    returns True once ``patience`` steps have passed since the loss last improved on its best by
    more than ``min_improvement`` (relative: loss < best - min_improvement |best|).

    patience: an int (steps), "auto" (``AUTO_PATIENCE`` of the steps run so far, at least
    ``AUTO_PATIENCE_MIN``: the longer a run, the longer a plateau must last to count), or inf /
    None (never). ``triggered_at``: the step of the first True.
    """

    AUTO_PATIENCE, AUTO_PATIENCE_MIN = 0.25, 1000

    def __init__(self, patience="auto", min_improvement=0.0):
        if patience is not None and patience != "auto" and patience != math.inf and (
                isinstance(patience, bool) or int(patience) != patience or patience < 1):
            raise ValueError(f"patience must be a positive int (steps), 'auto' or None, got {patience!r}")
        if not (math.isfinite(min_improvement) and 0.0 <= min_improvement < 1.0):
            raise ValueError(f"min_improvement must lie in [0, 1), got {min_improvement!r}")
        self.patience, self.min_improvement = patience, float(min_improvement)
        self.best, self.best_step, self.triggered_at = math.inf, 0, None

    def window(self, step):
        if self.patience == "auto":
            return max(self.AUTO_PATIENCE_MIN, self.AUTO_PATIENCE * step)
        return self.patience

    def update(self, step, loss):
        if not math.isfinite(self.best) or loss < self.best - self.min_improvement * abs(self.best):
            self.best, self.best_step = loss, step
        if self.patience is None or step - self.best_step < self.window(step):
            return False
        if self.triggered_at is None:
            self.triggered_at = step
        return True


def ema_decay(step, decay):
    """The EMA decay at step k (from 0), warmed up: min(decay, (1 + k) / (10 + k))."""
    return min(decay, (1.0 + step) / (10.0 + step))


def auto_ema_decay(total_steps, fraction=0.05, lo=0.9, hi=0.9999):
    """A decay whose averaging window 1 / (1 - d) is ``fraction`` of a run of ``total_steps``."""
    window = max(fraction * total_steps, 1.0)
    return min(max(1.0 - 1.0 / window, lo), hi)


def default_steps(n_train, batch=128, scale=165.0, lo=2_000, hi=60_000):
    """The step budget when none is given: ``scale`` sqrt(n_train) steps at batch 128 (fewer in
    proportion for larger batches), clipped to [lo, hi].

    More simulations need more steps, but fewer passes over them: 8,500 training rows get
    ~15,000 steps (180 passes), 850 get ~4,800 (570 passes with fresh noise), 85,000 get ~48,000
    (70 passes). Measured at 10,000 simulations (obs 1-3, cosine, peak 2e-3; NOTES.md): two_moons
    C2ST 0.545 / 0.523 / 0.518 at 8,000 / 10,000 / 15,200 steps, sir 0.662 / 0.630 / 0.605,
    slcp 0.730 / 0.756 / 0.776 (it over-fits past ~10,000: no single budget is best for all).
    """
    steps = scale * math.sqrt(max(n_train, 1)) * 128.0 / batch
    return int(min(max(steps, lo), hi))


def auto_learning_rate(n_train, total_steps=None, batch=128, peak=2e-3, n_ref=8_500, floor=0.25, short_cap=3.0):
    """The peak rate when none is given.

    Data: ``peak`` from ``n_ref`` training rows up, scaled by sqrt(n_train / n_ref) below (at
    most down to ``floor`` x peak): with few simulations a high rate over-fits sooner and
    roughens the fit, but too low a rate leaves the score rough where the Langevin corrector
    needs it. Measured: 8,500 rows (sbibm tasks at 10,000): 2e-3 beats 1e-3 on two_moons and sir
    and ties on slcp. 2,125 rows (tests/test_npse.py's 3-D linear Gaussian, same seeds; C2ST of
    ode / sde / pc samples, log-density correlation): VE 5e-4 (the earlier linear rule) 0.536 /
    0.509 / **0.619**, 0.985; 1e-3 (this rule) 0.543 / 0.515 / 0.536, 0.981; VP 5e-4 0.521 /
    0.520 / **0.606**, 0.990; 1e-3 0.529 / 0.501 / 0.557, 0.989.

    Budget: a run of ``total_steps`` shorter than ``default_steps(n_train, batch)`` gets
    sqrt(default / total) times that rate (at most ``short_cap`` times): a short run has fewer
    steps to average out a high rate's noise but needs the distance it covers. Measured at
    10,000 simulations, 4,000 steps, obs 1-3: two_moons C2ST 0.712 / 0.596 / 0.573 at 2e-3 /
    4e-3 / 6e-3, slcp 0.800 / 0.792 at 2e-3 / 4e-3 (this rule: 3.9e-3).
    """
    rate = peak * min(1.0, max(floor, math.sqrt(max(n_train, 0) / n_ref)))
    if total_steps is not None:
        rate *= min(short_cap, max(1.0, math.sqrt(default_steps(n_train, batch) / max(total_steps, 1))))
    return rate
