"""The cache's semantics (docs/operations.md, "Where the cache lives and how to reuse or
clear it"): what a dry run plans after each kind of change, checked by running Snakemake on
a tiny config."""

from __future__ import annotations

import csv
import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import zarr
from conftest import ASSETS, Workflow, copy_workflow, tiny_config

from visual_ablation.data.procedural import ShapesSource

# tiny config: 1 dataset x 2 backbones x 2 representations x 2 probes x 3 runs
TRAIN_JOBS = 2 * 2 * 2 * 3
# original's heads on grayscale: one job per train job of grayscale, writing both variants
TRANSFER_JOBS = 2 * 2 * 3
PLOT_JOBS = 1  # every (dataset, backbone, probe)'s figures
# the summary's report page (table_page) follows the summary
REPORT_JOBS = {"aggregate": 1, "plots": PLOT_JOBS, "table_page": 1, "all": 1}
# the report's landing text names the runs, probes, targets and transfer variants: a change
# of any of them writes it again
LANDING = {"report_text": 1}
# linear CKA: one job per (backbone, representation other than original), table, 2 figures
# (with REPORT_JOBS: the summary's and the similarity table's pages)
SIMILARITY_JOBS = {"similarity": 2, "similarity_table": 1, "similarity_plot": 2, "table_page": 2}

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


def counts(jobs) -> dict[str, int]:
    return dict(Counter(rule for rule, _ in jobs))


def outputs(jobs, rule):
    return sorted(out for r, out in jobs if r == rule)


def test_full_run_makes_every_store_and_the_table(built):
    results = built.workdir / "results"
    for backbone in ("effnet", "pixels"):
        for rep in ("original", "grayscale"):
            store = zarr.open_group(results / "features" / "digits" / backbone / f"{rep}.zarr")
            assert store.attrs["complete"] is True
            assert store.attrs["n_images"] == 200
    table = (results / "feature_stores.csv").read_text().splitlines()
    assert len(table) == 1 + 2 * 2 + 2 * 1  # effnet: 2 layers x 2 reps; pixels: 1 x 2


def test_full_run_makes_runs_metrics_summary_and_figures(built):
    results = built.workdir / "results"
    rows = list(csv.DictReader(open(results / "metrics.csv")))
    # layers: effnet 2, pixels 1; x 2 representations x 2 probes x 3 runs, and the
    # original's probes tested on grayscale, as trained and re-standardised
    assert len(rows) == (2 + 1) * 2 * 2 * 3 + (2 + 1) * 2 * 3 * 2
    for column in ["dataset", "backbone", "representation", "train_representation"]:
        assert column in rows[0]
    for column in ["target", "layer", "probe", "run"]:
        assert column in rows[0]
    for column in ["accuracy", "balanced_accuracy", "macro_f1", "nll", "ece", "best_epoch"]:
        assert column in rows[0]
    for column in ["epochs", "train_seconds", "n_train", "n_val", "n_test"]:
        assert column in rows[0]
    assert {r["run"] for r in rows} == {"0", "1", "2"}
    assert {(r["n_train"], r["n_val"], r["n_test"]) for r in rows} == {("130", "30", "40")}
    summary = list(csv.DictReader(open(results / "summary.csv")))
    assert len(summary) == (2 + 1) * 2 * 2 + (2 + 1) * 2 * 2
    assert {s["n_runs"] for s in summary} == {"3"}
    assert {s["target"] for s in summary} == {"class"}
    gray = [s for s in summary if s["representation"] == "grayscale"]
    assert {(s["train_representation"], s["transfer"]) for s in gray} == {
        ("grayscale", "none"),
        ("original", "as-trained"),
        ("original", "restandardised"),
    }
    assert all(s["n_pairs"] == "3" and s["accuracy_p_holm"] != "" for s in gray)
    # resampled splits (the default): the 3 runs' test sets of 40 images overlap
    assert all(40 < int(s["n_test_images"]) < 120 for s in gray)
    figures = sorted(str(p.relative_to(results / "figures")) for p in results.rglob("*.png"))
    assert figures == sorted(
        [
            f"digits/{b}/{p}/{name}.png"
            for b in ("effnet", "pixels")
            for p in ("linear", "mlp")
            for name in ("accuracy_by_layer", "difference_heatmap", "targets_by_layer")
        ]
        + [f"digits/{b}/similarity.png" for b in ("effnet", "pixels")]
        + ["digits/representations.png"]
    )
    # linear CKA to original, per layer: digits are grey, so grayscale changes little
    similar = list(csv.DictReader(open(results / "similarity.csv")))
    assert [(r["backbone"], r["representation"], r["layer"]) for r in similar] == [
        ("effnet", "grayscale", "stem"),
        ("effnet", "grayscale", "blocks.0"),
        ("pixels", "grayscale", "pixels"),
    ]
    assert all(float(r["cka"]) > 0.95 and r["n_images"] == "200" for r in similar)
    # every train job keeps its per-image test predictions next to its csv
    predictions = np.load(results / "runs/digits/effnet/grayscale/class/mlp/run1.predictions.npz")
    assert list(predictions["layers"]) == ["stem", "blocks.0"]
    assert predictions["predicted"].shape == (1, 2, 40)
    rows = [r for r in rows if r["backbone"] == "effnet" and r["representation"] == "grayscale"]
    rows = [r for r in rows if r["train_representation"] == "grayscale"]
    row = next(r for r in rows if r["probe"] == "mlp" and r["run"] == "1" and r["layer"] == "stem")
    correct = predictions["predicted"][0, 0] == predictions["label"][0]
    assert correct.mean() == pytest.approx(float(row["accuracy"]))
    # the original's heads on grayscale: the original's test images of each run
    moved = np.load(
        results / "transfer/as-trained/digits/effnet/grayscale/class/mlp/run1.predictions.npz"
    )
    trained = np.load(results / "runs/digits/effnet/original/class/mlp/run1.predictions.npz")
    assert moved["predicted"].shape == (1, 2, 40)
    assert np.array_equal(moved["image"], trained["image"])


