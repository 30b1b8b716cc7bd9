"""Extraction throughput of the `features` code path against a bare forward pass.

Both run the same backbone on the same batches of the same data store in one process;
two stages of the path are also timed alone: reading the data store, and the whole path
with the forward replaced by a stand-in that returns one real batch's features (what
the host side alone can feed: on a GPU, the path cannot pass it);
repeats are interleaved (path, bare, path, bare, ...) and medians reported, since this
shared machine's timings drift 10-20% between runs. Also prints the feature store's bytes
per image.

    .venv/bin/python benchmarks/extraction.py            # shapes n=2000, default effnet
    .venv/bin/python benchmarks/extraction.py --n 5000 --repeats 5 --device cuda
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import torch
import zarr

from visual_ablation.data import preparation
from visual_ablation.features import extraction
from visual_ablation.features.extractor import LayerExtractor
from visual_ablation.plan.config import resolve
from visual_ablation.plumbing import devices, store

DEFAULT_LAYERS = [
    "stem",
    "blocks.1",
    "blocks.3",
    "blocks.5",
    "blocks.8",
    "blocks.11",
    "blocks.15",
    "head",
]


def time_reading(data_path: str, batch_size: int) -> float:
    """Seconds to read every batch of a data store as a feature job does."""
    start = time.perf_counter()
    for _ in extraction.prefetched_batches(zarr.open_group(data_path)["images"], batch_size):
        pass
    return time.perf_counter() - start


@contextmanager
def stand_in_forward(extractor, batch: torch.Tensor) -> Iterator[None]:
    """Within it, every LayerExtractor returns `extractor`'s features of `batch` (cut to
    the batch asked for) instead of running its net: the features path then times its
    read, conversion, representation and writer as they are, the most the host can feed."""
    with (
        torch.no_grad(),
        torch.autocast("cuda", dtype=torch.bfloat16, enabled=batch.is_cuda),
    ):
        canned = extractor(batch)

    def stand_in(self, x):
        return {layer: values[: len(x)] for layer, values in canned.items()}

    with mock.patch.object(LayerExtractor, "__call__", stand_in):
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="synthetic-shapes images")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    devices.set_cpu_threads(args.threads)
    device = devices.choose_device(args.device)
    root = tempfile.mkdtemp(prefix="va-bench-")  # removed at the end
    exp = resolve(
        {
            "results_dir": root,
            "datasets": {
                "shapes": {"source": "synthetic-shapes", "n": args.n, "image_size": args.image_size}
            },
            "representations": ["original", "phase_scramble"],
            "backbones": {
                "effnet": {
                    "model": "efficientnet_lite0",
                    "weights": "pretrained",
                    "layers": DEFAULT_LAYERS,
                    "image_size": args.image_size,
                },
                "pixels": {"model": "pixels", "image_size": 16},
            },
            "split": {"val": 0.15, "test": 0.2, "seed": 0},
        }
    )
    data_path = exp.data_store("shapes")
    t0 = time.perf_counter()
    preparation.prepare(exp.data_spec("shapes"), data_path, progress=False)
    print(
        f"data store: {args.n} images at {args.image_size}px in "
        f"{time.perf_counter() - t0:.1f} s, "
        f"{store.store_bytes(data_path) / args.n:.0f} bytes/image"
    )

    # the bare reference: the same images, already decoded and on the device
    images = zarr.open_group(data_path)["images"][:]
    batches = [
        extraction.to_tensor(images[i : i + args.batch_size], device)
        for i in range(0, len(images), args.batch_size)
    ]
    bare_net = LayerExtractor(exp.backbones["effnet"], device)

    def run_path() -> float:
        # a complete store of this spec would be kept as it is: time a fresh build
        shutil.rmtree(exp.feature_store("shapes", "effnet", "original"), ignore_errors=True)
        start = time.perf_counter()
        extraction.extract(
            data_path,
            exp.feature_store("shapes", "effnet", "original"),
            exp.feature_spec("shapes", "effnet", "original"),
            device=str(device),
            batch_size=args.batch_size,
            threads=args.threads,
            progress=False,
        )
        return time.perf_counter() - start

    def run_bare() -> float:
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            for x in batches:
                bare_net.forward_bare(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    def run_host() -> float:
        with stand_in_forward(bare_net, batches[0]):
            return run_path()

    runs = {
        "path": run_path,
        "bare": run_bare,
        "read": lambda: time_reading(data_path, args.batch_size),
        "host": run_host,
    }
    for run in runs.values():
        run()  # warm-up: allocator, kernels, page cache
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            times[name].append(run())
    path_s, bare_s, read_s, host_s = (statistics.median(times[name]) for name in runs)

    print(
        f"\nbackbone efficientnet_lite0 (pretrained), {len(DEFAULT_LAYERS)} layers, "
        f"{args.image_size}px, batch {args.batch_size}, device {device}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats} interleaved repeats"
    )
    print(f"{'measure':<44}{'images/s':>12}{'seconds':>10}")
    print(
        f"{'features path (read+transform+fwd+write)':<44}{args.n / path_s:>12.0f}{path_s:>10.2f}"
    )
    print(f"{'bare forward (full net, tensors ready)':<44}{args.n / bare_s:>12.0f}{bare_s:>10.2f}")
    print(f"{'ratio path / bare (throughput)':<44}{bare_s / path_s:>12.2f}")
    print("stages of the path alone:")
    print(f"{'  read (data store -> uint8 batches)':<44}{args.n / read_s:>12.0f}{read_s:>10.2f}")
    print(f"{'  host: path with a stand-in forward':<44}{args.n / host_s:>12.0f}{host_s:>10.2f}")

    print(f"\n{'store':<36}{'bytes/image':>14}{'dims':>8}{'fp16 raw':>10}")
    for backbone, rep in (
        ("effnet", "original"),
        ("effnet", "phase_scramble"),
        ("pixels", "original"),
    ):
        path = exp.feature_store("shapes", backbone, rep)
        if backbone != "effnet" or rep != "original":
            extraction.extract(
                data_path,
                path,
                exp.feature_spec("shapes", backbone, rep),
                device=str(device),
                batch_size=args.batch_size,
                threads=args.threads,
                progress=False,
            )
        dims = sum(zarr.open_group(path).attrs["dims"].values())
        print(
            f"{backbone + '/' + rep:<36}{store.store_bytes(path) / args.n:>14.0f}{dims:>8}"
            f"{2 * dims:>10}"
        )
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
