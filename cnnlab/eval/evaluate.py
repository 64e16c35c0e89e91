"""`evaluate_run`: how good is a trained model, and where does it fail?

It runs the model over a labelled split -- the run's own test (or val) split from
``split.json``, or any labelled folder given with ``data=`` -- and writes::

    RUN/eval/<split>/
      metrics.json                      every number (see cnnlab.eval.metrics)
      predictions.csv                   one row per image: true, predicted, confidence, loss, p_<class>...
      confusion_matrix.png              counts
      confusion_matrix_normalized.png   each row sums to 1
      top_losses.png                    the images the model is most confidently wrong about

With ``data=DIR`` the results go to ``RUN/eval/<name of DIR>/`` instead, so an
evaluation on new photos never replaces the test split's. Then ``RUN/report.html`` is
refreshed.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.data.datasets import discover
from cnnlab.device import pick_device
from cnnlab.display import Metrics
from cnnlab.errors import CnnlabError, DataError
from cnnlab.eval.infer import BATCH_SIZE, predict_files, resolve_precision
from cnnlab.eval.metrics import compute_metrics, image_losses
from cnnlab.eval.report import write_report
from cnnlab.eval.tta import tta_mode
from cnnlab.io import plots
from cnnlab.io.figures import save_figure
from cnnlab.io.fs import atomic_write_text, check_can_write
from cnnlab.run import Run, is_run_dir, open_any

TOP_LOSSES = 16
SPLIT_NAMES = ("train", "val", "test")


def _items_from_run(run: Run, split: str) -> list[tuple[str, int]]:
    splits = run.split()
    if not splits:
        raise CnnlabError(f"{run.path / 'split.json'}: missing, so the run's {split} images are unknown; "
                          "pass --data DIR to evaluate on a labelled folder")
    items = splits.get(split)
    if not items:
        have = ", ".join(s for s, v in splits.items() if v) or "none"
        raise CnnlabError(f"{run.path}: the run has no {split!r} split (it has: {have}); "
                          "use --split val or --data DIR")
    return items


def _items_from_data(data: str | Path, split: str, classes: list[str]) -> tuple[list[tuple[str, int]], dict, str]:
    """Labelled images of a folder (or CSV), their labels mapped onto the model's classes.

    A folder with train/val/test sub-folders gives its ``split``; a plain folder of class
    sub-folders gives all its images (the split returned is then "all"). Images of classes
    the model does not know are left out and counted in the second value, {class: images}.
    """
    index = discover(data, val_split=0.0, min_classes=1)  # one class's images can be evaluated
    has_splits = "test" in index.splits or index.val_split is None
    if has_splits:
        items = index.splits.get(split) or []
        if not items:
            have = ", ".join(s for s, v in index.splits.items() if v)
            raise DataError(f"{data}: has no {split!r} images (it has: {have}); choose one with --split")
    else:
        items = [item for split_items in index.splits.values() for item in split_items]
        split = "all"
    model_label = {name: i for i, name in enumerate(classes)}
    mapped, unknown = [], {}
    for path, label in items:
        name = index.classes[label]
        if name in model_label:
            mapped.append((path, model_label[name]))
        else:
            unknown[name] = unknown.get(name, 0) + 1
    if not mapped:
        raise DataError(f"{data}: none of its classes ({', '.join(sorted(unknown))}) is a class of the "
                        f"model ({', '.join(classes)})")
    return mapped, unknown, split


def data_classes(data: str | Path) -> list[str]:
    """The class names of a labelled folder (sorted, as Keras' flow_from_directory orders them)."""
    return list(discover(data, val_split=0.0, min_classes=1).classes)


def eval_name(split: str, data: str | Path | None) -> str:
    """The folder under RUN/eval/: the split; for ``data=DIR``, DIR's name (and the split used).

    ``data/test`` becomes "data-test" and a split folder ``photos`` evaluated on its val
    split "photos-val", so an evaluation on other data never replaces the run's own.
    """
    if data is None:
        return split
    path = Path(data).expanduser().resolve()
    name = path.stem if path.is_file() else path.name
    if name in SPLIT_NAMES:
        return f"{path.parent.name}-{name}"
    return name if split == "all" else f"{name}-{split}"


def _predictions_csv(items, probs_all, errors, classes, losses_all) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "true", "predicted", "confidence", "correct", "loss"]
               + [f"p_{c}" for c in classes] + ["error"])
    for i, (path, label) in enumerate(items):
        if i in errors:
            w.writerow([path, classes[label], "", "", "", ""] + [""] * len(classes) + [errors[i]])
            continue
        p = probs_all[i]
        pred = int(p.argmax())
        w.writerow([path, classes[label], classes[pred], f"{p[pred]:.6f}", int(pred == label),
                    f"{losses_all[i]:.6f}"] + [f"{v:.6f}" for v in p] + [""])
    return buf.getvalue()


