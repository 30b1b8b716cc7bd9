"""The GPU figures of issue 15, before and after, on one machine in one run (CI has no GPU).

- Extraction: the `features` path (read, representation, forward, pooling, copy back,
  compress, write) against a bare bf16 forward of the same backbone on the same batches,
  already on the device; the ratio. Each code version runs in its own process, on a
  data store made by its own code (an older version refuses a newer store's format).
  Two stages alone: reading the data store, and the path with the forward replaced by
  one real batch's features (the most the host side can feed).
- The store writer alone on those features: zstd 3 in one thread and zarr's empty-chunk
  scan (before) against the store's zstd 1 with one thread, with a feature job's threads,
  and with every core; then a feature job's own writer (its feeding thread included).
- Probes at `--n-probes` images, 8 layers: ten vectorised runs on CUDA and a profile of
  4 epochs (kernels per step and their GPU time), before and after; after, also one run,
  the epochs and steps of the ten runs, the MLP probe, one run and ten runs on the CPU
  (every core), and CUDA's heads against the CPU's.
  Section `variants` (not by default): memory layouts, and ten runs without CUDA graphs
  (what the graphs give).
- The CUDA cases of tests/probes/test_probes.py (CUDA against the CPU at the tests' tolerances,
  one host sync per epoch) and tests/features/test_features.py (features image for image).
- The aggregate job's paired bootstrap at the grid's size on this machine's cores
  (benchmarks/aggregate.py, CPU only), if time is left.
- The seed-scale run (benchmarks/seed_scale.py) at `--seed-scale` images, if time is left.

`--baseline DIR` is a copy of an older commit (its `src/`), e.g.
`git archive 2531f01 src | tar -x -C .baseline`. Each section prints one JSON line too
(`--json FILE` collects them).

    python benchmarks/gpu.py --baseline .baseline --n-extract 20000 --n-probes 10000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import REPO, default_config

BENCH = os.path.join(REPO, "benchmarks")

# the default config's backbone: EfficientNet-Lite0 pretrained, 8 layers, 64 px
EFFNET = default_config()["backbones"]["effnet"]


def experiment(root: str, n: int):
    from visual_ablation.plan.config import resolve

    return resolve(
        {
            "results_dir": root,
            "datasets": {"shapes": {"source": "synthetic-shapes", "n": n, "image_size": 64}},
            "representations": ["original"],
            "backbones": {"effnet": EFFNET},
            "split": {"val": 0.15, "test": 0.2, "seed": 0},
            "probes": {"linear": {"hidden": 0}, "mlp": {"hidden": 256}},
        }
    )


def report(section: str, figures: dict, sink: str | None) -> None:
    line = json.dumps({"section": section, **figures})
    print(line, flush=True)
    if sink:
        with open(sink, "a") as f:
            f.write(line + "\n")


# --- children: one code version each, in its own process -------------------------------


def child_extraction(args) -> dict:
    """The features path against a bare forward, interleaved, on one code version."""
    import extraction as timers  # benchmarks/extraction.py: its stage timers
    import torch
    import zarr

    from visual_ablation.features import extraction
    from visual_ablation.features.extractor import LayerExtractor

    exp = experiment(args.root, args.n)
    spec = exp.feature_spec("shapes", "effnet", "original")
    cuda = torch.device(args.device)
    on_gpu = cuda.type == "cuda"
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    out = os.path.join(args.root, "store.zarr")
    data_path = args.data
    if not data_path:  # an older version reads only a data store its own code made
        from visual_ablation.data import preparation
        from visual_ablation.features import extraction

        data_path = os.path.join(args.root, "data.zarr")
        preparation.prepare(exp.data_spec("shapes"), data_path, progress=False)
    images = zarr.open_group(data_path)["images"][:]
    bare = LayerExtractor(spec["backbone"], cuda)

    def run_path() -> float:
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        extraction.extract(data_path, out, spec, args.device, args.batch_size, args.threads, False)
        return time.perf_counter() - start

    def run_bare() -> float:
        batches = [
            extraction.to_tensor(images[i : i + args.batch_size], cuda)
            for i in range(0, len(images), args.batch_size)
        ]
        sync()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu), torch.no_grad():
            for x in batches:
                bare.forward_bare(x)
        sync()
        return time.perf_counter() - start

    def run_read() -> float:
        return timers.time_reading(data_path, args.batch_size)

    first = extraction.to_tensor(images[: args.batch_size], cuda)

    def run_host() -> float:  # the host side alone
        with timers.stand_in_forward(bare, first):
            return run_path()

    runs = (run_path, run_bare, run_read, run_host)
    for run in runs:
        run()  # warm-up
    timings = [[run() for run in runs] for _ in range(args.repeats)]
    path_s, bare_s, read_s, host_s = (statistics.median(t[i] for t in timings) for i in range(4))
    return {
        "n": args.n,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "path_img_s": round(args.n / path_s),
        "bare_img_s": round(args.n / bare_s),
        "ratio": round(bare_s / path_s, 3),
        "read_alone_img_s": round(args.n / read_s),
        "host_stand_in_img_s": round(args.n / host_s),
        "store": out,
    }


VARIANTS = {
    "per_run_values": {"per_run_values": True},
    "one_stack": {"max_padding": float("inf")},
    "both": {"per_run_values": True, "max_padding": float("inf")},
}


def profile_steps(feats, labels, split_of, n_classes) -> dict:
    """Kernels per training step and the GPU time they take, over 4 epochs of ten runs."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from visual_ablation.probes import fitting, stacking

    config = stacking.ProbeConfig(hidden=0, max_epochs=4, patience=1000)
    split = {r: split_of[r] for r in range(10)}
    steps = 4 * -(-int((split_of[0] == 0).sum()) // config.batch_size)
    try:
        with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
            fitting.train(feats, labels, split, n_classes, config, list(range(10)), "cuda")
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        busy = sum(e.device_time for e in kernels) / 1e3  # ms
        top: dict[str, float] = {}
        for e in kernels:
            top[e.name[:60]] = top.get(e.name[:60], 0.0) + e.device_time / 1e3
        return {
            "steps": steps,
            "kernels": len(kernels),
            "kernels_per_step": round(len(kernels) / steps, 1),
            "gpu_ms_per_step": round(busy / steps, 4),
            "top_ms": sorted(top.items(), key=lambda kv: -kv[1])[:12],
        }
    except Exception as err:  # the profile is a detail: never lose the figures for it
        return {"error": repr(err)[:300]}


def child_probes(args) -> dict:
    """Probe training on CUDA for one code version, on the inputs the parent saved."""
    import numpy as np
    import torch

    from visual_ablation.probes import fitting, metrics, stacking

    saved = np.load(args.inputs)
    layers = [str(x) for x in saved["layers"]]
    feats = {layer: saved[f"layer_{layer}"] for layer in layers}
    labels, n_classes = saved["labels"], int(saved["n_classes"])
    split_of = {run: saved["splits"][run] for run in range(10)}
    linear = stacking.ProbeConfig(hidden=0)
    mlp = stacking.ProbeConfig(hidden=256)
    figures: dict = {"n": int(len(labels)), "layers": len(layers)}

    def timed(config, runs, device=args.device, **kwargs):
        split = split_of[runs] if isinstance(runs, int) else {r: split_of[r] for r in runs}
        heads, seconds = fitting.train(
            feats, labels, split, n_classes, config, runs, device, **kwargs
        )
        return heads, round(seconds, 2)

    timed(stacking.ProbeConfig(hidden=0, max_epochs=2), 0)  # CUDA context and kernels, once
    if args.after and not args.only_ten:  # before's one run: 29.15 s on an H100 (README)
        _, figures["cuda_one_run_s"] = timed(linear, 0)
    cuda_heads, figures["cuda_ten_runs_s"] = timed(linear, list(range(10)))
    if args.variants:  # what the graphs give (42 s on an H100: a detail, not the table's)
        real = fitting._cuda_graphs
        fitting._cuda_graphs = lambda steps, state: steps  # the static engine, no graphs
        try:
            _, figures["cuda_ten_runs_no_graphs_s"] = timed(linear, list(range(10)))
        finally:
            fitting._cuda_graphs = real
    if args.mlp:
        _, figures["cuda_ten_runs_mlp_s"] = timed(mlp, list(range(10)))
    # the epochs the ten runs took (the longest head's): how many steps the time is for
    per_epoch = -(-int((split_of[0] == 0).sum()) // linear.batch_size)
    epochs = max(h.epochs for h in cuda_heads)
    figures["linear_epochs_steps"] = [epochs, epochs * per_epoch]
    figures["linear_ms_per_step"] = round(
        1e3 * figures["cuda_ten_runs_s"] / (epochs * per_epoch), 4
    )
    if args.variants:
        ten = list(range(10))
        for name, kwargs in VARIANTS.items():
            _, figures[f"linear_{name}_s"] = timed(linear, ten, **kwargs)
        for name in ("per_run_values",):
            heads, figures[f"mlp_{name}_s"] = timed(mlp, ten, **VARIANTS[name])
        figures["mlp_epochs"] = max(h.epochs for h in heads)
    if not args.only_ten:  # kernels per step, before and after
        figures["profile"] = profile_steps(feats, labels, split_of, n_classes)
    if args.after:
        cores = len(os.sched_getaffinity(0))
        torch.set_num_threads(cores)
        cpu_heads, figures["cpu_one_run_s"] = timed(linear, 0, device="cpu")
        _, figures["cpu_ten_runs_s"] = timed(linear, list(range(10)), device="cpu")
        figures["cpu_threads"] = cores
        pairs = [(c, g) for c in cpu_heads for g in cuda_heads if (g.run, g.layer) == (0, c.layer)]
        acc = [
            abs(
                metrics.classification_metrics(labels[c.test_rows], c.test_proba)["accuracy"]
                - metrics.classification_metrics(labels[g.test_rows], g.test_proba)["accuracy"]
            )
            for c, g in pairs
        ]
        figures["cuda_vs_cpu_max_accuracy_diff"] = round(max(acc), 4)
        figures["cuda_vs_cpu_max_proba_diff"] = float(
            max(np.abs(c.test_proba - g.test_proba).max() for c, g in pairs)
        )
        figures["cuda_vs_cpu_same_epochs"] = sum(
            (c.best_epoch, c.epochs) == (g.best_epoch, g.epochs) for c, g in pairs
        )
        figures["heads_compared"] = len(pairs)
    return figures


# --- the parent: data, children, writer, tests, seed scale -----------------------------


def pythonpath(*first: str) -> str:
    """`first`, then whatever PYTHONPATH held (packages carried to a GPU machine)."""
    return os.pathsep.join([*first, *filter(None, [os.environ.get("PYTHONPATH")])])


def child(mode: str, src: str, args, *extra: str, timeout: float = 600) -> dict | None:
    env = {**os.environ, "PYTHONPATH": pythonpath(src, BENCH)}
    cmd = [sys.executable, __file__, "--child", mode, "--device", args.device, *extra]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"{mode} ({src}) ran past {timeout:.0f} s", flush=True)
        return None
    if proc.returncode:
        print(f"{mode} ({src}) failed:\n{proc.stderr[-3000:]}", flush=True)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="an older checkout's root (its src/ is imported)")
    parser.add_argument("--n-extract", type=int, default=20000)
    parser.add_argument("--n-probes", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=4, help="extraction.threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed-scale", type=int, default=0, help="images (0: skip)")
    parser.add_argument("--budget", type=float, default=480, help="seconds for everything")
    parser.add_argument("--json", help="append each section's JSON line here")
    parser.add_argument("--device", default="cuda", help="cuda (cpu: a dry run of the script)")
    # child mode (internal)
    parser.add_argument("--child", choices=["extraction", "probes"], help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--after", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mlp", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--only-ten", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variants", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--sections",
        default="extraction,writer,probes,tests,aggregate,seed",
        help="which sections to run, comma-separated",
    )
    parser.add_argument(
        "--extraction-configs",
        default="",
        help="more (threads x batch) for the features path after, e.g. 16x512,16x1024",
    )
    args = parser.parse_args()
    if args.child:
        run = child_extraction if args.child == "extraction" else child_probes
        print(json.dumps(run(args)))
        return

    t_start = time.perf_counter()
    left = lambda: args.budget - (time.perf_counter() - t_start)  # noqa: E731
    sys.path.insert(0, os.path.join(REPO, "src"))
    import numpy as np
    import torch
    import zarr

    from visual_ablation.data import preparation, splits
    from visual_ablation.probes import training

    versions = {"after": os.path.join(REPO, "src")}
    if args.baseline:
        versions = {"before": os.path.join(os.path.abspath(args.baseline), "src"), **versions}
    root = tempfile.mkdtemp(prefix="va-gpu-")
    exp = experiment(root, args.n_extract)
    data_path = exp.data_store("shapes")
    cores = len(os.sched_getaffinity(0))
    # the data first: its render workers are forked, so before this process touches CUDA
    t0 = time.perf_counter()
    preparation.prepare(exp.data_spec("shapes"), data_path, progress=False, workers=cores)
    data_s = round(time.perf_counter() - t0, 1)
    report(
        "machine",
        {
            "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else "none",
            "torch": torch.__version__,
            "cores": cores,
            "versions": versions,
        },
        args.json,
    )
    figures = {"n": args.n_extract, "render_processes": cores}
    report("data", {**figures, "seconds": data_s}, args.json)

    sections = set(args.sections.split(","))
    # extraction, each version in its own process (before first); then more settings
    stores = {}
    runs = [(name, src, args.threads, args.batch_size) for name, src in versions.items()]
    if "extraction" not in sections:
        runs = [("after", versions["after"], args.threads, args.batch_size)]
    for setting in filter(None, args.extraction_configs.split(",")):
        threads, batch = (int(v) for v in setting.split("x"))
        runs.append((f"after {threads} threads, batch {batch}", versions["after"], threads, batch))
    for name, src, threads, batch in runs:
        figures = child(
            "extraction",
            src,
            args,
            *("--root", os.path.join(root, name.replace(" ", "_"))),
            *("--data", data_path if src == versions["after"] else ""),
            *("--n", str(args.n_extract), "--batch-size", str(batch)),
            *("--threads", str(threads), "--repeats", str(args.repeats)),
            timeout=max(60, left() / 2),
        )
        if figures:
            stores.setdefault(name, figures.pop("store"))
            report(f"extraction {name}", figures, args.json)

    # the writer alone, on the features just written
    feats = {
        layer: zarr.open_group(stores["after"])[f"layers/{layer}"][:] for layer in EFFNET["layers"]
    }
    sys.path.insert(0, BENCH)
    import writer

    before, scan, now = "zstd 3 (before)", "zstd 1, empty-chunk scan", "zstd 1 (the store's)"
    rows = ((before, 1), (scan, args.threads), (now, 1), (now, args.threads), (now, cores))
    for codec, threads in rows if "writer" in sections else ():
        rate, size = writer.write(feats, writer.CODECS[codec], threads, root, "scan" in codec)
        report(
            "writer alone",
            {"codec": codec, "threads": threads, "img_s": round(rate), "bytes": round(size)},
            args.json,
        )
    for threads in (args.threads, cores) if "writer" in sections else ():
        rate, size = writer.write_as_a_job(feats, threads, root)
        report(
            "writer alone",
            {"codec": writer.JOB_WRITER, "threads": threads, "img_s": round(rate)},
            args.json,
        )

    # probes: the first n images' features, each run's own split (the default)
    all_labels, n_classes, *_ = training.read_labels(data_path, exp.data_spec("shapes"))

    def probe_inputs(n: int) -> str:
        labels = all_labels[:n]
        split_spec = {**exp.split, "resample": True}
        split_of = splits.run_splits(labels, split_spec, list(range(10)), "shapes")
        path = os.path.join(root, f"probe-inputs-{n}.npz")
        np.savez(
            path,
            layers=np.array(EFFNET["layers"]),
            labels=labels,
            n_classes=n_classes,
            splits=np.stack([split_of[r] for r in range(10)]),
            **{f"layer_{layer}": feats[layer][:n] for layer in EFFNET["layers"]},
        )
        return path

    inputs = probe_inputs(args.n_probes)
    for name, src in versions.items() if "probes" in sections else ():
        flags = ["--after", "--mlp"] if name == "after" else []
        figures = child("probes", src, args, "--inputs", inputs, *flags, timeout=max(60, left()))
        if figures:
            report(f"probes {name}", figures, args.json)
    if "variants" in sections:
        flags = ["--mlp", "--only-ten", "--variants"]
        figures = child("probes", versions["after"], args, "--inputs", inputs, *flags)
        if figures:
            report("probes after, variants", figures, args.json)
    if "probes" in sections and args.n_extract > args.n_probes:  # how time grows with n
        more = probe_inputs(args.n_extract)
        flags = ["--mlp", "--only-ten"]
        figures = child("probes", versions["after"], args, "--inputs", more, *flags)
        if figures:
            report("probes after, more images", figures, args.json)

    # the CUDA test cases
    proc = subprocess.run(
        ["true"]
        if "tests" not in sections
        else [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda"]
        + [os.path.join(REPO, "tests", name) for name in ("test_probes.py", "test_features.py")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": pythonpath(os.path.join(REPO, "src"))},
    )
    report("tests", {"pytest": proc.stdout.strip().splitlines()[-1:]}, args.json)
    if proc.returncode:
        print(proc.stdout[-4000:], flush=True)

    # the aggregate job's paired bootstrap on this machine's cores (CPU only: the grid's
    # last stage, benchmarks/aggregate.py)
    if "aggregate" in sections and left() > 180:
        cmd = [sys.executable, os.path.join(BENCH, "aggregate.py"), "--threads", f"1,{cores}"]
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": pythonpath(os.path.join(REPO, "src"))},
        )
        lines = (proc.stdout or proc.stderr[-2000:]).strip().splitlines()
        report("aggregate", {"lines": lines}, args.json)

    if "seed" in sections and args.seed_scale and left() > 120:
        cmd = [sys.executable, os.path.join(BENCH, "seed_scale.py"), "--n", str(args.seed_scale)]
        cmd += ["--cores", str(cores), "--gpus", "4", "--runs-per-job", "auto"]
        cmd += ["--json", os.path.join(root, "seed.json"), "--snakemake-arg=--scheduler=greedy"]
        cmd += ["--skip-rerun"]
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=left() - 10,
                env={**os.environ, "PYTHONPATH": pythonpath(os.path.join(REPO, "src"))},
            )
            print(proc.stdout, proc.stderr[-3000:], flush=True)
            if proc.returncode == 0:
                with open(os.path.join(root, "seed.json")) as f:
                    report("seed scale", json.load(f), args.json)
        except subprocess.TimeoutExpired as err:
            print(f"seed scale ran past the budget:\n{(err.stdout or b'')[-3000:]}", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    report("done", {"seconds": round(time.perf_counter() - t_start, 1)}, args.json)


if __name__ == "__main__":
    main()
