"""The seed-scale run: the whole workflow end to end, timed stage by stage.

synthetic-shapes at `--n` images, all eight representations, EfficientNet-Lite0
(pretrained, the default config's 8 layers, 64 px), linear + MLP probes, 10 runs. Runs
Snakemake in a temporary directory (or `--workdir`) and times, in order:

    data       snakemake --until prepare_data
    features   snakemake --until features
    train      snakemake --until train        (every train job, 10 runs)
    aggregate  snakemake                      (feature table, aggregate, plots)
    runs 10->20  snakemake --config runs=20   (the cached re-run: new train jobs only)

Each figure includes Snakemake's own start-up and planning, as a user would see it.

    .venv/bin/python benchmarks/seed_scale.py --n 2000 --cores 2   # this CPU machine
    .venv/bin/python benchmarks/seed_scale.py --n 100000 --cores 16 --gpus 1
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import REPO, default_config

from visual_ablation.plumbing import store

# the default config's 8 EfficientNet layers and all eight representations
DEFAULT = default_config()
LAYERS = DEFAULT["backbones"]["effnet"]["layers"]
REPRESENTATIONS = DEFAULT["representations"]


def config(n: int, runs: int, runs_per_job: int | str = "auto", cores: int = 2) -> dict:
    return {
        "results_dir": "results",
        "datasets": {"shapes": {"source": "synthetic-shapes", "n": n, "seed": 0}},
        "representations": REPRESENTATIONS,
        "backbones": {
            "effnet": {
                "model": "efficientnet_lite0",
                "weights": "pretrained",
                "layers": LAYERS,
                "image_size": 64,
            }
        },
        "probes": {"linear": {"hidden": 0}, "mlp": {"hidden": 256}},
        "runs": runs,
        "training": {"runs_per_job": runs_per_job},
        # every core for the two CPU stages (as config/scale-100k.yaml on 16 cores)
        "data": {"threads": cores},
        "aggregate": {"threads": cores},
    }


EXTRA: list[str] = []  # --snakemake-arg: more options for every snakemake call


def snakemake_command(workdir: Path, configs: list[str], cores: int, gpus: int) -> list[str]:
    """The workflow run in `workdir` with these config options (gpu=cores when gpus is 0)."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "workflow" / "Snakefile"),
        "--directory",
        str(workdir),
        *configs,
        "--cores",
        str(cores),
        "--resources",
        f"gpu={gpus or cores}",
    ]


def snakemake(workdir: Path, cores: int, gpus: int, *args: str) -> tuple[float, int]:
    """Seconds of one snakemake invocation and the number of jobs it ran."""
    configs = ["--replace-workflow-config", "--configfile", str(workdir / "config.yaml")]
    cmd = [*snakemake_command(workdir, configs, cores, gpus), *EXTRA, *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args) or 'snakemake'} failed:\n{proc.stderr[-4000:]}")
    done = re.findall(r"(\d+) of (\d+) steps", proc.stderr)
    return seconds, int(done[-1][0]) if done else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="synthetic-shapes images")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--gpus", type=int, default=0, help="--resources gpu=N (0: = cores)")
    parser.add_argument(
        "--runs-per-job",
        default="auto",
        type=lambda v: v if v == "auto" else int(v),
        help="training.runs_per_job (auto: every run in one job on a GPU, else 1)",
    )
    parser.add_argument(
        "--snakemake-arg", action="append", default=[], help="more options for snakemake"
    )
    parser.add_argument("--workdir", help="keep everything here (default: a temp dir)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--skip-rerun", action="store_true", help="skip runs 10 -> 20")
    args = parser.parse_args()
    EXTRA.extend(args.snakemake_arg)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="va-seed-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(
        yaml.safe_dump(config(args.n, 10, args.runs_per_job, args.cores), sort_keys=False)
    )
    stages = [
        ("data", ["--until", "prepare_data"]),
        ("features", ["--until", "features"]),
        ("train (10 runs)", ["--until", "train"]),
        ("aggregate, table, plots", []),
    ]
    rows = []
    try:
        for name, extra in stages:
            seconds, jobs = snakemake(workdir, args.cores, args.gpus, *extra)
            rows.append((name, seconds, jobs))
        total = sum(r[1] for r in rows)
        rerun = ("re-run with runs 10 -> 20", float("nan"), 0)
        if not args.skip_rerun:
            (workdir / "config.yaml").write_text(
                yaml.safe_dump(config(args.n, 20, args.runs_per_job, args.cores), sort_keys=False)
            )
            seconds, jobs = snakemake(workdir, args.cores, args.gpus)
            rerun = ("re-run with runs 10 -> 20", seconds, jobs)
        stores = workdir / "results" / "features" / "shapes" / "effnet"
        store_bytes = {
            rep: store.store_bytes(str(stores / f"{rep}.zarr")) for rep in REPRESENTATIONS
        }
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"seed-scale run: synthetic-shapes n={args.n}, 8 representations, effnet "
        f"{len(LAYERS)} layers, 2 probes, 10 runs; --cores {args.cores}, "
        f"runs_per_job {args.runs_per_job}"
    )
    print(f"{'stage':32s}{'seconds':>10s}{'jobs':>7s}{'share':>8s}")
    for name, seconds, jobs in rows:
        print(f"{name:32s}{seconds:10.1f}{jobs:7d}{seconds / total:8.0%}")
    print(f"{'end to end':32s}{total:10.1f}{sum(r[2] for r in rows):7d}")
    print(f"{rerun[0]:32s}{rerun[1]:10.1f}{rerun[2]:7d}")
    print(f"\nfeature store bytes per image (effnet, {len(LAYERS)} layers, float16, compressed)")
    for rep, size in store_bytes.items():
        print(f"  {rep:16s}{size / args.n:8.0f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "n": args.n,
                    "stages": rows,
                    "total": total,
                    "rerun_20": rerun,
                    "store_bytes": store_bytes,
                }
            )
        )


if __name__ == "__main__":
    main()
