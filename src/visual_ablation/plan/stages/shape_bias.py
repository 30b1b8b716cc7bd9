"""The shape-bias stage: cue-conflict datasets' class probes, within and transferred, and
the networks' own decisions on Geirhos et al.'s cue-conflict stimuli."""

from __future__ import annotations

from visual_ablation import layout
from visual_ablation.data.stimuli import GeirhosStimuliSource
from visual_ablation.features import backbones
from visual_ablation.plan.config import CUE_CONFLICT
from visual_ablation.plan.stages import train, transfer
from visual_ablation.plan.stages.jobs import FeatureJob
from visual_ablation.vocabulary import CLASS

AFTER = ("train", "transfer", "report")  # class probes' predictions, the summary's cues
TABLE = "shape_bias"
# one figure per (cue-conflict dataset, probe), a line per backbone
FIGURE = "figures/{dataset}/{probe}/shape_bias.png"
# the network's own 16-way decision on each cue-conflict stimulus (Geirhos et al.)
DECISIONS = "decisions/{dataset}/{backbone}/{representation}.npz"
# the networks' own shape bias per representation, beside the human reference
DECISION_FIGURE = "figures/{dataset}/decision_shape_bias.png"


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


def decision_datasets(exp) -> list[str]:
    """Datasets of Geirhos et al.'s cue-conflict stimuli, sorted."""
    return sorted(
        d
        for d, spec in exp.datasets.items()
        if spec["source"] == GeirhosStimuliSource.name and spec["stimuli"] == "cue-conflict"
    )


def decides(spec: dict) -> bool:
    """Whether a backbone may have a trained head of its own to decide with: a network with
    weights (a job finds out whether its output is ImageNet-1k's; if not, it says so and
    gives no row)."""
    return backbones.family(spec).uses_weights and spec.get("weights") not in (None, "none")


def decision_jobs(exp) -> list[FeatureJob]:
    """One decisions job per (Geirhos cue-conflict dataset, deciding backbone,
    representation)."""
    return [
        FeatureJob(d, b, r)
        for d in decision_datasets(exp)
        for b in sorted(exp.backbones)
        if decides(exp.backbones[b])
        for r in exp.representations_of(d, b)
    ]


def decision_files(exp) -> list[str]:
    return [
        layout.fill(exp.layout.result(DECISIONS), dataset=d, backbone=b, representation=r)
        for d, b, r in decision_jobs(exp)
    ]


def figures(exp) -> list[str]:
    """One shape-bias figure per (cue-conflict dataset, probe), and one of the networks'
    own decisions per Geirhos dataset that has decisions jobs."""
    decided = sorted({job.dataset for job in decision_jobs(exp)})
    return [
        layout.fill(exp.layout.result(FIGURE), dataset=d, probe=p)
        for d in datasets(exp)
        for p in exp.probes
    ] + [layout.fill(exp.layout.result(DECISION_FIGURE), dataset=d) for d in decided]


def targets(exp) -> list[str]:
    return figures(exp)


def describe(exp) -> str:
    text = []
    if datasets(exp):
        text.append(
            f"On the cue-conflict set ({', '.join(datasets(exp))}): the shape bias of each "
            "layer's class probe beside the share of decisions that follow either cue and "
            "each cue's own decodability (``shape_bias.csv``)."
        )
    decided = sorted({job.dataset for job in decision_jobs(exp)})
    if decided:
        text.append(
            f"On Geirhos et al.'s cue-conflict stimuli ({', '.join(decided)}; "
            "github.com/rgeirhos/texture-vs-shape, CC BY 4.0): each pretrained network's "
            "own shape bias from its ImageNet head, beside the humans' 0.959."
        )
    return "\n\n".join(text)
