"""The learning-rate schedules ``--scheduler`` can name: one registry entry each.

A schedule is a *factor*: the learning rate as a fraction of the peak, given the progress
through training (0 -> 1), the warm-up fraction, the epoch, ``step_size`` and ``gamma``. The
:class:`~cnnlab.train.callbacks.LRSchedule` callback applies it before every batch. To add
one, register its factor::

    @SCHEDULES.register("linear", "linear warm-up, then linear decay to 0", warmup=0.1)
    def _linear(p, warmup, epoch, step_size, gamma):
        return p / warmup if p < warmup else 1 - (p - warmup) / (1 - warmup)

``warmup`` is the default warm-up fraction when ``--warmup`` is not given. ``plateau`` is
not a function of progress: it watches a metric (the
:class:`~cnnlab.train.callbacks.ReduceLROnPlateau` callback), so its factor refuses to be
asked. Which callback carries out ``--scheduler`` is decided where the run's callbacks are
made (:func:`cnnlab.train.api.make_callbacks`).

This module imports neither torch nor the callbacks (they import it): ``cnnlab --help``
reads it.
"""

from __future__ import annotations

import math

from cnnlab.errors import CnnlabError
from cnnlab.registry import Registry

SCHEDULES: Registry = Registry("scheduler")  # name -> its factor(progress, warmup, epoch, step_size, gamma)


def _cosine_between(start: float, end: float, t: float) -> float:
    """From start to end along half a cosine as t goes 0 -> 1."""
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))


@SCHEDULES.register("none", "a constant learning rate")
def _constant(p, warmup, epoch, step_size, gamma):
    return 1.0


@SCHEDULES.register("cosine", "linear warm-up, then a cosine down to 0", warmup=0.05)
def _cosine(p, warmup, epoch, step_size, gamma):
    """Linear warm-up, then half a cosine down to 0 (Loshchilov & Hutter's SGDR, no restarts)."""
    if p < warmup:
        return p / warmup
    return _cosine_between(1.0, 0.0, (p - warmup) / (1.0 - warmup))


@SCHEDULES.register("onecycle", "one-cycle: up from lr/25 along a cosine, then down to lr/25e4", warmup=0.25)
def _onecycle(p, warmup, epoch, step_size, gamma):
    """Smith's one-cycle policy, as torch.optim.lr_scheduler.OneCycleLR: 1/25 -> 1 -> 1/25/1e4."""
    low, final = 1.0 / 25.0, 1.0 / 25.0 / 1e4
    if p < warmup:
        return _cosine_between(low, 1.0, p / warmup)
    return _cosine_between(1.0, final, (p - warmup) / (1.0 - warmup))


@SCHEDULES.register("step", "multiplied by --gamma every --step-size epochs")
def _step(p, warmup, epoch, step_size, gamma):
    return gamma ** ((epoch - 1) // max(step_size, 1))


@SCHEDULES.register("plateau", "multiplied by --gamma when val_loss stops improving (Keras' ReduceLROnPlateau)")
def _plateau(p, warmup, epoch, step_size, gamma):
    raise CnnlabError("scheduler 'plateau' is not a function of progress (it has its own callback, "
                      "ReduceLROnPlateau)")


@SCHEDULES.register("triangle", "linear from lr/5 up to lr, then linear down to 0.07 lr (airbench)", warmup=0.23)
def _triangle(p, warmup, epoch, step_size, gamma):
    """Linear from 0.2 up to 1 over the warm-up, then linear down to 0.07 (airbench's, Jordan 2024)."""
    if p < warmup:
        return 0.2 + 0.8 * p / warmup
    return 1.0 - 0.93 * (p - warmup) / (1.0 - warmup)


def schedule_factor(kind: str, progress: float, warmup: float = 0.0, epoch: int = 1,
                    step_size: int = 10, gamma: float = 0.1) -> float:
    """The learning rate as a fraction of the peak, at ``progress`` in [0, 1] of training."""
    return SCHEDULES[kind].build(min(max(progress, 0.0), 1.0), warmup, epoch, step_size, gamma)
