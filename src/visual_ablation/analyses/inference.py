"""The inference behind the summary: the t interval over runs (with Nadeau & Bengio's
correction for resampled splits), the exact paired sign-flip test, Holm's adjustment, and
the paired bootstrap over test images and runs that analyses/stats.py applies to every
difference to the reference.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any

import numpy as np
from scipy import stats as sps

from visual_ablation.probes.metrics import (
    ECE_BINS,
    METRICS,
    calibration_bin_sums,
    debiased_calibration_error,
    equal_mass_bins,
)

CONFIDENCE = 0.95
BOOTSTRAP = 1000  # replicates of the paired bootstrap
BOOTSTRAP_SEED = 0
EXACT_LIMIT = 2000  # sign-flip test: exact up to this sum of |per-image differences|


def t_interval(
    values: np.ndarray, confidence: float = CONFIDENCE, overlap: float = 0.0
) -> tuple[float, float, float, float]:
    """mean, sample std (ddof 1), and the two-sided t interval of the mean.

    `overlap` = n_test / n_train when runs resample their split: the standard error is
    then std * sqrt(1/n + overlap) (Nadeau & Bengio's corrected resampled t), since runs
    whose training and test sets overlap are not independent. One value: std and interval
    are NaN (no spread to estimate). Zero spread: the interval is the mean itself.
    """
    values = np.asarray(values, dtype=float)
    n = len(values)
    mean = float(values.mean()) if n else float("nan")
    if n < 2:
        return mean, float("nan"), float("nan"), float("nan")
    std = float(values.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * std * np.sqrt(1.0 / n + overlap)
    return mean, std, mean - half, mean + half


def sign_flip_p(differences: np.ndarray) -> float:
    """Two-sided p-value of the paired sign-flip (randomisation) test of integer per-image
    differences summed over runs: under the null hypothesis each image's difference is as
    likely to have either sign. For one run (differences in {-1, 0, 1}: the discordant
    pairs) this is McNemar's exact test. Exact up to EXACT_LIMIT total votes, else the
    normal approximation with a continuity correction (accurate at that size)."""
    m = np.abs(np.asarray(differences, dtype=np.int64))
    observed = abs(int(np.sum(differences)))
    total = int(m.sum())
    if total == 0:
        return 1.0
    if total > EXACT_LIMIT:
        z = max(observed - 1, 0) / np.sqrt(float((m.astype(float) ** 2).sum()))
        return float(min(1.0, 2.0 * sps.norm.sf(z)))
    # T = sum s_i m_i; (T + total) / 2 is the sum of the m_i whose sign is +, so its law
    # is a convolution of scaled binomials, one per distinct |difference|
    pmf = np.ones(1)
    values, counts = np.unique(m[m > 0], return_counts=True)
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        term = np.zeros(value * count + 1)
        term[::value] = sps.binom.pmf(np.arange(count + 1), count, 0.5)
        pmf = np.convolve(pmf, term)
    t = 2 * np.arange(total + 1) - total
    return float(min(1.0, pmf[np.abs(t) >= observed].sum()))


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and does not count)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    if m == 0:
        return adjusted
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def metric_columns(
    label: np.ndarray,
    predicted: np.ndarray,
    p_true: np.ndarray,
    confidence: np.ndarray,
    n_classes: int,
    dtype=np.float64,
) -> np.ndarray:
    """Per test image, every quantity the metrics of probes/metrics.py sum over images, as
    columns [n, 3 + 4 classes + 3 bins]: 1, correct, NLL, then one-hot of the true class,
    of the true class when correct, of a correct prediction's class, of the predicted
    class, and the calibration bins' membership, confidence and correctness. Weighted
    sums of all of them are one matrix product (`weights @ columns`): one pass over a
    bootstrap's weights instead of one per quantity."""
    correct = (predicted == label).astype(dtype)
    eye = np.eye(n_classes, dtype=dtype)
    truth, chosen = eye[label], eye[predicted]
    eps = np.finfo(np.float64).eps
    nll = -np.log(np.clip(p_true.astype(np.float64), eps, 1 - eps)).astype(dtype)
    members, conf, hits = calibration_bin_sums(
        confidence.astype(np.float64), correct, equal_mass_bins(confidence.astype(np.float64))
    )
    return np.concatenate(
        [
            np.ones((len(label), 1), dtype),
            correct[:, None],
            nll[:, None],
            truth,
            truth * correct[:, None],
            truth * chosen,
            chosen,
            *(a.astype(dtype) for a in (members, conf, hits)),
        ],
        axis=1,
    )


def metrics_from_sums(sums: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """Every metric from the weighted sums of `metric_columns` ([B, columns])."""
    c = n_classes
    total, correct, nll = sums[:, 0], sums[:, 1], sums[:, 2]
    support, hit, tp, predicted_count = (sums[:, 3 + i * c : 3 + (i + 1) * c] for i in range(4))
    members, conf, hits = np.split(sums[:, 3 + 4 * c :], 3, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = hit / support
        balanced = np.nanmean(np.where(support > 0, recall, np.nan), axis=1)
        seen = (predicted_count + support) > 0
        f1 = 2 * tp / (predicted_count + support)
        macro_f1 = np.nanmean(np.where(seen, f1, np.nan), axis=1)
    return {
        "accuracy": correct / total,
        "balanced_accuracy": balanced,
        "macro_f1": macro_f1,
        "nll": nll / total,
        "ece": debiased_calibration_error(members, conf, hits),
    }


def weighted_metrics(
    weights: np.ndarray,
    label: np.ndarray,
    predicted: np.ndarray,
    p_true: np.ndarray,
    confidence: np.ndarray,
    n_classes: int,
) -> dict[str, np.ndarray]:
    """Every metric of probes/metrics.py on one test set under image weights [B, n] (a weight of
    2 counts the image twice): each metric for each of the B weightings. With all weights
    1 these are the run's own metrics (tests/analyses/test_stats.py checks it)."""
    w = np.asarray(weights)
    w = w if w.dtype in (np.float32, np.float64) else w.astype(np.float64)
    columns = metric_columns(label, predicted, p_true, confidence, n_classes, w.dtype)
    return metrics_from_sums(w @ columns, n_classes)


def bootstrap_weights(
    images: int, runs: int, replicates: int = BOOTSTRAP, seed: int = BOOTSTRAP_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Replicate weights of the paired bootstrap: Poisson(1) per image (uint8: a count),
    multinomial over the runs. Deterministic, so every comparison of a family that tests
    the same images reuses the same replicates (`summarise` caches them)."""
    rng = np.random.default_rng(seed)
    image_weights = rng.poisson(1.0, size=(replicates, images)).astype(np.uint8)
    run_weights = rng.multinomial(runs, np.full(runs, 1.0 / runs), size=replicates)
    return image_weights, run_weights


def paired_interval(
    image: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    weights: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[float, float, float]:
    """The mean over runs of each run's mean per-image difference `first - second` (arrays
    [runs, n_test], paired image for image; `image`: the images' ids, the same image
    reweighted alike in every run that tests it), and its 95% interval from the paired
    bootstrap over test images and runs (`bootstrap_weights`: Poisson(1) per image,
    multinomial over runs; mean +- z x the replicates' standard error, as the summary's
    differences). What the amnesic changes and selectivity carry."""
    runs = image.shape[0]
    union, position = np.unique(image, return_inverse=True)
    position = position.reshape(image.shape)
    image_weights, run_weights = weights or bootstrap_weights(len(union), runs)
    differences = np.asarray(first, np.float64) - np.asarray(second, np.float64)
    per_run = np.empty((image_weights.shape[0], runs))
    for r in range(runs):
        w = image_weights[:, position[r]].astype(np.float64)
        totals = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_run[:, r] = (w @ differences[r]) / totals
    replicated = np.nansum(run_weights * per_run, axis=1) / runs
    mean = float(differences.mean(axis=1).mean())
    se = float(np.nanstd(replicated, ddof=1))
    z = float(sps.norm.ppf(0.5 + CONFIDENCE / 2))
    return mean, mean - z * se, mean + z * se


def image_level_differences(
    reference: dict[str, np.ndarray],
    other: dict[str, np.ndarray],
    n_classes: int,
    weights: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Paired comparison of two models' test predictions on the same runs and images.

    `reference` and `other`: arrays [runs, n_test] of one layer (`image`, `label`,
    `predicted`, `p_true`, `confidence`), run for run on the same test images. Returns,
    per metric, the bootstrap replicates of the mean difference (other - reference) over
    runs, and accuracy's exact sign-flip p-value; `n_images`: distinct test images.
    `weights`: `bootstrap_weights` for these images and runs (made here if not given).
    """
    return differences_to_reference(reference, [other], n_classes, weights)[0]


def differences_to_reference(
    reference: dict[str, np.ndarray],
    others: list[dict[str, np.ndarray]],
    n_classes: int,
    weights: tuple[np.ndarray, np.ndarray] | None = None,
    pool: Executor | None = None,
) -> list[dict[str, Any]]:
    """`image_level_differences` of each of `others` against one reference, in one pass
    over the bootstrap's weights per run: every model's sums in one matrix product, the
    weights gathered and the reference's columns made once for all of them (they are
    most of a comparison's cost). `pool`: runs these passes in parallel (numpy and BLAS
    release the GIL). Fastest with the image weights in Fortran order (`summarise` keeps
    them so): a run's images are then contiguous rows to gather."""
    image = reference["image"]
    for other in others:
        if not np.array_equal(image, other["image"]):
            raise ValueError("the two models were tested on different images: rerun their jobs")
    runs, _ = image.shape
    union, position = np.unique(image, return_inverse=True)
    position = position.reshape(image.shape)
    image_weights, run_weights = weights or bootstrap_weights(len(union), runs)
    by_image = np.ascontiguousarray(image_weights.T)  # [images, replicates]: a view if F-ordered
    models = [reference, *others]
    # every model's columns side by side, each in a slot as wide as the widest (its
    # calibration bins may be fewer), filled in place: one copy in memory
    slot = 3 + 4 * n_classes + 3 * ECE_BINS

    def one_run(r: int) -> list[dict[str, np.ndarray]]:
        # float32: the weighted sums only feed a standard error
        w = by_image[position[r]].astype(np.float32)
        columns = np.zeros((len(w), slot * len(models)), np.float32)
        widths = []
        for i, model in enumerate(models):
            own = metric_columns(
                model["label"][r],
                model["predicted"][r],
                model["p_true"][r],
                model["confidence"][r],
                n_classes,
                np.float32,
            )
            columns[:, i * slot : i * slot + own.shape[1]] = own
            widths.append(own.shape[1])
        sums = w.T @ columns
        scored = [
            metrics_from_sums(sums[:, i * slot : i * slot + width], n_classes)
            for i, width in enumerate(widths)
        ]
        return [{metric: s[metric] - scored[0][metric] for metric in METRICS} for s in scored[1:]]

    per_run = list(pool.map(one_run, range(runs)) if pool else map(one_run, range(runs)))
    reference_correct = (reference["predicted"] == reference["label"]).astype(np.int64)
    results = []
    for k, other in enumerate(others):
        replicated = {}
        for metric in METRICS:
            differences = np.stack([per_run[r][k][metric] for r in range(runs)], axis=1)
            replicated[metric] = np.nansum(run_weights * differences, axis=1) / runs
        # per image, correct answers of `other` minus the reference's, summed over runs
        votes = (other["predicted"] == other["label"]).astype(np.int64) - reference_correct
        per_image = np.bincount(position.ravel(), weights=votes.ravel(), minlength=len(union))
        results.append(
            {
                "replicates": replicated,
                "accuracy_p": sign_flip_p(per_image.round().astype(np.int64)),
                "n_images": len(union),
            }
        )
    return results
