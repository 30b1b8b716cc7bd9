"""The grid of config/scale-100k.yaml as one snakemake command, timed per rule.

Runs the README's command for the grid (`snakemake --configfile config/config.yaml
config/scale-100k.yaml --cores C --resources gpu=G`) in an empty work folder, once per
size in `--n` (both datasets at that size), and prints for each:

- the end-to-end seconds of the one command, Snakemake's start-up and planning included;
- per rule: jobs, summed job seconds and the span from the first job's start to the last
  one's end (from Snakemake's log, every rule);
- GPU utilisation over the run (`nvidia-smi` sampled every second; none on a CPU machine);
- the disk the results took, per kind of store;
- the projection of benchmarks/README.md ("`seed_scale.py` on one GPU") beside the measured
  stages, and with two sizes, a linear extrapolation of each stage to 100k images.

Rehearse on a CPU with a small n and one run (a CPU trains one run per job; below about
600 images the cue-conflict set's conflict images are too few to split per class, and its
train jobs stop with a SplitError), then run it once on the GPU machine:

    .venv/bin/python benchmarks/grid.py --n 600,1000 --runs 1 --cores 2
    .venv/bin/python benchmarks/grid.py --n 20000,100000 --cores 16 --gpus 1 --budget 560
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import yaml
from common import REPO
from seed_scale import snakemake_command

from visual_ablation.plumbing import store

GRID = REPO / "config" / "scale-100k.yaml"
# benchmarks/README.md, "`seed_scale.py` on one GPU": seconds per stage at 100k (8 layers at
# 64 px; the grid's 18 layers at 160 px cost more)
PROJECTED = {"data": 25, "features": 54, "train": 249, "the rest": 57}
STAGE_OF_RULE = {"prepare_data": "data", "features": "features", "train": "train"}


def overlay(n: int, runs: int | None, cores: int) -> dict:
    """The grid's config at `n` images (both datasets), its results in the work folder."""
    grid = yaml.safe_load(GRID.read_text())
    grid["results_dir"] = grid["cache_dir"] = "results"
    for dataset in grid["datasets"].values():
        dataset["n"] = n
    if runs is not None:
        grid["runs"] = runs
    # the two CPU stages use what the machine has (16 on the GPU machine, as configured)
    grid["data"]["threads"] = min(grid["data"]["threads"], cores)
    grid["aggregate"]["threads"] = min(grid["aggregate"]["threads"], cores)
    return grid


class GpuSampler:
    """`nvidia-smi` utilisation and memory every second into a file, while it runs."""

    def __init__(self, path: Path) -> None:
        self.path, self.proc = path, None
        if shutil.which("nvidia-smi"):
            self.out = open(path, "w")  # noqa: SIM115 (closed in stop)
            self.proc = subprocess.Popen(
                [
                    "nvidia-smi",
                    "--query-gpu=utilization.gpu,memory.used",
                    "--format=csv,noheader,nounits",
                    "-lms",
                    "1000",
                ],
                stdout=self.out,
                stderr=subprocess.DEVNULL,
            )

    def stop(self) -> dict[str, float] | None:
        if self.proc is None:
            return None
        self.proc.terminate()
        self.proc.wait()
        self.out.close()
        rows = [
            [float(v) for v in line.split(",")]
            for line in self.path.read_text().splitlines()
            if line.count(",") == 1
        ]
        if not rows:
            return None
        busy = [u for u, _ in rows]
        return {
            "samples": len(rows),
            "utilisation_mean": sum(busy) / len(busy),
            "share_busy": sum(u > 0 for u in busy) / len(busy),
            "memory_peak_mib": max(m for _, m in rows),
        }


