"""Backbones: one family class per source in a registry, and what the rest of the package
asks of them. Sources (a backbone's `source` key): `bundled` (pixels, image_statistics,
efficientnet_lite0, mobilenet_v2_features: the default for those names), `torchvision` (the
default for other names), `timm`, `huggingface`, `open_clip`. Each family takes its
preprocessing from its library's own metadata, reads layers by module name, and finds its
library's pretrained weights in that library's own cache; `fetch` (the fetch_weights rule,
never a compute node) downloads them once.

Adding a family is one class in its own module here, registered with `@register`, plus its
test. Families import their library only inside methods: plan/config.py asks them for
defaults while Snakemake parses the workflow.
"""

from __future__ import annotations

import os
from typing import Any

from visual_ablation.features.backbones import (  # noqa: F401 (each registers its family)
    bundled,
    hf_models,
    open_clip_models,
    timm_models,
    torchvision_models,
)
from visual_ablation.features.backbones.base import (  # noqa: F401 (the package's API)
    BUNDLED,
    LAYERS_COMMAND,
    PRETRAINED,
    SOURCES,
    Backbone,
    StopForward,
    WeightsNotLocal,
    default_source,
    family,
    family_class,
    hub_offline,
    is_checkpoint_path,
    source_names,
)
from visual_ablation.features.backbones.bundled import (  # noqa: F401
    AMPLITUDE_BANDS,
    EDGE_THRESHOLDS,
    EFFNET_LITE0_LAYERS,
    LUMA,
    ORIENTATIONS,
)
from visual_ablation.features.backbones.library_cache import files_sha256, sha256  # noqa: F401
from visual_ablation.vocabulary import BACKBONE_DEFAULTS


def available_layers(model: str | dict[str, Any]) -> list[str]:
    return family(model).layers()


def default_layers(model: str | dict[str, Any]) -> list[str]:
    return family(model).default_layers()


def preprocessing(spec: dict[str, Any]) -> dict[str, Any]:
    """{image_size, mean, std} of the backbone's source (its library's metadata)."""
    return family(spec).preprocessing()


def image_size(spec: dict[str, Any]) -> int:
    """The input side of a backbone spec: its own, else its family's default, else the
    model's own (its library's preprocessing)."""
    fam = family(spec)
    size = spec.get("image_size") or fam.image_size_default()
    return int(size or fam.preprocessing()["image_size"])


def normalization_values(spec: dict[str, Any]) -> dict[str, list[float]]:
    """The (x - mean) / std of a backbone spec's `normalization`, as numbers."""
    name = spec.get("normalization") or family(spec).default_normalization()
    if name == "weights":
        meta = preprocessing(spec)
        return {"mean": list(meta["mean"]), "std": list(meta["std"])}
    return family(spec).normalization_values(name)


def weights_files(spec: dict[str, Any]) -> list[str]:
    """Every file that defines the weights of a backbone spec, where they are not a pinned
    package's: the library's own (pretrained or a tag, and a Hugging Face model's configs)
    and a checkpoint path. WeightsNotLocal where the library's are not on disk."""
    fam = family(spec)
    files = fam.weights_files() if fam.library_files else []
    if is_checkpoint_path(spec.get("weights")) and fam.uses_weights:
        files.append(str(spec["weights"]))
    return files


def needs_fetch(spec: dict[str, Any]) -> bool:
    """Whether the fetch_weights rule must fetch this backbone's files first."""
    fam = family(spec)
    if not fam.library_files:
        return False
    try:
        fam.weights_files()
    except WeightsNotLocal:
        return True
    return False


def fetch(spec: dict[str, Any]) -> list[str]:
    return family(spec).fetch()


def resolved(spec: dict[str, Any]) -> dict[str, Any]:
    """What a feature spec adds to a backbone's config spec: the family's version where
    it has changed its stores, the image size of the model's own preprocessing where the
    config gives none, and the weights files' SHA-256 (so a changed file re-plans its
    stores). WeightsNotLocal while files are still to be fetched."""
    fam = family(spec)
    out: dict[str, Any] = {}
    if fam.version > 1:
        out["family_version"] = fam.version
    if spec.get("image_size") is None:
        out["image_size"] = image_size(spec)
    files = weights_files(spec)
    if files:
        out["weights_sha256"] = files_sha256(files)
    if fam.uses_weights and spec.get("weights") in (None, "none"):
        from visual_ablation.features.batchnorm import CALIBRATION

        # a random network's BatchNorm statistics come from the dataset (batchnorm.py)
        out["batchnorm_statistics"] = dict(CALIBRATION)
    return out


def weights_identity(spec: dict[str, Any]) -> dict[str, Any]:
    """Provenance of the weights actually loaded (recorded in the store's attrs)."""
    weights = spec.get("weights")
    fam = family(spec)
    if not fam.uses_weights or weights in (None, "none"):
        return {"weights": weights, "seed": spec.get("seed", BACKBONE_DEFAULTS["seed"])}
    if fam.pretrained and not fam.fetched:
        paths = fam.weights_files()  # a pinned package's file
    else:
        paths = weights_files(spec)
    return {
        "weights": weights,
        "files": [os.path.basename(p) for p in paths],
        "sha256": files_sha256(paths),
    }
