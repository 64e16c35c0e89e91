"""The training loop: small on purpose, extended through callbacks.

    trainer = Trainer(model, optimizer, callbacks=[EarlyStopping(patience=5)])
    history = trainer.fit(train_batches, val_batches, epochs=20)

Read it from the top: :meth:`Trainer.train_step` is one step, :meth:`Trainer.fit` the
epochs around it. One training step, in order::

    uint8 batch -> device -> float in [0, 1] -> augmentation (training only)
      -> normalisation -> channels_last (if asked) -> autocast (bf16/fp16 if asked)
      -> model -> loss -> (scaled) backward -> optimiser step

``train`` and ``val`` are iterables of ``(images, labels)`` batches: images uint8
(N, C, H, W), labels int64 (N,). A loader with ``set_epoch(epoch)`` gets it called before
each epoch, so its shuffling depends on (seed, epoch) only
(:class:`~cnnlab.train.tensor_loader.TensorLoader` makes such batches from tensors).

Each epoch logs Keras' names: ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, plus
``lr``, ``seconds`` and ``images_per_s``.

Reproducibility: every epoch re-seeds torch's generator (dropout) and the augmentation
generator from (seed, epoch, rank) (:func:`cnnlab.data.loader.epoch_seed`). With the
resumable checkpoint (:mod:`cnnlab.train.resume`), written after every epoch, a resumed run
therefore ends with exactly the weights of an uninterrupted one on the CPU. Metrics are
summed on the device and read once per epoch, so the GPU never waits for Python; files are
written by ``trainer.saver`` (:class:`~cnnlab.io.checkpoint.BackgroundSaver`) while the
next epoch trains, and ``fit`` waits for them before it returns.

Elsewhere, each named for what it does: Ctrl-C (:mod:`~cnnlab.train.interrupt`), the
checkpoint's contents (:mod:`~cnnlab.train.resume`), the sums over processes under torchrun
(:mod:`~cnnlab.train.distributed`), the losses (:mod:`~cnnlab.train.losses`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cnnlab.alloc import tune_allocator
from cnnlab.data.augment import Augmenter, resize
from cnnlab.data.loader import TRAINING, epoch_seed
from cnnlab.device import to_device
from cnnlab.errors import CnnlabError
from cnnlab.io.checkpoint import BackgroundSaver
from cnnlab.train import distributed as dist
from cnnlab.train.callbacks import Callback
from cnnlab.train.interrupt import Interrupt, TrainingInterrupted, catch_ctrl_c
from cnnlab.train.losses import default_loss, is_binary  # noqa: F401  (is_binary: part of the API)
from cnnlab.train.resume import restore, restore_partial, save, state_dict
from cnnlab.train.tensor_loader import TensorLoader  # noqa: F401  (importable from here, as before)

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def macro_f1(confusion: torch.Tensor) -> float:
    """Mean over classes of F1 = 2 TP / (predicted + true), from a (true, predicted) count matrix.

    As scikit-learn's ``f1_score(average="macro")``: over the classes that occur among the
    labels or the predictions (a class never seen nor predicted does not count).
    """
    c = confusion.double()
    tp, true, predicted = c.diagonal(), c.sum(1), c.sum(0)
    present = (true + predicted) > 0
    if not present.any():
        return float("nan")
    return float((2 * tp[present] / (true + predicted)[present]).mean())


def _grow(confusion: torch.Tensor, k: int, n: int) -> torch.Tensor:
    out = torch.zeros(n, n, dtype=confusion.dtype, device=confusion.device)
    out[:k, :k] = confusion.view(k, k)
    return out.view(-1)


class Trainer:
    """Trains a model with a small loop; callbacks add everything else.

    Args:
        model: any module returning logits (a cnnlab CNN or your own).
        optimizer: a torch optimiser over the model's parameters.
        loss_fn: ``loss_fn(logits, labels)``; default cross-entropy (see :func:`default_loss`).
        device: where to train; the model is moved there.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast; fp16 adds a gradient scaler).
        channels_last: NHWC memory layout, faster for convolutions on recent GPUs.
        compile: run the training forward pass through ``torch.compile`` (True: its default
            backend, inductor; or a backend, by name or as a callable). Fewer, fused kernels:
            for GPUs, where a small CNN's step is many short kernels; the first steps wait
            for the compiler.
        normalization: a :class:`cnnlab.data.normalize.Normalization` (default: x / 255).
        augment: ``augment(x01, generator) -> x01`` on float batches, training only.
        seed: with the epoch, seeds dropout, augmentation and the loader's shuffling.
        callbacks: :class:`Callback` objects, called in the order given.
        sync_bn: under torchrun, turn every BatchNorm into ``torch.nn.SyncBatchNorm`` (batch
            statistics over every process's batch; CUDA only). Without torchrun: nothing to do.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *,
                 loss_fn: nn.Module | None = None, device: str | torch.device = "cpu",
                 precision: str = "fp32", channels_last: bool = False, normalization=None,
                 augment=None, seed: int = 0, callbacks: Sequence[Callback] = (),
                 compile: bool | str | Callable = False, sync_bn: bool = False):
        if precision not in AMP_DTYPES:
            raise CnnlabError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
        self.device = torch.device(device)
        if self.device.type == "cuda":  # batches keep one shape: let cuDNN time its kernels once and keep the fastest
            torch.backends.cudnn.benchmark = True
        self.model = model.to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = optimizer
        self.loss_fn = (loss_fn or default_loss(model)).to(self.device)
        self.precision, self.amp_dtype = precision, AMP_DTYPES[precision]
        # fp16 needs its gradients scaled; elsewhere the scaler is off and passes them through.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        self.channels_last = channels_last
        self.augment = augment
        self.seed = seed
        self.callbacks = list(callbacks)
        self.saver = BackgroundSaver()  # checkpoint files, written while the next epoch trains
        if normalization is None:
            self.mean = self.std = None
        else:
            self.mean = torch.tensor(normalization.mean, device=self.device).view(1, -1, 1, 1)
            self.std = torch.tensor(normalization.std, device=self.device).view(1, -1, 1, 1)

        # Under torchrun: a DistributedDataParallel wrapper for the training forward pass
        # (it averages gradients over the processes); self.model stays the plain module.
        self.rank = dist.rank()
        self.world = torch.distributed.get_world_size() if dist.is_initialized() else 1
        self.is_main = self.rank == 0  # only the main process writes files and prints
        self._train_model = self.model
        self.synced_batch_norms = 0  # BatchNorms turned into SyncBatchNorm (sync_bn under torchrun)
        if self.world > 1 and sync_bn:
            dist.check_sync_bn(self.device)
            self.synced_batch_norms = dist.sync_batch_norm(self.model)
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._train_model = DistributedDataParallel(self.model, device_ids=ids)
        if compile:  # the wrapper, as PyTorch advises under DDP; state_dict() stays the plain model's
            backend = {} if compile is True else {"backend": compile}
            self._train_model = torch.compile(self._train_model, **backend)

        # What callbacks read (see cnnlab.train.callbacks).
        self.epoch = 0  # the current epoch, 1-based; the last finished one after fit()
        self.epochs = 0
        self.batch = 0  # batches done in the current epoch
        self.step = 0  # optimiser steps in the whole run
        self.steps_per_epoch = 0
        self.max_steps: int | None = None  # set (e.g. by TimeLimit) to end mid-epoch
        self.val_samples = 0  # images in the validation data (when it says)
        self.val_subset: Iterable | None = None  # validated each epoch instead of val, but the last
        # Progressive resizing (cnnlab.train.callbacks.ProgressiveResize): the (height, width)
        # training batches are brought to (None: as loaded; validation always is), and a step's
        # cost at progress p (0-1) relative to a step at the loaded size, for TimeLimit's plan.
        self.train_size: tuple[int, int] | None = None
        self.step_cost: Callable[[float], float] | None = None
        self.logs: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.stop_training = False
        self.stop_reason = ""
        self.restored_epoch: int | None = None  # set by EarlyStopping(restore_best_weights)
        self.interrupted = False
        self.checkpoint_every: int | None = None  # steps between mid-epoch checkpoints (fit's argument)
        self._checkpoint: Path | None = None
        self._reset_metrics()

    # -- one step ----------------------------------------------------------------------------
    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Forward, backward and one optimiser step; returns the loss (on the device)."""
        x = self.prepare(images, training=True)
        y = to_device(labels, self.device)
        with self.autocast():
            logits = self._train_model(x)
            loss = self.loss_fn(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # without fp16 the scaler passes the loss through
        self.scaler.step(self.optimizer)
        self.scaler.update()
        n = len(y)
        self._loss_sum += loss.detach() * n
        self._correct_sum += self._correct(logits.detach(), y)
        self._seen += n
        self._last_loss = loss.detach()
        return loss

    def prepare(self, images: torch.Tensor, training: bool) -> torch.Tensor:
        """uint8 (or [0, 1] float) images -> the normalised float batch the model sees."""
        x = to_device(images, self.device)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        size = self.train_size if training and self.train_size and tuple(self.train_size) != tuple(x.shape[-2:]) \
            else None  # progressive resizing: this step's images at another size
        if training and self.augment is not None:
            x = (self.augment(x, self.generator, size) if size and isinstance(self.augment, Augmenter)
                 else self.augment(x, self.generator))
        if size and tuple(x.shape[-2:]) != tuple(size):
            x = resize(x, size)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def autocast(self):
        """bf16/fp16 autocast, or (fp32) a context that does nothing."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    @staticmethod
    def _predicted(logits: torch.Tensor) -> torch.Tensor:
        return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)

    @classmethod
    def _correct(cls, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (cls._predicted(logits) == labels).sum()

    # -- the epochs ----------------------------------------------------------------------------
    def fit(self, train: Iterable, val: Iterable | None = None, *, epochs: int = 10,
            checkpoint: str | Path | None = None, resume: bool = False,
            checkpoint_every: int | None = None) -> list[dict[str, Any]]:
        """Train for ``epochs`` epochs (fewer if a callback stops it); returns the history.

        ``checkpoint``: path of the resumable checkpoint, rewritten after every epoch and on
        Ctrl-C, and with ``checkpoint_every`` also every that many steps inside an epoch
        (written on the saver's thread while training goes on). ``resume=True`` continues
        from it: same model, optimiser, callbacks, epoch, random state and plan (``epochs``
        is then the saved one); an epoch cut short continues from its next batch.
        """
        tune_allocator()  # glibc: reuse freed blocks between steps (cnnlab/alloc.py)
        self.epochs = epochs
        self.steps_per_epoch = len(train)
        self.val_samples = getattr(val, "num_samples", 0) if val is not None else 0
        if self.steps_per_epoch == 0:
            raise CnnlabError("the training data gives no batches (is the training split empty?)")
        self.stop_training = False
        self.checkpoint_every = checkpoint_every
        self._checkpoint = Path(checkpoint) if checkpoint is not None else None
        partial = restore(self, checkpoint) if resume else None
        self._call("on_train_begin")
        try:
            self._fit_epochs(train, val, checkpoint, resume, partial)
        finally:
            self.saver.wait()  # every checkpoint file is on disk before fit returns (or raises)
        self._call("on_train_end")
        return self.history

    def _fit_epochs(self, train, val, checkpoint, resume: bool, partial) -> None:
        if checkpoint is not None and not resume:
            self._save(checkpoint)  # epoch 0: a run stopped during epoch 1 resumes from here
        with catch_ctrl_c(self):
            while self.epoch < self.epochs and not self.stop_training and not self._steps_done():
                self.epoch += 1
                if hasattr(train, "set_epoch"):
                    train.set_epoch(self.epoch)
                if hasattr(self.augment, "set_epoch"):  # alternate_flip mirrors by epoch
                    self.augment.set_epoch(self.epoch)
                skip = 0
                if partial is not None:  # continue the epoch that Ctrl-C cut short
                    skip = restore_partial(self, partial)
                    partial = None
                else:
                    self.begin_epoch(self.epoch)
                t_epoch = time.perf_counter() - self._train_seconds
                self._call("on_epoch_begin")
                try:
                    self._run_epoch(train, skip)
                except Interrupt:
                    if checkpoint is not None:
                        self._save(checkpoint, partial=True)
                    at = (f"at batch {self.batch + 1} of {self.steps_per_epoch}" if self.batch < self.steps_per_epoch
                          else "after the epoch's last batch")  # a 1-batch epoch said "at batch 2"
                    where = f"; resume with --resume (it continues {at})" if checkpoint is not None else ""
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

    def begin_epoch(self, epoch: int) -> None:
        """Seed the epoch's random streams and reset its running metrics (fit does this)."""
        s = epoch_seed(self.seed, epoch, self.rank, TRAINING)  # other dropout on each process
        torch.manual_seed(s)  # dropout (and CUDA's generators too)
        # Augmentation draws a few numbers per image: on the CPU, so a GPU never waits for
        # them, and the same augmentations on every device.
        self.generator = torch.Generator().manual_seed(s)
        self._reset_metrics()

    def _reset_metrics(self) -> None:
        self._loss_sum = torch.zeros((), device=self.device)
        self._correct_sum = torch.zeros((), dtype=torch.long, device=self.device)
        self._seen = 0
        self._train_seconds = 0.0
        self._last_loss = torch.zeros((), device=self.device)
        self.batch = 0

    def _run_epoch(self, train, skip: int = 0) -> None:
        """Train one epoch; ``skip`` batches were done before a mid-epoch interruption."""
        self.model.train()
        if skip and hasattr(train, "iter_from"):  # cnnlab's loaders skip without reading the batches
            batches = train.iter_from(skip)
        else:
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
                raise Interrupt
            if self._steps_done():  # the planned steps end inside this epoch
                break
            if self._step_checkpoint_due():
                elapsed = time.perf_counter() - t0
                self._train_seconds += elapsed  # as the resumed epoch will count it
                self._save(self._checkpoint, partial=True, wait=False)
                t0 = time.perf_counter()
        self._train_seconds += time.perf_counter() - t0

    def _epoch_logs(self, val, t_epoch: float) -> dict[str, Any]:
        """The epoch's metrics, in Keras' names (summed over all processes under torchrun)."""
        seen = dist.sum_metrics(self._seen, self._loss_sum, self._correct_sum)
        dist.sync_buffers(self.model)  # batch-norm statistics of the main process
        logs: dict[str, Any] = {"epoch": self.epoch, "loss": self._loss_sum.item() / max(seen, 1),
                                "accuracy": self._correct_sum.item() / max(seen, 1)}
        if val is not None:
            last = self.epoch >= self.epochs or self._steps_done()
            v = self.evaluate(val if last or self.val_subset is None else self.val_subset)
            logs.update(val_loss=v["loss"], val_accuracy=v["accuracy"], val_macro_f1=v["macro_f1"])
        logs["lr"] = self.optimizer.param_groups[0]["lr"]
        logs["seconds"] = time.perf_counter() - t_epoch
        logs["images_per_s"] = seen / max(self._train_seconds, 1e-9)
        return logs

    @torch.inference_mode()
    def evaluate(self, data: Iterable) -> dict[str, float]:
        """Mean ``loss`` and ``accuracy`` over ``data`` with the model in eval mode."""
        was_training = self.model.training
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        k = max(getattr(self.model, "num_outputs", 0) or 0, 2)  # classes (2 for one sigmoid output)
        confusion = torch.zeros(k * k, dtype=torch.long, device=self.device)  # true * k + predicted
        seen = 0
        try:
            for images, labels in data:
                x = self.prepare(images, training=False)
                y = to_device(labels, self.device)
                with self.autocast():
                    logits = self.model(x)
                    loss = self.loss_fn(logits.float(), y)
                loss_sum += loss * len(y)
                pred = self._predicted(logits)
                correct += (pred == y).sum()
                if logits.shape[1] > k:  # a model without num_outputs: grow to its classes
                    confusion, k = _grow(confusion, k, logits.shape[1]), logits.shape[1]
                # index_add_, not bincount: on a GPU bincount reads its maximum back first
                confusion.index_add_(0, y * k + pred, torch.ones_like(y))
                seen += len(y)
        finally:
            self.model.train(was_training)
        seen = dist.sum_metrics(seen, loss_sum, correct, confusion)  # every process evaluated its shard
        if seen == 0:
            return {"loss": float("nan"), "accuracy": float("nan"), "macro_f1": float("nan")}
        return {"loss": loss_sum.item() / seen, "accuracy": correct.item() / seen,
                "macro_f1": macro_f1(confusion.view(k, k))}

    def release(self) -> None:
        """Drop the DistributedDataParallel wrapper, which holds the process group.

        torchrun's group must be gone before the interpreter exits: a gloo group still alive
        then (kept by the wrapper) can abort the process at exit ("terminate called without
        an active exception"). The plain model stays usable.
        """
        self._train_model = self.model

    def _call(self, hook: str) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self)

    def _steps_done(self) -> bool:
        return self.max_steps is not None and self.step >= self.max_steps

    def _step_checkpoint_due(self) -> bool:
        """A mid-epoch checkpoint now? Every ``checkpoint_every`` steps, but not at an epoch's
        last batch (the epoch's own checkpoint follows at once)."""
        return (self.checkpoint_every is not None and self._checkpoint is not None
                and self.step % self.checkpoint_every == 0 and self.batch < self.steps_per_epoch)

    def _save(self, path: str | Path, partial: bool = False, wait: bool | None = None) -> None:
        save(self, path, partial, wait)

    def state_dict(self, partial: bool = False) -> dict[str, Any]:
        """Everything needed to continue (see :mod:`cnnlab.train.resume`)."""
        return state_dict(self, partial)

    # -- what callbacks read -------------------------------------------------------------------
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

    def last_loss(self) -> float:
        return float(self._last_loss)

    def broadcast(self, value: Any, what: str = "while following rank 0") -> Any:
        """The main process's value on every process (itself without torchrun)."""
        return dist.broadcast(value, what) if self.world > 1 else value

    def any_rank(self, flag: bool) -> bool:
        """True if ``flag`` is true on any process (itself without torchrun)."""
        return dist.any_rank(flag, self.device) if self.world > 1 else flag
