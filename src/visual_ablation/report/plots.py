"""Figures from the summary table: accuracy by layer with CI bands, and a heatmap of the
paired difference to the reference representation; a heatmap of linear CKA to the
reference (similarity.csv); and a grid of example images through every representation."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # files only; jobs have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402

from visual_ablation.vocabulary import CLASS, FIGURE_DEFAULTS  # noqa: E402

SIGNIFICANCE = 0.05


def selected(summary: pd.DataFrame, dataset: str, backbone: str, probe: str):
    """The summary rows of one (dataset, backbone, probe), every target, and the title."""
    part = summary[
        (summary["dataset"] == dataset)
        & (summary["backbone"] == backbone)
        & (summary["probe"] == probe)
    ]
    if part.empty:
        raise ValueError(
            f"summary has no rows for dataset={dataset} backbone={backbone} probe={probe}"
        )
    return part, f"{dataset} / {backbone} / {probe} probe"


def main_target(part: pd.DataFrame) -> pd.DataFrame:
    """The rows of the dataset's own labels (`class`), or of its first target."""
    targets = list(dict.fromkeys(part["target"]))
    return part[part["target"] == (CLASS if CLASS in targets else targets[0])]


def within(part: pd.DataFrame) -> pd.DataFrame:
    """Rows of probes trained and tested on the same representation."""
    return part[part["representation"] == part["train_representation"]]


def accuracy_by_layer(
    part: pd.DataFrame,
    title: str,
    path: str,
    reference: str | None = "original",
    untrained: tuple[str, pd.DataFrame] | None = None,
) -> None:
    """Mean test accuracy per layer, one line and 95% CI band per representation (`part`:
    the summary rows of one figure, from `selected`): on the left probes trained and
    tested on each representation, then (when there are transfer rows) a panel per
    transfer variant: the reference's probes tested on each representation. `untrained`:
    (name, summary rows) of the same network with random weights, whose reference line
    the left panel shows too."""
    part = main_target(part)
    transferred = part[part["representation"] != part["train_representation"]]
    panels = [("trained and tested on each representation", within(part))]
    reference_rows = within(part)[within(part)["representation"] == reference]
    for variant, rows in transferred.groupby("transfer", sort=False):
        panels.append(
            (
                f"trained on {reference}, tested on each ({variant})",
                pd.concat([reference_rows, rows]),
            )
        )
    layers = list(dict.fromkeys(part["layer"]))
    width = max(6.0, 0.8 * len(layers) + 3)
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(width * len(panels) - 1.5 * (len(panels) - 1), 4.5),
        sharey=True,
        squeeze=False,
    )
    for ax, (subtitle, rows) in zip(axes[0], panels, strict=True):
        _accuracy_lines(ax, rows, layers, reference)
        ax.set_title(f"{title}, target {part['target'].iloc[0]}\n{subtitle}", fontsize=9)
    _control_line(axes[0, 0], within(part), layers, reference)
    if untrained is not None:
        name, rows = untrained
        rows = within(main_target(rows))
        rows = rows[rows["representation"] == reference].set_index("layer").reindex(layers)
        axes[0, 0].plot(
            np.arange(len(layers)),
            rows["accuracy_mean"],
            color="grey",
            linewidth=1.6,
            linestyle="-.",
            marker="s",
            markersize=3,
            label=f"{reference}, untrained ({name})",
        )
    # every panel's lines in one legend (the control and untrained lines are the left's)
    labelled = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            labelled.setdefault(label, handle)
    axes[0, -1].legend(
        labelled.values(),
        labelled.keys(),
        loc="center left",
        bbox_to_anchor=(1.01, 0.5),
        frameon=False,
        fontsize="small",
    )
    _save(fig, path)


def _control_line(ax, part: pd.DataFrame, layers: list[str], reference: str | None) -> None:
    """The reference's accuracy on the control target (Hewitt & Liang 2019), dashed: the
    gap down to it from the reference's line is the layer's selectivity."""
    if "control_accuracy_mean" not in part:
        return
    rows = part[part["representation"] == reference].set_index("layer").reindex(layers)
    if rows["control_accuracy_mean"].isna().all():
        return
    ax.plot(
        np.arange(len(layers)),
        rows["control_accuracy_mean"],
        color="black",
        linestyle="--",
        linewidth=1.2,
        marker="x",
        markersize=4,
        label=f"{reference}, control task",
    )


