"""Amnesic probing's claims and the runs they need: from a default run's amnesic.csv, per
(layer, factor, eraser) of one backbone and probe, the class heads' change when the factor
is erased and when as many random directions are removed, with the paired bootstrap's
95% intervals over test images and runs, the factor's accuracy after against its majority
rate, and the runs a claim "erasing costs more than random" needs for 80% power at a
two-sided 0.05 (the power table's method, docs/methods.md "Power"): R' = R ((z_0.975 +
z_0.8) se / |d|)^2, with se the interval's half-width / z_0.975 at R runs. It assumes the
standard error falls as 1 / sqrt(runs), which holds while each run draws new test images
(`split.resample`) and the dataset has images to spare; with a fixed test set it is a lower
bound.

    .venv/bin/python benchmarks/amnesic_power.py [--results results] [--backbone effnet]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd
from common import REPO
from scipy import stats as sps


def cell(row, name: str) -> str:
    """A change and its interval, in points."""
    low, high = row[f"{name}_ci_low"], row[f"{name}_ci_high"]
    return f"{row[name]:+6.1f} [{low:+6.1f}, {high:+6.1f}]"


def runs_needed(difference: float, half_width: float, runs: int, power: float = 0.8) -> int:
    z = sps.norm.ppf(0.975)
    se = half_width / z
    if difference == 0 or se == 0:
        return 0 if se == 0 else math.inf
    return math.ceil(runs * ((z + sps.norm.ppf(power)) * se / abs(difference)) ** 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(REPO / "results"))
    parser.add_argument("--dataset", default="shapes")
    parser.add_argument("--backbone", default="effnet")
    parser.add_argument("--probe", default="linear")
    parser.add_argument("--layers", default="blocks.5,blocks.8,head")
    parser.add_argument("--factors", default="colour,texture")
    args = parser.parse_args()
    table = pd.read_csv(Path(args.results) / "amnesic.csv")
    part = table[
        (table["dataset"] == args.dataset)
        & (table["backbone"] == args.backbone)
        & (table["probe"] == args.probe)
        & table["layer"].isin(args.layers.split(","))
        & table["factor"].isin(args.factors.split(","))
    ]
    print(
        f"{args.dataset} / {args.backbone} / {args.probe}: change of the class heads' accuracy "
        "(points, 95% paired bootstrap interval); factor accuracy before -> after (majority)"
    )
    print(
        f"{'layer':10s}{'factor':9s}{'eraser':7s}{'dirs':>5s}  {'factor':>20s}  "
        f"{'erased':>22s}  {'random':>22s}  {'erased - random':>22s}  runs for 80%"
    )
    for _, row in part.sort_values(["factor", "layer", "method"]).iterrows():
        half = (row["amnesic_minus_random_ci_high"] - row["amnesic_minus_random_ci_low"]) / 2
        needed = runs_needed(row["amnesic_minus_random"], half, int(row["n_runs"]))
        factor = (
            f"{row['factor_accuracy_before']:.2f} -> {row['factor_accuracy_after']:.2f} "
            f"({row['factor_majority']:.2f})"
        )
        print(
            f"{row['layer']:10s}{row['factor']:9s}{row['method']:7s}{row['directions']:5.0f}  "
            f"{factor:>20s}  {cell(row, 'amnesic_change')}  {cell(row, 'random_change')}  "
            f"{cell(row, 'amnesic_minus_random')}  {needed}"
        )


if __name__ == "__main__":
    main()
