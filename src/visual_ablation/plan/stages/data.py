"""The data stage: each dataset decoded once into its data store (and Geirhos' stimuli
fetched first where a dataset says `fetch`). Its stores are inputs of later stages, not
targets."""

from __future__ import annotations

AFTER = ()


def targets(exp) -> list[str]:
    return []
