"""Make a real trained run directory for tests, independently of `cnnlab train`.

Trains a small model for a few epochs with a plain PyTorch loop on images from
tests/imagegen.py and writes the files a run holds (see cnnlab/run.py), so evaluation,
prediction, visualisation and the explainer can be tested on a genuine trained model.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
import yaml

from cnnlab.data.decode import load_image
from cnnlab.data.normalize import Normalization
from cnnlab.io.weights import save_weights
from cnnlab.model.build import build_model
from imagegen import make_split_folder

SMALL_SPEC = {
    "name": "small",
    "input": [32, 32, 3],
    "layers": [
        {"Conv2D": {"filters": 8, "kernel_size": 3, "padding": "same", "activation": "relu"}},
        {"MaxPooling2D": {"pool_size": 2}},
        {"Conv2D": {"filters": 8, "kernel_size": 3, "activation": "relu"}},
        {"MaxPooling2D": {"pool_size": 2}},
        {"Flatten": {}},
        {"Dense": {"units": "classes", "activation": "softmax"}},
    ],
}


def make_trained_run(
    tmp_path: Path,
    classes: tuple[str, ...] = ("hbar", "vbar"),
    spec: dict | None = None,
    epochs: int = 15,
    seed: int = 0,
) -> Path:
    """Return tmp_path/'runs'/'small': a run trained on a split folder under tmp_path/'data'."""
    torch.manual_seed(seed)
    data = make_split_folder(tmp_path / "data", classes, {"train": 24, "val": 8, "test": 8}, seed=seed)
    spec = spec or SMALL_SPEC
    model = build_model(spec, classes=len(classes))
    h, w, c = model.input_shape
    norm = Normalization.rescale(c)
    split = {}
    for name in ("train", "val", "test"):
        split[name] = [[str(p), i] for i, cls in enumerate(classes)
                       for p in sorted((data / name / cls).iterdir())]

    def tensors(items):
        x = np.stack([load_image(p, (h, w), c) for p, _ in items])
        return norm.apply(torch.from_numpy(x).permute(0, 3, 1, 2)), torch.tensor([y for _, y in items])

    xt, yt = tensors(split["train"])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 16):
            idx = perm[i:i + 16]
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    xv, yv = tensors(split["val"])
    with torch.no_grad():
        val_acc = float((model(xv).argmax(1) == yv).float().mean())

    run = tmp_path / "runs" / "small"
    (run / "weights").mkdir(parents=True)
    meta = {
        "spec": model.spec.to_dict(),
        "classes": list(classes),
        "input": [h, w, c],
        "resize": "stretch",
        "normalization": norm.to_dict(),
        "epoch": epochs,
        "metric": {"val_accuracy": val_acc},
    }
    for which in ("best", "last"):
        save_weights(run / "weights" / f"{which}.safetensors", model, meta)
    (run / "model.yaml").write_text(model.spec.to_yaml())
    (run / "classes.json").write_text(json.dumps(list(classes)))
    (run / "split.json").write_text(json.dumps(split))
    (run / "config.yaml").write_text(yaml.safe_dump({
        "data": str(data), "model": "small", "epochs": epochs, "img_size": [h, w], "seed": seed,
    }))
    with (run / "history.csv").open("w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "images_per_s"])
        for e in range(1, epochs + 1):
            wr.writerow([e, 1.0 / e, min(1.0, 0.5 + e / (2 * epochs)), 1.1 / e, val_acc, 3e-3, 0.1, 240.0])
    return run
