"""Job output files written so that a killed or failing job leaves nothing that looks
finished (stdlib only: every stage's environment can use it)."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


@contextmanager
def replacing(path: str) -> Iterator[str]:
    """Yield a sibling path to write; on success it replaces `path` atomically, on error
    it is removed and `path` is left as it was."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    partial = f"{path}.partial-{os.getpid()}"
    try:
        yield partial
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _cell(value: Any) -> Any:
    return f"{value:.10g}" if isinstance(value, float) else value


def write_csv(rows: list[dict[str, Any]], path: str, columns: list[str]) -> None:
    """Rows as a csv with these columns, written next to its final name and renamed: a
    killed job leaves no half csv. (csv, not pandas: a job should not pay for importing
    pandas.)"""
    with replacing(path) as partial, open(partial, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)


def write_table(table: pd.DataFrame, path: str) -> None:
    """A pandas table as csv (atomic; floats to 10 significant digits, as `write_csv`)."""
    with replacing(path) as partial:
        table.to_csv(partial, index=False, float_format="%.10g")
