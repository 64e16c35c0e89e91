"""ProgressBar: a live bar per epoch on a terminal or in a notebook, one line per epoch in a log."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from cnnlab.display import EpochBar, kernel_shell
from cnnlab.train.callbacks.base import Callback

if TYPE_CHECKING:
    from cnnlab.train.loop import Trainer


class ProgressBar(Callback):
    """A live bar per epoch (loss, accuracy, lr, images/s, ETA) on a terminal or in a notebook.

    In Jupyter or Colab each epoch gets an HTML bar that fills as it trains and then shows
    the epoch's metrics (as Keras' fit does there). When the output is neither (a log file,
    CI) it prints one plain line per epoch instead, plus a progress line every ``log_every``
    seconds during long epochs. ``refresh`` seconds between bar updates: reading the running
    loss waits for the GPU, so it is not done every batch. ``notebook=False`` keeps a
    notebook to plain lines.
    """

    def __init__(self, interactive: bool | None = None, refresh: float = 0.5, log_every: float = 60.0,
                 file=None, notebook: bool | None = None):
        self.file = file or sys.stdout
        self.interactive = self.file.isatty() if interactive is None else interactive
        in_kernel = file is None and interactive is None and kernel_shell() is not None
        self.notebook = in_kernel if notebook is None else notebook
        self.refresh, self.log_every = refresh, log_every
        self._progress = None
        self._task = None
        self._bar = None  # the notebook's display handle
        self._last = 0.0
        self._t0 = 0.0

    def on_epoch_begin(self, trainer: "Trainer") -> None:
        self._t0 = time.perf_counter()
        if not trainer.is_main:
            return
        if self.notebook:
            from IPython.display import display  # IPython: only in a notebook, where it is there

            self._bar = display(EpochBar(trainer.epoch, trainer.epochs, trainer.batch, trainer.steps_per_epoch),
                                display_id=True)
            return
        if not self.interactive:
            return
        # rich: only for a terminal's live bar (not imported by a run logging to a file)
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn(f"epoch {trainer.epoch}/{trainer.epochs}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[metrics]}"), TimeRemainingColumn(),
            console=Console(file=self.file), transient=True)  # the epoch line below replaces it
        self._progress.start()
        self._task = self._progress.add_task("train", total=trainer.steps_per_epoch, metrics="",
                                             completed=trainer.batch)

    def on_batch_end(self, trainer: "Trainer") -> None:
        now = time.perf_counter()
        if not trainer.is_main:
            return
        if self._bar is not None:
            if now - self._last >= self.refresh or trainer.batch == trainer.steps_per_epoch:
                self._last = now
                left = (now - self._t0) / trainer.batch * (trainer.steps_per_epoch - trainer.batch)
                self._bar.update(EpochBar(trainer.epoch, trainer.epochs, trainer.batch, trainer.steps_per_epoch,
                                          self._metrics(trainer, now), f"~{left:.0f} s left"))
            return
        if self._progress is None:  # a log: a line now and then in long epochs
            if now - max(self._last, self._t0) >= self.log_every and trainer.batch < trainer.steps_per_epoch:
                self._last = now
                left = (now - self._t0) / trainer.batch * (trainer.steps_per_epoch - trainer.batch)
                print(f"  epoch {trainer.epoch} batch {trainer.batch}/{trainer.steps_per_epoch}  "
                      f"{self._metrics(trainer, now)}  epoch ends in ~{left:.0f} s", file=self.file, flush=True)
            return
        if now - self._last < self.refresh and trainer.batch < trainer.steps_per_epoch:
            return
        self._last = now
        self._progress.update(self._task, completed=trainer.batch, metrics=self._metrics(trainer, now))

    def _metrics(self, trainer: "Trainer", now: float) -> str:
        loss, acc = trainer.running_metrics()
        lr = trainer.optimizer.param_groups[0]["lr"]
        speed = trainer.running_images / max(now - self._t0, 1e-9)
        return f"loss {loss:.4f} accuracy {acc:.3f} lr {lr:.2e} {speed:,.0f} img/s"

    def on_epoch_end(self, trainer: "Trainer") -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._bar is not None:  # the bar, full, with the epoch's line under it
            self._bar.update(EpochBar(trainer.epoch, trainer.epochs, trainer.steps_per_epoch,
                                      trainer.steps_per_epoch, format_logs(trainer.logs, trainer.epochs), done=True))
            self._bar = None
        elif trainer.is_main:
            print(format_logs(trainer.logs, trainer.epochs), file=self.file, flush=True)


def format_logs(logs: dict[str, Any], epochs: int) -> str:
    """One line: 'epoch 3/20  loss 0.512  accuracy 0.812 ... 412 img/s  14.2 s' (Keras' names)."""
    parts = [f"epoch {logs['epoch']}/{epochs}"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        if key in logs:
            parts.append(f"{key} {logs[key]:.4f}")
    if "lr" in logs:
        parts.append(f"lr {logs['lr']:.2e}")
    if "images_per_s" in logs:
        parts.append(f"{logs['images_per_s']:,.0f} img/s")
    if "seconds" in logs:
        parts.append(f"{logs['seconds']:.1f} s")
    return "  ".join(parts)
