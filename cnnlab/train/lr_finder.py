"""The learning-rate range test (Smith 2015; fastai's ``lr_find``).

Train a fresh model for ~100 steps while the learning rate grows exponentially from
``start_lr`` to ``end_lr``, and record the loss (smoothed by an exponential moving average).
At first the rate is too small to change anything; then the loss falls; past some point
the steps overshoot and the loss explodes. Two classic picks from the curve:

* ``steep``: where the loss falls fastest (the most negative slope against log lr);
* ``min/10``: a tenth of the rate at the lowest loss, safely before the explosion.

The suggestion is ``min/10``, a good peak rate for the one-cycle schedule ``cnnlab train``
uses; ``steep`` is printed and plotted beside it. When the smoothed loss never falls 5 %
below its start there is no suggestion (``suggested`` is None): the sweep was too short for
the model. The model is thrown away afterwards.

    result, setup = cnnlab.train.lr_find("data/flowers", model="vgg_bn", steps=100)
    result.suggested          # a peak learning rate for cnnlab.train(..., lr=...)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnlab.io.figures import save_figure

# The smoothed loss must fall at least this fraction below its start for the curve to say
# anything: a model that learns too slowly for the sweep leaves a flat, noisy line whose
# lowest point is noise (tinyvgg on the digits in 100 steps: 2.303 -> 2.299), and a tenth
# of that rate would be a useless suggestion.
MIN_FALL = 0.05


@dataclass
class LRFinderResult:
    lrs: list[float]
    losses: list[float]  # raw, per step
    smoothed: list[float] = field(default_factory=list)
    steep: float | None = None
    minimum: float | None = None  # the lr at the lowest smoothed loss; None when the loss never fell
    start_loss: float | None = None  # the smoothed loss where the analysis starts
    lowest_loss: float | None = None  # and its lowest value

    @property
    def suggested(self) -> float | None:
        return self.minimum / 10 if self.minimum is not None else self.steep

    def to_csv(self) -> str:
        rows = ["lr,loss,smoothed_loss"]
        rows += [f"{lr:.6g},{l:.6g},{s:.6g}" for lr, l, s in zip(self.lrs, self.losses, self.smoothed)]
        return "\n".join(rows) + "\n"


def smooth(losses: list[float], beta: float = 0.98) -> list[float]:
    """Exponential moving average with bias correction (the first values are not pulled to 0)."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** i))
    return out


def analyse(lrs: list[float], losses: list[float], skip_start: int = 5, skip_end: int = 3) -> LRFinderResult:
    """Smooth the curve and find the steepest descent and the minimum."""
    result = LRFinderResult(list(lrs), list(losses), smooth(losses))
    n = len(lrs)
    lo, hi = (skip_start, n - skip_end) if n > skip_start + skip_end + 3 else (0, n)
    x = np.log10(np.array(lrs[lo:hi]))
    s = np.array(result.smoothed[lo:hi])
    finite = np.isfinite(s)
    if finite.sum() < 3:
        return result
    s, x = s[finite], x[finite]
    lowest = int(np.argmin(s))
    result.start_loss, result.lowest_loss = float(s[0]), float(s[lowest])
    if s[lowest] > (1 - MIN_FALL) * s[0]:  # noise around a flat curve: nothing to pick from
        return result
    result.minimum = float(10 ** x[lowest])
    if lowest >= 2:
        slope = np.gradient(s[:lowest + 1], x[:lowest + 1])
        result.steep = float(10 ** x[int(np.argmin(slope))])
    return result


def range_test(trainer, loader, start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100,
               diverge: float = 4.0) -> LRFinderResult:
    """Run the range test with ``trainer`` (its model and optimiser are changed: use fresh ones).

    Stops early once the smoothed loss exceeds ``diverge`` times its minimum. The data-to-result
    version is :func:`cnnlab.train.lr_find`.
    """
    steps = max(steps, 10)
    ratio = (end_lr / start_lr) ** (1 / (steps - 1))
    trainer.model.train()
    lrs, losses = [], []
    best, avg, beta = math.inf, 0.0, 0.98
    epoch = 0
    while len(lrs) < steps:
        epoch += 1
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        trainer.begin_epoch(epoch)
        for images, labels in loader:
            lr = start_lr * ratio ** len(lrs)
            for group in trainer.optimizer.param_groups:
                group["lr"] = lr
            loss = float(trainer.train_step(images, labels).detach())
            lrs.append(lr)
            losses.append(loss)
            avg = beta * avg + (1 - beta) * loss
            current = avg / (1 - beta ** len(losses))  # as smooth() computes it
            if not math.isfinite(current) or current > diverge * best:
                return analyse(lrs, losses)
            best = min(best, current)
            if len(lrs) >= steps:
                break
    return analyse(lrs, losses)


def plot(result: LRFinderResult, path: str | Path, title: str = "") -> Path:
    """The loss against the learning rate (log scale), with the two picks marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), layout="tight")
    ax = fig.subplots()
    ax.plot(result.lrs, result.losses, color="0.8", lw=1, label="loss per step")
    ax.plot(result.lrs, result.smoothed, color="C0", lw=2, label="smoothed loss")
    finite = [v for v in result.smoothed if math.isfinite(v)]
    if finite:
        lo, first = min(finite), finite[0]
        ax.set_ylim(lo - 0.1 * abs(first - lo) - 1e-3, first + 0.6 * abs(first - lo) + 1e-3)
    for lr, colour, label in ((result.steep, "C2", "steepest descent"),
                              (result.suggested, "C3", "suggested: minimum / 10")):
        if lr is not None:
            ax.axvline(lr, color=colour, ls="--", lw=1.2, label=f"{label} ({lr:.1e})")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title(title or "Learning-rate range test")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return save_figure(fig, path)
