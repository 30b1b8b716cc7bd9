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
import functools
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as sps

from visual_ablation.analyses.inference import (
    CONFIDENCE,
    bootstrap_weights,
    differences_to_reference,
    holm,
    paired_interval,
    t_interval,
)
from visual_ablation.layout import WITHIN, ModelKey
from visual_ablation.probes.metrics import (
    METRICS,
    RUN_KEYS,
)
from visual_ablation.probes.run_files import PredictionLoader
from visual_ablation.vocabulary import CLASS, CONTROL


class Comparison(NamedTuple):
    """One layer's comparisons with the reference: the models of one (dataset, backbone,
    target, probe) tested on the same runs' test images."""

    dataset: str
    backbone: str
    target: str
    probe: str
    layer: str
    runs: tuple[int, ...]


KEYS = [k for k in RUN_KEYS if k != "run"]  # one summary row per these
# a row is compared with the reference's own row (trained and tested on the reference) of
# the same dataset, backbone, target, layer and probe
PAIR_KEYS = [k for k in KEYS if k not in ("representation", "train_representation", "transfer")]
# the Holm family: one (dataset, backbone, target, probe)'s comparisons, within
# representations or transferred from the reference in one way (`transfer`): a question
# each
FAMILY = ["dataset", "backbone", "target", "probe", "transfer"]
SUMMARISED = [*METRICS, "best_epoch", "epochs", "train_seconds"]

# per-image predictions of one model: (dataset, backbone, representation,
# train_representation, target, probe) -> {"runs", "layers", "image", "label",
# "predicted", "p_true", "confidence"} (probes/training.py)


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
    tests: dict[Comparison, list[tuple[int, ModelKey]]] = {}
    for key, group in metrics.groupby(KEYS, sort=False):
        row = dict(zip(KEYS, key, strict=True))
        row["n_runs"] = int(group["run"].nunique())
        row["n_classes"] = int(group["n_classes"].iloc[0])
        # runs whose validation chose a weight-decay grid's largest or smallest value
        edge = group.get("weight_decay_at_edge", pd.Series(dtype=object))
        row["weight_decay_at_edge_runs"] = int(edge.fillna("").astype(str).ne("").sum())
        overlap = 0.0
        if _redrawn(resampled, row["dataset"], row["target"]) and {"n_test", "n_train"} <= set(
            group
        ):
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
            shared = Comparison(d, b, t, p, row["layer"], runs)
            model = ModelKey(
                d, b, row["representation"], row["train_representation"], row["transfer"], t, p
            )
            tests.setdefault(shared, []).append((len(rows), model))
        rows.append(row)
    if tests:
        _test_differences(rows, tests, predictions, reference, threads)
    summary = pd.DataFrame(rows)
    families = summary.groupby(FAMILY, sort=False)
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
    return add_selectivity(summary, metrics, resampled, predictions)


def _redrawn(resampled: bool | Collection[str], dataset: str, target: str) -> bool:
    """Whether the runs of `dataset`'s `target` each drew their own test split
    (`summarise`'s `resampled`: for every dataset, or for those listed as `dataset` or
    `dataset/target`)."""
    if isinstance(resampled, bool):
        return resampled
    return dataset in resampled or f"{dataset}/{target}" in resampled


SELECTIVITY_COLUMNS = [
    "control_accuracy_mean",
    "selectivity_mean",
    "selectivity_ci_low",
    "selectivity_ci_high",
]


def add_selectivity(
    summary: pd.DataFrame,
    metrics: pd.DataFrame,
    resampled: bool | Collection[str] = False,
    predictions: PredictionLoader | None = None,
) -> pd.DataFrame:
    """Hewitt & Liang's (2019) selectivity beside each class row whose model was also
    trained on the control target (same dataset, backbone, representation, layer, probe
    and runs): the control target's mean accuracy and, per run, class accuracy minus
    control accuracy (the same test images), with the 95% interval of the paired bootstrap
    over test images and runs where `predictions` are given (inference.paired_interval, as
    the differences to the reference), else its t interval over runs (corrected like the
    accuracy's where runs redrew their test split). NaN where there is no control."""
    summary = summary.copy()
    for column in SELECTIVITY_COLUMNS:
        summary[column] = np.nan
    control = metrics[metrics["target"] == CONTROL]
    if control.empty:
        return summary
    # each model's predictions file read once, for all of its layers
    loaded = None if predictions is None else functools.cache(predictions)
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
        dataset, target = paired["dataset"].iloc[0], paired["target"].iloc[0]
        overlap = 0.0
        if _redrawn(resampled, dataset, target):
            overlap = float(paired["n_test"].iloc[0] / paired["n_train"].iloc[0])
        mean, _, low, high = t_interval(
            (paired["accuracy"] - paired["accuracy_control"]).to_numpy(), overlap=overlap
        )
        if predictions is not None:
            mean, low, high = _paired_selectivity(loaded, paired)
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


def _paired_selectivity(
    predictions: PredictionLoader, paired: pd.DataFrame
) -> tuple[float, float, float]:
    """Selectivity's mean and image-level paired interval from the class and control
    models' per-image predictions (`add_selectivity`)."""
    first = paired.iloc[0]
    runs = sorted(int(r) for r in paired["run"])
    correct = {}
    for target in (CLASS, CONTROL):
        key = ModelKey(
            first["dataset"],
            first["backbone"],
            first["representation"],
            first["train_representation"],
            first["transfer"],
            target,
            first["probe"],
        )
        part = _layer_slice(predictions(*key), runs, first["layer"])
        correct[target] = (part["predicted"] == part["label"]).astype(np.float64)
        correct[f"{target}/image"] = part["image"]
    if not np.array_equal(correct[f"{CLASS}/image"], correct[f"{CONTROL}/image"]):
        raise ValueError("the class and control probes were tested on other images: rerun them")
    return paired_interval(correct[f"{CLASS}/image"], correct[CLASS], correct[CONTROL])


def _test_differences(
    rows: list[dict[str, Any]],
    tests: dict[Comparison, list[tuple[int, ModelKey]]],
    predictions: PredictionLoader,
    reference: str,
    threads: int,
) -> None:
    """Each row's bootstrap interval and p-values against the reference (`summarise`).
    `tests`: each comparison -> [(row index, the tested model)].
    Models are loaded once per (dataset, backbone, target, probe), all of its layers'
    tests in a row; the bootstrap's weights once per set of test images (a family's)."""
    z = float(sps.norm.ppf(0.5 + CONFIDENCE / 2))
    by_family: dict[tuple[str, str, str, str], list[Comparison]] = {}
    for shared in tests:
        family = (shared.dataset, shared.backbone, shared.target, shared.probe)
        by_family.setdefault(family, []).append(shared)
    weights: dict[tuple[int, bytes], tuple[np.ndarray, np.ndarray]] = {}
    loaded: dict[ModelKey, dict[str, np.ndarray]] = {}

    def model(key: ModelKey) -> dict[str, np.ndarray]:
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
                layer, runs = shared.layer, list(shared.runs)
                own = ModelKey(d, b, reference, reference, WITHIN, t, p)
                ref_slice = _layer_slice(model(own), runs, layer)
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
