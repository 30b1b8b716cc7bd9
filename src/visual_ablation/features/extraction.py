"""The extraction loop: data store -> representation -> backbone -> feature store.

Three things overlap, so that the device never waits on the disk:
- a reader thread decodes the next span of contiguous rows (several data-store chunks;
  on a GPU it also copies them into pinned memory) while the current one is computed
  (`prefetched_batches`);
- the device converts, transforms and runs the backbone on exact `batch_size` batches,
  every requested layer out of one forward pass (autocast bf16 and channels-last on GPU);
- a writer thread casts, compresses and writes the pooled float16 features of one batch
  while the next is computed (`BackgroundWriter`); on a GPU it also waits for the copy
  back, so the main thread never waits for the device and keeps it fed.
zarr's codecs release the GIL, so the threads run in parallel with torch's.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from visual_ablation.data import data_store
from visual_ablation.features import backbones, batchnorm, feature_store, representations
from visual_ablation.features.extractor import LayerExtractor
from visual_ablation.plumbing import devices, store

log = logging.getLogger(__name__)
SPAN_CHUNKS = 4  # data-store chunks per read: large contiguous reads


def prefetched_batches(
    images, batch_size: int, pin: bool = False
) -> Iterator[tuple[int, np.ndarray | torch.Tensor]]:
    """(start, uint8 [b, h, w, 3]) batches of exactly `batch_size` rows (the last may be
    shorter), read in spans of whole batches of at least SPAN_CHUNKS chunks; the next span
    is read in a background thread while this one's batches are used. `pin` (for a GPU):
    that thread also copies each span into pinned memory and batches are tensors, so the
    thread that feeds the GPU does not spend its time copying images on the host."""
    n = images.shape[0]
    span = batch_size * max(1, math.ceil(SPAN_CHUNKS * images.chunks[0] / batch_size))

    def read(rows: slice) -> np.ndarray | torch.Tensor:
        block = images[rows]
        return torch.from_numpy(block).pin_memory() if pin else block

    with ThreadPoolExecutor(1, thread_name_prefix="va-read") as reader:
        pending = reader.submit(read, slice(0, span))
        for begin in range(0, n, span):
            block = pending.result()
            if begin + span < n:
                pending = reader.submit(read, slice(begin + span, begin + 2 * span))
            for offset in range(0, len(block), batch_size):
                yield begin + offset, block[offset : offset + batch_size]


def to_tensor(block: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [0, 1] on `device` (converted there, not on the host;
    from pinned memory on a GPU, so the copy is asynchronous)."""
    x = block if isinstance(block, torch.Tensor) else torch.from_numpy(block)
    if device.type == "cuda" and not x.is_pinned():
        x = x.pin_memory()
    x = x.to(device, non_blocking=True)
    return x.permute(0, 3, 1, 2).float().div_(255.0)


class Pipeline:
    """Representation + backbone for one feature spec, on one device."""

    def __init__(self, spec: dict[str, Any], device: torch.device):
        rep = spec["representation"]
        self.transform = representations.build(rep["kind"], rep["params"])
        self.extractor = LayerExtractor(spec["backbone"], device)
        self.device = device

    def autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    @torch.no_grad()
    def __call__(self, block: np.ndarray | torch.Tensor, start: int) -> dict[str, torch.Tensor]:
        x = to_tensor(block, self.device)
        index = torch.arange(start, start + len(block))
        x = self.transform(x, index)
        with self.autocast():
            return self.extractor(x)


def all_finite_float16(values: np.ndarray) -> bool:
    """No inf or NaN in float16 `values`: those are the values with every exponent bit
    set. Four times as fast as np.isfinite, which converts each value to float32 first."""
    return not ((values.view(np.uint16) & 0x7C00) == 0x7C00).any()


# a layer with more of its nonzero stored values below float16's normal range (6.1e-5,
# where precision falls off to nothing) is refused: its features are lost to the store
MAX_SUBNORMAL_SHARE = 0.01