def test_complete_run_has_nothing_to_do(built):
    assert built.planned() == []


def reversed_mappings(value):
    """`value` with every mapping's keys in reverse order, at every depth."""
    if isinstance(value, dict):
        return {k: reversed_mappings(v) for k, v in reversed(list(value.items()))}
    return value


def stimuli_copy(root) -> str:
    """Geirhos-style cue-conflict stimuli enough to split: each committed conflict image
    (tests/assets/texture-vs-shape) under 8 shape numbers, 128 images in all."""
    import shutil
    from pathlib import Path

    subset = ASSETS / "texture-vs-shape" / "stimuli"
    folder = Path(root) / "style-transfer-preprocessed-512"
    for image in (subset / "style-transfer-preprocessed-512").rglob("*.png"):
        shape, texture = image.stem.split("-")
        if shape.rstrip("0123456789") == texture.rstrip("0123456789"):
            continue
        (folder / image.parent.name).mkdir(parents=True, exist_ok=True)
        for i in range(8):
            name = f"{shape.rstrip('0123456789')}{i + 1}-{texture}.png"
            shutil.copy(image, folder / image.parent.name / name)
    return str(folder)


def every_rule_config(stimuli: str) -> dict:
    """A tiny config that plans every rule but fetch_weights and fetch_stimuli (planned
    only when weights or stimuli are to be downloaded): a cue-conflict dataset (shape
    bias), Geirhos' stimuli (the network's own decisions), shapes (amnesic probing, transfer,
    similarity), an untrained twin (drawn beside its backbone) and a backbone whose layers
    are not in depth (image statistics)."""
    layers = {"layers": ["stem", "blocks.0"], "image_size": 32}
    return tiny_config(
        datasets={
            "geirhos": {
                "source": "geirhos",
                "path": stimuli,
                "image_size": 32,
                "representations": ["original"],
            },
            "shapes": {
                "source": "synthetic-shapes",
                "n": 200,
                "image_size": 16,
                "targets": ["class", "colour"],
            },
            "conflict": {
                "source": "synthetic-cue-conflict",
                "n": 600,  # the conflict images (about a fifth) split in 3
                "image_size": 16,
                "cue": "texture",
                "targets": ["class", "shape", "cue"],
                "representations": ["original"],
            },
        },
        backbones={
            "effnet": {"model": "efficientnet_lite0", "weights": "pretrained", **layers},
            "untrained": {"model": "efficientnet_lite0", "weights": "none", **layers},
            "statistics": {"model": "image_statistics", "image_size": 16},
        },
        transfer=["as-trained", "restandardised"],
        runs=2,
        training={"threads": 1, "runs_per_job": 2},
    )


