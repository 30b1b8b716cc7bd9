"""Train / validation / test splits, derived by each train job from the labels.

The split is not stored with the images: a train job draws it, stratified by class and
deterministic, from the labels, the `split` fractions and a seed. So a new split re-plans
train jobs only, never a data or feature store. With `split.resample`, run `r` gets its own
split (seed from `split.seed` and `r`): runs then vary the data as well as the probe, and
their test sets overlap (stats.py corrects the interval over runs for that).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

TRAIN, VAL, TEST = 0, 1, 2
PARTS = (("train", TRAIN), ("val", VAL), ("test", TEST))


class SplitError(ValueError):
    """Labels that cannot be split as configured; the message says why and what to change."""


def split_sizes(split: np.ndarray) -> dict[str, int]:
    return {part: int((split == code).sum()) for part, code in PARTS}


def check_split(split: np.ndarray, where: str) -> dict[str, int]:
    """The part sizes; an empty part is refused (a probe needs images in all three)."""
    sizes = split_sizes(split)
    empty = [part for part, size in sizes.items() if size == 0]
    if empty:
        raise SplitError(
            f"{where}: the {' and '.join(empty)} part of the split is empty "
            f"(train={sizes['train']}, val={sizes['val']}, test={sizes['test']}). "
            "Probes need images in all three: use a larger dataset or larger split.val / "
            "split.test fractions."
        )
    return sizes


def run_seed(split: dict[str, Any], run: int) -> int:
    """The seed of run `run`'s split: `split.seed` itself, or with `resample` a seed
    drawn from (split.seed, run), so that every run has its own split."""
    if not split.get("resample", False):
        return int(split["seed"])
    return int(np.random.SeedSequence([int(split["seed"]), int(run)]).generate_state(1)[0])


def stratified_split(
    labels: np.ndarray, val: float, test: float, seed: int, name: str
) -> np.ndarray:
    """0 = train, 1 = val, 2 = test per image, stratified by class."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels)
    present = counts[counts > 0]
    if len(present) < 2:
        raise SplitError(
            f"dataset '{name}': only one class present ({len(labels)} images). "
            "A probe needs at least two classes: check the labels or the subset."
        )
    idx = np.arange(len(labels))
    split = np.zeros(len(labels), dtype=np.int8)
    try:
        rest, test_idx = train_test_split(idx, test_size=test, stratify=labels, random_state=seed)
        _, val_idx = train_test_split(
            rest, test_size=val / (1.0 - test), stratify=labels[rest], random_state=seed
        )
    except ValueError as err:
        n_test = math.ceil(test * len(labels))
        n_val = math.ceil(val / (1.0 - test) * (len(labels) - n_test))
        raise SplitError(
            f"dataset '{name}': cannot split {len(labels)} images of {len(present)} classes "
            f"(smallest class: {present.min()}) into val={val}, test={test}: that gives "
            f"train={len(labels) - n_test - n_val}, val={n_val}, test={n_test} images, and "
            f"each part needs at least one image per class ({err}). Use more images or "
            "larger split fractions."
        ) from err
    split[val_idx], split[test_idx] = VAL, TEST
    check_split(split, f"dataset '{name}': the split of {len(labels)} images")
    return split


def run_splits(
    labels: np.ndarray, split: dict[str, Any], runs: list[int], name: str
) -> dict[int, np.ndarray]:
    """Each run's split of `labels` (computed once per distinct seed)."""
    by_seed: dict[int, np.ndarray] = {}
    out = {}
    for run in runs:
        seed = run_seed(split, run)
        if seed not in by_seed:
            by_seed[seed] = stratified_split(labels, split["val"], split["test"], seed, name)
        out[run] = by_seed[seed]
    return out
