"""The jobs stages plan, as named tuples: a feature store's key and a train or transfer
job's key (the run wildcard is its runs' label)."""

from __future__ import annotations

from typing import NamedTuple

from visual_ablation import layout


class FeatureJob(NamedTuple):
    dataset: str
    backbone: str
    representation: str


class RunJob(NamedTuple):
    """One train job (or a transfer job of the same key, `transfer` its variant): every
    layer of one store, one target and probe config, a group of runs."""

    dataset: str
    backbone: str
    representation: str
    target: str
    probe: str
    runs: tuple[int, ...]
    transfer: str = layout.WITHIN

    def file(self, template: str) -> str:
        """This job's file of a run template (layout.py: run_table, run_heads, ...)."""
        return layout.fill(
            template,
            dataset=self.dataset,
            backbone=self.backbone,
            representation=self.representation,
            target=self.target,
            probe=self.probe,
            run=layout.run_label(list(self.runs)),
            transfer=self.transfer,
        )
