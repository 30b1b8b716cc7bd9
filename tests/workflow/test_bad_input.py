"""Bad input stops the run with a message on the console that names the key or file.

Config checks are tested in-process in tests/plan/test_preflight.py; a few stay here to show
the message reaches the console, with the errors only a job can find."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_config, with_key
from PIL import Image

from visual_ablation.plumbing import store

pytestmark = pytest.mark.workflow


def failing(wf, config, *args):
    wf.write_config(config)
    proc = wf.run(*args, check=False)
    assert proc.returncode != 0, proc.output
    return proc.output


def test_unknown_dataset_source_lists_valid_sources(workflow_copy):
    out = failing(workflow_copy, tiny_config(datasets={"mine": {"source": "folder"}}), "-n")
    assert (
        "config key 'datasets.mine.source': 'folder' is not one of sklearn-digits, "
        "synthetic-shapes, synthetic-cue-conflict, imagefolder"
    ) in out


def test_unknown_representation_lists_valid_ones(workflow_copy):
    out = failing(workflow_copy, tiny_config(representations=["original", "blurry"]), "-n")
    assert "config key 'representations.blurry': unknown representation 'blurry'" in out
    assert "Valid values: original, grayscale, lowpass, highpass, phase_scramble" in out


def built_effnet_store(wf):
    """One effnet feature store of the tiny config, built, and a one-run linear probe
    left to train on it: the store a test then damages."""
    config = tiny_config(representations=["original"], runs=1)
    del config["backbones"]["pixels"]
    config["probes"] = {"linear": {"hidden": 0, "max_epochs": 5}}
    wf.write_config(config)
    wf.run("--until", "features")


def test_non_finite_features_fail_the_train_job_naming_the_layer(workflow_copy):
    import zarr

    built_effnet_store(workflow_copy)
    layer = workflow_copy.workdir / "results/features/digits/effnet/original.zarr/layers/blocks.0"
    array = zarr.open_array(layer, mode="r+")
    values = array[:]
    values[5, 1] = np.inf
    array[:] = values
    # as if the backbone itself had written inf: the manifest matches the new chunks
    store_path = layer.parent.parent
    zarr.open_group(store_path, mode="r+").attrs["manifest"] = store.manifest(str(store_path))
    proc = workflow_copy.run(check=False)
    assert proc.returncode != 0
    assert (
        "FeatureError" in proc.output and "layer 'blocks.0' has 1 non-finite values" in proc.output
    )
    assert not (workflow_copy.workdir / "results/metrics.csv").exists()


def test_a_feature_store_with_a_deleted_chunk_fails_its_train_jobs_naming_it(workflow_copy):
    built_effnet_store(workflow_copy)
    store_path = workflow_copy.workdir / "results/features/digits/effnet/original.zarr"
    chunk = next((store_path / "layers" / "stem").rglob("c/*/*"))
    chunk.unlink()
    proc = workflow_copy.run(check=False)
    assert proc.returncode != 0
    assert "is damaged (chunk layers/stem/c/" in proc.output and "is missing" in proc.output
    assert "--forcerun results/features/digits/effnet/original.zarr" in proc.output
    assert not (workflow_copy.workdir / "results/metrics.csv").exists()
    # the fix the message gives works
    workflow_copy.run("--forcerun", "results/features/digits/effnet/original.zarr")
    assert (workflow_copy.workdir / "results/metrics.csv").exists()


def test_unreadable_image_in_imagefolder_names_the_file(workflow_copy, tmp_path):
    root = tmp_path / "folder"
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    broken = root / "dog" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    config = tiny_config(datasets={"mine": {"source": "imagefolder", "path": str(root)}})
    out = failing(workflow_copy, config)
    assert f"cannot read image {broken}" in out
    assert not (workflow_copy.workdir / "results" / "data" / "mine.zarr").exists()


def test_single_class_dataset_is_refused(workflow_copy, tmp_path):
    path = tmp_path / "one.npz"
    np.savez(path, images=np.zeros((30, 8, 8), np.uint8), labels=np.zeros(30, np.int64))
    config = tiny_config(datasets={"one": {"source": "npz", "path": str(path)}})
    out = failing(workflow_copy, config)
    assert "dataset 'one': only one class present (30 images)" in out


def test_a_dataset_too_small_for_the_split_stops_before_any_feature_job(workflow_copy):
    config = tiny_config(datasets={"digits": {"source": "sklearn-digits", "n": 12}})
    out = failing(workflow_copy, config)
    assert "dataset 'digits': cannot split 12 images of 10 classes" in out
    assert "Use more images or larger split fractions" in out
    assert not (workflow_copy.workdir / "results" / "features").exists()


def test_subset_larger_than_dataset_is_refused(workflow_copy):
    config = tiny_config(datasets={"digits": {"source": "sklearn-digits", "n": 5000}})
    out = failing(workflow_copy, config)
    assert "dataset 'digits': subset n=5000 is larger than the dataset (1797 images)" in out
    assert "Set datasets.digits.n to at most 1797" in out


def test_a_cache_dir_that_cannot_be_created_stops_the_dry_run(workflow_copy):
    blocker = workflow_copy.workdir / "not-a-dir"
    blocker.write_text("")
    out = failing(workflow_copy, tiny_config(cache_dir=str(blocker / "cache")), "-n")
    assert "Invalid config: config key 'cache_dir'" in out and "is a file" in out


def test_paths_with_spaces_work(workflow_copy):
    config = tiny_config(
        representations=["original"],
        results_dir="my results",
        cache_dir=str(workflow_copy.workdir / "feature cache"),
    )
    del config["backbones"]["effnet"]
    config["probes"] = {"linear": {"hidden": 0, "max_epochs": 5}}
    config["runs"] = 1
    workflow_copy.write_config(config)
    workflow_copy.run()
    assert (workflow_copy.workdir / "my results" / "metrics.csv").exists()
    assert (workflow_copy.workdir / "feature cache" / "features" / "digits" / "pixels").is_dir()
    assert workflow_copy.planned() == []


@pytest.mark.parametrize(
    "key, value",
    [
        ("runs", 0),
        ("probes.mlp.hidden", "wide"),
    ],
)
def test_wrong_types_and_sizes_are_schema_errors_naming_the_key(workflow_copy, key, value):
    out = failing(workflow_copy, with_key(key, value), "-n")
    assert f"Invalid config: config key '{key}': {value!r} " in out, out[-3000:]
    assert "Failed validating" not in out  # one line, not the schema
    assert not (workflow_copy.workdir / "results").exists()  # before any job


def test_a_representation_written_twice_in_a_mapping_is_refused(workflow_copy):
    workflow_copy.write_config(tiny_config())
    text = (workflow_copy.workdir / "config.yaml").read_text()
    text = text.replace(
        "representations:\n- original\n- grayscale\n",
        "representations:\n  lowpass: {sigma: 0.05}\n  lowpass: {sigma: 0.2}\n",
    )
    assert "lowpass: {sigma: 0.2}" in text
    (workflow_copy.workdir / "config.yaml").write_text(text)
    proc = workflow_copy.run("-n", check=False)
    assert proc.returncode != 0
    assert "key 'lowpass' appears twice in one mapping (lines" in proc.output
    assert "YAML would silently keep only the second" in proc.output
