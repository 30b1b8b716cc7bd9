"""Metrics against scikit-learn (the definitions they follow) and Kumar et al.'s debiased
calibration error."""

from __future__ import annotations

import bisect
import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, log_loss

from visual_ablation.probes import metrics


def reference(y_true, proba):
    y_pred = proba.argmax(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        return {
            "accuracy": accuracy_score(y_true, y_pred),
            "balanced_accuracy": balanced_accuracy_score(y_true, y_pred),
            "macro_f1": f1_score(y_true, y_pred, average="macro", zero_division=0),
            "nll": log_loss(y_true, proba, labels=np.arange(proba.shape[1])),
        }


def random_case(seed, n=300, classes=7, sharp=3.0, drop_true=(), drop_pred=()):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    for c in drop_true:
        y[y == c] = (c + 1) % classes
    logits = rng.normal(size=(n, classes)) + sharp * np.eye(classes)[y]
    for c in drop_pred:
        logits[:, c] = -50.0  # never predicted
    proba = np.exp(logits - logits.max(axis=1, keepdims=True))
    return y, proba / proba.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(
    "case",
    [
        dict(seed=0),
        dict(seed=1, sharp=0.3),  # near chance
        dict(seed=2, drop_true=(3,)),  # a class absent from y_true but predicted
        dict(seed=3, drop_pred=(1, 5)),  # classes never predicted
        dict(seed=4, drop_true=(2,), drop_pred=(2, 6)),
        dict(seed=5, sharp=12.0, n=40),  # near-perfect: probabilities at the clip
    ],
)
def test_metrics_equal_scikit_learn(case):
    y, proba = random_case(**case)
    ours = metrics.classification_metrics(y, proba)
    for name, value in reference(y, proba).items():
        assert ours[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name


def test_metrics_on_real_classifier_outputs():
    """A real classifier's probabilities on the digits, scored both ways."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    x, y = load_digits(return_X_y=True)
    model = LogisticRegression(max_iter=200).fit(x[:1000], y[:1000])
    proba = model.predict_proba(x[1000:])
    ours = metrics.classification_metrics(y[1000:], proba)
    for name, value in reference(y[1000:], proba).items():
        assert ours[name] == pytest.approx(value, rel=1e-12), name


def kumar_top_label_ce(y, proba, num_bins=15):
    """Kumar et al.'s verified_calibration, written out as in their utils.py:
    get_equal_bins, bin (bisect_left), unbiased_l2_ce on (confidence, correct) pairs."""
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y).astype(float)
    ordered = sorted(confidence)
    chunks = [list(c) for c in np.array_split(ordered, min(num_bins, len(ordered)))]
    bins = sorted(
        {(a[-1] + b[0]) / 2.0 for a, b in zip(chunks[:-1], chunks[1:], strict=True)} | {1.0}
    )
    binned = [[] for _ in bins]
    for c, k in zip(confidence, correct, strict=True):
        binned[bisect.bisect_left(bins, c)].append((c, k))
    total = 0.0
    for data in binned:
        if len(data) < 2:
            continue
        conf = np.mean([d[0] for d in data])
        acc = np.mean([d[1] for d in data])
        total += len(data) / len(y) * ((conf - acc) ** 2 - acc * (1 - acc) / (len(data) - 1))
    return max(total, 0.0) ** 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_calibration_error_is_kumar_et_al_debiased_estimator(seed):
    y, proba = random_case(seed, n=200, sharp=1.5)
    assert metrics.expected_calibration_error(y, proba) == pytest.approx(
        kumar_top_label_ce(y, proba), rel=1e-10, abs=1e-12
    )


def calibrated_case(rng, n, shift=0.0):
    """Confidences in [0.3, 1]; the prediction is right with probability conf - shift."""
    confidence = rng.uniform(0.3, 1.0, n)
    y = rng.integers(0, 10, n)
    right = rng.random(n) < confidence - shift
    predicted = np.where(right, y, (y + 1) % 10)
    proba = np.repeat(((1 - confidence) / 9)[:, None], 10, axis=1)
    proba[np.arange(n), predicted] = confidence
    return y, proba


def test_calibration_error_of_a_calibrated_probe_is_near_zero_at_200_images():
    """The plain 15-bin ECE of a perfectly calibrated probe on 200 test images is about
    0.08 (sampling noise alone); the debiased estimate stays near 0, and a probe that is
    20 points overconfident reads about 0.2."""
    rng = np.random.default_rng(0)
    calibrated = [
        metrics.expected_calibration_error(*calibrated_case(rng, 200)) for _ in range(100)
    ]
    overconfident = [
        metrics.expected_calibration_error(*calibrated_case(rng, 200, 0.2)) for _ in range(100)
    ]
    assert np.mean(calibrated) < 0.04
    assert 0.17 < np.mean(overconfident) < 0.23
    perfect = np.eye(3)[[0, 1, 2, 1]]
    assert metrics.expected_calibration_error(np.array([0, 1, 2, 1]), perfect) == 0.0
