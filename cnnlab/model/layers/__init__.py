"""The layers a model spec can use, named and parametrised as in Keras.

Every layer is a small dataclass that knows its output shape, its weights (with the formula
that counts them), its multiply-accumulates and the ``torch.nn.Module`` that computes it;
:mod:`~cnnlab.model.layers.base` says how. Shapes, padding and parameter counts follow Keras
exactly. One file per kind, as Keras' ``layers/`` folders:

==================  ======================================================================
``base``            Layer, the LAYERS registry and @register, argument checkers, shapes
``conv``            Conv2D, DepthwiseConv2D, SeparableConv2D; kernel initialisers
``pooling``         MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D, BlurPool2D
``reshape``         ZeroPadding2D, Flatten
``normalization``   BatchNormalization; Rescaling and Normalization (Keras' preprocessing)
``regularization``  Dropout, SpatialDropout2D
``dense``           Dense
``activation``      Activation, ReLU, LeakyReLU, Softmax
``residual``        ResidualBlock (ResNet's basic block), Residual (two branches added)
``whitening``       PatchWhitening and data_init (the fast CIFAR recipe's stem)
==================  ======================================================================

Every name is importable from here: ``from cnnlab.model import layers as L; L.Conv2D``.
"""

from cnnlab.model.layers.base import (ACTIVATIONS, LAYERS, Layer, ParamGroup, Shape, arg, conv_out, make_activation,
                                      register, same_pads)
from cnnlab.model.layers.base import _number_or_list  # noqa: F401  (cnnlab.formats.keras reads Keras' values with it)
from cnnlab.model.layers.conv import (INITIALIZERS, Conv2D, DepthwiseConv2D, KerasConv, SeparableConv2D,
                                      initialize_kernel)
from cnnlab.model.layers.pooling import (AveragePooling2D, BlurPool2D, BlurPoolModule, GlobalAveragePooling2D,
                                         GlobalMaxPooling2D, GlobalPool, KerasPool, MaxPooling2D, binomial_filter)
from cnnlab.model.layers.reshape import Flatten, FlattenModule, ZeroPad, ZeroPadding2D
from cnnlab.model.layers.normalization import Affine, BatchNormalization, Normalization, Rescaling
from cnnlab.model.layers.regularization import Dropout, SpatialDropout2D
from cnnlab.model.layers.dense import Dense, Dense2d
from cnnlab.model.layers.activation import (Activation, ActivationModule, KerasReLU, LeakyReLU, ReLU, Softmax,
                                            SoftmaxModule)
from cnnlab.model.layers.residual import Residual, ResidualBlock, ResidualModule
from cnnlab.model.layers.whitening import PatchWhitening, WhiteningConv, data_init

__all__ = [
    "ACTIVATIONS", "INITIALIZERS", "LAYERS", "Layer", "ParamGroup", "Shape", "arg", "conv_out", "initialize_kernel",
    "make_activation", "register", "same_pads",
    "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
    "GlobalMaxPooling2D", "BlurPool2D", "binomial_filter", "ZeroPadding2D", "Flatten", "BatchNormalization", "Rescaling", "Normalization", "Dropout",
    "SpatialDropout2D", "Dense", "Activation", "ReLU", "LeakyReLU", "Softmax", "ResidualBlock", "Residual",
    "PatchWhitening", "data_init",
    # the torch modules the layers build (visualisations and the explainer look for them)
    "KerasConv", "KerasPool", "BlurPoolModule", "GlobalPool", "ZeroPad", "FlattenModule", "Affine", "Dense2d", "ActivationModule",
    "KerasReLU", "SoftmaxModule", "ResidualModule", "WhiteningConv",
]
