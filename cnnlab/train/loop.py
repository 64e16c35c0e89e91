"""The training loop: small on purpose, extended through callbacks.

    trainer = Trainer(model, optimizer, callbacks=[EarlyStopping(patience=5)])
    history = trainer.fit(train_batches, val_batches, epochs=20)

One training step, in order::

    uint8 batch -> device -> float in [0, 1] -> augmentation (training only)
      -> normalisation -> channels_last (if asked) -> autocast (bf16/fp16 if asked)
      -> model -> loss -> backward -> optimiser step

``train`` and ``val`` are iterables of ``(images, labels)`` batches: images uint8
(N, C, H, W), labels int64 (N,). A loader with ``set_epoch(epoch)`` gets it called before
each epoch, so its shuffling depends on (seed, epoch) only. :class:`TensorLoader` makes
such batches from tensors already in memory.

Reproducibility: every epoch re-seeds torch's generator (dropout) and the augmentation
generator from (seed, epoch). With the resumable checkpoint, written after every epoch, a
resumed run therefore ends with exactly the weights of an uninterrupted one on the CPU.
Metrics are summed on the device and read once per epoch, so the GPU never waits for Python.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.train import distributed as dist
from cnnlab.train.callbacks import Callback
from cnnlab.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state


class TrainingInterrupted(CnnlabError):
    """Ctrl-C: training stopped after the current batch and saved a resumable checkpoint."""

    exit_code = 130


class TensorLoader:
    """Batches from in-memory tensors, shuffled by (seed, epoch): Keras' ``fit(x, y)``.

    ``images`` is uint8 (N, C, H, W) (or float in [0, 1]); ``labels`` int64 (N,).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 32,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if len(images) != len(labels):
            raise CnnlabError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        n = len(self.images)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.images[idx], self.labels[idx]


class BinaryLoss(nn.Module):
    """Binary cross-entropy for a model with one sigmoid output, with label smoothing."""

    def __init__(self, label_smoothing: float = 0.0, weight: torch.Tensor | None = None):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        target = labels.to(logits.dtype) * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        per_sample = F.binary_cross_entropy_with_logits(logits[:, 0], target, reduction="none")
        if self.weight is not None:
            return (per_sample * self.weight[labels]).sum() / self.weight[labels].sum()
        return per_sample.mean()


def is_binary(model: nn.Module) -> bool:
    """One sigmoid output: the Keras way of writing a two-class model."""
    return getattr(model, "output_activation", None) == "sigmoid" and getattr(model, "num_outputs", 0) == 1


def default_loss(model: nn.Module, label_smoothing: float = 0.0,
                 class_weights: torch.Tensor | None = None) -> nn.Module:
    """Cross-entropy on the logits; binary cross-entropy for a single sigmoid output."""
    if is_binary(model):
        return BinaryLoss(label_smoothing, class_weights)
    return nn.CrossEntropyLoss(weight=class_weights, label_smoothing=label_smoothing)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


