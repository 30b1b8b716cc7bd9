"""Any torchvision classification architecture by name (`source: torchvision`, the default
for names that are not bundled): layers are its module names, pretrained weights (its
`DEFAULT` or a named enum member such as `IMAGENET1K_V1`) come from torch hub's cache with
their own preprocessing (the weights' transforms: mean, std and crop size)."""

from __future__ import annotations

import functools
import re
from typing import Any

from visual_ablation.features.backbones import checkpoints, library_cache
from visual_ablation.features.backbones.base import (
    PRETRAINED,
    HookedBackbone,
    WeightsNotLocal,
    register,
)
from visual_ablation.vocabulary import BACKBONE_DEFAULTS, NORMALIZATIONS


@functools.cache
def _models() -> tuple[str, ...]:
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


@functools.cache
def _structure(model: str):
    """A torchvision model on the meta device: its module tree, no memory, no weights."""
    import torch
    import torchvision

    with torch.device("meta"):
        return torchvision.models.get_model(model, weights=None)


@register
class Torchvision(HookedBackbone):
    """Any torchvision classification model; layers by module name, read with hooks.
    Version 2: a ViT's `pooling: mean` averages its patch tokens (not the class token),
    Swin's channels-last maps are read as [N, C, H, W], and pretrained weights default to
    their own crop size."""

    source = "torchvision"
    version = 2
    fetched = True
    library = "torchvision"

    @classmethod
    def claims(cls, model: str) -> bool:
        return model in _models()

    @classmethod
    def models(cls) -> list[str]:
        return list(_models())

    def tags(self) -> list[str]:
        import torchvision

        try:
            return list(torchvision.models.get_model_weights(self.model).__members__)
        except (ValueError, KeyError):
            return []

    def _weights_enum(self):
        import torchvision

        members = torchvision.models.get_model_weights(self.model)
        return (
            members[self.weights]
            if self.pretrained and self.weights != PRETRAINED
            else members.DEFAULT
        )

    def default_normalization(self) -> str:
        return "weights" if self.pretrained else "imagenet"

    def normalizations(self) -> list[str]:
        return [n for n in NORMALIZATIONS if n != "weights" or self.pretrained]

    def image_size_default(self) -> int | None:
        return None if self.pretrained else self.default_image_size

    def metadata(self) -> dict[str, Any]:
        weights = self._weights_enum()
        transforms = weights.transforms()
        return {
            "image_size": int(transforms.crop_size[0]),
            "mean": [float(v) for v in transforms.mean],
            "std": [float(v) for v in transforms.std],
            "url": weights.url,
            "name": str(weights),
        }

    def structure(self, image_size=None):
        return _structure(self.model)

    def default_layers(self) -> list[str]:
        """Nets with a `features` stack: its children; ResNet-style nets: the blocks of
        layer1..layer4; ViTs: the encoder layers; others: top-level children except the
        classifier head."""
        from torch import nn

        net = self.structure()
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

    def weights_files(self) -> list[str]:
        import os

        meta = self.cached_metadata()
        path = library_cache.torch_hub_file(meta["url"])
        if not os.path.exists(path):
            raise WeightsNotLocal(
                f"pretrained weights {meta['name']} of {self.model} are not on disk "
                f"(torch hub cache: {path})"
            )
        return [path]

    def fetch(self) -> list[str]:
        meta = self.cached_metadata()
        return [library_cache.fetch_url(meta["url"], f"weights {meta['name']}")]

    def build(self, spec: dict[str, Any]):
        import torch
        import torchvision

        # `weights: none`: seeded random init
        torch.manual_seed(int(spec.get("seed", BACKBONE_DEFAULTS["seed"])))
        net = torchvision.models.get_model(self.model, weights=None)
        if self.pretrained:
            state = torch.load(self.weights_files()[0], map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        elif self.weights not in (None, "none"):
            checkpoints.load(net, self.weights)
        return net.eval()

    def token_layout(self, net):
        patch = getattr(net, "patch_size", None)
        if patch is None or not hasattr(net, "class_token"):
            return None
        side = int(net.image_size) // int(patch)
        return (side, side)

    def transform_output(self, name, out):
        # Swin's stages keep maps channels-last: [N, H, W, C]
        if self.model.startswith("swin") and out.dim() == 4 and _SWIN_NHWC.fullmatch(name):
            return out.permute(0, 3, 1, 2)
        return out


_SWIN_NHWC = re.compile(r"features\.\d+|norm")
