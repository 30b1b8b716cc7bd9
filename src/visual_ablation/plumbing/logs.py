"""Job logging: details and progress go to the rule's log file, the error to the console.

Snakemake shows a failed job's log only with --show-failed-logs (set in the default
profile); printing the one-line reason to the real stderr makes it visible either way.
Every job enters here first, so it also sets what each job's process needs: malloc
keeping freed memory (plumbing/allocator.py); and a job's process ends with its block.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout

from visual_ablation.plumbing import slurm
from visual_ablation.plumbing.allocator import keep_freed_memory


@contextmanager
def job_log(path: str) -> Iterator[None]:
    """The job's block: its log, its errors, and then its end. The process exits when
    the block does (status 0, or 1 after an error), without the interpreter's teardown:
    its outputs are written and closed by then, and with torch loaded the teardown (freeing
    every module, unloading the CUDA libraries) took 0.35 s of every torch job
    (benchmarks/README.md, `default_run.py`). So a job script has nothing after
    its `with job_log(...)` block."""
    keep_freed_memory()
    console = sys.stderr
    with open(path, "w", buffering=1) as log_file:
        handler = logging.StreamHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        where = slurm.job_line()
        if where:  # a job killed for memory or time has the reason only in SLURM's log
            logging.getLogger(__name__).info(where)
        sys.stderr = log_file  # tqdm and warnings land in the log
        try:
            with redirect_stdout(log_file):  # libraries' prints too
                yield
        except Exception as err:
            traceback.print_exc(file=log_file)
            print(f"ERROR: {type(err).__name__}: {err}\n(details: {path})", file=console)
            status = 1
        else:
            status = 0
        finally:
            sys.stderr = console
            root.removeHandler(handler)
    sys.stdout.flush()
    console.flush()
    os._exit(status)
