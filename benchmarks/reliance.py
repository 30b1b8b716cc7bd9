"""What issue 14's stages cost at 10k images: factor targets (a train job per target),
transfer (the reference's heads on another store) and shape bias, on real stores: a
synthetic-cue-conflict dataset (texture cue), EfficientNet-Lite0 pretrained with the
default config's 8 layers at 64 px, `original` and `grayscale`, the default MLP probe,
the default 3 runs in one job. Prints each stage's seconds (median of the repeats for
the cheap ones) beside the extraction of one store, the heads file's size, and the shape
bias of each layer.

    .venv/bin/python benchmarks/reliance.py --n 10000
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

from common import default_config

from visual_ablation.analyses import shape_bias
from visual_ablation.data import preparation
from visual_ablation.features import extraction
from visual_ablation.plan.config import resolve
from visual_ablation.plan.stages.jobs import RunJob
from visual_ablation.plumbing import devices
from visual_ablation.probes import run_files, training, transfer

DEFAULT = default_config()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="synthetic-cue-conflict images")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    devices.set_cpu_threads(args.threads)
    root = tempfile.mkdtemp(prefix="va-reliance-")
    try:
        exp = resolve(
            {
                "results_dir": root,
                "datasets": {
                    "conflict": {"source": "synthetic-cue-conflict", "n": args.n},
                },
                "representations": ["original", "grayscale"],
                "backbones": {"effnet": DEFAULT["backbones"]["effnet"]},
                "probes": {"mlp": DEFAULT["probes"]["mlp"]},
                "split": DEFAULT["split"],
                "runs": 3,
            }
        )
        t0 = time.perf_counter()
        preparation.prepare(exp.data_spec("conflict"), exp.data_store("conflict"), progress=False)
        seconds = {"data job": time.perf_counter() - t0}
        for rep in exp.representations:
            t0 = time.perf_counter()
            extraction.extract(
                exp.data_store("conflict"),
                exp.feature_store("conflict", "effnet", rep),
                exp.feature_spec("conflict", "effnet", rep),
                device="cpu",
                threads=args.threads,
                progress=False,
            )
            seconds[f"extract {rep}"] = time.perf_counter() - t0
        heads_paths, prediction_paths = {}, []
        for target in ("class", "colour", "texture"):
            for rep in exp.representations:
                job = RunJob("conflict", "effnet", rep, target, "mlp", (0, 1, 2))
                t0 = time.perf_counter()
                rows, predictions, heads = training.train_store(
                    exp.feature_store("conflict", "effnet", rep),
                    exp.data_store("conflict"),
                    exp.feature_spec("conflict", "effnet", rep),
                    exp.data_spec("conflict"),
                    exp.probe_spec("mlp"),
                    exp.split,
                    [0, 1, 2],
                    device="cpu",
                    threads=args.threads,
                    target=target,
                )
                seconds[f"train {target} on {rep}"] = time.perf_counter() - t0
                path = job.file(exp.layout.run_predictions)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                run_files.write_predictions(predictions, path)
                heads_path = job.file(exp.layout.run_heads)
                t0 = time.perf_counter()
                run_files.write_heads(heads, rows, heads_path)
                seconds[f"write heads {target} on {rep}"] = time.perf_counter() - t0
                heads_paths[target, rep] = heads_path
                if target == "class":
                    prediction_paths.append(path)
        timings = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            _, moved = transfer.transfer_store(
                [heads_paths["class", "original"]],
                exp.feature_store("conflict", "effnet", "grayscale"),
                exp.data_store("conflict"),
                exp.feature_spec("conflict", "effnet", "grayscale"),
                exp.data_spec("conflict"),
                "class",
            )
            timings.append(time.perf_counter() - t0)
        seconds["transfer job (class, original heads on grayscale)"] = statistics.median(timings)
        job = RunJob("conflict", "effnet", "grayscale", "class", "mlp", (0, 1, 2))
        path = job.file(exp.layout.transfer_predictions)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        run_files.write_predictions(moved, path)
        prediction_paths.append(path)
        timings = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            table = shape_bias.table(
                prediction_paths,
                {"conflict": exp.data_store("conflict")},
                {"conflict": exp.data_spec("conflict")},
                exp.reference,
            )
            timings.append(time.perf_counter() - t0)
        seconds[f"shape bias ({len(prediction_paths)} models x 8 layers)"] = statistics.median(
            timings
        )
        heads_bytes = os.path.getsize(heads_paths["class", "original"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"n={args.n} cue-conflict shapes, EfficientNet-Lite0 8 layers, MLP, 3 runs per job,")
    print(f"{args.threads} threads (each a job's own work, without its start-up):")
    for stage, value in seconds.items():
        print(f"  {stage:<52} {value:8.2f} s")
    print(f"  heads file of one train job (3 runs x 8 layers): {heads_bytes / 1e6:.1f} MB")
    print("shape bias per layer (stem .. head):")
    for (tested, trained), rows in table.groupby(
        ["representation", "train_representation"], sort=False
    ):
        values = " ".join(f"{v:.2f}" for v in rows["shape_bias"])
        print(f"  trained on {trained:<10} tested on {tested:<10} {values}")


if __name__ == "__main__":
    main()
