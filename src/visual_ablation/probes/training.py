"""The train stage: one feature store x one target x one probe config x one or more runs
-> one csv row per (run, layer), every head's per-image test predictions, and the heads.

Reads the checked data store (the target's labels) and feature store (every layer), draws
each run's split from the class labels (data/splits.py; the same images for every target),
trains one probe head per layer together (probes/fitting.py), scores each on its run's test split
(probes/metrics.py).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from visual_ablation.data import data_store, splits
from visual_ablation.data.sources import SOURCES
from visual_ablation.features import feature_store
from visual_ablation.layout import WITHIN
from visual_ablation.plumbing import store
from visual_ablation.probes import metrics, run_files
from visual_ablation.vocabulary import CLASS

if TYPE_CHECKING:  # torch is imported by train_store only: transfer jobs need none
    from visual_ablation.probes import stacking

log = logging.getLogger(__name__)

STOPS = {"adamw": "patience", "lbfgs": "converged"}  # what ends a head, per solver


class StoreLabels(NamedTuple):
    labels: np.ndarray  # the target's
    n_classes: int  # the target's
    classes: np.ndarray  # the class labels: what splits are stratified by
    fixed_test: np.ndarray | None  # the source's fixed test images
    given_split: np.ndarray | None  # the split the data comes with (`split: given`)
    groups: np.ndarray | None  # the target's exemplar per image, kept in one part


def read_labels(path: str, spec: dict[str, Any], target: str = CLASS) -> StoreLabels:
    """A checked data store's labels of `target` and what its splits are drawn from."""
    with store.reading(path, spec) as group:
        labels, names = data_store.read_target(group, target, f"data store {path}")
        return StoreLabels(
            labels,
            len(names),
            data_store.class_labels(group),
            data_store.read_fixed_test(group),
            data_store.read_given_split(group),
            SOURCES[spec["source"]].split_groups(
                spec, lambda: data_store.read_file_names(group), target
            ),
        )


