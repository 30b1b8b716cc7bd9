"""The transfer stage: the reference's heads tested on every other representation."""

from __future__ import annotations

from visual_ablation.spec.plans import train
from visual_ablation.spec.plans.jobs import RunJob


def jobs(exp) -> list[RunJob]:
    """One job per transfer variant (`transfer`) and train job of a representation other
    than the reference, for the same runs (so more runs plan only the new groups' jobs,
    and a new variant only its own). None without a reference."""
    if exp.reference is None:
        return []
    return [
        job._replace(transfer=variant)
        for variant in exp.transfer
        for job in train.jobs(exp)
        if job.representation != exp.reference
    ]


def targets(exp) -> list[str]:
    return []  # the report reads every run's files