class StoreCheck:
    """What a layer's stored float16 features must be to be measured: not constant across
    images (a probe on them reports the majority class), not lost below float16's normal
    range (an untrained network's deep layers without BatchNorm statistics: batchnorm.py).
    Counted batch by batch in the writer thread; `refusals` at the end."""

    def __init__(self):
        self.first: dict[str, np.ndarray] = {}
        self.varies: dict[str, bool] = {}
        self.nonzero: dict[str, int] = {}
        self.subnormal: dict[str, int] = {}

    def add(self, layer: str, values: np.ndarray) -> None:
        if layer not in self.first:
            self.first[layer] = values[0].copy()
            self.varies[layer] = False
            self.nonzero[layer] = self.subnormal[layer] = 0
        if not self.varies[layer]:
            self.varies[layer] = bool((values != self.first[layer]).any())
        bits = values.view(np.uint16) & 0x7FFF  # magnitude bits
        self.nonzero[layer] += int(np.count_nonzero(bits))
        self.subnormal[layer] += int(np.count_nonzero((bits > 0) & (bits < 0x0400)))

    def refusals(self) -> list[str]:
        out = []
        for layer, varies in self.varies.items():
            if not varies:
                out.append(f"layer {layer}: the same features for every image")
            elif self.subnormal[layer] > MAX_SUBNORMAL_SHARE * self.nonzero[layer]:
                share = self.subnormal[layer] / self.nonzero[layer]
                out.append(
                    f"layer {layer}: {share:.0%} of its nonzero features are below float16's "
                    "normal range (|v| < 6.1e-5) and lose their precision in the store"
                )
        return out


class FeatureStoreError(ValueError):
    """A layer's features that the store cannot keep as a measurement."""


