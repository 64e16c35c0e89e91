"""ModelCheckpoint: the best and the last weights, each in a safetensors file of its own."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.io.weights import weights_file, write_safetensors
from cnnlab.train.callbacks.monitor import MonitorCallback

if TYPE_CHECKING:
    from cnnlab.train.loop import Trainer


class ModelCheckpoint(MonitorCallback):
    """Write ``best.safetensors`` (when ``monitor`` improves) and ``last.safetensors``.

    Both files hold the weights and ``meta`` (spec, classes, input size, normalisation...)
    plus the epoch and its metrics, so a model is rebuilt from either file alone; both are
    written atomically.
    """

    def __init__(self, dirpath: str | Path, monitor: str = "val_loss", mode: str = "auto",
                 save_best: bool = True, save_last: bool = True, meta: dict[str, Any] | None = None):
        super().__init__(monitor, mode)
        self.dir = Path(dirpath)
        self.save_best, self.save_last = save_best, save_last
        self.meta = dict(meta or {})

    def _save(self, trainer: "Trainer", name: str) -> None:
        meta = dict(self.meta, epoch=trainer.epoch,
                    metric={k: v for k, v in trainer.logs.items() if k != "epoch"},
                    monitor=self.monitor)
        # copied now, written on the trainer's saver thread while the next epoch trains
        trainer.saver.submit(write_safetensors, self.dir / f"{name}.safetensors", *weights_file(trainer.model, meta))

    def on_epoch_end(self, trainer: "Trainer") -> None:
        if not trainer.is_main:  # only the main process writes (torchrun)
            return
        if self.save_best and self.update(self.current(trainer), trainer.epoch):
            self._save(trainer, "best")
        if self.save_last:
            self._save(trainer, "last")
