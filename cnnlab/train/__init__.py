"""Training: the config, a small loop, callbacks, resumable checkpoints, the whole run.

==================  ===================================================================
``api``             ``train(DATA, **options)`` -> a finished run folder (``cnnlab train``);
                    ``lr_find(DATA, **options)`` -> the range test's result (``cnnlab lr-find``)
``config``          TrainConfig: every option, from YAML, flags or keyword arguments
``setup``           config -> data loaders, model, device, precision (the automatic choices),
                    and from them the optimiser, the loss and the Trainer (``setup.trainer()``)
``optimizers``      the registry of ``--optimizer`` names (add yours there)
``schedules``       the registry of ``--scheduler`` names and their learning-rate factors
``losses``          the registry of ``--loss`` names (each a :class:`cnnlab.registry.Registry`)
``loop.Trainer``    the loop itself: ``Trainer(model, optimizer, callbacks=...).fit(train, val)``
``callbacks``       EarlyStopping, ModelCheckpoint, CSVLogger, LRSchedule, ReduceLROnPlateau,
                    TerminateOnNaN, TimeLimit, ProgressBar, TensorBoard; write your own
``resume``          what the resumable checkpoint holds and how a Trainer gets it back
``checkpoint``      that state in safetensors + JSON (no pickle), for --resume
``interrupt``       Ctrl-C: stop after the current batch, save, TrainingInterrupted
``distributed``     torchrun: process group, sharded loaders, sums over processes
``tensor_loader``   TensorLoader: batches from tensors in memory (Keras' ``fit(x, y)``)
``lr_finder``       the learning-rate range test itself, its analysis and plot
``demo``            scikit-learn's digits as an image folder, trained end to end
==================  ===================================================================

The run folder's life (new name, files before epoch 1, resume checks) is in :mod:`cnnlab.train.runfolder`.
"""

import importlib
import sys
import types

# The names below are imported on first use (PEP 562), so that `import cnnlab.train.config`
# -- which `cnnlab --help` does -- does not pay for importing torch.
_LAZY = {name: "cnnlab.train.callbacks" for name in (
    "Callback", "CSVLogger", "EarlyStopping", "LRSchedule", "ModelCheckpoint", "ProgressBar",
    "ReduceLROnPlateau", "TensorBoard", "TerminateOnNaN", "TimeLimit", "TrainingDiverged")}
_LAZY.update({"Trainer": "cnnlab.train.loop", "TensorLoader": "cnnlab.train.tensor_loader",
              "TrainingInterrupted": "cnnlab.train.interrupt", "lr_find": "cnnlab.train.api"})


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cnnlab.train' has no attribute {name!r}")

__all__ = ["train", "lr_find", "Trainer", "TensorLoader", "Callback", "EarlyStopping", "ModelCheckpoint", "CSVLogger",
           "LRSchedule", "ReduceLROnPlateau", "TerminateOnNaN", "TimeLimit", "ProgressBar", "TensorBoard",
           "TrainingDiverged", "TrainingInterrupted"]


def train(data=None, **options):
    """``cnnlab.train(DATA, model="vgg_bn", epochs=20, ...)``: see :func:`cnnlab.train.api.train`."""
    from cnnlab.train.api import train as _train  # torch: see _LAZY above

    return _train(data, **options)


class _CallableModule(types.ModuleType):
    """Lets ``cnnlab.train`` be both this package and the function: ``cnnlab.train("DATA")``."""

    def __call__(self, data=None, **options):
        return train(data, **options)


sys.modules[__name__].__class__ = _CallableModule
