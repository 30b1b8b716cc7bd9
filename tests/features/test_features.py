"""The extraction loop against a direct computation, on a real data store."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr
from conftest import tiny_config

from visual_ablation.data import data_store, preparation
from visual_ablation.features import (
    backbones,
    batchnorm,
    extraction,
    feature_store,
    representations,
)
from visual_ablation.features.extractor import LayerExtractor
from visual_ablation.plan.config import resolve
from visual_ablation.plumbing.store import StoreError

CONFIG = tiny_config(
    datasets={"digits": {"source": "sklearn-digits", "n": 150, "image_size": 16}},
    representations={"original": {}, "shuffled": {"kind": "patch_shuffle", "grid": 2}},
    backbones={
        "effnet": {
            "model": "efficientnet_lite0",
            "weights": "pretrained",
            "layers": ["blocks.2", "stem"],
            "image_size": 32,
        },
        "pixels": {"model": "pixels", "image_size": 8},
    },
)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("feat")
    exp = resolve({**CONFIG, "results_dir": str(root)})
    preparation.prepare(exp.data_spec("digits"), exp.data_store("digits"), progress=False)
    return exp


def run(exp, backbone, rep, batch_size=64):
    return extraction.extract(
        exp.data_store("digits"),
        exp.feature_store("digits", backbone, rep),
        exp.feature_spec("digits", backbone, rep),
        device="cpu",
        batch_size=batch_size,
        progress=False,
    )


def test_features_equal_a_direct_forward_of_the_transformed_images(experiment):
    summary = run(experiment, "effnet", "shuffled", batch_size=37)
    assert summary["layers"] == ["blocks.2", "stem"]
    assert summary["dims"] == {"blocks.2": 24, "stem": 32}
    spec = experiment.feature_spec("digits", "effnet", "shuffled")
    path = experiment.feature_store("digits", "effnet", "shuffled")
    stored = feature_store.read(path, spec)["blocks.2"].astype(np.float32)
    images = zarr.open_group(experiment.data_store("digits"))["images"][:]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = representations.build("patch_shuffle", {"grid": 2})(x, torch.arange(len(x)))
    direct = LayerExtractor(spec["backbone"])(x)["blocks.2"].numpy()
    assert stored.shape == (150, 24)
    np.testing.assert_allclose(stored, direct, rtol=2e-3, atol=2e-3)  # float16 storage


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_features_are_the_cpus_image_for_image(experiment, tmp_path):
    """On a GPU, spans are pinned by the reader thread, copies run asynchronously both
    ways and the forward is bf16: each image's features must still land in its own row."""
    spec = experiment.feature_spec("digits", "effnet", "shuffled")
    stores = {}
    for device in ("cpu", "cuda"):
        path = str(tmp_path / f"{device}.zarr")
        extraction.extract(
            experiment.data_store("digits"), path, spec, device, batch_size=37, progress=False
        )
        stores[device] = feature_store.read(path, spec)["blocks.2"].astype(np.float32)
    cpu, cuda = stores["cpu"], stores["cuda"]
    assert np.abs(cuda - cpu).max() < 0.05 * np.abs(cpu).max()  # bf16 against float32
    # rows one place off would differ as much as two images do
    assert np.abs(cuda - cpu).mean() < 0.1 * np.abs(cuda - np.roll(cpu, 1, axis=0)).mean()


def test_store_records_what_defines_the_features(experiment):
    run(experiment, "pixels", "original")
    group = zarr.open_group(experiment.feature_store("digits", "pixels", "original"))
    attrs = group.attrs.asdict()
    assert attrs["complete"] is True and attrs["n_images"] == 150
    assert attrs["spec"]["format_version"] >= 1
    assert attrs["spec"]["dataset"]["n"] == 150
    assert attrs["spec"]["representation"] == {"name": "original", "kind": "original", "params": {}}
    assert attrs["spec"]["backbone"]["image_size"] == 8
    assert group["layers/pixels"].dtype == np.float16
    assert group["layers/pixels"].shape == (150, 3 * 8 * 8)


def test_same_config_gives_identical_features(experiment, tmp_path):
    run(experiment, "pixels", "shuffled")
    path = experiment.feature_store("digits", "pixels", "shuffled")
    first = zarr.open_group(path)["layers/pixels"][:]
    run(experiment, "pixels", "shuffled", batch_size=11)
    assert np.array_equal(first, zarr.open_group(path)["layers/pixels"][:])


def test_a_data_store_for_another_config_is_refused(experiment, tmp_path):
    spec = experiment.feature_spec("digits", "pixels", "original")
    spec["dataset"] = dict(spec["dataset"], n=151)
    out = tmp_path / "refused.zarr"
    with pytest.raises(StoreError, match="n: store has 150, config has 151"):
        extraction.extract(experiment.data_store("digits"), str(out), spec, device="cpu")
    assert not out.exists()


def test_inventory_lists_each_layer_and_refuses_mismatch(experiment):
    run(experiment, "effnet", "original")
    entry = {
        "dataset": "digits",
        "backbone": "effnet",
        "representation": "original",
        "path": experiment.feature_store("digits", "effnet", "original"),
        "spec": experiment.feature_spec("digits", "effnet", "original"),
    }
    rows = feature_store.inventory([entry])
    assert [r["layer"] for r in rows] == ["blocks.2", "stem"]
    assert all(r["store_bytes_per_image"] > 0 for r in rows)
    changed = dict(entry, spec={**entry["spec"], "format_version": 99})
    built = entry["spec"]["format_version"]
    with pytest.raises(StoreError, match=f"format_version: store has {built}, config has 99"):
        feature_store.inventory([changed])


