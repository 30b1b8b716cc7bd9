"""Cache semantics of DESIGN.md, checked by running Snakemake on a tiny config."""

from __future__ import annotations

import pytest
import zarr
from conftest import Workflow, copy_workflow, tiny_config

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Workflow:
    base = tmp_path_factory.mktemp("cache")
    wf = Workflow(copy_workflow(base / "repo"), base / "work")
    wf.write_config(tiny_config())
    wf.run()
    return wf


def rules(jobs):
    return sorted(rule for rule, _ in jobs)


def test_full_run_makes_every_store_and_the_table(built):
    results = built.workdir / "results"
    for backbone in ("effnet", "pixels"):
        for rep in ("original", "grayscale"):
            store = zarr.open_group(results / "features" / "digits" / backbone / f"{rep}.zarr")
            assert store.attrs["complete"] is True
            assert store.attrs["n_images"] == 200
    table = (results / "feature_stores.csv").read_text().splitlines()
    assert len(table) == 1 + 2 * 2 + 2 * 1  # effnet: 2 layers x 2 reps; pixels: 1 x 2


def test_complete_run_has_nothing_to_do(built):
    assert built.planned() == []
    # more probe runs never touch the feature cache
    assert built.planned("--config", "runs=20") == []


def test_changing_one_backbones_layers_replans_exactly_its_feature_jobs(built):
    config = tiny_config()
    config["backbones"]["effnet"]["layers"] = ["stem", "blocks.1"]
    built.write_config(config, "layers.yaml")
    jobs = built.planned(config="layers.yaml")
    features = sorted(out for rule, out in jobs if rule == "features")
    assert features == [
        "results/features/digits/effnet/grayscale.zarr",
        "results/features/digits/effnet/original.zarr",
    ]
    assert rules(jobs) == ["all", "feature_table", "features", "features"]


def test_adding_a_representation_plans_only_its_jobs(built):
    config = tiny_config(representations=["original", "grayscale", "edges"])
    built.write_config(config, "more_reps.yaml")
    jobs = built.planned(config="more_reps.yaml")
    features = sorted(out for rule, out in jobs if rule == "features")
    assert features == [
        "results/features/digits/effnet/edges.zarr",
        "results/features/digits/pixels/edges.zarr",
    ]
    assert "prepare_data" not in rules(jobs)


def test_changing_a_representation_param_replans_only_that_representation(built):
    config = tiny_config(representations={"original": {}, "grayscale": {}})
    built.write_config(config, "same_as_list.yaml")
    assert built.planned(config="same_as_list.yaml") == []  # list and mapping mean the same
    config = tiny_config(representations={"original": {}, "grayscale": {"kind": "lowpass"}})
    built.write_config(config, "param.yaml")
    features = sorted(o for r, o in built.planned(config="param.yaml") if r == "features")
    assert features == [
        "results/features/digits/effnet/grayscale.zarr",
        "results/features/digits/pixels/grayscale.zarr",
    ]


def test_new_split_rebuilds_the_data_store_and_its_features(built):
    built.write_config(tiny_config(split={"val": 0.15, "test": 0.2, "seed": 1}), "split.yaml")
    assert rules(built.planned(config="split.yaml")) == (
        ["all", "feature_table"] + ["features"] * 4 + ["prepare_data"]
    )


def test_new_subset_size_replans_the_data_and_every_feature_store_of_that_dataset(built):
    digits = {"source": "sklearn-digits", "n": 250, "image_size": 16}
    built.write_config(tiny_config(datasets={"digits": digits}), "n.yaml")
    assert rules(built.planned(config="n.yaml")) == (
        ["all", "feature_table"] + ["features"] * 4 + ["prepare_data"]
    )


def test_package_edit_keeps_cache_but_format_bump_replans_features(built):
    module = built.root / "src" / "visual_ablation" / "features.py"
    config_py = built.root / "src" / "visual_ablation" / "config.py"
    module_text, config_text = module.read_text(), config_py.read_text()
    try:
        module.write_text(module_text + "\n# an edit that does not change what features mean\n")
        assert built.planned() == []
        config_py.write_text(
            config_text.replace("FEATURE_FORMAT_VERSION = 1", "FEATURE_FORMAT_VERSION = 2")
        )
        jobs = built.planned()
        assert rules(jobs) == ["all", "feature_table"] + ["features"] * 4
    finally:
        module.write_text(module_text)
        config_py.write_text(config_text)


def test_until_features_builds_only_data_and_features(built, tmp_path):
    wf = Workflow(built.root, tmp_path / "until")
    wf.write_config(tiny_config(representations=["original"]))
    wf.run("--until", "features")
    results = wf.workdir / "results"
    assert (results / "data" / "digits.zarr").is_dir()
    assert sorted(p.name for p in (results / "features" / "digits").iterdir()) == [
        "effnet",
        "pixels",
    ]
    assert not (results / "feature_stores.csv").exists()
    assert rules(wf.planned()) == ["all", "feature_table"]


def test_two_experiments_share_one_cache_and_a_mismatched_store_is_refused(built, tmp_path):
    cache = built.workdir / "results"
    # same definitions, separate results: reuses every store, recomputes nothing
    same = Workflow(built.root, tmp_path / "expB")
    same.write_config(tiny_config(results_dir="resultsB", cache_dir=str(cache)))
    assert rules(same.planned()) == ["all", "feature_table"]
    same.run()
    assert (same.workdir / "resultsB" / "feature_stores.csv").exists()
    # the same dataset name meaning something else: refused on read, with the fix
    other = Workflow(built.root, tmp_path / "expC")
    other.write_config(
        tiny_config(
            results_dir="resultsC",
            cache_dir=str(cache),
            datasets={"digits": {"source": "sklearn-digits", "n": 300, "image_size": 16}},
        )
    )
    proc = other.run(check=False)
    assert proc.returncode != 0
    assert "was built for another config" in proc.output
    assert "dataset.n: store has 200, config has 300" in proc.output
    assert "--forcerun" in proc.output
    assert not (other.workdir / "resultsC" / "feature_stores.csv").exists()
