"""Callbacks: code that runs at fixed points of the training loop, as in Keras.

The :class:`~cnnlab.train.loop.Trainer` calls, in this order::

    on_train_begin
      on_epoch_begin                      (epoch = 1, 2, ...)
        on_batch_begin / on_batch_end     (once per training batch)
      on_epoch_end                        (trainer.logs holds the epoch's metrics)
    on_train_end

Every hook receives the trainer, which exposes everything a callback may read or change:
``trainer.model``, ``trainer.optimizer``, ``trainer.epoch`` (1-based), ``trainer.epochs``
(planned), ``trainer.batch`` (1-based, within the epoch), ``trainer.step`` (optimiser steps
so far), ``trainer.steps_per_epoch``, ``trainer.max_steps`` (set it to end training after
that step, even mid-epoch), ``trainer.total_steps`` (the plan), ``trainer.logs`` (Keras' names:
``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``; and ``lr``, ``seconds``,
``images_per_s``), ``trainer.history`` (one
dict of logs per finished epoch) and ``trainer.stop_training`` (set it to stop after this
epoch).

Write your own by subclassing :class:`Callback`::

    class PrintBest(Callback):
        def on_epoch_end(self, trainer):
            print(trainer.epoch, max(h["val_accuracy"] for h in trainer.history))

A callback that keeps state across epochs returns it from ``state_dict()`` (numbers,
strings, lists, dicts, tensors) and takes it back in ``load_state_dict()``; it is then
saved in the resumable checkpoint, so ``--resume`` continues exactly where the run stopped.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from cnnlab.errors import CnnlabError
from cnnlab.io.fs import atomic_write_text
from cnnlab.train.config import LOG_ALIASES
from cnnlab.train.schedules import schedule_factor  # noqa: F401  (the LRSchedule factors)

if TYPE_CHECKING:
    from cnnlab.train.loop import Trainer

HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "val_macro_f1", "lr", "seconds", "images_per_s"]


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


class TrainingDiverged(CnnlabError):
    """The loss became NaN or infinite."""


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


# ---------------------------------------------------------------------------------------
# Stopping
# ---------------------------------------------------------------------------------------


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


class TerminateOnNaN(Callback):
    """Stop with a clear message as soon as the loss is NaN or infinite.

    It raises :class:`TrainingDiverged` before the epoch ends, so no checkpoint is ever
    written with broken weights: ``weights/best``, ``weights/last`` and the resumable
    checkpoint keep the last good epoch. ``check_every`` batches it looks at the running
    loss (reading it waits for the GPU, so it is not done every batch there).
    """

    def __init__(self, check_every: int | None = None):
        self.check_every = check_every

    def on_train_begin(self, trainer: "Trainer") -> None:
        if self.check_every is None:
            self.check_every = 1 if trainer.device.type == "cpu" else 50

    def _fail(self, trainer: "Trainer", what: str) -> None:
        lr = trainer.optimizer.param_groups[0]["lr"]
        last = trainer.history[-1]["epoch"] if trainer.history else 0
        kept = f"the weights of epoch {last} are kept" if last else "no weights were saved"
        raise TrainingDiverged(
            f"training diverged: {what} became NaN or infinite at epoch {trainer.epoch}, batch "
            f"{trainer.batch} (learning rate {lr:.3g}); {kept}; try a lower --lr")

    def on_batch_end(self, trainer: "Trainer") -> None:
        if trainer.step % self.check_every == 0:  # steps, not batches: airbench's epochs have 48
            if trainer.any_rank(not math.isfinite(trainer.last_loss())):
                self._fail(trainer, "the training loss")

    def on_epoch_end(self, trainer: "Trainer") -> None:
        for key in ("loss", "val_loss"):
            if key in trainer.logs and not math.isfinite(trainer.logs[key]):
                self._fail(trainer, key)


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
    """

    def __init__(self, minutes: float, replan_every: int = 20, first_plan: int = 5,
                 clock: Callable[[], float] = time.perf_counter):
        self.budget = minutes * 60.0
        self.clock = clock  # seconds; tests pass a fake clock to be independent of the load
        self.replan_every, self.first_plan = replan_every, first_plan
        self.elapsed_before = 0.0  # seconds of earlier sessions (resume)
        self.max_epochs = 0
        self.val_seconds: list[float] = []
        self._t0: float | None = None  # the clock when this session began (a fake clock may start at 0)
        self._train_t = 0.0  # training-batch seconds in this session
        self._steps = 0  # steps in this session
        self._batch_t0 = 0.0

    def elapsed(self) -> float:
        return self.elapsed_before + (self.clock() - self._t0 if self._t0 is not None else 0.0)

    def on_train_begin(self, trainer: "Trainer") -> None:
        self._t0 = self.clock()
        self.max_epochs = self.max_epochs or trainer.epochs

    def on_batch_begin(self, trainer: "Trainer") -> None:
        self._batch_t0 = self.clock()

    def on_batch_end(self, trainer: "Trainer") -> None:
        self._train_t += self.clock() - self._batch_t0
        self._steps += 1
        if self._steps == self.first_plan or self._steps % self.replan_every == 0:
            self._plan(trainer)

    def _plan(self, trainer: "Trainer") -> None:
        per_step = self._train_t / max(self._steps, 1)
        spe = trainer.steps_per_epoch
        # Validation: as measured; until then guessed from the validation set's size, an
        # image's forward pass costing a third of its training step (a fifth to a quarter
        # measured on an idle CPU; more on a busy one).
        per_image = per_step * trainer.batch / max(trainer.running_images, 1)
        guess = trainer.val_samples * per_image / 3 if trainer.val_samples else 0.1 * spe * per_step
        val = sum(self.val_seconds) / len(self.val_seconds) if self.val_seconds else guess
        remaining = self.budget - self.elapsed() - val  # keep the last validation's time
        more = int(max(remaining, 0.0) / (per_step + val / spe))
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
        self.elapsed_before, self.max_epochs = state["elapsed"], state["max_epochs"]
        self.val_seconds = list(state["val_seconds"])


