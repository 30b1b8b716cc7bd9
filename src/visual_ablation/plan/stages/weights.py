"""The weights stage: pretrained weights not yet in their library's cache, fetched once in
the main process (the fetch_weights checkpoint). Its marks are inputs of the feature jobs,
not targets."""

from __future__ import annotations

AFTER = ()


def targets(exp) -> list[str]:
    return []
