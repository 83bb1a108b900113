"""Adam on one flat parameter buffer (Kingma & Ba 2015), plus an optional weight EMA.

All parameters live in one contiguous vector (see ``nn.ScoreNetwork``), so a step is one fused
kernel over the buffer instead of one small update per tensor. ``lr`` may change between steps
(the trainer sets it from ``schedule.LRSchedule``). The EMA's decay warms up
(``schedule.ema_decay``): a fixed 0.999 from step 1 would hold the average near the random
initial weights for the first ~1,000 steps.
"""
from .schedule import ema_decay


class Adam:
    def __init__(self, backend, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, ema_decay=None):
        if lr <= 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1), got {ema_decay}")
        xp = backend.xp
        self.backend, self.params = backend, params
        self.lr, self.beta1, self.beta2, self.eps = float(lr), float(beta1), float(beta2), float(eps)
        self.m = xp.zeros_like(params)
        self.v = xp.zeros_like(params)
        self.step_count = 0
        self.ema_decay = ema_decay
        self.ema = params.copy() if ema_decay is not None else None

    def step(self, grads):
        self.step_count += 1
        ops = self.backend.ops
        ops.adam_step(self.params, grads, self.m, self.v, self.lr, self.beta1, self.beta2, self.eps,
                      self.step_count)
        if self.ema is not None:
            ops.ema_update(self.ema, self.params, ema_decay(self.step_count - 1, self.ema_decay))

    @property
    def eval_params(self):
        """The weights to validate and keep: the EMA when it is on, else the live weights."""
        return self.ema if self.ema is not None else self.params