def _accuracy_lines(ax, part: pd.DataFrame, layers: list[str], reference: str | None) -> None:
    x = np.arange(len(layers))
    for representation, rows in part.groupby("representation", sort=False):
        rows = rows.set_index("layer").reindex(layers)
        is_ref = representation == reference
        line = ax.plot(
            x,
            rows["accuracy_mean"],
            marker="o",
            markersize=3,
            color="black" if is_ref else None,
            linewidth=2.4 if is_ref else 1.4,
            label=representation,
            zorder=3 if is_ref else 2,
        )[0]
        ax.fill_between(
            x,
            rows["accuracy_ci_low"],
            rows["accuracy_ci_high"],
            color=line.get_color(),
            alpha=0.15,
            linewidth=0,
        )
    if "n_classes" in part and part["n_classes"].notna().any():
        ax.axhline(
            1.0 / part["n_classes"].max(), color="grey", linestyle=":", linewidth=1, label="chance"
        )
    n_runs = int(part["n_runs"].min())
    ax.set_xticks(x, layers, rotation=45, ha="right")
    ax.set_xlabel("layer")
    ax.set_ylabel(f"test accuracy (mean, 95% CI over {n_runs} runs)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)


def targets_by_layer(
    part: pd.DataFrame, title: str, path: str, reference: str | None = "original"
) -> None:
    """What each layer of the reference representation encodes: per target, balanced
    accuracy rescaled so that chance (1 / classes) is 0 and perfect is 1, with its 95% CI.
    Targets with different numbers of classes are then on one scale."""
    rows = within(part)
    rows = rows[rows["representation"] == (reference or rows["representation"].iloc[0])]
    layers = list(dict.fromkeys(rows["layer"]))
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(layers) + 3), 4.5))
    lowest = -0.1  # below chance happens: e.g. class probes that follow a conflicting cue
    for target, group in rows.groupby("target", sort=False):
        group = group.set_index("layer").reindex(layers)
        chance = 1.0 / group["n_classes"].max()

        def rescaled(column: str, chance=chance, group=group) -> np.ndarray:
            return (group[column].to_numpy(dtype=float) - chance) / (1.0 - chance)

        k = int(group["n_classes"].max())
        line = ax.plot(
            x,
            rescaled("balanced_accuracy_mean"),
            marker="o",
            markersize=3,
            label=f"{target} ({k} classes)",
        )[0]
        lowest = min(lowest, float(np.nanmin(rescaled("balanced_accuracy_mean"))) - 0.05)
        ax.fill_between(
            x,
            rescaled("balanced_accuracy_ci_low"),
            rescaled("balanced_accuracy_ci_high"),
            color=line.get_color(),
            alpha=0.15,
            linewidth=0,
        )
    ax.axhline(0.0, color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_xticks(x, layers, rotation=45, ha="right")
    ax.set_xlabel("layer")
    _finish(
        ax,
        "balanced accuracy above chance\n(0 = chance, 1 = perfect; 95% CI)",
        (lowest, 1.02),
        f"{title}: what each layer of {reference} encodes",
    )
    _save(fig, path)


def _finish(ax, ylabel: str, ylim: tuple[float, float], title: str) -> None:
    """A line figure's y axis, grid, title and legend (right of the axes)."""
    ax.set_ylabel(ylabel)
    ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize="small")


