"""`predict`: classify new images with a trained run's model.

Paths can be image files, folders (searched recursively for image files; hidden files
are skipped) or glob patterns (``photos/*.jpg``, ``photos/**/*.png``). Every file gets one
row::

    {"path": "photos/cat.jpg", "label": "cat", "confidence": 0.97,
     "top_k": [{"label": "cat", "probability": 0.97}, {"label": "dog", "probability": 0.03}],
     "error": ""}

A file that cannot be read (corrupt, not an image, missing) gets a row with ``label``
empty and the reason in ``error``; the other files still get their predictions.

The model comes from a run directory or from a model file alone: a ``.safetensors``
file written by cnnlab holds the spec, the classes and the preprocessing, so it can be
shared on its own; a Keras ``.keras``/``.h5`` file is read too (cnnlab.formats.keras).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from cnnlab.data.decode import is_image_file
from cnnlab.device import pick_device
from cnnlab.display import Predictions
from cnnlab.errors import CnnlabError
from cnnlab.eval.infer import BATCH_SIZE, predict_files, resolve_precision
from cnnlab.io.fs import atomic_write_text
from cnnlab.run import Run, open_any

GLOB_CHARS = set("*?[")


def collect_files(paths: Iterable[str | Path]) -> list[tuple[str, str]]:
    """[(file, error)]: folders expanded recursively, globs expanded, duplicates dropped.

    ``error`` is "" for a file to predict, or why a path gave no file ("no such file").
    """
    found: dict[str, str] = {}  # insertion-ordered: the order the user gave
    real: set[str] = set()  # the files behind the names: a symlink loop gives one file many names

    def add(f: str | Path) -> None:
        r = os.path.realpath(f)
        if r not in real:
            real.add(r)
            found.setdefault(str(f), "")

    def add_folder(folder: Path) -> None:
        for f in sorted(folder.rglob("*")):
            parts = f.relative_to(folder).parts
            # Anything named like an image but a folder: a broken link, a pipe... gets its reason.
            if not f.is_dir() and is_image_file(f) and not any(p.startswith(".") for p in parts):
                add(f)

    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            add_folder(p)
        elif p.is_file() or p.exists():  # p.exists(): a pipe or device, which the decoder names
            add(p)
        elif GLOB_CHARS & set(str(raw)):
            matches = sorted(glob.glob(str(p), recursive=True))
            for m in matches:
                if Path(m).is_dir():
                    add_folder(Path(m))
                elif is_image_file(m):
                    add(m)
            if not matches:
                found.setdefault(str(raw), "no file matches this pattern")
        else:
            found.setdefault(str(raw), "no such file or folder")
    return list(found.items())


def predict(
    run: str | Path | Run,
    paths: str | Path | Iterable[str | Path],
    top_k: int = 3,
    tta: bool = False,
    weights: str = "best",
    *,
    batch_size: int = BATCH_SIZE,
    device: str = "auto",
    precision: str = "fp32",
) -> list[dict[str, Any]]:
    """One dict per file (see the module docstring), in the order the files were found.

    ``run`` is a run directory, a model file (.safetensors, .keras, .h5) or a ModelFile; ``top_k`` labels are listed
    per file (at most the number of classes); ``tta`` averages each image with its mirror
    image; ``weights`` is best, last or a path (for a run directory); ``precision`` fp32
    (exact), bf16, fp16 or run (as the run trained; see :mod:`cnnlab.eval.infer`).
    """
    if top_k < 1:
        raise CnnlabError(f"--top-k must be at least 1, got {top_k}")
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    files = collect_files(paths)
    if not files:
        raise CnnlabError(f"no image files found in {', '.join(map(str, paths)) or 'the given paths'}")
    dev = pick_device(device)
    opened = open_any(run, weights, device=dev)
    model, preprocessor = opened.model, opened.preprocessor()
    classes = opened.classes
    k = min(top_k, len(classes))

    readable = [i for i, (_, err) in enumerate(files) if not err]
    precision, channels_last = resolve_precision(precision, opened.config, dev)
    probs, ok, errors = predict_files(model, preprocessor, [files[i][0] for i in readable],
                                      tta=tta, batch_size=batch_size, device=dev, precision=precision,
                                      channels_last=channels_last)
    row_probs = {readable[j]: p for j, p in zip(ok, probs)}
    row_errors = {readable[j]: reason for j, reason in errors.items()}
    return prediction_rows(files, row_probs, row_errors, classes, k)


def prediction_rows(files: list[tuple[str, str]], probs: dict[int, np.ndarray], errors: dict[int, str],
                    classes: list[str], top_k: int) -> list[dict[str, Any]]:
    """One row per file of collect_files(): the top-k of ``probs[i]``, or why file i has none."""
    k = min(top_k, len(classes))
    rows = []
    for i, (path, err) in enumerate(files):
        if i not in probs:
            rows.append({"path": path, "label": "", "confidence": None, "top_k": [],
                         "error": err or errors.get(i, "not read")})
            continue
        p = probs[i]
        best = np.argsort(-p, kind="stable")[:k]
        rows.append({"path": path, "label": classes[best[0]], "confidence": float(p[best[0]]),
                     "top_k": [{"label": classes[c], "probability": float(p[c])} for c in best],
                     "error": ""})

    return Predictions(rows)  # a list; a notebook shows it as a table


def to_csv(rows: list[dict[str, Any]], top_k: int) -> str:
    """Columns: path, label, confidence, top1_label, top1_prob, ..., error."""
    buf = io.StringIO()
    w = csv.writer(buf)
    head = ["path", "label", "confidence"]
    for r in range(1, top_k + 1):
        head += [f"top{r}_label", f"top{r}_prob"]
    w.writerow(head + ["error"])
    for row in rows:
        cells = [row["path"], row["label"], "" if row["confidence"] is None else f"{row['confidence']:.6f}"]
        for r in range(top_k):
            t = row["top_k"][r] if r < len(row["top_k"]) else None
            cells += [t["label"], f"{t['probability']:.6f}"] if t else ["", ""]
        w.writerow(cells + [row["error"]])
    return buf.getvalue()


def write_predictions(rows: list[dict[str, Any]], out: str | Path) -> Path:
    """Write rows to a .csv or .json file (atomically)."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix == ".json":
        atomic_write_text(out, json.dumps(rows, indent=2) + "\n")
    elif suffix == ".csv":
        top_k = max((len(r["top_k"]) for r in rows), default=0)
        atomic_write_text(out, to_csv(rows, top_k))
    else:
        raise CnnlabError(f"--out {out}: the file name must end in .csv or .json")
    return out
