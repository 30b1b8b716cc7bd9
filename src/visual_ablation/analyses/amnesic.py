"""Amnesic probing: does the class head use what a layer holds of a factor? For each factor
the data store holds, remove what the reference representation's features hold of it, with
two erasers (`method`), and test the reference's class heads, unchanged, on what is left;
against removing as many random directions, which costs what losing that many dimensions
costs whatever they hold:
- `inlp`: iterative nullspace projection (INLP, Ravfogel et al. 2020; as amnesic probing,
  Elazar et al. 2021), below;
- `leace`: LEACE (Belrose et al. 2023, "LEACE: Perfect linear concept erasure in closed
  form"), the least change to the features after which no
  linear classifier of the train rows does better than a constant at predicting the factor.
  INLP's classifiers' directions lie in the span of the train rows and can take what carries
  other information with them; LEACE changes the features only along k - 1 directions (k
  factor classes), chosen in the whitened space.

LEACE here: fitted on the train rows in the coordinates of their own span (U S, from the
eigendecomposition of the Gram matrix the ridge fits already hold; rank at most n - 1 <
dim in the default stores), where their covariance has full rank and is diagonal, so the
sample covariance is used as it is (no shrinkage) and the eraser is the paper's closed
form (no trace constraint), without a decomposition of its own (`leace_erased`; checked
against concept-erasure's LeaceFitter); the change is mapped back to the features (a
row's part outside the train rows' span is left as it is: no head trained on them reads
it). The factor's accuracy after is a ridge classifier refitted on the erased features.

INLP, in the heads' standardised space (z = (x - mean) / std, the train rows'
statistics): fit a linear classifier of the factor on the train images (ridge regression
onto centred one-hot labels, its penalty chosen once on validation from a grid), add the span of
its weight columns to the removed subspace (orthonormal basis B), project every image onto
the complement (z - z B B^T), and repeat, at most `iterations` times. The classifier is
refit each time on the projected features, so directions that carry the factor redundantly
are found in later iterations, until the factor's validation accuracy is at its majority
share. The factor's test accuracy before and after (`factor_removed`: after, within two
binomial standard errors of the majority share) says whether it is gone.

Rows per (run, layer, factor, method, probe): the class heads' test accuracy with the
features intact, with the factor erased, and (mean over RANDOM_DRAWS draws) with as many
random orthonormal directions removed.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from visual_ablation.analyses import inference
from visual_ablation.data import data_store
from visual_ablation.features import feature_store
from visual_ablation.plumbing import store
from visual_ablation.probes import run_files, transfer

log = logging.getLogger(__name__)

RANDOM_DRAWS = 5  # random subspaces per removal, averaged
# ridge penalties, relative to the mean eigenvalue of the train Gram matrix
PENALTIES = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
ROW_COLUMNS = [
    "dataset",
    "backbone",
    "representation",
    "layer",
    "probe",
    "run",
    "factor",
    "method",
    "factor_classes",
    "n_train",
    "n_test",
    "directions",
    "factor_majority",
    "factor_accuracy_before",
    "factor_accuracy_after",
    "factor_removed",
    "accuracy_intact",
    "accuracy_amnesic",
    "accuracy_random",
]


def _centred_onehot(y: np.ndarray, k: int) -> np.ndarray:
    onehot = np.eye(k)[y]
    return onehot - onehot.mean(axis=0)


class Removal(NamedTuple):
    """A subspace B [dim, m] (orthonormal) removed from the features of a RidgeFits: the
    train, validation and test rows' coordinates along it, the train ones also in the
    Gram matrix's eigenbasis (what the Woodbury identity needs)."""

    basis: np.ndarray
    train: np.ndarray  # Z_train B [n, m]
    eigen: np.ndarray  # V^T Z_train B [n, m]
    val: np.ndarray
    test: np.ndarray | None
    scale: float  # the mean eigenvalue of the Gram matrix left, G - W W^T


