"""What every backbone family is: the `Backbone` interface, the family registry by source,
and `HookedBackbone`, the families whose layers are module names read with forward hooks.

Constructing a family is cheap and torch-free (plan/config.py asks families for defaults
while Snakemake parses the workflow); everything that needs the library imports it inside
the method.
"""

from __future__ import annotations

import difflib
import json
import os
from typing import TYPE_CHECKING, Any, ClassVar

from visual_ablation.features.readout import Readout
from visual_ablation.plumbing import records
from visual_ablation.vocabulary import BACKBONE_DEFAULTS, NORMALIZATIONS

if TYPE_CHECKING:
    import torch
    from torch import nn

# where the libraries' metadata is remembered (reading it takes importing them: seconds,
# and every `snakemake -n` asks)
METADATA_RECORD = os.path.join(".snakemake", "visual-ablation", "backbone-metadata.json")
# the command that prints a model's layers with their output shapes (README, errors)
LAYERS_COMMAND = "python -m visual_ablation.features.layers"
# `weights` values that are not a checkpoint path or a named tag
NO_WEIGHTS = ("none", None)
PRETRAINED = "pretrained"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".pth.tar", ".tar")


class StopForward(Exception):
    """Raised by the hook of the last requested layer: the rest of the net is not needed."""


class WeightsNotLocal(FileNotFoundError):
    """A family's weights (or the metadata that comes with them) are not on this machine
    yet: the `fetch_weights` rule fetches them."""


def is_checkpoint_path(weights: Any) -> bool:
    """A `weights` value that names a file or folder (not none, pretrained or a tag)."""
    if weights in (*NO_WEIGHTS, PRETRAINED):
        return False
    text = str(weights)
    return os.sep in text or text.startswith(("~", ".")) or text.endswith(CHECKPOINT_SUFFIXES)


def closest(name: str, valid: list[str], n: int = 5) -> list[str]:
    return difflib.get_close_matches(name, valid, n=n, cutoff=0.5)


