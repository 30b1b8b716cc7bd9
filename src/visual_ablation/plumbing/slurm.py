"""A workflow's SLURM jobs: which job a rule's log belongs to, and this workflow's jobs
listed or cancelled.

Snakemake's SLURM plugin submits every job of one snakemake run under one job name, the
run's ID (`<slurm-jobname-prefix>_<uuid>`, logged as "SLURM run ID: ..." in
.snakemake/log/), and puts the rule and wildcards in the job's comment
(`rule_<rule>_wildcards_<values>`), which `squeue -o %k` shows. So:

    python -m visual_ablation.plumbing.slurm jobs     # this workflow's queued and running jobs
    python -m visual_ablation.plumbing.slurm cancel   # scancel exactly those

run in the workflow's working directory (or with --directory DIR), find the newest
snakemake log there, read its run ID and act on the jobs of that name only.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

RUN_ID = re.compile(r"SLURM run ID: (\S+)")


def job_line(environ: dict[str, str] | None = None) -> str | None:
    """For a job's own log: the SLURM job it runs as and where SLURM writes its log (what
    a memory or time kill leaves there, not in the rule's log), or None outside SLURM."""
    env = os.environ if environ is None else environ
    job = env.get("SLURM_JOB_ID")
    if not job:
        return None
    where = f"`scontrol show job {job}` (StdOut) names it"
    try:
        shown = subprocess.run(
            ["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=10
        ).stdout
        match = re.search(r"\bStdOut=(\S+)", shown)
        if match:
            where = match.group(1)
    except (OSError, subprocess.TimeoutExpired):
        pass
    node = env.get("SLURMD_NODENAME", "?")
    return f"SLURM job {job} on node {node}; SLURM's log of it: {where}"


def run_id(workdir: str | Path = ".") -> str:
    """The SLURM run ID of the newest snakemake run in `workdir`."""
    logs = sorted(
        (Path(workdir) / ".snakemake" / "log").glob("*.snakemake.log"),
        key=lambda p: p.stat().st_mtime,
    )
    for log in reversed(logs):
        found = RUN_ID.findall(log.read_text(errors="replace"))
        if found:
            return found[-1]
    raise SystemExit(
        f"no SLURM run ID in {Path(workdir) / '.snakemake' / 'log'}: was snakemake run "
        "there with the SLURM executor (--profile profiles/slurm)? Give --directory, the "
        "folder snakemake ran in."
    )


def jobs(name: str) -> list[tuple[str, str, str]]:
    """(job id, state, comment) of the queued and running jobs named `name`."""
    out = subprocess.run(
        ["squeue", "-h", "--name", name, "-o", "%i|%T|%k"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [tuple(line.split("|", 2)) for line in out.splitlines() if line]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["jobs", "cancel"])
    parser.add_argument("--directory", default=".", help="where snakemake ran")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    name = run_id(args.directory)
    listed = jobs(name)
    for job, state, comment in listed:
        print(f"{job}\t{state}\t{comment}")
    if args.action == "cancel":
        if listed:
            subprocess.run(["scancel", "--name", name], check=True)
        print(f"cancelled {len(listed)} job(s) of run {name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
