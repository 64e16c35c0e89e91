"""ReduceLROnPlateau: a lower learning rate when the monitored metric stops improving."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnnlab.errors import CnnlabError
from cnnlab.train.callbacks.monitor import MonitorCallback

if TYPE_CHECKING:
    from cnnlab.train.loop import Trainer


class ReduceLROnPlateau(MonitorCallback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stops improving (Keras' callback).

    When ``monitor`` has not improved by ``min_delta`` for *more* than ``patience`` epochs,
    every parameter group's learning rate is multiplied by ``factor`` (not below ``min_lr``);
    the next ``cooldown`` epochs are not counted. "More than patience" is the rule of
    ``torch.optim.lr_scheduler.ReduceLROnPlateau``, which computed this callback before:
    Keras reduces one epoch sooner.
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0):
        if not 0 < factor < 1:
            raise CnnlabError(f"ReduceLROnPlateau's factor must be between 0 and 1, got {factor}")
        super().__init__(monitor, mode, min_delta)
        self.factor, self.patience, self.cooldown, self.min_lr = factor, patience, cooldown, min_lr
        self.cooldown_counter = 0

    def on_epoch_end(self, trainer: "Trainer") -> None:
        self.update(self.current(trainer), trainer.epoch)
        if self.cooldown_counter > 0:  # epochs without improvement in the cooldown do not count
            self.cooldown_counter -= 1
            self.wait = 0
        if self.wait > self.patience:
            for group in trainer.optimizer.param_groups:
                lr = max(group["lr"] * self.factor, self.min_lr)
                if group["lr"] - lr > 1e-8:  # at min_lr already: left as it is
                    group["lr"] = lr
            self.cooldown_counter, self.wait = self.cooldown, 0

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "cooldown_counter": self.cooldown_counter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "num_bad_epochs" in state:  # saved when torch's scheduler computed it (its names)
            state = {"best": state["best"], "best_epoch": 0, "wait": state["num_bad_epochs"],
                     "cooldown_counter": state["cooldown_counter"]}
        if state:  # empty: saved before training began
            super().load_state_dict(state)
            self.cooldown_counter = state["cooldown_counter"]
