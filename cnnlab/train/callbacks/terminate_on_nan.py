"""TerminateOnNaN: stop with a clear message as soon as the loss is NaN or infinite."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from cnnlab.errors import CnnlabError
from cnnlab.train.callbacks.base import Callback

if TYPE_CHECKING:
    from cnnlab.train.loop import Trainer


class TrainingDiverged(CnnlabError):
    """The loss became NaN or infinite."""


class TerminateOnNaN(Callback):
    """Stop with a clear message as soon as the loss is NaN or infinite.

    It raises :class:`TrainingDiverged` before the epoch ends, so no checkpoint is ever
    written with broken weights: ``weights/best``, ``weights/last`` and the resumable
    checkpoint keep the last good epoch. ``check_every`` batches it looks at the running
    loss (reading it waits for the GPU, so it is not done every batch there).
    """

    def __init__(self, check_every: int | None = None):
        self.check_every = check_every

    def on_train_begin(self, trainer: "Trainer") -> None:
        if self.check_every is None:
            self.check_every = 1 if trainer.device.type == "cpu" else 50

    def _fail(self, trainer: "Trainer", what: str) -> None:
        lr = trainer.optimizer.param_groups[0]["lr"]
        last = trainer.history[-1]["epoch"] if trainer.history else 0
        kept = f"the weights of epoch {last} are kept" if last else "no weights were saved"
        raise TrainingDiverged(
            f"training diverged: {what} became NaN or infinite at epoch {trainer.epoch}, batch "
            f"{trainer.batch} (learning rate {lr:.3g}); {kept}; try a lower --lr")

    def on_batch_end(self, trainer: "Trainer") -> None:
        if trainer.step % self.check_every == 0:  # steps, not batches: airbench's epochs have 48
            if trainer.any_rank(not math.isfinite(trainer.last_loss())):
                self._fail(trainer, "the training loss")

    def on_epoch_end(self, trainer: "Trainer") -> None:
        for key in ("loss", "val_loss"):
            if key in trainer.logs and not math.isfinite(trainer.logs[key]):
                self._fail(trainer, key)
