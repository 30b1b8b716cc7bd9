"""One stable string per spec: what Snakemake's params compare and what a store's attrs
are checked against. A leaf (json only), so the spec model and the stores share it."""

from __future__ import annotations

import json
from typing import Any


def canonical(spec: dict[str, Any]) -> str:
    """The spec as sorted, compact JSON."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))
