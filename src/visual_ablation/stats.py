"""Summary over runs: means with t confidence intervals, paired differences to the
reference representation, paired t-tests and Holm's step-down adjustment."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from visual_ablation.metrics import METRICS, RUN_KEYS

KEYS = [k for k in RUN_KEYS if k != "run"]  # one summary row per these
# compared with the reference; the Holm family is one (dataset, backbone, probe)
FAMILY = ["dataset", "backbone", "probe"]
SUMMARISED = [*METRICS, "best_epoch", "epochs", "train_seconds"]
CONFIDENCE = 0.95


def t_interval(
    values: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float, float, float]:
    """mean, sample std (ddof 1), and the two-sided t interval of the mean.

    One value: std and interval are NaN (no spread to estimate). Zero spread: the
    interval is the mean itself.
    """
    values = np.asarray(values, dtype=float)
    n = len(values)
    mean = float(values.mean()) if n else float("nan")
    if n < 2:
        return mean, float("nan"), float("nan"), float("nan")
    std = float(values.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * std / np.sqrt(n)
    return mean, std, mean - half, mean + half


def paired_p_value(differences: np.ndarray) -> float:
    """Two-sided one-sample t-test of paired differences against 0.

    Identical differences give no t statistic: p = 1 when they are all 0, else 0.
    """
    d = np.asarray(differences, dtype=float)
    if len(d) < 2:
        return float("nan")
    if np.all(d == d[0]):
        return 1.0 if d[0] == 0 else 0.0
    return float(sps.ttest_1samp(d, 0.0).pvalue)


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


def summarise(metrics: pd.DataFrame, reference: str | None = "original") -> pd.DataFrame:
    """One row per (dataset, backbone, representation, layer, probe), in first-seen order.

    For each metric: mean, std, 95% t interval over runs. Against `reference` (same
    dataset, backbone, layer, probe and run): the mean paired difference, its 95% t
    interval, the paired t-test p-value and the Holm-adjusted p-value over that
    (dataset, backbone, probe)'s comparisons.
    """
    rows = []
    by_key = metrics.groupby(KEYS, sort=False)
    pair_keys = [k for k in KEYS if k != "representation"]
    ref_runs = {}
    if reference is not None:
        ref = metrics[metrics["representation"] == reference]
        ref_runs = {key: group for key, group in ref.groupby(pair_keys, sort=False)}
    for key, group in by_key:
        row = dict(zip(KEYS, key, strict=True))
        row["n_runs"] = int(group["run"].nunique())
        if "n_classes" in group:
            row["n_classes"] = int(group["n_classes"].iloc[0])
        for metric in SUMMARISED:
            mean, std, low, high = t_interval(group[metric].to_numpy())
            row |= {
                f"{metric}_mean": mean,
                f"{metric}_std": std,
                f"{metric}_ci_low": low,
                f"{metric}_ci_high": high,
            }
        other = ref_runs.get(tuple(row[k] for k in pair_keys))
        compare = reference is not None and row["representation"] != reference and other is not None
        paired = (
            group.merge(other[["run", *METRICS]], on="run", suffixes=("", "_ref"))
            if compare
            else None
        )
        row["n_pairs"] = len(paired) if paired is not None else 0
        for metric in METRICS:
            if paired is not None and len(paired):
                diff = (paired[metric] - paired[f"{metric}_ref"]).to_numpy()
                mean, _, low, high = t_interval(diff)
                p = paired_p_value(diff)
            else:
                mean = low = high = p = float("nan")
            row |= {
                f"{metric}_diff": mean,
                f"{metric}_diff_ci_low": low,
                f"{metric}_diff_ci_high": high,
                f"{metric}_p": p,
            }
        rows.append(row)
    summary = pd.DataFrame(rows)
    for metric in METRICS:
        summary[f"{metric}_p_holm"] = np.nan
        for _, family in summary.groupby(FAMILY, sort=False):
            summary.loc[family.index, f"{metric}_p_holm"] = holm(family[f"{metric}_p"].to_numpy())
    diff_columns = [
        f"{metric}{suffix}"
        for metric in METRICS
        for suffix in ("_diff", "_diff_ci_low", "_diff_ci_high", "_p", "_p_holm")
    ]
    first = [c for c in summary.columns if c not in diff_columns and c != "n_pairs"]
    return summary[[*first, "n_pairs", *diff_columns]]
