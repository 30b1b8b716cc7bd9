"""Peak memory (RSS) of the data and feature stages at two dataset sizes.

Each stage runs in a fresh process (as a Snakemake job does) and reports its own peak
RSS; a third process that only imports torch and builds the backbone gives the floor
every feature job pays. Memory must follow the batch size, not the number of images:
the ratio of each stage between the largest and smallest size should be near 1.

    .venv/bin/python benchmarks/memory.py                    # n = 2000 and 20000
    .venv/bin/python benchmarks/memory.py --sizes 2000 20000 40000 --batch-size 512
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

STAGE = """
import json, resource, sys, time
sys.path.insert(0, {src!r})
from visual_ablation.data import preparation
from visual_ablation.features import extraction
from visual_ablation.features.extractor import LayerExtractor
from visual_ablation.plan.config import resolve
exp = resolve(json.loads({config!r}))
stage = {stage!r}
t0 = time.perf_counter()
if stage == "data":
    preparation.prepare(exp.data_spec("shapes"), exp.data_store("shapes"), progress=False)
elif stage == "features":
    extraction.extract(
        exp.data_store("shapes"),
        exp.feature_store("shapes", "effnet", "original"),
        exp.feature_spec("shapes", "effnet", "original"),
        device="cpu",
        batch_size={batch_size},
        threads=2,
        progress=False,
    )
else:  # the floor of a feature job: torch and the backbone, no data
    import torch
    LayerExtractor(exp.feature_spec("shapes", "effnet", "original")["backbone"],
                   torch.device("cpu"))
print(json.dumps({{"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - t0}}))
"""


def experiment(root: str, n: int, image_size: int) -> dict:
    import yaml

    with open(os.path.join(os.path.dirname(SRC), "config", "config.yaml")) as f:
        default = yaml.safe_load(f)
    return {
        "results_dir": root,
        "datasets": {"shapes": {"source": "synthetic-shapes", "n": n, "image_size": image_size}},
        "representations": ["original"],
        "backbones": {"effnet": default["backbones"]["effnet"]},
        "split": {"val": 0.15, "test": 0.2, "seed": 0},
    }


def run_stage(stage: str, config: dict, batch_size: int) -> dict:
    code = STAGE.format(src=SRC, config=json.dumps(config), stage=stage, batch_size=batch_size)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"stage {stage} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    rows = []
    for n in args.sizes:
        root = tempfile.mkdtemp(prefix="va-mem-")
        try:
            config = experiment(root, n, args.image_size)
            t0 = time.perf_counter()
            floor = run_stage("floor", config, args.batch_size)
            prep = run_stage("data", config, args.batch_size)
            feats = run_stage("features", config, args.batch_size)
            rows.append((n, floor, prep, feats))
            print(f"n={n}: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    print(
        f"peak RSS per stage process (MiB), synthetic shapes {args.image_size}px, "
        f"effnet of config/config.yaml, batch {args.batch_size}, CPU"
    )
    print(f"{'n':>7} {'torch+backbone':>15} {'data':>8} {'features':>9} {'img/s':>7}")
    for n, floor, prep, feats in rows:
        print(
            f"{n:>7} {floor['peak_mib']:>15.0f} {prep['peak_mib']:>8.0f} "
            f"{feats['peak_mib']:>9.0f} {n / feats['seconds']:>7.0f}"
        )
    (small, _, s_prep, s_feats), (large, _, l_prep, l_feats) = rows[0], rows[-1]
    print(
        f"ratio {large}/{small}: data {l_prep['peak_mib'] / s_prep['peak_mib']:.2f}, "
        f"features {l_feats['peak_mib'] / s_feats['peak_mib']:.2f} "
        f"(images x{large / small:.0f})"
    )


if __name__ == "__main__":
    main()