@pytest.mark.slow
def test_the_same_config_in_another_key_order_plans_nothing_of_any_rule(tmp_path):
    """Every rule's params are canonical: mappings written in another order (datasets,
    backbones, probes, their keys, representations as a mapping) mean the same
    experiment, for every rule of the workflow."""
    wf = Workflow(copy_workflow(tmp_path / "repo"), tmp_path / "work")
    config = every_rule_config(stimuli_copy(tmp_path / "stimuli"))
    wf.write_config(config)
    listed = wf.run("--list-rules").stdout.split()
    assert {rule for rule, _ in wf.planned()} == set(listed) - {"fetch_weights", "fetch_stimuli"}
    wf.run()
    config = reversed_mappings(config)
    config["representations"] = {"grayscale": {}, "original": {}}  # as a mapping
    wf.write_config(config, "reordered.yaml")
    assert wf.planned(config="reordered.yaml") == []


def test_more_runs_plan_only_the_new_train_jobs(built):
    jobs = built.planned("--config", "runs=5")
    assert counts(jobs) == {
        "train": 2 * 2 * 2 * 2,
        "transfer": 2 * 2 * 2,
        **REPORT_JOBS,
        **LANDING,
    }
    assert all(out.endswith(("/run3.csv", "/run4.csv")) for out in outputs(jobs, "transfer"))
    expected = [
        f"results/runs/digits/{b}/{r}/class/{p}/run{run}.csv"
        for b in ("effnet", "pixels")
        for r in ("grayscale", "original")
        for p in ("linear", "mlp")
        for run in (3, 4)
    ]
    assert outputs(jobs, "train") == sorted(expected)


def test_a_new_probe_config_plans_only_its_train_jobs(built):
    config = tiny_config()
    config["probes"]["wide"] = {"hidden": 64, "max_epochs": 20}
    built.write_config(config, "new_probe.yaml")
    jobs = built.planned(config="new_probe.yaml")
    assert counts(jobs) == {
        "train": 2 * 2 * 3,
        "transfer": 2 * 3,
        "aggregate": 1,
        "plots": PLOT_JOBS,
        "table_page": 1,
        "all": 1,
        **LANDING,
    }
    assert all("/wide/run" in out for out in outputs(jobs, "train") + outputs(jobs, "transfer"))


def pixels_config(datasets: dict, **overrides) -> dict:
    """A tiny config of the pixels backbone alone, one linear probe, 2 runs in one job."""
    return tiny_config(
        datasets=datasets,
        backbones={"pixels": {"model": "pixels", "image_size": 8}},
        probes={"linear": {"hidden": 0, "max_epochs": 30, "patience": 5}},
        runs=2,
        training={"threads": 1, "runs_per_job": 2},
        **overrides,
    )


def test_a_new_target_or_transfer_variant_plans_only_its_own_jobs(built, tmp_path):
    wf = Workflow(built.root, tmp_path / "targets")
    config = pixels_config(
        {"shapes": {"source": "synthetic-shapes", "n": 300, "image_size": 16}},
        transfer=["as-trained"],
    )
    wf.write_config(config)
    wf.run()
    # amnesic probing of the original's pixels: every factor's subspace found and removed
    amnesic = list(csv.DictReader(open(wf.workdir / "results" / "amnesic.csv")))
    for method in ("inlp", "leace"):
        rows = [row for row in amnesic if row["method"] == method]
        assert [row["factor"] for row in rows] == list(ShapesSource.factor_names)
        colour = next(row for row in rows if row["factor"] == "colour")
        before, after = (
            float(colour["factor_accuracy_before"]),
            float(colour["factor_accuracy_after"]),
        )
        assert before > 0.5 > after, method
        assert float(colour["directions"]) >= 5  # at least the span of 6 hue sextants' means
    assert (wf.workdir / "results/figures/shapes/pixels/linear/amnesic.png").exists()
    config["datasets"]["shapes"]["targets"] = ["class", "colour"]
    wf.write_config(config, "colour.yaml")
    jobs = wf.planned(config="colour.yaml")
    # the data and feature stores hold every factor already: train and transfer only
    assert counts(jobs) == {"train": 2, "transfer": 1, **REPORT_JOBS, "plots": 1, **LANDING}
    assert all("/colour/" in out for out in outputs(jobs, "train") + outputs(jobs, "transfer"))
    wf.run(config="colour.yaml")
    # a second transfer variant: the transfer jobs (both targets) again, now writing both
    # variants' files, then the report
    config["transfer"] = ["as-trained", "restandardised"]
    wf.write_config(config, "variants.yaml")
    jobs = wf.planned(config="variants.yaml")
    assert counts(jobs) == {"transfer": 2, **REPORT_JOBS, "plots": 1, **LANDING}
    wf.run(config="variants.yaml")
    written = sorted((wf.workdir / "results/transfer/restandardised").rglob("run*.csv"))
    assert len([p for p in written if not p.name.endswith(".predictions.csv")]) == 2
    summary = list(csv.DictReader(open(wf.workdir / "results" / "summary.csv")))
    colour = {(s["representation"], s["transfer"]): s for s in summary if s["target"] == "colour"}
    assert len(colour) == 4 and {s["n_classes"] for s in colour.values()} == {"6"}
    # colour is decodable from the original's pixels; grayscale removes it, and the
    # original's colour probes lose it on grayscale images, re-standardised or not
    assert float(colour["original", "none"]["balanced_accuracy_mean"]) > 0.5
    assert float(colour["grayscale", "as-trained"]["accuracy_diff"]) < -0.2
    assert float(colour["grayscale", "restandardised"]["accuracy_diff"]) < -0.2
    assert (wf.workdir / "results/figures/shapes/pixels/linear/targets_by_layer.png").exists()


