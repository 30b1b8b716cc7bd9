"""Figures are written as the config's `figures` key says: the PNG at its dpi, and vector
copies beside it in the formats it asks for."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from visual_ablation.report import plots


@pytest.fixture
def figures_config():
    saved = dict(plots.FIGURES)
    yield
    plots.FIGURES.clear()
    plots.FIGURES.update(saved)


def grid(path) -> None:
    images = {"original": np.zeros((2, 8, 8, 3)), "grayscale": np.ones((2, 8, 8, 3)) / 2}
    plots.representation_grid(images, ["a", "b"], "d", str(path))


def test_only_the_png_by_default(tmp_path, figures_config):
    plots.configure(None)
    grid(tmp_path / "g.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png"]


def test_pdf_and_svg_beside_the_png_at_its_dpi(tmp_path, figures_config):
    plots.configure({"formats": ["pdf", "svg"], "dpi": 60})
    grid(tmp_path / "g.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.pdf", "g.png", "g.svg"]
    assert (tmp_path / "g.pdf").read_bytes().startswith(b"%PDF")
    assert b"<svg" in (tmp_path / "g.svg").read_bytes()[:2000]
    small = Image.open(tmp_path / "g.png").size
    plots.configure({"formats": [], "dpi": 120})
    grid(tmp_path / "h.png")
    assert Image.open(tmp_path / "h.png").size[0] == pytest.approx(2 * small[0], abs=2)
