"""compute_metrics against values worked out by hand (and by plain counting loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnlab.eval.metrics import compute_metrics

# A known prediction set: 3 classes, 8 images, 5 right. Rows of PROBS are (a, b, c).
CLASSES = ["a", "b", "c"]
Y = [0, 0, 0, 1, 1, 1, 2, 2]
PROBS = np.array([
    [0.7, 0.2, 0.1],  # a -> a
    [0.5, 0.3, 0.2],  # a -> a
    [0.2, 0.6, 0.2],  # a -> b  (wrong)
    [0.1, 0.8, 0.1],  # b -> b
    [0.3, 0.4, 0.3],  # b -> b
    [0.1, 0.3, 0.6],  # b -> c  (wrong)
    [0.2, 0.2, 0.6],  # c -> c
    [0.6, 0.1, 0.3],  # c -> a  (wrong)
])


def test_known_prediction_set_by_hand():
    m = compute_metrics(Y, PROBS, CLASSES)
    assert m["classes"] == CLASSES and m["n_images"] == 8
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 2, 1], [1, 0, 1]]
    assert m["confusion_matrix_normalized"][0] == pytest.approx([2 / 3, 1 / 3, 0])
    assert m["confusion_matrix_normalized"][2] == pytest.approx([1 / 2, 0, 1 / 2])
    # Predicted a: images 0, 1, 7 (2 right); b: 2, 3, 4 (2 right); c: 5, 6 (1 right).
    assert m["per_class"]["a"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert m["per_class"]["b"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert m["per_class"]["c"] == pytest.approx({"precision": 1 / 2, "recall": 1 / 2, "f1": 1 / 2, "support": 2})
    assert m["macro_avg"] == pytest.approx({"precision": 11 / 18, "recall": 11 / 18, "f1": 11 / 18, "support": 8})
    assert m["weighted_avg"] == pytest.approx({"precision": 5 / 8, "recall": 5 / 8, "f1": 5 / 8, "support": 8})
    true_p = [0.7, 0.5, 0.2, 0.8, 0.4, 0.3, 0.6, 0.3]
    assert m["loss"] == pytest.approx(-np.mean(np.log(true_p)))
    # One-vs-rest AUC of a: positives 0.7, 0.5, 0.2 against negatives 0.1, 0.3, 0.1, 0.2, 0.6:
    # 5 + 4 + 2.5 (a tie counts half) = 11.5 of 15 pairs.
    auc = m["roc_auc"]
    assert auc["method"] == "one-vs-rest"
    assert auc["per_class"]["a"] == pytest.approx(11.5 / 15)
    assert m["top_k_accuracy"] == {}  # top-3 of 3 classes would always be 1
    # Each confusion happens once; c -> a is half of class c, so it comes first.
    pairs = [(p["true"], p["predicted"], p["count"]) for p in m["most_confused"]]
    assert pairs == [("c", "a", 1), ("a", "b", 1), ("b", "c", 1)]
    assert m["most_confused"][0]["fraction_of_true"] == pytest.approx(0.5)


def test_binary_auc_by_hand():
    y = [0, 0, 0, 1, 1, 1, 1]
    p1 = np.array([0.1, 0.4, 0.8, 0.35, 0.6, 0.9, 0.7])
    m = compute_metrics(y, np.stack([1 - p1, p1], axis=1), ["cat", "dog"])
    # Positives 0.35, 0.6, 0.9, 0.7 beat 1 + 2 + 3 + 2 of the negatives 0.1, 0.4, 0.8: 8 of 12 pairs.
    assert m["roc_auc"]["method"] == "binary"
    assert m["roc_auc"]["positive_class"] == "dog"
    assert m["roc_auc"]["macro"] == pytest.approx(8 / 12)
    assert m["roc_auc"]["per_class"]["cat"] == pytest.approx(8 / 12)
    # Threshold 0.5: predicted dog = 0.8, 0.6, 0.9, 0.7 -> TP 3, FP 1, FN 1.
    assert m["per_class"]["dog"] == pytest.approx({"precision": 3 / 4, "recall": 3 / 4, "f1": 3 / 4, "support": 4})
    assert m["accuracy"] == pytest.approx(5 / 7)


def test_f1_is_the_harmonic_mean_when_precision_and_recall_differ():
    """10 images; true a a a a b b c c c c, predicted a a a b b b a a c c."""
    y = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    pred = [0, 0, 0, 1, 1, 1, 0, 0, 2, 2]
    probs = np.full((10, 3), 0.2)
    probs[np.arange(10), pred] = 0.6
    m = compute_metrics(y, probs, ["a", "b", "c"])
    assert m["confusion_matrix"] == [[3, 1, 0], [0, 2, 0], [2, 0, 2]]
    # a: TP 3, FP 2 (two c's), FN 1 -> P 3/5, R 3/4, F1 = 2PR/(P+R) = (9/10)/(27/20) = 2/3
    #    (the arithmetic mean would be 0.675)
    # b: TP 2, FP 1, FN 0 -> P 2/3, R 1,   F1 = (4/3)/(5/3) = 4/5  (arithmetic: 5/6)
    # c: TP 2, FP 0, FN 2 -> P 1,   R 1/2, F1 = 1/(3/2) = 2/3      (arithmetic: 3/4)
    assert m["per_class"]["a"] == pytest.approx({"precision": 3 / 5, "recall": 3 / 4, "f1": 2 / 3, "support": 4})
    assert m["per_class"]["b"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 4 / 5, "support": 2})
    assert m["per_class"]["c"] == pytest.approx({"precision": 1.0, "recall": 1 / 2, "f1": 2 / 3, "support": 4})
    # macro: plain means over the classes; F1 the mean of the F1s (32/45), not the harmonic
    # mean of macro P and R (204/271)
    assert m["macro_avg"] == pytest.approx({"precision": 34 / 45, "recall": 3 / 4, "f1": 32 / 45, "support": 10})
    # weighted by support 4, 2, 4: P (12/5 + 4/3 + 4)/10 = 58/75, R 7/10, F1 (8/3 + 8/5 + 8/3)/10 = 52/75
    assert m["weighted_avg"] == pytest.approx({"precision": 58 / 75, "recall": 7 / 10, "f1": 52 / 75, "support": 10})
    assert m["accuracy"] == pytest.approx(7 / 10)
    # scikit-learn, a second oracle
    from sklearn.metrics import precision_recall_fscore_support

    for avg, key in ((None, None), ("macro", "macro_avg"), ("weighted", "weighted_avg")):
        p, r, f, _ = precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        got = [m["per_class"][c] for c in "abc"] if avg is None else [m[key]]
        assert [g["precision"] for g in got] == pytest.approx(np.atleast_1d(p))
        assert [g["recall"] for g in got] == pytest.approx(np.atleast_1d(r))
        assert [g["f1"] for g in got] == pytest.approx(np.atleast_1d(f))


def _pairwise_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    pos, neg = scores[positive], scores[~positive]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_random_multiclass_against_counting_loops():
    rng = np.random.default_rng(3)
    n, k = 60, 6
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]  # better than chance, far from perfect
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    classes = [f"c{i}" for i in range(k)]
    m = compute_metrics(y, probs, classes)

    pred = probs.argmax(1)
    assert m["accuracy"] == pytest.approx(np.mean(pred == y))
    for t in (3, 5):
        rank = [(probs[i] > probs[i, y[i]]).sum() for i in range(n)]  # classes scored above the true one
        assert m["top_k_accuracy"][str(t)] == pytest.approx(np.mean(np.array(rank) < t))
    for c, name in enumerate(classes):
        tp = int(((pred == c) & (y == c)).sum())
        fp = int(((pred == c) & (y != c)).sum())
        fn = int(((pred != c) & (y == c)).sum())
        pc = m["per_class"][name]
        assert pc["support"] == tp + fn
        assert pc["precision"] == pytest.approx(tp / (tp + fp) if tp + fp else 0.0)
        assert pc["recall"] == pytest.approx(tp / (tp + fn) if tp + fn else 0.0)
        assert m["roc_auc"]["per_class"][name] == pytest.approx(_pairwise_auc(probs[:, c], y == c))
        assert m["confusion_matrix"][c] == [int(((y == c) & (pred == j)).sum()) for j in range(k)]
    aucs = [m["roc_auc"]["per_class"][c] for c in classes]
    assert m["roc_auc"]["macro"] == pytest.approx(np.mean(aucs))
    support = np.bincount(y, minlength=k)
    assert m["roc_auc"]["weighted"] == pytest.approx(np.dot(aucs, support) / n)
    f1 = [m["per_class"][c]["f1"] for c in classes]
    assert m["macro_avg"]["f1"] == pytest.approx(np.mean(f1))
    assert m["weighted_avg"]["f1"] == pytest.approx(np.dot(f1, support) / n)
    assert m["loss"] == pytest.approx(-np.mean(np.log(probs[np.arange(n), y])))


def test_class_without_images_is_reported_but_not_averaged():
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    m = compute_metrics([0, 1, 1], probs, ["a", "b", "unused"])
    assert m["per_class"]["unused"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["roc_auc"]["per_class"]["unused"] is None  # no positives: no ranking to measure
    # a: P 1/2 R 1; b: P 1 R 1/2 -> macro over a and b only.
    assert m["macro_avg"]["precision"] == pytest.approx(0.75)
    assert m["macro_avg"]["recall"] == pytest.approx(0.75)
    assert m["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert m["confusion_matrix_normalized"][2] == [0.0, 0.0, 0.0]
    assert all(v is None or math.isfinite(v) for v in m["roc_auc"]["per_class"].values())


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="3 classes"):
        compute_metrics([0, 1], np.array([[0.5, 0.5], [0.2, 0.8]]), ["a", "b", "c"])