def test_changing_one_probes_lr_replans_only_its_train_jobs(built):
    config = tiny_config()
    config["probes"]["mlp"]["lr"] = 0.003
    built.write_config(config, "lr.yaml")
    jobs = built.planned(config="lr.yaml")
    assert counts(jobs) == {"train": 2 * 2 * 3, "transfer": 2 * 3, **REPORT_JOBS}
    assert all("/mlp/run" in out for out in outputs(jobs, "train") + outputs(jobs, "transfer"))


def test_rerunning_a_train_job_gives_the_same_csv(built):
    target = "results/runs/digits/effnet/grayscale/class/mlp/run1.csv"
    path = built.workdir / target

    def without_timings():
        rows = list(csv.DictReader(open(path)))
        return [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]

    before, mtime = without_timings(), path.stat().st_mtime_ns
    built.run(target, "--forcerun", target)
    assert path.stat().st_mtime_ns != mtime  # it really ran again
    assert without_timings() == before
    built.run()  # bring aggregate and plots up to date for the tests that follow


def test_runs_per_job_trains_runs_together_with_the_same_numbers(built, tmp_path):
    """runs_per_job=3: one job per (store, probe) for runs 0-2, sharing the cache, on two
    fake GPUs; its rows must equal the one-run-per-job rows of the built experiment."""
    cache = built.workdir / "results"
    grouped = Workflow(built.root, tmp_path / "grouped")
    config = tiny_config(results_dir="grouped", cache_dir=str(cache))
    config["training"]["runs_per_job"] = 3
    grouped.write_config(config)
    jobs = grouped.planned()
    assert counts(jobs)["train"] == 2 * 2 * 2
    assert all(out.endswith("/run0-2.csv") for out in outputs(jobs, "train"))
    assert "features" not in counts(jobs)
    lock_dir = tmp_path / "locks"
    grouped.run(
        "--resources",
        "gpu=2",
        env={"VISUAL_ABLATION_GPUS": "0,1", "VISUAL_ABLATION_LOCK_DIR": str(lock_dir)},
    )

    def rows(results):
        table = csv.DictReader(open(results / "metrics.csv"))
        keys = ("backbone", "representation", "train_representation", "probe", "run", "layer")
        return {tuple(r[k] for k in keys): r for r in table}

    single, together = rows(built.workdir / "results"), rows(grouped.workdir / "grouped")
    assert together.keys() == single.keys() and len(single) == 3 * 2 * 2 * 3 + 3 * 2 * 3
    for key, row in single.items():
        assert row["best_epoch"] == together[key]["best_epoch"], key
        assert row["epochs"] == together[key]["epochs"], key
        for metric in ("accuracy", "nll", "ece", "best_val_loss"):
            assert float(together[key][metric]) == pytest.approx(float(row[metric]), rel=1e-5)
    # every GPU-tagged job took a slot on one of the two fake devices (CPU here)
    logs = list((grouped.workdir / "grouped" / "logs" / "train").rglob("*.log"))
    assert len(logs) == 8
    for log in logs:
        assert re.search(r"GPU slot: device [01], slot \d", log.read_text()), log
    assert {p.name for p in lock_dir.iterdir()} >= {"gpu-0.slot0.lock"}


