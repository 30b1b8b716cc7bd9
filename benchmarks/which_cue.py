"""Issue 26's tables from a finished default run: shape bias per layer beside the
either-cue share and each cue's decodability; transfer as trained and re-standardised
(with the largest share of test images put in one class) at blocks.5, blocks.8 and head
for lowpass, grayscale and edges; amnesic against random removal; and per representation
the class accuracy of EfficientNet, pixels and the image statistics (what leaks).

    .venv/bin/python benchmarks/which_cue.py --results results
"""

from __future__ import annotations

import argparse
import glob

import numpy as np
import pandas as pd


def largest_class_share(pattern: str) -> dict[str, float]:
    """Per layer, the mean over a model's prediction files of the largest share of test
    decisions given to one class."""
    shares: dict[str, list[float]] = {}
    for path in glob.glob(pattern):
        with np.load(path) as archive:
            predicted, layers = archive["predicted"], list(archive["layers"])
        for j, layer in enumerate(layers):
            values = predicted[:, j].ravel()
            shares.setdefault(str(layer), []).append(np.bincount(values).max() / len(values))
    return {layer: float(np.mean(v)) for layer, v in shares.items()}


def shape_bias_rows(results: str) -> None:
    table = pd.read_csv(f"{results}/shape_bias.csv")
    table = table[table["representation"] == table["train_representation"]]
    for (backbone, probe), group in table.groupby(["backbone", "probe"], sort=False):
        print(f"\n{backbone} / {probe}")
        print("| layer | shape bias [95% CI] | either cue [CI] | shape decodable | cue decodable |")
        print("|---|---|---|---|---|")
        for r in group.itertuples():
            bias = "NaN (guesser)"
            if not np.isnan(r.shape_bias):
                bias = f"{r.shape_bias:.2f} [{r.shape_bias_ci_low:.2f}, {r.shape_bias_ci_high:.2f}]"
            print(
                f"| {r.layer} | {bias} | {r.either_fraction:.2f} [{r.either_ci_low:.2f}, "
                f"{r.either_ci_high:.2f}] | {r.shape_decodability:.2f} | {r.cue_decodability:.2f} |"
            )


def transfer_rows(results: str, summary: pd.DataFrame) -> None:
    for probe in ("linear", "mlp"):
        print(f"\n{probe}")
        print(
            "| layer | tested on | trained on it | as trained | re-standardised | largest class |"
        )
        print("|---|---|---|---|---|---|")
        for layer in ("blocks.5", "blocks.8", "head"):
            for rep in ("lowpass", "grayscale", "edges"):
                rows = summary[
                    (summary["dataset"] == "shapes")
                    & (summary["backbone"] == "effnet")
                    & (summary["probe"] == probe)
                    & (summary["target"] == "class")
                    & (summary["layer"] == layer)
                    & (summary["representation"] == rep)
                ].set_index("transfer")
                cells = []
                for variant in ("as-trained", "restandardised"):
                    r = rows.loc[variant]
                    cells.append(
                        f"{r.accuracy_mean:.3f} [{r.accuracy_ci_low:.3f}, {r.accuracy_ci_high:.3f}]"
                    )
                share = [
                    largest_class_share(
                        f"{results}/transfer/{v}/shapes/effnet/{rep}/class/{probe}/"
                        "run*.predictions.npz"
                    )[layer]
                    for v in ("as-trained", "restandardised")
                ]
                print(
                    f"| {layer} | {rep} | {rows.loc['none'].accuracy_mean:.3f} | {cells[0]} | "
                    f"{cells[1]} | {share[0]:.2f} / {share[1]:.2f} |"
                )


def amnesic_rows(results: str) -> None:
    table = pd.read_csv(f"{results}/amnesic.csv")
    for probe in ("linear", "mlp"):
        part = table[(table["backbone"] == "effnet") & (table["probe"] == probe)]
        print(f"\n{probe}")
        print(
            "| layer | factor | directions | factor before -> after (majority) | at chance "
            "| intact | amnesic [CI] | random [CI] | amnesic - random [CI] |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for r in part.itertuples():
            print(
                f"| {r.layer} | {r.factor} | {r.directions:.0f} | {r.factor_accuracy_before:.2f}"
                f" -> {r.factor_accuracy_after:.2f} ({r.factor_majority:.2f}) | "
                f"{r.factor_removed:.2f} | {r.accuracy_intact:.3f} | {r.amnesic_change:+.1f} "
                f"[{r.amnesic_change_ci_low:+.1f}, {r.amnesic_change_ci_high:+.1f}] | "
                f"{r.random_change:+.1f} [{r.random_change_ci_low:+.1f}, "
                f"{r.random_change_ci_high:+.1f}] | {r.amnesic_minus_random:+.1f} "
                f"[{r.amnesic_minus_random_ci_low:+.1f}, {r.amnesic_minus_random_ci_high:+.1f}] |"
            )


def leakage_rows(summary: pd.DataFrame) -> None:
    columns = [
        ("effnet", "blocks.8"),
        ("effnet", "head"),
        ("pixels", "pixels"),
        ("statistics", "colour"),
        ("statistics", "amplitude"),
        ("statistics", "edges"),
    ]
    print("| representation | " + " | ".join(f"{b} {layer}" for b, layer in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    within = summary[
        (summary["dataset"] == "shapes")
        & (summary["probe"] == "linear")
        & (summary["target"] == "class")
        & (summary["transfer"] == "none")
    ]
    for rep, rows in within.groupby("representation", sort=False):
        cells = []
        for backbone, layer in columns:
            value = rows[(rows["backbone"] == backbone) & (rows["layer"] == layer)]
            cells.append(f"{value['accuracy_mean'].iloc[0]:.3f}" if len(value) else "-")
        print(f"| {rep} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="a finished default run's results")
    args = parser.parse_args()
    summary = pd.read_csv(f"{args.results}/summary.csv")
    print("## Shape bias beside its context (conflict, trained and tested on original)")
    shape_bias_rows(args.results)
    print("\n## Transfer (shapes, effnet, class): accuracy, mean [95% CI] over runs")
    transfer_rows(args.results, summary)
    print("\n## Amnesic against random removal (shapes, effnet; points)")
    amnesic_rows(args.results)
    print("\n## What leaks: class accuracy trained and tested on each representation (linear)")
    leakage_rows(summary)


if __name__ == "__main__":
    main()
