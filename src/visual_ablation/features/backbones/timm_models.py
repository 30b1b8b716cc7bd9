"""timm models (`source: timm`): any `timm.list_models()` name, with or without its
pretrained tag (`vit_small_patch16_224.dino`, `resnet18` with `weights: a1_in1k`, or the
hub's `timm/resnet18.a1_in1k`). Preprocessing is the tag's `pretrained_cfg` (input size,
mean, std); pretrained weights are the tag's file in the Hugging Face cache (or torch hub's,
for tags with a URL only), loaded with timm's own `pretrained_cfg_overlay=dict(file=...)`
(its checkpoint filters resample a ViT's position embedding to another image size). Layers
are module names; `layers: all` is the model's `feature_info` (its blocks)."""

from __future__ import annotations

import functools
import os
from typing import Any

from visual_ablation.features.backbones import checkpoints, library_cache
from visual_ablation.features.backbones.base import (
    PRETRAINED,
    HookedBackbone,
    WeightsNotLocal,
    register,
)
from visual_ablation.vocabulary import BACKBONE_DEFAULTS

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


@functools.cache
def _models() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


def _split(name: str) -> tuple[str, str]:
    """(architecture, tag) of a timm name; the hub's `timm/` prefix dropped."""
    name = name.removeprefix("hf-hub:").removeprefix("timm/")
    arch, _, tag = name.partition(".")
    return arch, tag


@functools.cache
def _structure(arch: str, image_size: int | None):
    import torch

    return _create(arch, image_size, device=torch.device("meta"))


def _create(name: str, image_size: int | None, device=None, **kwargs):
    """timm.create_model at `image_size` where the model takes one (ViTs); CNNs take any."""
    import contextlib

    import timm

    with device if device is not None else contextlib.nullcontext():
        if image_size:
            try:
                return timm.create_model(name, img_size=image_size, **kwargs)
            except TypeError:
                pass  # a model without img_size: its input size is free
        return timm.create_model(name, **kwargs)


@register
class Timm(HookedBackbone):
    source = "timm"
    default_image_size = None  # the tag's pretrained_cfg input size
    fetched = True
    library = "timm"

    def __init__(self, model: str, weights: str | None = "none"):
        super().__init__(model, weights)
        self.arch, self.tag = _split(model)

    @classmethod
    def models(cls) -> list[str]:
        return list(_models())

    def known(self) -> bool:
        return self.arch in _models()

    def tags(self) -> list[str]:
        import timm

        return [n.partition(".")[2] for n in timm.models.get_arch_pretrained_cfgs(self.arch)]

    @property
    def full_name(self) -> str:
        """architecture.tag of the weights: the model's own tag, a `weights` tag, or
        timm's default tag for `pretrained` and `none` (whose preprocessing is used)."""
        tag = self.tag
        if self.weights not in (None, "none", PRETRAINED) and self.pretrained:
            tag = str(self.weights)
        return f"{self.arch}.{tag}" if tag else self.arch

    def _cfg(self):
        import timm

        return timm.get_pretrained_cfg(self.full_name)

    def default_normalization(self) -> str:
        return "weights"

    def metadata(self) -> dict[str, Any]:
        cfg = self._cfg()
        if cfg is None:
            return {"image_size": 224, **IMAGENET, "hub": None, "url": None}
        return {
            "image_size": int(cfg.input_size[-1]),
            "mean": [float(v) for v in cfg.mean],
            "std": [float(v) for v in cfg.std],
            "hub": cfg.hf_hub_id or None,
            "url": cfg.url or None,
        }

    def structure(self, image_size: int | None = None):
        return _structure(self.arch, image_size)

    def default_layers(self) -> list[str]:
        info = getattr(self.structure(), "feature_info", None)
        if info:
            return [entry["module"] for entry in info]
        return super().default_layers()

    def weights_files(self) -> list[str]:
        meta = self.cached_metadata()
        what = f"pretrained weights of timm model {self.full_name}"
        if meta["hub"]:
            return library_cache.hub_files(meta["hub"], [HUB_WEIGHTS], what)
        if meta["url"]:
            path = library_cache.torch_hub_file(meta["url"])
            if not os.path.exists(path):
                raise WeightsNotLocal(f"{what} are not on disk (torch hub cache: {path})")
            return [path]
        raise ValueError(f"timm has no pretrained weights for {self.full_name}")

    def fetch(self) -> list[str]:
        meta = self.cached_metadata()
        what = f"pretrained weights of timm model {self.full_name}"
        if meta["hub"]:
            return library_cache.fetch_hub_files(meta["hub"], [HUB_WEIGHTS], what)
        if meta["url"]:
            return [library_cache.fetch_url(meta["url"], what)]
        return self.weights_files()

    def build(self, spec: dict[str, Any]):
        import torch

        # `weights: none`: seeded random init
        torch.manual_seed(int(spec.get("seed", BACKBONE_DEFAULTS["seed"])))
        size = int(spec["image_size"])
        if self.pretrained:
            file = self.weights_files()[0]
            net = _create(
                self.full_name, size, pretrained=True, pretrained_cfg_overlay={"file": file}
            )
        else:
            net = _create(self.arch, size, pretrained=False)
            if self.weights not in (None, "none"):
                checkpoints.load(net, self.weights)
        return net.eval()

    def token_layout(self, net):
        embed = getattr(net, "patch_embed", None)
        grid = getattr(embed, "grid_size", None)
        return tuple(int(g) for g in grid) if grid else None
