"""Linear CKA between a representation's features and the reference's, layer by layer.

Kornblith, Norouzi, Lee & Hinton (2019), "Similarity of Neural Network Representations
Revisited", linear CKA in its feature-space form (their eq. for the linear kernel):

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F),  X, Y centred per column

on the same images (rows). 1 means the two feature sets are the same up to a rotation
and an isotropic scaling; it needs no training, so it is the fast first look at how far
a representation moves a layer. The images are every image of the dataset, or a fixed
sample of 10,000 (`image_rows`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from visual_ablation import outputs, store

LIMIT = 10_000  # images at most
COLUMNS = ["dataset", "backbone", "representation", "reference", "layer", "cka", "n_images"]


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two feature matrices over the same rows ([n, d1], [n, d2]),
    accumulated in float64; 0 when either is constant."""
    if len(x) != len(y):
        raise ValueError(f"CKA needs the same images: {len(x)} rows against {len(y)}")
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    x -= x.mean(axis=0)
    y -= y.mean(axis=0)
    cross = np.linalg.norm(y.T @ x) ** 2
    norms = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / norms) if norms > 0 else 0.0


def image_rows(n_images: int, limit: int = LIMIT) -> np.ndarray:
    """The images CKA is computed on: all of them, or a fixed sample of `limit` (the same
    for every representation; the cost is images x width^2 per layer). Independent of the
    split, so a new split re-plans no similarity job."""
    if n_images <= limit:
        return np.arange(n_images)
    return np.sort(np.random.default_rng(0).choice(n_images, limit, replace=False))


def layer_similarity(
    reference_path: str,
    other_path: str,
    reference_spec: dict[str, Any],
    other_spec: dict[str, Any],
    limit: int = LIMIT,
) -> list[dict[str, Any]]:
    """One row per layer: linear CKA of `other`'s features against `reference`'s on the
    same images (`image_rows`)."""
    with (
        store.reading(reference_path, reference_spec) as ref,
        store.reading(other_path, other_spec) as other,
    ):
        rows = image_rows(int(ref.attrs["n_images"]), limit)
        table = []
        for layer in ref.attrs["layers"]:
            x = ref[f"layers/{layer}"][:][rows]
            y = other[f"layers/{layer}"][:][rows]
            table.append(
                {
                    "dataset": other_spec["dataset"]["name"],
                    "backbone": other_spec["backbone"]["name"],
                    "representation": other_spec["representation"]["name"],
                    "reference": reference_spec["representation"]["name"],
                    "layer": layer,
                    "cka": linear_cka(x, y),
                    "n_images": len(rows),
                }
            )
    return table


def write_job(rows: list[dict[str, Any]], path: str) -> None:
    """One job's table (atomic csv; no pandas in the job)."""
    outputs.write_csv(rows, path, COLUMNS)


def collect(paths: list[str], path: str) -> None:
    """Every job's table in one csv, in the order given (the config's)."""
    import pandas as pd

    from visual_ablation.report import write_table

    table = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    write_table(table[COLUMNS], path)
