"""Summary over runs, and differences to the reference representation tested on the test
images.

Two questions, two sources of variation:
- **Each metric's mean over runs** gets a t interval over runs. Runs differ in probe
  initialisation and minibatch order, and with `split.resample` in their split too; their
  test sets then overlap, so the interval uses Nadeau & Bengio's (2003) corrected
  resampled t (variance x (1/R + n_test/n_train)).
- **The difference to the reference** (same run, layer and probe; the same test images,
  since the split does not depend on the representation) is tested on the test images,
  not on runs alone: runs share or overlap their test images, so a difference that several
  runs repeat on the same few images is not several observations. A paired bootstrap
  over test images and runs (each replicate reweights the images, the same weights for
  both representations, and resamples the runs) gives the difference's standard error,
  its 95% interval and a normal p-value. Accuracy's p-value is the larger of that one and
  the exact paired sign-flip test over test images, which for one run is McNemar's exact
  test (Dietterich 1998): a difference must stand out against the spread between runs and,
  exactly, against test-image noise when only a few images differ.
Holm's step-down adjustment runs over every comparison of a (dataset, backbone, probe).
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from visual_ablation.probes.metrics import (
    ECE_BINS,
    METRICS,
    RUN_KEYS,
    calibration_bin_sums,
    debiased_calibration_error,
    equal_mass_bins,
)
from visual_ablation.probes.run_files import PredictionLoader
from visual_ablation.vocabulary import CLASS, CONTROL

KEYS = [k for k in RUN_KEYS if k != "run"]  # one summary row per these
# a row is compared with the reference's own row (trained and tested on the reference) of
# the same dataset, backbone, target, layer and probe
PAIR_KEYS = [k for k in KEYS if k not in ("representation", "train_representation")]
# the Holm family: one (dataset, backbone, target, probe)'s comparisons, within
# representations or transferred from the reference (two questions, two families)
FAMILY = ["dataset", "backbone", "target", "probe", "transferred"]
SUMMARISED = [*METRICS, "best_epoch", "epochs", "train_seconds"]
CONFIDENCE = 0.95
BOOTSTRAP = 1000  # replicates of the paired bootstrap
BOOTSTRAP_SEED = 0
EXACT_LIMIT = 2000  # sign-flip test: exact up to this sum of |per-image differences|

# per-image predictions of one model: (dataset, backbone, representation,
# train_representation, target, probe) -> {"runs", "layers", "image", "label",
# "predicted", "p_true", "confidence"} (probes/training.py)


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
    1 these are the run's own metrics (tests/test_stats.py checks it)."""
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


def _layer_slice(predictions: dict[str, np.ndarray], runs: list[int], layer: str):
    """One layer's arrays [runs, n_test] of a model's predictions, for the given runs."""
    rows = [int(np.flatnonzero(predictions["runs"] == run)[0]) for run in runs]
    j = list(predictions["layers"]).index(layer)
    out = {key: predictions[key][rows] for key in ("image", "label")}
    out |= {key: predictions[key][rows, j] for key in ("predicted", "p_true", "confidence")}
    return out