class RidgeFits:
    """Ridge classifiers (onto centred one-hot labels) of any labels on one set of features
    z, and on z with any subspace removed, solved in their dual form from one
    eigendecomposition of the train Gram matrix G = V diag(e) V^T, for every penalty of
    PENALTIES and every factor decoded from these features.

    With a subspace B removed, the Gram matrix is G - W W^T (W = Z_train B: the removed
    rows are orthogonal to it), and the dual solve (G - W W^T + p I)^-1 T follows from
    (G + p I)^-1, diagonal in V, by the Woodbury identity: an m x m system per penalty
    instead of a Cholesky factorisation or an eigendecomposition of an n x n matrix each
    time (INLP removes a few directions per iteration, and tests each factor's removal
    with a refitted classifier). float64 throughout."""

    def __init__(self, z_train: np.ndarray, z_val: np.ndarray, z_test: np.ndarray | None = None):
        self.train = z_train.astype(np.float64)
        self.val = z_val.astype(np.float64)
        self.test = None if z_test is None else z_test.astype(np.float64)
        self.eigenvalues, self.vectors = np.linalg.eigh(self.train @ self.train.T)
        self.scale = max(float(self.eigenvalues.mean()), 1e-12)
        # the validation and test rows' products with the train rows, in the eigenbasis
        self.cross_val = (self.val @ self.train.T) @ self.vectors
        self.cross_test = None if self.test is None else (self.test @ self.train.T) @ self.vectors

    def removal(self, basis: np.ndarray, grown: Removal | None = None) -> Removal:
        """`basis` removed; `grown`: the removal of its first columns, extended by the rest."""
        done = 0 if grown is None else grown.basis.shape[1]
        added = basis[:, done:]
        train = self.train @ added
        parts = [train, self.vectors.T @ train, self.val @ added]
        parts.append(None if self.test is None else self.test @ added)
        if grown is not None:
            old = (grown.train, grown.eigen, grown.val, grown.test)
            parts = [
                p if o is None else np.concatenate([o, p], 1)
                for o, p in zip(old, parts, strict=True)
            ]
        left = (self.eigenvalues.sum() - np.square(parts[0]).sum()) / len(train)
        return Removal(basis, *parts, max(float(left), 1e-12))

    def solve(self, targets: np.ndarray, penalty: float, removal: Removal | None) -> np.ndarray:
        """The dual coefficients, in the eigenbasis (alpha = V s), of the ridge fit of
        `targets` (in the eigenbasis too, V^T T [n, k]) at an absolute penalty."""
        inverse = 1.0 / (self.eigenvalues + penalty)
        s = inverse[:, None] * targets
        if removal is not None and removal.basis.shape[1]:
            scaled = inverse[:, None] * removal.eigen  # (G + pI)^-1 W, in the eigenbasis
            capacitance = np.eye(removal.basis.shape[1]) - removal.eigen.T @ scaled
            s = s + scaled @ np.linalg.solve(capacitance, removal.eigen.T @ s)
        return s

    def scores(self, s: np.ndarray, part: str, removal: Removal | None) -> np.ndarray:
        """The classifier's scores [rows, k] on the validation or test rows."""
        cross = self.cross_val if part == "val" else self.cross_test
        out = cross @ s
        if removal is not None and removal.basis.shape[1]:
            rows = removal.val if part == "val" else removal.test
            out -= rows @ (removal.eigen.T @ s)
        return out

    def penalty(
        self, y_train: np.ndarray, y_val: np.ndarray, k: int, removal: Removal | None = None
    ) -> tuple[float, float, np.ndarray]:
        """The penalty (absolute) of PENALTIES, relative to the mean eigenvalue of the Gram
        matrix fitted, with the best validation accuracy (ties: the first), that accuracy,
        and its dual coefficients in the eigenbasis."""
        targets = self.vectors.T @ _centred_onehot(y_train, k)
        scale = self.scale if removal is None else removal.scale
        best = None
        for penalty in PENALTIES:
            s = self.solve(targets, penalty * scale, removal)
            accuracy = float((self.scores(s, "val", removal).argmax(axis=1) == y_val).mean())
            if best is None or accuracy > best[1]:
                best = (penalty * scale, accuracy, s)
        return best

    def test_accuracy(
        self, y: tuple[np.ndarray, np.ndarray, np.ndarray], k: int, removal: Removal | None = None
    ) -> float:
        """Test accuracy of the classifier with the penalty chosen on validation; `y`: the
        train, validation and test labels."""
        _, _, s = self.penalty(y[0], y[1], k, removal)
        return float((self.scores(s, "test", removal).argmax(axis=1) == y[2]).mean())


