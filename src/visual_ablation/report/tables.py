"""The report stage: run tables and per-image predictions -> metrics.csv and summary.csv
-> figures; and the figure of what each representation does to a few images."""

from __future__ import annotations

import logging
import os

import pandas as pd

from visual_ablation.analyses import stats
from visual_ablation.plumbing import outputs
from visual_ablation.probes.metrics import RUN_KEYS
from visual_ablation.vocabulary import REPRESENTATION_DEFAULTS

log = logging.getLogger(__name__)


def read_runs(paths: list[str]) -> pd.DataFrame:
    """Every run table, in the given order, checked to share one set of columns."""
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


def write_table(table: pd.DataFrame, path: str) -> None:
    """A table as csv (atomic; floats to 10 significant digits)."""
    with outputs.replacing(path) as partial:
        table.to_csv(partial, index=False, float_format="%.10g")


def model_key(path: str, reference: str | None) -> tuple[str, ...]:
    """(dataset, backbone, representation, train_representation, target, probe) of a
    train or transfer job's file, from its path (spec/layout.py: runs/ or transfer/, then
    {dataset}/{backbone}/{representation}/{target}/{probe}/run...)."""
    stage, dataset, backbone, representation, target, probe = path.replace(os.sep, "/").split("/")[
        -7:-1
    ]
    trained_on = reference if stage == "transfer" else representation
    return dataset, backbone, representation, trained_on, target, probe


def prediction_loader(paths: list[str], reference: str | None) -> stats.PredictionLoader:
    """(dataset, backbone, representation, train_representation, target, probe) -> that
    model's per-image predictions over all its runs, from the train and transfer jobs'
    .npz files (`paths`, one per run group, under runs/ or transfer/, then
    {dataset}/{backbone}/{representation}/{target}/{probe}/; a transfer job's heads were
    trained on `reference`)."""
    import numpy as np

    by_model: dict[tuple[str, ...], list[str]] = {}
    for path in paths:
        by_model.setdefault(model_key(path, reference), []).append(path)

    def load(*key: str):
        files = by_model.get(key)
        if not files:
            raise ValueError(
                f"no per-image predictions for {'/'.join(key)} (dataset, backbone, tested on, "
                "trained on, target, probe): rerun its train or transfer jobs"
            )
        parts = []
        for path in files:
            with np.load(path, allow_pickle=False) as archive:
                parts.append({key: archive[key] for key in archive.files})
        layers = parts[0]["layers"]
        if any(list(part["layers"]) != list(layers) for part in parts):
            raise ValueError(f"prediction files {files} disagree on layers: rerun their jobs")
        joined = {"layers": layers}
        for key in ("runs", "image", "label", "predicted", "p_true", "confidence"):
            joined[key] = np.concatenate([part[key] for part in parts])
        return joined

    return load


def aggregate(
    paths: list[str],
    prediction_paths: list[str],
    metrics_path: str,
    summary_path: str,
    reference: str | None,
    resampled: bool | list[str] = False,
    threads: int = 1,
) -> None:
    """metrics.csv and summary.csv (stats.summarise; `resampled`: whether, or for which
    datasets, each run drew its own test split)."""
    metrics = read_runs(paths)
    duplicated = metrics.duplicated(RUN_KEYS)
    if duplicated.any():
        raise ValueError(
            f"duplicate run rows: {metrics[duplicated][RUN_KEYS].head().to_dict('records')}"
        )
    summary = stats.summarise(
        metrics,
        prediction_loader(prediction_paths, reference),
        reference=reference,
        resampled=resampled,
        threads=threads,
    )
    write_table(metrics, metrics_path)
    write_table(summary, summary_path)
    log.info(
        "%d run rows from %d tables -> %d summary rows", len(metrics), len(paths), len(summary)
    )


def figures(
    summary_path: str,
    dataset: str,
    backbone: str,
    probe: str,
    by_layer_path: str,
    difference_path: str,
    targets_path: str,
    reference: str | None,
    untrained: str | None = None,
) -> None:
    """The figures of one (dataset, backbone, probe); `untrained`: the backbone that is
    this one with random weights, whose reference line the accuracy figure shows too."""
    from visual_ablation.report import plots

    summary = pd.read_csv(summary_path)
    part, title = plots.selected(summary, dataset, backbone, probe)
    twin = None
    if untrained is not None:
        twin = (untrained, plots.selected(summary, dataset, untrained, probe)[0])
    plots.accuracy_by_layer(part, title, by_layer_path, reference=reference, untrained=twin)
    plots.difference_heatmap(part, title, difference_path, reference=reference)
    plots.targets_by_layer(part, title, targets_path, reference=reference)


def representation_figure(
    data_path: str,
    data_spec: dict,
    representations: dict[str, dict],
    reference: str | None,
    path: str,
    images: int = 6,
) -> None:
    """The first image of each of the first `images` classes of a data store, through
    every representation, exactly as the feature jobs transform them (same image index,
    so the same random draws). Columns: the reference, then the vocabulary's order of
    kinds, whatever order the config wrote them in."""
    import numpy as np
    import torch

    from visual_ablation.features import representations as transforms
    from visual_ablation.plumbing import store
    from visual_ablation.report import plots

    with store.reading(data_path, data_spec) as group:
        labels = group["labels"][:]
        names = list(group.attrs["class_names"])
        classes = list(dict.fromkeys(labels.tolist()))[:images]
        index = np.array([int(np.flatnonzero(labels == c)[0]) for c in classes])
        batch = group["images"].get_orthogonal_selection((index, slice(None)))
    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float() / 255.0
    kinds = list(REPRESENTATION_DEFAULTS)
    order = sorted(
        representations,
        key=lambda n: (n != reference, kinds.index(representations[n]["kind"]), n),
    )
    shown = {}
    for name in order:
        rep = representations[name]
        y = transforms.build(rep["kind"], rep["params"])(x, torch.from_numpy(index))
        shown[name] = y.clamp(0, 1).permute(0, 2, 3, 1).numpy()
    plots.representation_grid(shown, [names[c] for c in classes], data_spec["name"], path)
