"""The workflow on a live single-node SLURM cluster (tests/slurm/cluster.sh), through
Snakemake's SLURM executor plugin and profiles/slurm: every job goes through sbatch,
feature and train jobs get a (fake) GPU from SLURM and fall back to the CPU, and the
results equal a local run's."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, Workflow, copy_workflow, tiny_config

pytestmark = [pytest.mark.workflow, pytest.mark.slurm]


def cluster_problem() -> str | None:
    """Why the SLURM test cannot run here, or None."""
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "the SLURM plugin is not installed (make test EXTRAS=dev,slurm)"
    if not shutil.which("sbatch"):
        return "no sbatch on PATH (tests/slurm/cluster.sh install)"
    try:
        states = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=20
        ).stdout.split()
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"sinfo failed: {err}"
    if not {"idle", "mixed", "allocated"} & set(states):
        return f"no SLURM node is up (sinfo: {states}); run tests/slurm/cluster.sh start"
    return None


@pytest.fixture(scope="module")
def cluster():
    problem = cluster_problem()
    if problem:
        if os.environ.get("VA_REQUIRE_SLURM") == "1":
            pytest.fail(f"VA_REQUIRE_SLURM=1 but {problem}")
        pytest.skip(problem)


def slurm_config() -> dict:
    """The tiny config with 13 cluster jobs: 1 data, 4 feature, 4 train, 2 transfer, 2
    similarity."""
    return tiny_config(runs=1, probes={"linear": {"hidden": 0, "max_epochs": 20, "patience": 5}})


def site_profile(dest: Path) -> Path:
    """profiles/slurm as a site would adapt it, plus the settings that make a test run
    take seconds: the first status check after 2 s, SLURM logs kept to be read."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"] = {"slurm_partition": "debug", "slurm_account": "va"}
    profile["slurm-init-seconds-before-status-checks"] = 2
    profile["slurm-keep-successful-logs"] = True
    profile["latency-wait"] = 5
    profile["retries"] = 0
    dest.mkdir(parents=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(profile))
    return dest


def metrics(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).drop(columns=["train_seconds"])


def sacct(job_ids: list[str]) -> dict[str, dict[str, str]]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", "JobID,State,AllocTRES"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if line]
    return {job: {"state": state, "tres": tres} for job, state, tres in rows}


def test_workflow_runs_through_slurm_with_gpu_requests_and_local_results(cluster, tmp_path):
    root = copy_workflow(tmp_path / "repo")
    local = Workflow(root, tmp_path / "local")
    local.write_config(slurm_config())
    # the cluster's jobs take their threads from the profile: float32 sums in another
    # order would move the fits' nll in the 5th digit, so the local run takes them too
    threads = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    local.run("--set-threads", *(f"{rule}={n}" for rule, n in threads["set-threads"].items()))

    work = tmp_path / "cluster"
    wf = Workflow(root, work)
    wf.write_config(slurm_config())
    profile = site_profile(tmp_path / "site-profile")
    # the plugin ignores SIGTERM while it waits on status checks: kill it if it hangs
    cmd = [
        "timeout",
        "-s",
        "KILL",
        "600",
        *wf.command("--profile", str(profile)),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]

    # every cluster job's log sits under .snakemake/slurm_logs/rule_<rule>/.../<id>.log
    logs = sorted((work / ".snakemake" / "slurm_logs").rglob("*.log"))
    by_rule: dict[str, list[str]] = {}
    for log in logs:
        rule = next(p for p in log.parts if p.startswith("rule_"))[len("rule_") :]
        by_rule.setdefault(rule, []).append(log.stem)
    assert {rule: len(ids) for rule, ids in by_rule.items()} == {
        "prepare_data": 1,
        "features": 4,
        "train": 4,
        "transfer": 2,  # one per train job of the other representation, every variant in it
        "similarity": 2,
    }
    job_ids = [job for ids in by_rule.values() for job in ids]
    assert all(re.fullmatch(r"\d+", job) for job in job_ids)
    accounted = sacct(job_ids)
    assert sorted(accounted) == sorted(job_ids)  # SLURM's accounting knows each one
    assert {row["state"] for row in accounted.values()} == {"COMPLETED"}
    # GPU jobs got one GPU from SLURM; the data, transfer and similarity jobs none
    for rule, ids in by_rule.items():
        for job in ids:
            assert ("gres/gpu=1" in accounted[job]["tres"]) == (rule in ("features", "train"))
    # the jobs kept SLURM's CUDA_VISIBLE_DEVICES and, finding no GPU, ran on the CPU
    feature_log = work / "results/logs/features/digits/effnet/original.log"
    text = feature_log.read_text()
    assert "CUDA_VISIBLE_DEVICES=0, set by SLURM; kept" in text
    assert "on cpu" in text
    pd.testing.assert_frame_equal(
        metrics(work / "results/metrics.csv"), metrics(local.workdir / "results/metrics.csv")
    )