def test_prefetched_batches_are_exact_contiguous_and_cover_every_row(tmp_path):
    images = zarr.create_array(
        str(tmp_path / "a.zarr"), shape=(103, 2, 2, 3), chunks=(7, 2, 2, 3), dtype="uint8"
    )
    values = np.random.default_rng(0).integers(0, 255, images.shape, dtype=np.uint8)
    images[:] = values
    batches = list(extraction.prefetched_batches(images, batch_size=10))
    assert [start for start, _ in batches] == list(range(0, 103, 10))
    assert [len(b) for _, b in batches] == [10] * 10 + [3]
    np.testing.assert_array_equal(np.concatenate([b for _, b in batches]), values)


def test_the_finiteness_check_agrees_with_numpy_on_every_float16():
    every = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    flags = [extraction.all_finite_float16(every[i : i + 1]) for i in range(len(every))]
    assert flags == np.isfinite(every).tolist()
    assert sum(flags) == 2**16 - 2 * 2**10  # 1,024 patterns each of +-inf and NaN
    assert extraction.all_finite_float16(every[np.isfinite(every)])


def test_a_failed_write_stops_extraction_and_leaves_no_store(experiment, monkeypatch, tmp_path):
    path = str(tmp_path / "pixels.zarr")
    spec = experiment.feature_spec("digits", "pixels", "shuffled")

    def poisoned(self, block, start):
        out = {"pixels": torch.zeros(len(block), 4)}
        if start >= 64:
            out["pixels"][0, 0] = float("nan")
        return out

    monkeypatch.setattr(extraction.Pipeline, "__call__", poisoned)
    with pytest.raises(FloatingPointError, match=r"layer pixels: non-finite .* images 64\.\.127"):
        extraction.extract(
            experiment.data_store("digits"), path, spec, device="cpu", batch_size=64, progress=False
        )
    # neither the store nor a partial one is left; only the store's (released) lock file
    assert [p.name for p in tmp_path.iterdir()] == [".pixels.zarr.lock"]


def untrained_spec(exp, layers, calibrated: bool = True) -> dict:
    """The feature spec of `effnet` untrained (`weights: none`) at `layers`; `calibrated`
    False drops the BatchNorm re-estimation (PyTorch's initial running statistics)."""
    spec = exp.feature_spec("digits", "effnet", "original")
    backbone = {**spec["backbone"], "weights": "none", "layers": layers}
    backbone.pop("weights_sha256", None)
    backbone.update(backbones.resolved(backbone))
    if not calibrated:
        backbone.pop("batchnorm_statistics")
    return {**spec, "backbone": backbone}


def test_a_deep_random_networks_last_layer_holds_a_distinct_row_per_image(experiment, tmp_path):
    """Known answer: random weights map distinct images to distinct points at every depth
    once BatchNorm's statistics are the data's; with its initial ones (mean 0, variance
    1) the activations shrink stage by stage and `head` underflows float16 to one row."""
    spec = untrained_spec(experiment, ["stem", "blocks.15", "head"])
    assert spec["backbone"]["batchnorm_statistics"]["images"] >= 150
    path = str(tmp_path / "alive.zarr")
    summary = extraction.extract(
        experiment.data_store("digits"), path, spec, device="cpu", batch_size=64, progress=False
    )
    assert summary["batchnorm_calibration_images"] == 150  # every image: none is fixed test
    features = feature_store.read(path, spec)
    for layer in ("blocks.15", "head"):
        assert len(np.unique(features[layer], axis=0)) == 150, layer
        assert 0.05 < np.abs(features[layer].astype(np.float32)).mean() < 5, layer

    dead = untrained_spec(experiment, ["stem", "head"], calibrated=False)
    with pytest.raises(extraction.FeatureStoreError) as refused:
        extraction.extract(
            experiment.data_store("digits"),
            str(tmp_path / "dead.zarr"),
            dead,
            device="cpu",
            batch_size=64,
            progress=False,
        )
    assert "layer head: the same features for every image" in str(refused.value)
    assert "layer stem" not in str(refused.value)  # the stem's scale survives
    assert not (tmp_path / "dead.zarr").exists()


def test_the_store_check_names_constant_and_underflowing_layers():
    rng = np.random.default_rng(0)
    check = extraction.StoreCheck()
    healthy = rng.normal(size=(64, 8)).astype(np.float16)
    for start in (0, 32):
        check.add("alive", healthy[start : start + 32])
        check.add("constant", np.ones((32, 8), np.float16))
        check.add(
            "tiny", (healthy[start : start + 32].astype(np.float32) * 1e-6).astype(np.float16)
        )
    assert check.refusals() == [
        "layer constant: the same features for every image",
        "layer tiny: 100% of its nonzero features are below float16's normal range "
        "(|v| < 6.1e-5) and lose their precision in the store",
    ]
    # constant within each batch but not across them: varies
    across = extraction.StoreCheck()
    across.add("layer", np.zeros((4, 2), np.float16))
    across.add("layer", np.ones((4, 2), np.float16))
    assert across.refusals() == []


def test_calibration_images_leave_out_a_fixed_test_set(tmp_path):
    group = zarr.open_group(str(tmp_path / "data.zarr"), mode="w")
    group.create_array("images", shape=(10, 2, 2, 3), dtype="uint8")
    group.create_array(data_store.FIXED_TEST, data=np.arange(10) >= 6)
    assert batchnorm.calibration_images(group, 100, seed=0).tolist() == [0, 1, 2, 3, 4, 5]
    drawn = batchnorm.calibration_images(group, 3, seed=0)
    assert len(drawn) == 3 and set(drawn) <= {0, 1, 2, 3, 4, 5}
    assert drawn.tolist() == sorted(drawn.tolist())
