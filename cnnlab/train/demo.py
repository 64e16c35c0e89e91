"""``cnnlab demo``: the whole pipeline on a real dataset that ships with scikit-learn.

scikit-learn's handwritten digits (``sklearn.datasets.load_digits``: 1,797 scans of
digits 0-9 by 43 people, 8x8 pixels in 17 grey levels, from the UCI repository) are
written out as an ordinary image folder -- ``digits/{train,test}/<digit>/*.png``, enlarged
to 32x32 -- so the demo goes through exactly what a user's own photos go through: folder
discovery, decoding, a held-out validation split, augmentation, training with early
stopping and checkpoints, evaluation on the test split, and the report. Nothing is
downloaded. 10-25 seconds on two CPU cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cnnlab.errors import CnnlabError
from cnnlab.train.api import train

DIGITS_SIZE = 32
TEST_FRACTION = 0.2

# A small VGG-style CNN: three conv blocks with batch norm, max pooling, dropout. Batch norm
# momentum 0.9 rather than Keras' 0.99: with ~40 steps per epoch the slower moving averages
# would still be far from the real statistics after several epochs, and validation (which
# uses them) would look like guessing while training accuracy is already high.
DEMO_MODEL = {
    "name": "digits_cnn",
    "description": "Three conv blocks (16, 32, 64 filters) with batch norm, pooling and dropout.",
    "input": [DIGITS_SIZE, DIGITS_SIZE, 1],
    "layers": [
        {"Conv2D": {"filters": 16, "kernel_size": 3, "padding": "same", "use_bias": False}},
        {"BatchNormalization": {"momentum": 0.9}},
        {"Activation": {"activation": "relu"}},
        {"MaxPooling2D": {"pool_size": 2}},
        {"Conv2D": {"filters": 32, "kernel_size": 3, "padding": "same", "use_bias": False}},
        {"BatchNormalization": {"momentum": 0.9}},
        {"Activation": {"activation": "relu"}},
        {"MaxPooling2D": {"pool_size": 2}},
        {"Conv2D": {"filters": 64, "kernel_size": 3, "padding": "same", "use_bias": False}},
        {"BatchNormalization": {"momentum": 0.9}},
        {"Activation": {"activation": "relu"}},
        {"GlobalAveragePooling2D": {}},
        {"Dropout": {"rate": 0.2}},
        {"Dense": {"units": "classes", "activation": "softmax"}},
    ],
}
# Digits must not be mirrored: small rotations, shifts and zooms only.
DEMO_AUGMENT = "rotation=10,shift=0.1,zoom=0.1"


def write_digits(root: str | Path, size: int = DIGITS_SIZE, seed: int = 0) -> Path:
    """Write root/{train,test}/<digit>/<digit>_<i>.png (80/20, stratified); returns root.

    Skips the work when root already holds all 1,797 images.
    """
    from sklearn.datasets import load_digits  # scikit-learn: heavy, only to write the demo set
    from sklearn.model_selection import train_test_split

    root = Path(root)
    digits = load_digits()
    if sum(1 for _ in root.glob("*/*/*.png")) == len(digits.images):
        return root
    index = np.arange(len(digits.images))
    train, test = train_test_split(index, test_size=TEST_FRACTION, stratify=digits.target, random_state=seed)
    try:
        for split, rows in (("train", train), ("test", test)):
            for i in sorted(rows):
                label = int(digits.target[i])
                folder = root / split / str(label)
                folder.mkdir(parents=True, exist_ok=True)
                pixels = (digits.images[i] * (255.0 / 16.0)).round().astype(np.uint8)  # 0..16 -> 0..255
                image = Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.BICUBIC)
                image.save(folder / f"{label}_{i:04d}.png")
    except OSError as e:  # a read-only or full --out: one sentence (a partial set is rewritten next time)
        raise CnnlabError(f"cannot write the demo's images in {root}: {e.strerror or e}; "
                          "choose another --out") from None
    return root


def demo(out: str | Path = "runs", data: str | Path | None = None, verbose: bool = True, **options):
    """Write the digits (once), train the demo CNN on them, evaluate; returns the Run."""
    data = Path(data) if data is not None else Path(out) / "datasets" / "digits"
    if verbose:
        print(f"digits  scikit-learn's handwritten digits as PNG files in {data}/{{train,test}}/0..9", flush=True)
    write_digits(data)
    settings = dict(model=DEMO_MODEL, augment=DEMO_AUGMENT, epochs=15, batch_size=32, lr=3e-3, patience=5,
                    name=None, out=str(out))
    settings.update({k: v for k, v in options.items() if v is not None})
    return train(data, verbose=verbose, run_base="demo", **settings)
