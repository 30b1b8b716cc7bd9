"""The stages as the plan finds them (plan/stages/__init__.py): every stage module found, in
the order of what each reads, one rule file each, the tables and the landing text from what
the experiment plans."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
import yaml

from visual_ablation.plan import stages
from visual_ablation.plan.config import resolve

REPO = Path(__file__).resolve().parents[2]


def shipped(name: str):
    config = yaml.safe_load((REPO / "config" / name).read_text())
    config.setdefault("split", {"val": 0.15, "test": 0.2, "seed": 0})
    return resolve(config)


def test_every_stage_is_found_after_the_stages_it_reads_with_its_rule_file():
    names = [stages.name(stage) for stage in stages.STAGES]
    position = {name: i for i, name in enumerate(names)}
    for stage in stages.STAGES:
        if stage.AFTER != stages.EVERY:
            assert all(position[before] < position[stages.name(stage)] for before in stage.AFTER)
    assert names[-1] == "tables"  # it reads every other stage's table
    # one rule file per stage, and no rule file that is not a stage's (but the shared one)
    rule_files = {path.stem for path in (REPO / "workflow" / "rules").glob("*.smk")}
    assert rule_files == {*names, "common"}
    assert {"amnesic", "shape_bias", "similarity", "transfer", "report"} <= set(names)


def test_tables_and_landing_text_follow_what_the_experiment_plans():
    default = shipped("config.yaml")
    assert stages.planned_tables(default) == ["similarity", "amnesic", "summary", "shape_bias"]
    text = stages.description(default)
    assert "Amnesic probing" in text and "cue-conflict set (conflict)" in text
    assert "``shape_bias.csv``." in text.splitlines()[-1]
    # a digits experiment: no factor to erase, no cue-conflict images, no reference
    digits = resolve(
        {
            "datasets": {"d": {"source": "sklearn-digits"}},
            "representations": {"gray": {"kind": "grayscale"}},
            "backbones": {"p": {"model": "pixels"}},
        }
    )
    assert stages.planned_tables(digits) == ["summary"]
    text = stages.description(digits)
    assert "Layer-wise visual ablation of 1 dataset (d)" in text
    for absent in ("Amnesic", "shape bias", "CKA", "transfer", "similarity.csv"):
        assert absent not in text
    assert stages.targets(digits)[-1].endswith("report.rst")


def stage(name: str, **attributes) -> ModuleType:
    module = ModuleType(f"visual_ablation.plan.stages.{name}")
    module.__dict__.update(targets=lambda exp: [], **attributes)
    return module


def test_a_stage_without_its_place_or_reading_an_unknown_stage_is_refused():
    found = {stages.name(s): s for s in stages.STAGES}
    with pytest.raises(ImportError, match=r"stages.extra has targets\(\) but no AFTER"):
        stages.in_order({**found, "extra": stage("extra")})
    with pytest.raises(ImportError, match=r"extra.AFTER names no stage: \['typo'\]"):
        stages.in_order({**found, "extra": stage("extra", AFTER=("typo",))})
    loop = {"a": stage("a", AFTER=("b",)), "b": stage("b", AFTER=("a",))}
    with pytest.raises(ImportError, match="stages read each other: a -> b -> a"):
        stages.in_order(loop)
    ordered = stages.in_order({**found, "extra": stage("extra", AFTER=("amnesic",))})
    names = [stages.name(s) for s in ordered]
    assert names.index("extra") > names.index("amnesic") and names[-1] == "tables"
    assert len(ordered) == len(stages.STAGES) + 1
