"""plumbing/slurm.py without a cluster: the run ID read from the newest snakemake log, a
job log's SLURM line (the cluster test checks it against a real job: tests/workflow/
test_slurm.py)."""

from __future__ import annotations

import os
import time

import pytest

from visual_ablation.plumbing import slurm


def test_the_newest_runs_id_is_read_and_a_folder_without_one_says_where_it_looked(tmp_path):
    logs = tmp_path / ".snakemake" / "log"
    logs.mkdir(parents=True)
    old = logs / "2026-12-01T100000.000000.snakemake.log"
    old.write_text("Building DAG of jobs...\nSLURM run ID: va_old\n")
    new = logs / "2026-12-02T100000.000000.snakemake.log"
    new.write_text("Using profile profiles/slurm\nSLURM run ID: va_1234-abcd\nJob 3 ...\n")
    past = time.time() - 100
    os.utime(old, (past, past))
    local = logs / "2026-12-03T100000.000000.snakemake.log"  # a later local run: no ID
    local.write_text("Building DAG of jobs...\n")
    assert slurm.run_id(tmp_path) == "va_1234-abcd"
    with pytest.raises(SystemExit, match=r"no SLURM run ID in .*\.snakemake/log"):
        slurm.run_id(tmp_path / "elsewhere")


def test_a_job_log_names_its_slurm_job_only_under_slurm(monkeypatch):
    assert slurm.job_line({}) is None
    monkeypatch.setenv("PATH", "")  # no scontrol: the line says how to find the log
    line = slurm.job_line({"SLURM_JOB_ID": "42", "SLURMD_NODENAME": "node2"})
    assert (
        line
        == "SLURM job 42 on node node2; SLURM's log of it: `scontrol show job 42` (StdOut) names it"
    )
