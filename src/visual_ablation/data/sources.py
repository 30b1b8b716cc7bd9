"""Every source, by its `source` name: the registry filled by procedural.py, files.py and
stimuli.py."""

from __future__ import annotations

from typing import Any

from visual_ablation.data import files, procedural, stimuli  # noqa: F401  (their classes register)
from visual_ablation.data.decode import DatasetError
from visual_ablation.data.source import SOURCES, Source

__all__ = ["SOURCES", "Source", "open_source"]


def open_source(spec: dict[str, Any]) -> Source:
    kind = SOURCES.get(spec["source"])
    if kind is None:
        raise DatasetError(f"unknown source {spec['source']!r}; known: {', '.join(SOURCES)}")
    return kind.open({**kind.defaults, **spec})  # a resolved spec has them already
