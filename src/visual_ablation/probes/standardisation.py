"""A head's input standardisation: each feature's train-split mean and std. numpy only:
train jobs standardise with it, and transfer jobs re-standardise a tested store with it.
"""

from __future__ import annotations

import numpy as np


def train_statistics(values: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 mean and std of each feature over the train rows (accumulated in float64);
    a constant feature gets std 1, so it standardises to 0."""
    x = values[train].astype(np.float32)
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    std[std < 1e-8] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def standardise(values: np.ndarray, train: np.ndarray) -> np.ndarray:
    """(x - mean) / std with train-split statistics, as float32 (what the heads see)."""
    mean, std = train_statistics(values, train)
    x = values.astype(np.float32)
    x -= mean
    x /= std
    return x
