"""Real Keras 3 models (torch backend, never TensorFlow) for the Keras-file tests.

Every layer type cnnlab reads appears in one of them; weights are random (biases too, not
Keras' zeros) and BatchNormalization / Normalization get non-trivial statistics, so a
wrong kernel layout, flatten order, epsilon or padding shows up in the predictions.
"""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # before the first `import keras`

import numpy as np  # noqa: E402


def keras():
    import keras

    assert keras.backend.backend() == "torch", "the tests need Keras on its torch backend"
    return keras


def randomize(model, seed: int = 0, std: float = 0.4):
    """Random weights everywhere (Normalization keeps what adapt() measured); variances positive."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "Normalization":
            continue  # keeps the statistics adapt() measured
        for v in layer.weights:
            name = v.path.rsplit("/", 1)[-1]
            shape = tuple(v.shape)
            if name == "count":
                continue
            if "variance" in name:
                v.assign(rng.uniform(0.5, 2.0, shape).astype("float32"))
            elif name == "gamma":
                v.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
            else:  # biases smaller, so that one class does not win every image
                scale = std / 4 if name == "bias" else std
                v.assign((rng.normal(0, scale, shape)).astype("float32"))
    return model


def every_layer_sequential():
    """Rescaling, asymmetric ZeroPadding2D, strided 'same' convs, BN, depthwise, separable, pools,
    activations and activation layers, Flatten -> BN -> Dense (Keras' HWC flatten order)."""
    k = keras()
    L = k.layers
    m = k.Sequential([
        k.Input((11, 13, 3)),
        L.Rescaling(1 / 127.5, offset=-1.0),
        L.ZeroPadding2D(((0, 1), (1, 0))),
        L.Conv2D(4, 3, strides=2, padding="same", activation="relu"),
        L.BatchNormalization(epsilon=0.01),
        L.DepthwiseConv2D(3, depth_multiplier=2, padding="same"),
        L.LeakyReLU(negative_slope=0.1),
        L.SeparableConv2D(6, 3, padding="same", activation="elu"),
        L.AveragePooling2D(2, padding="same"),
        L.SpatialDropout2D(0.2),
        L.Activation("tanh"),
        L.MaxPooling2D(2, strides=1, padding="same"),
        L.ReLU(max_value=0.8, negative_slope=0.05),
        L.Flatten(),
        L.BatchNormalization(scale=False),
        L.Dropout(0.3),
        L.Dense(7, activation="gelu"),
        L.Dense(3, activation="softmax"),
    ], name="every_layer")
    return randomize(m, 1)


def residual_functional():
    """Normalization (adapted), an identity residual block and a projection one (Add), ReLU layers."""
    k = keras()
    L = k.layers
    norm = L.Normalization()
    norm.adapt(np.random.default_rng(2).uniform(0, 255, (16, 10, 10, 3)).astype("float32"))
    inp = k.Input((10, 10, 3))
    x = norm(inp)
    x = L.Conv2D(4, 3, padding="same")(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    y = L.Conv2D(4, 3, padding="same")(x)
    y = L.BatchNormalization()(y)
    y = L.Activation("relu")(y)
    y = L.Conv2D(4, 3, padding="same")(y)
    x = L.ReLU()(L.Add()([x, y]))
    y = L.Conv2D(6, 3, strides=2, padding="same", activation="relu")(x)
    y = L.Conv2D(6, 3, padding="same")(y)
    s = L.Conv2D(6, 1, strides=2)(x)
    x = L.Add()([y, s])
    x = L.GlobalMaxPooling2D()(x)
    x = L.Dense(4)(x)
    out = L.Softmax()(x)
    m = k.Model(inp, out, name="resnetish")
    randomize(m, 3, std=0.25)
    norm_layer = m.layers[1]
    return m, norm_layer


def lecture_model(size: int = 32, classes: int = 2):
    """The lecture's CNN: no Rescaling inside (ImageDataGenerator(rescale=1./255) did it), softmax out."""
    k = keras()
    L = k.layers
    m = k.Sequential([
        k.Input((size, size, 3)),
        L.Conv2D(8, 3, activation="relu"),
        L.MaxPooling2D(),
        L.Conv2D(8, 3, activation="relu"),
        L.MaxPooling2D(),
        L.Flatten(),
        L.Dense(16, activation="relu"),
        L.Dense(classes, activation="softmax"),
    ], name="lecture")
    return randomize(m, 4)


def pixels(shape, n: int = 5, seed: int = 0) -> np.ndarray:
    """n random uint8 images (H, W, C), each with its own brightness and colour cast."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 1, (n, *shape))
    gain = rng.uniform(0.1, 1.0, (n, 1, 1, shape[-1]))
    return (255 * noise * gain).astype(np.uint8)
