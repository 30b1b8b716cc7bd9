"""The similarity stage's cost: one `similarity` job (linear CKA of a representation's
store against the reference's, every layer) on real stores: synthetic shapes,
EfficientNet-Lite0 pretrained with the default config's 8 layers, 64 px; `original`
against `grayscale`. Prints the job's seconds (median of the repeats), per layer, and
each layer's CKA; beside it, the seconds of extracting one of the two stores, for scale.

    .venv/bin/python benchmarks/similarity.py --n 10000
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import yaml
from common import REPO

from visual_ablation.analyses import similarity
from visual_ablation.data import preparation
from visual_ablation.plan.config import resolve
from visual_ablation.plumbing import devices

with open(os.path.join(REPO, "config", "config.yaml")) as f:
    EFFNET = yaml.safe_load(f)["backbones"]["effnet"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="synthetic-shapes images")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    devices.set_cpu_threads(args.threads)
    root = tempfile.mkdtemp(prefix="va-similarity-")
    try:
        exp = resolve(
            {
                "results_dir": root,
                "datasets": {"shapes": {"source": "synthetic-shapes", "n": args.n}},
                "representations": ["original", "grayscale"],
                "backbones": {"effnet": EFFNET},
            }
        )
        preparation.prepare(exp.data_spec("shapes"), exp.data_store("shapes"), progress=False)
        extraction = {}
        for rep in exp.representations:
            t0 = time.perf_counter()
            extraction.extract(
                exp.data_store("shapes"),
                exp.feature_store("shapes", "effnet", rep),
                exp.feature_spec("shapes", "effnet", rep),
                device="cpu",
                threads=args.threads,
                progress=False,
            )
            extraction[rep] = time.perf_counter() - t0
        timings, table = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            table = similarity.layer_similarity(
                exp.feature_store("shapes", "effnet", "original"),
                exp.feature_store("shapes", "effnet", "grayscale"),
                exp.feature_spec("shapes", "effnet", "original"),
                exp.feature_spec("shapes", "effnet", "grayscale"),
            )
            timings.append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    seconds = statistics.median(timings)
    print(
        f"similarity job, n={args.n} ({table[0]['n_images']} images used), "
        f"{len(table)} layers, {args.threads} threads: {seconds:.2f} s "
        f"({seconds / len(table):.3f} s per layer); extracting one store: "
        f"{extraction['grayscale']:.1f} s"
    )
    for row in table:
        print(f"  {row['layer']:<10} CKA grayscale vs original {row['cka']:.3f}")


if __name__ == "__main__":
    main()