def ridge_penalty(
    z_train: np.ndarray, y_train: np.ndarray, z_val: np.ndarray, y_val: np.ndarray, k: int
) -> tuple[float, float]:
    """The ridge penalty (absolute) of PENALTIES with the best validation accuracy of a
    ridge regression onto centred one-hot labels, and that accuracy."""
    return RidgeFits(z_train, z_val).penalty(y_train, y_val, k)[:2]


def ridge_weights(
    z_train: np.ndarray, y_train: np.ndarray, z_val: np.ndarray, y_val: np.ndarray, k: int
) -> np.ndarray:
    """Weights [dim, k] of the ridge classifier of y (penalty chosen on validation)."""
    fits = RidgeFits(z_train, z_val)
    _, _, s = fits.penalty(y_train, y_val, k)
    return fits.train.T @ (fits.vectors @ s)


def factor_accuracy(
    z: np.ndarray, y: np.ndarray, parts: tuple[np.ndarray, np.ndarray, np.ndarray], k: int
) -> float:
    """Test accuracy of the ridge classifier of y (penalty chosen on validation) on
    features z; `parts`: the train, validation and test rows."""
    train, val, test = parts
    return RidgeFits(z[train], z[val], z[test]).test_accuracy((y[train], y[val], y[test]), k)


