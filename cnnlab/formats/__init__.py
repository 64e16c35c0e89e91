"""Model files, whatever wrote them: cnnlab's ``.safetensors`` weights files, Keras'
``.keras``/``.h5`` (read and written without Keras), and :func:`open_model`, which opens any
of them (:mod:`cnnlab.formats.open`).

This module itself stays light (no torch), so ``cnnlab --help`` can tell a model file
from a run folder by its suffix.
"""

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
MODEL_SUFFIXES = (".safetensors",) + KERAS_SUFFIXES


def pixel_kind(channels: int) -> str:
    """"grayscale" for a 1-channel model, else "RGB": what an exported file's pixels are."""
    return "grayscale" if channels == 1 else "RGB"
