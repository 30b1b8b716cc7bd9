"""The train stage: one job per (feature store, target, probe config, group of runs)."""

from __future__ import annotations

from visual_ablation.plan.stages import features
from visual_ablation.plan.stages.jobs import RunJob
from visual_ablation.vocabulary import CLASS, CONTROL

AFTER = ("features",)


def run_groups(exp) -> list[list[int]]:
    """Runs 0..runs-1 in consecutive groups of `runs_per_job`, one train job each.
    Groups are aligned to multiples of runs_per_job, so raising `runs` keeps every
    full group's csv."""
    k = exp.runs_per_job
    return [list(range(s, min(s + k, exp.runs))) for s in range(0, exp.runs, k)]


def jobs(exp) -> list[RunJob]:
    """Every train job in config order (datasets, backbones, representations, targets,
    probes, runs); the control target on the reference representation only (it measures
    the probe, not a cue)."""
    groups = [tuple(runs) for runs in run_groups(exp)]
    return [
        RunJob(d, b, r, t, p, runs)
        for d, b, r in features.jobs(exp)
        for t in exp.targets.get(d, [CLASS])
        if t != CONTROL or r == exp.reference
        for p in exp.probes
        for runs in groups
    ]


def targets(exp) -> list[str]:
    return []  # the report reads every run's files


def describe(exp) -> str:
    targets = sorted({job.target for job in jobs(exp)})
    return (
        f"Probes ({', '.join(sorted(exp.probes))}) trained on the features of every layer for each "
        f"target ({', '.join(targets)}), over {exp.runs} runs per probe config."
    )
