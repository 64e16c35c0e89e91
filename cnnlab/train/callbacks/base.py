"""The Callback base class: a no-op for every hook of the training loop, and no state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cnnlab.train.loop import Trainer


class Callback:
    """Base class: every hook does nothing; override the ones you need."""

    def on_train_begin(self, trainer: "Trainer") -> None: ...
    def on_epoch_begin(self, trainer: "Trainer") -> None: ...
    def on_batch_begin(self, trainer: "Trainer") -> None: ...
    def on_batch_end(self, trainer: "Trainer") -> None: ...
    def on_epoch_end(self, trainer: "Trainer") -> None: ...
    def on_train_end(self, trainer: "Trainer") -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
