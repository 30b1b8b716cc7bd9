"""The CPU engine's stacking of layers: one MLP train job's training (3 runs, every layer
of one store) with each layer in its own stack (`max_padding` 1, the eager engine's
default) against layers of similar width zero-padded into shared stacks (`max_padding`
2, the static engine's), one thread, interleaved (A, B, A, B, ...): median seconds, the
ratio, and whether every head's validation and test numbers are the same.

Reads the stores of a finished default run (`make run`, or benchmarks/default_run.py
--keep DIR, then --results DIR/results):

    .venv/bin/python benchmarks/padding.py --store shapes/effnet/original --repeats 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import REPO
from linear_fit import read_store

from visual_ablation.probes import fitting, stacking


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(REPO / "results"), help="a default run's")
    parser.add_argument("--store", default="shapes/effnet/original", help="dataset/backbone/rep")
    parser.add_argument("--probe", default="mlp")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    exp, features, labels, n_classes, split_of = read_store(args.results, args.store)
    runs = list(split_of)
    probe = stacking.ProbeConfig.from_spec(exp.probe_spec(args.probe))
    dims = {layer: x.shape[1] for layer, x in features.items()}

    seconds: dict[float, list[float]] = {1.0: [], 2.0: []}
    heads_of: dict[float, list] = {}
    for _ in range(args.repeats):
        for padding in seconds:
            t0 = time.perf_counter()
            heads, _ = fitting.train(
                features, labels, split_of, n_classes, probe, runs, max_padding=padding
            )
            seconds[padding].append(time.perf_counter() - t0)
            heads_of[padding] = heads
    print(f"{args.store}, class, {args.probe}, {len(runs)} runs, one thread")
    for padding, times in seconds.items():
        stacks = stacking.stack_groups(dims, padding)
        print(
            f"max_padding {padding:g}: {len(stacks)} stacks, median {np.median(times):.2f} s "
            f"({', '.join(f'{t:.2f}' for t in times)})"
        )
    same = all(
        a.best_epoch == b.best_epoch and np.allclose(a.test_proba, b.test_proba, atol=1e-5)
        for a, b in zip(heads_of[1.0], heads_of[2.0], strict=True)
    )
    ratio = np.median(seconds[2.0]) / np.median(seconds[1.0])
    print(f"padded / unpadded: {ratio:.2f}; every head's best epoch and test output equal: {same}")


if __name__ == "__main__":
    main()
