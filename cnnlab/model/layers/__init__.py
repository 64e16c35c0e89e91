"""The layers a model spec can use (see :mod:`cnnlab.model.layers.base`), importable from here."""

from cnnlab.model.layers.base import *  # noqa: F401,F403
from cnnlab.model.layers.base import _number_or_list  # noqa: F401  (cnnlab.io.keras reads Keras' lists with it)
