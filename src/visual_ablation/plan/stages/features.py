"""The feature stage: one store per (dataset, backbone, representation), and the
inventory of every store."""

from __future__ import annotations

from visual_ablation.plan.stages.jobs import FeatureJob

AFTER = ("data", "weights")


def jobs(exp) -> list[FeatureJob]:
    """Every feature store, in config order (datasets, backbones, representations)."""
    return [
        FeatureJob(d, b, r)
        for d in exp.datasets
        for b in exp.backbones
        for r in exp.representations_of(d, b)
    ]


def targets(exp) -> list[str]:
    return [exp.layout.feature_table]


def describe(exp) -> str:
    def named(things, kind: str) -> str:
        return f"{len(things)} {kind}{'s' if len(things) > 1 else ''} ({', '.join(things)})"

    # names sorted: the text (the report_text job's params) whatever the config's order
    text = (
        f"Layer-wise visual ablation of {named(sorted(exp.datasets), 'dataset')} through "
        f"{named(sorted(exp.representations), 'representation')} (image transforms that "
        f"each remove one visual cue) and {named(sorted(exp.backbones), 'backbone')}: every "
        "layer's features computed once per (dataset, backbone, representation)."
    )
    if any(spec["model"] == "image_statistics" for spec in exp.backbones.values()):
        text += (
            " Image statistics (mean colour, amplitude spectrum, edge density) are a "
            "no-network baseline."
        )
    return text
