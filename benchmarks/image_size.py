"""What the input side does to the pretrained EfficientNet-Lite0: top-1 and the true
class's NLL on the 20 labelled ImageNet photos of foolbox's wheel, at each backbone
image_size, for photos decoded at that size and for photos decoded at 64 px then resized
up by the backbone (what a 64 px data store fed to a larger image_size gives); both
normalisations, so the table also shows what TF Lite's own preprocessing is worth.

    .venv/bin/python benchmarks/image_size.py
    .venv/bin/python benchmarks/image_size.py --sizes 64 128 224
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from visual_ablation.data import reference_photos
from visual_ablation.features.extractor import LayerExtractor


def scores(images: np.ndarray, labels: np.ndarray, size: int, normalization: str):
    net = LayerExtractor(
        {
            "model": "efficientnet_lite0",
            "weights": "pretrained",
            "layers": ["head"],
            "image_size": size,
            "normalization": normalization,
        }
    )
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    log_proba = torch.log_softmax(net.forward_bare(x), dim=1).numpy()
    top1 = float((log_proba.argmax(1) == labels).mean())
    nll = float(-log_proba[np.arange(len(labels)), labels].mean())
    return top1, nll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 96, 128, 160, 224])
    parser.add_argument("--stored", type=int, default=64, help="side of the stored images")
    args = parser.parse_args()
    torch.set_num_threads(2)
    stored, labels = reference_photos.photos(args.stored)
    print("EfficientNet-Lite0 (ImageNet weights), 20 labelled ImageNet photos; top-1 / NLL")
    print(
        f"| image_size | decoded at that size, tf-lite | decoded at that size, imagenet "
        f"| decoded at {args.stored} px, tf-lite |"
    )
    print("|---|---|---|---|")
    for size in args.sizes:
        direct, _ = reference_photos.photos(size)
        cells = [
            scores(direct, labels, size, "tf-lite"),
            scores(direct, labels, size, "imagenet"),
            scores(stored, labels, size, "tf-lite"),
        ]
        print(f"| {size} | " + " | ".join(f"{t:.2f} / {n:.2f}" for t, n in cells) + " |")


if __name__ == "__main__":
    main()
