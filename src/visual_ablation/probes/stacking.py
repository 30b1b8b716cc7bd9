"""Probes on frozen features: one head per (run, layer), all trained together.

Each head is linear (`hidden: 0`) or one hidden layer with ReLU, on features
standardised with train-split statistics. Heads over layers of similar width are
stacked (`HeadStack`, zero-padded to one width; `stack_groups`): one batched matmul per
minibatch serves all of a stack's heads, over every run of the job, and one
AdamW step updates every stack (one optimizer over all heads, as in DINOv2's linear
evaluation). Heads share no parameters and each run keeps its own minibatch order, so
each head trains exactly as it would alone; tests/probes/test_probes.py checks that against a
plain per-head PyTorch loop. Each head has its own early stopping on validation loss:
once stopped it leaves the loss (no more gradient) and its best epoch's weights, kept
aside, give its test-split probabilities. The gradients are written out
(`head_gradients`: autograd's kernels without its graph, equal to autograd's up to
float32 rounding (bit for bit where the BLAS takes the same path); in the static
engine every stack's logits share one buffer), so that a step runs few kernels.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

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
    # to their L2-penalised optimum (probes/lbfgs.py)
    solver: str = PROBE_DEFAULTS["solver"]
    # adamw: what early stopping and the choice among weight decays watch on validation:
    # `loss`, or `accuracy` (ties: the lower loss), what the probe reports
    monitor: str = PROBE_DEFAULTS["monitor"]

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
    train_rows: np.ndarray  # [n_train] its train images (what `mean` and `std` are over)
    test_proba: np.ndarray  # [n_test, n_classes], from the best epoch's weights
    best_epoch: int  # 1-based epoch the monitor kept (validation loss or accuracy)
    epochs: int  # epochs trained before early stopping (or max_epochs)
    hit_max_epochs: bool  # not stopped by `patience` before max_epochs ran out
    best_val_loss: float
    best_val_accuracy: float  # the best epoch's (lbfgs: the fitted head's)
    n_features: int
    weight_decay: float  # the grid's value the monitor kept (linear: the lowest val loss)
    # the best weights (W1 [dim, out], b1 [out](, W2, b2)) and the train-split mean and
    # std [dim] the head's inputs were standardised with: the head as a function of raw
    # features, for testing it on another representation's (probes/transfer.py)
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


def head_logits(params: list[torch.Tensor], x: torch.Tensor, every: int = 1) -> torch.Tensor:
    """Logits of a stack of heads: x [heads, rows, dim] -> [heads, rows, classes]; or,
    with `every` > 1, x [heads / every, rows, dim] shared by each `every` consecutive heads
    (a run's weight decays): their first layers as one matmul, side by side."""
    if every == 1:
        hidden = torch.baddbmm(params[1], x, params[0])
    else:
        heads, dim, out = params[0].shape
        groups = heads // every
        w = params[0].view(groups, every, dim, out).permute(0, 2, 1, 3).reshape(groups, dim, -1)
        b = params[1].view(groups, every, 1, out).permute(0, 2, 1, 3).reshape(groups, 1, -1)
        hidden = torch.baddbmm(b, x, w).view(groups, x.shape[1], every, out)
        hidden = hidden.permute(0, 2, 1, 3).reshape(heads, x.shape[1], out)
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
    arithmetic (benchmarks/README.md, `gpu.py`; the operators a step dispatches:
    `training.py --ops-only`)."""
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
        # how many consecutive runs share their rows and statistics (one run's weight
        # decays, fitting.train's slots): evaluated on one copy of the inputs
        self.shared_rows = len(runs) // len(set(runs))
        if runs != [run for run in runs[:: self.shared_rows] for _ in range(self.shared_rows)]:
            self.shared_rows = 1
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
        self.best_accuracy = torch.full((n_heads,), -1.0, dtype=torch.float64, device=device)
        self.best_epoch = torch.zeros(n_heads, dtype=torch.int64, device=device)
        self.epochs = torch.zeros(n_heads, dtype=torch.int64, device=device)
        self.active = torch.ones(n_heads, dtype=torch.bool, device=device)

    def inputs(self, rows: torch.Tensor, every: int = 1) -> torch.Tensor:
        """Standardised inputs of every head: image rows per run [n_runs, k] ->
        [heads, k, width], each run's rows with its own statistics; with `every`, of every
        `every`-th run (rows [n_runs / every, k]) only."""
        if self.run_index is not None:
            x = self.values[:, self.run_index[::every], rows]  # [layers, runs, k, width]
        else:
            x = self.values[:, rows]
            if self.mean is not None:
                x = (x - self.mean[:, ::every]) / self.std[:, ::every]
        return x.reshape(-1, rows.shape[1], x.shape[3])

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
        every = self.shared_rows
        rows = self.parts[code][::every]  # [runs, part size]: each run's inputs once
        n_layers, width = self.values.shape[0], self.values.shape[-1]
        chunk = max(1, self.CHUNK_VALUES // (n_layers * rows.shape[0] * width))
        for start in range(0, rows.shape[1], chunk):
            where = slice(start, min(start + chunk, rows.shape[1]))
            x = self.inputs(rows[:, where], every)
            yield where, head_logits(params or self.params, x, every)

    @torch.no_grad()
    def scores(self, code: int, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every head's mean cross-entropy and accuracy on one split part (`y`: [n_runs,
        part size] labels; float64, [heads] each, on the stack's device)."""
        total = torch.zeros(len(self.active), dtype=torch.float64, device=y.device)
        correct = torch.zeros_like(total)
        for where, logits in self.logits(code):
            labels = y[:, where].repeat(len(self.layers), 1)  # [heads, rows]
            total += cross_entropy_sums(logits, labels)
            correct += (logits.argmax(2) == labels).sum(1)
        return total / y.shape[1], correct / y.shape[1]

    @torch.no_grad()
    def best_proba(self, code: int) -> np.ndarray:
        """Class probabilities of every head's best weights: [heads, rows, classes]."""
        parts = [
            torch.softmax(logits.double(), dim=2).cpu().numpy()
            for _, logits in self.logits(code, self.best)
        ]
        return np.concatenate(parts, axis=1)

    @torch.no_grad()
    def end_epoch(
        self, epoch: int, val: tuple[torch.Tensor, torch.Tensor], patience: int, monitor: str
    ) -> None:
        """Keep the improved heads' weights (`val`: their validation loss and accuracy,
        `improves` says which way `monitor` counts), stop those out of patience: on the
        device, with no host sync."""
        val_loss, val_accuracy = val
        improved = self.active & improves(monitor, val, (self.best_loss, self.best_accuracy))
        for best, p in zip(self.best, self.params, strict=True):
            best.copy_(torch.where(improved.view(-1, 1, 1), p, best))
        self.best_loss = torch.where(improved, val_loss, self.best_loss)
        self.best_accuracy = torch.where(improved, val_accuracy, self.best_accuracy)
        self.best_epoch = torch.where(improved, epoch, self.best_epoch)
        stop = self.active & (epoch - self.best_epoch >= patience)
        self.epochs = torch.where(stop, epoch, self.epochs)
        self.active &= ~stop


def cross_entropy_sums(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each head's summed cross-entropy over its rows: logits [heads, rows, classes],
    labels [heads, rows] -> [heads] (float64 sums)."""
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
    return ce.view(logits.shape[0], -1).sum(1, dtype=torch.float64)


def improves(monitor: str, new: tuple, best: tuple) -> torch.Tensor | bool:
    """Whether validation scores (loss, accuracy) beat the best so far: a lower loss
    (`monitor` loss), or a higher accuracy, at equal accuracy a lower loss (`accuracy`)."""
    (loss, accuracy), (best_loss, best_accuracy) = new, best
    if monitor == "loss":
        return loss < best_loss
    return (accuracy > best_accuracy) | ((accuracy == best_accuracy) & (loss < best_loss))


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
