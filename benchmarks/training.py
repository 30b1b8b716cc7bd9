"""Probe training: one train job's work against scikit-learn, and its fixed cost.

Builds one real feature store (synthetic shapes, pretrained EfficientNet-Lite0, the
default config's 8 layers) in a temporary directory, then prints:

1. seconds to train every layer's probe of that store for one run (the batched heads of
   `fitting.train`, the default linear probe) against scikit-learn's LogisticRegression
   fitted layer by layer on the same standardised features, with test accuracies;
2. the fixed cost of one train job: a fresh process that does exactly what the train
   script does (imports, store reads, training, metrics, csv), its wall time minus its
   training time, against a bare `python -c "import torch"`;
3. aten operators dispatched per training step by the static engine (CUDA's), linear and
   MLP, ten runs with their own splits, on random features of the 8 layers' widths: on a
   GPU each is about one kernel, and a step of small matmuls is bound by how many it runs
   (benchmarks/README.md, `gpu.py`). `--baseline DIR` (an older commit's `src/`, e.g.
   `git archive 1d61d91 src | tar -x -C .baseline`) counts its ops too, in a child process.

Repeats are interleaved and medians reported (this machine's timings drift 10-20%).

    .venv/bin/python benchmarks/training.py                  # n=2000, 3 repeats
    .venv/bin/python benchmarks/training.py --n 10000 --repeats 5
    .venv/bin/python benchmarks/training.py --ops-only --baseline .baseline/src
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
from pathlib import Path

import numpy as np
from torch.utils._python_dispatch import TorchDispatchMode

from visual_ablation.data import preparation, splits
from visual_ablation.features import extraction, feature_store
from visual_ablation.plan.config import resolve
from visual_ablation.plumbing import devices
from visual_ablation.probes import fitting, metrics, stacking, training

# the default config's layers and EfficientNet-Lite0's pooled widths at them
LAYER_WIDTHS = {
    "stem": 32,
    "blocks.1": 24,
    "blocks.3": 40,
    "blocks.5": 80,
    "blocks.8": 112,
    "blocks.11": 192,
    "blocks.15": 320,
    "head": 1280,
}
LAYERS = list(LAYER_WIDTHS)
# aten operators that run no kernel: views, allocations, metadata
NO_KERNEL = frozenset(
    "view _unsafe_view expand unsqueeze squeeze t transpose permute slice select alias "
    "as_strided detach _reshape_alias lift_fresh empty empty_like empty_strided new_empty "
    "unbind".split()
)
SRC = str(Path(__file__).resolve().parents[1] / "src")

JOB = """
import json, sys, time
sys.path.insert(0, {src!r})
from visual_ablation.probes import training
args = json.loads({args!r})
rows, predictions, _ = training.train_store(**args["job"])
run_files.write_predictions(predictions, args["out"] + ".predictions.npz")
run_files.write_csv(rows, args["out"])
print(json.dumps({{"train_seconds": rows[0]["train_seconds"]}}))
"""


class OpCounter(TorchDispatchMode):
    """Counts the aten operators that run a kernel, by name."""

    def __init__(self):
        super().__init__()
        self.counts: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in NO_KERNEL:
            self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def ops_per_step(hidden: int, n: int, runs: int = 10) -> dict:
    """aten operators per step of the static engine with every head live (patience never
    runs out) and CUDA's per-run values, from one epoch's difference (3 epochs minus 2),
    so that each step also carries its share of the epoch's validation and bookkeeping,
    as gpu.py's kernels per step do."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 10
    feats = {k: rng.normal(size=(n, w)).astype(np.float32) for k, w in LAYER_WIDTHS.items()}
    own = splits.run_splits(
        labels, {"val": 0.15, "test": 0.2, "seed": 0, "resample": True}, list(range(runs)), "o"
    )

    def counts(epochs: int) -> dict[str, int]:
        config = stacking.ProbeConfig(hidden=hidden, max_epochs=epochs, patience=10_000)
        with OpCounter() as counter:
            every = list(range(runs))
            fitting.train(
                feats, labels, own, 10, config, every, engine="static", per_run_values=True
            )
        return counter.counts

    two, three = counts(2), counts(3)
    steps = -(-int((own[0] == splits.TRAIN).sum()) // stacking.ProbeConfig().batch_size)
    per_step = {k: (three[k] - two.get(k, 0)) / steps for k in three}
    top = sorted(per_step.items(), key=lambda kv: -kv[1])
    return {
        "ops_per_step": round(sum(per_step.values()), 1),
        "steps_per_epoch": steps,
        "top": [(k, round(v, 1)) for k, v in top[:8]],
    }


def count_ops(n: int) -> dict:
    return {probe: ops_per_step(hidden, n) for probe, hidden in (("linear", 0), ("mlp", 256))}


def print_ops(name: str, figures: dict) -> None:
    for probe, f in figures.items():
        top = ", ".join(f"{k} {v:g}" for k, v in f["top"])
        print(f"  {name:9s}{probe:8s}{f['ops_per_step']:8.1f}   ({top})")


def timed_process(code: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="synthetic-shapes images")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--probe", default="linear", choices=["linear", "mlp"])
    parser.add_argument("--baseline", help="an older commit's src/: count its ops too")
    parser.add_argument("--ops-only", action="store_true", help="only the op counts")
    parser.add_argument("--count-ops", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count_ops:  # the child that counts another src's ops
        print(json.dumps(count_ops(args.n)))
        return
    print(
        "static engine (CUDA's), aten ops per step, ten runs with their own splits, "
        f"{len(LAYERS)} layers ({sum(LAYER_WIDTHS.values())} values), n={args.n}:"
    )
    if args.baseline:
        env = {**os.environ, "PYTHONPATH": os.path.abspath(args.baseline)}
        cmd = [sys.executable, __file__, "--count-ops", "--n", str(args.n)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        print_ops("baseline", json.loads(out.splitlines()[-1]))
    print_ops("this", count_ops(args.n))
    if args.ops_only:
        return

    root = tempfile.mkdtemp(prefix="va-bench-train-")  # removed at the end
    hidden = 0 if args.probe == "linear" else 256
    exp = resolve(
        {
            "results_dir": root,
            "datasets": {"shapes": {"source": "synthetic-shapes", "n": args.n}},
            "representations": ["original"],
            "backbones": {
                "effnet": {"model": "efficientnet_lite0", "weights": "pretrained", "layers": LAYERS}
            },
            "split": {"val": 0.15, "test": 0.2, "seed": 0},
            "probes": {args.probe: {"hidden": hidden}},
        }
    )
    try:
        feature_path = exp.feature_store("shapes", "effnet", "original")
        feature_spec = exp.feature_spec("shapes", "effnet", "original")
        data_spec = exp.data_spec("shapes")
        preparation.prepare(data_spec, exp.data_store("shapes"), progress=False)
        devices.set_cpu_threads(2)
        extraction.extract(
            exp.data_store("shapes"), feature_path, feature_spec, device="cpu", progress=False
        )
        devices.set_cpu_threads(1)  # a train job's default threads
        feats = feature_store.read(feature_path, feature_spec)
        labels, n_classes, *_ = training.read_labels(exp.data_store("shapes"), data_spec)
        split = splits.stratified_split(labels, 0.15, 0.2, 0, "shapes")
        config = stacking.ProbeConfig.from_spec(exp.probe_spec(args.probe))
        train, test = split == splits.TRAIN, split == splits.TEST

        from sklearn.linear_model import LogisticRegression

        def ours() -> tuple[float, list[float]]:
            heads, seconds = fitting.train(feats, labels, split, n_classes, config, runs=0)
            return seconds, [
                metrics.classification_metrics(labels[test], h.test_proba)["accuracy"]
                for h in heads
            ]

        def ours_ten_runs() -> float:
            """runs_per_job=10: ten runs' heads vectorised in one call, seconds per run."""
            _, seconds = fitting.train(
                feats, labels, split, n_classes, config, runs=list(range(10))
            )
            return seconds / 10

        own_splits = splits.run_splits(
            labels, {**exp.split, "resample": True}, list(range(10)), "s"
        )

        def ours_ten_resampled() -> float:
            """The same, each run with its own split (split.resample): standardised per run
            as minibatches are gathered; seconds per run."""
            _, seconds = fitting.train(
                feats, labels, own_splits, n_classes, config, runs=list(range(10))
            )
            return seconds / 10

        def sklearn() -> tuple[float, list[float]]:
            seconds, accuracy = 0.0, []
            for values in feats.values():
                z = stacking.standardise(values, train)
                t0 = time.perf_counter()
                model = LogisticRegression(max_iter=2000).fit(z[train], labels[train])
                seconds += time.perf_counter() - t0
                accuracy.append(model.score(z[test], labels[test]))
            return seconds, accuracy

        job = {
            "job": {
                "feature_path": feature_path,
                "data_path": exp.data_store("shapes"),
                "feature_spec": feature_spec,
                "data_spec": data_spec,
                "probe_spec": exp.probe_spec(args.probe),
                "split_spec": exp.split,
                "runs": 0,
                "device": "cpu",
                "threads": 1,
            },
            "out": str(Path(root) / "run0.csv"),
        }
        job_code = JOB.format(src=SRC, args=json.dumps(job))
        times: dict[str, list[float]] = {
            k: [] for k in ("ours", "ours10", "ours10r", "sklearn", "import", "job", "job_train")
        }
        for _ in range(args.repeats):
            seconds, our_acc = ours()
            times["ours"].append(seconds)
            times["ours10"].append(ours_ten_runs())
            times["ours10r"].append(ours_ten_resampled())
            seconds, sk_acc = sklearn()
            times["sklearn"].append(seconds)
            times["import"].append(timed_process("import torch")[0])
            wall, out = timed_process(job_code)
            times["job"].append(wall)
            times["job_train"].append(json.loads(out.splitlines()[-1])["train_seconds"])
        med = {k: statistics.median(v) for k, v in times.items()}
        fixed = statistics.median(
            j - t for j, t in zip(times["job"], times["job_train"], strict=True)
        )

        n_train = int(train.sum())
        print(
            f"store: shapes n={args.n} ({n_train} train), effnet {len(LAYERS)} layers, "
            f"{sum(v.shape[1] for v in feats.values())} dims; {args.probe} probe; "
            f"median of {args.repeats}, 1 thread"
        )
        print(f"{'':38s}{'seconds':>10s}{'ratio':>8s}")
        print(f"{'train all layers, one run (ours)':38s}{med['ours']:10.2f}{1.0:8.2f}")
        print(
            f"{'  per run, 10 runs vectorised':38s}{med['ours10']:10.2f}"
            f"{med['ours10'] / med['ours']:8.2f}"
        )
        print(
            f"{'  per run, 10 runs, 10 splits':38s}{med['ours10r']:10.2f}"
            f"{med['ours10r'] / med['ours']:8.2f}"
        )
        print(
            f"{'sklearn LogisticRegression per layer':38s}{med['sklearn']:10.2f}"
            f"{med['sklearn'] / med['ours']:8.2f}"
        )
        bare = "bare python -c 'import torch'"
        print(f"{bare:38s}{med['import']:10.2f}{1.0:8.2f}")
        print(
            f"{'train job, whole process':38s}{med['job']:10.2f}{med['job'] / med['import']:8.2f}"
        )
        print(f"{'  of which training':38s}{med['job_train']:10.2f}")
        print(
            f"{'  fixed cost (start, imports, reads)':38s}{fixed:10.2f}{fixed / med['import']:8.2f}"
        )
        print(f"fixed cost / training time: {fixed / med['job_train']:.2f}")
        print("test accuracy per layer (ours vs sklearn):")
        for layer, a, b in zip(feats, our_acc, sk_acc, strict=True):
            print(f"  {layer:10s} {a:.4f}  {b:.4f}")
        print(f"  {'mean':10s} {np.mean(our_acc):.4f}  {np.mean(sk_acc):.4f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
