"""What a readout costs and buys: synthetic shapes through the default backbone
(EfficientNet-Lite0 pretrained, the default config's 8 layers, 64 px) read out as a
global mean, grids and dimension budgets; per readout, the values per image, the stored
bytes per image, the extraction seconds, and the default config's linear probe (3 runs,
each on its own split) with its seconds and test accuracy per layer. The default config's
readout is chosen from this table (docs/methods.md, "Readout").

    .venv/bin/python benchmarks/readout.py --n 1000 10000
    .venv/bin/python benchmarks/readout.py --n 10000 --probe '{"weight_decay": 1e-4}'

`--probe` replaces the linear probe (a JSON probe config; at 10,000 images the default
L-BFGS grid takes about half an hour a readout on one core, the AdamW probe that
config/scale-100k.yaml and config/power-10k.yaml use a few minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import numpy as np
from common import default_config

from visual_ablation.data import preparation, splits
from visual_ablation.features import extraction, feature_store
from visual_ablation.plan.config import resolve
from visual_ablation.plumbing import devices
from visual_ablation.probes import fitting, stacking, training

DEFAULT = default_config()
READOUTS = ["mean", {"grid": 2}, {"grid": 4}, {"budget": 512}, {"budget": 1024}, {"budget": 2048}]


def store_bytes(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(path)
        for name in names
    )


def measure(root: str, n: int, readout, threads: int, probe: dict) -> dict:
    backbone = {**DEFAULT["backbones"]["effnet"], "readout": readout}
    exp = resolve(
        {
            "results_dir": root,
            "datasets": {"shapes": {"source": "synthetic-shapes", "n": n}},
            "representations": ["original"],
            "backbones": {"effnet": backbone},
            "split": DEFAULT["split"],
        }
    )
    if not os.path.exists(exp.data_store("shapes")):
        preparation.prepare(exp.data_spec("shapes"), exp.data_store("shapes"), progress=False)
    path = exp.feature_store("shapes", "effnet", "original")
    shutil.rmtree(path, ignore_errors=True)
    spec = exp.feature_spec("shapes", "effnet", "original")
    t0 = time.perf_counter()
    extraction.extract(exp.data_store("shapes"), path, spec, device="cpu", threads=threads)
    extract_s = time.perf_counter() - t0
    feats = feature_store.read(path, spec)
    labels, n_classes, classes, fixed, *_ = training.read_labels(
        exp.data_store("shapes"), exp.data_spec("shapes")
    )
    runs = [0, 1, 2]
    split_of = splits.run_splits(classes, exp.split, runs, "shapes", fixed)
    config = stacking.ProbeConfig.from_spec(probe)
    heads, train_s = fitting.train(feats, labels, split_of, n_classes, config, runs)
    accuracy = {
        layer: float(
            np.mean(
                [
                    (h.test_proba.argmax(1) == labels[h.test_rows]).mean()
                    for h in heads
                    if h.layer == layer
                ]
            )
        )
        for layer in feats
    }
    return {
        "values": sum(v.shape[1] for v in feats.values()),
        "bytes": store_bytes(path) / n,
        "extract_s": extract_s,
        "train_s": train_s,
        "accuracy": accuracy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--readouts", default=json.dumps(READOUTS), help="a JSON list")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument(
        "--probe",
        default=json.dumps(DEFAULT["probes"]["linear"]),
        help="the linear probe's config, JSON (default: the default config's)",
    )
    args = parser.parse_args()
    devices.set_cpu_threads(args.threads)
    probe = {"hidden": 0, **json.loads(args.probe)}
    for n in args.n:
        root = tempfile.mkdtemp(prefix="va-readout-")
        try:
            table = {
                json.dumps(r): measure(root, n, r, args.threads, probe)
                for r in json.loads(args.readouts)
            }
        finally:
            shutil.rmtree(root, ignore_errors=True)
        layers = list(next(iter(table.values()))["accuracy"])
        print(f"\nn={n}, {args.threads} threads, linear probe {probe}, 3 runs (test accuracy)")
        print(
            "| readout | values/image | stored bytes/image | extract s | train s | "
            + " | ".join(layers)
            + " |"
        )
        print("|---" * (5 + len(layers)) + "|")
        for name, row in table.items():
            cells = " | ".join(f"{row['accuracy'][layer]:.3f}" for layer in layers)
            print(
                f"| `{name}` | {row['values']:,} | {row['bytes']:,.0f} | {row['extract_s']:.1f} | "
                f"{row['train_s']:.1f} | {cells} |"
            )


if __name__ == "__main__":
    main()
