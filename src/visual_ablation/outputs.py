"""Job output files written so that a killed or failing job leaves nothing that looks
finished (stdlib only: every stage's environment can use it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


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
