"""How a layer's output becomes one vector per image: a backbone's `readout` (conv maps)
and `pooling` (tokens), part of its feature spec."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from visual_ablation.vocabulary import BACKBONE_DEFAULTS

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Readout:
    """How one layer's output becomes one vector per image (a backbone's `readout` and
    `pooling` keys, part of its feature spec):
    - conv maps [N, C, H, W]: the global mean over space (`readout: mean`); an adaptive
      average over a g x g grid, flattened channel-major (`readout: {grid: g}`); or the
      largest such grid whose C g^2 values fit a budget (`readout: {budget: B}`: g =
      floor(sqrt(B / C)), at least 1), as Zhang et al. 2016 and Goyal et al. 2019 pool
      each ResNet stage to about 9k values (VirTex's FeatureExtractor9k). A grid never
      exceeds the map (no duplicated cells);
    - tokens [N, T, D] of a vision transformer whose patch tokens form a known grid (the
      family's `token_layout`; the tokens before them are its class and register tokens):
      the class token (`pooling: cls`), the mean of the patch tokens (`pooling: mean`, as
      timm's `global_pool='avg'`), or the patch tokens as a [D, rows, cols] map read out
      as a conv map is (`pooling: patches`, then `readout`). Tokens without a known grid:
      the first or the mean of all;
    - vectors [N, D] as they are."""

    tokens: str = "mean"
    grid: int | None = None
    budget: int | None = None

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Readout:
        readout = spec.get("readout", BACKBONE_DEFAULTS["readout"])
        spatial = {} if readout == "mean" else dict(readout)
        return cls(tokens=spec.get("pooling", BACKBONE_DEFAULTS["pooling"]), **spatial)

    def side(self, channels: int, height: int, width: int) -> int:
        """The grid side a [C, H, W] map is pooled to (1: the global mean)."""
        if self.grid is not None:
            side = self.grid
        elif self.budget is not None:
            side = math.isqrt(self.budget // channels)
        else:
            return 1
        return max(1, min(side, height, width))

    def __call__(
        self, activation: torch.Tensor, grid: tuple[int, int] | None = None
    ) -> torch.Tensor:
        if activation.dim() == 3 and grid is not None:
            return self.tokens_on_grid(activation, grid)
        if activation.dim() == 4:
            side = self.side(*activation.shape[1:])
            if side == 1:
                return activation.mean(dim=(2, 3))
            import torch.nn.functional as F

            return F.adaptive_avg_pool2d(activation, side).flatten(1)
        if activation.dim() == 3:
            return activation[:, 0] if self.tokens == "cls" else activation.mean(dim=1)
        return activation.flatten(1)

    def tokens_on_grid(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        rows, cols = grid
        prefix = tokens.shape[1] - rows * cols
        if prefix < 0:
            raise ValueError(
                f"{tokens.shape[1]} tokens cannot hold a {rows} x {cols} grid of patches"
            )
        if self.tokens == "cls":
            if prefix == 0:
                raise ValueError("pooling: cls, but this layer's tokens have no class token")
            return tokens[:, 0]
        patches = tokens[:, prefix:]
        if self.tokens == "mean":
            return patches.mean(dim=1)
        n, _, dim = patches.shape
        return self(patches.transpose(1, 2).reshape(n, dim, rows, cols))
