"""Probes on frozen features: one head per layer, all trained together.

Each head is linear (`hidden: 0`) or one hidden layer with ReLU, on features
standardised with train-split statistics. All heads of a job share the minibatch order
and take one backward pass and one AdamW step per minibatch (one optimizer over all
heads, as in DINOv2's linear evaluation); the heads share no parameters, so each
trains exactly as it would alone. Each head has its own early stopping on validation
loss: a stopped head gets no more gradient (AdamW skips it) and keeps the weights of
its best epoch, which give its test-split probabilities.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

TRAIN, VAL, TEST = 0, 1, 2


class FeatureError(ValueError):
    """Features a probe cannot be trained on (NaN or inf values)."""


class SplitError(ValueError):
    """A split without train, validation or test images."""


@dataclass(frozen=True)
class ProbeConfig:
    hidden: int = 0
    lr: float = 1e-3
    weight_decay: float = 1e-4
    max_epochs: int = 300
    patience: int = 15
    batch_size: int = 128

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> ProbeConfig:
        return cls(**{k: spec[k] for k in cls.__dataclass_fields__ if k in spec})


@dataclass
class HeadResult:
    layer: str
    test_proba: np.ndarray  # [n_test, n_classes], from the best epoch's weights
    best_epoch: int  # 1-based epoch with the lowest validation loss
    epochs: int  # epochs trained before early stopping (or max_epochs)
    best_val_loss: float
    n_features: int


def split_sizes(split: np.ndarray) -> dict[str, int]:
    return {
        name: int((split == code).sum())
        for name, code in (("train", TRAIN), ("val", VAL), ("test", TEST))
    }


def check_split(split: np.ndarray, where: str) -> dict[str, int]:
    sizes = split_sizes(split)
    empty = [name for name, size in sizes.items() if size == 0]
    if empty:
        raise SplitError(
            f"{where}: the {' and '.join(empty)} part of the split is empty "
            f"(train={sizes['train']}, val={sizes['val']}, test={sizes['test']}). "
            "Probes need images in all three: use a larger dataset or larger split.val / "
            "split.test fractions."
        )
    return sizes


def check_finite(layer: str, values: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise FeatureError(
            f"{where}: layer {layer!r} has {int(bad.sum())} non-finite values (NaN or inf) in "
            f"{len(rows)} images (first: image {int(rows[0])}). The store is unusable for "
            "probes: rebuild it (snakemake --forcerun on the store), and if it recurs check "
            "the backbone's weights."
        )


def standardise(values: np.ndarray, train: np.ndarray) -> np.ndarray:
    """(x - mean) / std with train-split statistics; constant features stay 0."""
    x = values.astype(np.float32, copy=False)
    mean = x[train].mean(axis=0, dtype=np.float64)
    std = x[train].std(axis=0, dtype=np.float64)
    std[std < 1e-8] = 1.0
    return ((x - mean) / std).astype(np.float32)


def head_seed(run: int, layer: str) -> int:
    """A head's init depends only on (run, layer), not on which other layers are trained."""
    digest = hashlib.sha256(f"{run}/{layer}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def _uniform(shape: tuple[int, ...], bound: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=gen, dtype=torch.float32) * 2.0 - 1.0) * bound


def init_head(dim: int, n_classes: int, hidden: int, seed: int) -> list[torch.Tensor]:
    """nn.Linear's default init (uniform +-1/sqrt(fan_in)), from the head's own generator."""
    gen = torch.Generator().manual_seed(seed)
    sizes = [dim, hidden, n_classes] if hidden else [dim, n_classes]
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        bound = 1.0 / math.sqrt(fan_in)
        params += [_uniform((fan_in, fan_out), bound, gen), _uniform((fan_out,), bound, gen)]
    return params


class AdamW:
    """torch.optim.AdamW's update (decoupled weight decay, bias-corrected moments) over
    the parameters that have a gradient, written out with torch's foreach ops.

    Why not torch.optim.AdamW: constructing it imports torch._dynamo (about 1.7 s here),
    more than the whole training of a small train job. tests/test_probes.py checks this
    class step for step against torch.optim.AdamW. Like torch, each parameter counts its
    own steps (a stopped head's parameters get no gradient and take no step); parameters
    are updated in groups of equal step count (in a train job, all live ones share one).
    """

    def __init__(
        self,
        params: list[torch.Tensor],
        lr: float,
        weight_decay: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        self.params = params
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.steps = [0] * len(params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        for i in live:
            self.steps[i] += 1
        for step in sorted({self.steps[i] for i in live}):
            group = [i for i in live if self.steps[i] == step]
            self._update(group, step)

    def _update(self, index: list[int], step: int) -> None:
        beta1, beta2 = self.betas
        params = [self.params[i] for i in index]
        grads = [self.params[i].grad for i in index]
        exp_avg = [self.exp_avg[i] for i in index]
        exp_avg_sq = [self.exp_avg_sq[i] for i in index]
        torch._foreach_mul_(params, 1.0 - self.lr * self.weight_decay)
        torch._foreach_lerp_(exp_avg, grads, 1.0 - beta1)
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, 1.0 - beta2)
        step_size = self.lr / (1.0 - beta1**step)
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denom, math.sqrt(1.0 - beta2**step))
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(params, exp_avg, denom, -step_size)


def head_logits(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    if len(params) == 2:
        weight, bias = params
        return torch.addmm(bias, x, weight)
    w1, b1, w2, b2 = params
    return torch.addmm(b2, torch.relu(torch.addmm(b1, x, w1)), w2)


def train(
    features: dict[str, np.ndarray],
    labels: np.ndarray,
    split: np.ndarray,
    n_classes: int,
    probe: ProbeConfig,
    run: int,
    device: torch.device | str = "cpu",
    where: str = "features",
) -> tuple[list[HeadResult], float]:
    """Train one head per layer of `features` ({layer: [n, dim]}); returns the heads'
    results and the seconds spent training (shared by all heads)."""
    device = torch.device(device)
    check_split(split, where)
    masks = {code: split == code for code in (TRAIN, VAL, TEST)}
    layers = list(features)
    xs: dict[int, list[torch.Tensor]] = {code: [] for code in masks}
    for layer in layers:
        check_finite(layer, features[layer], where)
        x = standardise(features[layer], masks[TRAIN])
        for code, mask in masks.items():
            xs[code].append(torch.from_numpy(x[mask]).to(device))
    ys = {
        code: torch.from_numpy(labels[mask].astype(np.int64)).to(device)
        for code, mask in masks.items()
    }

    heads = [
        [
            p.to(device).requires_grad_()
            for p in init_head(
                features[layer].shape[1], n_classes, probe.hidden, head_seed(run, layer)
            )
        ]
        for layer in layers
    ]
    optimizer = AdamW(
        [p for params in heads for p in params], lr=probe.lr, weight_decay=probe.weight_decay
    )
    order = torch.Generator().manual_seed(run)  # the minibatch order, shared by all heads
    n_train = len(ys[TRAIN])
    active = list(range(len(layers)))
    best_loss = [math.inf] * len(layers)
    best_epoch = [0] * len(layers)
    epochs = [probe.max_epochs] * len(layers)
    best_params = [[p.detach().clone() for p in params] for params in heads]

    t0 = time.perf_counter()
    for epoch in range(1, probe.max_epochs + 1):
        perm = torch.randperm(n_train, generator=order).to(device)
        for start in range(0, n_train, probe.batch_size):
            rows = perm[start : start + probe.batch_size]
            y = ys[TRAIN][rows]
            loss = sum(
                F.cross_entropy(head_logits(heads[h], xs[TRAIN][h][rows]), y) for h in active
            )
            optimizer.zero_grad()  # stopped heads keep grad None: AdamW skips them
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            val_losses = torch.stack(
                [F.cross_entropy(head_logits(heads[h], xs[VAL][h]), ys[VAL]) for h in active]
            ).tolist()
        still_active = []
        for h, val_loss in zip(active, val_losses, strict=True):
            if val_loss < best_loss[h]:
                best_loss[h], best_epoch[h] = val_loss, epoch
                best_params[h] = [p.detach().clone() for p in heads[h]]
            if epoch - best_epoch[h] >= probe.patience:
                epochs[h] = epoch
            else:
                still_active.append(h)
        active = still_active
        if not active:
            break
    seconds = time.perf_counter() - t0

    results = []
    with torch.no_grad():
        for h, layer in enumerate(layers):
            logits = head_logits(best_params[h], xs[TEST][h])
            proba = torch.softmax(logits.double(), dim=1).cpu().numpy()
            results.append(
                HeadResult(
                    layer=layer,
                    test_proba=proba,
                    best_epoch=best_epoch[h],
                    epochs=epochs[h],
                    best_val_loss=best_loss[h],
                    n_features=int(features[layer].shape[1]),
                )
            )
    return results, seconds