def shape_bias_by_layer(
    table: pd.DataFrame,
    dataset: str,
    probe: str,
    path: str,
    unordered: frozenset[str] = frozenset(),
) -> None:
    """Shape bias per layer (shape_bias.csv's rows of one dataset and probe, probes trained
    and tested on the reference), one line and 95% CI band per backbone; no point where
    the layer's decisions follow either cue no more often than a guesser (NaN). Below,
    its context: the shape's and the cue's decodability on the conflict images (where the
    dataset lists those targets) and the share of decisions that follow either cue.
    `unordered`: backbones whose layers are not stages in depth, drawn as points."""
    part = table[(table["dataset"] == dataset) & (table["probe"] == probe)]
    part = part[part["representation"] == part["train_representation"]]
    part = part[part["representation"] == part["reference"]]
    if part.empty:
        raise ValueError(f"shape_bias.csv has no rows for dataset={dataset} probe={probe}")
    fig, (bias_ax, context_ax) = plt.subplots(
        2, 1, figsize=(7.5, 7.5), sharex=True, height_ratios=(1.0, 1.0)
    )
    for backbone, rows in part.groupby("backbone", sort=False):
        # relative depth, so that backbones of other lengths share the axis
        depth = np.linspace(0.0, 1.0, len(rows)) if len(rows) > 1 else np.array([1.0])
        value = rows["shape_bias"].to_numpy(dtype=float)
        below = value - rows["shape_bias_ci_low"].to_numpy(dtype=float)
        above = rows["shape_bias_ci_high"].to_numpy(dtype=float) - value
        style = "none" if backbone in unordered else "-"
        line = bias_ax.errorbar(
            depth,
            value,
            yerr=[below, above],
            marker="o",
            markersize=3,
            capsize=2,
            linestyle=style,
            label=backbone,
        )
        colour = line[0].get_color()
        for d, v, layer in zip(depth, value, rows["layer"], strict=True):
            if np.isfinite(v):
                bias_ax.annotate(
                    layer, (d, v), fontsize=6, xytext=(2, 3), textcoords="offset points"
                )
        context_ax.plot(
            depth,
            rows["either_fraction"],
            color=colour,
            linestyle="none" if backbone in unordered else ":",
            marker=".",
            label=f"{backbone}: decisions following either",
        )
        for name, line_style, marker in (("shape", "-", "o"), ("cue", "--", "x")):
            column = f"{name}_decodability"
            if column in rows and rows[column].notna().any():
                context_ax.plot(
                    depth,
                    rows[column],
                    color=colour,
                    linestyle="none" if backbone in unordered else line_style,
                    marker=marker,
                    markersize=4,
                    label=f"{backbone}: {name} decodable",
                )
    bias_ax.set_xlabel("")
    _finish(
        bias_ax,
        "shape bias: shape / (shape + cue) decisions\n(95% CI over test images, runs)",
        (-0.02, 1.02),
        f"{dataset} / {probe} probe on cue-conflict test images",
    )
    guesser = float(part["guesser_either"].iloc[0])
    context_ax.axhline(guesser, color="grey", linestyle=":", linewidth=1, label="guesser (2/K)")
    context_ax.axhline(guesser / 2, color="grey", linestyle="-.", linewidth=1, label="chance (1/K)")
    context_ax.set_xlabel("relative depth (first named layer 0, last 1)")
    _finish(
        context_ax,
        "share of test images\n(accuracy on conflict images)",
        (-0.02, 1.02),
        "its context: each cue decoded apart, decisions following either",
    )
    _save(fig, path)


def amnesic_by_layer(
    table: pd.DataFrame, dataset: str, backbone: str, probe: str, path: str
) -> None:
    """amnesic.csv's rows of one (dataset, backbone, probe): per eraser (a row of panels)
    and factor, the change of the class heads' test accuracy (points, 95% CI) when the
    eraser removes the factor (left) and when as many random directions are removed
    (right)."""
    part = table[
        (table["dataset"] == dataset) & (table["backbone"] == backbone) & (table["probe"] == probe)
    ]
    if part.empty:
        raise ValueError(f"amnesic.csv has no rows for {dataset}/{backbone}/{probe}")
    layers = list(dict.fromkeys(part["layer"]))
    methods = list(dict.fromkeys(part["method"]))
    x = np.arange(len(layers))
    fig, axes = plt.subplots(
        len(methods),
        2,
        figsize=(2 * max(5.0, 0.7 * len(layers) + 2.5), 4.0 * len(methods)),
        sharey=True,
        squeeze=False,
    )
    for panels, method in zip(axes, methods, strict=True):
        rows_of = part[part["method"] == method]
        titles = (
            ("amnesic_change", f"the factor erased ({method.upper()})"),
            ("random_change", f"as many random directions removed (as {method.upper()})"),
        )
        for ax, (column, subtitle) in zip(panels, titles, strict=True):
            for factor, rows in rows_of.groupby("factor", sort=False):
                rows = rows.set_index("layer").reindex(layers)
                line = ax.plot(x, rows[column], marker="o", markersize=3, label=factor)[0]
                ax.fill_between(
                    x,
                    rows[f"{column}_ci_low"],
                    rows[f"{column}_ci_high"],
                    color=line.get_color(),
                    alpha=0.15,
                    linewidth=0,
                )
            ax.axhline(0.0, color="grey", linestyle=":", linewidth=1)
            ax.set_xticks(x, layers, rotation=45, ha="right")
            ax.set_xlabel("layer")
            ax.set_title(f"{dataset} / {backbone} / {probe}: {subtitle}", fontsize=9)
            ax.grid(alpha=0.3)
        panels[0].set_ylabel("class accuracy change (points; 95% CI)")
    axes[0, 1].legend(
        loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize="small"
    )
    _save(fig, path)


