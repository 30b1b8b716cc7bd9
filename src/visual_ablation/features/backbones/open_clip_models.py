"""OpenCLIP image towers (`source: open_clip`): `model` an `open_clip.list_models()` name
(`ViT-B-32`), `weights` one of its pretrained tags (`laion2b_s34b_b79k`; `pretrained`: the
first tag open_clip lists for it), `none` or a checkpoint of the whole CLIP model.
Preprocessing is open_clip's own: the tag's mean and std (OpenAI's where it names none) and
the model config's image size. Layers are module names of `model.visual`
(`transformer.resblocks.3`); `layers: all` is the transformer's blocks (a ResNet tower's
blocks of layer1..layer4)."""

from __future__ import annotations

import functools
import os
from typing import Any

from visual_ablation.features.backbones import checkpoints, library_cache
from visual_ablation.features.backbones.base import (
    PRETRAINED,
    HookedBackbone,
    register,
)
from visual_ablation.vocabulary import BACKBONE_DEFAULTS

HUB_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@functools.cache
def _models() -> tuple[str, ...]:
    import open_clip

    return tuple(open_clip.list_models())


@functools.cache
def _whole_structure(model: str, image_size: int | None):
    """The whole CLIP model (image and text towers) on the meta device."""
    import torch

    with torch.device("meta"):
        return _create(model, image_size, device="meta")


def _create(model: str, image_size: int | None, quick_gelu: bool = False, device="cpu"):
    import logging

    import open_clip

    # open_clip warns that no weights were loaded: they are loaded after it, here
    logging.disable(logging.WARNING)
    try:
        return open_clip.create_model(
            model,
            pretrained=None,
            force_image_size=image_size,
            force_quick_gelu=quick_gelu,
            device=device,
        )
    finally:
        logging.disable(logging.NOTSET)


@register
class OpenClip(HookedBackbone):
    source = "open_clip"
    default_image_size = None  # the model config's
    fetched = True
    library = "open-clip-torch"

    @classmethod
    def models(cls) -> list[str]:
        return list(_models())

    def tags(self) -> list[str]:
        import open_clip

        return list(open_clip.list_pretrained_tags_by_model(self.model))

    @property
    def tag(self) -> str | None:
        if not self.pretrained:
            return None
        if self.weights == PRETRAINED:
            tags = self.tags()
            if not tags:
                raise ValueError(f"open_clip has no pretrained tag for {self.model}")
            return tags[0]
        return str(self.weights)

    def _cfg(self) -> dict[str, Any]:
        import open_clip

        return open_clip.get_pretrained_cfg(self.model, self.tag) if self.tag else {}

    def default_normalization(self) -> str:
        return "weights"

    def metadata(self) -> dict[str, Any]:
        import open_clip
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        size = open_clip.get_model_config(self.model)["vision_cfg"]["image_size"]
        cfg = self._cfg()
        return {
            "image_size": int(size if isinstance(size, int) else size[0]),
            "mean": [float(v) for v in cfg.get("mean", OPENAI_DATASET_MEAN)],
            "std": [float(v) for v in cfg.get("std", OPENAI_DATASET_STD)],
            "hub": cfg.get("hf_hub") or None,
            "tag": self.tag,
            "quick_gelu": bool(cfg.get("quick_gelu")),
        }

    def structure(self, image_size=None):
        return _whole_structure(self.model, image_size).visual

    def checkpoint_structure(self, image_size=None):
        return _whole_structure(self.model, image_size)  # a checkpoint of the whole model

    def default_layers(self) -> list[str]:
        visual = self.structure()
        blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
        if blocks is not None:
            return [f"transformer.resblocks.{i}" for i in range(len(blocks))]
        children = dict(visual.named_children())
        stages = [n for n in ("layer1", "layer2", "layer3", "layer4") if n in children]
        if stages:
            return [f"{s}.{n}" for s in stages for n, _ in children[s].named_children()]
        return list(children)

    def _hub(self) -> tuple[str, list[str]]:
        hub = self.cached_metadata()["hub"]
        if not hub:
            raise ValueError(f"open_clip's {self.model} {self.weights} is not on the hub")
        repo, filename = os.path.split(hub)  # 'org/name/' (the default file) or 'org/name/file'
        return repo, [filename] if filename else list(HUB_WEIGHTS)

    def weights_files(self) -> list[str]:
        repo, names = self._hub()
        what = f"open_clip weights {self.model} {self.cached_metadata()['tag']}"
        return library_cache.hub_files(repo, [names], what)

    def fetch(self) -> list[str]:
        repo, names = self._hub()
        what = f"open_clip weights {self.model} {self.cached_metadata()['tag']}"
        return library_cache.fetch_hub_files(repo, [names], what)

    def build(self, spec: dict[str, Any]):
        import open_clip
        import torch

        # `weights: none`: seeded random init
        torch.manual_seed(int(spec.get("seed", BACKBONE_DEFAULTS["seed"])))
        size = int(spec["image_size"])
        model = _create(self.model, size, quick_gelu=self.cached_metadata()["quick_gelu"])
        if self.pretrained:
            # open_clip's own loader: it resizes the position embedding to image_size
            open_clip.load_checkpoint(model, self.weights_files()[0], weights_only=True)
        elif self.weights not in (None, "none"):
            checkpoints.load(model, self.weights)
        return model.visual.eval()

    def token_layout(self, net):
        grid = getattr(net, "grid_size", None)
        return tuple(int(g) for g in grid) if grid else None
