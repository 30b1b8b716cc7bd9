"""Probes on frozen features: one head per (run, layer), all trained together.

Each head is linear (`hidden: 0`) or one hidden layer with ReLU, on features
standardised with train-split statistics. Heads over layers of similar width are
stacked (`HeadStack`, zero-padded to one width; `stack_groups`): one batched matmul per
minibatch serves all of a stack's heads, over every run of the job, and one
AdamW step updates every stack (one optimizer over all heads, as in DINOv2's linear
evaluation). Heads share no parameters and each run keeps its own minibatch order, so
each head trains exactly as it would alone; tests/test_probes.py checks that against a
plain per-head PyTorch loop. Each head has its own early stopping on validation loss:
once stopped it leaves the loss (no more gradient) and its best epoch's weights, kept
aside, give its test-split probabilities. The gradients are written out
(`head_gradients`: autograd's kernels without its graph, equal to autograd's up to
float32 rounding (bit for bit where the BLAS takes the same path); in the static
engine every stack's logits share one buffer), so that a step runs few kernels.

Two engines compute the same steps (`train(engine=...)`):
- `eager` (the CPU's): stopped heads are dropped from each step's matmuls, so a
  CPU that is bound by arithmetic does no work for them.
- `static` (CUDA's): every step has the same shapes and no host synchronisation. Stopped
  heads stay in the matmuls with their loss weighted 0 (the same zero gradient), the
  minibatch order reaches the device once per epoch, AdamW keeps its step count on the
  device (`DeviceAdamW`), early stopping is decided on the device once per epoch, and
  on CUDA each step is one CUDA graph replay: a step of small matmuls is bound by
  kernel launches, not arithmetic, and a graph launches all of them at once. On the
  CPU both engines give identical numbers.

`solver: lbfgs` replaces the engines for linear heads: each head is fitted to its
L2-penalised optimum by full-batch L-BFGS (lbfgs.py), with no minibatches, learning rate
or early stopping; the stacks, slots and the choice among weight decays are the same.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from visual_ablation import lbfgs
from visual_ablation.splits import TEST, TRAIN, VAL, check_split
from visual_ablation.vocabulary import PROBE_DEFAULTS


class FeatureError(ValueError):
    """Features a probe cannot be trained on (NaN or inf values)."""


@dataclass(frozen=True)
class ProbeConfig:
    """A probe config's keys (vocabulary.PROBE_DEFAULTS has them and their defaults)."""

    hidden: int = PROBE_DEFAULTS["hidden"]
    lr: float = PROBE_DEFAULTS["lr"]
    # one value, or a grid: one head per value, the lowest validation loss kept
    weight_decay: float | tuple[float, ...] = PROBE_DEFAULTS["weight_decay"]
    max_epochs: int = PROBE_DEFAULTS["max_epochs"]
    patience: int = PROBE_DEFAULTS["patience"]
    batch_size: int = PROBE_DEFAULTS["batch_size"]
    # adamw: minibatches, early stopping on validation loss; lbfgs: linear heads fitted
    # to their L2-penalised optimum (lbfgs.py)
    solver: str = PROBE_DEFAULTS["solver"]

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> ProbeConfig:
        values = {k: spec[k] for k in cls.__dataclass_fields__ if k in spec}
        if isinstance(values.get("weight_decay"), list):
            values["weight_decay"] = tuple(values["weight_decay"])
        return cls(**values)

    @property
    def decays(self) -> tuple[float, ...]:
        """The weight decays each (run, layer) trains a head with."""
        wd = self.weight_decay
        return tuple(float(d) for d in wd) if isinstance(wd, tuple | list) else (float(wd),)


@dataclass
class HeadResult:
    layer: str
    run: int
    test_rows: np.ndarray  # [n_test] the run's test images (rows of the feature store)
    test_proba: np.ndarray  # [n_test, n_classes], from the best epoch's weights
    best_epoch: int  # 1-based epoch with the lowest validation loss
    epochs: int  # epochs trained before early stopping (or max_epochs)
    hit_max_epochs: bool  # not stopped by `patience` before max_epochs ran out
    best_val_loss: float
    n_features: int
    weight_decay: float  # the grid's value with the lowest validation loss
    # the best weights (W1 [dim, out], b1 [out](, W2, b2)) and the train-split mean and
    # std [dim] the head's inputs were standardised with: the head as a function of raw
    # features, for testing it on another representation's (transfer.py)
    weights: list[np.ndarray]
    mean: np.ndarray
    std: np.ndarray


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


