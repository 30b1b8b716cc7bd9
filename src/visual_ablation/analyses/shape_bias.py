"""Shape bias per layer on cue-conflict images (the measure of Geirhos et al. 2019,
"ImageNet-trained CNNs are biased towards texture"): of the test decisions that follow
either the shape or the conflicting cue, the fraction that follow the shape. Computed from
the per-image predictions of the probes of the dataset's own labels (`class`: the shape),
within each representation and transferred from the reference, and the cue's class of each
image (the data store's `cue` factor). The interval is a bootstrap over test images
(Poisson weights) and runs (inference.bootstrap_weights), as the other image-level
intervals.

What it is: which of two cues a probe trained where both signal the class goes by, the
redundant-features preference of Hermann & Lampinen (2020), not the network's own bias
(Geirhos measured that with the network's own head). So each row carries its context:
- the share of decisions that follow either cue, against a guesser's 2/K (a probe that
  picks one of K classes at random follows one of the two that often): a layer whose
  share's interval reaches 2/K gets no shape bias (NaN, with the reason in `note`), since
  its ratio would be 0.5 by construction;
- how well the shape and the cue can each be decoded on the conflict images, where they
  are drawn apart (the `shape` and `cue` targets' accuracy, from summary.csv), when the
  dataset lists those targets: a layer that holds both but follows one is a preference,
  one that holds only one has no choice.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from visual_ablation.analyses import inference
from visual_ablation.data import preparation
from visual_ablation.plumbing import store
from visual_ablation.probes import run_files
from visual_ablation.spec.layout import parse_run_path

log = logging.getLogger(__name__)

COLUMNS = [
    "dataset",
    "backbone",
    "representation",
    "train_representation",
    "transfer",
    "reference",
    "layer",
    "probe",
    "n_runs",
    "n_test_images",
    "shape_fraction",
    "cue_fraction",
    "either_fraction",
    "either_ci_low",
    "either_ci_high",
    "guesser_either",
    "shape_bias",
    "shape_bias_ci_low",
    "shape_bias_ci_high",
    "shape_decodability",
    "shape_decodability_ci_low",
    "shape_decodability_ci_high",
    "cue_decodability",
    "cue_decodability_ci_low",
    "cue_decodability_ci_high",
    "note",
]
# the targets whose accuracy on the conflict images is each cue's decodability
DECODED = {"shape": "shape", "cue": "cue"}


def _replicates(
    shape: np.ndarray, cue: np.ndarray, weights: tuple[np.ndarray, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bootstrap replicates of the decisions [runs, n] that follow the shape, the cue, and
    all decisions (weighted counts pooled over runs)."""
    runs, n = shape.shape
    image_weights, run_weights = weights or inference.bootstrap_weights(n, runs)
    s = (run_weights * (image_weights @ shape.T.astype(np.float64))).sum(1)
    c = (run_weights * (image_weights @ cue.T.astype(np.float64))).sum(1)
    total = (run_weights * image_weights.sum(1, keepdims=True)).sum(1)
    return s, c, total