class Backbone:
    """One family of models of one source. The class attributes are what plan/config.py
    needs without torch."""

    source: ClassVar[str] = "bundled"
    names: ClassVar[tuple[str, ...]] = ()  # the family's model names, when it has a list
    default_image_size: ClassVar[int | None] = 64  # None: the model's own (its metadata)
    uses_weights: ClassVar[bool] = True  # False: `weights` means nothing (pixels)
    # False: the layers are parallel measurements, not stages in depth (figures then
    # draw them as points, not a line)
    layers_in_depth: ClassVar[bool] = True
    # bumped when the family's stores change meaning: its stores (only) are re-planned
    version: ClassVar[int] = 1
    # True: pretrained weights and preprocessing come from a library's cache, fetched once
    # by the fetch_weights rule, and the feature spec records the files' hash
    fetched: ClassVar[bool] = False
    # the pip distribution whose code holds the metadata (remembered per its version)
    library: ClassVar[str | None] = None

    def __init__(self, model: str, weights: str | None = "none"):
        self.model = model
        self.weights = weights

    @classmethod
    def claims(cls, model: str) -> bool:
        return model in cls.names

    @classmethod
    def models(cls) -> list[str]:
        """Every model name of the family (may import the library)."""
        return list(cls.names)

    def known(self) -> bool:
        """Whether the model name exists in this source (may import the library)."""
        return self.model in self.models()

    def unknown_model(self) -> str:
        """Why the model name is refused, with the closest names of this source."""
        near = closest(self.model, self.models())
        hint = f" Closest: {', '.join(near)}." if near else ""
        return f"{self.model!r} is not a {self.source} model.{hint}"

    def tags(self) -> list[str]:
        """Named pretrained weights `weights` may give besides `pretrained`."""
        return []

    @property
    def library_files(self) -> bool:
        """Whether these weights need files from the library's cache (`weights_files`):
        its pretrained weights or a tag, for a family whose weights are fetched."""
        return self.fetched and self.pretrained

    @property
    def pretrained(self) -> bool:
        """The weights are the library's own (pretrained or a named tag), not a file."""
        return self.weights not in NO_WEIGHTS and not is_checkpoint_path(self.weights)

    def default_normalization(self) -> str:
        """The normalisation this model's weights were trained with (NORMALIZATIONS)."""
        return "imagenet"

    def normalizations(self) -> list[str]:
        """Every normalisation that makes sense for these weights (`weights`: where the
        library has preprocessing metadata)."""
        return [name for name in NORMALIZATIONS if name != "weights" or self.fetched]

    def normalization_values(self, name: str) -> dict[str, list[float]]:
        if name == "weights":
            meta = self.preprocessing()
            return {"mean": list(meta["mean"]), "std": list(meta["std"])}
        return dict(NORMALIZATIONS[name])

    def image_size_default(self) -> int | None:
        """`image_size` when the config gives none (None: the model's own, from
        `preprocessing`, resolved when the feature spec is)."""
        return self.default_image_size

    def metadata(self) -> dict[str, Any]:
        """What the library says of these weights: {image_size, mean, std} its source
        preprocesses with, and where its files come from; WeightsNotLocal where that
        metadata is not on disk yet."""
        raise ValueError(f"{self.model} has no preprocessing metadata")

    def cached_metadata(self) -> dict[str, Any]:
        """`metadata`, remembered in METADATA_RECORD per library version."""
        if self.library is None:
            return self.metadata()
        from importlib.metadata import version

        key = json.dumps([self.source, self.model, self.weights, version(self.library)])
        return records.remembered(METADATA_RECORD, key, self.metadata, keep=100)

    def preprocessing(self) -> dict[str, Any]:
        """{image_size, mean, std} the model's source preprocesses with."""
        meta = self.cached_metadata()
        return {k: meta[k] for k in ("image_size", "mean", "std")}

    def layers(self) -> list[str]:
        """Every layer name the model accepts."""
        raise NotImplementedError

    def default_layers(self) -> list[str]:
        """What `layers: all` means: every block, in forward order."""
        return self.layers()

    def unknown_layer(self, layer: str, image_size: int | None = None) -> str:
        """Why a layer name is refused: the closest names and the listing command."""
        near = closest(layer, self.layers())
        hint = f"closest: {', '.join(near)}" if near else "no close name"
        return (
            f"unknown layer {layer!r} of {self.model} ({hint}). Every layer with its output "
            f"shape: {LAYERS_COMMAND} --source {self.source} --model {self.model}"
            + (f" --image-size {image_size}" if image_size else "")
        )

    def weights_files(self) -> list[str]:
        """The local files of the library's own weights (pretrained or a tag) and the
        metadata that comes with them; WeightsNotLocal where one is not on disk."""
        raise ValueError(f"{self.model} has no pretrained weights")

    def missing_weights(self) -> str | None:
        """Why the library's own weights cannot be used from disk now, or None."""
        try:
            self.weights_files()
        except WeightsNotLocal as err:
            return str(err)
        except (ValueError, KeyError) as err:
            return f"{self.model} has no pretrained weights ({err})"
        return None

    def fetch(self) -> list[str]:
        """Download the library's own weights into its own cache (the fetch_weights rule,
        on a machine with internet); the files."""
        return self.weights_files()

    def structure(self, image_size: int | None = None) -> nn.Module | None:
        """The module tree without weights (meta device where possible): layer names."""
        return None

    def checkpoint_module(self, net: nn.Module) -> nn.Module:
        """The part of the model a checkpoint path is loaded into."""
        return net

    def checkpoint_structure(self, image_size: int | None = None) -> nn.Module:
        """What a checkpoint path must fit (names and shapes; meta device)."""
        return self.checkpoint_module(self.structure(image_size))

    def build(self, spec: dict[str, Any]) -> nn.Module | None:
        """The model with its weights, in eval mode (None: no network)."""
        raise NotImplementedError

    def prepare(self, net: nn.Module, layers: list[str], pool: Readout) -> None:
        """Set the model up to yield `layers` (hooks, for example) once, after build."""

    def forward(
        self, net: nn.Module | None, x: torch.Tensor, layers: list[str], pool: Readout
    ) -> dict[str, torch.Tensor]:
        """{layer: pooled [N, dim]} of the preprocessed batch, from one forward pass (each
        layer's output read out by `pool`)."""
        raise NotImplementedError

    def run(self, net: nn.Module, x: torch.Tensor) -> Any:
        """The network's own forward of a preprocessed batch (its full output)."""
        return net(x)


