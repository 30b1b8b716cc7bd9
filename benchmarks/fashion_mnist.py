"""Real data against an outside number: Fashion-MNIST (Debian's dataset-fashion-mnist)
through this workflow's own code (idx source, data store, `pixels` backbone at 28 px,
feature store, linear probe), on the dataset's standard split (train 60k, of which a
stratified 15% is the probe's validation part; test the 10k t10k images), against
scikit-learn's LogisticRegression fitted on the same train images with the same
standardisation. The dataset's own benchmark table puts logistic regression at about
84%; the check is that the two agree within 1.5 points.

    sudo apt-get install dataset-fashion-mnist
    .venv/bin/python benchmarks/fashion_mnist.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from visual_ablation.data import preparation, sources, splits
from visual_ablation.features import extraction, feature_store
from visual_ablation.plan.config import resolve
from visual_ablation.plumbing import devices
from visual_ablation.probes import fitting, stacking, training

FOLDER = "/usr/share/datasets/fashion-mnist"


def standard_split(part: np.ndarray, labels: np.ndarray, val: float, seed: int) -> np.ndarray:
    """TRAIN/VAL/TEST codes: t10k is the test part; a stratified `val` of train is VAL."""
    split = np.where(part == 0, splits.TRAIN, splits.TEST).astype(np.int8)
    rng = np.random.default_rng(seed)
    for c in np.unique(labels):
        members = np.flatnonzero((part == 0) & (labels == c))
        split[rng.choice(members, round(val * len(members)), replace=False)] = splits.VAL
    return split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default=FOLDER)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    if not os.path.isdir(args.path):
        sys.exit(f"{args.path} missing: sudo apt-get install dataset-fashion-mnist")
    devices.set_cpu_threads(args.threads)
    root = tempfile.mkdtemp(prefix="va-fashion-")
    try:
        exp = resolve(
            {
                "results_dir": root,
                "datasets": {"fashion": {"source": "idx", "path": args.path, "image_size": 28}},
                "representations": ["original"],
                "backbones": {"pixels": {"model": "pixels", "image_size": 28}},
            }
        )
        t0 = time.perf_counter()
        preparation.prepare(exp.data_spec("fashion"), exp.data_store("fashion"), progress=False)
        spec = exp.feature_spec("fashion", "pixels", "original")
        path = exp.feature_store("fashion", "pixels", "original")
        extraction.extract(exp.data_store("fashion"), path, spec, "cpu", 512, args.threads, False)
        x = feature_store.read(path, spec)["pixels"]
        labels, n_classes, *_ = training.read_labels(
            exp.data_store("fashion"), exp.data_spec("fashion")
        )
        print(f"data and pixel store: {len(labels)} images in {time.perf_counter() - t0:.1f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    part = sources.open_source({"source": "idx", "path": args.path}).part
    split = standard_split(part, labels, 0.15, 0)
    sizes = {
        name: int((split == code).sum()) for name, code in (("train", 0), ("val", 1), ("test", 2))
    }

    t0 = time.perf_counter()
    (head,), _ = fitting.train({"pixels": x}, labels, split, n_classes, stacking.ProbeConfig(), 0)
    ours = float((head.test_proba.argmax(1) == labels[head.test_rows]).mean())
    ours_s = time.perf_counter() - t0

    from sklearn.linear_model import LogisticRegression

    train = split == splits.TRAIN
    z = stacking.standardise(x, train)
    t0 = time.perf_counter()
    model = LogisticRegression(max_iter=1000).fit(z[train], labels[train])
    theirs = float(model.score(z[split == splits.TEST], labels[split == splits.TEST]))
    theirs_s = time.perf_counter() - t0
    gap = 100 * (ours - theirs)
    print(f"standard split: {sizes} ({x.shape[1]} pixel values per image)")
    print(f"ours (linear probe, early stopping on val): {100 * ours:.2f}% in {ours_s:.1f} s")
    print(f"scikit-learn LogisticRegression:            {100 * theirs:.2f}% in {theirs_s:.1f} s")
    verdict = "within" if abs(gap) <= 1.5 else "NOT within"
    print(f"difference {gap:+.2f} points: {verdict} 1.5 points")


if __name__ == "__main__":
    main()
