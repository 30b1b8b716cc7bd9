"""The report stage: metrics.csv and summary.csv from every train and transfer job, and
the figures per (dataset, backbone, probe) and per dataset."""

from __future__ import annotations

from visual_ablation.data.sources import SOURCES
from visual_ablation.spec import layout
from visual_ablation.spec.plans import train, transfer

FIGURES = ("accuracy_by_layer", "difference_heatmap", "targets_by_layer")


def run_tables(exp) -> list[str]:
    """Every train job's csv, then every transfer job's, in config order: the order of
    metrics.csv."""
    return [job.file(exp.layout.run_table) for job in train.jobs(exp)] + [
        job.file(exp.layout.transfer_table) for job in transfer.jobs(exp)
    ]


def run_predictions(exp) -> list[str]:
    """Every train and transfer job's predictions file, in the order of `run_tables`."""
    return [job.file(exp.layout.run_predictions) for job in train.jobs(exp)] + [
        job.file(exp.layout.transfer_predictions) for job in transfer.jobs(exp)
    ]


def resampled_test_datasets(exp) -> list[str]:
    """Datasets whose runs each draw their own test split (`split.resample`, and a
    source that does not fix the test images): their intervals over runs get the
    corrected resampled t (analyses/stats.py t_interval)."""
    if not exp.split.get("resample"):
        return []
    return [d for d, s in exp.datasets.items() if not SOURCES[s["source"]].fixes_test]


def figures(exp, figure: str) -> list[str]:
    """One figure per (dataset, backbone, probe)."""
    return [
        layout.fill(exp.layout.figure, dataset=d, backbone=b, probe=p, figure=figure)
        for d in exp.datasets
        for b in exp.backbones
        for p in exp.probes
    ]


def representation_figures(exp) -> list[str]:
    """One figure per dataset: a few of its images through every representation."""
    return [layout.fill(exp.layout.representation_figure, dataset=d) for d in exp.datasets]


def targets(exp) -> list[str]:
    return [
        exp.layout.metrics,
        exp.layout.summary,
        *(path for figure in FIGURES for path in figures(exp, figure)),
        *representation_figures(exp),
    ]
