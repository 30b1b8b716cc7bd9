"""The aggregate job's summary (`stats.summarise`): seconds and peak memory of its paired
bootstrap at the grid's size, per code version and thread count, and whether the
summaries are identical.

One (dataset, backbone, target, probe) as the full grid has it: the reference and 7 other
representations, each also tested with the reference's heads (transfer), so 14
comparisons per layer; 10 runs with resampled splits of 100k images, `--n-test` test
images each (the grid's 20% is 20,000), 8 classes, 1,000 bootstrap replicates. Every
configuration runs in its own process (peak memory is its own).

    .venv/bin/python benchmarks/aggregate.py                        # 2 layers, 28 comparisons
    .venv/bin/python benchmarks/aggregate.py --baseline .baseline --threads 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np
from common import REPO

OTHERS = ["grayscale", "lowpass", "highpass", "phase_scramble", "patch_shuffle", "edges"]
OTHERS.append("occlusion")
N_IMAGES = 100_000
CLASSES = 8


def family(args):
    """The run table and a prediction loader of one family: synthetic but shaped as a
    train job writes them (sorted test images per run, float32 probabilities)."""
    import pandas as pd

    layers = [f"layer{i}" for i in range(args.layers)]
    runs = list(range(args.runs))
    labels = np.random.default_rng(1).integers(0, CLASSES, N_IMAGES)
    images = np.stack(
        [
            np.sort(np.random.default_rng(100 + r).choice(N_IMAGES, args.n_test, replace=False))
            for r in runs
        ]
    )
    models = [("original", "original")]
    models += [(rep, rep) for rep in OTHERS] + [(rep, "original") for rep in OTHERS]

    def load(dataset, backbone, representation, trained_on, target, probe):
        rng = np.random.default_rng(zlib.crc32(f"{representation}/{trained_on}".encode()))
        shape = (len(runs), len(layers), args.n_test)  # as a train job writes them
        label = labels[images]
        right = rng.random(shape) < 0.7
        predicted = np.where(right, label[:, None], rng.integers(0, CLASSES, shape))
        confidence = rng.uniform(1 / CLASSES, 1, shape).astype(np.float32)
        p_true = np.where(predicted == label[:, None], confidence, 0.05).astype(np.float32)
        return {
            "runs": np.array(runs),
            "layers": np.array(layers),
            "image": images,
            "label": label,
            "predicted": predicted,
            "p_true": p_true,
            "confidence": confidence,
        }

    rng = np.random.default_rng(2)
    rows = []
    for representation, trained_on in models:
        for layer in layers:
            for run in runs:
                row = {"dataset": "shapes", "backbone": "effnet"}
                row |= {"representation": representation, "train_representation": trained_on}
                row |= {"target": "class", "layer": layer, "probe": "linear", "run": run}
                row |= {"n_classes": CLASSES, "n_test": args.n_test}
                row |= {"n_train": int(N_IMAGES * 0.65), "best_epoch": 50, "epochs": 65}
                row |= {"train_seconds": 1.0}
                acc = 0.7 + 0.02 * rng.standard_normal()
                row |= {"accuracy": acc, "balanced_accuracy": acc, "macro_f1": acc}
                row |= {"nll": 0.8, "ece": 0.02}
                rows.append(row)
    return pd.DataFrame(rows), load


def child(args) -> None:
    from visual_ablation.analyses import stats

    table, load = family(args)
    kwargs = {"threads": args.child_threads} if args.child_threads else {}
    start = time.perf_counter()
    summary = stats.summarise(table, load, reference="original", resampled=True, **kwargs)
    seconds = time.perf_counter() - start
    summary.to_csv(args.out, index=False, float_format="%.17g")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": round(seconds, 2), "peak_mb": round(peak_mb)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="an older checkout's root (its src/ is imported)")
    parser.add_argument("--n-test", type=int, default=20000)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", default=f"1,{len(os.sched_getaffinity(0))}")
    parser.add_argument("--child-threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.out:
        child(args)
        return

    import pandas as pd

    versions = [("after", os.path.join(REPO, "src"), int(t)) for t in args.threads.split(",")]
    if args.baseline:
        versions.insert(0, ("before", os.path.join(os.path.abspath(args.baseline), "src"), 0))
    comparisons = 2 * len(OTHERS) * args.layers
    print(
        f"{comparisons} comparisons ({args.layers} layers), {args.runs} runs, "
        f"{args.n_test} test images each, {len(os.sched_getaffinity(0))} cores"
    )
    from visual_ablation.analyses import inference

    union = len(np.unique(family(args)[1]("", "", "original", "original", "", "")["image"]))
    start = time.perf_counter()
    inference.bootstrap_weights(union, args.runs)
    print(
        f"of which the bootstrap's weights, once per set of test images ({union} images): "
        f"{time.perf_counter() - start:.2f} s"
    )
    tables, first = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for name, src, threads in versions:
            out = os.path.join(tmp, f"{name}-{threads}.csv")
            cmd = [sys.executable, __file__, "--out", out, "--n-test", str(args.n_test)]
            cmd += ["--layers", str(args.layers), "--runs", str(args.runs)]
            if threads:
                cmd += ["--child-threads", str(threads)]
            env = {**os.environ, "PYTHONPATH": src}
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            figures = json.loads(proc.stdout.strip().splitlines()[-1])
            tables[name, threads] = pd.read_csv(out)
            first = first or figures["seconds"]
            label = f"{name}, {threads} threads" if threads else name
            print(
                f"{label:<22} {figures['seconds']:7.2f} s  "
                f"{figures['seconds'] / comparisons:6.3f} s/comparison  "
                f"ratio {figures['seconds'] / first:5.3f}  peak {figures['peak_mb']} MB"
            )
    base_key = next(iter(tables))
    for key, table in tables.items():
        same = table.equals(tables[base_key])
        print(f"summary of {key[0]} ({key[1]} threads) identical to {base_key[0]}'s: {same}")


if __name__ == "__main__":
    main()
