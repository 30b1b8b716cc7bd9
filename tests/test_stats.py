"""Summary statistics on hand-made tables with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from visual_ablation import stats
from visual_ablation.metrics import METRICS

T_975_DF2 = 4.302652729911275  # t quantile 0.975 with 2 degrees of freedom (tables)


def p_two_sided_df2(t: float) -> float:
    """Closed form of the t distribution with 2 degrees of freedom."""
    return 1.0 - abs(t) / math.sqrt(2.0 + t * t)


def test_t_interval_of_one_two_three():
    mean, std, low, high = stats.t_interval(np.array([1.0, 2.0, 3.0]))
    half = T_975_DF2 * 1.0 / math.sqrt(3)
    assert (mean, std) == (2.0, 1.0)
    assert low == pytest.approx(2.0 - half) and high == pytest.approx(2.0 + half)


def test_t_interval_edge_cases():
    assert np.isnan(stats.t_interval(np.array([0.7]))[1])  # one run: no spread
    assert stats.t_interval(np.array([0.5, 0.5, 0.5])) == (0.5, 0.0, 0.5, 0.5)


def test_holm_adjusts_in_step_down_order():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone: 0.06
    adjusted = stats.holm(np.array([0.01, 0.04, 0.03, 0.005]))
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(stats.holm(np.array([0.5, np.nan, 0.4])), [0.8, np.nan, 0.8])
    assert stats.holm(np.array([0.9, 0.8]))[0] == 1.0  # capped at 1


def test_paired_p_value_matches_a_hand_computed_t_test():
    d = np.array([0.1, 0.2, 0.3])  # mean 0.2, sd 0.1, t = 0.2 / (0.1 / sqrt 3)
    assert stats.paired_p_value(d) == pytest.approx(p_two_sided_df2(0.2 / (0.1 / math.sqrt(3))))
    assert stats.paired_p_value(np.zeros(3)) == 1.0
    assert stats.paired_p_value(np.full(3, -0.1)) == 0.0


def _table() -> pd.DataFrame:
    rows = []
    accuracy = {
        ("original", "l1"): [0.80, 0.82, 0.84],
        ("gray", "l1"): [0.70, 0.71, 0.75],  # diffs -0.10, -0.11, -0.09
        ("original", "l2"): [0.90, 0.90, 0.90],
        ("gray", "l2"): [0.90, 0.90, 0.90],  # diffs 0
    }
    for (rep, layer), values in accuracy.items():
        for run, acc in enumerate(values):
            row = {"dataset": "d", "backbone": "b", "representation": rep, "layer": layer}
            row |= {"probe": "linear", "run": run, "best_epoch": 5, "epochs": 20}
            row |= {"train_seconds": 1.0, "n_classes": 10}
            row |= {m: acc for m in METRICS}
            rows.append(row)
    return pd.DataFrame(rows)


def test_summary_means_cis_and_paired_differences():
    summary = stats.summarise(_table(), reference="original").set_index(["representation", "layer"])
    original = summary.loc[("original", "l1")]
    assert original["n_runs"] == 3
    assert original["accuracy_mean"] == pytest.approx(0.82)
    assert original["accuracy_std"] == pytest.approx(0.02)
    half = T_975_DF2 * 0.02 / math.sqrt(3)
    assert original["accuracy_ci_low"] == pytest.approx(0.82 - half)
    assert original["accuracy_ci_high"] == pytest.approx(0.82 + half)
    assert np.isnan(original["accuracy_diff"])  # the reference is not compared with itself

    gray = summary.loc[("gray", "l1")]
    assert gray["n_pairs"] == 3
    assert gray["accuracy_diff"] == pytest.approx(-0.10)
    half = T_975_DF2 * 0.01 / math.sqrt(3)
    assert gray["accuracy_diff_ci_low"] == pytest.approx(-0.10 - half)
    assert gray["accuracy_diff_ci_high"] == pytest.approx(-0.10 + half)
    assert gray["accuracy_p"] == pytest.approx(p_two_sided_df2(-0.1 / (0.01 / math.sqrt(3))))
    # Holm over the family's two comparisons (l1: 0.0033, l2: 1.0)
    assert gray["accuracy_p_holm"] == pytest.approx(2 * gray["accuracy_p"])
    assert summary.loc[("gray", "l2"), "accuracy_p"] == 1.0
    assert summary.loc[("gray", "l2"), "accuracy_p_holm"] == 1.0


def test_summary_pairs_runs_not_positions():
    table = _table()
    # drop run 0 of gray/l1: only runs 1 and 2 are paired (diffs -0.11, -0.09)
    table = table[~((table.representation == "gray") & (table.layer == "l1") & (table.run == 0))]
    gray = stats.summarise(table).set_index(["representation", "layer"]).loc[("gray", "l1")]
    assert gray["n_pairs"] == 2 and gray["n_runs"] == 2
    assert gray["accuracy_diff"] == pytest.approx(-0.10)


def test_summary_without_reference_has_no_differences():
    summary = stats.summarise(_table(), reference=None)
    assert summary["accuracy_diff"].isna().all()
    assert (summary["n_pairs"] == 0).all()
