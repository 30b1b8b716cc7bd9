"""Job logging: details and progress go to the rule's log file, the error to the console.

Snakemake shows a failed job's log only with --show-failed-logs (set in the default
profile); printing the one-line reason to the real stderr makes it visible either way.
Every job enters here first, so it also sets what each job's process needs: malloc
keeping freed memory (plumbing/allocator.py).
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout

from visual_ablation.plumbing.allocator import keep_freed_memory


@contextmanager
def job_log(path: str) -> Iterator[None]:
    keep_freed_memory()
    console = sys.stderr
    with open(path, "w", buffering=1) as log_file:
        handler = logging.StreamHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        sys.stderr = log_file  # tqdm and warnings land in the log
        try:
            with redirect_stdout(log_file):  # libraries' prints too
                yield
        except Exception as err:
            traceback.print_exc(file=log_file)
            print(f"ERROR: {type(err).__name__}: {err}\n(details: {path})", file=console)
            raise SystemExit(1) from None
        finally:
            sys.stderr = console
            root.removeHandler(handler)
