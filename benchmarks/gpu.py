"""The GPU code paths, once, with figures (run it where a GPU is; CI has none).

- GPU slots: the devices the driver lists, and the slot a job claims on them.
- Extraction on CUDA (bf16 autocast, channels-last, pinned copies): the `features` path
  against a bare forward on the same batches, and its features against the CPU's.
- Probes on CUDA: one run and ten vectorised runs, and their test accuracy against
  the CPU's for the same run.
- Host memory: peak RSS of a feature job and a train job on the GPU, each in a fresh
  process as a cluster job is, next to the mem_mb that job would ask SLURM for.

    python benchmarks/gpu.py --n 10000
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

import yaml

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(REPO, "src"))

from visual_ablation import devices  # noqa: E402 (before torch: the slot check)

# the default config's backbone: EfficientNet-Lite0 pretrained, 8 layers, 64 px
with open(os.path.join(REPO, "config", "config.yaml")) as f:
    EFFNET = yaml.safe_load(f)["backbones"]["effnet"]


def experiment(root: str, n: int):
    from visual_ablation.config import resolve

    return resolve(
        {
            "results_dir": root,
            "datasets": {"shapes": {"source": "synthetic-shapes", "n": n, "image_size": 64}},
            "representations": ["original"],
            "backbones": {"effnet": EFFNET},
            "split": {"val": 0.15, "test": 0.2, "seed": 0},
            "probes": {"linear": {"hidden": 0}},
        }
    )


def stage(kind: str, root: str, n: int, batch_size: int, device: str) -> None:
    """One job in this process, as a cluster job runs it; prints its peak RSS."""
    from visual_ablation import features, training

    exp = experiment(root, n)
    t0 = time.perf_counter()
    if kind == "features":
        path = exp.feature_store("shapes", "effnet", "original") + ".job"
        features.extract(
            exp.data_store("shapes"),
            path,
            exp.feature_spec("shapes", "effnet", "original"),
            device=device,
            batch_size=batch_size,
            threads=4,
            progress=False,
        )
    else:
        training.train_store(
            exp.feature_store("shapes", "effnet", "original"),
            exp.data_store("shapes"),
            exp.feature_spec("shapes", "effnet", "original"),
            exp.data_spec("shapes"),
            exp.probe_spec("linear"),
            exp.split,
            runs=list(range(10)),
            device=device,
            threads=2,
        )
    print(json.dumps({"peak_mb": peak_rss_mb(), "seconds": time.perf_counter() - t0}))


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM). Not getrusage: a child started by a big
    parent reports the parent's peak there, carried across fork and exec."""
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kb * 1024 / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda", help="cuda (cpu: a dry run of the script)")
    parser.add_argument("--stage", choices=["features", "train"], help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        stage(args.stage, args.root, args.n, args.batch_size, args.device)
        return

    lock_dir = tempfile.mkdtemp(prefix="va-gpu-locks-")
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    gpus = devices.visible_gpus(env)
    slots = [devices.claim_gpu_slot("auto", dict(env), lock_dir) for _ in range(len(gpus) + 1)]
    devices.release_gpu_slots()
    print(f"driver lists {len(gpus)} GPU(s): {gpus}")
    print("slots claimed in turn:", [(s.device, s.slot) for s in slots if s])

    import numpy as np
    import torch
    import zarr

    from visual_ablation import (
        backbones,
        data,
        features,
        metrics,
        probes,
        resources,
        splits,
        training,
    )

    cuda = torch.device(args.device)
    on_gpu = cuda.type == "cuda"
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0) if on_gpu else 'no GPU'}")
    root = tempfile.mkdtemp(prefix="va-gpu-")
    exp = experiment(root, args.n)
    data_path = exp.data_store("shapes")
    spec = exp.feature_spec("shapes", "effnet", "original")
    t0 = time.perf_counter()
    data.prepare(exp.data_spec("shapes"), data_path, progress=False)
    print(f"data store: {args.n} shapes at 64 px in {time.perf_counter() - t0:.1f} s")

    # extraction: path against a bare forward, interleaved
    gpu_store = exp.feature_store("shapes", "effnet", "original")
    images = zarr.open_group(data_path)["images"][:]
    bare = backbones.LayerExtractor(spec["backbone"], cuda)

    def run_path() -> float:
        shutil.rmtree(gpu_store, ignore_errors=True)
        start = time.perf_counter()
        features.extract(data_path, gpu_store, spec, args.device, args.batch_size, 4, False)
        return time.perf_counter() - start

    def run_bare() -> float:
        batches = [
            features.to_tensor(images[i : i + args.batch_size], cuda)
            for i in range(0, len(images), args.batch_size)
        ]
        sync = torch.cuda.synchronize if on_gpu else (lambda: None)
        sync()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu), torch.no_grad():
            for x in batches:
                bare.forward_bare(x)
        sync()
        return time.perf_counter() - start

    run_path(), run_bare()  # warm-up
    timings = [(run_path(), run_bare()) for _ in range(args.repeats)]
    path_s = statistics.median(p for p, _ in timings)
    bare_s = statistics.median(b for _, b in timings)
    print(
        f"extraction on {cuda}, batch {args.batch_size}, median of {args.repeats}: "
        f"path {args.n / path_s:.0f} img/s, bare forward {args.n / bare_s:.0f} img/s, "
        f"ratio {bare_s / path_s:.2f}"
    )

    cpu_store = exp.feature_store("shapes", "effnet", "original") + ".cpu"
    t0 = time.perf_counter()
    cores = len(os.sched_getaffinity(0))
    features.extract(data_path, cpu_store, spec, "cpu", 256, cores, False)
    print(
        f"extraction on the CPU ({cores} threads): {args.n / (time.perf_counter() - t0):.0f} img/s"
    )
    gpu_feats = training.read_features(gpu_store, spec)
    cpu_feats = training.read_features(cpu_store, spec)
    for layer in EFFNET["layers"]:
        g, c = gpu_feats[layer].astype(np.float32), cpu_feats[layer].astype(np.float32)
        corr = np.corrcoef(g.ravel(), c.ravel())[0, 1]
        rel = np.abs(g - c).mean() / (np.abs(c).mean() + 1e-12)
        print(f"  {layer:<10} GPU (bf16) vs CPU features: corr {corr:.5f}, mean rel diff {rel:.4f}")

    # the store writer alone on these features: the codec before (zstd 3, one thread)
    # against the store's now (zstd 1), one thread and one per core (benchmarks/writer.py)
    import writer

    for name, threads in (("zstd 3 (before)", 1), ("zstd 1 (the store's)", 1)) + (
        ("zstd 1 (the store's)", cores),
    ):
        rate, size = writer.write(gpu_feats, writer.CODECS[name], threads, root)
        print(f"  writer alone, {name}, {threads} threads: {rate:.0f} img/s, {size:.0f} B/img")

    # probes: CUDA against CPU, one run and ten vectorised
    labels, n_classes = training.read_labels(data_path, exp.data_spec("shapes"))
    split = splits.stratified_split(labels, 0.15, 0.2, 0, "shapes")
    config = probes.ProbeConfig.from_spec(exp.probe_spec("linear"))
    test = split == splits.TEST

    def accuracy(heads):
        return {
            (h.layer, h.run): metrics.classification_metrics(labels[test], h.test_proba)["accuracy"]
            for h in heads
        }

    heads, seconds = probes.train(gpu_feats, labels, split, n_classes, config, 0, device=cuda)
    _, seconds10 = probes.train(
        gpu_feats, labels, split, n_classes, config, list(range(10)), device=cuda
    )
    print(
        f"probes on {cuda}: one run {seconds:.2f} s, ten vectorised runs {seconds10:.2f} s "
        f"({seconds10 / 10:.2f} s per run)"
    )
    cores = len(os.sched_getaffinity(0))
    devices.set_cpu_threads(cores)
    cpu_heads, cpu_seconds = probes.train(
        gpu_feats, labels, split, n_classes, config, 0, device=torch.device("cpu")
    )
    print(f"probes on the CPU ({cores} threads): one run {cpu_seconds:.2f} s")
    results = {"cuda": accuracy(heads), "cpu": accuracy(cpu_heads)}
    diffs = [abs(results["cuda"][k] - results["cpu"][k]) for k in results["cpu"]]
    print(
        f"test accuracy, CUDA vs CPU on the same features, run 0: max abs diff "
        f"{max(diffs):.4f} over {len(diffs)} layers"
    )

    # host memory of GPU jobs, each in its own process
    for kind in ("features", "train"):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--stage",
                kind,
                "--root",
                root,
                "--n",
                str(args.n),
                "--batch-size",
                str(args.batch_size),
                "--device",
                args.device,
            ],
            capture_output=True,
            text=True,
        )
        if out.returncode:
            print(f"{kind} job failed:\n{out.stderr[-2000:]}")
            continue
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        if kind == "features":
            asked = resources.features_mem_mb(spec, args.batch_size)
        else:
            asked = resources.train_mem_mb(exp.data_spec("shapes"), data_path, gpu_store)
        print(
            f"{kind} job on the GPU: peak RSS {figures['peak_mb']:.0f} MB in "
            f"{figures['seconds']:.1f} s; mem_mb it would ask SLURM for: {asked}"
        )
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(lock_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
