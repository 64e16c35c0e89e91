"""The learning-rate schedules ``--scheduler`` can name: one registry entry each.

Most schedules are a *factor*: the learning rate as a fraction of the peak, given the
progress through training (0 -> 1), the warm-up fraction, the epoch, ``step_size`` and
``gamma``. The :class:`~cnnlab.train.callbacks.LRSchedule` callback applies it before every
batch. To add one::

    def _linear(p, warmup, epoch, step_size, gamma):
        return p / warmup if p < warmup else 1 - (p - warmup) / (1 - warmup)

    SCHEDULES.add("linear", "linear warm-up, then linear decay to 0", lr_schedule, warmup=0.1,
                  factor=_linear)

``warmup`` is the default warm-up fraction when ``--warmup`` is not given. A schedule that is
not a factor of progress (``plateau`` watches a metric) registers its own builder:
``build(cfg, hparams, has_val) -> list of callbacks``.
"""

from __future__ import annotations

import math

from cnnlab.errors import CnnlabError
from cnnlab.registry import Registry

SCHEDULES: Registry = Registry("scheduler")


def _cosine_between(start: float, end: float, t: float) -> float:
    """From start to end along half a cosine as t goes 0 -> 1."""
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))


def _constant(p, warmup, epoch, step_size, gamma):
    return 1.0


def _cosine(p, warmup, epoch, step_size, gamma):
    """Linear warm-up, then half a cosine down to 0 (Loshchilov & Hutter's SGDR, no restarts)."""
    if p < warmup:
        return p / warmup
    return _cosine_between(1.0, 0.0, (p - warmup) / (1.0 - warmup))


def _onecycle(p, warmup, epoch, step_size, gamma):
    """Smith's one-cycle policy, as torch.optim.lr_scheduler.OneCycleLR: 1/25 -> 1 -> 1/25/1e4."""
    low, final = 1.0 / 25.0, 1.0 / 25.0 / 1e4
    if p < warmup:
        return _cosine_between(low, 1.0, p / warmup)
    return _cosine_between(1.0, final, (p - warmup) / (1.0 - warmup))


def _triangle(p, warmup, epoch, step_size, gamma):
    """Linear from 0.2 up to 1 over the warm-up, then linear down to 0.07 (airbench's, Jordan 2024)."""
    if p < warmup:
        return 0.2 + 0.8 * p / warmup
    return 1.0 - 0.93 * (p - warmup) / (1.0 - warmup)


def _step(p, warmup, epoch, step_size, gamma):
    return gamma ** ((epoch - 1) // max(step_size, 1))


def lr_schedule(cfg, hparams, has_val):
    """The callback of every factor schedule: LRSchedule(name)."""
    from cnnlab.train.callbacks import LRSchedule

    return [LRSchedule(cfg.scheduler, hparams["warmup"], hparams["step_size"], cfg.gamma)]


def _plateau(cfg, hparams, has_val):
    from cnnlab.train.callbacks import ReduceLROnPlateau

    return [ReduceLROnPlateau("val_loss" if has_val else "loss", factor=cfg.gamma,
                              patience=max(2, cfg.patience // 3))]


SCHEDULES.add("none", "a constant learning rate", lambda cfg, hp, has_val: [], factor=_constant)
SCHEDULES.add("cosine", "linear warm-up, then a cosine down to 0", lr_schedule, warmup=0.05, factor=_cosine)
SCHEDULES.add("onecycle", "one-cycle: up from lr/25 along a cosine, then down to lr/25e4", lr_schedule,
              warmup=0.25, factor=_onecycle)
SCHEDULES.add("step", "multiplied by --gamma every --step-size epochs", lr_schedule, factor=_step)
SCHEDULES.add("plateau", "multiplied by --gamma when val_loss stops improving (Keras' ReduceLROnPlateau)",
              _plateau)
SCHEDULES.add("triangle", "linear from lr/5 up to lr, then linear down to 0.07 lr (airbench)", lr_schedule,
              warmup=0.23, factor=_triangle)


def schedule_factor(kind: str, progress: float, warmup: float = 0.0, epoch: int = 1,
                    step_size: int = 10, gamma: float = 0.1) -> float:
    """The learning rate as a fraction of the peak, at ``progress`` in [0, 1] of training."""
    factor = SCHEDULES[kind].defaults.get("factor")
    if factor is None:
        raise CnnlabError(f"scheduler {kind!r} is not a function of progress (it has its own callback)")
    return factor(min(max(progress, 0.0), 1.0), warmup, epoch, step_size, gamma)