def test_report_html_contains_the_figures(built):
    built.run("--report", "report.html")
    html = (built.workdir / "report.html").read_text(errors="replace")
    assert "accuracy_by_layer.png" in html and "difference_heatmap.png" in html
    assert "targets_by_layer.png" in html
    assert "similarity.png" in html
    assert "summary.csv" in html and "similarity.csv" in html  # browsable tables
    # ... and shown as tables: their HTML pages are in the report
    assert "summary.html" in html and "similarity.html" in html
    page = (built.workdir / "results" / "tables" / "summary.html").read_text()
    assert page.count("<tr") == len(pd.read_csv(built.workdir / "results" / "summary.csv")) + 1
    # the landing text says what this experiment ran, and nothing it did not
    assert "Layer-wise visual ablation of 1 dataset (digits)" in html
    assert "shape bias" not in html.lower() and "amnesic probing" not in html.lower()
    landing = (built.workdir / "results" / "report.rst").read_text()
    assert "``metrics.csv``, ``similarity.csv``, ``summary.csv``." in landing


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
    assert counts(jobs) == {
        "features": 2,
        "feature_table": 1,
        "train": 2 * 2 * 3,  # effnet's stores only
        "transfer": 2 * 3,
        **REPORT_JOBS,
        # effnet's grayscale CKA; the table, its page and both figures read it
        "similarity": 1,
        "similarity_table": 1,
        "similarity_plot": 2,
        "table_page": 2,
    }
    assert all("/effnet/" in out for out in outputs(jobs, "train"))


def test_changing_one_backbones_normalization_replans_exactly_its_feature_jobs(built):
    config = tiny_config()
    config["backbones"]["effnet"]["normalization"] = "imagenet"  # its own is tf-lite
    built.write_config(config, "normalization.yaml")
    jobs = built.planned(config="normalization.yaml")
    assert outputs(jobs, "features") == [
        "results/features/digits/effnet/grayscale.zarr",
        "results/features/digits/effnet/original.zarr",
    ]
    assert counts(jobs) == {
        "features": 2,
        "feature_table": 1,
        "train": 2 * 2 * 3,
        "transfer": 2 * 3,
        **REPORT_JOBS,
        **SIMILARITY_JOBS,
        "similarity": 1,
    }


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
    assert counts(jobs)["train"] == 2 * 2 * 3
    assert counts(jobs)["transfer"] == 2 * 2 * 3  # original's heads on edges, both variants
    assert counts(jobs)["representation_examples"] == 1  # the figure shows every one
    assert all("/edges/" in out for out in outputs(jobs, "train") + outputs(jobs, "transfer"))
    assert outputs(jobs, "similarity") == [
        "results/similarity/digits/effnet/edges.csv",
        "results/similarity/digits/pixels/edges.csv",
    ]


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


def test_new_split_replans_only_train_jobs(built):
    """The split is drawn by train jobs from the labels: changing it keeps every data and
    feature store."""
    for name, split in {
        "split.yaml": {"val": 0.15, "test": 0.2, "seed": 1},
        "shared_split.yaml": {"val": 0.15, "test": 0.2, "seed": 0, "resample": False},
    }.items():
        built.write_config(tiny_config(split=split), name)
        assert counts(built.planned(config=name)) == {
            "train": TRAIN_JOBS,
            "transfer": TRANSFER_JOBS,
            **REPORT_JOBS,
        }


def test_new_subset_size_replans_the_data_and_every_feature_store_of_that_dataset(built):
    digits = {"source": "sklearn-digits", "n": 250, "image_size": 16}
    built.write_config(tiny_config(datasets={"digits": digits}), "n.yaml")
    assert counts(built.planned(config="n.yaml")) == {
        "prepare_data": 1,
        "features": 4,
        "feature_table": 1,
        "train": TRAIN_JOBS,
        "transfer": TRANSFER_JOBS,
        "representation_examples": 1,
        **REPORT_JOBS,
        **SIMILARITY_JOBS,
    }


