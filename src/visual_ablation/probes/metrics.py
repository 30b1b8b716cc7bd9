"""Per-run test metrics of one probe head, from its class probabilities.

The definitions are scikit-learn's (`accuracy_score`, `balanced_accuracy_score`,
`f1_score(average="macro", zero_division=0)`, `log_loss`), written out in numpy because
importing `sklearn.metrics` costs about 1.5 s, a third of a small train job's whole
time (measured with benchmarks/training.py). tests/probes/test_metrics.py checks every one
against scikit-learn on real probe outputs and on edge cases. The calibration error
(`ece`) is Kumar et al.'s (2019) debiased estimator, checked against their algorithm.
"""

from __future__ import annotations

import numpy as np

# what one run row is about: the store tested on, the representation whose store the head
# was trained on (itself, or the reference for a transfer row), how a transfer row's heads
# were applied (vocabulary.TRANSFER_VARIANTS; `none` for a train job's row), the target it
# predicts, the layer, probe and run
RUN_KEYS = [
    "dataset",
    "backbone",
    "representation",
    "train_representation",
    "transfer",
    "target",
    "layer",
    "probe",
    "run",
]
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


def equal_mass_bins(confidence: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """Upper bin boundaries holding about equally many confidences (Kumar et al.'s
    `get_equal_bins`): midpoints between neighbouring sorted chunks, then 1.0."""
    ordered = np.sort(confidence)
    chunks = np.array_split(ordered, min(bins, len(ordered)))
    edges = [(a[-1] + b[0]) / 2.0 for a, b in zip(chunks[:-1], chunks[1:], strict=True)]
    return np.unique(np.array([*edges, 1.0]))


def calibration_bin_sums(confidence: np.ndarray, correct: np.ndarray, edges: np.ndarray):
    """Per bin (edges from `equal_mass_bins`): one-hot membership [n, bins], so that the
    counts, summed confidences and summed correctness are `weights @ membership` etc."""
    index = np.searchsorted(edges, confidence)  # bisect_left, as Kumar et al.'s `bin`
    membership = np.zeros((len(confidence), len(edges)))
    membership[np.arange(len(confidence)), np.minimum(index, len(edges) - 1)] = 1.0
    return membership, membership * confidence[:, None], membership * correct[:, None]


def debiased_calibration_error(
    count: np.ndarray, confidence_sum: np.ndarray, correct_sum: np.ndarray
) -> np.ndarray:
    """Kumar et al.'s (2019) debiased l2 calibration error from per-bin sums ([..., bins]):
    each bin's squared gap between mean confidence and accuracy, minus the variance that
    a finite sample alone puts into it (acc (1 - acc) / (n_b - 1)), weighted by the bin's
    share; bins with fewer than 2 images count 0; the root of the total, floored at 0."""
    n = count.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = correct_sum / count
        gap = (confidence_sum / count - accuracy) ** 2
        noise = accuracy * (1.0 - accuracy) / (count - 1.0)
    per_bin = np.where(count >= 2, gap - noise, 0.0)
    total = (count / n * per_bin).sum(axis=-1)
    return np.sqrt(np.maximum(total, 0.0))


def expected_calibration_error(
    y_true: np.ndarray, proba: np.ndarray, bins: int = ECE_BINS
) -> float:
    """Top-label calibration error, debiased (Kumar, Liang & Ma 2019, "Verified
    uncertainty calibration"; their `get_top_calibration_error` for continuous outputs):
    the l2 gap between confidence and accuracy over 15 equal-mass bins, with each bin's
    sampling variance subtracted. The plain binned ECE is biased upwards at small test
    sizes (about 0.08 for a perfectly calibrated probe on 200 images); this one is about
    0 there, so a calibration difference between probes is not test-size noise."""
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_true).astype(float)
    members, conf, hits = calibration_bin_sums(confidence, correct, equal_mass_bins(confidence))
    return float(debiased_calibration_error(members.sum(0), conf.sum(0), hits.sum(0)))


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """accuracy, balanced accuracy, macro-F1, NLL (natural log) and the debiased
    calibration error (`ece`, 15 equal-mass bins)."""
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
