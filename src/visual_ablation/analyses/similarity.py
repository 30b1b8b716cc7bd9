"""Linear CKA between a representation's features and the reference's, layer by layer.

Kornblith, Norouzi, Lee & Hinton (2019), "Similarity of Neural Network Representations
Revisited", linear CKA in its feature-space form (their eq. for the linear kernel):

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F),  X, Y centred per column

on the same images (rows). 1 means the two feature sets are the same up to a rotation
and an isotropic scaling; it needs no training, so it is the fast first look at how far
a representation moves a layer. The images are every image of the dataset, or a fixed
sample of 10,000 (`image_rows`).

That form is the biased (V-statistic) HSIC: with few images and many features it is far
from 0 for unrelated features. The table gives beside it the debiased CKA, built on Song
et al.'s (2012) unbiased HSIC as Nguyen, Raghu & Kornblith (2021) use it (Kornblith's
`feature_space_linear_cka(debiased=True)`), and its permutation null: the 95th percentile
of the debiased CKA after shuffling one side's images (`PERMUTATIONS` times, on a fixed
sample of at most `NULL_IMAGES` images: a conservative, cheap null), what unrelated
features of these widths reach.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from visual_ablation.features import feature_store
from visual_ablation.plumbing import outputs, store

LIMIT = 10_000  # images at most
PERMUTATIONS = 20  # of the permutation null
NULL_IMAGES = 500  # images the null is computed on (a fixed sample: conservative)
COLUMNS = [
    "dataset",
    "backbone",
    "representation",
    "reference",
    "layer",
    "cka",
    "cka_debiased",
    "cka_null",
    "n_images",
]


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


def _debiased_dot(xty: float, rows_x, rows_y, norm_x: float, norm_y: float, n: int) -> float:
    """Unbiased HSIC (times n(n-3)) of centred linear kernels from feature-space sums:
    ||X^T Y||^2 less the diagonals' share (Kornblith's helper)."""
    return xty - n / (n - 2.0) * float(rows_x @ rows_y) + norm_x * norm_y / ((n - 1) * (n - 2))


def _centred(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x -= x.mean(axis=0)
    return x


def cka_pair(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(linear CKA, debiased linear CKA) of the same rows, from one set of Gram products:
    the biased form is `linear_cka`'s; the debiased one uses the unbiased HSIC estimator
    (Song et al. 2012; Nguyen, Raghu & Kornblith 2021), as Kornblith's
    `feature_space_linear_cka(debiased=True)`. Float64; 0 when either side is constant.
    The debiased form needs more than 3 images."""
    if len(x) != len(y):
        raise ValueError(f"CKA needs the same images: {len(x)} rows against {len(y)}")
    n = len(x)
    if n < 4:
        raise ValueError(f"debiased CKA needs at least 4 images, got {n}")
    x, y = _centred(x), _centred(y)
    xy = np.linalg.norm(y.T @ x) ** 2
    xx, yy = np.linalg.norm(x.T @ x) ** 2, np.linalg.norm(y.T @ y) ** 2
    biased = float(xy / np.sqrt(xx * yy)) if xx > 0 and yy > 0 else 0.0
    rows_x, rows_y = np.einsum("ij,ij->i", x, x), np.einsum("ij,ij->i", y, y)
    norm_x, norm_y = float(rows_x.sum()), float(rows_y.sum())
    xy = _debiased_dot(xy, rows_x, rows_y, norm_x, norm_y, n)
    xx = _debiased_dot(xx, rows_x, rows_x, norm_x, norm_x, n)
    yy = _debiased_dot(yy, rows_y, rows_y, norm_y, norm_y, n)
    debiased = float(xy / np.sqrt(xx * yy)) if xx > 0 and yy > 0 else 0.0
    return biased, debiased


def debiased_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """The debiased linear CKA of two feature matrices over the same rows (`cka_pair`)."""
    return cka_pair(x, y)[1]


def debiased_null(
    x: np.ndarray, y: np.ndarray, permutations: int = PERMUTATIONS, limit: int = NULL_IMAGES
) -> float:
    """The 95th percentile of the debiased CKA between `x` and `y` with y's rows shuffled
    (seeded), on a fixed sample of at most `limit` of the rows: what unrelated features of
    these widths reach. Fewer images give a wider null, so on a sample it is conservative.
    In kernel form (Song et al.'s eq. 5): each permutation then costs n^2, not n d^2."""
    rows = image_rows(len(x), limit)
    k, l_ = (_centred(a[rows]) for a in (x, y))
    k, l_ = k @ k.T, l_ @ l_.T
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l_, 0.0)
    n = len(k)
    sum_k, sum_l = k.sum(), l_.sum()
    k1, l1 = k.sum(axis=1), l_.sum(axis=1)

    def hsic(trace: float, cross: float, a: float, b: float) -> float:
        return trace + a * b / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross

    self_k = hsic(float((k * k).sum()), float(k1 @ k1), sum_k, sum_k)
    self_l = hsic(float((l_ * l_).sum()), float(l1 @ l1), sum_l, sum_l)
    if self_k <= 0 or self_l <= 0:
        return 0.0
    rng = np.random.default_rng(0)
    null = []
    for _ in range(permutations):
        p = rng.permutation(n)
        shuffled = l_[p][:, p]
        cross = hsic(float((k * shuffled).sum()), float(k1 @ l1[p]), sum_k, sum_l)
        null.append(cross / np.sqrt(self_k * self_l))
    return float(np.quantile(null, 0.95))


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
        rows = image_rows(feature_store.n_images(ref), limit)
        table = []
        for layer in feature_store.layers(ref):
            x = feature_store.read_layer(ref, layer, rows)
            y = feature_store.read_layer(other, layer, rows)
            table.append(
                {
                    "dataset": other_spec["dataset"]["name"],
                    "backbone": other_spec["backbone"]["name"],
                    "representation": other_spec["representation"]["name"],
                    "reference": reference_spec["representation"]["name"],
                    "layer": layer,
                    **dict(zip(("cka", "cka_debiased"), cka_pair(x, y), strict=True)),
                    "cka_null": debiased_null(x, y),
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

    table = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    outputs.write_table(table[COLUMNS], path)
