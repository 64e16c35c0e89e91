"""TensorBoard: the epoch metrics as TensorBoard scalars (needs the tensorboard package)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cnnlab.errors import CnnlabError
from cnnlab.train.callbacks.base import Callback

if TYPE_CHECKING:
    from cnnlab.train.loop import Trainer


class TensorBoard(Callback):
    """Log the epoch metrics (and the learning rate) for TensorBoard under ``log_dir``.

    Needs the ``tensorboard`` package: ``pip install "cnnlab[tensorboard]"``; then
    ``tensorboard --logdir runs``.
    """

    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter  # the optional [tensorboard] extra
        except ImportError:
            raise CnnlabError('TensorBoard logging needs the tensorboard package: '
                              'pip install "cnnlab[tensorboard]"') from None
        self.log_dir = Path(log_dir)
        self.writer_cls = SummaryWriter
        self.writer = None

    def on_train_begin(self, trainer: "Trainer") -> None:
        if trainer.is_main:
            self.writer = self.writer_cls(log_dir=str(self.log_dir), purge_step=trainer.epoch + 1)

    def on_epoch_end(self, trainer: "Trainer") -> None:
        if self.writer is None:
            return
        for key, value in trainer.logs.items():
            if key != "epoch" and isinstance(value, (int, float)):
                group = "loss" if key.endswith("loss") else "accuracy" if key.endswith("accuracy") else "train"
                self.writer.add_scalar(f"{group}/{key}", value, trainer.epoch)
        self.writer.flush()

    def on_train_end(self, trainer: "Trainer") -> None:
        if self.writer is not None:
            self.writer.close()
