"""The similarity stage: CKA of each representation's store to the reference's."""

from __future__ import annotations

from visual_ablation import layout
from visual_ablation.plan.stages import features

AFTER = ("features",)
TABLE = "similarity"
JOB = "similarity/{dataset}/{backbone}/{representation}.csv"  # linear CKA per layer
FIGURE = "figures/{dataset}/{backbone}/similarity.png"  # a heatmap per (dataset, backbone)


def jobs(exp) -> list[str]:
    """One CKA table per (dataset, backbone, representation other than the reference);
    none without a reference."""
    if exp.reference is None:
        return []
    return [
        layout.fill(exp.layout.result(JOB), dataset=d, backbone=b, representation=r)
        for d, b, r in features.jobs(exp)
        if r != exp.reference
    ]


def figures(exp) -> list[str]:
    """One CKA heatmap per (dataset, backbone), when there is something to compare."""
    if exp.reference is None:
        return []
    compared = {(d, b) for d, b, r in features.jobs(exp) if r != exp.reference}
    return [
        layout.fill(exp.layout.result(FIGURE), dataset=d, backbone=b)
        for d in exp.datasets
        for b in exp.backbones
        if (d, b) in compared
    ]


def targets(exp) -> list[str]:
    return figures(exp)


def describe(exp) -> str:
    if not jobs(exp):
        return ""
    return (
        f"Linear CKA of each layer to ``{exp.reference}``, on the same images (``similarity.csv``)."
    )