def _extend(basis: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """`basis` [dim, m] (orthonormal) with the part of `columns` outside its span added."""
    rest = columns - basis @ (basis.T @ columns)
    u, s, _ = np.linalg.svd(rest, full_matrices=False)
    if not s.size or s.max() <= 1e-8:
        return basis
    kept = u[:, s > 1e-6 * s.max()]
    return np.concatenate([basis, kept], axis=1)


def chance_level(y: np.ndarray, k: int) -> float:
    """Accuracy a classifier of no information reaches on labels y, with slack: the
    majority share plus two binomial standard errors (one fit to noise beats the majority
    about half of the time)."""
    majority = float(np.bincount(y, minlength=k).max() / len(y))
    return majority + 2.0 * float(np.sqrt(majority * (1.0 - majority) / len(y)))


def inlp_basis(
    z_train: np.ndarray,
    y_train: np.ndarray,
    z_val: np.ndarray,
    y_val: np.ndarray,
    iterations: int,
    k: int | None = None,
    fits: RidgeFits | None = None,
) -> np.ndarray:
    """The factor's linearly decodable subspace [dim, m] (orthonormal). The ridge penalty
    is chosen once, on the features as they are; each iteration refits the classifier on
    the features with the subspace found so far removed (RidgeFits' Woodbury solve) and
    stops once its validation accuracy is at the majority share: directions fit to noise
    then cost the heads what random ones do. `fits`: the features' RidgeFits, where other
    factors share it."""
    k = k or int(max(y_train.max(), y_val.max())) + 1
    majority = float(np.bincount(y_val, minlength=k).max() / len(y_val))
    fits = fits or RidgeFits(z_train, z_val)
    penalty, _, _ = fits.penalty(y_train, y_val, k)
    targets = fits.vectors.T @ _centred_onehot(y_train, k)
    basis = np.zeros((fits.train.shape[1], 0))
    removal = None
    for _ in range(iterations):
        s = fits.solve(targets, penalty, removal)
        if float((fits.scores(s, "val", removal).argmax(axis=1) == y_val).mean()) <= majority:
            break
        # the classifier's weights on the projected features: Z'^T alpha, Z' = Z - Z B B^T
        alpha = fits.vectors @ s
        weights = fits.train.T @ alpha
        if removal is not None:
            weights -= basis @ (removal.train.T @ alpha)
        grown = _extend(basis, weights)
        if grown.shape[1] == basis.shape[1]:
            break
        basis = grown
        removal = fits.removal(basis, removal)
    return basis


METHODS = ("inlp", "leace")


LEACE_SVD_TOL = 0.01  # concept-erasure's default `svd_tol`: weaker directions are left


def leace_erased(fits: RidgeFits, y_train: np.ndarray, k: int) -> tuple[dict[str, np.ndarray], int]:
    """LEACE (Belrose et al. 2023) of labels y_train, fitted on the train rows of `fits`,
    in closed form in the coordinates of their span: the train rows' C = U S (U, S^2 the
    Gram matrix's eigenvectors and eigenvalues; those below 1e-10 of the largest left
    out). C is centred and its covariance diagonal, S^2 / (n - 1), so the whitening is
    W = sqrt(n - 1) S^-1 and W Sigma_xz = U^T Y_c / sqrt(n - 1) (Y_c: centred one-hot
    labels); with Q its left singular vectors of singular value above LEACE_SVD_TOL, the
    eraser is c -> c - (c S^-1 Q) (Q^T S). Mapped back to features (a row's coordinates
    are z Z^T U S^-1), a row z changes by (z Z^T U S^-2 Q) (Q^T U^T Z): no decomposition
    beyond the one the ridge fits hold. concept-erasure's LeaceFitter (no shrinkage, no
    trace constraint) on the same coordinates gives the same eraser
    (tests/analyses/test_amnesic.py). Returns the train, validation and test features erased and
    the number of directions changed."""
    keep = fits.eigenvalues > 1e-10 * fits.eigenvalues.max()
    vectors, eigenvalues = fits.vectors[:, keep], fits.eigenvalues[keep]
    onehot = np.eye(k)[y_train]
    whitened_cross = vectors.T @ (onehot - onehot.mean(axis=0)) / np.sqrt(len(y_train) - 1)
    left, singular, _ = np.linalg.svd(whitened_cross, full_matrices=False)
    q = left[:, singular > LEACE_SVD_TOL]
    changed = (q.T @ vectors.T) @ fits.train  # [m, dim]: Q^T U^T Z
    scaled = q / eigenvalues[:, None]  # S^-2 Q: a row's z Z^T U (`cross_*`) times it
    erased = {
        "train": fits.train - (vectors @ q) @ changed,  # train rows: z Z^T U S^-2 = U
        "val": fits.val - (fits.cross_val[:, keep] @ scaled) @ changed,
        "test": fits.test - (fits.cross_test[:, keep] @ scaled) @ changed,
    }
    return erased, q.shape[1]


def erase(
    fits: RidgeFits,
    method: str,
    y_parts: tuple[np.ndarray, np.ndarray, np.ndarray],
    k: int,
    iterations: int,
) -> tuple[np.ndarray, float, int]:
    """One eraser of the factor with labels `y_parts` (train, validation, test) on the
    features of `fits`: (the test features erased, the factor's test accuracy after, with
    a ridge classifier refitted on what is left, the directions changed)."""
    if method == "inlp":
        basis = inlp_basis(fits.train, y_parts[0], fits.val, y_parts[1], iterations, k, fits)
        after = fits.test_accuracy(y_parts, k, fits.removal(basis))
        return removed(fits.test, basis), after, basis.shape[1]
    if method == "leace":
        erased, directions = leace_erased(fits, y_parts[0], k)
        refitted = RidgeFits(erased["train"], erased["val"], erased["test"])
        return erased["test"], refitted.test_accuracy(y_parts, k), directions
    raise ValueError(f"unknown eraser {method!r}: expected one of {', '.join(METHODS)}")


def random_basis(dim: int, m: int, seed: list[int]) -> np.ndarray:
    """m random orthonormal directions [dim, m] (QR of a Gaussian matrix), seeded."""
    if m == 0:
        return np.zeros((dim, 0))
    gaussian = np.random.default_rng(seed).standard_normal((dim, m))
    q, _ = np.linalg.qr(gaussian)
    return q


def removed(z: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """z with the span of `basis` projected out."""
    return z - (z @ basis) @ basis.T


def head_correct(weights: list[np.ndarray], z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Whether a head is right on each row of standardised features z [n, dim]."""
    zeros, ones = np.zeros(z.shape[1], np.float32), np.ones(z.shape[1], np.float32)
    proba = transfer.head_proba(weights, zeros, ones, z)
    return proba.argmax(axis=1) == labels


def head_accuracy(weights: list[np.ndarray], z: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of a head on standardised features z [n, dim]."""
    return float(head_correct(weights, z, labels).mean())


# one amnesic job's per-image arrays, per (layer, factor, method, probe): [runs, n_test]
PER_IMAGE = ("image", "intact", "erased", "random")


def prediction_key(layer: str, factor: str, method: str, probe: str, array: str) -> str:
    return f"{layer}|{factor}|{method}|{probe}|{array}"


def write_predictions(predictions: dict[tuple[str, ...], dict[str, list]], path: str) -> None:
    """An amnesic job's per-image arrays (`amnesic_store`) as one .npz."""
    values = {
        prediction_key(*key, array): np.stack(lists[array])
        for key, lists in predictions.items()
        for array in PER_IMAGE
    }
    run_files.write_predictions(values, path)


def amnesic_store(
    heads_paths: dict[str, list[str]],
    feature_path: str,
    data_path: str,
    feature_spec: dict[str, Any],
    data_spec: dict[str, Any],
    factors: list[str],
    iterations: int,
) -> list[dict[str, Any]]:
    """The rows of one reference store, `heads_paths` {probe: its class train job's heads
    files}, every factor in `factors`; and the heads' per-image correctness per (layer,
    factor, method, probe) (`write_predictions`)."""

    features = feature_store.read(feature_path, feature_spec)
    with store.reading(data_path, data_spec) as group:
        labels = data_store.class_labels(group)
        factor_labels, factor_names = {}, {}
        for factor in factors:
            factor_labels[factor], factor_names[factor] = data_store.read_target(
                group, factor, f"data store {data_path}"
            )
    heads = {probe: run_files.read_heads(paths) for probe, paths in heads_paths.items()}
    first_rows, first_values = next(iter(heads.values()))
    runs = list(dict.fromkeys(int(row["run"]) for row in first_rows))
    layers = list(dict.fromkeys(row["layer"] for row in first_rows))
    rows = []
    # (layer, factor, method, probe) -> per-image arrays, a list over runs each
    predictions: dict[tuple[str, ...], dict[str, list]] = {}
    for run in runs:
        for layer in layers:
            x = features[layer]
            train_rows = first_values[f"{run}/{layer}/train_rows"]
            test_rows = first_values[f"{run}/{layer}/test_rows"]
            val_rows = np.setdiff1d(np.arange(len(labels)), np.r_[train_rows, test_rows])
            # the heads' own standardisation (their train rows' statistics)
            mean = first_values[f"{run}/{layer}/mean"]
            std = first_values[f"{run}/{layer}/std"]
            z = (x.astype(np.float32) - mean) / std
            y_test, test = labels[test_rows], z[test_rows].astype(np.float64)
            # the features' Gram matrix and its eigendecomposition, once for every factor
            fits = RidgeFits(z[train_rows], z[val_rows], z[test_rows])
            # each probe's heads and their per-image correctness intact, once for every
            # factor and eraser
            key = f"{run}/{layer}"
            weights_of, intact_of = {}, {}
            for probe, (_, values) in heads.items():
                if not np.array_equal(values[f"{key}/test_rows"], test_rows):
                    raise ValueError(f"{heads_paths[probe]}: other test images than the rest")
                weights_of[probe] = [
                    values[f"{key}/w{i}"] for i in range(4) if f"{key}/w{i}" in values
                ]
                intact_of[probe] = head_correct(weights_of[probe], test, y_test)
            for factor in factors:
                y = factor_labels[factor]
                k = len(factor_names[factor])
                y_parts = (y[train_rows], y[val_rows], y[test_rows])
                before = fits.test_accuracy(y_parts, k)
                for method in METHODS:
                    erased_test, after, m = erase(fits, method, y_parts, k, iterations)
                    draws = [
                        random_basis(z.shape[1], m, [run, j, m, z.shape[1]])
                        for j in range(RANDOM_DRAWS)
                    ]
                    for probe, weights in weights_of.items():
                        intact = intact_of[probe]
                        erased = head_correct(weights, erased_test, y_test)
                        # each image's share of the random removals that leave it right
                        random = np.mean(
                            [head_correct(weights, removed(test, r), y_test) for r in draws],
                            axis=0,
                        )
                        kept = predictions.setdefault(
                            (layer, factor, method, probe), {a: [] for a in PER_IMAGE}
                        )
                        for array, value in zip(
                            PER_IMAGE, (test_rows, intact, erased, random), strict=True
                        ):
                            kept[array].append(value)
                        rows.append(
                            {
                                "dataset": feature_spec["dataset"]["name"],
                                "backbone": feature_spec["backbone"]["name"],
                                "representation": feature_spec["representation"]["name"],
                                "layer": layer,
                                "probe": probe,
                                "run": run,
                                "factor": factor,
                                "method": method,
                                "factor_classes": k,
                                "n_train": len(train_rows),
                                "n_test": len(test_rows),
                                "directions": m,
                                "factor_majority": float(
                                    np.bincount(y[test_rows], minlength=k).max() / len(test_rows)
                                ),
                                "factor_accuracy_before": before,
                                "factor_accuracy_after": after,
                                "factor_removed": after <= chance_level(y[test_rows], k),
                                "accuracy_intact": float(intact.mean()),
                                "accuracy_amnesic": float(erased.mean()),
                                "accuracy_random": float(random.mean()),
                            }
                        )
            log.info("run %d, %s: %d factors removed", run, layer, len(factors))
    return [{column: row[column] for column in ROW_COLUMNS} for row in rows], predictions


TABLE_KEYS = ["dataset", "backbone", "representation", "layer", "probe", "factor", "method"]
# each change in the table and the per-image arrays it is the paired difference of
CHANGES = {
    "amnesic_change": ("erased", "intact"),
    "random_change": ("random", "intact"),
    "amnesic_minus_random": ("erased", "random"),
}
MEANS = [
    "directions",
    "factor_majority",
    "factor_accuracy_before",
    "factor_accuracy_after",
    "factor_removed",
    "accuracy_intact",
]


def table(paths: list[str], prediction_paths: list[str]) -> pd.DataFrame:
    """amnesic.csv: per (dataset, backbone, layer, probe, factor, method), over runs: the
    directions removed, the factor's accuracy before and after, the class heads' accuracy
    intact, and the mean change in points when the factor is erased or as many random
    directions are removed, and their difference, each with the 95% interval of the paired
    bootstrap over test images and runs (inference.paired_interval: the same as the
    summary's differences). `prediction_paths`: each job's per-image arrays, in the order
    of `paths`."""
    rows = pd.concat([pd.read_csv(path) for path in paths], ignore_index=True)
    per_image: dict[tuple, dict[str, list[np.ndarray]]] = {}
    for path, rows_path in zip(prediction_paths, paths, strict=True):
        job = pd.read_csv(rows_path, nrows=1)
        dataset, backbone = job["dataset"].iloc[0], job["backbone"].iloc[0]
        with np.load(path) as values:
            for name in values.files:
                *key, array = name.split("|")
                joined = per_image.setdefault((dataset, backbone, *key), {})
                joined.setdefault(array, []).append(values[name])
    out = []
    # the bootstrap's weights once per set of test images and runs (every layer, factor,
    # eraser and probe of a store shares them: the same replicates, as the summary's)
    weights: dict[tuple[int, bytes], tuple[np.ndarray, np.ndarray]] = {}
    for key, group in rows.groupby(TABLE_KEYS, sort=False):
        row = dict(zip(TABLE_KEYS, key, strict=True))
        row["n_runs"] = int(group["run"].nunique())
        # means over runs (`factor_removed`: the share of runs at chance after removal)
        for column in MEANS:
            row[column] = float(group[column].astype(float).mean())
        dataset, backbone, _, layer, probe, factor, method = key
        arrays = {
            a: np.concatenate(v)
            for a, v in per_image[(dataset, backbone, layer, factor, method, probe)].items()
        }
        images = arrays["image"]
        distinct = np.unique(images)
        shared = (images.shape[0], distinct.tobytes())
        if shared not in weights:
            weights[shared] = inference.bootstrap_weights(len(distinct), images.shape[0])
        for name, (first, second) in CHANGES.items():
            mean, low, high = inference.paired_interval(
                images, arrays[first], arrays[second], weights[shared]
            )
            row |= {name: 100 * mean, f"{name}_ci_low": 100 * low, f"{name}_ci_high": 100 * high}
        out.append(row)
    return pd.DataFrame(out)
