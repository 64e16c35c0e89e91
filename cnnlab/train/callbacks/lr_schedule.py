"""LRSchedule: the learning rate of every batch, from a schedule of :mod:`cnnlab.train.schedules`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cnnlab.train.callbacks.base import Callback
from cnnlab.train.schedules import schedule_factor

if TYPE_CHECKING:
    from cnnlab.train.loop import Trainer


class LRSchedule(Callback):
    """Sets every parameter group's learning rate before each batch: peak x factor.

    The peak is the optimiser's learning rate when training starts (kept in the group as
    ``initial_lr``, which the optimiser's state saves). Progress is ``step / total_steps``
    (epochs x steps per epoch, or the plan of :class:`~cnnlab.train.callbacks.TimeLimit`). The state is the
    trainer's step, so resuming needs nothing extra.
    """

    def __init__(self, kind: str = "cosine", warmup: float = 0.05, step_size: int = 10, gamma: float = 0.1):
        schedule_factor(kind, 0.0)  # check the name now (see cnnlab.train.schedules)
        self.kind, self.warmup, self.step_size, self.gamma = kind, warmup, step_size, gamma

    def on_train_begin(self, trainer: "Trainer") -> None:
        for group in trainer.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def factor(self, trainer: "Trainer") -> float:
        total = max(trainer.total_steps, 1)
        return schedule_factor(self.kind, trainer.step / total, self.warmup, trainer.epoch,
                               self.step_size, self.gamma)

    def on_batch_begin(self, trainer: "Trainer") -> None:
        f = self.factor(trainer)
        for group in trainer.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * f