class Trainer:
    """Trains a model with a small loop; callbacks add everything else.

    Args:
        model: any module returning logits (a cnnlab CNN or your own).
        optimizer: a torch optimiser over the model's parameters.
        loss_fn: ``loss_fn(logits, labels)``; default cross-entropy (see :func:`default_loss`).
        device: where to train; the model is moved there.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast; fp16 adds a gradient scaler).
        channels_last: NHWC memory layout, faster for convolutions on recent GPUs.
        normalization: a :class:`cnnlab.data.normalize.Normalization` (default: x / 255).
        augment: ``augment(x01, generator) -> x01`` on float batches, training only.
        seed: with the epoch, seeds dropout, augmentation and the loader's shuffling.
        callbacks: :class:`Callback` objects, called in the order given.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *,
                 loss_fn: nn.Module | None = None, device: str | torch.device = "cpu",
                 precision: str = "fp32", channels_last: bool = False, normalization=None,
                 augment=None, seed: int = 0, callbacks: Sequence[Callback] = ()):
        self.device = torch.device(device)
        self.model = model.to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = optimizer
        self.loss_fn = (loss_fn or default_loss(model)).to(self.device)
        self.channels_last = channels_last
        self.augment = augment
        self.seed = seed
        self.callbacks = list(callbacks)
        self._set_precision(precision)
        self._set_normalization(normalization)

        # Under torchrun: a DistributedDataParallel wrapper for the training forward pass
        # (it averages gradients over the processes); self.model stays the plain module.
        self.rank = dist.rank()
        self.world = torch.distributed.get_world_size() if dist.is_initialized() else 1
        self.is_main = self.rank == 0  # only the main process writes files and prints
        self._train_model = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._train_model = DistributedDataParallel(self.model, device_ids=ids)

        # What callbacks read (see cnnlab.train.callbacks).
        self.epoch = 0  # the current epoch, 1-based; the last finished one after fit()
        self.epochs = 0
        self.batch = 0  # batches done in the current epoch
        self.step = 0  # optimiser steps in the whole run
        self.steps_per_epoch = 0
        self.max_steps: int | None = None  # set (e.g. by TimeLimit) to end mid-epoch
        self.val_samples = 0  # images in the validation data (when it says)
        self.logs: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.stop_training = False
        self.stop_reason = ""
        self.restored_epoch: int | None = None  # set by EarlyStopping(restore_best_weights)
        self.interrupted = False

    # -- set-up ------------------------------------------------------------------------------
    def _set_precision(self, precision: str) -> None:
        dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
        if precision not in dtypes:
            raise CnnlabError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
        self.precision = precision
        self.amp_dtype = dtypes[precision]
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None

    def _set_normalization(self, normalization) -> None:
        if normalization is None:
            self.mean = self.std = None
            return
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(normalization.mean, device=self.device).view(shape)
        self.std = torch.tensor(normalization.std, device=self.device).view(shape)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # -- one batch ---------------------------------------------------------------------------
    def prepare(self, images: torch.Tensor, training: bool) -> torch.Tensor:
        """uint8 (or [0, 1] float) images -> the normalised float batch the model sees."""
        x = images.to(self.device, non_blocking=True)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        if training and self.augment is not None:
            x = self.augment(x, self.generator)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _correct(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pred = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
        return (pred == labels).sum()

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Forward, backward and one optimiser step; returns the loss (on the device)."""
        x = self.prepare(images, training=True)
        y = labels.to(self.device, non_blocking=True)
        with self.autocast():
            logits = self._train_model(x)
            loss = self.loss_fn(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        n = len(y)
        self._loss_sum += loss.detach() * n
        self._correct_sum += self._correct(logits.detach(), y)
        self._seen += n
        self._last_loss = loss.detach()
        return loss

    # -- running metrics, for callbacks --------------------------------------------------------
    def _reset_metrics(self) -> None:
        self._loss_sum = torch.zeros((), device=self.device)
        self._correct_sum = torch.zeros((), dtype=torch.long, device=self.device)
        self._seen = 0
        self._train_seconds = 0.0
        self._last_loss = torch.zeros((), device=self.device)

    def running_metrics(self) -> tuple[float, float]:
        """(mean loss, accuracy) of this epoch's batches so far; waits for the device."""
        n = max(self._seen, 1)
        return self._loss_sum.item() / n, self._correct_sum.item() / n

    @property
    def running_images(self) -> int:
        return self._seen

    @property
    def train_seconds(self) -> float:
        """Seconds spent in this epoch's training batches so far (validation excluded)."""
        return self._train_seconds

    @property
    def total_steps(self) -> int:
        """Optimiser steps planned for the whole run: what learning-rate schedules span."""
        if self.max_steps is not None:
            return self.max_steps
        return self.epochs * self.steps_per_epoch

    def broadcast(self, value: Any) -> Any:
        """The main process's value on every process (itself without torchrun)."""
        return dist.broadcast(value) if self.world > 1 else value

    def any_rank(self, flag: bool) -> bool:
        """True if ``flag`` is true on any process (itself without torchrun)."""
        if self.world == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def _steps_done(self) -> bool:
        return self.max_steps is not None and self.step >= self.max_steps

    def last_loss(self) -> float:
        return float(self._last_loss)

    # -- evaluation ----------------------------------------------------------------------------
    @torch.inference_mode()
    def evaluate(self, data: Iterable) -> dict[str, float]:
        """Mean loss and accuracy over ``data`` with the model in eval mode."""
        was_training = self.model.training
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen = 0
        try:
            for images, labels in data:
                x = self.prepare(images, training=False)
                y = labels.to(self.device, non_blocking=True)
                with self.autocast():
                    logits = self.model(x)
                    loss = self.loss_fn(logits.float(), y)
                loss_sum += loss * len(y)
                correct += self._correct(logits, y)
                seen += len(y)
        finally:
            self.model.train(was_training)
        if self.world > 1:  # every process evaluated its shard: add them up
            total = torch.tensor(float(seen), device=self.device)
            dist.all_reduce_sum(loss_sum, correct, total)
            seen = int(total.item())
        if seen == 0:
            return {"loss": float("nan"), "acc": float("nan")}
        return {"loss": loss_sum.item() / seen, "acc": correct.item() / seen}

    # -- the loop ----------------------------------------------------------------------------
    def _call(self, hook: str) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self)

    def _seed_epoch(self, epoch: int) -> None:
        s = epoch_seed(self.seed, epoch) + 1_000_000_007 * self.rank  # other dropout on each process
        torch.manual_seed(s)  # dropout (and CUDA's generators too)
        # Augmentation draws a few numbers per image: on the CPU, so a GPU never waits for
        # them, and the same augmentations on every device.
        self.generator = torch.Generator().manual_seed(s)

    def _run_epoch(self, train, skip: int = 0) -> None:
        """Train one epoch; ``skip`` batches were done before a mid-epoch interruption."""
        self.model.train()
        batches = iter(train)
        for _ in range(skip):  # same order: the loader shuffles by (seed, epoch)
            next(batches)
        t0 = time.perf_counter()
        for images, labels in batches:
            self._call("on_batch_begin")
            self.train_step(images, labels)
            self.step += 1
            self.batch += 1
            self._call("on_batch_end")
            if self.interrupted:
                self._train_seconds += time.perf_counter() - t0
                raise _Interrupt
            if self._steps_done():  # the planned steps end inside this epoch
                break
        self._train_seconds += time.perf_counter() - t0

    def fit(self, train: Iterable, val: Iterable | None = None, *, epochs: int = 10,
            checkpoint: str | Path | None = None, resume: bool = False) -> list[dict[str, Any]]:
        """Train for ``epochs`` epochs (fewer if a callback stops it); returns the history.

        ``checkpoint``: path of the resumable checkpoint, rewritten after every epoch and on
        Ctrl-C. ``resume=True`` continues from it: same model, optimiser, callbacks, epoch,
        random state and plan (``epochs`` is then the saved one); an epoch cut short by
        Ctrl-C continues from its next batch.
        """
        self.epochs = epochs
        self.steps_per_epoch = len(train)
        self.val_samples = getattr(val, "num_samples", 0) if val is not None else 0
        if self.steps_per_epoch == 0:
            raise CnnlabError("the training data gives no batches (is the training split empty?)")
        self.stop_training = False
        partial = self._restore(checkpoint) if resume else None
        self._call("on_train_begin")
        if checkpoint is not None and not resume:
            self._save(checkpoint)  # epoch 0: a run stopped during epoch 1 resumes from here
        with self._catch_ctrl_c():
            while self.epoch < self.epochs and not self.stop_training and not self._steps_done():
                self.epoch += 1
                if hasattr(train, "set_epoch"):
                    train.set_epoch(self.epoch)
                skip = 0
                if partial is not None:  # continue the epoch that Ctrl-C cut short
                    skip = self._restore_partial(partial)
                    partial = None
                else:
                    self._seed_epoch(self.epoch)
                    self._reset_metrics()
                    self.batch = 0
                t_epoch = time.perf_counter() - self._train_seconds
                self._call("on_epoch_begin")
                try:
                    self._run_epoch(train, skip)
                except _Interrupt:
                    if checkpoint is not None:
                        self._save(checkpoint, partial=True)
                    where = f"; resume with --resume (it continues at batch {self.batch + 1})" \
                        if checkpoint is not None else ""
                    raise TrainingInterrupted(f"interrupted during epoch {self.epoch}{where}") from None
                self.logs = self._epoch_logs(val, t_epoch)
                self._call("on_epoch_end")
                self.stop_training = self.broadcast(self.stop_training)
                self.history.append(self.logs)
                if checkpoint is not None:
                    self._save(checkpoint)
                if self.interrupted:  # Ctrl-C during validation or saving: stop here
                    raise TrainingInterrupted(f"interrupted after epoch {self.epoch}" + (
                        "; resume with --resume" if checkpoint is not None else ""))
        self._call("on_train_end")
        return self.history

    def _epoch_logs(self, val, t_epoch: float) -> dict[str, Any]:
        seen = self._seen
        if self.world > 1:  # all processes' batches; batch norm statistics of the main one
            total = torch.tensor(float(seen), device=self.device)
            dist.all_reduce_sum(self._loss_sum, self._correct_sum, total)
            seen = int(total.item())
            for buffer in self.model.buffers():
                torch.distributed.broadcast(buffer, src=0)
        loss = self._loss_sum.item() / max(seen, 1)
        acc = self._correct_sum.item() / max(seen, 1)
        logs: dict[str, Any] = {"epoch": self.epoch, "train_loss": loss, "train_acc": acc}
        if val is not None:
            v = self.evaluate(val)
            logs.update(val_loss=v["loss"], val_acc=v["acc"])
        logs["lr"] = self.optimizer.param_groups[0]["lr"]
        logs["seconds"] = time.perf_counter() - t_epoch
        logs["images_per_s"] = seen / max(self._train_seconds, 1e-9)
        return logs

    # -- Ctrl-C ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _catch_ctrl_c(self):
        """The first Ctrl-C stops after the current batch (and saves); a second one kills.

        Under torchrun, Ctrl-C ends every process at once (torchrun stops them all); the
        checkpoint of the last finished epoch is there to resume from.
        """
        if threading.current_thread() is not threading.main_thread() or self.world > 1:
            yield
            return

        def handler(signum, frame):
            if self.interrupted:
                raise KeyboardInterrupt
            self.interrupted = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self, partial: bool = False) -> dict[str, Any]:
        """Everything needed to continue: model, optimiser, callbacks, counters, RNG."""
        state: dict[str, Any] = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "callbacks": {key: cb.state_dict() for key, cb in self._keyed_callbacks() if cb.state_dict()},
            "epoch": self.epoch - 1 if partial else self.epoch,  # the last finished epoch
            "step": self.step,
            "epochs": self.epochs,
            "max_steps": self.max_steps,
            "history": self.history,
            "rng": rng_state(),
            "stopped": self.stop_training and not partial,  # finished: nothing to resume
            "stop_reason": self.stop_reason,
            "partial": None,
        }
        if partial:
            state["partial"] = {
                "batch": self.batch, "step": self.step, "generator": self.generator.get_state(),
                "loss_sum": self._loss_sum, "correct_sum": self._correct_sum,
                "seen": self._seen, "train_seconds": self._train_seconds,
            }
            state["step"] = self.step - self.batch
        return state

    def _keyed_callbacks(self) -> list[tuple[str, Callback]]:
        """('EarlyStopping', cb), ('LRSchedule', cb), ('Mine#2', cb)...: how states are saved.

        Callbacks without state (a progress bar) may differ between a run and its resume.
        """
        seen: dict[str, int] = {}
        out = []
        for cb in self.callbacks:
            name = type(cb).__name__
            seen[name] = seen.get(name, 0) + 1
            out.append((name if seen[name] == 1 else f"{name}#{seen[name]}", cb))
        return out

    def _save(self, path: str | Path, partial: bool = False) -> None:
        if self.is_main:
            save_checkpoint(path, self.state_dict(partial))

    def _restore(self, path: str | Path) -> dict[str, Any] | None:
        state = load_checkpoint(path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        saved = dict(state["callbacks"])
        for key, cb in self._keyed_callbacks():
            if key in saved:
                cb.load_state_dict(saved.pop(key))
            elif cb.state_dict():
                raise CnnlabError(f"{path}: has no state for the {key} callback; resume with the same callbacks")
        if saved:
            raise CnnlabError(f"{path}: was saved with a {next(iter(saved))} callback that is missing now; "
                              "resume with the same callbacks")
        self.epoch, self.step, self.history = state["epoch"], state["step"], state["history"]
        self.stop_training, self.stop_reason = state["stopped"], state["stop_reason"]
        self.epochs = state["epochs"]  # the plan continues as it was (TimeLimit may have changed it)
        self.max_steps = state["max_steps"]
        set_rng_state(state["rng"])
        if state["partial"]:
            state["partial"]["rng"] = state["rng"]
        return state["partial"]

    def _restore_partial(self, partial: dict[str, Any]) -> int:
        self.generator = torch.Generator()
        self.generator.set_state(partial["generator"].cpu())
        set_rng_state(partial["rng"])
        self._loss_sum = partial["loss_sum"].to(self.device)
        self._correct_sum = partial["correct_sum"].to(self.device)
        self._seen, self._train_seconds = partial["seen"], partial["train_seconds"]
        self._last_loss = torch.zeros((), device=self.device)
        self.batch, self.step = partial["batch"], partial["step"]
        return self.batch


class _Interrupt(Exception):
    """Raised inside the epoch when Ctrl-C asked to stop."""