def train_statistics(values: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 mean and std of each feature over the train rows (accumulated in float64);
    a constant feature gets std 1, so it standardises to 0."""
    x = values[train].astype(np.float32)
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    std[std < 1e-8] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def standardise(values: np.ndarray, train: np.ndarray) -> np.ndarray:
    """(x - mean) / std with train-split statistics, as float32 (what the heads see)."""
    mean, std = train_statistics(values, train)
    x = values.astype(np.float32)
    x -= mean
    x /= std
    return x


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


def decay_factors(
    params: list[torch.Tensor], lr: float, weight_decay: float | list[float | torch.Tensor]
) -> float | list[float | torch.Tensor]:
    """AdamW's decoupled decay as the factor each parameter is multiplied by, 1 - lr * wd:
    one number when every parameter shares it (torch's own arithmetic), else one per
    parameter (float32 tensors of the same values where a stack's heads differ)."""
    if not isinstance(weight_decay, list):
        return 1.0 - lr * weight_decay
    if len(weight_decay) != len(params):
        raise ValueError(f"{len(weight_decay)} weight decays for {len(params)} parameters")
    factors = []
    for p, wd in zip(params, weight_decay, strict=True):
        if isinstance(wd, torch.Tensor):
            wd = (1.0 - lr * wd.double()).to(p.dtype).to(p.device)
        else:
            wd = 1.0 - lr * wd
        factors.append(wd)
    return factors


class AdamW:
    """torch.optim.AdamW's update (decoupled weight decay, bias-corrected moments) over
    the parameters given a gradient, written out with torch's foreach ops.

    Why not torch.optim.AdamW: constructing it imports torch._dynamo (about 1.7 s here),
    more than the whole training of a small train job. tests/test_probes.py checks this
    class step for step against torch.optim.AdamW. Like torch, each parameter counts its
    own steps (a stack whose heads have all stopped gets no gradient and takes no step);
    parameters are updated in groups of equal step count (in a train job, all live ones
    share one). A stopped head inside a live stack gets a zero gradient and drifts with
    its momentum: harmless, its best weights were copied aside when it stopped.
    `weight_decay`: one value, or one per parameter (a number, or a tensor that
    broadcasts against it: a stack's per-head decays, [heads, 1, 1]).
    """

    def __init__(
        self,
        params: list[torch.Tensor],
        lr: float,
        weight_decay: float | list[float | torch.Tensor],
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        self.params = params
        self.lr, self.betas, self.eps = lr, betas, eps
        self.decay = decay_factors(params, lr, weight_decay)
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.steps = [0] * len(params)

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor | None]) -> None:
        """One step of the parameters whose gradient (in `params`' order) is not None."""
        live = [i for i, g in enumerate(grads) if g is not None]
        if not live:
            return
        for i in live:
            self.steps[i] += 1
        for step in sorted({self.steps[i] for i in live}):
            group = [i for i in live if self.steps[i] == step]
            self._update(group, [grads[i] for i in group], step)

    def _update(self, index: list[int], grads: list[torch.Tensor], step: int) -> None:
        beta1, beta2 = self.betas
        params = [self.params[i] for i in index]
        exp_avg = [self.exp_avg[i] for i in index]
        exp_avg_sq = [self.exp_avg_sq[i] for i in index]
        if isinstance(self.decay, list):
            torch._foreach_mul_(params, [self.decay[i] for i in index])
        else:
            torch._foreach_mul_(params, self.decay)
        torch._foreach_lerp_(exp_avg, grads, 1.0 - beta1)
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, 1.0 - beta2)
        step_size = self.lr / (1.0 - beta1**step)
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denom, math.sqrt(1.0 - beta2**step))
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(params, exp_avg, denom, -step_size)


