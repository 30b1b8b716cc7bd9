"""A small experiment end to end with one backbone of each source (local files only: a
torch hub file, a hub-cache timm file, a save_pretrained folder, an open_clip training
checkpoint), a changed weights file re-planning only its stores, and the fetch_weights
checkpoint downloading for real from a local stand-in for the hub."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import zarr
from conftest import tiny_config
from local_hub import LocalHub
from local_models import (
    dinov2_folder,
    open_clip_checkpoint,
    put_in_hub_cache,
    timm_weights,
    torchvision_weights,
)

from visual_ablation.features.backbones.library_cache import sha256

pytestmark = pytest.mark.workflow


def small(backbones: dict, **overrides) -> dict:
    return tiny_config(
        datasets={"digits": {"source": "sklearn-digits", "n": 120, "image_size": 16}},
        backbones=backbones,
        probes={"linear": {"hidden": 0, "max_epochs": 20, "patience": 5}},
        runs=1,
        **overrides,
    )


@pytest.fixture(scope="module")
def every_source(tmp_path_factory):
    """The workflow run once on a backbone of each source."""
    from conftest import Workflow, copy_workflow

    tmp = tmp_path_factory.mktemp("sources")
    hub, torch_home = tmp / "hub", tmp / "torch"
    torchvision_weights(torch_home)
    put_in_hub_cache(
        hub, "timm/resnet18.a1_in1k", {"model.safetensors": timm_weights(tmp / "timm.st")}
    )
    dino = dinov2_folder(tmp / "dino")
    clip = open_clip_checkpoint(tmp / "clip.pt", wrap=lambda s: {"model": s, "epoch": 1})
    config = small(
        {
            "tv": {
                "model": "resnet18",
                "weights": "IMAGENET1K_V1",
                "layers": ["layer2"],
                "image_size": 32,
            },
            "timm": {
                "source": "timm",
                "model": "resnet18",
                "weights": "a1_in1k",
                "layers": ["layer1", "layer4"],
                "image_size": 32,
            },
            "dino": {
                "source": "huggingface",
                "model": str(dino),
                "weights": "pretrained",
                "pooling": "cls",
            },
            "clip": {
                "source": "open_clip",
                "model": "ViT-S-32",
                "weights": str(clip),
                "layers": ["transformer.resblocks.11"],
            },
        }
    )
    flow = Workflow(copy_workflow(tmp / "repo"), tmp / "work")
    flow.write_config(config)
    env = {"TORCH_HOME": str(torch_home), "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    flow.run(env=env)
    return flow, env, dino


def test_each_source_gives_stores_with_their_weights_and_a_summary(every_source):
    flow, _env, _dino = every_source
    results = flow.workdir / "results"
    summary = pd.read_csv(results / "summary.csv")
    assert set(summary["backbone"]) == {"tv", "timm", "dino", "clip"}
    layers = set(zip(summary["backbone"], summary["layer"], strict=True))
    assert ("dino", "encoder.layer.1") in layers and ("clip", "transformer.resblocks.11") in layers
    dino = zarr.open_group(results / "features" / "digits" / "dino" / "original.zarr", mode="r")
    assert dino.attrs["dims"] == {"encoder.layer.0": 32, "encoder.layer.1": 32}
    assert dino.attrs["normalization"]["mean"] == [0.5, 0.4, 0.3]  # its image processor's
    assert len(dino.attrs["weights_identity"]["sha256"]) == 64
    clip = zarr.open_group(results / "features" / "digits" / "clip" / "original.zarr", mode="r")
    assert clip.attrs["dims"] == {"transformer.resblocks.11": 384}


def test_a_changed_weights_file_replans_only_its_stores(every_source):
    flow, env, dino = every_source
    assert "Nothing to be done" in flow.run("-n", env=env).output
    dinov2_folder(dino, seed=1)  # the same folder, retrained
    try:
        jobs = flow.planned(env=env)
    finally:
        dinov2_folder(dino, seed=0)
    features = sorted(out for rule, out in jobs if rule == "features")
    assert features == [
        "results/features/digits/dino/grayscale.zarr",
        "results/features/digits/dino/original.zarr",
    ]
    trained = [out for rule, out in jobs if rule in ("train", "transfer")]
    assert trained and all("/digits/dino/" in out for out in trained)


def test_fetch_weights_downloads_once_before_the_feature_jobs(tmp_path, workflow_copy):
    served = tmp_path / "served"
    served.mkdir()
    file = timm_weights(served / "model.safetensors", seed=4)
    spec = {
        "source": "timm",
        "model": "resnet18",
        "weights": "a1_in1k",
        "layers": ["layer1"],
        "image_size": 32,
    }
    workflow_copy.write_config(small({"timm": spec}, representations=["original"]))
    cache = tmp_path / "hub"
    with LocalHub({"timm/resnet18.a1_in1k": served}) as hub:
        env = {"HF_HUB_CACHE": str(cache), "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1"}
        jobs = workflow_copy.run("-n", env=env).output
        assert "checkpoint fetch_weights:" in jobs and "DAG of jobs will be updated" in jobs
        off = workflow_copy.run("-n", "--config", "fetch_weights=False", env=env, check=False)
        assert off.returncode != 0
        assert "'backbones.timm.weights': pretrained weights of timm model" in off.output
        assert "fetching is off (fetch_weights: false)" in off.output
        workflow_copy.run(env=env)
        downloads = [r for r in hub.requests if r.startswith("GET /timm/")]
    assert downloads == ["GET /timm/resnet18.a1_in1k/resolve/main/model.safetensors"]
    store = workflow_copy.workdir / "results" / "features" / "digits" / "timm" / "original.zarr"
    identity = zarr.open_group(store, mode="r").attrs["weights_identity"]
    assert identity["sha256"] == sha256(str(file))
    # the spec planned after the fetch is the one a later run computes: nothing to redo
    again = workflow_copy.run("-n", env={"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    assert "Nothing to be done" in again.output
    log = (workflow_copy.workdir / "results" / "logs" / "fetch_weights" / "timm.log").read_text()
    assert json.dumps(sha256(str(file)))[1:-1] in log
