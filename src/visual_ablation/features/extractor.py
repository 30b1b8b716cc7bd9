"""The pooled multi-layer forward of one backbone spec: images in, {layer: [N, dim]} out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from visual_ablation.features.backbones import family, image_size, normalization_values
from visual_ablation.features.readout import Readout
from visual_ablation.vocabulary import BACKBONE_DEFAULTS

if TYPE_CHECKING:
    import torch


class LayerExtractor:
    """One forward pass -> {layer: pooled [N, dim] features} for the requested layers,
    of [0, 1] images at any size (resized, then normalised as the model's source did)."""

    def __init__(self, spec: dict[str, Any], device: torch.device | str = "cpu"):
        import torch

        self.family = family(spec)
        self.model_name = spec["model"]
        self.image_size = image_size(spec)  # a feature spec has it; else the model's own
        spec = {**spec, "image_size": self.image_size}
        self.readout = Readout.from_spec(spec)
        valid = set(self.family.layers())
        layers = spec.get("layers", BACKBONE_DEFAULTS["layers"])
        self.layers = self.family.default_layers() if layers == "all" else list(layers)
        for layer in self.layers:
            if layer not in valid:
                raise ValueError(self.family.unknown_layer(layer, self.image_size))
        self.normalization = normalization_values(spec)
        self.mean = torch.tensor(self.normalization["mean"], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(self.normalization["std"], device=device).view(1, 3, 1, 1)
        self.net = self.family.build(spec)
        if self.net is not None:
            self.family.prepare(self.net, self.layers, self.readout)
            self.net.to(device)
            if torch.device(device).type == "cuda":
                self.net.to(memory_format=torch.channels_last)  # faster convs with autocast

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images at any size -> backbone input (resized, normalised as the model's
        source did)."""
        import torch.nn.functional as F

        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(
                x,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        return (x - self.mean) / self.std

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        import torch

        with torch.no_grad():
            x = self.preprocess(x)
            if self.net is not None and x.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            out = self.family.forward(self.net, x, self.layers, self.readout)
            return {layer: out[layer] for layer in self.layers}

    def forward_bare(self, x: torch.Tensor) -> torch.Tensor:
        """The network's own full output (class logits) of the preprocessed batch: what
        checks the preprocessing against labelled photos (tests/features/test_backbones.py,
        benchmarks/image_size.py) and the bare-forward reference of the benchmarks."""
        import torch

        with torch.no_grad():
            if self.net is None:
                return x
            return self.family.run(self.net, self.preprocess(x))