class DeviceAdamW(AdamW):
    """`AdamW`'s update for the static engine, with nothing read from the host: every
    parameter steps at every step (stopped heads get zero gradients), the step count is
    a tensor on the device, and the bias corrections of every step are looked up in a
    table made once, so a CUDA graph can capture the step. Each op is one multi-tensor
    kernel over every parameter (torch's capturable foreach AdamW does the same).

    Why not torch's fused kernel (`torch._fused_adamw_`): it orders the arithmetic
    differently, and a probe at a high learning rate amplifies that last-bit difference
    into visibly different heads (0.04 in a test probability); this class does `AdamW`'s
    ops in `AdamW`'s order, so on the CPU the two engines give identical numbers.
    tests/test_probes.py checks it step for step against torch.optim.AdamW."""

    def __init__(
        self,
        params: list[torch.Tensor],
        lr: float,
        weight_decay: float | list[float | torch.Tensor],
        max_steps: int,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        super().__init__(params, lr, weight_decay, betas, eps)
        device = params[0].device
        self.step_count = torch.zeros((), dtype=torch.int64, device=device)
        beta1, beta2 = betas
        # row k: step k+1's -lr / (1 - beta1^t) and sqrt(1 - beta2^t), as AdamW computes them
        table = [
            (-lr / (1.0 - beta1**t), math.sqrt(1.0 - beta2**t)) for t in range(1, max_steps + 1)
        ]
        self.table = torch.tensor(table, dtype=params[0].dtype, device=device)

    def state(self) -> list[torch.Tensor]:
        return [*self.params, *self.exp_avg, *self.exp_avg_sq, self.step_count]

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        beta1, beta2 = self.betas
        # index_select, not table[step_count]: a tensor index would be read on the host
        step_size, correction2 = self.table.index_select(0, self.step_count.view(1))[0]
        self.step_count.add_(1)
        torch._foreach_mul_(self.params, self.decay)
        torch._foreach_lerp_(self.exp_avg, grads, 1.0 - beta1)
        torch._foreach_mul_(self.exp_avg_sq, beta2)
        torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, 1.0 - beta2)
        denom = torch._foreach_sqrt(self.exp_avg_sq)
        torch._foreach_div_(denom, correction2)
        torch._foreach_add_(denom, self.eps)
        # AdamW's addcdiv(p, m, denom, value=-step_size): p + (value * m) / denom
        update = torch._foreach_mul(self.exp_avg, step_size)
        torch._foreach_div_(update, denom)
        torch._foreach_add_(self.params, update)


