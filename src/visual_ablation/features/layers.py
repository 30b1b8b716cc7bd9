"""List a model's layers with their output shapes at an image size, for any source:

    python -m visual_ablation.features.layers --model resnet18
    python -m visual_ablation.features.layers --source timm --model vit_small_patch16_224
    python -m visual_ablation.features.layers --backbone effnet   # from config/config.yaml

Layers are what a backbone's `layers` may name; `*` marks those of `layers: all`. Shapes
come from one forward pass of a randomly initialised model on one blank image (no weights
are read or downloaded; a Hugging Face hub model needs its config.json in the cache).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from visual_ablation.features.backbones import base, family, image_size


def unpooled(activation, grid=None):
    """A readout that keeps each layer's output as it is."""
    return activation


def output_shapes(spec: dict[str, Any]) -> tuple[list[tuple[str, tuple[int, ...]]], int]:
    """[(layer, output shape)] in the order the forward pass reaches them, and the image
    size used."""
    import torch

    fam = family({**spec, "weights": "none"})
    size = image_size(spec)
    net = fam.build({**spec, "weights": "none", "image_size": size, "seed": 0})
    if not isinstance(fam, base.HookedBackbone):  # its own layer names: ask its forward
        x = torch.zeros(1, 3, size, size)
        with torch.no_grad():
            out = fam.forward(net, x, fam.layers(), unpooled)
        return [(layer, tuple(v.shape)) for layer, v in out.items()], size
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(_module, _inputs, out) -> None:  # None: the output is left as it is
            shapes.setdefault(name, tuple(base.first_tensor(out).shape))

        return hook

    for name, module in net.named_modules():
        if name:
            module.register_forward_hook(record(name))
    with torch.no_grad():
        fam.run(net, torch.zeros(1, 3, size, size))
    return list(shapes.items()), size


def spec_from_config(backbone: str, configfile: str) -> dict[str, Any]:
    import yaml

    with open(configfile) as f:
        config = yaml.safe_load(f)
    found = (config.get("backbones") or {}).get(backbone)
    if found is None:
        raise SystemExit(
            f"{configfile} has no backbone {backbone!r} "
            f"(its backbones: {', '.join(config.get('backbones') or {})})"
        )
    return dict(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", help="a backbone of the config file")
    parser.add_argument("--configfile", default="config/config.yaml")
    parser.add_argument("--model", help="a model name of its source")
    parser.add_argument("--source", choices=base.source_names())
    parser.add_argument("--image-size", type=int, help="default: the model's own (or 64)")
    args = parser.parse_args(argv)
    if args.backbone:
        spec = spec_from_config(args.backbone, args.configfile)
    elif args.model:
        spec = {"model": args.model}
    else:
        parser.error("give --model (and --source) or --backbone")
    if args.source:
        spec["source"] = args.source
    if args.image_size:
        spec["image_size"] = args.image_size
    fam = family(spec)
    if not fam.known():
        print(f"error: {fam.unknown_model()}", file=sys.stderr)
        return 2
    try:
        shapes, size = output_shapes(spec)
    except (base.WeightsNotLocal, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    defaults = set(fam.default_layers())
    print(
        f"{fam.source} model {fam.model} at {size} x {size} ({len(shapes)} layers; * layers: all)"
    )
    width = max(len(name) for name, _ in shapes)
    for name, shape in shapes:
        mark = "*" if name in defaults else " "
        print(f"{mark} {name:<{width}}  {list(shape)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