def difference_heatmap(
    part: pd.DataFrame, title: str, path: str, reference: str | None = "original"
) -> None:
    """Paired accuracy difference to `reference` in points, representation x layer: the
    probes trained on each representation, then (labelled `... (ref heads, variant)`) the
    reference's probes tested on each, the transfer variants of one representation on
    adjacent rows; * marks a Holm-adjusted p < 0.05 of the
    image-level test (analyses/stats.py)."""
    part = main_target(part)
    part = part[(part["representation"] != reference) | (part["train_representation"] != reference)]
    if part.empty:  # a backbone computed for the reference only
        fig, ax = plt.subplots(figsize=(6.0, 2.0))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{title}: no representation besides {reference}", ha="center")
        _save(fig, path)
        return
    transferred = part["representation"] != part["train_representation"]
    part = part.assign(
        row=np.where(
            transferred,
            part["representation"] + f" ({reference} heads, " + part["transfer"] + ")",
            part["representation"],
        )
    )
    layers = list(dict.fromkeys(part["layer"]))
    # the probes trained on each representation, then each representation's transfer
    # variants next to each other
    rank = {r: i for i, r in enumerate(dict.fromkeys(part["representation"]))}
    order = part.assign(transferred=transferred, rank=part["representation"].map(rank)).sort_values(
        ["transferred", "rank"], kind="stable"
    )
    representations = list(dict.fromkeys(order["row"]))
    diff = part.pivot(index="row", columns="layer", values="accuracy_diff").reindex(
        index=representations, columns=layers
    )
    p_holm = part.pivot(index="row", columns="layer", values="accuracy_p_holm").reindex(
        index=representations, columns=layers
    )
    points = 100.0 * diff.to_numpy(dtype=float)
    fig, ax = plt.subplots(
        figsize=(max(6.0, 0.75 * len(layers) + 3), max(3.0, 0.45 * len(representations) + 1.8))
    )
    if np.isfinite(points).any():
        limit = max(float(np.nanmax(np.abs(points))), 0.5)
        image = ax.imshow(points, cmap="RdBu", norm=TwoSlopeNorm(0.0, -limit, limit), aspect="auto")
        fig.colorbar(image, ax=ax, label=f"accuracy - {reference} (points)")
        for i in range(points.shape[0]):
            for j in range(points.shape[1]):
                if np.isfinite(points[i, j]):
                    star = "*" if p_holm.iat[i, j] < SIGNIFICANCE else ""
                    dark = abs(points[i, j]) > 0.6 * limit
                    ax.text(
                        j,
                        i,
                        f"{points[i, j]:.1f}{star}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if dark else "black",
                    )
    else:
        ax.text(
            0.5,
            0.5,
            f"no representation besides '{reference}' to compare",
            transform=ax.transAxes,
            ha="center",
        )
    ax.set_xticks(np.arange(len(layers)), layers, rotation=45, ha="right")
    ax.set_yticks(np.arange(len(representations)), representations)
    ax.set_xlabel("layer")
    ax.set_title(f"{title}: accuracy vs {reference} (* Holm p < {SIGNIFICANCE})")
    _save(fig, path)


