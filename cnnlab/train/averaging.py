"""Weight averaging: the model ends with (and trains from) an average of its recent weights.

:class:`Lookahead` keeps an exponential moving average (EMA) of every floating-point
entry of the model's state (weights and batch-norm statistics). Every ``every`` steps the
average moves towards the current weights and the model is *reset* to the average: the
"slow weights" of Lookahead (Zhang, Lucas, Hinton & Ba 2019) with an EMA as the slow
update, as in Jordan's airbench (2024). The decay ramps up with training,

    decay(step) = decay * (step / total_steps) ** power

so early on (decay near 0) the average simply follows the weights, and in the last part of
the schedule it smooths the noise of the final, small steps -- the gain weight averaging
gives (Polyak & Juditsky 1992; Izmailov et al. 2018, SWA). When training ends the model
holds the average, so validation, the saved "last" weights, ``evaluate`` and ``predict``
all use it. With ``lookahead=False`` the model trains undisturbed and only gets the
average at the end (a plain EMA of the weights, as timm's ModelEma).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from cnnlab.train.callbacks import Callback

if TYPE_CHECKING:
    from cnnlab.train.loop import Trainer


class Lookahead(Callback):
    """EMA of the weights, synced into the model every ``every`` steps (see the module doc)."""

    def __init__(self, every: int = 5, decay: float = 0.95 ** 5, power: float = 3.0, lookahead: bool = True):
        if every < 1 or not 0 <= decay < 1 or power < 0:
            raise ValueError("Lookahead needs every >= 1, 0 <= decay < 1 and power >= 0")
        self.every, self.decay, self.power, self.lookahead = every, decay, power, lookahead
        self.average: dict[str, torch.Tensor] | None = None

    def _state(self, trainer: "Trainer") -> dict[str, torch.Tensor]:
        return {k: v for k, v in trainer.model.state_dict().items() if v.is_floating_point()}

    def on_train_begin(self, trainer: "Trainer") -> None:
        state = self._state(trainer)
        if self.average is None:
            self.average = {k: v.detach().clone() for k, v in state.items()}
        else:  # a resumed run keeps its restored average, read from the file onto the CPU
            self.average = {k: self.average[k].to(state[k].device) for k in state}

    def decay_at(self, step: int, total: int) -> float:
        return self.decay * (min(step, total) / max(total, 1)) ** self.power

    @torch.no_grad()
    def update(self, trainer: "Trainer", decay: float, sync: bool) -> None:
        """average <- decay * average + (1 - decay) * weights; then weights <- average if sync."""
        assert self.average is not None
        for k, v in self._state(trainer).items():
            avg = self.average[k]
            avg.lerp_(v.detach().to(avg.dtype), 1.0 - decay)
            if sync:
                v.copy_(avg)

    def on_batch_end(self, trainer: "Trainer") -> None:
        if trainer.step % self.every == 0:
            self.update(trainer, self.decay_at(trainer.step, trainer.total_steps), self.lookahead)
        if trainer.step == trainer.total_steps:  # the last step: the model becomes the average
            self.on_train_end(trainer)  # (before the last validation and checkpoint see it)

    def on_train_end(self, trainer: "Trainer") -> None:
        if self.average is not None:
            with torch.no_grad():
                for k, v in self._state(trainer).items():
                    v.copy_(self.average[k])

    def state_dict(self) -> dict[str, Any]:
        return {"average": self.average} if self.average is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.average = {k: v.clone() for k, v in state["average"].items()}
