"""Classification metrics from (true labels, predicted probabilities, class names).

Everything here is plain data in, plain data out (lists, dicts, floats), so it is easy
to test against numbers worked out by hand and to write as JSON. The counting is done
by scikit-learn; this module only arranges the results the way a student reads them:

* accuracy -- the fraction of images whose most probable class is the true one;
* top-k accuracy -- the true class is among the k most probable ones;
* per class: precision = TP / (TP + FP) ("when the model says *cat*, how often is it
  a cat?"), recall = TP / (TP + FN) ("of the cats, how many did it find?"), F1 (their
  harmonic mean) and support (how many images of that class there are);
* macro average (every class counts the same) and weighted average (by support), over
  the classes that occur in the labels or the predictions;
* the confusion matrix: rows are the true class, columns the predicted one, in the
  order of ``classes``; normalised, each row sums to 1 (row i = where class i's images went);
* ROC-AUC: the probability that a random image of the class gets a higher score for it
  than a random image of another class (1 = perfect ranking, 0.5 = chance). Two classes:
  the usual binary AUC of the second class's probability; more: one-vs-rest per class;
* loss: the cross-entropy -log p(true class) per image; the highest are the "top losses",
  the images the model is most confidently wrong about.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

TOP_K = (3, 5)  # top-k accuracies reported (when there are more than k classes)
EPS = 1e-12  # keeps -log(p) finite when a probability underflows to 0


def _float(x: float) -> float | None:
    """A JSON-friendly float: NaN (undefined) becomes None."""
    x = float(x)
    return None if math.isnan(x) else x


def image_losses(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Cross-entropy of each image: -log p(true class)."""
    p_true = probs[np.arange(len(y_true)), y_true]
    return -np.log(np.clip(p_true, EPS, 1.0))


def roc_auc(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Binary AUC for two classes, one-vs-rest AUC per class (and averages) for more.

    A class with no images, or a split with only that class, has no AUC (None): the
    ranking it measures needs both positives and negatives.
    """
    from sklearn.metrics import roc_auc_score

    per_class: dict[str, float | None] = {}
    for c, name in enumerate(classes):
        positive = y_true == c
        if positive.all() or not positive.any():
            per_class[name] = None
        else:
            per_class[name] = float(roc_auc_score(positive, probs[:, c]))
    if len(classes) == 2:
        # Binary: the AUC of the positive (second) class; class 0's one-vs-rest AUC is the
        # same number when the two probabilities sum to 1.
        auc = per_class[classes[1]]
        return {"method": "binary", "positive_class": classes[1], "macro": auc, "weighted": auc,
                "per_class": per_class}
    defined = [(v, int((y_true == c).sum())) for c, v in enumerate(per_class.values()) if v is not None]
    macro = float(np.mean([v for v, _ in defined])) if defined else None
    total = sum(n for _, n in defined)
    weighted = float(sum(v * n for v, n in defined) / total) if total else None
    return {"method": "one-vs-rest", "macro": macro, "weighted": weighted, "per_class": per_class}


def most_confused(cm: np.ndarray, classes: Sequence[str], limit: int = 10) -> list[dict[str, Any]]:
    """Off-diagonal cells of the confusion matrix, largest first: which class is taken for which."""
    support = cm.sum(axis=1)
    pairs = [
        {"true": classes[i], "predicted": classes[j], "count": int(cm[i, j]),
         "fraction_of_true": float(cm[i, j] / support[i])}
        for i in range(len(classes)) for j in range(len(classes))
        if i != j and cm[i, j] > 0
    ]
    pairs.sort(key=lambda p: (-p["count"], -p["fraction_of_true"], p["true"], p["predicted"]))
    return pairs[:limit]


def compute_metrics(y_true: Sequence[int], probs: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """All the metrics for predicted probabilities ``probs`` (N, C) against labels ``y_true`` (N,).

    Returns a JSON-ready dict with the keys ``classes``, ``n_images``, ``accuracy``,
    ``top_k_accuracy``, ``loss``, ``per_class``, ``macro_avg``, ``weighted_avg``,
    ``confusion_matrix``, ``confusion_matrix_normalized``, ``roc_auc`` and ``most_confused``.
    """
    from sklearn.metrics import (
        confusion_matrix,
        precision_recall_fscore_support,
        top_k_accuracy_score,
    )

    classes = list(classes)
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n, k = probs.shape if probs.ndim == 2 else (0, 0)
    if n == 0 or n != len(y_true):
        raise ValueError(f"need one row of probabilities per label, got {probs.shape} for {len(y_true)} labels")
    if k != len(classes):
        raise ValueError(f"probabilities have {k} columns but there are {len(classes)} classes")
    labels = list(range(len(classes)))
    y_pred = probs.argmax(axis=1)

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    per_class = {
        name: {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
               "support": int(support[c])}
        for c, name in enumerate(classes)
    }

    # A class that is neither in the labels nor predicted has no precision or recall at all;
    # it is left out of the averages (its row says support 0) instead of counting as a 0.
    seen = sorted(set(y_true.tolist()) | set(y_pred.tolist()))

    def average(kind: str) -> dict[str, Any]:
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=seen, average=kind,
                                                     zero_division=0)
        return {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}

    cm = confusion_matrix(y_true, y_pred, labels=labels)
    rows = cm.sum(axis=1, keepdims=True)
    cm_norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)

    top_k = {str(t): float(top_k_accuracy_score(y_true, probs, k=t, labels=labels))
             for t in TOP_K if t < len(classes)}

    return {
        "classes": classes,
        "n_images": int(n),
        "accuracy": float((y_pred == y_true).mean()),
        "top_k_accuracy": top_k,
        "loss": _float(image_losses(y_true, probs).mean()),
        "per_class": per_class,
        "macro_avg": average("macro"),
        "weighted_avg": average("weighted"),
        "confusion_matrix": cm.astype(int).tolist(),
        "confusion_matrix_normalized": cm_norm.tolist(),
        "roc_auc": roc_auc(y_true, probs, classes),
        "most_confused": most_confused(cm, classes),
    }
