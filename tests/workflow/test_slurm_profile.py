"""profiles/slurm as its header runs it, and set-resources overrides as Snakemake reads
them, in dry runs (no cluster needed): every rule a node runs asks for its own mem_mb and
runtime, so a `--default-resources` on the command line (account, partition) drops none of
them, and a constant override of one is named before any job is submitted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import JOB, REPO, Workflow, copy_workflow, tiny_config

pytestmark = pytest.mark.workflow

RESOURCE = re.compile(r"(\w+)=([^,\s]+)")


def cluster_rules() -> set[str]:
    """Rules not declared local in workflow/rules/: each becomes one sbatch job."""
    rules = set()
    for path in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^(?=rule |checkpoint )", path.read_text(), flags=re.M):
            match = re.match(r"(?:rule|checkpoint) (\w+):", block)
            if match and "localrule: True" not in block:
                rules.add(match.group(1))
    return rules


def header_command() -> list[str]:
    """The command profiles/slurm/config.yaml's header tells a user to run."""
    text = (REPO / "profiles" / "slurm" / "config.yaml").read_text()
    line = next(ln for ln in text.splitlines() if ln.lstrip("# ").startswith("snakemake "))
    words = line.lstrip("# ").split()
    return [w.replace("ACCOUNT", "acct").replace("PARTITION", "part") for w in words[1:]]


def requested(output: str) -> dict[str, list[dict[str, str]]]:
    """Each planned job's resources, by rule."""
    jobs: dict[str, list[dict[str, str]]] = {}
    for rule, body in JOB.findall(output):
        line = re.search(r"^\s+resources: (.+)$", body, re.M)
        jobs.setdefault(rule, []).append(dict(RESOURCE.findall(line.group(1))) if line else {})
    return jobs


def test_the_profile_header_command_keeps_every_jobs_memory_and_time(tmp_path: Path):
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="make test EXTRAS=dev,slurm")
    root = copy_workflow(tmp_path / "repo")
    wf = Workflow(root, tmp_path / "work")
    wf.write_config(tiny_config(runs=1))
    args = header_command()
    assert args[:2] == ["--profile", "profiles/slurm"] and "--default-resources" in args
    args[1] = str(root / "profiles" / "slurm")
    with_header = requested(wf.run("-n", *args).output)
    profile_alone = requested(wf.run("-n", *args[:2]).output)
    on_nodes = cluster_rules()
    assert on_nodes >= {"prepare_data", "features", "train", "transfer", "similarity"}
    assert on_nodes & set(with_header) == on_nodes & set(profile_alone) != set()
    for rule in on_nodes & set(with_header):
        for header_job, alone_job in zip(with_header[rule], profile_alone[rule], strict=True):
            assert header_job["slurm_account"] == "acct", rule
            assert header_job["slurm_partition"] == "part", rule
            # what the rule asks for itself, with or without the command line's defaults
            assert "runtime" in header_job, (rule, header_job)
            for name in ("mem_mb", "runtime"):
                assert header_job[name] == alone_job[name], (rule, name)


def test_a_constant_memory_override_is_named_and_an_expression_is_not(tmp_path: Path):
    root = copy_workflow(tmp_path / "repo")
    wf = Workflow(root, tmp_path / "work")
    wf.write_config(tiny_config(runs=1))
    constant = wf.run("-n", "--set-resources", "train:mem_mb=16000").output
    assert "set-resources train:mem_mb=16000 does not grow with attempt" in constant
    assert "train:mem_mb=16000*attempt" in constant
    grows = wf.run("-n", "--set-resources", "train:mem_mb=16000*attempt", "aggregate:mem_mb=9")
    assert "does not grow" not in grows.output
    # what the expression asks for on the first attempt
    assert {job["mem_mb"] for job in requested(grows.output)["train"]} == {"16000"}
