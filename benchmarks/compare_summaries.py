"""Two runs of the same experiment, compared: every row of summary.csv and the weight
decays each linear probe chose (metrics.csv), before and after a change that should not
move the numbers much (a faster solver, another engine).

Prints, per probe, how many summary rows moved by more than `--points` accuracy points
and lie outside the first run's 95% interval (the rows that fail "within half a point or
inside today's interval"), the largest moves, and the runs whose chosen weight decay
differs. With `--exact`, for each of those runs the decay scikit-learn's
`LogisticRegression` solved to a far tighter tolerance (1e-9) chooses on the same
validation split, read from the second run's stores: which run's choice is the exact
optimum's (stores whose train features are constant are counted apart: any decay fits
them alike). Exit status 1 when a row fails or a chosen decay differs.

    .venv/bin/python benchmarks/compare_summaries.py BEFORE/results AFTER/results --exact
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from common import default_config

KEYS = [
    "dataset",
    "backbone",
    "representation",
    "train_representation",
    "transfer",
    "target",
    "layer",
    "probe",
]
RUN_KEYS = [*KEYS, "run"]


def compare(before: Path, after: Path, points: float, show: int, exact: bool = False) -> int:
    old = pd.read_csv(before / "summary.csv")
    new = pd.read_csv(after / "summary.csv")
    both = old.merge(new, on=KEYS, suffixes=("_before", "_after"), how="outer", indicator=True)
    missing = both[both["_merge"] != "both"]
    print(f"summary rows: {len(old)} before, {len(new)} after, {len(missing)} in one only")
    both = both[both["_merge"] == "both"].copy()
    both["moved"] = 100 * (both["accuracy_mean_after"] - both["accuracy_mean_before"])
    inside = both["accuracy_mean_after"].between(
        both["accuracy_ci_low_before"], both["accuracy_ci_high_before"]
    )
    both["fails"] = (both["moved"].abs() > points) & ~inside
    failures = int(both["fails"].sum())
    for probe, rows in both.groupby("probe"):
        print(
            f"{probe}: {len(rows)} rows, largest move {rows['moved'].abs().max():.2f} points, "
            f"{int((rows['moved'].abs() > points).sum())} moved more than {points}, "
            f"{int(rows['fails'].sum())} of those outside the first run's interval"
        )
    columns = [*KEYS[:3], "transfer", "target", "layer", "probe", "moved"]
    largest = both.reindex(both["moved"].abs().sort_values(ascending=False).index)
    print("\nlargest moves (points; * outside the first run's interval):")
    for _, row in largest.head(show).iterrows():
        mark = "*" if row["fails"] else " "
        print(mark, " ".join(f"{row[c]:+.2f}" if c == "moved" else str(row[c]) for c in columns))

    decays = []
    for path in (before, after):
        metrics = pd.read_csv(path / "metrics.csv")
        linear = metrics[(metrics["transfer"] == "none") & metrics["weight_decay"].notna()]
        decays.append(linear.set_index(RUN_KEYS)["weight_decay"])
    joined = pd.concat(decays, axis=1, keys=["before", "after"], join="inner")
    differ = joined[joined["before"] != joined["after"]]
    print(f"\nchosen weight decays: {len(joined) - len(differ)} of {len(joined)} runs agree")
    if len(differ):
        print(differ.head(show).to_string())
    if exact and len(differ):
        exact_choices(after, differ)
    return 1 if failures or len(differ) or len(missing) else 0


def exact_choices(results: Path, differ: pd.DataFrame) -> None:
    """Which run chose the decay of the exact optimum, for each disagreeing linear run."""
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    from visual_ablation.data import splits
    from visual_ablation.features import feature_store
    from visual_ablation.plan.config import resolve
    from visual_ablation.probes import stacking, training
    from visual_ablation.probes.standardisation import standardise

    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    config = default_config()
    config["results_dir"] = config["cache_dir"] = str(results)
    exp = resolve(config)
    decays = stacking.ProbeConfig.from_spec(exp.probe_spec("linear")).decays
    tally = {"before": 0, "after": 0, "neither": 0, "constant features": 0}
    for key, row in differ.iterrows():
        dataset, backbone, representation, _, _, target, layer, _, run = key
        labels, n_classes, classes, fixed, given, _ = training.read_labels(
            exp.data_store(dataset), exp.data_spec(dataset), target
        )
        within = splits.target_images(target, fixed)
        split = splits.run_splits(
            classes, exp.split, list(range(exp.runs)), dataset, fixed, within=within, given=given
        )[run]
        spec = exp.feature_spec(dataset, backbone, representation)
        x = feature_store.read(exp.feature_store(dataset, backbone, representation), spec)
        train, val = split == splits.TRAIN, split == splits.VAL
        z = standardise(x[layer], train)
        if np.ptp(z[train], axis=0).max() == 0:
            tally["constant features"] += 1
            continue
        losses = []
        for decay in decays:
            fit = LogisticRegression(C=1 / (decay * train.sum()), max_iter=50_000, tol=1e-9)
            fit.fit(z[train], labels[train])
            losses.append(log_loss(labels[val], fit.predict_proba(z[val]), labels=range(n_classes)))
        best = decays[int(np.argmin(losses))]
        who = [name for name in ("before", "after") if row[name] == best] or ["neither"]
        tally[who[0]] += 1
    print(f"the exact optimum's choice (scikit-learn, tol 1e-9): {tally}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before", type=Path, help="the first run's results folder")
    parser.add_argument("after", type=Path, help="the second run's results folder")
    parser.add_argument("--points", type=float, default=0.5, help="accuracy points allowed")
    parser.add_argument("--show", type=int, default=15, help="rows of each listing")
    parser.add_argument("--exact", action="store_true", help="check decay choices (slow)")
    args = parser.parse_args()
    sys.exit(compare(args.before, args.after, args.points, args.show, args.exact))


if __name__ == "__main__":
    main()
