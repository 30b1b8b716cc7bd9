"""What a train or transfer job writes, in one place: its csv (one row per run and
layer), its per-image test predictions (`.predictions.npz`) and, for a train job, its best
heads (`.heads.npz`, what transfer applies). Jobs write through here and every reader
(transfer, the analyses, the report) reads through here; paths come from layout.py
(`parse_run_path` is the inverse of its run templates). No torch: transfer and report
jobs import it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from visual_ablation.layout import ModelKey, parse_run_path
from visual_ablation.plumbing import outputs
from visual_ablation.probes import metrics

if TYPE_CHECKING:
    import pandas as pd

    from visual_ablation.probes import stacking

COUNT_COLUMNS = ["best_epoch", "epochs", "train_seconds", "n_train", "n_val", "n_test"]
EXTRA_COLUMNS = [
    "n_features",
    "n_classes",
    "best_val_loss",
    "weight_decay",
    "weight_decay_at_edge",
    "stop",
    "device",
]
COLUMNS = metrics.RUN_KEYS + list(metrics.METRICS) + COUNT_COLUMNS + EXTRA_COLUMNS
# columns that may differ between two runs of the same job (everything else must not)
TIMING_COLUMNS = ["train_seconds"]
# the predictions file's arrays joined over a model's run groups
PER_IMAGE = ("runs", "image", "label", "predicted", "p_true", "confidence")

# (dataset, backbone, representation, train_representation, transfer, target, probe) ->
# that model's predictions over all its runs (layout.py ModelKey)
PredictionLoader = Callable[..., dict[str, np.ndarray]]


def write_predictions(values: dict[str, np.ndarray], path: str) -> None:
    """A compressed .npz, written next to its final name and renamed."""
    with outputs.replacing(path) as partial, open(partial, "wb") as out:
        np.savez_compressed(out, **values)


def write_predictions_table(
    values: dict[str, np.ndarray], data_path: str, data_spec: dict[str, Any], target: str, path: str
) -> None:
    """The per-image predictions as a csv a person can read: one row per (run, test
    image) with the image's data-store row, its file (file-based sources) and true label,
    and each layer's predicted label (class names), so a mistake can be looked at."""
    from visual_ablation.data import data_store
    from visual_ablation.plumbing import store

    with store.reading(data_path, data_spec) as group:
        _, names = data_store.read_target(group, target, f"data store {data_path}")
        files = data_store.read_file_names(group)
    layers = [str(layer) for layer in values["layers"]]
    rows = []  # csv, not pandas: train and transfer jobs do not import it
    for r, run in enumerate(values["runs"]):
        for i, image in enumerate(values["image"][r]):
            row = {
                "run": int(run),
                "image": int(image),
                "file": files[image] if files is not None else "",
                "label": names[values["label"][r, i]],
            }
            for j, layer in enumerate(layers):
                row[layer] = names[values["predicted"][r, j, i]]
            rows.append(row)
    outputs.write_csv(rows, path, ["run", "image", "file", "label", *layers])


def write_heads(heads: list[stacking.HeadResult], rows: list[dict[str, Any]], path: str) -> None:
    """The heads of one train job (probes/transfer.py reads them): per (run, layer) the best
    weights and the standardisation, and the job's csv rows without their metrics (what a
    transfer row repeats: epochs, sizes, the device)."""
    values = {
        "rows": np.array(
            json.dumps([{k: v for k, v in row.items() if k not in metrics.METRICS} for row in rows])
        )
    }
    for head in heads:
        key = f"{head.run}/{head.layer}"
        values[f"{key}/test_rows"] = head.test_rows.astype(np.int64)
        values[f"{key}/train_rows"] = head.train_rows.astype(np.int64)
        values[f"{key}/mean"], values[f"{key}/std"] = head.mean, head.std
        for k, weight in enumerate(head.weights):
            values[f"{key}/w{k}"] = weight
    with outputs.replacing(path) as partial, open(partial, "wb") as out:
        np.savez(out, **values)


def write_csv(rows: list[dict[str, Any]], path: str) -> None:
    """One train or transfer job's csv (atomic, `outputs.write_csv`)."""
    outputs.write_csv(rows, path, COLUMNS)


