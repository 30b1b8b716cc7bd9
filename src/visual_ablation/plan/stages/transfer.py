"""The transfer stage: the reference's heads tested on every other representation."""

from __future__ import annotations

from visual_ablation.plan.stages import train
from visual_ablation.plan.stages.jobs import RunJob

AFTER = ("train",)  # the reference's heads


def jobs(exp) -> list[RunJob]:
    """One job per train job of a representation other than the reference, for the same
    runs (so more runs plan only the new groups' jobs), writing every transfer variant's
    files: the variants read the same heads and features, and a job's fixed cost is most
    of its time (a new variant re-plans these cheap jobs). None without a reference or
    a variant."""
    if exp.reference is None or not exp.transfer:
        return []
    return [job for job in train.jobs(exp) if job.representation != exp.reference]


def variant_jobs(exp) -> list[RunJob]:
    """Each transfer job's key once per variant (`transfer`), variant-major: whose files
    the report reads."""
    return [job._replace(transfer=variant) for variant in exp.transfer for job in jobs(exp)]


def targets(exp) -> list[str]:
    return []  # the report reads every run's files


def describe(exp) -> str:
    if not jobs(exp):
        return ""
    return (
        f"The probes trained on ``{exp.reference}`` are tested on every other "
        f"representation (transfer: {', '.join(sorted(exp.transfer))})."
    )
