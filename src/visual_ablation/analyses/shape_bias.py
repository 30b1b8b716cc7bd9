"""Shape bias per layer on cue-conflict images (Geirhos et al. 2019, "ImageNet-trained
CNNs are biased towards texture"): of the test decisions that follow either the shape
or the conflicting cue, the fraction that follow the shape. Computed from the per-image
predictions of the probes of the dataset's own labels (`class`: the shape), within each
representation and transferred from the reference, and the cue's class of each image
(the data store's `cue` factor). The interval is a bootstrap over test images (Poisson
weights) and runs (inference.bootstrap_weights), as the other image-level intervals.
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
    "reference",
    "layer",
    "probe",
    "n_runs",
    "n_test_images",
    "shape_fraction",
    "cue_fraction",
    "shape_bias",
    "shape_bias_ci_low",
    "shape_bias_ci_high",
]


def shape_bias(
    shape: np.ndarray, cue: np.ndarray, weights: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[float, float, float]:
    """Shape bias of decisions [runs, n] (`shape`: the prediction is the shape's class,
    `cue`: the cue's), pooled over runs, and its 95% bootstrap interval (`weights`:
    `inference.bootstrap_weights` for n images and the runs). NaN when no decision follows
    either."""
    runs, n = shape.shape
    image_weights, run_weights = weights or inference.bootstrap_weights(n, runs)
    s = image_weights @ shape.T.astype(np.float64)  # [replicates, runs]
    c = image_weights @ cue.T.astype(np.float64)
    s, c = (run_weights * s).sum(1), (run_weights * c).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        replicates = s / (s + c)
    total = shape.sum() + cue.sum()
    value = float(shape.sum() / total) if total else float("nan")
    low, high = np.nanpercentile(replicates, [2.5, 97.5]) if total else (np.nan, np.nan)
    return value, float(low), float(high)


def table(
    prediction_paths: list[str],
    data_paths: dict[str, str],
    data_specs: dict[str, dict],
    reference: str | None,
) -> pd.DataFrame:
    """One row per (dataset, backbone, tested on, trained on, layer, probe) of the
    predictions files given (target `class`, under runs/ or transfer/ as report/tables.py reads
    them), with each dataset's cue labels from its data store."""
    cues = {}
    for dataset, path in data_paths.items():
        with store.reading(path, data_specs[dataset]) as group:
            cues[dataset] = preparation.read_target(group, "cue", f"data store {path}")[0]
    load = run_files.prediction_loader(prediction_paths, reference)
    rows = []
    for key in dict.fromkeys(parse_run_path(path, reference)[0] for path in prediction_paths):
        dataset, backbone, representation, trained_on, _, probe = key
        p = load(*key)
        image, label = p["image"], p["label"]
        cue = cues[dataset][image]  # [runs, n]
        if (cue == label).any():
            raise ValueError(
                f"{'/'.join(key)}: test images whose cue agrees with the shape; the data "
                f"store of {dataset} is not a cue-conflict set (rerun its train jobs)"
            )
        weights = inference.bootstrap_weights(image.shape[1], image.shape[0])
        for j, layer in enumerate(p["layers"]):
            predicted = p["predicted"][:, j]
            follows_shape, follows_cue = predicted == label, predicted == cue
            value, low, high = shape_bias(follows_shape, follows_cue, weights)
            rows.append(
                {
                    "dataset": dataset,
                    "backbone": backbone,
                    "representation": representation,
                    "train_representation": trained_on,
                    "reference": reference,
                    "layer": str(layer),
                    "probe": probe,
                    "n_runs": int(image.shape[0]),
                    "n_test_images": int(len(np.unique(image))),
                    "shape_fraction": float(follows_shape.mean()),
                    "cue_fraction": float(follows_cue.mean()),
                    "shape_bias": value,
                    "shape_bias_ci_low": low,
                    "shape_bias_ci_high": high,
                }
            )
    out = pd.DataFrame(rows, columns=COLUMNS)
    log.info("shape bias of %d layers from %d predictions files", len(out), len(prediction_paths))
    return out
