"""The extraction loop: data store -> representation -> backbone -> feature store.

Images are read in whole data-store chunks (contiguous rows), converted and transformed
on the job's device in batches, and every requested layer comes out of one forward pass;
pooled features are written as float16, row-chunked, compressed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from visual_ablation import backbones, devices, representations, store

log = logging.getLogger(__name__)
FEATURE_DTYPE = np.float16


def image_blocks(images, block_rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(start, uint8 [b, h, w, 3]) blocks of contiguous rows, aligned to the store's chunks."""
    rows = block_rows or images.chunks[0]
    for start in range(0, images.shape[0], rows):
        yield start, images[start : start + rows]


def to_tensor(block: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [0, 1] on `device` (converted there, not on the host)."""
    x = torch.from_numpy(block).to(device, non_blocking=True)
    return x.permute(0, 3, 1, 2).float().div_(255.0)


class Pipeline:
    """Representation + backbone for one feature spec, on one device."""

    def __init__(self, spec: dict[str, Any], device: torch.device):
        rep = spec["representation"]
        self.transform = representations.build(rep["kind"], rep["params"])
        self.extractor = backbones.LayerExtractor(spec["backbone"], device)
        self.device = device

    def autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    @torch.no_grad()
    def __call__(self, block: np.ndarray, start: int) -> dict[str, torch.Tensor]:
        x = to_tensor(block, self.device)
        index = torch.arange(start, start + len(block))
        x = self.transform(x, index)
        with self.autocast():
            return self.extractor(x)


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

    The data store is checked against `spec["dataset"]`, which leaves out the split:
    features are computed for every image, so a new split keeps them valid.
    """
    from tqdm import tqdm

    devices.set_cpu_threads(threads)
    torch_device = devices.choose_device(device)
    data = store.open_checked(data_path, spec["dataset"], ignore=("split",))
    images = data["images"]
    n = images.shape[0]
    pipeline = Pipeline(spec, torch_device)
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
        writers: dict[str, store.ChunkedWriter] = {}
        bar = tqdm(total=n, desc="features", unit="img", disable=not progress, mininterval=2.0)
        for start, block in image_blocks(images):
            for offset in range(0, len(block), batch_size):
                batch = block[offset : offset + batch_size]
                feats = pipeline(batch, start + offset)
                for layer in layers:
                    # cast on the device: half the bytes to copy back
                    values = feats[layer].to(torch.float16).cpu().numpy()
                    if not np.isfinite(values).all():
                        raise FloatingPointError(
                            f"layer {layer}: non-finite features (overflow in float16 or NaN "
                            f"from the backbone) at images {start + offset}.."
                            f"{start + offset + len(batch) - 1}"
                        )
                    if layer not in writers:
                        array = store.create_array(
                            group, f"layers/{layer}", (n, values.shape[1]), FEATURE_DTYPE
                        )
                        writers[layer] = store.ChunkedWriter(array)
                    writers[layer].append(values)
                bar.update(len(batch))
        for writer in writers.values():
            writer.close()
        bar.close()
        seconds = time.perf_counter() - t0
        summary = {
            "layers": layers,
            "dims": {layer: int(writers[layer].array.shape[1]) for layer in layers},
            "n_images": int(n),
            "dtype": np.dtype(FEATURE_DTYPE).name,
            "device": str(torch_device),
            "weights_identity": backbones.weights_identity(spec["backbone"]),
            "seconds": round(seconds, 3),
        }
        group.attrs.update(summary)
    log.info("wrote %s: %d images in %.1f s (%.0f img/s)", out_path, n, seconds, n / seconds)
    return summary


def read_layer(path: str, spec: dict[str, Any], layer: str) -> np.ndarray:
    """One layer's features as float32 [n, dim], from a checked store."""
    group = store.open_checked(path, spec)
    if layer not in group.attrs["layers"]:
        raise KeyError(f"store {path} has no layer {layer!r}; it has {group.attrs['layers']}")
    return np.asarray(group[f"layers/{layer}"][:], dtype=np.float32)
