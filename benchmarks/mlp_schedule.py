"""The MLP probe's schedule from measured learning curves: how much accuracy each
(learning rate, monitor, patience, max_epochs) keeps, and what it costs in epochs.

For each store of `--stores` (a default run's: `make run` first), trains the default MLP
probe's heads (3 runs x every layer) at each learning rate of `--lr` for `--epochs`
epochs with no early stopping, recording every head's validation loss, validation
accuracy and test accuracy after each epoch (the static engine's end of epoch, watched).
Then replays each schedule on those curves: the epoch it would keep (the lowest validation
loss, or the highest validation accuracy with the lower loss at a tie) and when patience
would stop it, and prints, against the reference schedule (`--reference`, the one before
issue 40: lr 3e-4, loss, patience 15, 100 epochs), the head-epochs trained (the cost), the
mean change of test accuracy over every head, the store whose mean fell most, and the
heads kept at their first epoch.

    .venv/bin/python benchmarks/mlp_schedule.py              # ~10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import torch
from common import REPO, default_config

from visual_ablation.data import splits
from visual_ablation.data.splits import TEST, VAL
from visual_ablation.features import feature_store
from visual_ablation.plan.config import resolve
from visual_ablation.probes import fitting, stacking, training

STORES = [
    "shapes/effnet/original/class",
    "shapes/effnet/edges/class",
    "shapes/effnet/lowpass/class",
    "shapes/effnet/original/control",
    "shapes/untrained/original/class",
    "shapes/pixels/original/class",
    "shapes/statistics/original/class",
    "conflict/effnet/original/class",
    "conflict/effnet/original/cue",
    "conflict/effnet/original/colour",
    "conflict/untrained/original/shape",
    "conflict/untrained/original/colour",
]


def curves(exp, store: str, lr: float, epochs: int) -> np.ndarray:
    """[heads, 3 (val loss, val accuracy, test accuracy), epochs] of one store's MLP heads."""
    dataset, backbone, representation, target = store.split("/")
    spec = exp.feature_spec(dataset, backbone, representation)
    features = feature_store.read(exp.feature_store(dataset, backbone, representation), spec)
    labels, n_classes, classes, fixed, given, _ = training.read_labels(
        exp.data_store(dataset), exp.data_spec(dataset), target
    )
    runs = list(range(exp.runs))
    within = splits.target_images(target, fixed)
    split_of = splits.run_splits(
        classes, exp.split, runs, dataset, fixed, within=within, given=given
    )
    probe = stacking.ProbeConfig.from_spec(exp.probe_spec("mlp"))
    probe = replace(probe, lr=lr, max_epochs=epochs, patience=10**6)
    recorded: dict[int, list] = {}
    end_epoch = stacking.HeadStack.end_epoch

    def watched(stack, epoch, val, patience, monitor):  # the scores each epoch ends with
        labels_of = {code: torch.from_numpy(labels[stack.parts[code]]) for code in (VAL, TEST)}
        test = torch.cat([logits.argmax(2) for _, logits in stack.logits(TEST)], 1)
        test_accuracy = (test == labels_of[TEST].repeat(len(stack.layers), 1)).double().mean(1)
        recorded.setdefault(id(stack), []).append(torch.stack([*val, test_accuracy], 1).numpy())
        end_epoch(stack, epoch, val, patience, monitor)

    stacking.HeadStack.end_epoch = watched
    try:
        fitting.train(features, labels, split_of, n_classes, probe, runs, engine="static")
    finally:
        stacking.HeadStack.end_epoch = end_epoch
    return np.concatenate([np.stack(r, axis=2) for r in recorded.values()])


def replay(curve: np.ndarray, monitor: str, patience: int, max_epochs: int):
    """(test accuracy at the kept epoch, epochs trained, kept epoch index) of a schedule."""
    val_loss, val_accuracy, test_accuracy = curve
    best, key = 0, None
    for epoch in range(min(max_epochs, len(val_loss))):
        now = (val_loss[epoch],) if monitor == "loss" else (-val_accuracy[epoch], val_loss[epoch])
        if key is None or now < key:
            best, key = epoch, now
        elif epoch - best >= patience:
            return test_accuracy[best], epoch + 1, best
    return test_accuracy[best], min(max_epochs, len(val_loss)), best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(REPO / "results"), help="a default run's")
    parser.add_argument("--stores", nargs="*", default=STORES, help="dataset/backbone/rep/target")
    parser.add_argument("--lr", type=float, nargs="*", default=[3e-4, 1e-3])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--reference", default="0.0003,loss,15,100", help="lr,monitor,patience,max")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = default_config()
    config["results_dir"] = config["cache_dir"] = args.results
    exp = resolve(config)
    measured = {lr: {s: curves(exp, s, lr, args.epochs) for s in args.stores} for lr in args.lr}
    lr0, monitor0, patience0, max0 = args.reference.split(",")
    reference = {
        store: [replay(c, monitor0, int(patience0), int(max0)) for c in heads]
        for store, heads in measured[float(lr0)].items()
    }
    cost = sum(r[1] for heads in reference.values() for r in heads)
    first = sum(r[2] == 0 for heads in reference.values() for r in heads)
    n_heads = sum(len(h) for h in reference.values())
    print(
        f"{len(args.stores)} stores, {n_heads} heads; reference {args.reference}: "
        f"{cost} head-epochs, {first} heads kept at their first epoch"
    )
    print(
        f"{'lr':>8s} {'monitor':>9s} {'patience':>9s} {'max':>5s} {'epochs':>8s} "
        f"{'d accuracy':>11s}  {'worst store (its d)':42s} {'first':>6s}"
    )
    for lr in args.lr:
        for monitor in ("loss", "accuracy"):
            for patience in (5, 8, 10, 15):
                for max_epochs in (30, 40, 60, 100):
                    if max_epochs > args.epochs:
                        continue
                    deltas, epochs, firsts = {}, 0, 0
                    for store, heads in measured[lr].items():
                        runs = [replay(c, monitor, patience, max_epochs) for c in heads]
                        deltas[store] = [
                            r[0] - ref[0] for r, ref in zip(runs, reference[store], strict=True)
                        ]
                        epochs += sum(r[1] for r in runs)
                        firsts += sum(r[2] == 0 for r in runs)
                    every = np.concatenate(list(deltas.values()))
                    worst = min(deltas, key=lambda s: np.mean(deltas[s]))
                    print(
                        f"{lr:8.0e} {monitor:>9s} {patience:9d} {max_epochs:5d} "
                        f"{epochs / cost:8.2f} {100 * every.mean():+11.2f}  "
                        f"{worst + f' ({100 * np.mean(deltas[worst]):+.2f})':42s} {firsts:6d}"
                    )


if __name__ == "__main__":
    main()
