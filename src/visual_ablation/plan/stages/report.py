"""The report stage: metrics.csv and summary.csv from every train and transfer job, and
the figures per (dataset, backbone, probe) and per dataset."""

from __future__ import annotations

from visual_ablation import layout
from visual_ablation.data import splits
from visual_ablation.data.sources import SOURCES
from visual_ablation.plan.stages import train, transfer
from visual_ablation.vocabulary import CLASS

AFTER = ("train", "transfer")  # every run's files
TABLE = "summary"  # and metrics.csv, one row per run and layer
FIGURES = ("accuracy_by_layer", "difference_heatmap", "targets_by_layer")


def run_tables(exp) -> list[str]:
    """Every train job's csv, then every transfer job's, in config order: the order of
    metrics.csv."""
    return [job.file(exp.layout.run_table) for job in train.jobs(exp)] + [
        job.file(exp.layout.transfer_table) for job in transfer.variant_jobs(exp)
    ]


def run_predictions(exp) -> list[str]:
    """Every train and transfer job's predictions file, in the order of `run_tables`."""
    return [job.file(exp.layout.run_predictions) for job in train.jobs(exp)] + [
        job.file(exp.layout.transfer_predictions) for job in transfer.variant_jobs(exp)
    ]


def resampled_test_datasets(exp) -> list[str]:
    """Datasets (`dataset`) and targets (`dataset/target`) whose runs each draw their own
    test split (`split.resample`): a source that does not fix the test images, and the
    factor targets of one that does, decoded on a split of its fixed images
    (probes/training.py target_images). Their intervals over runs get the corrected
    resampled t (analyses/stats.py t_interval). A split given with the data is every run's
    test set: its runs share their test images, as without resampling."""
    if not exp.split.get("resample"):
        return []
    out = []
    for d, spec in exp.datasets.items():
        if spec.get("split") == "given":
            continue
        if not SOURCES[spec["source"]].fixes_test:
            out.append(d)
        else:
            targets = exp.targets.get(d, [CLASS])
            out += [f"{d}/{t}" for t in targets if splits.within_fixed_test(t)]
    return sorted(out)  # a set: the aggregate job's params whatever the config's order


def figure_keys(exp) -> list[tuple[str, str, str]]:
    """The (dataset, backbone, probe) of each figure of a kind, sorted: the plots job's
    outputs and params whatever order the config wrote them in."""
    return sorted((d, b, p) for d in exp.datasets for b in exp.backbones for p in exp.probes)


def figures(exp, figure: str) -> list[str]:
    """One figure per (dataset, backbone, probe), drawn together by the plots job."""
    return [
        layout.fill(exp.layout.figure, dataset=d, backbone=b, probe=p, figure=figure)
        for d, b, p in figure_keys(exp)
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


def describe(exp) -> str:
    return (
        "``metrics.csv`` holds one row per run and layer; ``summary.csv`` the means with "
        "95% confidence intervals and the differences to "
        f"``{exp.reference}`` tested on the test images, with Holm-adjusted p-values."
        if exp.reference
        else "``metrics.csv`` holds one row per run and layer; ``summary.csv`` the means "
        "with 95% confidence intervals."
    )
