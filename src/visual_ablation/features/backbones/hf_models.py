"""Hugging Face transformers vision models (`source: huggingface`): `model` is a hub id
(`facebook/dinov2-small`) or a folder written by `save_pretrained`. Preprocessing is the
image processor's own (`preprocessor_config.json`: image_mean, image_std and the crop size,
else the resize size); `weights: pretrained` is the model's own weights, `none` a seeded
random init of its `config.json`, a path a checkpoint loaded into that architecture. Layers
are module names (`encoder.layer.3`: `hidden_states[4]`); `layers: all` is the encoder's
blocks (or a hierarchical model's stages)."""

from __future__ import annotations

import functools
import glob
import json
import os
from typing import Any

from visual_ablation.features.backbones import checkpoints, library_cache
from visual_ablation.features.backbones.base import (
    HookedBackbone,
    WeightsNotLocal,
    register,
)
from visual_ablation.vocabulary import BACKBONE_DEFAULTS

CONFIG = "config.json"
PROCESSOR = "preprocessor_config.json"
WEIGHT_PATTERNS = ("model*.safetensors", "pytorch_model*.bin")


def is_folder(model: str) -> bool:
    return os.path.isdir(model)


@functools.cache
def _structure(folder: str):
    import torch
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        return AutoModel.from_config(config)


@register
class HuggingFace(HookedBackbone):
    source = "huggingface"
    default_image_size = None  # the image processor's
    fetched = True

    @classmethod
    def models(cls) -> list[str]:
        return []  # any hub id or saved folder

    def known(self) -> bool:
        """A saved folder, or a hub id (the `timm` organisation's repositories hold timm
        weights, which AutoModel does not read: source timm)."""
        if is_folder(self.model):
            return True
        return self.model.count("/") == 1 and not self.model.startswith("timm/")

    def unknown_model(self) -> str:
        return (
            f"{self.model!r} is neither a folder written by save_pretrained nor a Hugging "
            "Face hub id (organisation/name, e.g. facebook/dinov2-small)."
        )

    @property
    def library_files(self) -> bool:
        return True  # its config.json even for `none` or a checkpoint path

    def folder(self) -> str:
        """The folder that holds config.json (a saved model, or the hub cache's snapshot)."""
        if is_folder(self.model):
            if not os.path.exists(os.path.join(self.model, CONFIG)):
                raise ValueError(f"{self.model} has no {CONFIG}: not a save_pretrained folder")
            return self.model
        found = library_cache.hub_file(self.model, [CONFIG])
        if found is None:
            from huggingface_hub.constants import HF_HUB_CACHE

            raise WeightsNotLocal(
                f"{CONFIG} of {self.model} is not in the Hugging Face cache ({HF_HUB_CACHE}); "
                "the rule fetch_weights fetches it (snakemake -c1 --until fetch_weights)"
            )
        return os.path.dirname(found)

    def default_normalization(self) -> str:
        return "weights"

    def metadata(self) -> dict[str, Any]:
        path = os.path.join(self.folder(), PROCESSOR)
        if not os.path.exists(path):
            raise ValueError(
                f"{self.model} has no {PROCESSOR}: give its backbone image_size and "
                "normalization (imagenet, none, ...)"
            )
        with open(path) as f:
            cfg = json.load(f)
        size = cfg.get("crop_size") if cfg.get("do_center_crop") else cfg.get("size")
        size = size or cfg.get("size") or cfg.get("crop_size")
        if isinstance(size, dict):
            size = size.get("height") or size.get("shortest_edge") or size.get("width")
        return {
            "image_size": int(size),
            "mean": [float(v) for v in cfg["image_mean"]],
            "std": [float(v) for v in cfg["image_std"]],
        }

    def structure(self, image_size=None):
        return _structure(self.folder())

    def default_layers(self) -> list[str]:
        """The ModuleList of the encoder's blocks (as many as config.num_hidden_layers),
        else of a hierarchical model's stages (as many as config.depths)."""
        from torch import nn

        net = self.structure()
        config = net.config
        stages = len(getattr(config, "depths", None) or [])
        for wanted in (getattr(config, "num_hidden_layers", None), stages):
            for name, module in net.named_modules():
                if isinstance(module, nn.ModuleList) and wanted and len(module) == wanted:
                    return [f"{name}.{i}" for i in range(len(module))]
        return [name for name, _ in net.named_children()]

    def weights_files(self) -> list[str]:
        folder = self.folder()
        files = [os.path.join(folder, CONFIG)]
        if os.path.exists(os.path.join(folder, PROCESSOR)):
            files.append(os.path.join(folder, PROCESSOR))
        if not self.pretrained:
            return files
        for pattern in WEIGHT_PATTERNS:
            weights = sorted(glob.glob(os.path.join(folder, pattern)))
            if weights:  # sharded weights: their index too
                return files + weights + sorted(glob.glob(os.path.join(folder, "*.index.json")))
        raise WeightsNotLocal(
            f"weights of {self.model} are not on disk (no model.safetensors or "
            f"pytorch_model.bin in {folder})"
        )

    def fetch(self) -> list[str]:
        if is_folder(self.model):
            return self.weights_files()
        from huggingface_hub import snapshot_download

        library_cache.refuse_offline(f"Hugging Face model {self.model}")
        patterns = ["*.json"]
        if self.pretrained:
            patterns.append("model*.safetensors")
        folder = snapshot_download(self.model, allow_patterns=patterns)
        if self.pretrained and not glob.glob(os.path.join(folder, "model*.safetensors")):
            snapshot_download(self.model, allow_patterns=["*.json", "pytorch_model*.bin"])
        return self.weights_files()

    def build(self, spec: dict[str, Any]):
        import torch
        from transformers import AutoConfig, AutoModel

        # `weights: none`: seeded random init
        torch.manual_seed(int(spec.get("seed", BACKBONE_DEFAULTS["seed"])))
        folder, self._image_size = self.folder(), int(spec["image_size"])
        if self.pretrained:
            net = AutoModel.from_pretrained(folder, dtype=torch.float32)
        else:
            net = AutoModel.from_config(AutoConfig.from_pretrained(folder))
            if self.weights not in (None, "none"):
                checkpoints.load(net, self.weights)
        self._interpolate = _takes(net, "interpolate_pos_encoding")
        return net.eval().float()

    def run(self, net, x):
        if getattr(self, "_interpolate", False):
            return net(pixel_values=x, interpolate_pos_encoding=True)
        return net(pixel_values=x)

    def token_layout(self, net):
        """Vision transformers' patch grid (hierarchical models keep maps, not tokens)."""
        patch = getattr(net.config, "patch_size", None)
        if not isinstance(patch, int) or getattr(net.config, "depths", None):
            return None
        side = self._image_size // patch
        return (side, side)


def _takes(net, argument: str) -> bool:
    import inspect

    return argument in inspect.signature(net.forward).parameters
