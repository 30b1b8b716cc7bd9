"""The report stage: run tables -> metrics.csv and summary.csv -> figures."""

from __future__ import annotations

import logging

import pandas as pd

from visual_ablation import outputs
from visual_ablation.metrics import RUN_KEYS

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


def _write(table: pd.DataFrame, path: str) -> None:
    with outputs.replacing(path) as partial:
        table.to_csv(partial, index=False, float_format="%.10g")


def aggregate(
    paths: list[str], metrics_path: str, summary_path: str, reference: str | None
) -> None:
    from visual_ablation import stats

    metrics = read_runs(paths)
    duplicated = metrics.duplicated(RUN_KEYS)
    if duplicated.any():
        raise ValueError(
            f"duplicate run rows: {metrics[duplicated][RUN_KEYS].head().to_dict('records')}"
        )
    summary = stats.summarise(metrics, reference=reference)
    _write(metrics, metrics_path)
    _write(summary, summary_path)
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
    reference: str | None,
) -> None:
    from visual_ablation import plots

    summary = pd.read_csv(summary_path)
    plots.accuracy_by_layer(summary, dataset, backbone, probe, by_layer_path, reference=reference)
    plots.difference_heatmap(
        summary, dataset, backbone, probe, difference_path, reference=reference
    )