def similarity_heatmap(table: pd.DataFrame, dataset: str, backbone: str, path: str) -> None:
    """Debiased linear CKA to the reference per representation x layer (similarity.csv's
    rows of one dataset and backbone): 1 = the layer's features are unchanged up to a
    rotation; a cell at or below its permutation null (`cka_null`) is marked `~0`."""
    part = table[(table["dataset"] == dataset) & (table["backbone"] == backbone)]
    if part.empty:
        raise ValueError(f"similarity.csv has no rows for dataset={dataset} backbone={backbone}")
    layers = list(dict.fromkeys(part["layer"]))
    representations = list(dict.fromkeys(part["representation"]))

    def grid(column: str) -> np.ndarray:
        pivot = part.pivot(index="representation", columns="layer", values=column)
        return pivot.reindex(index=representations, columns=layers).to_numpy(dtype=float)

    values, null = grid("cka_debiased"), grid("cka_null")
    fig, ax = plt.subplots(
        figsize=(max(6.0, 0.75 * len(layers) + 3), max(3.0, 0.45 * len(representations) + 1.8))
    )
    image = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    fig.colorbar(image, ax=ax, label=f"debiased linear CKA to {part['reference'].iloc[0]}")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            ax.text(
                j,
                i,
                f"{values[i, j]:.2f}" if values[i, j] > null[i, j] else "~0",
                ha="center",
                va="center",
                fontsize=7,
                color="black" if values[i, j] > 0.6 else "white",
            )
    ax.set_xticks(np.arange(len(layers)), layers, rotation=45, ha="right")
    ax.set_yticks(np.arange(len(representations)), representations)
    ax.set_xlabel("layer")
    n = int(part["n_images"].iloc[0])
    ax.set_title(
        f"{dataset} / {backbone}: debiased linear CKA to {part['reference'].iloc[0]} ({n} images)"
    )
    _save(fig, path)


def representation_grid(
    images: dict[str, np.ndarray], class_names: list[str], dataset: str, path: str
) -> None:
    """One row per image, one column per representation ([k, h, w, 3] in [0, 1] each)."""
    names = list(images)
    rows = len(class_names)
    fig, axes = plt.subplots(
        rows, len(names), figsize=(1.4 * len(names) + 0.6, 1.4 * rows + 0.5), squeeze=False
    )
    for j, name in enumerate(names):
        for i in range(rows):
            ax = axes[i, j]
            ax.imshow(images[name][i], interpolation="nearest", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
            if j == 0:
                ax.set_ylabel(class_names[i], fontsize=8)
    fig.suptitle(f"{dataset}: each representation of the same images", fontsize=9)
    _save(fig, path)


# the config's `figures`: the PNG's resolution and the formats written beside it (the
# schema's defaults until a plotting job's config replaces them)
FIGURES = dict(FIGURE_DEFAULTS)


def configure(figures: dict | None) -> None:
    """Take the config's `figures` key (a plotting job calls this once)."""
    FIGURES.update(figures or {})


def decision_shape_bias(table: pd.DataFrame, dataset: str, path: str) -> None:
    """shape_bias.csv's network rows of one dataset: each backbone's own shape bias (95%
    interval) per representation, with the human observers' value as a dashed line."""
    from visual_ablation.analyses.shape_bias import HUMAN_SHAPE_BIAS, NETWORK

    part = table[(table["dataset"] == dataset) & (table["probe"] == NETWORK)]
    if part.empty:
        raise ValueError(f"shape_bias.csv has no network rows for {dataset}")
    representations = list(dict.fromkeys(part["representation"]))
    x = np.arange(len(representations))
    backbones = list(dict.fromkeys(part["backbone"]))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(representations) + 3.0), 4.0))
    width = 0.8 / len(backbones)
    for i, backbone in enumerate(backbones):
        rows = (
            part[part["backbone"] == backbone].set_index("representation").reindex(representations)
        )
        at = x - 0.4 + width * (i + 0.5)
        ax.errorbar(
            at,
            rows["shape_bias"],
            yerr=[
                rows["shape_bias"] - rows["shape_bias_ci_low"],
                rows["shape_bias_ci_high"] - rows["shape_bias"],
            ],
            fmt="o",
            capsize=3,
            label=backbone,
        )
    ax.axhline(HUMAN_SHAPE_BIAS, color="black", linestyle="--", linewidth=1)
    ax.text(x[-1] + 0.45, HUMAN_SHAPE_BIAS, "humans", va="bottom", ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_xticks(x, representations, rotation=30, ha="right")
    ax.set_ylabel("shape bias (the network's own decisions)")
    ax.set_title(f"{dataset}: shape decisions / (shape + texture decisions)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize="small")
    _save(fig, path)


def _save(fig: plt.Figure, path: str) -> None:
    """The figure as `path` (PNG, what the rules declare and the report shows) and, for
    each of `figures.formats`, beside it with that suffix (PDF, SVG: vector copies)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURES["dpi"])
    stem = os.path.splitext(path)[0]
    for fmt in FIGURES["formats"]:
        fig.savefig(f"{stem}.{fmt}")
    plt.close(fig)
