"""TimeLimit: fit training into a number of minutes of wall-clock time."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from cnnlab.train.callbacks.base import Callback

if TYPE_CHECKING:
    from cnnlab.train.loop import Trainer


@dataclass(frozen=True)
class AfterTraining:
    """What the command still does once training stops, so that the budget keeps time for it:
    the final evaluation reads ``images`` files (``decode`` seconds each, timed on a few of them
    before training) and runs the model ``views`` times on each (test-time augmentation); the
    report, the evaluation's figures and the weights' loading take about ``fixed`` seconds."""

    images: int = 0
    views: int = 1
    decode: float = 0.0
    fixed: float = 2.0

    def seconds(self, forward: float) -> float:
        """The time it needs, for a model's forward pass of ``forward`` seconds per image."""
        return self.images * (self.decode + self.views * forward) + self.fixed


class TimeLimit(Callback):
    """Fit training into ``minutes`` of wall-clock time, like Ultralytics' ``time=``.

    It measures the time per training step (after ``first_plan`` batches, then every
    ``replan_every`` batches and after every epoch, when validation has been timed too) and sets ``trainer.max_steps`` to the
    steps that still fit, keeping room for the last validation. Learning-rate schedules
    span ``trainer.total_steps``, so they anneal to their end exactly when the time is up,
    even if that is in the middle of an epoch (the last epoch is then a short one). The
    plan never exceeds the ``epochs`` given at the start. Time spent before a ``--resume``
    counts. A time-limited run depends on the machine's speed, so it is not reproducible
    step for step.

    Steps need not cost the same: with ``trainer.step_cost`` (a step's cost at a progress
    0-1, set by :class:`~cnnlab.train.callbacks.ProgressiveResize`), the time measured is
    per unit of cost, and the plan is the number of steps whose summed cost fits.

    The budget is the whole command's: ``spent_before`` is what it took before training
    (finding and decoding the data, the automatic choices' timed steps), and ``after``
    (:class:`AfterTraining`) what the final evaluation and the report will take.
    """

    def __init__(self, minutes: float, replan_every: int = 20, first_plan: int = 5,
                 clock: Callable[[], float] = time.perf_counter, spent_before: float = 0.0,
                 after: AfterTraining | None = None):
        self.budget = minutes * 60.0
        self.spent_before = spent_before  # seconds this command spent before training
        self.after = after
        self.clock = clock  # seconds; tests pass a fake clock to be independent of the load
        self.replan_every, self.first_plan = replan_every, first_plan
        self.elapsed_before = 0.0  # seconds of earlier sessions (resume)
        self.max_epochs = 0
        self.val_seconds: list[float] = []
        self._t0: float | None = None  # the clock when this session began (a fake clock may start at 0)
        self._train_t = 0.0  # training-batch seconds in this session
        self._steps = 0  # steps in this session
        self._work = 0.0  # their summed cost (= the steps when every step costs the same)
        self._cost_now = 1.0
        self._batch_t0 = 0.0

    def elapsed(self) -> float:
        session = self.clock() - self._t0 if self._t0 is not None else 0.0
        return self.elapsed_before + self.spent_before + session

    def on_train_begin(self, trainer: "Trainer") -> None:
        self._t0 = self.clock()
        self.max_epochs = self.max_epochs or trainer.epochs

    def on_batch_begin(self, trainer: "Trainer") -> None:
        cost = getattr(trainer, "step_cost", None)
        self._cost_now = cost(trainer.step / max(trainer.total_steps, 1)) if cost is not None else 1.0
        self._batch_t0 = self.clock()

    def on_batch_end(self, trainer: "Trainer") -> None:
        self._train_t += self.clock() - self._batch_t0
        self._steps += 1
        self._work += self._cost_now
        if self._steps == self.first_plan or self._steps % self.replan_every == 0:
            self._plan(trainer)

    def _plan(self, trainer: "Trainer") -> None:
        per_step = self._train_t / max(self._steps, 1)
        spe = trainer.steps_per_epoch
        # Validation: as measured; until then guessed from the validation set's size, an
        # image's forward pass costing a third of its training step (a fifth to a quarter
        # measured on an idle CPU; more on a busy one).
        per_image = per_step * trainer.batch / max(trainer.running_images, 1)
        # An epoch validates the whole set, or a fixed subset of it (--val-max) but the last.
        subset = getattr(trainer.val_subset, "num_samples", 0)  # 0 without a subset (None)
        validated = subset or trainer.val_samples
        guess = validated * per_image / 3 if validated else 0.1 * spe * per_step
        val = sum(self.val_seconds) / len(self.val_seconds) if self.val_seconds else guess
        # The forward pass of one image at the size and layout of the test, from the
        # validations measured (a subset's too); the final evaluation and the last, whole
        # validation take that many seconds per image.
        forward = val / validated if self.val_seconds and validated else per_image / 3
        last_val = forward * trainer.val_samples if subset else val
        after = self.after.seconds(forward) if self.after is not None else 0.0
        remaining = self.budget - self.elapsed() - last_val - after  # the last validation, and what follows
        per_unit = self._train_t / max(self._work, 1e-9)  # seconds of a step at cost 1
        cost = getattr(trainer, "step_cost", None)  # None: every step costs the same
        if cost is None:
            more = int(max(remaining, 0.0) / (per_unit + val / spe))
        else:
            more = steps_that_fit(cost, trainer.step, max(remaining, 0.0), per_unit, val / spe)
        # Timings differ a little between processes (torchrun): all follow the main one.
        trainer.max_steps = trainer.broadcast(min(self.max_epochs * spe, trainer.step + more))
        trainer.epochs = max(trainer.epoch, math.ceil(trainer.max_steps / spe))

    def on_epoch_end(self, trainer: "Trainer") -> None:
        self.val_seconds.append(max(trainer.logs.get("seconds", 0.0) - trainer.train_seconds, 0.0))
        # Once the plan is reached (the schedule has annealed), the run is over: re-planning
        # now could only stretch a schedule whose last step has already been taken.
        if trainer.max_steps is None or trainer.step < trainer.max_steps:
            self._plan(trainer)
        if trainer.step >= trainer.max_steps:
            trainer.stop_training = True
            trainer.stop_reason = trainer.stop_reason or (
                f"time limit: {self.elapsed() / 60:.1f} of {self.budget / 60:g} minutes used")

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed(), "max_epochs": self.max_epochs, "val_seconds": self.val_seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # the earlier commands' time; this one's own start-up (spent_before) adds to it
        self.elapsed_before, self.max_epochs = state["elapsed"], state["max_epochs"]
        self.val_seconds = list(state["val_seconds"])


def steps_that_fit(cost, step: int, seconds: float, per_unit: float, per_step: float) -> int:
    """The most steps ``more`` such that, in a run of ``step + more`` steps, the steps still to
    come (progress ``step / total`` to 1) fit ``seconds``: each costs ``cost(progress)`` x
    ``per_unit`` seconds plus ``per_step`` (its share of validation). A bisection over the
    total; the cost is summed at 64 points of the remaining progress."""

    def needs(total: int) -> float:
        n = total - step
        if n <= 0:
            return 0.0
        points = [(step + (i + 0.5) * n / 64) / total for i in range(64)]
        return n * (per_unit * sum(cost(p) for p in points) / 64 + per_step)

    cheapest = per_unit * min(cost(i / 64) for i in range(65)) + per_step
    lo, hi = 0, int(seconds / max(cheapest, 1e-9)) + 1
    while lo < hi:  # needs(step + more) grows with more
        mid = (lo + hi + 1) // 2
        if needs(step + mid) <= seconds:
            lo = mid
        else:
            hi = mid - 1
    return lo
