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

# The names below are imported on first use (PEP 562), so that `import cnnlab.train.config`
# -- which `cnnlab --help` does -- does not pay for importing torch.
_LAZY = {name: "cnnlab.train.callbacks" for name in (
    "Callback", "CSVLogger", "EarlyStopping", "LRSchedule", "ModelCheckpoint", "ProgressBar",
    "ReduceLROnPlateau", "TensorBoard", "TerminateOnNaN", "TimeLimit", "TrainingDiverged")}
_LAZY.update({name: "cnnlab.train.loop" for name in ("TensorLoader", "Trainer", "TrainingInterrupted")})


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cnnlab.train' has no attribute {name!r}")

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
