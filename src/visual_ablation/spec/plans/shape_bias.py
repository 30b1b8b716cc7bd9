"""The shape-bias stage: cue-conflict datasets' class probes, within and transferred."""

from __future__ import annotations

from visual_ablation.spec import layout
from visual_ablation.spec.config import CUE_CONFLICT
from visual_ablation.spec.plans import train, transfer
from visual_ablation.vocabulary import CLASS


def datasets(exp) -> list[str]:
    """Datasets whose test images set shape against another cue, sorted: the shape bias
    job's params whatever order the config wrote them in."""
    return sorted(d for d, spec in exp.datasets.items() if spec["source"] == CUE_CONFLICT)


def predictions(exp) -> list[str]:
    """The predictions files shape bias reads: the class probes (within and transfer)
    of cue-conflict datasets."""
    chosen = datasets(exp)
    files_of = [(job, exp.layout.run_predictions) for job in train.jobs(exp)]
    files_of += [(job, exp.layout.transfer_predictions) for job in transfer.variant_jobs(exp)]
    return [
        job.file(template)
        for job, template in files_of
        if job.dataset in chosen and job.target == CLASS
    ]


def figures(exp) -> list[str]:
    """One shape-bias figure per (cue-conflict dataset, probe)."""
    return [
        layout.fill(exp.layout.shape_bias_figure, dataset=d, probe=p)
        for d in datasets(exp)
        for p in exp.probes
    ]


def targets(exp) -> list[str]:
    return figures(exp)
