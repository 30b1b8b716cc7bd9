"""The workflow on a live two-node SLURM cluster (tests/slurm/cluster.sh), through
Snakemake's SLURM executor plugin and profiles/slurm: every job goes through sbatch, on
both nodes; feature and train jobs get a (fake) GPU from SLURM and fall back to the CPU;
train jobs given less memory than they use (an override as docs/operations.md writes
one) are killed by SLURM and retried with twice as much; the results equal a local run's;
and a stopped run's queued jobs are cancelled by the one command the docs give."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, Workflow, copy_workflow, tiny_config

from visual_ablation.plumbing import slurm

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


# a train job's first attempt under what it uses (its job step, snakemake and the script's
# torch process: 680 to 760 MB on the test cluster), its retry at twice as much above it
TRAIN_MEM_MB = 500


def site_profile(dest: Path, edit=None) -> Path:
    """profiles/slurm as a site would adapt it, plus the settings that make a test run
    take seconds: the first status check after 2 s, SLURM logs kept to be read."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"] = {"slurm_partition": "debug", "slurm_account": "va"}
    profile["slurm-init-seconds-before-status-checks"] = 2
    profile["slurm-keep-successful-logs"] = True
    profile["latency-wait"] = 5
    profile["retries"] = 0
    if edit:  # what one test changes besides
        edit(profile)
    dest.mkdir(parents=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(profile))
    return dest


def metrics(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).drop(columns=["train_seconds"])


SACCT = ("JobID", "JobName", "State", "AllocTRES", "NodeList", "ReqMem", "Comment")


def sacct(job_ids: list[str]) -> dict[str, dict[str, str]]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", ",".join(SACCT)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [dict(zip(SACCT, line.split("|"), strict=True)) for line in out.splitlines() if line]
    return {row["JobID"]: row for row in rows}


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

    # train jobs under their need, as the docs write an override: killed, then retried
    def edit(p):
        p["retries"] = 1
        p["set-resources"]["train"]["mem_mb"] = f"{TRAIN_MEM_MB}*attempt"

    profile = site_profile(tmp_path / "site-profile", edit)
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
    assert "does not grow with attempt" not in output

    # every cluster job's log sits under .snakemake/slurm_logs/rule_<rule>/.../<id>.log
    logs = sorted((work / ".snakemake" / "slurm_logs").rglob("*.log"))
    by_rule: dict[str, list[str]] = {}
    for log in logs:
        rule = next(p for p in log.parts if p.startswith("rule_"))[len("rule_") :]
        by_rule.setdefault(rule, []).append(log.stem)
    assert {rule: len(ids) for rule, ids in by_rule.items()} == {
        "prepare_data": 1,
        "features": 4,
        "train": 8,  # 4 killed for memory, 4 retried
        "transfer": 2,  # one per train job of the other representation, every variant in it
        "similarity": 2,
    }
    job_ids = [job for ids in by_rule.values() for job in ids]
    assert all(re.fullmatch(r"\d+", job) for job in job_ids)
    accounted = sacct(job_ids)
    assert sorted(accounted) == sorted(job_ids)  # SLURM's accounting knows each one
    states = {rule: sorted(accounted[job]["State"] for job in ids) for rule, ids in by_rule.items()}
    # the test cluster kills for memory by polling (OverMemoryKill): the job FAILED, its step
    # killed, and SLURM's log says why (a cgroup-enforcing site says OUT_OF_MEMORY)
    assert states["train"] == ["COMPLETED"] * 4 + ["FAILED"] * 4, states
    assert {s for rule, ss in states.items() if rule != "train" for s in ss} == {"COMPLETED"}
    for log in (work / ".snakemake" / "slurm_logs" / "rule_train").rglob("*.log"):
        killed = accounted[log.stem]["State"] == "FAILED"
        assert ("Exceeded job memory limit" in log.read_text()) == killed, log
        assert accounted[log.stem]["ReqMem"] == f"{TRAIN_MEM_MB * (1 + (not killed))}M"
    # the run's jobs share its name (va_<run id>); each job's comment names its rule
    assert len({row["JobName"] for row in accounted.values()}) == 1
    assert next(iter(accounted.values()))["JobName"].startswith("va_")
    for rule, ids in by_rule.items():
        assert all(accounted[job]["Comment"].startswith(f"rule_{rule}") for job in ids)
    # both nodes ran jobs
    assert {row["NodeList"] for row in accounted.values()} == {"node1", "node2"}
    # GPU jobs got one GPU from SLURM; the data, transfer and similarity jobs none
    for rule, ids in by_rule.items():
        for job in ids:
            assert ("gres/gpu=1" in accounted[job]["AllocTRES"]) == (rule in ("features", "train"))
    # the jobs kept SLURM's CUDA_VISIBLE_DEVICES and, finding no GPU, ran on the CPU; the
    # rule's log names its SLURM job and SLURM's own log of it
    feature_log = work / "results/logs/features/digits/effnet/original.log"
    text = feature_log.read_text()
    assert "CUDA_VISIBLE_DEVICES=0, set by SLURM; kept" in text
    assert "on cpu" in text
    named = re.search(r"SLURM job (\d+) on node (node[12]); SLURM's log of it: (\S+)", text)
    assert named and named.group(1) in by_rule["features"], text[:2000]
    assert Path(named.group(3)).is_file()
    pd.testing.assert_frame_equal(
        metrics(work / "results/metrics.csv"), metrics(local.workdir / "results/metrics.csv")
    )


