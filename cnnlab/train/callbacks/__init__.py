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

One file per callback, as Keras' ``callbacks/``; every name is importable from here:

==========================  ========================================================================
``base``                    Callback
``monitor``                 MonitorCallback: the best value of one metric, for the three below
``early_stopping``          EarlyStopping
``model_checkpoint``        ModelCheckpoint
``reduce_lr_on_plateau``    ReduceLROnPlateau
``lr_schedule``             LRSchedule: each batch's lr, a factor from :mod:`cnnlab.train.schedules`
``terminate_on_nan``        TerminateOnNaN, TrainingDiverged
``time_limit``              TimeLimit
``progressive_resize``      ProgressiveResize: small images early, the full size (or FixRes' less) at the end
``csv_logger``              CSVLogger
``tensorboard``             TensorBoard
``progress``                ProgressBar, format_logs
==========================  ========================================================================
"""

from cnnlab.train.callbacks.base import Callback
from cnnlab.train.callbacks.csv_logger import HISTORY_COLUMNS, CSVLogger
from cnnlab.train.callbacks.early_stopping import EarlyStopping
from cnnlab.train.callbacks.lr_schedule import LRSchedule, schedule_factor
from cnnlab.train.callbacks.model_checkpoint import ModelCheckpoint
from cnnlab.train.callbacks.monitor import Best, MonitorCallback, monitor_mode
from cnnlab.train.callbacks.progress import ProgressBar, format_logs
from cnnlab.train.callbacks.progressive_resize import ProgressiveResize
from cnnlab.train.callbacks.reduce_lr_on_plateau import ReduceLROnPlateau
from cnnlab.train.callbacks.tensorboard import TensorBoard
from cnnlab.train.callbacks.terminate_on_nan import TerminateOnNaN, TrainingDiverged
from cnnlab.train.callbacks.time_limit import AfterTraining, TimeLimit, steps_that_fit

__all__ = [
    "Callback", "MonitorCallback", "Best", "monitor_mode", "EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau",
    "LRSchedule", "schedule_factor", "TerminateOnNaN", "TrainingDiverged", "TimeLimit", "AfterTraining", "CSVLogger", "HISTORY_COLUMNS",
    "TensorBoard", "ProgressBar", "format_logs", "ProgressiveResize", "steps_that_fit",
]
