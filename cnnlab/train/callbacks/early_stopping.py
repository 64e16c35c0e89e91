"""EarlyStopping: stop when the monitored metric stops improving."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from cnnlab.train.callbacks.monitor import MonitorCallback

if TYPE_CHECKING:
    from cnnlab.train.loop import Trainer


class EarlyStopping(MonitorCallback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best_weights`` the model gets the weights of its best epoch back at the
    end of training, whether training stopped early or ran all its epochs (Keras 3 does
    the same).
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 mode: str = "auto", restore_best_weights: bool = False):
        super().__init__(monitor, mode, min_delta)
        self.patience = patience
        self.restore_best_weights = restore_best_weights
        self.stopped_epoch = 0
        self.best_weights: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, trainer: "Trainer") -> None:
        if self.update(self.current(trainer), trainer.epoch):
            if self.restore_best_weights:
                self.best_weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
            return
        if self.wait >= self.patience:
            self.stopped_epoch = trainer.epoch
            trainer.stop_training = True
            trainer.stop_reason = (f"early stopping: {self.monitor} has not improved for {self.wait} "
                                   f"epochs (best {self.best.value:.4g} at epoch {self.best.epoch})")

    def on_train_end(self, trainer: "Trainer") -> None:
        if self.restore_best_weights and self.best_weights is not None:
            trainer.model.load_state_dict(self.best_weights)
            trainer.restored_epoch = self.best.epoch

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "stopped_epoch": self.stopped_epoch, "best_weights": self.best_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.stopped_epoch, self.best_weights = state["stopped_epoch"], state["best_weights"]