# ---------------------------------------------------------------------------------------
# Learning rate
# ---------------------------------------------------------------------------------------


class LRSchedule(Callback):
    """Sets every parameter group's learning rate before each batch: peak x factor.

    The peak is the optimiser's learning rate when training starts (kept in the group as
    ``initial_lr``, which the optimiser's state saves). Progress is ``step / total_steps``
    (epochs x steps per epoch, or the plan of :class:`TimeLimit`). The state is the
    trainer's step, so resuming needs nothing extra.
    """

    def __init__(self, kind: str = "cosine", warmup: float = 0.05, step_size: int = 10, gamma: float = 0.1):
        schedule_factor(kind, 0.0)  # check the name now (see cnnlab.train.schedules)
        self.kind, self.warmup, self.step_size, self.gamma = kind, warmup, step_size, gamma

    def on_train_begin(self, trainer: "Trainer") -> None:
        for group in trainer.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def factor(self, trainer: "Trainer") -> float:
        total = max(trainer.total_steps, 1)
        return schedule_factor(self.kind, trainer.step / total, self.warmup, trainer.epoch,
                               self.step_size, self.gamma)

    def on_batch_begin(self, trainer: "Trainer") -> None:
        f = self.factor(trainer)
        for group in trainer.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * f


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


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------


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
        from cnnlab.io.weights import weights_file, write_safetensors

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


class CSVLogger(Callback):
    """Write ``history.csv``, one row per epoch, rewritten whole (and atomically) each epoch.

    Rewriting from ``trainer.history`` keeps the file consistent with the run after a
    ``--resume``: epochs that were lost to a crash are not listed twice.
    """

    def __init__(self, path: str | Path, columns: list[str] | None = None):
        self.path = Path(path)
        self.columns = columns or HISTORY_COLUMNS

    def on_epoch_end(self, trainer: "Trainer") -> None:
        if not trainer.is_main:
            return
        rows = trainer.history + [trainer.logs]
        extra = [k for row in rows for k in row if k not in self.columns]
        columns = self.columns + list(dict.fromkeys(extra))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k)) for k in columns})
        atomic_write_text(self.path, buf.getvalue())


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else v


class TensorBoard(Callback):
    """Log the epoch metrics (and the learning rate) for TensorBoard under ``log_dir``.

    Needs the ``tensorboard`` package: ``pip install "cnnlab[tensorboard]"``; then
    ``tensorboard --logdir runs``.
    """

    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise CnnlabError('TensorBoard logging needs the tensorboard package: '
                              'pip install "cnnlab[tensorboard]"') from None
        self.log_dir = Path(log_dir)
        self.writer_cls = SummaryWriter
        self.writer = None

    def on_train_begin(self, trainer: "Trainer") -> None:
        if trainer.is_main:
            self.writer = self.writer_cls(log_dir=str(self.log_dir), purge_step=trainer.epoch + 1)

    def on_epoch_end(self, trainer: "Trainer") -> None:
        if self.writer is None:
            return
        for key, value in trainer.logs.items():
            if key != "epoch" and isinstance(value, (int, float)):
                group = "loss" if key.endswith("loss") else "accuracy" if key.endswith("accuracy") else "train"
                self.writer.add_scalar(f"{group}/{key}", value, trainer.epoch)
        self.writer.flush()

    def on_train_end(self, trainer: "Trainer") -> None:
        if self.writer is not None:
            self.writer.close()


# ---------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------


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
        from cnnlab.display import kernel_shell

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
            from IPython.display import display

            from cnnlab.display import EpochBar

            self._bar = display(EpochBar(trainer.epoch, trainer.epochs, trainer.batch, trainer.steps_per_epoch),
                                display_id=True)
            return
        if not self.interactive:
            return
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
                from cnnlab.display import EpochBar

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
            from cnnlab.display import EpochBar

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
