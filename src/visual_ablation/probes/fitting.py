"""The engines that train a job's heads: `train` builds the stacks and runs one engine.

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
L2-penalised optimum by full-batch L-BFGS (probes/lbfgs.py), with no minibatches, learning rate
or early stopping; the stacks, slots and the choice among weight decays are the same.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from visual_ablation.data.splits import TEST, TRAIN, VAL, check_split
from visual_ablation.probes import lbfgs
from visual_ablation.probes.optimiser import AdamW, DeviceAdamW
from visual_ablation.probes.stacking import (
    HeadResult,
    HeadStack,
    ProbeConfig,
    check_finite,
    cross_entropy_sums,
    head_gradients,
    head_logits,
    improves,
    stack_groups,
)
from visual_ablation.probes.standardisation import train_statistics

ENGINES = ("auto", "eager", "static")
# each run's standardised copy of the features, on the CPU, up to this size: what a train
# job's memory request (plan/resources.py, TRAIN_BASE_MB) leaves room for beside the rest
PER_RUN_VALUES_CPU_BYTES = 512 * 2**20


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
    max_padding: float | None = None,
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
    CUDA, eager elsewhere. `max_padding`: see `stack_groups` (None: 2 for the static
    engine, whose steps are bound by kernel launches; 1, no padding, for the eager one,
    whose steps are bound by arithmetic: 1.75 times as fast on a default MLP store,
    benchmarks/padding.py); `per_run_values`: keep each run's standardised features
    (runs times the memory) rather than standardising every minibatch (None: on CUDA when
    they fit in a quarter of the free memory, 1.16 times as fast there; on the CPU when
    they take at most PER_RUN_VALUES_CPU_BYTES); neither changes a number."""
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
    if max_padding is None:
        max_padding = 2.0 if engine == "static" else 1.0
    groups = stack_groups({layer: features[layer].shape[1] for layer in layers}, max_padding)
    if per_run_values is None:
        widths = sum(len(g) * max(features[layer].shape[1] for layer in g) for g in groups)
        copies = 4 * widths * len(labels) * len(slots)
        if shared:
            per_run_values = False
        elif device.type == "cuda" and engine == "static":
            per_run_values = copies <= torch.cuda.mem_get_info(device)[0] // 4
        else:
            per_run_values = device.type == "cpu" and copies <= PER_RUN_VALUES_CPU_BYTES
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
            best_accuracy = stack.best_accuracy.cpu()
            proba = stack.best_proba(TEST)
            best = [p.cpu().numpy() for p in stack.best]
            for h in range(len(epochs)):
                layer = stack.layers[h // len(slots)]
                run, decay = slots[h % len(slots)]
                r = runs.index(run)
                kept = results.get((run, layer))
                # the best validation score over the decays, as `monitor` counts (ties:
                # the first listed); the linear solver's is its loss
                val = (float(best_loss[h]), float(best_accuracy[h]))
                monitor = "loss" if probe.solver == "lbfgs" else probe.monitor
                if kept is not None and not improves(
                    monitor, val, (kept.best_val_loss, kept.best_val_accuracy)
                ):
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
                    train_rows=rows[TRAIN][h % len(slots)],
                    test_proba=proba[h],
                    best_epoch=int(best_epoch[h]),
                    epochs=int(epochs[h]),
                    hit_max_epochs=bool(capped[h]),
                    best_val_loss=val[0],
                    best_val_accuracy=val[1],
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


class _LiveHeads:
    """The eager engine's working set of one stack: the heads still training, with their
    parameters, AdamW state and decay, and each one's layer and slot (run, decay). A head
    that stops leaves it, so that no step computes, updates or copies it again; the
    stack keeps its best weights, losses and epochs."""

    def __init__(self, stack: HeadStack, lr: float, weight_decay) -> None:
        self.stack = stack
        self.index = torch.arange(len(stack.active), device=stack.active.device)
        self.layer = torch.div(self.index, len(stack.runs), rounding_mode="floor")
        self.slot = self.index % len(stack.runs)
        self.optimizer = AdamW([p.clone() for p in stack.params], lr, weight_decay)

    def inputs(self, rows: torch.Tensor) -> torch.Tensor:
        """The live heads' standardised inputs [live, k, width] of image rows per slot
        [slots, k]: the same float32 ops as HeadStack.inputs, for these heads only."""
        stack = self.stack
        if stack.run_index is not None:
            return stack.values[self.layer.unsqueeze(1), self.slot.unsqueeze(1), rows[self.slot]]
        x = stack.values[self.layer.unsqueeze(1), rows[self.slot]]
        if stack.mean is not None:
            x = (x - stack.mean[self.layer, self.slot]) / stack.std[self.layer, self.slot]
        return x

    def step(self, rows: torch.Tensor, y: torch.Tensor) -> None:
        """One AdamW step on a minibatch (image rows and labels per slot, [slots, k])."""
        labels = y[self.slot].flatten()
        weight = torch.full((labels.numel(),), 1.0 / rows.shape[1], device=rows.device)  # a mean
        inputs = [(self.optimizer.params, self.inputs(rows))]
        self.optimizer.step(head_gradients(inputs, labels, weight))

    @torch.no_grad()
    def scores(self, rows: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each live head's mean cross-entropy and accuracy on its slot's rows [slots, m]
        (float64), as HeadStack.scores."""
        total = torch.zeros(len(self.index), dtype=torch.float64, device=y.device)
        correct = torch.zeros_like(total)
        width = self.stack.values.shape[-1]
        chunk = max(1, HeadStack.CHUNK_VALUES // (len(self.index) * width))
        labels = y[self.slot]
        for start in range(0, rows.shape[1], chunk):
            where = slice(start, min(start + chunk, rows.shape[1]))
            logits = head_logits(self.optimizer.params, self.inputs(rows[:, where]))
            total += cross_entropy_sums(logits, labels[:, where])
            correct += (logits.argmax(2) == labels[:, where]).sum(1)
        return total / rows.shape[1], correct / rows.shape[1]

    @torch.no_grad()
    def end_epoch(
        self, epoch: int, rows: torch.Tensor, y: torch.Tensor, patience: int, monitor: str
    ) -> None:
        """HeadStack.end_epoch for the live heads, on their validation rows and labels;
        then the heads out of patience leave."""
        stack, i = self.stack, self.index
        val_loss, val_accuracy = val = self.scores(rows, y)
        improved = improves(monitor, val, (stack.best_loss[i], stack.best_accuracy[i]))
        if bool(improved.any()):
            for best, p in zip(stack.best, self.optimizer.params, strict=True):
                best[i[improved]] = p[improved]
            stack.best_loss[i] = torch.where(improved, val_loss, stack.best_loss[i])
            stack.best_accuracy[i] = torch.where(improved, val_accuracy, stack.best_accuracy[i])
            stack.best_epoch[i] = torch.where(improved, epoch, stack.best_epoch[i])
        stop = epoch - stack.best_epoch[i] >= patience
        if bool(stop.any()):
            stack.epochs[i[stop]] = epoch
            stack.active[i[stop]] = False
            keep = torch.nonzero(~stop).squeeze(1)
            self.index, self.layer, self.slot = i[keep], self.layer[keep], self.slot[keep]
            self.optimizer.keep(keep)

    @property
    def training(self) -> bool:
        return len(self.index) > 0


def _fit_eager(stacks, parts, ys, orders, probe: ProbeConfig, weight_decay) -> None:
    """Live heads only, step by step (the CPU's engine): each stack's heads that stopped
    leave its arithmetic (`_LiveHeads`). `weight_decay`: AdamW's, one value or one per
    parameter (stack by stack)."""
    live = []
    for stack in stacks:
        if isinstance(weight_decay, list):
            decay, weight_decay = (
                weight_decay[: len(stack.params)],
                weight_decay[len(stack.params) :],
            )
        else:
            decay = weight_decay
        live.append(_LiveHeads(stack, probe.lr, decay))
    n_train = parts[TRAIN].shape[1]
    device = parts[TRAIN].device
    for epoch in range(1, probe.max_epochs + 1):
        perms = _epoch_orders(orders, n_train).to(device)
        for start in range(0, n_train, probe.batch_size):
            positions = perms[:, start : start + probe.batch_size]  # [runs, batch]
            batch_rows = parts[TRAIN].gather(1, positions)
            y = ys[TRAIN].gather(1, positions)
            for heads in live:
                if heads.training:
                    heads.step(batch_rows, y)
        for heads in live:
            if heads.training:
                heads.end_epoch(epoch, parts[VAL], ys[VAL], probe.patience, probe.monitor)
        if not any(heads.training for heads in live):
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
            stack.end_epoch(epoch, stack.scores(VAL, ys[VAL]), probe.patience, probe.monitor)
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
