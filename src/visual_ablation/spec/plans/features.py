"""The feature stage: one store per (dataset, backbone, representation), and the
inventory of every store."""

from __future__ import annotations

from visual_ablation.spec.plans.jobs import FeatureJob


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