def shape_bias(
    shape: np.ndarray, cue: np.ndarray, weights: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[float, float, float]:
    """Shape bias of decisions [runs, n] (`shape`: the prediction is the shape's class,
    `cue`: the cue's), pooled over runs, and its 95% bootstrap interval (`weights`:
    `inference.bootstrap_weights` for n images and the runs). NaN when no decision follows
    either."""
    s, c, _ = _replicates(shape, cue, weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        replicates = s / (s + c)
    total = shape.sum() + cue.sum()
    value = float(shape.sum() / total) if total else float("nan")
    low, high = np.nanpercentile(replicates, [2.5, 97.5]) if total else (np.nan, np.nan)
    return value, float(low), float(high)


def either_share(
    shape: np.ndarray, cue: np.ndarray, weights: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[float, float, float]:
    """The share of decisions [runs, n] that follow the shape or the cue (one image's two
    classes differ), pooled over runs, with its 95% bootstrap interval."""
    s, c, total = _replicates(shape, cue, weights)
    low, high = np.percentile((s + c) / total, [2.5, 97.5])
    return float((shape.sum() + cue.sum()) / shape.size), float(low), float(high)


def decisions(
    shape: np.ndarray,
    cue: np.ndarray,
    guesser: float,
    weights: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, float | str]:
    """One layer's decisions [runs, n] measured: the share that follow either cue and the
    shape bias, each with its interval; no shape bias (NaN, and why in `note`) where the
    share's interval reaches the `guesser`'s 2/K."""
    value, low, high = shape_bias(shape, cue, weights)
    either, either_low, either_high = either_share(shape, cue, weights)
    note = ""
    if either_low <= guesser:
        value = low = high = float("nan")
        note = (
            f"decisions follow the shape or the cue no more often than a guesser's "
            f"{guesser:.3g} (2/K) within the interval: no shape bias"
        )
    return {
        "either_fraction": either,
        "either_ci_low": either_low,
        "either_ci_high": either_high,
        "guesser_either": guesser,
        "shape_bias": value,
        "shape_bias_ci_low": low,
        "shape_bias_ci_high": high,
        "note": note,
    }


def decodabilities(summary: pd.DataFrame | None) -> dict[tuple, dict[str, float]]:
    """(dataset, backbone, representation, layer, probe) -> the `shape` and `cue` targets'
    mean accuracy and 95% interval over runs, from summary.csv's within rows."""
    if summary is None:
        return {}
    rows = summary[
        summary["target"].isin(list(DECODED))
        & (summary["representation"] == summary["train_representation"])
    ]
    out: dict[tuple, dict[str, float]] = {}
    for row in rows.itertuples(index=False):
        key = (row.dataset, row.backbone, row.representation, str(row.layer), row.probe)
        name = DECODED[row.target]
        out.setdefault(key, {}).update(
            {
                f"{name}_decodability": float(row.accuracy_mean),
                f"{name}_decodability_ci_low": float(row.accuracy_ci_low),
                f"{name}_decodability_ci_high": float(row.accuracy_ci_high),
            }
        )
    return out


def table(
    prediction_paths: list[str],
    data_paths: dict[str, str],
    data_specs: dict[str, dict],
    reference: str | None,
    summary: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per (dataset, backbone, tested on, trained on, layer, probe) of the
    predictions files given (target `class`, under runs/ or transfer/ as report/tables.py reads
    them), with each dataset's cue labels from its data store, and beside it the shape and
    cue decodabilities of the representation tested on (from `summary`, NaN where the
    dataset lists no `shape` or `cue` target)."""
    decoded = decodabilities(summary)
    cues, classes = {}, {}
    for dataset, path in data_paths.items():
        with store.reading(path, data_specs[dataset]) as group:
            cues[dataset], names = preparation.read_target(group, "cue", f"data store {path}")
            classes[dataset] = len(names)
    load = run_files.prediction_loader(prediction_paths, reference)
    rows = []
    for key in dict.fromkeys(parse_run_path(path, reference)[0] for path in prediction_paths):
        dataset, backbone, representation, trained_on, transfer, _, probe = key
        p = load(*key)
        image, label = p["image"], p["label"]
        cue = cues[dataset][image]  # [runs, n]
        if (cue == label).any():
            raise ValueError(
                f"{'/'.join(key)}: test images whose cue agrees with the shape; the data "
                f"store of {dataset} is not a cue-conflict set (rerun its train jobs)"
            )
        weights = inference.bootstrap_weights(image.shape[1], image.shape[0])
        guesser = 2.0 / classes[dataset]
        for j, layer in enumerate(p["layers"]):
            predicted = p["predicted"][:, j]
            follows_shape, follows_cue = predicted == label, predicted == cue
            measured = decisions(follows_shape, follows_cue, guesser, weights)
            context = decoded.get((dataset, backbone, representation, str(layer), probe), {})
            rows.append(
                {
                    "dataset": dataset,
                    "backbone": backbone,
                    "representation": representation,
                    "train_representation": trained_on,
                    "transfer": transfer,
                    "reference": reference,
                    "layer": str(layer),
                    "probe": probe,
                    "n_runs": int(image.shape[0]),
                    "n_test_images": int(len(np.unique(image))),
                    "shape_fraction": float(follows_shape.mean()),
                    "cue_fraction": float(follows_cue.mean()),
                    **measured,
                    **context,
                }
            )
    out = pd.DataFrame(rows, columns=COLUMNS)
    log.info("shape bias of %d layers from %d predictions files", len(out), len(prediction_paths))
    return out
