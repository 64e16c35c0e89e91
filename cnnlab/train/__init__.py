"""Training: the config, a small loop, callbacks, resumable checkpoints, the whole run.

==================  ===================================================================
``api.train``       DATA + options -> a finished run folder (what ``cnnlab train`` does)
``config``          TrainConfig: every option, from YAML, flags or keyword arguments
``setup``           config -> data loaders, model, device, precision (the automatic choices)
``loop.Trainer``    the loop itself: ``Trainer(model, optimizer, callbacks=...).fit(train, val)``
``callbacks``       EarlyStopping, ModelCheckpoint, CSVLogger, LRSchedule, ReduceLROnPlateau,
                    TerminateOnNaN, TimeLimit, ProgressBar, TensorBoard; write your own
``checkpoint``      the full training state in safetensors + JSON (no pickle), for --resume
``lr_find``         the learning-rate range test (``cnnlab lr-find``)
``demo``            scikit-learn's digits as an image folder, trained end to end
==================  ===================================================================
"""

import sys
import types

from cnnlab.train.callbacks import (  # noqa: F401
    Callback, CSVLogger, EarlyStopping, LRSchedule, ModelCheckpoint, ProgressBar, ReduceLROnPlateau,
    TensorBoard, TerminateOnNaN, TimeLimit, TrainingDiverged)
from cnnlab.train.loop import TensorLoader, Trainer, TrainingInterrupted  # noqa: F401

__all__ = ["train", "Trainer", "TensorLoader", "Callback", "EarlyStopping", "ModelCheckpoint", "CSVLogger",
           "LRSchedule", "ReduceLROnPlateau", "TerminateOnNaN", "TimeLimit", "ProgressBar", "TensorBoard",
           "TrainingDiverged", "TrainingInterrupted"]


def train(data=None, **options):
    """``cnnlab.train(DATA, model="vgg_bn", epochs=20, ...)``: see :func:`cnnlab.train.api.train`."""
    from cnnlab.train.api import train as _train

    return _train(data, **options)


class _CallableModule(types.ModuleType):
    """Lets ``cnnlab.train`` be both this package and the function: ``cnnlab.train("DATA")``."""

    def __call__(self, data=None, **options):
        return train(data, **options)


sys.modules[__name__].__class__ = _CallableModule
