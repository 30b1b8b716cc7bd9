"""What the benchmark scripts share: the repository's path and the default experiment's
config (config/config.yaml), read once here. A script imports it as `common` (its own
folder is on the path when it runs as `python benchmarks/<script>.py`)."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"


def default_config() -> dict:
    """The default experiment's config, as config/config.yaml writes it (a fresh copy)."""
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())
