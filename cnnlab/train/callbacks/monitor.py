"""MonitorCallback: the shared part of the callbacks that watch one logged metric.

Whether an epoch improves on the best one (``mode``, ``min_delta``), the best value and its
epoch, and the epochs since then are decided here once, for EarlyStopping, ModelCheckpoint
and ReduceLROnPlateau (as Keras' MonitorCallback does for its own).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cnnlab.errors import CnnlabError
from cnnlab.train.callbacks.base import Callback
from cnnlab.train.config import LOG_ALIASES

if TYPE_CHECKING:
    from cnnlab.train.loop import Trainer


def monitor_mode(monitor: str, mode: str) -> str:
    """'min' or 'max' for a metric; 'auto' guesses from its name (accuracy and F1 go up)."""
    if mode == "auto":
        return "max" if "acc" in monitor or "f1" in monitor else "min"
    if mode not in ("min", "max"):
        raise CnnlabError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
    return mode


@dataclass
class Best:
    """The best value of a metric so far and its epoch (0: none yet)."""

    monitor: str
    value: float
    epoch: int = 0


class MonitorCallback(Callback):
    """The shared part of the callbacks that watch one logged metric (Keras' MonitorCallback).

    ``monitor`` names a log (``val_loss``; the old name ``val_acc`` is accepted too); ``mode``
    is "min", "max" or "auto" (accuracy and F1 go up, the rest down). An epoch *improves* when
    its value beats ``best.value`` by more than ``min_delta`` (a NaN never does); ``wait``
    counts the epochs since the last one that did. EarlyStopping, ModelCheckpoint and
    ReduceLROnPlateau are built on it.
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", min_delta: float = 0.0):
        monitor = LOG_ALIASES.get(monitor, monitor)  # 'val_acc' is 'val_accuracy'
        self.mode = monitor_mode(monitor, mode)
        self.min_delta = abs(min_delta)
        self.best = Best(monitor, math.inf if self.mode == "min" else -math.inf)
        self.wait = 0

    @property
    def monitor(self) -> str:
        return self.best.monitor

    def is_improvement(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.mode == "min":
            return value < self.best.value - self.min_delta
        return value > self.best.value + self.min_delta

    def update(self, value: float, epoch: int) -> bool:
        """Count ``epoch``'s value: True, and it is the new best, when it improves; else one more
        epoch waited."""
        if self.is_improvement(value):
            self.best.value, self.best.epoch, self.wait = value, epoch, 0
            return True
        self.wait += 1
        return False

    def current(self, trainer: "Trainer") -> float:
        """The metric of the epoch that just ended (an error naming what the run logs when absent)."""
        if self.monitor not in trainer.logs:
            have = ", ".join(k for k in trainer.logs if k != "epoch")
            raise CnnlabError(f"{type(self).__name__} monitors {self.monitor!r}, which this run does not log "
                              f"(it logs: {have})")
        return float(trainer.logs[self.monitor])

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best.value, "best_epoch": self.best.epoch, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best.value, self.best.epoch = state["best"], state["best_epoch"]
        self.wait = state.get("wait", 0)  # ModelCheckpoint's state had none before
