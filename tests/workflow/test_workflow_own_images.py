"""Your own images through the workflow: a folder whose contents change re-plans its data
store and what follows from it, and nothing else."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import tiny_config
from PIL import Image

pytestmark = pytest.mark.workflow


def write_images(folder, classes=("cat", "dog", "owl"), per_class=8, seed=0):
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            pixels[..., c] = 255  # each class has its own colour
            Image.fromarray(pixels).save(folder / name / f"{i}.png")


def test_a_changed_folder_replans_its_data_store_and_what_follows(tmp_path, workflow_copy):
    folder = tmp_path / "birds"
    write_images(folder)
    (folder / "README.txt").write_text("not an image")
    config = tiny_config(
        datasets={
            "birds": {"source": "imagefolder", "path": str(folder), "image_size": 16},
            "digits": {"source": "sklearn-digits", "n": 150, "image_size": 16},
        },
        representations=["original"],
        backbones={"pixels": {"model": "pixels", "image_size": 8}},
        probes={"linear": {"hidden": 0, "max_epochs": 5, "patience": 2}},
        runs=1,
    )
    workflow_copy.write_config(config)
    workflow_copy.run("--until", "features")
    assert workflow_copy.planned("--until", "features") == []

    (folder / "README.txt").write_text("still not an image")  # not read: nothing to do
    assert workflow_copy.planned("--until", "features") == []

    Image.new("RGB", (12, 12)).save(folder / "owl" / "new.png")
    jobs = workflow_copy.planned("--until", "features")
    assert sorted(jobs) == [
        ("features", "results/features/birds/pixels/original.zarr"),
        ("prepare_data", "results/data/birds.zarr"),
    ]
    # why, as the README says `snakemake -n` tells it
    dry_run = workflow_copy.run("-n", "--until", "features").output
    assert "reason: Params have changed since last execution" in dry_run
    # what changed, per store, one key per line (the README's command)
    changes = subprocess.run(
        [
            sys.executable,
            "-m",
            "visual_ablation.plan.changes",
            "--configfile",
            "config.yaml",
            "--replace-workflow-config",
        ],
        cwd=workflow_copy.workdir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "results/data/birds.zarr\n  manifest.files: store has 24, config has 25" in changes
    assert "dataset.manifest.files: store has 24, config has 25" in changes
    assert "4 stores: 2 as configured, 2 changed, 0 not built" in changes
    os.remove(folder / "owl" / "new.png")  # as it was: nothing to do again
    assert workflow_copy.planned("--until", "features") == []

    replaced = folder / "cat" / "0.png"
    Image.new("RGB", (12, 12), (1, 2, 3)).save(replaced)  # the same name, new content
    assert ("prepare_data", "results/data/birds.zarr") in workflow_copy.planned(
        "--until", "features"
    )


def test_the_own_images_config_runs_on_its_own(tmp_path, workflow_copy):
    """config/own-images.yaml with --replace-workflow-config: only its dataset, at the
    default experiment's sizes, under its own results folder; the data job names the
    classes it found with their counts."""
    import yaml
    from conftest import REPO

    folder = tmp_path / "pets"
    write_images(folder, per_class=30)
    Image.new("RGB", (20, 10)).save(folder / "dog" / "UPPER.JPG")
    (folder / "README.txt").write_text("notes")
    config = yaml.safe_load((REPO / "config" / "own-images.yaml").read_text())
    config["datasets"]["mine"]["path"] = str(folder)
    workflow_copy.write_config(config, "own.yaml")
    jobs = workflow_copy.planned("--replace-workflow-config", config="own.yaml")
    rules = [rule for rule, _ in jobs]
    assert rules.count("prepare_data") == 1 and rules.count("features") == 8 * 2 + 1
    assert rules.count("train") == (8 * 2 + 1) * 2  # every store's 3 runs in one job per probe
    assert all(not out.startswith("results/data/shapes") for _, out in jobs)
    assert ("prepare_data", "results/own-images/data/mine.zarr") in jobs
    workflow_copy.run("--replace-workflow-config", "--until", "prepare_data", config="own.yaml")
    log = (workflow_copy.workdir / "results/own-images/logs/prepare_data/mine.log").read_text()
    assert "91 of 91 images" in log and "3 classes: cat 30, dog 31, owl 30" in log


def test_predictions_name_each_test_images_file(tmp_path, workflow_copy):
    """The per-image predictions table: every test image's file, its true label and each
    layer's prediction, readable without numpy; the label is the file's class folder."""
    import pandas as pd

    folder = tmp_path / "pets"
    write_images(folder, per_class=20)
    config = tiny_config(
        datasets={"pets": {"source": "imagefolder", "path": str(folder), "image_size": 16}},
        representations=["original", "grayscale"],
        backbones={"pixels": {"model": "pixels", "image_size": 8}},
        probes={"linear": {"hidden": 0, "max_epochs": 20, "patience": 5}},
        runs=2,
    )
    workflow_copy.write_config(config)
    workflow_copy.run()
    runs = workflow_copy.workdir / "results" / "runs" / "pets" / "pixels"
    table = pd.read_csv(runs / "original" / "class" / "linear" / "run0.predictions.csv")
    assert list(table.columns) == ["run", "image", "file", "label", "pixels"]
    assert len(table) == 12  # 60 images, test 0.2
    assert (table["file"].str.split("/").str[0] == table["label"]).all()
    assert set(table["pixels"]) <= {"cat", "dog", "owl"}
    assert (table["pixels"] == table["label"]).mean() > 0.5  # each class has its colour
    transfer = workflow_copy.workdir / "results" / "transfer" / "as-trained" / "pets" / "pixels"
    moved = pd.read_csv(transfer / "grayscale" / "class" / "linear" / "run1.predictions.csv")
    assert moved["file"].str.endswith(".png").all() and set(moved["run"]) == {1}


def test_a_train_val_folder_is_used_as_its_split(tmp_path, workflow_copy):
    """An ImageNet-style folder with `split: given`, as the README shows: val/ is every
    run's test set (each prediction's file is in val/, the same images in every run),
    validation is drawn from train/, and the data job names the parts."""
    import pandas as pd
    import yaml
    from conftest import REPO

    folder = tmp_path / "imagenet-style"
    write_images(folder / "train", per_class=16)
    write_images(folder / "val", per_class=5, seed=1)
    section = (REPO / "README.md").read_text().split("## Your own images")[1]
    as_written = yaml.safe_load(section.split("```yaml", 1)[1].split("```", 1)[0])
    dataset = {**as_written["datasets"]["mine"], "path": str(folder), "image_size": 16}
    assert dataset.pop("split") == "given"
    config = tiny_config(
        datasets={"mine": dataset},
        representations=["original"],
        backbones={"pixels": {"model": "pixels", "image_size": 8}},
        probes={"linear": {"hidden": 0, "max_epochs": 20, "patience": 5}},
        runs=2,
        split={"val": 0.15, "test": 0.2, "seed": 0, "resample": True},
    )
    workflow_copy.write_config(config)
    refused = workflow_copy.run("-n", check=False)
    assert refused.returncode != 0 and "Add `split: given` to the dataset" in refused.output
    dataset["split"] = "given"
    workflow_copy.write_config(config)
    workflow_copy.run()
    results = workflow_copy.workdir / "results"
    log = (results / "logs/prepare_data/mine.log").read_text()
    assert "3 classes: cat 21, dog 21, owl 21" in log
    assert (
        "the split given with the data: train 48, test 15; each run draws its validation "
        "images from train" in log
    )
    runs = results / "runs" / "mine" / "pixels" / "original" / "class" / "linear"
    tables = [pd.read_csv(runs / f"run{r}.predictions.csv") for r in (0, 1)]
    for table in tables:
        assert len(table) == 15 and table["file"].str.startswith("val/").all()
        assert (table["file"].str.split("/").str[1] == table["label"]).all()
    assert list(tables[0]["file"]) == list(tables[1]["file"])
    metrics = pd.read_csv(results / "metrics.csv")
    assert set(metrics["n_test"]) == {15} and set(metrics["n_val"]) == {9}  # ceil(0.1875 * 48)
