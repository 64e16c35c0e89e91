"""Keras model files, read and written without Keras: ``.keras`` (Keras 3) and legacy ``.h5``.

Reading uses JSON and h5py only: the architecture comes from the file's JSON config and
is mapped onto cnnlab's own layers (which already use Keras' names, shapes and 'same'
padding); the weights are plain HDF5 arrays. Nothing in the file is ever executed, so a
``Lambda`` layer (Python code) or a custom class is refused with a sentence naming it.

The two layouts (checked against files Keras 3 itself writes, see tests/test_keras_io.py):

* ``.keras`` -- a zip of ``metadata.json``, ``config.json`` (``{"class_name": "Sequential"
  | "Functional", "config": {"layers": [...]}}``) and ``model.weights.h5``, where layer
  ``i`` of the model keeps its variables at ``layers/<path>/vars/0, 1, ...`` (the group's
  ``name`` attribute is the layer's name; ``<path>`` is Keras' own per-class counter).
* legacy ``.h5`` -- one HDF5 file: the config as JSON in the ``model_config`` attribute
  and, under ``model_weights/<layer name>``, the arrays listed in order by the group's
  ``weight_names`` attribute. TF-Keras 2 (the lecture's ``ModelCheckpoint("model.h5")``)
  and Keras 3 write the same layout, with small config differences handled below.

Keras keeps tensors channels-last; cnnlab computes channels-first. Kernels are transposed
((kh, kw, in, out) -> (out, in, kh, kw)) and a Dense after Flatten has its rows reordered
from Keras' (h, w, c) flatten order to torch's (c, h, w), so the numbers are Keras' own.
"""


from cnnlab.formats.keras.architecture import spec_from_keras
from cnnlab.formats.keras.layout import (
           flat_perms,
           flatten_order,
           keras_to_torch,
           load_keras_weights,
           torch_to_keras,
)
from cnnlab.formats.keras.load import class_names, load_keras, preprocessing_inside
from cnnlab.formats.keras.read import (
           SUFFIXES,
           KerasFile,
           is_keras_file,
           keras_snake,
           read_keras_file,
)

__all__ = ["SUFFIXES", "KerasFile", "is_keras_file", "read_keras_file", "keras_snake", "spec_from_keras",
           "flatten_order", "flat_perms", "keras_to_torch", "torch_to_keras", "load_keras_weights",
           "class_names", "load_keras", "preprocessing_inside", "keras_config", "write_keras"]
from cnnlab.formats.keras.write import keras_config, write_keras