def summarise(
    metrics: pd.DataFrame,
    predictions: PredictionLoader | None = None,
    reference: str | None = "original",
    resampled: bool | Collection[str] = False,
    threads: int = 1,
) -> pd.DataFrame:
    """One row per (dataset, backbone, representation, train_representation, target,
    layer, probe), in first-seen order.

    For each metric: mean, std, 95% t interval over runs (corrected for overlapping test
    sets when `resampled`: True, or the datasets whose runs each drew their own test
    split; a dataset whose test images are the same in every run gets the plain t interval,
    which covers the probe's and the training split's variation on those images).
    Against `reference` trained and tested on itself (same dataset, backbone, target,
    layer, probe and run): the mean paired difference, its 95% interval
    from the paired bootstrap over test images and runs, the p-value (the bootstrap's
    normal approximation; for accuracy the larger of that and the exact sign-flip test
    over test images) and the Holm-adjusted p-value over the row's FAMILY. A transfer row
    (the reference's heads tested on another representation) is compared the same way.
    Differences need `predictions`. `threads`: the bootstrap's runs in parallel (the same
    numbers whatever the count).
    """
    rows = []
    pair_keys = PAIR_KEYS
    ref_runs = {}
    if reference is not None:
        ref = metrics[
            (metrics["representation"] == reference)
            & (metrics["train_representation"] == reference)
        ]
        ref_runs = {key: group for key, group in ref.groupby(pair_keys, sort=False)}
    # comparisons that share the reference's predictions (dataset, backbone, target, probe,
    # layer and runs), tested together: [(row index, the model's key)]
    tests: dict[tuple, list[tuple[int, tuple[str, ...]]]] = {}
    for key, group in metrics.groupby(KEYS, sort=False):
        row = dict(zip(KEYS, key, strict=True))
        row["n_runs"] = int(group["run"].nunique())
        row["n_classes"] = int(group["n_classes"].iloc[0])
        overlap = 0.0
        if _redrawn(resampled, row["dataset"]) and {"n_test", "n_train"} <= set(group):
            overlap = float(group["n_test"].iloc[0] / group["n_train"].iloc[0])
        for metric in SUMMARISED:
            mean, std, low, high = t_interval(group[metric].to_numpy(), overlap=overlap)
            row |= {
                f"{metric}_mean": mean,
                f"{metric}_std": std,
                f"{metric}_ci_low": low,
                f"{metric}_ci_high": high,
            }
        other = ref_runs.get(tuple(row[k] for k in pair_keys))
        is_reference = row["representation"] == row["train_representation"] == reference
        compare = reference is not None and not is_reference and other is not None
        paired = (
            group.merge(other[["run", *METRICS]], on="run", suffixes=("", "_ref"))
            if compare
            else None
        )
        row["n_pairs"] = len(paired) if paired is not None else 0
        row["n_test_images"] = 0
        for metric in METRICS:
            mean = float("nan")
            if paired is not None and len(paired):
                mean = float((paired[metric] - paired[f"{metric}_ref"]).mean())
            row |= {
                f"{metric}_diff": mean,
                f"{metric}_diff_ci_low": float("nan"),
                f"{metric}_diff_ci_high": float("nan"),
                f"{metric}_p": float("nan"),
            }
        if paired is not None and len(paired) and predictions is not None:
            runs = tuple(sorted(int(r) for r in paired["run"]))
            d, b, t, p = row["dataset"], row["backbone"], row["target"], row["probe"]
            shared = (d, b, t, p, row["layer"], runs)
            model_key = (d, b, row["representation"], row["train_representation"], t, p)
            tests.setdefault(shared, []).append((len(rows), model_key))
        rows.append(row)
    if tests:
        _test_differences(rows, tests, predictions, reference, threads)
    summary = pd.DataFrame(rows)
    families = summary.assign(
        transferred=summary["representation"] != summary["train_representation"]
    ).groupby(FAMILY, sort=False)
    for metric in METRICS:
        summary[f"{metric}_p_holm"] = np.nan
        for _, family in families:
            summary.loc[family.index, f"{metric}_p_holm"] = holm(family[f"{metric}_p"].to_numpy())
    diff_columns = [
        f"{metric}{suffix}"
        for metric in METRICS
        for suffix in ("_diff", "_diff_ci_low", "_diff_ci_high", "_p", "_p_holm")
    ]
    pair_columns = ["n_pairs", "n_test_images"]
    first = [c for c in summary.columns if c not in diff_columns and c not in pair_columns]
    summary = summary[[*first, *pair_columns, *diff_columns]]
    return add_selectivity(summary, metrics, resampled)


def _redrawn(resampled: bool | Collection[str], dataset: str) -> bool:
    """Whether `dataset`'s runs each drew their own test split (`summarise`'s
    `resampled`: for every dataset, or for those listed)."""
    return resampled is True or (not isinstance(resampled, bool) and dataset in resampled)


SELECTIVITY_COLUMNS = [
    "control_accuracy_mean",
    "selectivity_mean",
    "selectivity_ci_low",
    "selectivity_ci_high",
]