class BackgroundWriter:
    """Writes each batch's features into the store in a background thread, in order,
    with at most `depth` batches in flight; the first error is raised in the caller.
    Full chunks are compressed and written by `compressors` threads in parallel (one
    thread compressing kept up with 14k images/s at zstd level 3: a GPU forward runs at
    75k; benchmarks/writer.py)."""

    def __init__(self, group, n: int, depth: int = 2, compressors: int = 2):
        self.group, self.n = group, n
        self.writers: dict[str, store.ChunkedWriter] = {}
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="va-write")
        self.compressors = ThreadPoolExecutor(compressors, thread_name_prefix="va-compress")
        # per array: the largest layer's chunks keep every compressing thread busy
        self.chunks_in_flight = compressors + 1
        self.in_flight: deque[Future] = deque()
        self.depth = depth
        self.check = StoreCheck()

    def submit(self, start: int, feats: dict[str, torch.Tensor]) -> None:
        # cast on the device (half the bytes to copy back). On a GPU the copy back is only
        # queued (into pinned memory, behind this batch's forward on the stream; the next
        # batch's kernels come after it) and the writer thread waits for it: this thread
        # goes on to launch the next batch instead of waiting for this one's forward
        host = {
            layer: v.to(torch.float16).to("cpu", non_blocking=True) for layer, v in feats.items()
        }
        copied = None
        if any(v.is_cuda for v in feats.values()):
            copied = torch.cuda.Event()
            copied.record()
        while len(self.in_flight) >= self.depth:
            self.in_flight.popleft().result()
        self.in_flight.append(self.pool.submit(self._write, start, host, copied))

    def _write(self, start: int, tensors: dict[str, torch.Tensor], copied) -> None:
        if copied is not None:
            copied.synchronize()  # releases the GIL while the GPU catches up
        host = {layer: t.numpy() for layer, t in tensors.items()}
        for layer, values in host.items():
            if not all_finite_float16(values):
                raise FloatingPointError(
                    f"layer {layer}: non-finite features (overflow in float16 or NaN from "
                    f"the backbone) at images {start}..{start + len(values) - 1}"
                )
            self.check.add(layer, values)
            if layer not in self.writers:
                array = feature_store.create_layer(self.group, layer, self.n, values.shape[1])
                self.writers[layer] = store.ChunkedWriter(
                    array, self.compressors, depth=self.chunks_in_flight
                )
            self.writers[layer].append(values)

    def abort(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.compressors.shutdown(wait=True, cancel_futures=True)

    def close(self) -> dict[str, int]:
        """Wait for every write, flush the last rows; {layer: dim}."""
        try:
            while self.in_flight:
                self.in_flight.popleft().result()
            self.pool.shutdown(wait=True, cancel_futures=True)
            for writer in self.writers.values():
                writer.flush()
            for writer in self.writers.values():
                writer.close()
            refused = self.check.refusals()
            if refused:
                raise FeatureStoreError(
                    "features that a probe cannot measure (the store is not kept):\n  "
                    + "\n  ".join(refused)
                    + "\nan untrained network needs BatchNorm statistics (weights: none "
                    "re-estimates them); otherwise check the layer's activations (python -m "
                    "visual_ablation.features.layers lists the layers) or choose others"
                )
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.compressors.shutdown(wait=True, cancel_futures=True)
        return {layer: int(w.array.shape[1]) for layer, w in self.writers.items()}


def extract(
    data_path: str,
    out_path: str,
    spec: dict[str, Any],
    device: str = "auto",
    batch_size: int = 256,
    threads: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Compute the feature store `out_path` defined by `spec` from the data store.

    The data store is checked against `spec["dataset"]`. Features are computed for every
    image: the split is drawn later, by each train job, so a new split keeps them valid.
    """
    devices.set_cpu_threads(threads)
    torch_device = devices.choose_device(device)
    with store.locked(out_path):
        existing = store.built_meanwhile(out_path, spec)
        if existing is not None:
            return existing.attrs.asdict()
        with store.reading(data_path, spec["dataset"]) as data:
            return _extract(data, out_path, spec, torch_device, batch_size, threads, progress)


def _extract(data, out_path, spec, torch_device, batch_size, threads, progress) -> dict[str, Any]:
    from tqdm import tqdm

    images = data_store.images(data)
    n = images.shape[0]
    pipeline = Pipeline(spec, torch_device)
    calibration = spec["backbone"].get("batchnorm_statistics")
    calibrated = 0
    if calibration:
        calibrated = batchnorm.recalibrate(pipeline.extractor, data, torch_device, calibration)
    layers = pipeline.extractor.layers
    log.info(
        "extracting %d images, representation %s, backbone %s on %s; layers: %s",
        n,
        spec["representation"]["name"],
        spec["backbone"]["name"],
        torch_device,
        ", ".join(layers),
    )
    t0 = time.perf_counter()
    with store.writing(out_path, spec) as group:
        # the job's cores compress chunks while the device computes the next batches
        writer = BackgroundWriter(group, n, compressors=max(1, threads))
        bar = tqdm(total=n, desc="features", unit="img", disable=not progress, mininterval=2.0)
        try:
            for start, batch in prefetched_batches(images, batch_size, torch_device.type == "cuda"):
                writer.submit(start, pipeline(batch, start))
                bar.update(len(batch))
        except BaseException:
            writer.abort()  # the store is discarded: flush nothing
            raise
        finally:
            bar.close()
        dims = writer.close()
        seconds = time.perf_counter() - t0
        summary = feature_store.describe(
            group,
            layers,
            dims,
            n,
            device=str(torch_device),
            weights_identity=backbones.weights_identity(spec["backbone"]),
            normalization=pipeline.extractor.normalization,
            batchnorm_calibration_images=calibrated,
            seconds=round(seconds, 3),
        )
    log.info("wrote %s: %d images in %.1f s (%.0f img/s)", out_path, n, seconds, n / seconds)
    return summary
