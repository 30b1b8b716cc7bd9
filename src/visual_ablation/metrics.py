"""Per-run test metrics of one probe head, from its class probabilities.

The definitions are scikit-learn's (`accuracy_score`, `balanced_accuracy_score`,
`f1_score(average="macro", zero_division=0)`, `log_loss`), written out in numpy because
importing `sklearn.metrics` costs about 1.5 s, a third of a small train job's whole
time (measured with benchmarks/training.py). tests/test_metrics.py checks every one
against scikit-learn on real probe outputs and on edge cases. ECE has no scikit-learn
multiclass version.
"""

from __future__ import annotations

import numpy as np

# what one run row is about: the job's store, probe and run, and the layer
RUN_KEYS = ["dataset", "backbone", "representation", "layer", "probe", "run"]
METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "nll", "ece")
ECE_BINS = 15


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """[true class, predicted class] counts."""
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


def balanced_accuracy(cm: np.ndarray) -> float:
    """Mean recall over the classes present in y_true (scikit-learn drops the others)."""
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over the classes in y_true or y_pred; 0 where a class has no true positive."""
    tp = np.diag(cm).astype(float)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    seen = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    return float(np.mean(2 * tp[seen] / (2 * tp[seen] + fp[seen] + fn[seen])))


def negative_log_likelihood(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean -log p(true class), probabilities clipped to [eps, 1 - eps] like log_loss."""
    eps = np.finfo(proba.dtype).eps
    p_true = np.clip(proba[np.arange(len(y_true)), y_true], eps, 1 - eps)
    return float(-np.mean(np.log(p_true)))


def expected_calibration_error(
    y_true: np.ndarray, proba: np.ndarray, bins: int = ECE_BINS
) -> float:
    """Top-label ECE: |accuracy - confidence| per equal-width confidence bin, weighted by
    the bin's share of images (Guo et al. 2017)."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y_true
    # bin i holds confidences in (i/bins, (i+1)/bins]; confidence is always > 0
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = index == b
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total)


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """accuracy, balanced accuracy, macro-F1, NLL (natural log) and ECE (15 bins)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    y_pred = proba.argmax(axis=1)
    cm = confusion(y_true, y_pred, proba.shape[1])
    return {
        "accuracy": float(np.mean(y_pred == y_true)),
        "balanced_accuracy": balanced_accuracy(cm),
        "macro_f1": macro_f1(cm),
        "nll": negative_log_likelihood(y_true, proba),
        "ece": expected_calibration_error(y_true, proba),
    }