def job_events(log: Path) -> list[tuple[float, str, str | None, int]]:
    """Snakemake's log as job events, in order: (time, job id, its rule, its threads) at a
    start and (time, job id, None, 0) at an end (a `[date]` line before each job's
    `rule X:` block and each `Finished jobid`; one-second resolution)."""
    events: list[tuple[float, str, str | None, int]] = []
    stamp, rule = 0.0, None
    for line in log.read_text().splitlines():
        if line.startswith("[") and line.endswith("]"):
            try:
                stamp = time.mktime(time.strptime(line[1:-1], "%a %b %d %H:%M:%S %Y"))
            except ValueError:
                pass
            continue
        head = line.removeprefix("local")
        if head.startswith("rule ") and head.endswith(":"):
            rule = head[5:-1]
        elif rule and line.strip().startswith("jobid: "):
            events.append((stamp, line.split(":")[1].strip(), rule, 1))
        elif rule and line.strip().startswith("threads: "):
            when, job, name, _ = events[-1]
            events[-1] = (when, job, name, int(line.split(":")[1]))
        elif line.startswith("Finished jobid: "):
            events.append((stamp, line.split()[2], None, 0))
            rule = None
    return events


def rule_times(log: Path) -> dict[str, dict[str, float]]:
    """Per rule: jobs, summed job seconds and the span first start to last end, from
    Snakemake's log (`job_events`: every rule, whether or not it writes a benchmark file)."""
    started: dict[str, tuple[str, float]] = {}
    out: dict[str, dict[str, float]] = {}
    for stamp, job, rule, _ in job_events(log):
        if rule is not None:
            started[job] = (rule, stamp)
        elif job in started:
            name, begin = started.pop(job)
            row = out.setdefault(name, {"jobs": 0, "seconds": 0.0, "first": begin})
            row["jobs"] += 1
            row["seconds"] += stamp - begin
            row["first"] = min(row["first"], begin)
            row["last"] = max(row.get("last", stamp), stamp)
    out.pop("all", None)
    return out


def idle_cores(log: Path, cores: int) -> dict[str, float]:
    """From Snakemake's log (`job_events`): the seconds from the first start to the last
    end, the core-seconds no job held, and the seconds in which at least one core was free
    while a job ran (a 1-thread job alone, waiting for nothing the scheduler could start)."""
    events = [e for e in job_events(log) if e[2] != "all"]
    running: dict[str, int] = {}
    idle = partly = 0.0
    last = events[0][0] if events else 0.0
    for when, job, rule, threads in sorted(events, key=lambda e: (e[0], e[2] is None)):
        used = min(cores, sum(running.values()))
        if running and used < cores:
            idle += (cores - used) * (when - last)
            partly += when - last
        last = when
        if rule is not None:
            running[job] = threads
        else:
            running.pop(job, None)
    span = events[-1][0] - events[0][0] if events else 0.0
    return {"span": span, "idle_core_seconds": idle, "seconds_a_core_free": partly}


def disk(results: Path) -> dict[str, int]:
    """Bytes under each folder of the results (data, features, runs, transfer, ...)."""
    return {
        folder.name: store.store_bytes(str(folder))
        for folder in sorted(p for p in results.iterdir() if p.is_dir())
    }


def run_grid(n: int, args, workdir: Path, budget: float) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "grid.yaml").write_text(
        yaml.safe_dump(overlay(n, args.runs, args.cores), sort_keys=False)
    )
    # the README's command: the grid merged into the default config
    configs = ["--configfile", str(REPO / "config" / "config.yaml"), str(workdir / "grid.yaml")]
    cmd = snakemake_command(workdir, configs, args.cores, args.gpus)
    sampler = GpuSampler(workdir / "nvidia-smi.csv")
    t0 = time.perf_counter()
    with open(workdir / "snakemake.log", "w") as log:
        try:
            code = subprocess.run(cmd, stdout=log, stderr=log, timeout=budget).returncode
        except subprocess.TimeoutExpired:
            code = "timed out"
    seconds = time.perf_counter() - t0
    gpu = sampler.stop()
    results = workdir / "results"
    rules = rule_times(workdir / "snakemake.log")
    return {
        "n": n,
        "returncode": code,
        "seconds": seconds,
        "rules": rules,
        "gpu": gpu,
        "disk": disk(results) if results.is_dir() else {},
        "log_tail": (workdir / "snakemake.log").read_text()[-3000:] if code else "",
    }