def running(rule: str) -> list[tuple[str, str]]:
    """(job id, node) of the running SLURM jobs of `rule`."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "R", "-o", "%i %N %k"], capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return [(job, node) for job, node, comment in rows if comment.startswith(f"rule_{rule}_")]


def test_a_node_lost_mid_job_costs_one_retry_on_the_other_node(cluster, tmp_path):
    """A node set DOWN while it runs a feature job: the job ends NODE_FAIL, Snakemake submits
    it again (profiles/slurm: retries, no requeue), away from that node, and the workflow
    finishes (with SLURM's requeue, the plugin's next sbatch
    fails on `--exclude=None assigned`: snakemake-executor-plugin-slurm#485)."""
    root = copy_workflow(tmp_path / "repo")
    work = tmp_path / "cluster"
    wf = Workflow(root, work)
    wf.write_config(slurm_config())

    def edit(p):
        p["retries"] = 1

    profile = site_profile(tmp_path / "site-profile", edit)
    cmd = ["timeout", "-s", "KILL", "600", *wf.command("--profile", str(profile))]
    run = subprocess.Popen(
        cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 180
    while not running("features") and time.monotonic() < deadline:
        time.sleep(0.2)
    lost_job, lost_node = running("features")[0]
    subprocess.run(
        ["scontrol", "update", f"NodeName={lost_node}", "State=DOWN", "Reason=test-lost"],
        check=True,
    )
    try:
        output, _ = run.communicate(timeout=600)
    finally:  # the node comes back by itself (ReturnToService=2) or here
        subprocess.run(["scontrol", "update", f"NodeName={lost_node}", "State=RESUME"])
    assert run.returncode == 0, output[-6000:]
    assert f"SLURM-job '{lost_job}' failed due to a node failure" in output
    assert "excluded from subsequent submissions: " + lost_node in output
    logs = (work / ".snakemake" / "slurm_logs" / "rule_features").rglob("*.log")
    accounted = sacct([log.stem for log in logs])
    assert accounted[lost_job]["State"] == "NODE_FAIL"
    assert sum(row["State"] == "COMPLETED" for row in accounted.values()) == 4
    # the retried job ran on the other node
    retried = [
        row
        for job, row in accounted.items()
        if job != lost_job and row["Comment"] == accounted[lost_job]["Comment"]
    ]
    assert [row["NodeList"] for row in retried] == [{"node1": "node2", "node2": "node1"}[lost_node]]
    assert (work / "results" / "metrics.csv").is_file()


def queued(name: str) -> list[str]:
    """The pending and running jobs named `name` (one run's jobs)."""
    out = subprocess.run(
        ["squeue", "-h", "--name", name, "-t", "PD,R", "-o", "%i"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def wait_for(condition, seconds: float):
    deadline = time.monotonic() + seconds
    while not (found := condition()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


def start_held_run(tmp_path: Path) -> tuple[subprocess.Popen, Path, str, list[str]]:
    """A run through the site profile whose jobs SLURM holds (queued until cancelled, however
    fast the cluster), once its own first jobs are queued: the process, its folder, its
    SLURM run name (from its log, so no other run's jobs are mistaken for its own) and its
    jobs."""
    root = copy_workflow(tmp_path / "repo")
    work = tmp_path / "cluster"
    wf = Workflow(root, work)
    wf.write_config(slurm_config())

    def edit(p):
        p["default-resources"]["slurm_extra"] = "'--hold'"

    profile = site_profile(tmp_path / "site-profile", edit)
    run = subprocess.Popen(
        wf.command("--profile", str(profile)),
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        # a test suite started in the background (CI, `nohup ... &`) passes SIGINT on as
        # ignored, and Python then never raises KeyboardInterrupt: give snakemake the
        # default a terminal's Ctrl-C meets
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )

    def logged_name() -> str | None:
        try:
            return slurm.run_id(work)
        except SystemExit:
            return None

    name = wait_for(logged_name, 120)
    assert name, "snakemake logged no SLURM run ID"
    jobs = wait_for(lambda: queued(name), 120)
    assert jobs, "no job was queued"
    return run, work, name, jobs


def stop(run: subprocess.Popen, name: str) -> None:
    """Whatever a test saw: no held job of its run left in the queue, no process left."""
    subprocess.run(["scancel", "--name", name], check=False)
    if run.poll() is None:
        os.killpg(run.pid, signal.SIGKILL)
    run.wait()


def test_ctrl_c_cancels_the_runs_jobs(cluster, tmp_path):
    run, _, name, _ = start_held_run(tmp_path)
    try:
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=120) != 0
        assert wait_for(lambda: queued(name) == [], 10)
    finally:
        stop(run, name)


def test_a_stopped_runs_jobs_are_cancelled_by_the_documented_command(cluster, tmp_path):
    """SIGTERM leaves a run's SLURM jobs queued (snakemake waits for them); `python -m
    visual_ablation.plumbing.slurm cancel`, run where snakemake ran, cancels them all."""
    run, work, name, jobs = start_held_run(tmp_path)
    try:
        run.send_signal(signal.SIGTERM)
        time.sleep(3)
        assert queued(name) == jobs  # still queued: SIGTERM cancels nothing
        cancel = subprocess.run(
            [
                sys.executable,
                "-m",
                "visual_ablation.plumbing.slurm",
                "cancel",
                "--directory",
                str(work),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        )
        assert cancel.returncode == 0, cancel.stderr
        assert f"cancelled {len(jobs)} job(s) of run {name}" in cancel.stderr
        for job in jobs:
            assert job in cancel.stdout
        assert wait_for(lambda: queued(name) == [], 30)
    finally:
        stop(run, name)