def _top_losses(items, probs_all, losses_all, ok, classes, limit: int = TOP_LOSSES) -> list[dict]:
    """The misclassified images with the highest loss (the least confident right ones if none)."""
    wrong = [i for i in ok if probs_all[i].argmax() != items[i][1]]
    chosen = sorted(wrong or ok, key=lambda i: -losses_all[i])[:limit if wrong else limit // 2]
    return [{"path": items[i][0], "true": classes[items[i][1]], "predicted": classes[int(probs_all[i].argmax())],
             "confidence": float(probs_all[i].max()), "loss": float(losses_all[i])} for i in chosen]


def _write_files(out: Path, result: dict, items, probs_all, losses_all, errors, pre, title: str) -> None:
    """metrics.json, predictions.csv and the three figures, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    classes = result["classes"]
    atomic_write_text(out / "predictions.csv", _predictions_csv(items, probs_all, errors, classes, losses_all))
    save_figure(plots.confusion_matrix_figure(result["confusion_matrix"], classes,
                                              title=f"Confusion matrix, {title} (counts)"),
                out / "confusion_matrix.png")
    save_figure(plots.confusion_matrix_figure(result["confusion_matrix_normalized"], classes, normalized=True,
                                              title=f"Confusion matrix, {title} (each row sums to 1)"),
                out / "confusion_matrix_normalized.png")
    top = result["top_losses"]
    images = []
    for item in top:  # the pictures as the model saw them (size, resize policy)
        try:
            images.append(pre.load_uint8(item["path"]))
        except CnnlabError:
            images.append(None)
    what = ("Top losses: the most confidently wrong predictions" if any(t["true"] != t["predicted"] for t in top)
            else "No misclassified images: the least confident correct predictions")
    save_figure(plots.top_losses_figure(top, images, title=f"{what} ({title})"), out / "top_losses.png")
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2) + "\n")


def evaluate_run(
    run: str | Path | Run,
    split: str = "test",
    weights: str = "best",
    data: str | Path | None = None,
    tta: bool = False,
    *,
    batch_size: int = BATCH_SIZE,
    device: str = "auto",
    report: bool = True,
    precision: str = "fp32",
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate a run's model on a split; write ``RUN/eval/<split>/`` and return metrics.json's dict.

    ``weights`` is "best", "last" or a .safetensors path; ``data`` a labelled folder (or
    CSV) to evaluate on instead of the run's own split; ``tta`` averages each image with
    its mirror image; ``device`` is auto, cpu, cuda or mps. ``report`` refreshes
    RUN/report.html afterwards. ``precision``: fp32 (exact, the default), bf16 or fp16
    (autocast), or ``run``: the precision and memory layout the run trained in (what
    `cnnlab train` evaluates its test split with: a bf16 run is faster to evaluate, see infer.py).
    ``out``: the folder for the files instead of ``RUN/eval/<split>/`` (a run you cannot
    write to); the run's report is then left as it is.
    """
    dev = pick_device(device)
    if not is_run_dir(run) and data is None:  # a model file on its own (.safetensors, .keras, .h5)
        raise CnnlabError(f"{getattr(run, 'path', run)}: a model file has no data of its own; "
                          "evaluate it on a labelled folder with --data DIR")
    opened = open_any(run, weights, device=dev, data_classes=data_classes(data) if data is not None else None)
    model, meta, run = opened.model, opened.meta, opened.run
    if opened.is_file:
        weights = opened.path.name
    classes = list(meta["classes"])
    if data is None:
        items, unknown = _items_from_run(run, split), {}
    else:
        items, unknown, split = _items_from_data(data, split, classes)
    if out is not None:
        out, report = Path(out), False
        check_can_write(out, "--out")
    else:
        if opened.is_file:  # written beside the model file: model.h5 -> model-eval/<data>/
            out = opened.path.with_name(f"{opened.path.stem}-eval") / eval_name(split, data)
            report = False
        else:
            out = run.eval_dir(eval_name(split, data))
        check_can_write(out, "evaluate writes its files to", "; write them elsewhere with --out DIR")
    bad_labels = [p for p, y in items if not 0 <= y < len(classes)]
    if bad_labels:
        raise CnnlabError(f"{run.path / 'split.json'}: {bad_labels[0]} has a label outside the model's "
                          f"{len(classes)} classes")

    pre = opened.preprocessor()
    precision, channels_last = resolve_precision(precision, opened.config, dev)
    probs, ok, errors = predict_files(model, pre, [p for p, _ in items], tta=tta, batch_size=batch_size,
                                      device=dev, precision=precision, channels_last=channels_last)
    if not ok:
        i, reason = next(iter(errors.items()))
        hint = "; if the data moved, evaluate on its new place with --data DIR" if data is None else ""
        raise DataError(f"none of the {len(items)} images could be read (first: {items[i][0]}: {reason}){hint}")
    y_true = np.array([items[i][1] for i in ok])
    metrics = compute_metrics(y_true, probs, classes)

    # Per-image values indexed like `items` (unreadable files have none).
    probs_all = dict(zip(ok, probs))
    losses_all = dict(zip(ok, image_losses(y_true, probs)))
    top = _top_losses(items, probs_all, losses_all, ok, classes)
    result = {
        "run": str(opened.path),
        "eval_dir": str(out),
        "split": split,
        "data": str(data) if data is not None else None,
        "weights": weights,
        "epoch": meta.get("epoch"),
        "tta": tta_mode(tta) != "none",
        "tta_mode": tta_mode(tta),
        "inference_precision": precision + ("+channels_last" if channels_last else ""),
        **metrics,
        "top_losses": top,
        "unreadable": [{"path": items[i][0], "error": reason} for i, reason in sorted(errors.items())],
        "unknown_classes": unknown,
        "report": str(run.path / "report.html") if report else None,  # a model file has no run report
    }

    _write_files(out, result, items, probs_all, losses_all, errors, pre, title=(
        f"{split} split" if data is None else Path(data).name + ("" if split == "all" else f", {split}")))
    if report:
        write_report(run.path)
    return Metrics(result)  # a dict; a notebook shows it as tables
