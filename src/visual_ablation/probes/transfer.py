"""The transfer stage: the heads trained on the reference representation, tested on
another representation's features of the same test images (Geirhos et al. 2018's
question: does the network, as trained, still work when a cue is gone?).

A train job keeps its best heads with the standardisation they were trained with and
its train rows (`run_files.write_heads`); a transfer job applies them to the other store's
features, in one of two ways (`variant`, vocabulary.TRANSFER_VARIANTS):
- `as-trained`: with the reference's standardisation, unchanged. An ablation moves the
  features' means and scales, so this mixes a shift of the feature statistics with the
  loss of a cue (predictions collapse onto a few classes);
- `restandardised`: the tested store standardised with its own train-split mean and std
  (the same train rows; no labels), so that what remains is the heads' use of what the
  features still carry (Schneider et al. 2020 adapt normalisation statistics the same
  way).
Nothing is recomputed or retrained. Its rows and predictions have the train
job's format, with `train_representation` the reference, so the aggregate tests them
against the reference's own rows on the same images like any other representation.
numpy only: a transfer job needs no torch (tests/probes/test_transfer.py checks that the heads
applied to the reference's own store give its train job's test probabilities).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from visual_ablation.data import data_store
from visual_ablation.features import feature_store
from visual_ablation.plumbing import store
from visual_ablation.probes import metrics, run_files
from visual_ablation.probes.standardisation import train_statistics
from visual_ablation.vocabulary import TRANSFER_VARIANTS

log = logging.getLogger(__name__)


def head_proba(
    weights: list[np.ndarray], mean: np.ndarray, std: np.ndarray, x: np.ndarray
) -> np.ndarray:
    """Class probabilities [n, classes] of one head on raw features x [n, dim]: the
    standardisation and the head's ops in float32 as in training, softmax in float64."""
    z = (x.astype(np.float32) - mean) / std
    logits = z @ weights[0] + weights[1]
    if len(weights) == 4:
        logits = np.maximum(logits, 0.0) @ weights[2] + weights[3]
    logits = logits.astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    proba = np.exp(logits)
    return proba / proba.sum(axis=1, keepdims=True)


def transfer_store(
    heads_paths: list[str],
    feature_path: str,
    data_path: str,
    feature_spec: dict[str, Any],
    data_spec: dict[str, Any],
    target: str,
    variants: list[str] | tuple[str, ...] = TRANSFER_VARIANTS,
) -> list[tuple[list[dict[str, Any]], dict[str, np.ndarray]]]:
    """The heads of `heads_paths` (trained on the reference) on the test rows of their
    runs in the store at `feature_path`, applied as each of `variants` says: per variant,
    its csv rows and per-image predictions (the heads and the store read once)."""
    unknown = [v for v in variants if v not in TRANSFER_VARIANTS]
    if unknown:
        raise ValueError(f"unknown transfer {unknown[0]!r}: one of {', '.join(TRANSFER_VARIANTS)}")
    trained_rows, values = run_files.read_heads(heads_paths)
    heads_path = ", ".join(heads_paths)
    with store.reading(data_path, data_spec) as group:
        labels, _ = data_store.read_target(group, target, f"data store {data_path}")
    features = feature_store.read(feature_path, feature_spec)
    runs = list(dict.fromkeys(int(row["run"]) for row in trained_rows))
    layers = list(dict.fromkeys(row["layer"] for row in trained_rows))
    missing = [layer for layer in layers if layer not in features]
    if missing:
        raise ValueError(
            f"feature store {feature_path} lacks layer(s) {', '.join(missing)} of the heads in "
            f"{heads_path}: rerun the train job that wrote them (its backbone's layers changed)"
        )
    representation = feature_spec["representation"]["name"]
    image = np.stack([values[f"{run}/{layers[0]}/test_rows"] for run in runs])
    out = []
    for variant in variants:
        proba, rows = {}, []
        for trained in trained_rows:
            run, layer = int(trained["run"]), trained["layer"]
            key = f"{run}/{layer}"
            weights = [values[f"{key}/w{k}"] for k in range(4) if f"{key}/w{k}" in values]
            test_rows = values[f"{key}/test_rows"]
            if features[layer].shape[1] != weights[0].shape[0]:
                raise ValueError(
                    f"layer {layer!r} of {feature_path} has {features[layer].shape[1]} "
                    f"features, the heads in {heads_path} take {weights[0].shape[0]}: rerun "
                    "their train job"
                )
            mean, std = values[f"{key}/mean"], values[f"{key}/std"]
            if variant == "restandardised":
                mean, std = train_statistics(features[layer], values[f"{key}/train_rows"])
            proba[run, layer] = head_proba(weights, mean, std, features[layer][test_rows])
            rows.append(
                {
                    **trained,
                    "representation": representation,
                    "transfer": variant,
                    **metrics.classification_metrics(labels[test_rows], proba[run, layer]),
                }
            )
        log.info(
            "%d heads trained on %s tested on %s, %s (%d test images per run)",
            len(rows),
            trained_rows[0]["train_representation"],
            representation,
            variant,
            image.shape[1],
        )
        ordered = [{column: row[column] for column in run_files.COLUMNS} for row in rows]
        out.append((ordered, run_files.prediction_arrays(proba, image, labels, runs, layers)))
    return out
