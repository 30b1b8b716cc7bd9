"""The shipped configs (default, quick, scale-100k, fashion-mnist) plan the jobs their
comments promise."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest
from conftest import REPO, Workflow, copy_workflow

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> Workflow:
    base = tmp_path_factory.mktemp("shipped")
    wf = Workflow(copy_workflow(base / "repo"), base / "work")
    # the Snakefile's configfile is config/config.yaml, relative to the working directory
    shutil.copytree(REPO / "config", wf.workdir / "config")
    return wf


def train_jobs_per_store(runs: int) -> int:
    """runs_per_job auto: one job per run, or every run in one where a GPU is seen."""
    import os

    from visual_ablation.plumbing import devices

    return 1 if devices.visible_gpus(dict(os.environ)) else runs


def plan(wf: Workflow, configfile: str) -> dict[str, int]:
    return dict(Counter(rule for rule, _ in wf.planned(config=configfile)))


def test_default_config_plans_the_documented_grid(shipped):
    # shapes: 3 backbones x 8 representations and the untrained one's original; conflict:
    # 4 backbones x original; every store's 3 runs in one train job (runs_per_job: 3)
    assert plan(shipped, "config/config.yaml") == {
        "prepare_data": 2,
        "features": 24 + 1 + 4,
        "feature_table": 1,
        # shapes: class on 25 stores and control on its 4 originals; conflict: 4 targets;
        # x 2 probes
        "train": (25 + 4) * 2 + 4 * 4 * 2,
        # shapes' 7 representations besides original x 3 backbones x 2 probes, each job
        # writing both variants
        "transfer": 21 * 2,
        "aggregate": 1,
        "plots": 1,  # every (dataset, backbone, probe)'s figures
        "representation_examples": 2,
        "similarity": 3 * 7,  # each representation but original, per backbone
        "similarity_table": 1,
        "similarity_plot": 3,  # shapes only: conflict has original alone
        "shape_bias": 1,
        "shape_bias_plot": 2,  # conflict x 2 probes
        "amnesic": 4,  # shapes' original per backbone (conflict: none, its cue is the class)
        "amnesic_table": 1,
        "amnesic_plot": 1,  # shapes' 4 backbones x 2 probes
        "table_page": 4,  # summary, similarity, shape_bias, amnesic as report pages
        "report_text": 1,  # the report\'s landing text
        "all": 1,
    }


def test_quick_config_is_a_smaller_variant_with_its_own_results(shipped):
    jobs = shipped.planned(config="config/quick.yaml")
    assert dict(Counter(rule for rule, _ in jobs)) == {
        "prepare_data": 2,
        "features": 3 * 4 + 1 + 4,
        "feature_table": 1,
        # runs 0-1 in one job (the default's runs_per_job); control on shapes' originals
        "train": (3 * 4 + 1 + 4) * 2 + 4 * 4 * 2,
        "transfer": 3 * 3 * 2,  # runs 0-1 in one job, both variants
        "aggregate": 1,
        "plots": 1,
        "representation_examples": 2,
        "similarity": 3 * 3,
        "similarity_table": 1,
        "similarity_plot": 3,
        "amnesic": 4,
        "amnesic_table": 1,
        "amnesic_plot": 1,
        "table_page": 4,
        "shape_bias": 1,
        "shape_bias_plot": 2,
        "report_text": 1,  # the report\'s landing text
        "all": 1,
    }
    assert all(out.startswith("results/quick/") for _, out in jobs if out)


def test_scale_config_is_the_full_grid(shipped):
    # 100k shapes x 8 representations x 2 backbones, 100k cue-conflict shapes x original;
    # x 2 probes x 10 runs (a job per run where no GPU is seen; runs_per_job auto puts
    # the 10 in one job on a GPU)
    jobs = shipped.planned(config="config/scale-100k.yaml")
    assert dict(Counter(rule for rule, _ in jobs)) == {
        "prepare_data": 2,
        "features": 24 + 1 + 4,
        "feature_table": 1,
        "train": ((25 + 4) * 2 + 4 * 4 * 2) * train_jobs_per_store(10),
        "transfer": 21 * 2 * train_jobs_per_store(10),
        "aggregate": 1,
        "plots": 1,
        "representation_examples": 2,
        "similarity": 3 * 7,
        "similarity_table": 1,
        "similarity_plot": 3,
        "amnesic": 4 * train_jobs_per_store(10),
        "amnesic_table": 1,
        "amnesic_plot": 1,
        "table_page": 4,
        "shape_bias": 1,
        "shape_bias_plot": 2,
        "report_text": 1,  # the report\'s landing text
        "all": 1,
    }
    assert all(out.startswith("results/scale-100k/") for _, out in jobs if out)


def test_power_config_is_the_default_at_ten_thousand_images(shipped):
    jobs = shipped.planned(config="config/power-10k.yaml")
    counted = dict(Counter(rule for rule, _ in jobs))
    assert counted["train"] == ((25 + 4) * 2 + 4 * 4 * 2) * train_jobs_per_store(10)
    assert counted["features"] == 29
    assert all(out.startswith("results/power-10k/") for _, out in jobs if out)


def test_fashion_mnist_config_plans_the_real_dataset_alone(shipped):
    import os

    if not os.path.isdir("/usr/share/datasets/fashion-mnist"):
        pytest.skip("Fashion-MNIST missing: apt-get install dataset-fashion-mnist")
    jobs = shipped.planned("--replace-workflow-config", config="config/fashion-mnist.yaml")
    assert dict(Counter(rule for rule, _ in jobs)) == {
        "prepare_data": 1,
        "features": 16,
        "feature_table": 1,
        "train": 16 * 2 * train_jobs_per_store(3),
        "transfer": 14 * 2 * train_jobs_per_store(3),
        "aggregate": 1,
        "plots": 1,
        "representation_examples": 1,
        "similarity": 2 * 7,
        "similarity_table": 1,
        "similarity_plot": 2,
        "table_page": 2,  # summary and similarity
        "report_text": 1,  # the report\'s landing text
        "all": 1,
    }
    # the default experiment's shapes are not in it: its own dataset and results only
    data = [out for rule, out in jobs if rule == "prepare_data"]
    assert data == ["results/fashion-mnist/data/fashion.zarr"]


def test_geirhos_config_plans_the_networks_decisions_and_both_cues(shipped):
    """config/geirhos.yaml as shipped, before the stimuli are there: their fetch first,
    the network's own decisions per representation of the pretrained backbone (the
    untrained one has no head to decide with), shape and texture probes."""
    assert not (shipped.workdir / "stimuli").exists()
    jobs = shipped.planned("--replace-workflow-config", config="config/geirhos.yaml")
    counts = dict(Counter(rule for rule, _ in jobs))
    assert counts == {
        "fetch_stimuli": 1,
        "prepare_data": 1,
        "decisions": 8,  # effnet's 8 representations
        "features": 9,  # and untrained's original
        "feature_table": 1,
        "representation_examples": 1,
        "train": 9 * 2 * 2,  # class (the shape) and texture, 2 probes; 3 runs a job
        "transfer": 7 * 2 * 2,
        "similarity": 7,
        "similarity_table": 1,
        "similarity_plot": 1,
        "amnesic": 2,  # texture erased from each backbone's original
        "amnesic_table": 1,
        "amnesic_plot": 1,
        "aggregate": 1,
        "plots": 1,
        "shape_bias": 1,
        "decision_shape_bias_plot": 1,
        "table_page": 4,  # summary, similarity, shape_bias, amnesic
        "report_text": 1,  # the report\'s landing text
        "all": 1,
    }
    decisions = sorted(out for rule, out in jobs if rule == "decisions")
    assert decisions[0] == "results/geirhos/decisions/geirhos/effnet/edges.npz"
