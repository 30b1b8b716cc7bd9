"""The probes against scikit-learn's LogisticRegression with C chosen on validation, per
layer, on real stored features: synthetic shapes through the default config's effnet
backbone (its readout, layers and image size). For each probe variant (JSON, keys of a
probe config) the mean test accuracy over 3 runs (each on its own split), the weight
decays kept and the best epochs; beside it the tuned logistic regression on the same
splits. The default config's probe settings come from this table (docs/methods.md); the
first variant is the AdamW linear probe they replaced, the baseline for their seconds.

    .venv/bin/python benchmarks/probe_tuning.py --n 1000
    .venv/bin/python benchmarks/probe_tuning.py --variants '{"mlp": {"hidden": 256}}'
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
CS = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0, 10.0, 100.0]


def tuned_logistic_regression(x, labels, split, n_classes) -> tuple[float, float]:
    """(test accuracy, C) of the C with the lowest validation log-loss."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    z = stacking.standardise(x, split == splits.TRAIN)
    train, val, test = (split == code for code in (splits.TRAIN, splits.VAL, splits.TEST))
    best = None
    for c in CS:
        model = LogisticRegression(C=c, max_iter=3000).fit(z[train], labels[train])
        loss = log_loss(labels[val], model.predict_proba(z[val]), labels=range(n_classes))
        if best is None or loss < best[0]:
            best = (loss, model.score(z[test], labels[test]), c)
    return best[1], best[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="synthetic-shapes images")
    # the baseline in the same run: the linear probe before solver lbfgs (AdamW, one
    # decay, early stopping), then the default config's probes
    default_variants = {
        "linear_adamw": {"hidden": 0, "lr": 1e-3, "weight_decay": 1e-4, "max_epochs": 100},
        **DEFAULT["probes"],
    }
    parser.add_argument("--variants", default=json.dumps(default_variants))
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    devices.set_cpu_threads(args.threads)
    root = tempfile.mkdtemp(prefix="va-probe-tuning-")
    try:
        exp = resolve(
            {
                "results_dir": root,
                "datasets": {"shapes": {"source": "synthetic-shapes", "n": args.n}},
                "representations": ["original"],
                "backbones": {"effnet": DEFAULT["backbones"]["effnet"]},
                "split": DEFAULT["split"],
            }
        )
        preparation.prepare(exp.data_spec("shapes"), exp.data_store("shapes"), progress=False)
        path, spec = (
            exp.feature_store("shapes", "effnet", "original"),
            exp.feature_spec("shapes", "effnet", "original"),
        )
        extraction.extract(exp.data_store("shapes"), path, spec, device="cpu", progress=False)
        feats = feature_store.read(path, spec)
        labels, n_classes, classes, fixed, *_ = training.read_labels(
            exp.data_store("shapes"), exp.data_spec("shapes")
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    runs = [0, 1, 2]
    split_of = splits.run_splits(classes, exp.split, runs, "shapes", fixed)
    reference = {
        layer: [tuned_logistic_regression(x, labels, split_of[r], n_classes) for r in runs]
        for layer, x in feats.items()
    }
    print(f"n={args.n}, {len(runs)} runs, effnet readout {spec['backbone']['readout']}")
    print("| layer | dims | tuned LogisticRegression (C chosen) |")
    print("|---|---|---|")
    for layer, rows in reference.items():
        cs = ", ".join(f"{c:g}" for _, c in rows)
        print(f"| {layer} | {feats[layer].shape[1]} | {np.mean([a for a, _ in rows]):.3f} ({cs}) |")
    for name, variant in json.loads(args.variants).items():
        config = stacking.ProbeConfig.from_spec(variant)
        t0 = time.perf_counter()
        heads, _ = fitting.train(feats, labels, split_of, n_classes, config, runs)
        seconds = time.perf_counter() - t0
        print(f"\n{name} {json.dumps(variant)}: {seconds:.1f} s")
        print("| layer | accuracy | minus tuned LR | weight decays kept | best epochs |")
        print("|---|---|---|---|---|")
        for layer in feats:
            mine = [h for h in heads if h.layer == layer]
            accuracy = np.mean(
                [(h.test_proba.argmax(1) == labels[h.test_rows]).mean() for h in mine]
            )
            gap = accuracy - np.mean([a for a, _ in reference[layer]])
            decays = ", ".join(f"{h.weight_decay:g}" for h in mine)
            epochs = ", ".join(str(h.best_epoch) for h in mine)
            print(f"| {layer} | {accuracy:.3f} | {gap:+.3f} | {decays} | {epochs} |")


if __name__ == "__main__":
    main()