def add_selectivity(
    summary: pd.DataFrame, metrics: pd.DataFrame, resampled: bool | Collection[str] = False
) -> pd.DataFrame:
    """Hewitt & Liang's (2019) selectivity beside each class row whose model was also
    trained on the control target (same dataset, backbone, representation, layer, probe
    and runs): the control target's mean accuracy and, per run, class accuracy minus
    control accuracy (the same test images), with its t interval over runs (corrected like
    the accuracy's where runs redrew their test split). NaN where there is no control."""
    summary = summary.copy()
    for column in SELECTIVITY_COLUMNS:
        summary[column] = np.nan
    control = metrics[metrics["target"] == CONTROL]
    if control.empty:
        return summary
    keys = [k for k in KEYS if k != "target"]
    by_key = {key: group for key, group in control.groupby(keys, sort=False)}
    classes = metrics[metrics["target"] == CLASS]
    for key, group in classes.groupby(keys, sort=False):
        other = by_key.get(key)
        if other is None:
            continue
        paired = group.merge(other[["run", "accuracy"]], on="run", suffixes=("", "_control"))
        if paired.empty:
            continue
        dataset = paired["dataset"].iloc[0]
        overlap = 0.0
        if _redrawn(resampled, dataset):
            overlap = float(paired["n_test"].iloc[0] / paired["n_train"].iloc[0])
        mean, _, low, high = t_interval(
            (paired["accuracy"] - paired["accuracy_control"]).to_numpy(), overlap=overlap
        )
        where = (summary[keys] == pd.Series(dict(zip(keys, key, strict=True)))).all(axis=1) & (
            summary["target"] == CLASS
        )
        summary.loc[where, SELECTIVITY_COLUMNS] = [
            float(paired["accuracy_control"].mean()),
            mean,
            low,
            high,
        ]
    return summary


def _test_differences(
    rows: list[dict[str, Any]],
    tests: dict[tuple, list[tuple[int, tuple[str, ...]]]],
    predictions: PredictionLoader,
    reference: str,
    threads: int,
) -> None:
    """Each row's bootstrap interval and p-values against the reference (`summarise`).
    `tests`: (dataset, backbone, target, probe, layer, runs) -> [(row index, model key)].
    Models are loaded once per (dataset, backbone, target, probe), all of its layers'
    tests in a row; the bootstrap's weights once per set of test images (a family's)."""
    z = float(sps.norm.ppf(0.5 + CONFIDENCE / 2))
    by_family: dict[tuple, list[tuple]] = {}
    for shared in tests:
        by_family.setdefault(shared[:4], []).append(shared)
    weights: dict[tuple[int, bytes], tuple[np.ndarray, np.ndarray]] = {}
    loaded: dict[tuple[str, ...], dict[str, np.ndarray]] = {}

    def model(key: tuple[str, ...]) -> dict[str, np.ndarray]:
        if key not in loaded:
            loaded[key] = predictions(*key)
        return loaded[key]

    from threadpoolctl import threadpool_limits

    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    # the pool's threads in place of BLAS's own: one single-threaded product per run, so
    # that every thread count sums in the same order and gives the same numbers
    with threadpool_limits(1, user_api="blas"), pool or contextlib.nullcontext():
        for (d, b, t, p), members in by_family.items():
            loaded.clear()  # this family's models only
            for shared in members:
                layer, runs = shared[4], list(shared[5])
                ref_slice = _layer_slice(model((d, b, reference, reference, t, p)), runs, layer)
                images = np.unique(ref_slice["image"])
                key = (len(runs), images.tobytes())
                if key not in weights:
                    weights.clear()  # one set of images at a time: a family's
                    image_weights, run_weights = bootstrap_weights(len(images), len(runs))
                    # the same values, each image's replicates contiguous: fast to gather
                    weights[key] = (np.asfortranarray(image_weights), run_weights)
                indices = [index for index, _ in tests[shared]]
                others = [_layer_slice(model(k), runs, layer) for _, k in tests[shared]]
                n_classes = rows[indices[0]]["n_classes"]
                found = differences_to_reference(ref_slice, others, n_classes, weights[key], pool)
                for index, tested in zip(indices, found, strict=True):
                    _fill_test(rows[index], tested, z)


def _fill_test(row: dict[str, Any], tested: dict[str, Any], z: float) -> None:
    """A row's interval and p-values from its bootstrap replicates (`summarise`)."""
    row["n_test_images"] = tested["n_images"]
    for metric in METRICS:
        mean = row[f"{metric}_diff"]
        se = float(np.nanstd(tested["replicates"][metric], ddof=1))
        if se > 0:
            p_value = float(2 * sps.norm.sf(abs(mean) / se))
        else:
            p_value = 1.0 if mean == 0 else 0.0
        if metric == "accuracy":
            # also exact in the test images, where few of them differ
            p_value = max(p_value, tested["accuracy_p"])
        row |= {
            f"{metric}_diff_ci_low": mean - z * se,
            f"{metric}_diff_ci_high": mean + z * se,
            f"{metric}_p": p_value,
        }
