"""ProgressiveResize: small images early in training, larger ones at the end.

The images are loaded (and cached) once, at the run's image size; each training batch is
brought to the size of the moment on the fly (inside the augmentation's own resampling, or
an antialiased resize), so no JPEG is decoded again. Validation and the final evaluation
see the loaded size.

Two ideas, each an argument:

* ``start`` (progressive resizing; fastai's, and FFCV's ResNet configurations): the first
  steps train at ``start`` x the size, which costs ``start``² of a full step, and the size
  grows linearly over the middle of the run (``ramp``, fractions of the planned steps) to
* ``end``: the last training size as a fraction of the evaluated one. Below 1, the model is
  tested at a larger size than it last trained at, which suits random-resized-crop training,
  where objects look larger than in the uncropped test images (Touvron et al. 2019, "Fixing
  the train-test resolution discrepancy", FixRes).

Sizes are rounded to a multiple of ``multiple`` (the model's total stride), so that every
stride-2 layer sees an even size and pads as it does at the loaded size: the same network,
with the same weights, at every size. The model must end in global pooling before its
dense layers (:func:`cnnlab.model.build.size_free` checks it).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from cnnlab.train.callbacks.base import Callback

if TYPE_CHECKING:
    from cnnlab.train.loop import Trainer

RAMP = (0.25, 0.75)  # the size grows from the first quarter of the steps to the last quarter


class ProgressiveResize(Callback):
    """Set ``trainer.train_size`` before every step from the run's progress (step / planned steps)."""

    def __init__(self, size: tuple[int, int], start: float, end: float = 1.0, multiple: int = 1,
                 ramp: tuple[float, float] = RAMP):
        if not 0 < start <= end <= 1:
            raise ValueError(f"need 0 < start <= end <= 1, got start {start}, end {end}")
        self.size = (int(size[0]), int(size[1]))
        self.start, self.end, self.multiple, self.ramp = start, end, max(int(multiple), 1), ramp

    @classmethod
    def from_options(cls, size: tuple[int, int], progressive: float, train_scale: float,
                     multiple: int = 1) -> "ProgressiveResize | None":
        """The plan of ``--progressive`` / ``--train-scale`` (None when both are off): the one
        place those two options become sizes, for the run, its printed line and its budget."""
        if not progressive and train_scale == 1:
            return None
        return cls(size, progressive or train_scale, train_scale, multiple)

    def mean_cost(self, start: float = 0.0, end: float = 1.0, points: int = 64) -> float:
        """The mean of :meth:`cost` over progress ``start``-``end`` (the midpoints of ``points`` slices)."""
        return sum(self.cost(start + (i + 0.5) * (end - start) / points) for i in range(points)) / points

    def fraction(self, progress: float) -> float:
        """The size at ``progress`` (0-1 of the planned steps) as a fraction of the loaded size."""
        a, b = self.ramp
        t = min(max((progress - a) / (b - a), 0.0), 1.0) if b > a else float(progress >= a)
        return self.start + (self.end - self.start) * t

    def size_at(self, progress: float) -> tuple[int, int]:
        """(height, width) at ``progress``: each side rounded to the nearest multiple (halves up),
        at least one multiple, at most the loaded size."""
        f, m = self.fraction(progress), self.multiple
        return tuple(min(max(math.floor(side * f / m + 0.5) * m, m), side)  # type: ignore[return-value]
                     for side in self.size)

    def cost(self, progress: float) -> float:
        """A step's cost at ``progress`` relative to a step at the loaded size: its pixels' share."""
        h, w = self.size_at(progress)
        return h * w / (self.size[0] * self.size[1])

    def sizes(self, total_steps: int) -> list[tuple[int, tuple[int, int]]]:
        """[(first step, size), ...]: where the size changes in a run of ``total_steps``."""
        out: list[tuple[int, tuple[int, int]]] = []
        for step in range(total_steps):
            size = self.size_at(step / max(total_steps, 1))
            if not out or out[-1][1] != size:
                out.append((step, size))
        return out

    def on_train_begin(self, trainer: "Trainer") -> None:
        trainer.step_cost = self.cost

    def on_batch_begin(self, trainer: "Trainer") -> None:
        size = self.size_at(trainer.step / max(trainer.total_steps, 1))
        trainer.train_size = None if size == self.size else size

    def on_train_end(self, trainer: "Trainer") -> None:
        trainer.train_size = None

    def state_dict(self) -> dict[str, Any]:
        return {}
