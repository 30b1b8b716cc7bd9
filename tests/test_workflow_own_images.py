"""Your own images through the workflow: a folder whose contents change re-plans its data
store and what follows from it, and nothing else."""

from __future__ import annotations

import os

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
    os.remove(folder / "owl" / "new.png")  # as it was: nothing to do again
    assert workflow_copy.planned("--until", "features") == []

    replaced = folder / "cat" / "0.png"
    Image.new("RGB", (12, 12), (1, 2, 3)).save(replaced)  # the same name, new content
    assert ("prepare_data", "results/data/birds.zarr") in workflow_copy.planned(
        "--until", "features"
    )
