"""The store codecs. First the feature-store writer alone: images/s of compressing and
writing real pooled features (EfficientNet-Lite0 pretrained, the default config's 8
layers, 2,080 float16 values per image), per codec, with one compressing thread and with
one per core (chunks of all layers compressed in parallel, as a feature job does), the
same through a feature job's own writer, and the bytes each image takes on disk. On a
GPU the forward's rate (benchmarks/README.md, `gpu.py`) is what the writer has to keep
up with. Then the data store's images: read and write MB/s and
the compression ratio per codec, on the synthetic shapes, digits, Fashion-MNIST (if
installed) and real ImageNet photos.

    .venv/bin/python benchmarks/writer.py                 # n = 20000 on this machine
    .venv/bin/python benchmarks/writer.py --n 50000 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import yaml
import zarr
from common import REPO
from zarr.codecs import BloscCodec, Crc32cCodec

from visual_ablation.data import preparation
from visual_ablation.features import extraction, feature_store
from visual_ablation.plan.config import resolve
from visual_ablation.plumbing import devices, store

with open(os.path.join(REPO, "config", "config.yaml")) as f:
    EFFNET = yaml.safe_load(f)["backbones"]["effnet"]
STORE_ZSTD = [BloscCodec(**store.CODECS["zstd"])]  # the stores' own settings
STORE_LZ4 = [BloscCodec(**store.CODECS["lz4"])]
CODECS = {
    "zstd 1 (the store's)": STORE_ZSTD,
    "zstd 1, empty-chunk scan": STORE_ZSTD,
    "zstd 3 (before)": [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")],
    "lz4": STORE_LZ4,
    "no compression": [],
}
IMAGE_CODECS = {
    "zstd 1 (before)": STORE_ZSTD,
    "lz4 (the data store's)": STORE_LZ4,
    "no compression": [],
}
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
BATCH = 512


def pooled_features(root: str, n: int) -> dict[str, np.ndarray]:
    exp = resolve(
        {
            "results_dir": root,
            "datasets": {"shapes": {"source": "synthetic-shapes", "n": n}},
            "representations": ["original"],
            "backbones": {"effnet": EFFNET},
        }
    )
    preparation.prepare(exp.data_spec("shapes"), exp.data_store("shapes"), progress=False)
    spec = exp.feature_spec("shapes", "effnet", "original")
    path = exp.feature_store("shapes", "effnet", "original")
    extraction.extract(exp.data_store("shapes"), path, spec, device="cpu", progress=False)
    return feature_store.read(path, spec)


def bench_array(group, name: str, values: np.ndarray, codec: list, scan: bool = False):
    """An array shaped and chunked as store.create_array makes it, with `codec` (+ crc32c);
    `scan`: zarr's default, comparing each chunk with the fill value to leave empty ones
    out (the store's before)."""
    rows = store.rows_per_chunk(values[0].nbytes)
    return group.create_array(
        name,
        shape=values.shape,
        chunks=(min(len(values), rows), *values.shape[1:]),
        dtype=values.dtype,
        compressors=[*codec, Crc32cCodec()],
        fill_value=0,
        config={"write_empty_chunks": not scan},
    )


def write(
    feats: dict[str, np.ndarray], codec: list, threads: int, root: str, scan: bool = False
) -> tuple[float, float]:
    """img/s and bytes/img of writing every layer through ChunkedWriter with `threads`
    compressing threads, the batches fed from one thread, as a feature job does (up to
    threads + 1 chunks of an array in flight; every array's last chunk started before
    any is waited for); `scan` as in bench_array."""
    out = tempfile.mkdtemp(dir=root)
    group = zarr.open_group(out, mode="w")
    n = len(next(iter(feats.values())))
    pool = ThreadPoolExecutor(threads)
    writers = {}
    for layer, values in feats.items():
        array = bench_array(group, layer, values, codec, scan)
        writers[layer] = store.ChunkedWriter(array, pool, depth=threads + 1)
    t0 = time.perf_counter()
    for start in range(0, n, BATCH):
        for layer, values in feats.items():
            writers[layer].append(values[start : start + BATCH])
    for writer in writers.values():
        writer.flush()
    for writer in writers.values():
        writer.close()
    seconds = time.perf_counter() - t0
    pool.shutdown()
    size = store.store_bytes(out)
    shutil.rmtree(out)
    return n / seconds, size / n


JOB_WRITER = "feature job's writer (zstd 1)"


def write_as_a_job(feats: dict[str, np.ndarray], threads: int, root: str) -> tuple[float, float]:
    """The same through a feature job's BackgroundWriter: float16 tensors in, the
    finiteness check and the feeding in its writer thread, `threads` compressing."""
    out = os.path.join(tempfile.mkdtemp(dir=root), "store")
    n = len(next(iter(feats.values())))
    tensors = {layer: torch.from_numpy(values) for layer, values in feats.items()}
    with store.writing(out, {}) as group:
        t0 = time.perf_counter()
        writer = extraction.BackgroundWriter(group, n, compressors=threads)
        for start in range(0, n, BATCH):
            writer.submit(start, {k: v[start : start + BATCH] for k, v in tensors.items()})
        writer.close()
        seconds = time.perf_counter() - t0
    size = store.store_bytes(out)
    shutil.rmtree(os.path.dirname(out))
    return n / seconds, size / n


def image_sets(n: int, root: str) -> dict[str, np.ndarray]:
    """uint8 [n, h, w, 3] images as data stores hold them: the synthetic shapes at 64 px,
    sklearn's digits at 16 px, foolbox's 20 ImageNet photos at 160 px (repeated) and,
    when Debian's dataset-fashion-mnist is installed, Fashion-MNIST at 28 px."""
    from visual_ablation.data import preparation, reference_photos

    sets = {}
    for name, source, size in (
        ("shapes 64 px", "synthetic-shapes", 64),
        ("digits 16 px", "sklearn-digits", 16),
        ("fashion-mnist 28 px", "idx", 28),
    ):
        data_spec = {"source": source, "n": min(n, 1797) if source == "sklearn-digits" else n}
        if source == "idx":
            data_spec["path"] = FASHION_MNIST
            if not os.path.exists(FASHION_MNIST):
                continue
        exp = resolve(
            {
                "results_dir": os.path.join(root, "images"),
                "datasets": {"d": {**data_spec, "image_size": size}},
                "representations": ["original"],
                "backbones": {"pixels": {"model": "pixels"}},
            }
        )
        preparation.prepare(exp.data_spec("d"), exp.data_store("d"), progress=False)
        sets[name] = zarr.open_group(exp.data_store("d"))["images"][:]
        shutil.rmtree(os.path.join(root, "images"))
    photos, _ = reference_photos.photos(160)
    sets["ImageNet photos 160 px"] = np.resize(photos, (min(n, 2000), *photos.shape[1:]))
    return sets


def image_codecs(images: np.ndarray, root: str) -> dict[str, tuple[float, float, float]]:
    """Per codec: read MB/s (spans of 4 chunks, as a feature job reads), write MB/s and
    the compression ratio of a data store's image array."""
    out = {}
    for name, codec in IMAGE_CODECS.items():
        group = zarr.open_group(tempfile.mkdtemp(dir=root), mode="w")
        array = bench_array(group, "images", images, codec)
        rows = array.chunks[0]
        start = time.perf_counter()
        array[:] = images
        write_s = time.perf_counter() - start
        reads = []
        for _ in range(3):
            start = time.perf_counter()
            for begin in range(0, len(images), 4 * rows):
                array[begin : begin + 4 * rows]
            reads.append(time.perf_counter() - start)
        size = store.store_bytes(str(group.store.root))
        shutil.rmtree(str(group.store.root))
        mb = images.nbytes / 1e6
        out[name] = (mb / statistics.median(reads), mb / write_s, images.nbytes / size)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="synthetic-shapes images")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    devices.set_cpu_threads(cores)
    root = tempfile.mkdtemp(prefix="va-bench-writer-")
    try:
        feats = pooled_features(root, args.n)
        width = sum(v.shape[1] for v in feats.values())
        print(
            f"writer alone: {args.n} images x {len(feats)} layers ({width} float16 values, "
            f"{2 * width} bytes raw per image); median of {args.repeats}, {cores} cores"
        )
        print(
            f"{'codec (+ crc32c)':28s}{'1 thread img/s':>16s}{f'{cores} threads img/s':>18s}"
            f"{'bytes/img':>11s}"
        )
        runs = {name: ([], []) for name in [*CODECS, JOB_WRITER]}
        for _ in range(args.repeats):  # every row interleaved: this machine drifts
            for name, codec in CODECS.items():
                for threads, figures in zip((1, cores), runs[name], strict=True):
                    figures.append(write(feats, codec, threads, root, "scan" in name))
            for threads, figures in zip((1, cores), runs[JOB_WRITER], strict=True):
                figures.append(write_as_a_job(feats, threads, root))
        for name, (one, every) in runs.items():
            print(
                f"{name:28s}{statistics.median(r[0] for r in one):16.0f}"
                f"{statistics.median(r[0] for r in every):18.0f}{one[0][1]:11.0f}"
            )
        print(
            "\ndata-store images (what every feature job reads): read and write MB/s per "
            "codec (+ crc32c), compression ratio"
        )
        print(f"{'images':24s}{'codec':24s}{'read MB/s':>10s}{'write MB/s':>11s}{'ratio':>7s}")
        for name, images in image_sets(args.n, root).items():
            for codec, (read, write_, ratio) in image_codecs(images, root).items():
                print(f"{name:24s}{codec:24s}{read:10.0f}{write_:11.0f}{ratio:7.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
