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
    head_gradients,
    stack_groups,
)
from visual_ablation.probes.standardisation import train_statistics

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
                    train_rows=rows[TRAIN][h % len(slots)],
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