def head_logits(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Logits of a stack of heads: x [heads, rows, dim] -> [heads, rows, classes]."""
    hidden = torch.baddbmm(params[1], x, params[0])
    if len(params) == 2:
        return hidden
    return torch.baddbmm(params[3], torch.relu(hidden), params[2])


def head_gradients(
    stacks: list[tuple[list[torch.Tensor], torch.Tensor]],
    labels: torch.Tensor,
    row_weight: torch.Tensor,
) -> list[torch.Tensor]:
    """Gradients of the sum over heads h and rows i of row_weight * cross-entropy(head h's
    logits of its x[h, i], its label), with respect to every stack's parameters (a flat
    list, stack by stack). `stacks`: each stack's parameters and inputs x [heads, rows,
    dim]; `labels` and `row_weight`: flat [heads * rows] over every stack's heads in turn.

    The backward pass written out with the kernels autograd runs for this loss
    (log-softmax, NLL and their backward, the matmuls' backward), so the gradients are
    autograd's (up to the BLAS path a matmul's shape takes on a given CPU), without
    reducing a loss or recording a graph; and every
    stack's logits share one buffer, so that each elementwise kernel runs once for all
    stacks. A step of small matmuls is bound by how many kernels it runs, not by its
    arithmetic (benchmarks/README.md, GPU): a step of ten linear runs over the default
    8 layers (4 stacks) now dispatches 35 operators instead of 93, an MLP step 50
    instead of 117 (benchmarks/training.py counts them)."""
    with torch.no_grad():
        sizes = [x.shape[0] for _, x in stacks]
        bounds = np.cumsum([0, *sizes]).tolist()
        where = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        x0, mlp = stacks[0][1], len(stacks[0][0]) == 4
        rows, n_classes = x0.shape[1], stacks[0][0][-1].shape[-1]
        logits = x0.new_empty((bounds[-1], rows, n_classes))
        first = logits
        if mlp:
            first = x0.new_empty((bounds[-1], rows, stacks[0][0][0].shape[-1]))
        for (params, x), part in zip(stacks, where, strict=True):
            torch.baddbmm(params[1], x, params[0], out=first[part])
        if mlp:
            hidden = torch.relu_(first)
            for (params, _), part in zip(stacks, where, strict=True):
                torch.baddbmm(params[3], hidden[part], params[2], out=logits[part])
        logp = torch.log_softmax(logits.flatten(0, 1), 1)
        # reduction "none": total_weight is not read, but must be a one-element tensor
        grad = torch.ops.aten.nll_loss_backward(
            row_weight, logp, labels, None, 0, -100, row_weight[:1]
        )
        grad = torch.ops.aten._log_softmax_backward_data(grad, logp, 1, logp.dtype)
        grad = grad.view_as(logits)
        bias = grad.sum(1, keepdim=True)
        if mlp:
            # relu's backward, as autograd's: through the hidden units that were > 0
            back = torch.empty_like(hidden)
            for (params, _), part in zip(stacks, where, strict=True):
                torch.bmm(grad[part], params[2].transpose(1, 2), out=back[part])
            back = torch.ops.aten.threshold_backward(back, hidden, 0)
            bias_hidden = back.sum(1, keepdim=True)
        grads = []
        for (_, x), part in zip(stacks, where, strict=True):
            if mlp:
                grads += [x.transpose(1, 2).bmm(back[part]), bias_hidden[part]]
                grads += [hidden[part].transpose(1, 2).bmm(grad[part]), bias[part]]
            else:
                grads += [x.transpose(1, 2).bmm(grad[part]), bias[part]]
        return grads


class HeadStack:
    """Every head (run x layer) over layers of similar width, stacked.

    Head `h` is layer `h // n_runs` of the stack and run `runs[h % n_runs]`. Its
    parameters are slices `[h]` of the stacked tensors, so one batched matmul per
    minibatch serves every head. Narrower layers are zero-padded to the stack's width
    (`stack_groups` bounds the padding). The features are kept once; each run has its
    own split (`parts`: its train, val and test rows) and is standardised with its own train
    rows' statistics, applied to each minibatch as it is gathered (or once, up front, when
    every run shares one split).
    """

    CHUNK_VALUES = 2**24  # inputs copied per chunk of validation/test rows (64 MB)

    def __init__(
        self,
        layers: list[str],
        dims: list[int],
        values: torch.Tensor,
        mean: torch.Tensor | None,
        std: torch.Tensor | None,
        parts: dict[int, torch.Tensor],
        runs: list[int],
        n_classes: int,
        hidden: int,
        device: torch.device,
        per_run_values: bool = False,
    ):
        self.layers, self.dims, self.runs = layers, dims, runs
        self.values = values  # [layers, images, width], zero-padded to one width
        # [layers, runs, 1, width]: padded columns get mean 0 and std 1, so they stay 0;
        # None: `values` are standardised already (every run shares one split)
        self.mean = None if mean is None else mean.unsqueeze(2)
        self.std = None if std is None else std.unsqueeze(2)
        self.run_index = None
        if per_run_values and self.mean is not None:
            # each run's standardised copy, [layers, runs, images, width]: the same float32
            # ops once, instead of on every minibatch (runs times the memory)
            self.values = (values.unsqueeze(1) - self.mean) / self.std
            self.mean = self.std = None
            self.run_index = torch.arange(len(runs), device=device).unsqueeze(1)
        self.parts = parts  # split code -> [runs, rows of that part]
        width = values.shape[2]
        inits = []
        for layer, dim in zip(layers, dims, strict=True):
            for run in runs:
                init = init_head(dim, n_classes, hidden, head_seed(run, layer))
                # zero rows for the padded inputs: their gradient is 0 and AdamW keeps
                # them 0, so the head computes exactly what it would unpadded
                init[0] = F.pad(init[0], (0, 0, 0, width - dim))
                inits.append(init)
        stacked = [torch.stack([init[i] for init in inits]) for i in range(len(inits[0]))]
        # biases as [heads, 1, width], so that baddbmm broadcasts them over rows
        self.params = [(p if p.dim() == 3 else p.unsqueeze(1)).to(device) for p in stacked]
        n_heads = len(inits)
        self.best = [p.detach().clone() for p in self.params]
        # early-stopping state lives on the device: deciding it costs no host sync
        self.best_loss = torch.full((n_heads,), math.inf, dtype=torch.float64, device=device)
        self.best_epoch = torch.zeros(n_heads, dtype=torch.int64, device=device)
        self.epochs = torch.zeros(n_heads, dtype=torch.int64, device=device)
        self.active = torch.ones(n_heads, dtype=torch.bool, device=device)

    def inputs(self, rows: torch.Tensor) -> torch.Tensor:
        """Standardised inputs of every head: image rows per run [n_runs, k] ->
        [heads, k, width], each run's rows with its own statistics."""
        if self.run_index is not None:
            x = self.values[:, self.run_index, rows]  # [layers, runs, k, width]
        else:
            x = self.values[:, rows]
            if self.mean is not None:
                x = (x - self.mean) / self.std
        return x.reshape(-1, rows.shape[1], x.shape[3])

    def live_gradients(self, rows: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """The stack's gradients on a minibatch (`rows`: image rows [n_runs, batch], `y`:
        their labels), its stopped heads left out of the arithmetic (their gradient is
        0). The eager engine's step, stack by stack: on the CPU, one buffer for every
        stack's logits made the matmuls slower (benchmarks/README.md)."""
        live = torch.nonzero(self.active).squeeze(1)
        params, x = self.params, self.inputs(rows)
        labels = y.repeat(len(self.layers), 1)  # heads are layer-major
        if len(live) < len(self.active):
            params = [p.index_select(0, live) for p in params]
            x, labels = x.index_select(0, live), labels.index_select(0, live)
        weight = torch.full((labels.numel(),), 1.0 / rows.shape[1], device=x.device)  # a mean
        grads = head_gradients([(params, x)], labels.flatten(), weight)
        if len(live) == len(self.active):
            return grads
        full = [torch.zeros_like(p) for p in self.params]
        return [f.index_add_(0, live, g) for f, g in zip(full, grads, strict=True)]

    def run_inputs(self, rows: torch.Tensor, every: int, layer: int) -> torch.Tensor:
        """Standardised inputs of one layer (its index in the stack), once per run, where
        each run has `every` consecutive slots (its weight decays): rows [runs, k] ->
        [runs, k, the layer's width] (without padding)."""
        dim = self.dims[layer]
        if self.run_index is not None:
            runs = torch.arange(rows.shape[0], device=rows.device).unsqueeze(1)
            return self.values[layer, ::every][runs, rows, :dim]
        x = self.values[layer, rows, :dim]
        if self.mean is not None:
            x = (x - self.mean[layer, ::every, :, :dim]) / self.std[layer, ::every, :, :dim]
        return x

    @torch.no_grad()
    def logits(self, code: int, params=None) -> Iterator[tuple[slice, torch.Tensor]]:
        """Every head's logits on its run's rows of one split part, in chunks of rows:
        (positions, [heads, rows, classes]). Chunks keep the per-head copy of the inputs
        near CHUNK_VALUES values."""
        rows = self.parts[code]  # [runs, part size]
        n_layers, width = self.values.shape[0], self.values.shape[-1]
        chunk = max(1, self.CHUNK_VALUES // (n_layers * len(self.runs) * width))
        for start in range(0, rows.shape[1], chunk):
            where = slice(start, min(start + chunk, rows.shape[1]))
            yield where, head_logits(params or self.params, self.inputs(rows[:, where]))

    @torch.no_grad()
    def losses(self, code: int, y: torch.Tensor) -> torch.Tensor:
        """Every head's mean cross-entropy on one split part (`y`: [n_runs, part size]
        labels; float64, [heads], on the stack's device)."""
        total = torch.zeros(len(self.active), dtype=torch.float64, device=y.device)
        for where, logits in self.logits(code):
            labels = y[:, where].repeat(len(self.layers), 1)  # [heads, rows]
            ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
            total += ce.view(logits.shape[0], -1).sum(1, dtype=torch.float64)
        return total / y.shape[1]

    @torch.no_grad()
    def best_proba(self, code: int) -> np.ndarray:
        """Class probabilities of every head's best weights: [heads, rows, classes]."""
        parts = [
            torch.softmax(logits.double(), dim=2).cpu().numpy()
            for _, logits in self.logits(code, self.best)
        ]
        return np.concatenate(parts, axis=1)

    @torch.no_grad()
    def end_epoch(self, epoch: int, val_loss: torch.Tensor, patience: int) -> None:
        """Keep the improved heads' weights, stop those out of patience: on the device,
        with no host sync."""
        improved = self.active & (val_loss < self.best_loss)
        for best, p in zip(self.best, self.params, strict=True):
            best.copy_(torch.where(improved.view(-1, 1, 1), p, best))
        self.best_loss = torch.where(improved, val_loss, self.best_loss)
        self.best_epoch = torch.where(improved, epoch, self.best_epoch)
        stop = self.active & (epoch - self.best_epoch >= patience)
        self.epochs = torch.where(stop, epoch, self.epochs)
        self.active &= ~stop


def stack_groups(dims: dict[str, int], max_padding: float = 2.0) -> list[list[str]]:
    """Layers trained as one stack: widths within `max_padding` of the group's narrowest
    (zero-padded to its widest). Fewer, larger batched matmuls per step, for at most
    that much padded work: EfficientNet's 8 default layers (24..1280 wide) make 4 stacks.
    """
    groups: list[list[str]] = []
    narrowest = 0
    for layer in sorted(dims, key=lambda name: dims[name]):
        if groups and dims[layer] <= max_padding * narrowest:
            groups[-1].append(layer)
        else:
            groups.append([layer])
            narrowest = dims[layer]
    return groups


ENGINES = ("auto", "eager", "static")


def train(
    features: dict[str, np.ndarray],
    labels: np.ndarray,
    split: np.ndarray | dict[int, np.ndarray],
    n_classes: int,
    probe: ProbeConfig,
    runs: int | list[int],
    device: torch.device | str = "cpu",
    where: str = "features",
    engine: str = "auto",
    max_padding: float = 2.0,
    per_run_values: bool | None = None,
) -> tuple[list[HeadResult], float]:
    """Train one head per (run, layer of `features` ({layer: [n, dim]}), weight decay of
    `probe.decays`), and keep for each (run, layer) the decay whose head reached the lowest
    validation loss; returns those heads' results (run-major, then in layer order) and the
    seconds spent training, shared by all heads. `split`: one split for every run, or each
    run's own ({run: split}); each part must have the same size in every run (a stratified
    split of the same labels does). The heads of one run's decays share its split, init and
    minibatch order: they are more heads in the same stacks (`slots`), trained in the same
    steps. `engine`: `eager`, `static` (see the module's docstring) or `auto`: static on
    CUDA, eager elsewhere. `max_padding`: see `stack_groups`; `per_run_values`: keep each
    run's standardised features (runs times the memory) rather than standardising every
    minibatch (None: on CUDA when they fit in a quarter of the free memory; 1.16 times as
    fast there, benchmarks/README.md); neither changes a number."""
    device = torch.device(device)
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if engine == "auto":
        engine = "static" if device.type == "cuda" else "eager"
    runs = [runs] if isinstance(runs, int) else list(runs)
    split_of = split if isinstance(split, dict) else dict.fromkeys(runs, split)
    for run in runs:
        check_split(split_of[run], where)
    decays = probe.decays
    # a slot per (run, decay), run-major: what the stacks call a run
    slots = [(run, decay) for run in runs for decay in decays]
    slot_runs = [run for run, _ in slots]
    # each slot's rows of each part: [slots, part size]
    rows = {
        code: np.stack([np.flatnonzero(split_of[run] == code) for run in slot_runs])
        for code in (TRAIN, VAL, TEST)
    }
    parts = {code: torch.from_numpy(r).to(device) for code, r in rows.items()}
    ys = {code: torch.from_numpy(labels[r].astype(np.int64)).to(device) for code, r in rows.items()}
    layers = list(features)
    for layer in layers:
        check_finite(layer, features[layer], where)
    # one split for every run (one run, or `resample: false`): standardise once, up front;
    # else each run's statistics are applied to its minibatches (the same float32 ops)
    shared = all(np.array_equal(rows[TRAIN][0], r) for r in rows[TRAIN][1:])
    groups = stack_groups({layer: features[layer].shape[1] for layer in layers}, max_padding)
    if per_run_values is None:
        per_run_values = not shared and device.type == "cuda" and engine == "static"
        if per_run_values:
            widths = sum(len(g) * max(features[layer].shape[1] for layer in g) for g in groups)
            free, _ = torch.cuda.mem_get_info(device)
            per_run_values = 4 * widths * len(labels) * len(slots) <= free // 4
    stacks, statistics = [], []
    for group in groups:
        dims = [features[layer].shape[1] for layer in group]
        n, width = len(labels), max(dims)
        values = np.zeros((len(group), n, width), np.float32)
        mean = np.zeros((len(group), len(runs), width), np.float32)
        std = np.ones((len(group), len(runs), width), np.float32)
        for i, (layer, dim) in enumerate(zip(group, dims, strict=True)):
            values[i, :, :dim] = features[layer]
            for r in range(1 if shared else len(runs)):
                mean[i, r, :dim], std[i, r, :dim] = train_statistics(
                    features[layer], np.flatnonzero(split_of[runs[r]] == TRAIN)
                )
            if shared:
                values[i] -= mean[i, 0]
                values[i] /= std[i, 0]
        statistics.append((mean, std))
        # every slot of a run standardises with that run's statistics
        per_slot = len(decays)
        stats = (None, None) if shared else tuple(a.repeat(per_slot, axis=1) for a in (mean, std))
        tensors = [torch.from_numpy(values).to(device)] + [
            None if a is None else torch.from_numpy(a).to(device) for a in stats
        ]
        del values
        stacks.append(
            HeadStack(
                group,
                dims,
                *tensors,
                parts,
                slot_runs,
                n_classes,
                probe.hidden,
                device,
                per_run_values,
            )
        )
    if probe.solver == "lbfgs":
        t0 = time.perf_counter()
        lbfgs.fit(stacks, parts, ys, probe.max_epochs, decays)
    else:  # the AdamW engines: each head's decay, and each run's minibatch order
        if len(decays) == 1:
            weight_decay: float | list = decays[0]
        else:
            # each head's decay, [heads, 1, 1] (heads are layer-major, then slot)
            weight_decay = []
            for stack in stacks:
                head_decay = torch.tensor(
                    [decay for _ in stack.layers for _, decay in slots], dtype=torch.float64
                ).view(-1, 1, 1)
                weight_decay += [head_decay] * len(stack.params)
        # each run's minibatch order, shared by all its heads, drawn on the host (the same
        # order on every device)
        orders = [torch.Generator().manual_seed(run) for run in slot_runs]
        fit = _fit_static if engine == "static" else _fit_eager
        t0 = time.perf_counter()
        fit(stacks, parts, ys, orders, probe, weight_decay)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0

    results: dict[tuple[int, str], HeadResult] = {}
    with torch.no_grad():
        for stack, (mean, std) in zip(stacks, statistics, strict=True):
            epochs = torch.where(stack.active, probe.max_epochs, stack.epochs).cpu()
            capped = stack.active.cpu()
            best_epoch, best_loss = stack.best_epoch.cpu(), stack.best_loss.cpu()
            proba = stack.best_proba(TEST)
            best = [p.cpu().numpy() for p in stack.best]
            for h in range(len(epochs)):
                layer = stack.layers[h // len(slots)]
                run, decay = slots[h % len(slots)]
                r = runs.index(run)
                kept = results.get((run, layer))
                # the lowest validation loss over the decays (ties: the first listed)
                if kept is not None and not float(best_loss[h]) < kept.best_val_loss:
                    continue
                dim = int(features[layer].shape[1])
                i, s = stack.layers.index(layer), 0 if shared else r
                # biases are kept as [heads, 1, out]
                weights = [w[h, 0] if k % 2 else w[h] for k, w in enumerate(best)]
                weights[0] = weights[0][:dim]  # the padded inputs' rows are 0
                results[run, layer] = HeadResult(
                    layer=layer,
                    run=run,
                    test_rows=rows[TEST][h % len(slots)],
                    test_proba=proba[h],
                    best_epoch=int(best_epoch[h]),
                    epochs=int(epochs[h]),
                    hit_max_epochs=bool(capped[h]),
                    best_val_loss=float(best_loss[h]),
                    n_features=dim,
                    weight_decay=decay,
                    weights=[np.ascontiguousarray(w) for w in weights],
                    mean=mean[i, s, :dim].copy(),
                    std=std[i, s, :dim].copy(),
                )
    return [results[run, layer] for run in runs for layer in layers], seconds


def _epoch_orders(orders: list[torch.Generator], n_train: int) -> torch.Tensor:
    """Each run's minibatch order for one epoch: [runs, n_train], on the host."""
    return torch.stack([torch.randperm(n_train, generator=g) for g in orders])


def _fit_eager(stacks, parts, ys, orders, probe: ProbeConfig, weight_decay) -> None:
    """Live heads only, step by step (the CPU's engine). `weight_decay`: AdamW's, one
    value or one per parameter."""
    optimizer = AdamW(
        [p for stack in stacks for p in stack.params], lr=probe.lr, weight_decay=weight_decay
    )
    n_train = parts[TRAIN].shape[1]
    device = parts[TRAIN].device
    for epoch in range(1, probe.max_epochs + 1):
        perms = _epoch_orders(orders, n_train).to(device)
        live = [stack for stack in stacks if bool(stack.active.any())]
        for start in range(0, n_train, probe.batch_size):
            positions = perms[:, start : start + probe.batch_size]  # [runs, batch]
            batch_rows = parts[TRAIN].gather(1, positions)
            y = ys[TRAIN].gather(1, positions)
            grads = []
            for stack in stacks:  # a stack whose heads have all stopped takes no step
                if stack in live:
                    grads += stack.live_gradients(batch_rows, y)
                else:
                    grads += [None] * len(stack.params)
            optimizer.step(grads)
        for stack in live:
            stack.end_epoch(epoch, stack.losses(VAL, ys[VAL]), probe.patience)
        if not any(bool(stack.active.any()) for stack in stacks):
            break


def _fit_static(stacks, parts, ys, orders, probe: ProbeConfig, weight_decay) -> None:
    """Every head, every step, with the same shapes; one host sync per epoch (has every
    head stopped?). On CUDA each step is a CUDA graph replay."""
    params = [p for stack in stacks for p in stack.params]
    n_train = parts[TRAIN].shape[1]
    device = parts[TRAIN].device
    steps_per_epoch = -(-n_train // probe.batch_size)
    optimizer = DeviceAdamW(
        params, probe.lr, weight_decay, max_steps=probe.max_epochs * steps_per_epoch + 2
    )
    perm = torch.empty((len(orders), n_train), dtype=torch.int64, device=device)
    start = torch.zeros((), dtype=torch.int64, device=device)  # the step's first position
    full, tail = divmod(n_train, probe.batch_size)
    sizes = [probe.batch_size] * full + ([tail] if tail else [])
    offsets = {size: torch.arange(size, device=device) for size in set(sizes)}
    n_heads = sum(len(stack.active) for stack in stacks)
    n_layers = sum(len(stack.layers) for stack in stacks)
    # each head's weight of each of its minibatch rows, per minibatch size: 1 / size (a
    # mean) while it is live, 0 once it stopped (the same zero gradient, static shapes);
    # refreshed in place, so that a CUDA graph reads the current one
    row_weights = {size: torch.empty(n_heads * size, device=device) for size in offsets}

    def refresh_row_weights() -> None:
        active = torch.cat([stack.active for stack in stacks]).to(torch.float32)
        for size, weight in row_weights.items():
            weight.view(n_heads, size).copy_((active / size).unsqueeze(1).expand(-1, size))

    # the epoch's image rows in minibatch order [runs, n_train], and every head's labels
    # [heads, n_train] (heads are stack by stack, layer-major in each: y once per layer)
    epoch_rows = torch.empty_like(perm)
    epoch_labels = torch.empty((n_layers, *perm.shape), dtype=torch.int64, device=device)

    def order_epoch() -> None:
        epoch_rows.copy_(parts[TRAIN].gather(1, perm))
        epoch_labels.copy_(ys[TRAIN].gather(1, perm).expand(n_layers, -1, -1))

    def step(size: int) -> None:
        positions = start + offsets[size]
        batch_rows = epoch_rows.index_select(1, positions)  # [runs, size]
        labels = epoch_labels.flatten(0, 1).index_select(1, positions).flatten()
        inputs = [(stack.params, stack.inputs(batch_rows)) for stack in stacks]
        optimizer.step(head_gradients(inputs, labels, row_weights[size]))
        start.add_(size)

    steps = {size: (lambda size=size: step(size)) for size in offsets}
    upcoming = _epoch_orders(orders, n_train)
    perm.copy_(upcoming)  # valid positions for the capture's warm-up
    order_epoch()
    refresh_row_weights()
    if device.type == "cuda":
        steps = _cuda_graphs(steps, optimizer.state() + [start])
    for epoch in range(1, probe.max_epochs + 1):
        # pinned, so the copy is queued behind the last epoch's work without a host sync
        perm.copy_(upcoming.pin_memory() if device.type == "cuda" else upcoming, True)
        order_epoch()
        start.zero_()
        for size in sizes:
            steps[size]()
        for stack in stacks:
            stack.end_epoch(epoch, stack.losses(VAL, ys[VAL]), probe.patience)
        refresh_row_weights()
        upcoming = _epoch_orders(orders, n_train)  # drawn while the device works
        if not bool(torch.stack([stack.active.any() for stack in stacks]).any()):
            break


def _cuda_graphs(steps: dict, state: list[torch.Tensor]) -> dict:
    """Each step function captured as a CUDA graph (one per batch size), replayed in its
    place. Capture needs a warm-up run of each (cuBLAS handles, autograd's buffers) on a
    side stream; `state` (parameters, optimizer moments and steps, counters) is restored
    after it, so the warm-up leaves no trace on the training."""
    saved = [t.detach().clone() for t in state]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for fn in steps.values():
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graphs, pool = {}, None
    for size, fn in steps.items():
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            fn()
        pool = graph.pool()
        graphs[size] = graph
    with torch.no_grad():
        for t, s in zip(state, saved, strict=True):
            t.copy_(s)
    return {size: graph.replay for size, graph in graphs.items()}
