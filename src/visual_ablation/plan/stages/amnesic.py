"""The amnesic stage: each factor's decodable subspace removed from the reference store,
the reference's class heads tested on what is left (analyses/amnesic.py)."""

from __future__ import annotations

from typing import NamedTuple

from visual_ablation import layout
from visual_ablation.data.sources import SOURCES
from visual_ablation.plan.stages import train
from visual_ablation.plan.stages.jobs import RunJob
from visual_ablation.vocabulary import CLASS

AFTER = ("train",)  # the reference's class heads
TABLE = "amnesic"
JOB = "amnesic/{dataset}/{backbone}/run{run}.csv"  # one reference store, a group of runs
# its heads' per-image correctness (intact, erased, random): the table's paired intervals
PREDICTIONS = "amnesic/{dataset}/{backbone}/run{run}.predictions.npz"


class AmnesicJob(NamedTuple):
    dataset: str
    backbone: str
    runs: tuple[int, ...]


def factors(exp, dataset: str) -> list[str]:
    """The factors removed on a dataset: `amnesic.factors` (every one its source stores
    by default) that its source stores. None for a source that fixes its test images: its
    class heads train where the cue is the class, so removing the cue removes the class."""
    spec = exp.datasets[dataset]
    source = SOURCES[spec["source"]]
    if source.fixes_test:
        return []
    chosen = exp.amnesic["factors"]
    return [f for f in source.stored_factors(spec) if chosen is None or f in chosen]


def jobs(exp) -> list[AmnesicJob]:
    """One job per (dataset, backbone, group of runs) whose reference store has class
    heads and whose dataset has factors to remove."""
    if exp.reference is None:
        return []
    heads = {(j.dataset, j.backbone, j.runs) for j in train.jobs(exp) if j.target == CLASS}
    return [
        AmnesicJob(d, b, runs)
        for d, b, runs in dict.fromkeys(
            (j.dataset, j.backbone, j.runs)
            for j in train.jobs(exp)
            if j.representation == exp.reference
        )
        if (d, b, runs) in heads and factors(exp, d)
    ]


def job_file(exp, job: AmnesicJob, template: str | None = None) -> str:
    """One of the job's files: its rows (JOB) or another `template` (PREDICTIONS)."""
    return layout.fill(
        exp.layout.result(template or JOB),
        dataset=job.dataset,
        backbone=job.backbone,
        run=layout.run_label(list(job.runs)),
    )


def heads(exp, dataset: str, backbone: str, runs: tuple[int, ...]) -> dict[str, str]:
    """{probe: the heads file of the reference's class train job} of one amnesic job."""
    return {
        probe: RunJob(dataset, backbone, exp.reference, CLASS, probe, runs).file(
            exp.layout.run_heads
        )
        for probe in exp.probes
    }


def figure_keys(exp) -> list[tuple[str, str, str]]:
    """The (dataset, backbone, probe) of each amnesic figure (those with amnesic jobs),
    sorted: whatever order the config wrote them in."""
    return sorted({(j.dataset, j.backbone, p) for j in jobs(exp) for p in exp.probes})


def figures(exp) -> list[str]:
    """One figure per (dataset, backbone, probe) with amnesic jobs, drawn in one job."""
    return [
        layout.fill(exp.layout.figure, dataset=d, backbone=b, probe=p, figure="amnesic")
        for d, b, p in figure_keys(exp)
    ]


def targets(exp) -> list[str]:
    return [exp.layout.table(TABLE), *figures(exp)] if jobs(exp) else []


def describe(exp) -> str:
    planned = sorted({j.dataset for j in jobs(exp)})
    if not planned:
        return ""
    removed = "; ".join(f"{d}: {', '.join(factors(exp, d))}" for d in planned)
    return (
        f"Amnesic probing: each factor ({removed}) erased from ``{exp.reference}``'s "
        "features by two erasers (INLP, LEACE), the class heads tested unchanged on what "
        "is left, against as many random directions removed (``amnesic.csv``)."
    )
