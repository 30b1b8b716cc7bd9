"""Small JSON records in the working directory's Snakemake folder that remember what is
slow to compute again on every `snakemake -n` (a file's hash, a library's metadata)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any


def remembered(path: str, key: str, compute: Callable[[], Any], keep: int = 200) -> Any:
    """`compute()` for `key`, read from the JSON record at `path` when it is there, else
    computed and added (the last `keep` keys kept; written atomically). A read-only
    working directory computes it again next time."""
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        record = {}
    if key in record:
        return record[key]
    record[key] = compute()
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        partial = f"{path}.{os.getpid()}.partial"
        with open(partial, "w") as f:
            json.dump(dict(list(record.items())[-keep:]), f)
        os.replace(partial, path)
    except OSError:
        pass
    return record[key]
