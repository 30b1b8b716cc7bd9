"""How a layer's output becomes one vector per image: a backbone's `readout` (conv maps)
and `pooling` (tokens), part of its feature spec."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
    - tokens [N, T, D]: the first (`pooling: cls`) or the mean (`pooling: mean`);
    - vectors [N, D] as they are."""

    tokens: str = "mean"
    grid: int | None = None
    budget: int | None = None

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Readout:
        readout = spec.get("readout", "mean")
        spatial = {} if readout == "mean" else dict(readout)
        return cls(tokens=spec.get("pooling", "mean"), **spatial)

    def side(self, channels: int, height: int, width: int) -> int:
        """The grid side a [C, H, W] map is pooled to (1: the global mean)."""
        if self.grid is not None:
            side = self.grid
        elif self.budget is not None:
            side = math.isqrt(self.budget // channels)
        else:
            return 1
        return max(1, min(side, height, width))

    def __call__(self, activation: torch.Tensor) -> torch.Tensor:
        if activation.dim() == 4:
            side = self.side(*activation.shape[1:])
            if side == 1:
                return activation.mean(dim=(2, 3))
            import torch.nn.functional as F

            return F.adaptive_avg_pool2d(activation, side).flatten(1)
        if activation.dim() == 3:
            return activation[:, 0] if self.tokens == "cls" else activation.mean(dim=1)
        return activation.flatten(1)
