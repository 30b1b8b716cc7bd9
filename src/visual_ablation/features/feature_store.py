"""The feature store's format, written and read here only (as probes/run_files.py does for
run artefacts): one float16 array per layer, `layers/{layer}` [n_images, dim], in the
image order of the data store, and attributes that say what it holds (`layers` in the
backbone's order, `dims`, `n_images`, `dtype`, how it was computed). The store itself
(atomic writing, the spec check, locks) is plumbing/store.py's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from visual_ablation.plumbing import store

DTYPE = np.float16  # what a layer's features are stored as


def layer_array(layer: str) -> str:
    """A layer's array in the store."""
    return f"layers/{layer}"


def create_layer(group, layer: str, n_images: int, dim: int):
    """The empty array of one layer's features (the extraction fills it in chunks)."""
    return store.create_array(group, layer_array(layer), (n_images, dim), DTYPE)


def describe(
    group, layers: list[str], dims: dict[str, int], n_images: int, **how: Any
) -> dict[str, Any]:
    """Record what a finished store holds (and `how` it was computed); the attributes."""
    summary = {
        "layers": list(layers),
        "dims": {layer: int(dims[layer]) for layer in layers},
        "n_images": int(n_images),
        "dtype": np.dtype(DTYPE).name,
        **how,
    }
    group.attrs.update(summary)
    return summary


def layers(group) -> list[str]:
    """An open store's layers, in the backbone's order."""
    return list(group.attrs["layers"])


def n_images(group) -> int:
    return int(group.attrs["n_images"])


def read_layer(group, layer: str, rows: np.ndarray | None = None) -> np.ndarray:
    """One layer's features of an open store (the `rows` of them, sorted, if given)."""
    values = group[layer_array(layer)][:]
    return values if rows is None else values[rows]


def read(path: str, spec: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every layer of a feature store checked against `spec`, in the store's layer order."""
    with store.reading(path, spec) as group:
        return {layer: read_layer(group, layer) for layer in layers(group)}


def inventory(stores: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (store, layer): shape and disk use, each store checked against its spec.

    `stores`: dicts with dataset, backbone, representation, path, spec. A store made for
    another config raises StoreError here instead of being listed as valid.
    """
    rows = []
    for entry in stores:
        group = store.open_checked(entry["path"], entry["spec"])
        attrs = group.attrs.asdict()
        total = store.store_bytes(entry["path"])
        for layer in layers(group):
            rows.append(
                {
                    "dataset": entry["dataset"],
                    "backbone": entry["backbone"],
                    "representation": entry["representation"],
                    "layer": layer,
                    "n_images": attrs["n_images"],
                    "dim": attrs["dims"][layer],
                    "dtype": attrs["dtype"],
                    "store_bytes_per_image": round(total / max(1, attrs["n_images"]), 1),
                    "extract_seconds": attrs["seconds"],
                    "device": attrs["device"],
                    "path": entry["path"],
                }
            )
    return rows
