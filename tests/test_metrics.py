"""Metrics against scikit-learn (the definitions they follow) and hand-computed ECE."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, log_loss

from visual_ablation import metrics


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


def test_ece_by_hand():
    # 4 images, 2 classes. Confidences 0.9, 0.9 (bin 14), 0.6, 0.6 (bin 8).
    proba = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    y = np.array([0, 1, 0, 0])  # bin 14: 1 of 2 right; bin 8: 1 of 2 right
    expected = 0.5 * abs(0.5 - 0.9) + 0.5 * abs(0.5 - 0.6)
    assert metrics.expected_calibration_error(y, proba) == pytest.approx(expected)
    perfect = np.eye(3)[[0, 1, 2, 1]]
    assert metrics.expected_calibration_error(np.array([0, 1, 2, 1]), perfect) == 0.0
