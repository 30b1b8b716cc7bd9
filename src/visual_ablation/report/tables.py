"""The report stage: run tables and per-image predictions -> metrics.csv and summary.csv
-> figures; and the figure of what each representation does to a few images."""

from __future__ import annotations

import logging
import os

import pandas as pd

from visual_ablation.analyses import stats
from visual_ablation.plumbing import outputs
from visual_ablation.probes import run_files
from visual_ablation.probes.metrics import RUN_KEYS
from visual_ablation.vocabulary import REPRESENTATION_DEFAULTS

log = logging.getLogger(__name__)


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
    metrics = run_files.read_runs(paths)
    duplicated = metrics.duplicated(RUN_KEYS)
    if duplicated.any():
        raise ValueError(
            f"duplicate run rows: {metrics[duplicated][RUN_KEYS].head().to_dict('records')}"
        )
    summary = stats.summarise(
        metrics,
        run_files.prediction_loader(prediction_paths, reference),
        reference=reference,
        resampled=resampled,
        threads=threads,
    )
    outputs.write_table(metrics, metrics_path)
    outputs.write_table(summary, summary_path)
    log.info(
        "%d run rows from %d tables -> %d summary rows", len(metrics), len(paths), len(summary)
    )


def figures(
    summary_path: str,
    figures_of: list[tuple[tuple[str, str, str], tuple[str, str, str]]],
    reference: str | None,
    untrained: dict[str, str | None] | None = None,
) -> None:
    """The figures of each (dataset, backbone, probe) of `figures_of`, to its (accuracy by
    layer, difference heatmap, targets by layer) paths; `untrained`: each backbone's twin
    with random weights, whose reference line its accuracy figure shows too."""
    from visual_ablation.report import plots

    summary = pd.read_csv(summary_path)
    for (dataset, backbone, probe), (by_layer, difference, targets) in figures_of:
        part, title = plots.selected(summary, dataset, backbone, probe)
        twin = (untrained or {}).get(backbone)
        if twin is not None:
            twin = (twin, plots.selected(summary, dataset, twin, probe)[0])
        plots.accuracy_by_layer(part, title, by_layer, reference=reference, untrained=twin)
        plots.difference_heatmap(part, title, difference, reference=reference)
        plots.targets_by_layer(part, title, targets, reference=reference)


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

    from visual_ablation.data import data_store
    from visual_ablation.features import representations as transforms
    from visual_ablation.plumbing import store
    from visual_ablation.report import plots

    with store.reading(data_path, data_spec) as group:
        labels = data_store.class_labels(group)
        names = data_store.class_names(group)
        classes = list(dict.fromkeys(labels.tolist()))[:images]
        index = np.array([int(np.flatnonzero(labels == c)[0]) for c in classes])
        batch = data_store.images(group).get_orthogonal_selection((index, slice(None)))
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


def html_page(csv_path: str, path: str, title: str) -> None:
    """A csv as an HTML table for the report (numbers to 4 significant digits; the csv
    keeps them all)."""
    table = pd.read_csv(csv_path)
    body = table.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="", border=0)
    style = (
        "body{font-family:sans-serif;font-size:12px}table{border-collapse:collapse}"
        "th,td{padding:2px 6px;border-bottom:1px solid #ddd;text-align:right}"
        "th{position:sticky;top:0;background:#f4f4f4}"
    )
    html = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{style}</style></head><body><h3>{title}</h3>"
        f"<p>{len(table)} rows; the full numbers are in {os.path.basename(csv_path)}.</p>"
        f"{body}</body></html>"
    )
    with outputs.replacing(path) as partial, open(partial, "w", encoding="utf-8") as f:
        f.write(html)
