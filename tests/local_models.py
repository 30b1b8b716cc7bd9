"""Model files made locally, as each library saves them (nothing is downloaded): a fake
Hugging Face hub cache entry, a small Dinov2 written by save_pretrained, timm and open_clip
weights, torchvision weights in torch hub's folder."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import torch

DINO_MEAN, DINO_STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def put_in_hub_cache(cache: Path, repo: str, files: dict[str, Path]) -> Path:
    """Files laid out as huggingface_hub's cache holds a download of `repo` (refs/main ->
    snapshots/<commit>/<name>); the snapshot folder."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    commit = hashlib.sha1(repo.encode()).hexdigest()
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    for name, path in files.items():
        shutil.copy(path, snapshot / name)
    return snapshot


def dinov2_folder(path: Path, seed: int = 0) -> Path:
    """A small random Dinov2 (2 layers, patch 8) with an image processor at 32 pixels,
    written with save_pretrained as a user's fine-tuned model would be."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=8,
        image_size=32,
    )
    Dinov2Model(config).save_pretrained(path)
    BitImageProcessor(
        size={"shortest_edge": 36},
        crop_size={"height": 32, "width": 32},
        do_center_crop=True,
        image_mean=DINO_MEAN,
        image_std=DINO_STD,
    ).save_pretrained(path)
    return path


def timm_weights(path: Path, arch: str = "resnet18", seed: int = 0) -> Path:
    """A timm model's weights as the hub holds them (model.safetensors)."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    net = timm.create_model(arch)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    return path


def open_clip_checkpoint(path: Path, model: str = "ViT-S-32", seed: int = 0, wrap=None) -> Path:
    """A whole CLIP model's state_dict in float16 (half the file), as torch.save writes it;
    `wrap` turns the state_dict into what a training script saves."""
    import open_clip

    torch.manual_seed(seed)
    net = open_clip.create_model(model)
    state = {k: v.half() for k, v in net.state_dict().items()}
    torch.save(wrap(state) if wrap else state, path)
    return path


def torchvision_weights(torch_home: Path, model: str = "resnet18", seed: int = 0) -> Path:
    """Random weights of a torchvision model where torch hub keeps its DEFAULT weights."""
    import os

    import torchvision

    torch.manual_seed(seed)
    url = torchvision.models.get_model_weights(model).DEFAULT.url
    path = torch_home / "hub" / "checkpoints" / os.path.basename(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.get_model(model).state_dict(), path)
    return path
