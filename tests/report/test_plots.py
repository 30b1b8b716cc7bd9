"""Every figure of the report drawn from real results tables (tests/assets/tables: a tiny
run's summary, shape bias, amnesic and similarity tables), without running the workflow:
each writes a PNG with something drawn on it, lays out the panels its rows call for, and
refuses a selection with no rows, naming it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import ASSETS
from PIL import Image

from visual_ablation.report import plots

TABLES = ASSETS / "tables"


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return {
        name: pd.read_csv(TABLES / f"{name}.csv")
        for name in ("summary", "shape_bias", "amnesic", "similarity")
    }


def drawn(path) -> tuple[int, int]:
    """The PNG's size, after checking that it is not one flat colour."""
    image = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert image.std() > 5, f"{path} is blank"
    return image.shape[1], image.shape[0]


@pytest.fixture(autouse=True)
def default_figures():
    saved = dict(plots.FIGURES)
    plots.configure(None)
    yield
    plots.FIGURES.clear()
    plots.FIGURES.update(saved)


def test_the_summary_figures_draw_a_panel_per_transfer_variant(tables, tmp_path):
    summary = tables["summary"]
    untrained = ("untrained", plots.selected(summary, "shapes", "untrained", "linear")[0])
    widths = {}
    for dataset in ("shapes", "geirhos"):  # every representation, original alone
        part, title = plots.selected(summary, dataset, "effnet", "linear")
        path = tmp_path / f"{dataset}_by_layer.png"
        plots.accuracy_by_layer(part, title, str(path), "original", untrained)
        widths[dataset] = drawn(path)[0]
        plots.targets_by_layer(part, title, str(tmp_path / f"{dataset}_targets.png"), "original")
        drawn(tmp_path / f"{dataset}_targets.png")
    # shapes has both transfer variants: two panels beside the trained-and-tested one
    assert widths["shapes"] > 2 * widths["geirhos"]
    part, title = plots.selected(summary, "shapes", "effnet", "mlp")
    plots.difference_heatmap(part, title, str(tmp_path / "difference.png"), "original")
    drawn(tmp_path / "difference.png")
    with pytest.raises(ValueError, match="dataset=shapes backbone=resnet probe=linear"):
        plots.selected(summary, "shapes", "resnet", "linear")


def test_the_analyses_figures_draw_from_their_tables(tables, tmp_path):
    plots.shape_bias_by_layer(
        tables["shape_bias"],
        "conflict",
        "linear",
        str(tmp_path / "bias.png"),
        frozenset({"statistics"}),
    )
    plots.decision_shape_bias(tables["shape_bias"], "geirhos", str(tmp_path / "decision.png"))
    plots.amnesic_by_layer(tables["amnesic"], "shapes", "effnet", "linear", str(tmp_path / "a.png"))
    plots.similarity_heatmap(tables["similarity"], "shapes", "effnet", str(tmp_path / "cka.png"))
    for name in ("bias", "decision", "a", "cka"):
        drawn(tmp_path / f"{name}.png")
    with pytest.raises(ValueError, match="no network rows for conflict"):
        plots.decision_shape_bias(tables["shape_bias"], "conflict", str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="dataset=conflict backbone=effnet"):
        plots.similarity_heatmap(
            tables["similarity"], "conflict", "effnet", str(tmp_path / "x.png")
        )
