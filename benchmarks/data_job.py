"""The data job on the procedural shapes: seconds and images/s of `preparation.prepare` with one
render process and with more (`data.threads`), interleaved, with each one's peak memory
(the job's own process and its largest render process), and whether the stores hold the
same arrays.

    .venv/bin/python benchmarks/data_job.py                       # n = 20000, 1 and 2 processes
    .venv/bin/python benchmarks/data_job.py --n 100000 --workers 1,16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def spec(n: int, size: int) -> dict:
    return {
        "name": "shapes",
        "source": "synthetic-shapes",
        "image_size": size,
        "seed": 0,
        "n": n,
        "format_version": 1,
    }


def child(args) -> None:
    from visual_ablation.data import preparation

    start = time.perf_counter()
    preparation.prepare(
        spec(args.n, args.size), args.out, progress=False, workers=args.child_workers
    )
    seconds = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": round(own), "worker_peak_mb": round(workers)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", default=f"1,{len(os.sched_getaffinity(0))}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child-workers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.out:
        child(args)
        return

    import zarr

    counts = [int(w) for w in args.workers.split(",")]
    print(
        f"synthetic-shapes, {args.n} images at {args.size} px, "
        f"{len(os.sched_getaffinity(0))} cores, {args.repeats} interleaved repeats"
    )
    runs: dict[int, list[dict]] = {w: [] for w in counts}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for workers in counts:
                out = os.path.join(tmp, f"w{workers}.zarr")
                shutil.rmtree(out, ignore_errors=True)
                cmd = [sys.executable, __file__, "--out", out, "--n", str(args.n)]
                cmd += ["--size", str(args.size), "--child-workers", str(workers)]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
                runs[workers].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        base = statistics.median(r["seconds"] for r in runs[counts[0]])
        for workers in counts:
            seconds = statistics.median(r["seconds"] for r in runs[workers])
            peak = max(r["peak_mb"] for r in runs[workers])
            worker_peak = max(r["worker_peak_mb"] for r in runs[workers])
            print(
                f"{workers:>2} render processes: {seconds:7.2f} s  {args.n / seconds:8.0f} img/s  "
                f"ratio {seconds / base:5.3f}  peak {peak} MB (job), {worker_peak} MB (a worker)"
            )
        stores = {w: zarr.open_group(os.path.join(tmp, f"w{w}.zarr"), mode="r") for w in counts}
        first = stores[counts[0]]
        for workers, group in stores.items():
            same = all(
                np.array_equal(first[name][:], group[name][:]) for name in first.array_keys()
            )
            print(f"store of {workers} processes holds the same arrays as {counts[0]}'s: {same}")


if __name__ == "__main__":
    main()