def predictions(
    heads: list[stacking.HeadResult], labels: np.ndarray, runs: list[int]
) -> dict[str, np.ndarray]:
    """Per-image test predictions of every head, for image-level tests (analyses/stats.py):
    `image` [runs, n_test] (data-store rows), `label` [runs, n_test], and per (run,
    layer): `predicted` class (int16), `p_true` (the true class's probability) and
    `confidence` (the top one), float32 [runs, layers, n_test]."""
    layers = list(dict.fromkeys(head.layer for head in heads))
    by_key = {(head.run, head.layer): head for head in heads}
    image = np.stack([by_key[run, layers[0]].test_rows for run in runs]).astype(np.int64)
    proba = {(run, layer): by_key[run, layer].test_proba for run in runs for layer in layers}
    return prediction_arrays(proba, image, labels, runs, layers)


def prediction_arrays(
    proba: dict[tuple[int, str], np.ndarray],
    image: np.ndarray,
    labels: np.ndarray,
    runs: list[int],
    layers: list[str],
) -> dict[str, np.ndarray]:
    """The predictions file's arrays from each (run, layer)'s test probabilities on its
    run's test rows `image` [runs, n_test]."""
    label = labels[image]
    shape = (len(runs), len(layers), image.shape[1])
    out = {
        "predicted": np.zeros(shape, np.int16),
        "p_true": np.zeros(shape, np.float32),
        "confidence": np.zeros(shape, np.float32),
    }
    for r, run in enumerate(runs):
        for j, layer in enumerate(layers):
            p = proba[run, layer]
            out["predicted"][r, j] = p.argmax(axis=1)
            out["p_true"][r, j] = p[np.arange(len(p)), label[r]]
            out["confidence"][r, j] = p.max(axis=1)
    return {
        "runs": np.array(runs, dtype=np.int64),
        "layers": np.array(layers),
        "image": image,
        "label": label.astype(np.int64),
        **out,
    }


def read_heads(paths: list[str]) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Train jobs' heads files: their rows (without metrics) and arrays, joined."""
    rows, values = [], {}
    for path in paths:
        with np.load(path, allow_pickle=False) as archive:
            values |= {key: archive[key] for key in archive.files if key != "rows"}
            rows += json.loads(str(archive["rows"]))
    return rows, values


def read_runs(paths: list[str]) -> pd.DataFrame:
    """Every run table, in the given order, checked to share one set of columns."""
    import pandas as pd

    tables = []
    for path in paths:
        table = pd.read_csv(path)
        if tables and list(table.columns) != list(tables[0].columns):
            raise ValueError(
                f"run table {path} has columns {list(table.columns)}, unlike "
                f"{paths[0]} ({list(tables[0].columns)}). Rerun its train job: "
                f"snakemake --cores all --forcerun {path}"
            )
        if table.empty:
            raise ValueError(f"run table {path} has no rows. Rerun it: snakemake --forcerun {path}")
        tables.append(table)
    if not tables:
        raise ValueError("no run tables to aggregate: check config keys probes and runs")
    return pd.concat(tables, ignore_index=True)


def prediction_loader(paths: list[str], reference: str | None) -> PredictionLoader:
    """A ModelKey's fields -> that model's per-image predictions over all its runs, from
    the train and transfer jobs' .npz files (`paths`, one per run group, under runs/ or
    transfer/{variant}/, then {dataset}/{backbone}/{representation}/{target}/{probe}/; a
    transfer job's heads were trained on `reference`)."""
    by_model: dict[ModelKey, list[str]] = {}
    for path in paths:
        by_model.setdefault(parse_run_path(path, reference)[0], []).append(path)

    def load(*key: str) -> dict[str, np.ndarray]:
        files = by_model.get(ModelKey(*key))
        if not files:
            raise ValueError(
                f"no per-image predictions for {'/'.join(key)} (dataset, backbone, tested on, "
                "trained on, transfer, target, probe): rerun its train or transfer jobs"
            )
        parts = []
        for path in files:
            with np.load(path, allow_pickle=False) as archive:
                parts.append({key: archive[key] for key in archive.files})
        layers = parts[0]["layers"]
        if any(list(part["layers"]) != list(layers) for part in parts):
            raise ValueError(f"prediction files {files} disagree on layers: rerun their jobs")
        joined = {"layers": layers}
        for key in PER_IMAGE:
            joined[key] = np.concatenate([part[key] for part in parts])
        return joined

    return load