def same_up_to_names(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labelings of the same images are one relabelled (a bijection): probes
    of the two would fit the same heads up to the order of their classes."""
    pairs = np.unique(np.stack([a, b]), axis=1).shape[1]
    return pairs == len(np.unique(a)) == len(np.unique(b))


def check_not_class(
    target: str,
    labels: np.ndarray,
    classes: np.ndarray,
    split_of: dict[int, np.ndarray],
    where: str,
) -> None:
    """Refuse a target whose labels on the images it trains on (train and validation of
    every run) are the class labels renamed: it would train the class probe's heads."""
    if target == CLASS:
        return
    seen = np.zeros(len(labels), dtype=bool)
    for split in split_of.values():
        seen |= (split == splits.TRAIN) | (split == splits.VAL)
    if same_up_to_names(labels[seen], classes[seen]):
        raise ValueError(
            f"{where}: target {target!r} has the class labels (renamed) on all {int(seen.sum())} "
            f"images its probes train on, so they would train the same heads as the class "
            f"probe's. Drop {target!r} from the dataset's targets, or draw it apart from the "
            "class (for synthetic-cue-conflict, an agreement below 1)."
        )


def split_note(split_spec: dict[str, Any], given: np.ndarray | None) -> str:
    """How the runs' splits relate, for the log."""
    if given is not None:
        if (given == splits.VAL).any():
            return ", given with the data"
        per_run = " per run" if split_spec.get("resample") else ""
        return f", given with the data (validation drawn from train{per_run})"
    return ", resampled per run" if split_spec.get("resample") else ""


def grid_edge(decay: float, decays: tuple[float, ...]) -> str:
    """`largest` or `smallest` where validation chose the grid's edge (the best decay may
    lie beyond it: widen the grid), else empty; empty for a single decay."""
    if len(decays) < 2:
        return ""
    if decay == max(decays):
        return "largest"
    return "smallest" if decay == min(decays) else ""


def train_store(
    feature_path: str,
    data_path: str,
    feature_spec: dict[str, Any],
    data_spec: dict[str, Any],
    probe_spec: dict[str, Any],
    split_spec: dict[str, Any],
    runs: int | list[int],
    device: str = "auto",
    threads: int = 1,
    target: str = CLASS,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], list[stacking.HeadResult]]:
    """Train and score `probe_spec` on every layer of one feature store to predict
    `target`, for each of `runs` (trained together, vectorised), each on its split
    (`splits.run_splits`). Returns the csv rows (one per run and layer), the per-image
    test predictions and the heads."""
    from visual_ablation.plumbing.devices import choose_device, set_cpu_threads
    from visual_ablation.probes import fitting, stacking

    set_cpu_threads(threads)
    runs = [runs] if isinstance(runs, int) else list(runs)
    torch_device = choose_device(device)
    labels, n_classes, classes, fixed_test, given, groups = read_labels(
        data_path, data_spec, target
    )
    within = splits.target_images(target, fixed_test)
    split_of = splits.run_splits(
        # a target split by its exemplars is stratified by its own labels (each exemplar
        # has one), the others by the class
        classes if groups is None else labels,
        split_spec,
        runs,
        data_spec["name"],
        fixed_test,
        within=within,
        given=given,
        groups=groups,
    )
    if within is None:  # within them, the class probe does not train at all
        check_not_class(target, labels, classes, split_of, f"data store {data_path}")
    sizes = splits.check_split(split_of[runs[0]], f"data store {data_path}")
    t0 = time.perf_counter()
    features = feature_store.read(feature_path, feature_spec)
    log.info(
        "read %d layers of %s in %.2f s; split %s%s%s",
        len(features),
        feature_path,
        time.perf_counter() - t0,
        sizes,
        split_note(split_spec, given)
        + ("" if groups is None else f", each of {len(np.unique(groups))} exemplars in one part"),
        "" if within is None else f", within the {int(within.sum())} conflict images",
    )
    config = stacking.ProbeConfig.from_spec(probe_spec)
    heads, seconds = fitting.train(
        features,
        labels,
        split_of,
        n_classes,
        config,
        runs,
        device=torch_device,
        where=f"feature store {feature_path}",
    )
    rows = []
    for head in heads:
        rows.append(
            {
                "dataset": feature_spec["dataset"]["name"],
                "backbone": feature_spec["backbone"]["name"],
                "representation": feature_spec["representation"]["name"],
                "train_representation": feature_spec["representation"]["name"],
                "transfer": WITHIN,
                "target": target,
                "layer": head.layer,
                "probe": probe_spec["name"],
                "run": head.run,
                **metrics.classification_metrics(labels[head.test_rows], head.test_proba),
                "best_epoch": head.best_epoch,
                "epochs": head.epochs,
                "train_seconds": round(seconds, 4),
                "n_train": sizes["train"],
                "n_val": sizes["val"],
                "n_test": sizes["test"],
                "n_features": head.n_features,
                "n_classes": n_classes,
                "best_val_loss": head.best_val_loss,
                "weight_decay": head.weight_decay,
                "weight_decay_at_edge": grid_edge(head.weight_decay, config.decays),
                # why the head stopped: no lower validation loss for `patience` epochs
                # (adamw), its optimum reached (lbfgs), or the cap (its loss may still
                # have been falling)
                "stop": "max_epochs" if head.hit_max_epochs else STOPS[config.solver],
                "device": str(torch_device),
            }
        )
        log.info(
            "run %d, %s: accuracy %.4f, best epoch %d of %d",
            head.run,
            head.layer,
            rows[-1]["accuracy"],
            head.best_epoch,
            head.epochs,
        )
    log.info("trained %d heads in %.2f s on %s", len(heads), seconds, torch_device)
    return rows, run_files.predictions(heads, labels, runs), heads