def stages(rules: dict[str, dict[str, float]]) -> dict[str, float]:
    """Each stage's span (first start to last end) in seconds: data, features, train and
    the rest (transfer, amnesic, similarity, aggregate, tables, plots)."""
    spans: dict[str, list[float]] = {}
    for rule, row in rules.items():
        stage = STAGE_OF_RULE.get(rule, "the rest")
        first, last = spans.get(stage, [row["first"], row["last"]])
        spans[stage] = [min(first, row["first"]), max(last, row["last"])]
    return {stage: spans[stage][1] - spans[stage][0] for stage in PROJECTED if stage in spans}


def report(run: dict) -> None:
    print(
        f"\n== grid at n={run['n']}: {run['seconds']:.1f} s end to end, "
        f"snakemake exit {run['returncode']}"
    )
    if run["log_tail"]:
        print(run["log_tail"])
    print(f"{'rule':26s}{'jobs':>6s}{'job seconds':>13s}{'span s':>9s}")
    for rule, row in sorted(run["rules"].items(), key=lambda r: r[1]["first"]):
        span = row["last"] - row["first"]
        print(f"{rule:26s}{row['jobs']:6.0f}{row['seconds']:13.1f}{span:9.1f}")
    measured = stages(run["rules"])
    # the scheduler interleaves stages (train starts once a store is done): spans overlap
    print(f"\n{'stage':12s}{'measured span s':>17s}{'projected at 100k':>19s}")
    for stage, projected in PROJECTED.items():
        print(f"{stage:12s}{measured.get(stage, float('nan')):17.1f}{projected:19d}")
    if run["gpu"]:
        g = run["gpu"]
        print(
            f"\nGPU: {g['samples']} samples, mean utilisation {g['utilisation_mean']:.0f}%, "
            f"busy in {g['share_busy']:.0%} of them, peak memory {g['memory_peak_mib']:.0f} MiB"
        )
    else:
        print("\nGPU: none sampled (no nvidia-smi)")
    print("disk: " + ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in run["disk"].items()))


def extrapolate(small: dict, large: dict, to: int = 100_000) -> None:
    """Each stage's span, linear in n through the two measured sizes, at `to` images."""
    a, b = stages(small["rules"]), stages(large["rules"])
    if sum(b.values()) <= sum(a.values()):
        # at sizes where start-up dominates, or on a shared machine, the larger can be faster
        print(f"\nnot extrapolated: n={large['n']} took no longer than n={small['n']}")
        return
    print(f"\nextrapolated to n={to} (linear through n={small['n']} and n={large['n']}):")
    total = 0.0
    for stage in PROJECTED:
        if stage in a and stage in b:
            slope = (b[stage] - a[stage]) / (large["n"] - small["n"])
            value = b[stage] + slope * (to - large["n"])
            total += value
            print(f"  {stage:12s}{value:9.1f} s")
    print(f"  {'stages':12s}{total:9.1f} s (projection: {sum(PROJECTED.values())} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="100000", help="sizes, comma-separated, run in turn")
    parser.add_argument("--runs", type=int, help="runs (default the grid's 10)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--gpus", type=int, default=0, help="--resources gpu=N (0: = cores)")
    parser.add_argument(
        "--budget", type=float, default=float("inf"), help="seconds for all sizes together"
    )
    parser.add_argument("--workdir", help="keep everything here (default: a temp dir)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    root = Path(args.workdir or tempfile.mkdtemp(prefix="va-grid-"))
    started = time.perf_counter()
    runs = []
    try:
        for n in [int(v) for v in args.n.split(",")]:
            left = args.budget - (time.perf_counter() - started)
            if left <= 0:
                print(f"n={n}: no time left in --budget {args.budget:.0f} s")
                break
            runs.append(run_grid(n, args, root / f"n{n}", left))
            report(runs[-1])
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    complete = [r for r in runs if r["returncode"] == 0]
    if len(complete) >= 2:
        extrapolate(complete[-2], complete[-1])
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
