"""Dry-run planning time of a large grid (about 3,000 train jobs) against bare Snakemake.

The grid: 3 datasets x 3 backbones (every layer) x 8 representations x 2 probes x
20 runs = 2,880 train jobs, 5,572 jobs in all (with transfer and similarity jobs).
Times `snakemake -n --quiet rules` on it (the first call also checks the backbones,
which imports torch; later calls remember the check), the same grid with
`training.runs_per_job: 10`, and a bare Snakefile with
the same number of jobs and no work at all: Snakemake's own floor on this machine.
Repeats are interleaved and medians reported. `--baseline DIR` also times another
checkout of this repository (another commit) on the same grid, interleaved with this one,
so that a change's effect on planning is measured in one run on one machine:

    .venv/bin/python benchmarks/planning.py --repeats 3
    git worktree add /tmp/va-base <commit> && \
        .venv/bin/python benchmarks/planning.py --repeats 5 --baseline /tmp/va-base
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import REPO, default_config

GRID = {
    "results_dir": "results",
    "datasets": {
        "shapes10k": {"source": "synthetic-shapes", "n": 10000, "seed": 0},
        "shapes100k": {"source": "synthetic-shapes", "n": 100000, "seed": 0},
        "digits": {"source": "sklearn-digits"},
    },
    # all eight, as the default config lists them
    "representations": default_config()["representations"],
    "backbones": {
        "effnet": {"model": "efficientnet_lite0", "weights": "pretrained", "layers": "all"},
        "resnet18": {"model": "resnet18", "weights": "none", "layers": "all"},
        "pixels": {"model": "pixels", "image_size": 16},
    },
    "probes": {"linear": {"hidden": 0}, "mlp": {"hidden": 256}},
    "runs": 20,
    "training": {"runs_per_job": 1},  # a job per run on any machine (auto groups on a GPU)
}
BARE = """
rule all:
    input: expand("runs/{{s}}/run{{r}}.csv", s=range({stores}), r=range({runs})),

rule features:
    output: directory("features/{{s}}.zarr")
    shell: "mkdir -p {{output}}"

rule train:
    input: lambda wc: f"features/{{int(wc.s) % {features}}}.zarr"
    output: "runs/{{s}}/run{{r}}.csv"
    params: spec=lambda wc: wc.s
    shell: "touch {{output}}"
"""


def dry_run(workdir: Path, *args: str, src: Path | None = None) -> tuple[float, str]:
    """Seconds and output of one dry run; `src`: the package this Snakefile imports."""
    env = {**os.environ, "PYTHONPATH": str(src)} if src else None
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--cores", "8", *args],
        capture_output=True,
        text=True,
        cwd=workdir,
        check=True,
        env=env,
    )
    return time.perf_counter() - t0, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout to time, interleaved")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="va-plan-") as tmp:
        ours, grouped, bare = Path(tmp, "ours"), Path(tmp, "grouped"), Path(tmp, "bare")
        base = Path(tmp, "baseline")
        for path in (ours, grouped, bare, base):
            path.mkdir()
        (ours / "config.yaml").write_text(yaml.safe_dump(GRID))
        (base / "config.yaml").write_text(yaml.safe_dump(GRID))
        (grouped / "config.yaml").write_text(
            yaml.safe_dump({**GRID, "training": {"runs_per_job": 10}})
        )
        snakefile = [
            "--snakefile",
            str(REPO / "workflow" / "Snakefile"),
            "--configfile",
            "config.yaml",
        ]
        # --replace-workflow-config: the grid alone, not merged into config/config.yaml
        ours_args = [*snakefile, "--replace-workflow-config"]
        cold, listing = dry_run(ours, *ours_args)
        jobs = {
            line.split()[0]: int(line.split()[1])
            for line in listing.splitlines()
            if len(line.split()) == 2 and line.split()[1].isdigit()
        }
        # the floor: a bare Snakefile with as many jobs (stores x 20 runs + 72 + all)
        stores = round((jobs["total"] - 73) / 20)
        (bare / "Snakefile").write_text(BARE.format(stores=stores, runs=20, features=72))
        _, grouped_listing = dry_run(grouped, *ours_args)
        grouped_train = next(
            int(line.split()[1])
            for line in grouped_listing.splitlines()
            if line.startswith("train ")
        )
        base_args = []
        if args.baseline:
            base_args = [
                "--snakefile",
                str(args.baseline / "Snakefile"),
                "--configfile",
                "config.yaml",
                "--replace-workflow-config",
            ]
            dry_run(base, *base_args, src=args.baseline / "src")  # its backbone check
        times: dict[str, list[float]] = {"ours": [], "grouped": [], "bare": [], "base": []}
        for _ in range(args.repeats):
            times["ours"].append(dry_run(ours, *ours_args)[0])
            if args.baseline:
                times["base"].append(dry_run(base, *base_args, src=args.baseline / "src")[0])
            times["grouped"].append(dry_run(grouped, *ours_args)[0])
            times["bare"].append(dry_run(bare)[0])
    med = {k: statistics.median(v) for k, v in times.items() if v}
    print(
        f"dry run (snakemake -n --quiet rules), median of {args.repeats}; "
        f"grid: {jobs['train']} train jobs, {jobs['total']} jobs"
    )
    print(f"{'':52s}{'seconds':>9s}{'jobs':>7s}{'ratio':>7s}")
    print(f"{'this workflow, first call (checks backbones)':52s}{cold:9.2f}{jobs['total']:7d}")
    print(f"{'this workflow':52s}{med['ours']:9.2f}{jobs['total']:7d}{1.0:7.2f}")
    print(
        f"{'this workflow, runs_per_job 10':52s}{med['grouped']:9.2f}"
        f"{jobs['total'] - jobs['train'] + grouped_train:7d}{med['grouped'] / med['ours']:7.2f}"
    )
    print(
        f"{'bare Snakefile, same job count, no work':52s}{med['bare']:9.2f}"
        f"{stores * 20 + 72 + 1:7d}{med['bare'] / med['ours']:7.2f}"
    )
    if args.baseline:
        label = f"baseline {args.baseline}"
        print(f"{label[:52]:52s}{med['base']:9.2f}{'':7s}{med['base'] / med['ours']:7.2f}")


if __name__ == "__main__":
    main()
