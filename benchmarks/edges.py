"""How well the `edges` representation keeps the contour and drops the rest: Canny maps of
synthetic shapes scored against each image's true silhouette contour (known, since the
generator draws it), for MATLAB's defaults (sigma sqrt(2) px, i.e. 0.0063 of a 224 px side,
and 70% of pixels below the high threshold, which Geirhos et al. 2019 used on 224 px
photos), the workflow's defaults (sigma 0.04 of the side, 90%) and others.

precision: edge pixels within one pixel of the true contour; recall: contour pixels with
an edge pixel within one pixel; F1 their harmonic mean; edge%: edge pixels per image.

    .venv/bin/python benchmarks/edges.py
    .venv/bin/python benchmarks/edges.py --n 300 --sizes 64 160
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from visual_ablation.data import procedural
from visual_ablation.features import representations

# (sigma as a fraction of the side, high); MATLAB's defaults: sqrt(2) px of 224 px, 0.7
SETTINGS = [(0.0063, 0.7), (0.02, 0.9), (0.03, 0.9), (0.04, 0.7), (0.04, 0.85), (0.04, 0.9)]
SETTINGS += [(0.04, 0.95), (0.05, 0.9)]


def near(mask: torch.Tensor) -> torch.Tensor:
    """Pixels within one pixel (3x3) of `mask` [N, H, W]."""
    return F.max_pool2d(mask[:, None].float(), 3, 1, 1)[:, 0] > 0


def scores(edges: torch.Tensor, silhouettes: torch.Tensor) -> dict[str, float]:
    inside = silhouettes
    # the contour: silhouette pixels with a 4-neighbour outside it
    padded = F.pad(inside[:, None].float(), (1, 1, 1, 1), value=0.0)[:, 0] > 0
    outside_next = (
        ~padded[:, :-2, 1:-1] | ~padded[:, 2:, 1:-1] | ~padded[:, 1:-1, :-2] | ~padded[:, 1:-1, 2:]
    )
    contour = inside & outside_next
    precision = (edges & near(contour)).sum() / edges.sum().clamp_min(1)
    recall = (contour & near(edges)).sum() / contour.sum()
    f1 = 2 * precision * recall / (precision + recall)
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "edge_share": float(edges.float().mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="synthetic shapes")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 160])
    args = parser.parse_args()
    torch.set_num_threads(2)
    source = procedural.ShapesSource(args.n, seed=0)
    for size in args.sizes:
        images = np.concatenate(list(source.decode(np.arange(args.n), size)))
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        silhouettes = torch.from_numpy(
            np.stack([source.silhouette(i, size) for i in range(args.n)])
        )
        print(f"\n{args.n} synthetic shapes at {size} px")
        print("| sigma | high | precision | recall | F1 | edge pixels |")
        print("|---|---|---|---|---|---|")
        for sigma, high in SETTINGS:
            edge = representations.canny_edges(
                representations.luminance(x), sigma_px=sigma * size, high=high, low=0.4
            )[0][:, 0]
            s = scores(edge, silhouettes)
            print(
                f"| {sigma} | {high} | {s['precision']:.2f} | {s['recall']:.2f} | "
                f"{s['f1']:.2f} | {100 * s['edge_share']:.1f}% |"
            )


if __name__ == "__main__":
    main()
