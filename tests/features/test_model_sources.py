"""Backbones of every source with local files only (nothing downloads): each library's
preprocessing, pretrained weights found in its own cache, transformer token readouts
checked against the library's own outputs, checkpoints as people save them, the layer
listing, and the fetch of a missing file."""

from __future__ import annotations

import json
import os

import pytest
import torch
from local_models import (
    DINO_MEAN,
    DINO_STD,
    dinov2_folder,
    open_clip_checkpoint,
    put_in_hub_cache,
    timm_weights,
    torchvision_weights,
)

from visual_ablation.features import backbones, layers
from visual_ablation.features.backbones import checkpoints, fetching, library_cache
from visual_ablation.features.extractor import LayerExtractor
from visual_ablation.features.readout import Readout


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty torch hub and Hugging Face caches, and the metadata records, in tmp_path."""
    import huggingface_hub.constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path


def images(n: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_patch_tokens_are_read_without_the_class_and_register_tokens():
    """Planted tokens: 2 prefix tokens (class 100, register -100), then a 2 x 3 grid of
    patches whose value is their row-major index."""
    patches = torch.arange(6.0).view(1, 6, 1).expand(1, 6, 4)
    tokens = torch.cat([torch.full((1, 1, 4), 100.0), torch.full((1, 1, 4), -100.0), patches], 1)
    grid = (2, 3)
    assert torch.equal(Readout(tokens="cls")(tokens, grid), torch.full((1, 4), 100.0))
    assert torch.equal(Readout(tokens="mean")(tokens, grid), torch.full((1, 4), 2.5))
    # patches as a [D, 2, 3] map: the global mean, or a 2 x 2 grid of its cells
    assert torch.equal(Readout(tokens="patches")(tokens, grid), torch.full((1, 4), 2.5))
    cells = Readout(tokens="patches", grid=2)(tokens, grid).view(4, 2, 2)[0]
    # row 0 holds patches 0, 1, 2; columns pooled adaptively over 3 -> 2 (0,1 and 1,2)
    assert cells.tolist() == [[0.5, 1.5], [3.5, 4.5]]
    with pytest.raises(ValueError, match="cannot hold a 3 x 3 grid"):
        Readout()(tokens, (3, 3))


def test_hugging_face_folder_uses_its_processor_and_reads_hidden_states(caches):
    folder = dinov2_folder(caches / "dino")
    spec = {"source": "huggingface", "model": str(folder), "weights": "pretrained"}
    assert backbones.preprocessing(spec) == {"image_size": 32, "mean": DINO_MEAN, "std": DINO_STD}
    fam = backbones.family(spec)
    assert fam.default_layers() == ["encoder.layer.0", "encoder.layer.1"]
    x = images()
    by_pooling = {
        pooling: LayerExtractor({**spec, "layers": "all", "pooling": pooling, "image_size": 32})(x)
        for pooling in ("cls", "mean", "patches")
    }
    # the library's own hidden states, on the same preprocessing
    from transformers import AutoModel

    net = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    mean, std = torch.tensor(DINO_MEAN).view(1, 3, 1, 1), torch.tensor(DINO_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        hidden = net(pixel_values=(x - mean) / std, output_hidden_states=True).hidden_states
    for i, layer in enumerate(fam.default_layers()):
        tokens = hidden[i + 1]  # hidden_states[0] is the embeddings
        torch.testing.assert_close(by_pooling["cls"][layer], tokens[:, 0])
        torch.testing.assert_close(by_pooling["mean"][layer], tokens[:, 1:].mean(1))
        torch.testing.assert_close(by_pooling["patches"][layer], tokens[:, 1:].mean(1))
    grid = LayerExtractor(
        {
            **spec,
            "layers": ["encoder.layer.1"],
            "pooling": "patches",
            "readout": {"grid": 4},
            "image_size": 32,
        }
    )(x)["encoder.layer.1"]
    assert grid.shape == (3, 32 * 16)  # the 4 x 4 patch grid kept
    torch.testing.assert_close(grid.view(3, 32, 16).transpose(1, 2), hidden[2][:, 1:])


def test_hugging_face_hub_model_is_found_in_the_hub_cache(caches):
    folder = dinov2_folder(caches / "saved")
    spec = {"source": "huggingface", "model": "someone/dino-tiny", "weights": "pretrained"}
    assert backbones.needs_fetch(spec)
    with pytest.raises(backbones.WeightsNotLocal, match="config.json of someone/dino-tiny"):
        backbones.resolved({**spec, "image_size": None})
    put_in_hub_cache(caches / "hub", "someone/dino-tiny", {p.name: p for p in folder.iterdir()})
    assert not backbones.needs_fetch(spec)
    resolved = backbones.resolved({**spec, "image_size": None})
    assert resolved["image_size"] == 32 and len(resolved["weights_sha256"]) == 64
    out = LayerExtractor({**spec, "layers": ["encoder.layer.0"], "image_size": 32})(images())
    assert out["encoder.layer.0"].shape == (3, 32)


def test_timm_tag_weights_come_from_the_hub_cache_with_their_preprocessing(caches):
    import timm
    from safetensors.torch import load_file

    file = timm_weights(caches / "model.safetensors", seed=3)
    spec = {"source": "timm", "model": "resnet18", "weights": "a1_in1k", "image_size": 32}
    assert backbones.needs_fetch(spec)
    put_in_hub_cache(caches / "hub", "timm/resnet18.a1_in1k", {"model.safetensors": file})
    assert not backbones.needs_fetch(spec)
    assert backbones.preprocessing(spec)["image_size"] == 224  # a1_in1k's pretrained_cfg
    assert backbones.resolved(spec)["weights_sha256"] == library_cache.sha256(str(file))
    ours = LayerExtractor({**spec, "layers": ["layer4"]})
    net = timm.create_model("resnet18")
    net.load_state_dict(load_file(file))
    net.eval()
    x = images()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = net.forward_features((x - mean) / std).mean(dim=(2, 3))
    torch.testing.assert_close(ours(x)["layer4"], expected)
    # the same model named as the hub names it
    same = backbones.family(
        {"source": "timm", "model": "timm/resnet18.a1_in1k", "weights": "pretrained"}
    )
    assert same.weights_files() == backbones.family(spec).weights_files()


def test_timm_vit_at_another_image_size_keeps_its_patch_grid(caches):
    spec = {
        "source": "timm",
        "model": "vit_tiny_patch16_224",
        "weights": "none",
        "layers": ["blocks.11"],
        "image_size": 32,
        "pooling": "patches",
        "readout": {"grid": 2},
    }
    out = LayerExtractor(spec)(images(2))["blocks.11"]
    assert out.shape == (2, 192 * 4)  # 2 x 2 patches of 16 pixels


def test_open_clip_checkpoint_loads_as_open_clip_loads_it(caches):
    import open_clip

    wrapped = open_clip_checkpoint(
        caches / "clip.pt", wrap=lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}}
    )
    plain = open_clip_checkpoint(caches / "plain.pt")
    spec = {"source": "open_clip", "model": "ViT-S-32", "weights": str(wrapped), "image_size": 224}
    assert backbones.preprocessing({**spec, "weights": "openai"})["mean"][0] == pytest.approx(
        0.4815, abs=1e-4
    )
    ours = LayerExtractor({**spec, "layers": ["transformer.resblocks.11"], "pooling": "cls"})
    reference = open_clip.create_model("ViT-S-32")
    open_clip.load_checkpoint(reference, str(plain))
    x = images(2, 224)
    with torch.no_grad():
        expected = reference.encode_image((x - ours.mean) / ours.std)
    torch.testing.assert_close(ours.forward_bare(x), expected)
    assert ours(x)["transformer.resblocks.11"].shape == (2, 384)


WRAPPERS = {
    "plain": lambda s: s,
    "state_dict": lambda s: {"state_dict": s},
    "model+epoch": lambda s: {"model": s, "epoch": 90},
    "DataParallel": lambda s: {f"module.{k}": v for k, v in s.items()},
    "torch.compile": lambda s: {"model": {f"_orig_mod.{k}": v for k, v in s.items()}},
}


@pytest.mark.parametrize("wrap", list(WRAPPERS))
def test_checkpoints_as_people_save_them_load(tmp_path, wrap):
    spec = {"model": "resnet18", "weights": "none", "layers": ["layer1"], "image_size": 32}
    source = LayerExtractor({**spec, "seed": 7})
    path = tmp_path / "ckpt.pth"
    torch.save(WRAPPERS[wrap](source.net.state_dict()), path)
    loaded = LayerExtractor({**spec, "weights": str(path)})
    x = images()
    assert torch.equal(source(x)["layer1"], loaded(x)["layer1"])


def test_a_safetensors_checkpoint_loads(tmp_path):
    from safetensors.torch import save_file

    spec = {"model": "resnet18", "weights": "none", "layers": ["layer2"], "image_size": 32}
    source = LayerExtractor({**spec, "seed": 5})
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.net.state_dict().items()}, path)
    x = images()
    assert torch.equal(
        source(x)["layer2"], LayerExtractor({**spec, "weights": str(path)})(x)["layer2"]
    )


def test_a_checkpoint_of_another_architecture_is_refused_shortly(tmp_path):
    import torchvision

    path = tmp_path / "resnet34.pth"
    torch.save({"model": torchvision.models.resnet34().state_dict(), "epoch": 3}, path)
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.check_fits(backbones.family("resnet18").structure(), str(path))
    message = str(err.value)
    assert "read as ['model']" in message and "0 missing key(s)" in message
    assert "unexpected key(s) (layer1.2.conv1.weight, layer1.2.bn1.weight" in message
    assert "wrapper keys state_dict, model" in message and "'module.', '_orig_mod.'" in message
    assert len(message) < 600


def test_a_checkpoint_with_python_objects_is_refused_with_the_fix(tmp_path):
    import argparse

    path = tmp_path / "dino.pth"
    torch.save({"teacher": {}, "args": argparse.Namespace(arch="vit_small")}, path)
    with pytest.raises(checkpoints.CheckpointError, match="save its state_dict alone"):
        checkpoints.read(str(path))


def test_torchvision_named_weights_come_from_torch_hub_with_their_crop_size(caches):
    file = torchvision_weights(caches / "torch", seed=2)
    spec = {"model": "resnet18", "weights": "IMAGENET1K_V1", "layers": ["layer3"]}
    assert backbones.preprocessing(spec)["image_size"] == 224
    assert backbones.resolved({**spec, "image_size": None}) == {
        "family_version": 2,
        "image_size": 224,
        "weights_sha256": library_cache.sha256(str(file)),
    }
    out = LayerExtractor({**spec, "image_size": 32})(images())["layer3"]
    assert out.shape == (3, 256)


def test_fetch_downloads_into_the_librarys_cache_and_marks_the_files(caches, monkeypatch):
    """A torchvision file fetched from a URL (a local file:// one here) into torch hub."""
    import torchvision

    served = caches / "served" / "resnet18-f37072fd.pth"
    served.parent.mkdir()
    torch.save(torchvision.models.resnet18().state_dict(), served)
    real = backbones.SOURCES["torchvision"].metadata
    monkeypatch.setattr(
        backbones.SOURCES["torchvision"],
        "metadata",
        lambda self: {**real(self), "url": served.as_uri()},
    )
    spec = {"model": "resnet18", "weights": "pretrained"}
    assert backbones.needs_fetch(spec)
    mark = caches / "results" / "weights" / "r.fetched"
    files = fetching.fetch_to(spec, str(mark))
    assert files == [str(caches / "torch" / "hub" / "checkpoints" / served.name)]
    assert json.loads(mark.read_text())["files"] == {served.name: library_cache.sha256(str(served))}
    assert not backbones.needs_fetch(spec)
    with pytest.raises(backbones.WeightsNotLocal, match="fetch_weights is false"):
        os.remove(files[0])
        fetching.fetch_to(spec, str(mark), allowed=False)


def test_layer_listing_prints_every_layer_with_its_shape(caches, capsys):
    folder = dinov2_folder(caches / "dino")
    assert layers.main(["--source", "huggingface", "--model", str(folder)]) == 0
    out = capsys.readouterr().out
    assert f"huggingface model {folder} at 32 x 32" in out
    assert "* encoder.layer.1" in out and "[1, 17, 32]" in out  # class token + 4 x 4 patches
    assert layers.main(["--source", "timm", "--model", "resnet18", "--image-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "* layer4" in out and "[1, 512, 2, 2]" in out
    assert layers.main(["--model", "resnet1000"]) == 2
    assert "Closest: resnet101" in capsys.readouterr().err


def test_swin_stages_are_read_channels_first():
    """torchvision's Swin keeps its maps [N, H, W, C]: a grid readout must pool space, so a
    2 x 2 grid of stage features.1 (96 channels) gives 96 x 4 values."""
    spec = {"model": "swin_t", "weights": "none", "layers": ["features.1"], "image_size": 64}
    out = LayerExtractor({**spec, "readout": {"grid": 2}})(images(2, 64))["features.1"]
    assert out.shape == (2, 96 * 4)


def test_the_readme_layer_commands_run(capsys, monkeypatch):
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)  # --backbone reads config/config.yaml
    commands = [
        line.split("visual_ablation.features.layers", 1)[1].split("#")[0].split()
        for line in (repo / "README.md").read_text().splitlines()
        if line.startswith(".venv/bin/python -m visual_ablation.features.layers")
    ]
    assert len(commands) == 2
    for args in commands:
        assert layers.main(args) == 0
    out = capsys.readouterr().out
    assert "* blocks.11" in out and "[1, 197, 384]" in out  # the class token + 14 x 14
    assert "bundled model efficientnet_lite0 at 64 x 64" in out and "* head" in out