SOURCES: dict[str, type[Backbone]] = {}  # source -> its family (bundled: by model name)
BUNDLED: list[type[Backbone]] = []


def register(cls: type[Backbone]) -> type[Backbone]:
    if cls.source == "bundled":
        BUNDLED.append(cls)
    else:
        SOURCES[cls.source] = cls
    return cls


def source_names() -> list[str]:
    return ["bundled", *SOURCES]


def default_source(model: str) -> str:
    """`source` when the config gives none: a bundled model's, else torchvision."""
    return "bundled" if any(cls.claims(model) for cls in BUNDLED) else "torchvision"


def family_class(model: str, source: str | None = None) -> type[Backbone]:
    source = source or default_source(model)
    if source == "bundled":
        for cls in BUNDLED:
            if cls.claims(model):
                return cls
        names = [n for cls in BUNDLED for n in cls.names]
        raise ValueError(
            f"{model!r} is not a bundled model (bundled: {', '.join(names)}); name its "
            f"source: one of {', '.join(SOURCES)}"
        )
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; valid: {', '.join(source_names())}")
    return SOURCES[source]


def family(model: str | dict[str, Any], source: str | None = None, weights=None) -> Backbone:
    """The family of a model name (or of a backbone spec: its model, source and weights)."""
    if isinstance(model, dict):
        spec = model
        return family_class(spec["model"], spec.get("source"))(
            spec["model"], spec.get("weights", BACKBONE_DEFAULTS["weights"])
        )
    return family_class(model, source)(model, "none" if weights is None else weights)


def first_tensor(output: Any) -> torch.Tensor:
    """A module's output as one tensor: the first of a tuple, a model output's hidden
    state."""
    if isinstance(output, tuple | list):
        return first_tensor(output[0])
    if hasattr(output, "last_hidden_state"):
        return output.last_hidden_state
    return output


class HookedBackbone(Backbone):
    """Layers are module names (`named_modules`), each read by a forward hook that pools its
    output; the hook of the last requested layer stops the pass."""

    def layers(self) -> list[str]:
        return [name for name, _ in self.structure().named_modules() if name]

    def token_layout(self, net: nn.Module) -> tuple[int, int] | None:
        """The (rows, columns) grid of a token model's patch tokens (None: no tokens)."""
        return None

    def transform_output(self, name: str, out: torch.Tensor) -> torch.Tensor:
        """A layer's output in the shapes the readout knows ([N, C, H, W], [N, T, D])."""
        return out

    def prepare(self, net, layers, pool):
        modules = dict(net.named_modules())
        self._captured: dict[str, torch.Tensor] = {}
        self._reading = False
        grid = self.token_layout(net)

        def hook(name: str):
            def fn(_module, _inputs, output):
                if not self._reading:  # the network's own forward (forward_bare)
                    return
                out = self.transform_output(name, first_tensor(output))
                self._captured[name] = pool(out, grid)
                if len(self._captured) == len(layers):
                    raise StopForward

            return fn

        for name in layers:
            modules[name].register_forward_hook(hook(name))

    def forward(self, net, x, layers, pool):
        self._captured, self._reading = {}, True
        try:
            self.run(net, x)
        except StopForward:
            pass
        finally:
            self._reading = False
        return self._captured


def hub_offline() -> bool:
    """The Hugging Face hub's own offline switch (HF_HUB_OFFLINE), as the hub reads it."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