def bumped(text: str, name: str) -> str:
    """plan/config.py's text with the version constant `name` one higher, whatever it is now."""
    new, count = re.subn(
        rf"^{name} = (\d+)$", lambda m: f"{name} = {int(m[1]) + 1}", text, flags=re.M
    )
    assert count == 1, name
    return new


def test_package_edit_keeps_cache_but_format_bump_replans_features(built):
    module = built.root / "src" / "visual_ablation" / "features/extraction.py"
    config_py = built.root / "src" / "visual_ablation" / "plan/config.py"
    module_text, config_text = module.read_text(), config_py.read_text()
    try:
        module.write_text(module_text + "\n# an edit that does not change what features mean\n")
        assert built.planned() == []
        config_py.write_text(bumped(config_text, "FEATURE_FORMAT_VERSION"))
        jobs = built.planned()
        assert counts(jobs) == {
            "features": 4,
            "feature_table": 1,
            "train": TRAIN_JOBS,
            "transfer": TRANSFER_JOBS,
            **REPORT_JOBS,
            **SIMILARITY_JOBS,
        }
        # a new probe format re-plans every train job and no feature job
        config_py.write_text(bumped(config_text, "PROBE_FORMAT_VERSION"))
        assert counts(built.planned()) == {
            "train": TRAIN_JOBS,
            "transfer": TRANSFER_JOBS,
            **REPORT_JOBS,
        }
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
    assert not (results / "runs").exists()
    left = counts(wf.planned())
    assert "features" not in left and "prepare_data" not in left


def test_two_experiments_share_one_cache_and_a_mismatched_store_is_refused(built, tmp_path):
    cache = built.workdir / "results"
    # same definitions, separate results: reuses every store, recomputes nothing
    same = Workflow(built.root, tmp_path / "expB")
    same.write_config(tiny_config(results_dir="resultsB", cache_dir=str(cache)))
    left = counts(same.planned())
    assert "features" not in left and "prepare_data" not in left
    assert left["train"] == TRAIN_JOBS
    same.run("resultsB/feature_stores.csv")
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
    # the first job to read a shared store refuses it (a train job reads the data store)
    assert "n: store has 200, config has 300" in proc.output
    assert "--forcerun" in proc.output
    assert not (other.workdir / "resultsC" / "feature_stores.csv").exists()


def test_a_cue_conflict_dataset_gets_a_shape_bias_per_layer(built, tmp_path):
    wf = Workflow(built.root, tmp_path / "conflict")
    conflict = {
        "source": "synthetic-cue-conflict",
        "n": 1000,
        "image_size": 16,
        "cue": "colour",
        "targets": ["class", "shape", "cue"],
    }
    config = pixels_config({"conflict": conflict}, representations=["original"])
    wf.write_config(config)
    wf.run()
    results = wf.workdir / "results"
    rows = list(csv.DictReader(open(results / "shape_bias.csv")))
    assert len(rows) == 1
    row = rows[0]
    assert (row["backbone"], row["layer"], row["n_runs"]) == ("pixels", "pixels", "2")
    # the test images are the conflict ones, the same in both runs
    assert 170 < int(row["n_test_images"]) < 230
    # 8 px pixels: the colour decides far more often than the shape
    assert float(row["cue_fraction"]) > 2 * float(row["shape_fraction"])
    assert float(row["shape_bias"]) < 0.35
    low, high = float(row["shape_bias_ci_low"]), float(row["shape_bias_ci_high"])
    assert low <= float(row["shape_bias"]) <= high
    # its context: most decisions follow one of the two, and each cue decoded on the
    # conflict images alone (where they disagree): the colour better than the shape
    assert float(row["either_ci_low"]) > float(row["guesser_either"]) == 0.25
    cue, shape = float(row["cue_decodability"]), float(row["shape_decodability"])
    assert cue > shape + 0.2 and cue > 0.3  # chance: 1/8
    assert row["note"] == ""
    trained = list(csv.DictReader(open(results / "metrics.csv")))
    n_train = {r["target"]: int(r["n_train"]) + int(r["n_val"]) + int(r["n_test"]) for r in trained}
    assert n_train["shape"] == n_train["cue"] == int(row["n_test_images"])
    assert (results / "figures" / "conflict" / "linear" / "shape_bias.png").exists()
    # no similarity or transfer without a second representation
    assert not (results / "similarity.csv").exists() and not (results / "transfer").exists()
