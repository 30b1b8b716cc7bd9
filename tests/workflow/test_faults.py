"""Faults caused for real while Snakemake runs: a job or the whole snakemake killed with
SIGKILL mid-extraction, the disk filling up under a feature job, two invocations at once.
Each must keep finished work, leave nothing that looks complete, and end (after the
documented recovery) with the metrics of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import zarr
from conftest import Workflow, copy_workflow, tiny_config

pytestmark = pytest.mark.workflow

STORES = ["effnet/original.zarr", "effnet/grayscale.zarr", "effnet/lowpass.zarr"]


def fault_config(**overrides) -> dict:
    """Three effnet stores whose extraction lasts long enough to be killed midway."""
    config = tiny_config(
        datasets={"shapes": {"source": "synthetic-shapes", "n": 1500, "image_size": 32}},
        representations=["original", "grayscale", "lowpass"],
        backbones={
            "effnet": {
                "model": "efficientnet_lite0",
                "weights": "none",
                "layers": ["stem", "blocks.2"],
                "image_size": 48,
            }
        },
        probes={"linear": {"hidden": 0, "max_epochs": 10, "patience": 3}},
        runs=2,
        extraction={"threads": 1, "batch_size": 16},
        **overrides,
    )
    return config


def metrics(wf: Workflow, results: str = "results") -> pd.DataFrame:
    table = pd.read_csv(wf.workdir / results / "metrics.csv")
    return table.drop(columns=["train_seconds"])


def store_ids(cache: Path) -> dict[str, str]:
    """Which build of each finished feature store is on disk."""
    found = {}
    for name in STORES:
        path = cache / "features" / "shapes" / name
        if path.is_dir():
            found[name] = zarr.open_group(path, mode="r").attrs["store_id"]
    return found


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.rglob(".*.zarr.*") if not p.name.endswith(".lock"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> pd.DataFrame:
    """metrics.csv of the fault config run without any fault."""
    root = tmp_path_factory.mktemp("reference")
    wf = Workflow(copy_workflow(root / "repo"), root / "work")
    wf.write_config(fault_config())
    wf.run()
    return metrics(wf)


def start(wf: Workflow, *args: str) -> subprocess.Popen:
    """snakemake in its own process group (so the group can be killed as a machine
    crash would), one job at a time."""
    return subprocess.Popen(
        wf.command("--cores", "1", *args),
        cwd=wf.workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for_second_extraction(cache: Path, proc: subprocess.Popen, timeout: float = 300):
    """Block until one feature store is finished and the next one is half written."""
    features = cache / "features" / "shapes" / "effnet"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        finished = list(features.glob("*.zarr")) if features.is_dir() else []
        partial = list(features.glob(".*.zarr.partial-*/layers")) if finished else []
        if finished and partial:
            return finished, partial
        if proc.poll() is not None:
            raise AssertionError(f"snakemake ended before the fault:\n{proc.stdout.read()}")
        time.sleep(0.01)
    raise AssertionError("no extraction to interrupt")


def feature_job(proc: subprocess.Popen) -> psutil.Process:
    for child in psutil.Process(proc.pid).children(recursive=True):
        if any(part.endswith("features.py") for part in child.cmdline()):
            return child
    raise AssertionError("no running feature job")


def planned_features(wf: Workflow, *args: str) -> list[str]:
    return sorted(out for rule, out in wf.planned(*args) if rule == "features")


def test_a_feature_job_killed_midway_recomputes_only_its_store(workflow_copy, reference):
    wf = workflow_copy
    cache = wf.workdir / "results"
    wf.write_config(fault_config())
    proc = start(wf)
    finished, partial = wait_for_second_extraction(cache, proc)
    feature_job(proc).send_signal(signal.SIGKILL)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0 and "Error in rule features" in output
    kept = store_ids(cache)
    assert sorted(kept) == sorted(f"effnet/{p.name}" for p in finished)
    assert leftovers(cache), "the killed job's partial store is still there"
    # Snakemake plans the killed store and the one never started, nothing finished
    assert planned_features(wf) == sorted(
        f"results/features/shapes/{name}" for name in STORES if name not in kept
    )
    wf.run()
    assert {name: store_ids(cache)[name] for name in kept} == kept  # not rebuilt
    assert leftovers(cache) == []  # the partial was removed by the next writer
    pd.testing.assert_frame_equal(metrics(wf), reference)


def test_snakemake_killed_with_its_jobs_resumes_after_unlock(workflow_copy, reference):
    wf = workflow_copy
    cache = wf.workdir / "results"
    wf.write_config(fault_config())
    proc = start(wf)
    wait_for_second_extraction(cache, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and every job: as a crash would
    proc.wait(timeout=30)
    kept = store_ids(cache)
    assert kept and len(kept) < len(STORES)
    # the crashed snakemake could not release its lock (docs/operations.md: "After a crash")
    locked = wf.run(check=False)
    assert locked.returncode != 0 and "Directory cannot be locked" in locked.output
    wf.run("--unlock")
    assert planned_features(wf, "--rerun-incomplete") == sorted(
        f"results/features/shapes/{name}" for name in STORES if name not in kept
    )
    wf.run("--rerun-incomplete")
    assert {name: store_ids(cache)[name] for name in kept} == kept
    assert leftovers(cache) == []
    pd.testing.assert_frame_equal(metrics(wf), reference)


DISK_FULL = """
# Test hook: while $VA_DISK_FULL exists, every chunk write of a feature store fails as a
# full disk does (the real zarr write function raises the real errno).
import errno, os
flag = os.environ.get("VA_DISK_FULL")
if flag:
    from zarr.storage import _local
    real_put = _local._put
    def _put(path, value, *args, **kwargs):
        if os.path.exists(flag) and "/features/" in str(path) and "/c/" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_put(path, value, *args, **kwargs)
    _local._put = _put
"""


def test_disk_full_fails_the_feature_job_clearly_and_a_rerun_succeeds(
    workflow_copy, reference, tmp_path
):
    wf = workflow_copy
    cache = wf.workdir / "results"
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(DISK_FULL)
    flag = tmp_path / "disk-is-full"
    flag.touch()
    env = {
        "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]),
        "VA_DISK_FULL": str(flag),
    }
    wf.write_config(fault_config())
    proc = wf.run("--cores", "1", env=env, check=False)
    assert proc.returncode != 0
    assert "StoreError: no space left while writing store" in proc.output
    assert "No space left on device" in proc.output and "Free space" in proc.output
    assert store_ids(cache) == {} and leftovers(cache) == []
    assert (cache / "data" / "shapes.zarr").is_dir()  # finished before the disk filled
    flag.unlink()  # space freed
    wf.run(env=env)
    pd.testing.assert_frame_equal(metrics(wf), reference)


def test_a_second_snakemake_on_the_same_directory_is_refused(workflow_copy):
    wf = workflow_copy
    wf.write_config(fault_config())
    first = start(wf)
    try:
        deadline = time.monotonic() + 60
        while not list((wf.workdir / ".snakemake" / "locks").glob("*")):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        second = wf.run(check=False)
        assert second.returncode != 0
        assert "Directory cannot be locked" in second.output
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()


# how a job of one experiment may fail when the other experiment's snakemake deleted, to
# rebuild it, a store the job reads: after opening it, before, or before the job started
REFUSALS = (
    "was deleted or rebuilt while this job read it",
    "does not exist. Rebuild it",
    "MissingInputException",
    "Missing files after",  # snakemake's wait for a job's inputs
)


def test_two_experiments_sharing_a_cache_at_once_never_corrupt_it(tmp_path, reference):
    """Both start together on one cache_dir. A store is built once while the other waits
    on its lock, or built twice and replaced whole; a reader whose store was replaced
    under it fails clearly instead of using it. Every store ends valid, every metrics.csv
    written equals the reference, and a plain rerun completes both."""
    root = copy_workflow(tmp_path / "repo")
    cache = tmp_path / "shared cache"
    runs = []
    for name in ("a", "b"):
        wf = Workflow(root, tmp_path / name)
        wf.write_config(fault_config(results_dir=f"results-{name}", cache_dir=str(cache)))
        runs.append((wf, start(wf, "--cores", "2")))
    outputs = [proc.communicate(timeout=600)[0] for _, proc in runs]
    for (wf, proc), output in zip(runs, outputs, strict=True):
        if proc.returncode != 0:  # only ever a clear refusal, never a wrong number
            assert any(reason in output for reason in REFUSALS), output[-4000:]
        else:
            pd.testing.assert_frame_equal(metrics(wf, f"results-{wf.workdir.name}"), reference)
    assert sorted(store_ids(cache)) == sorted(STORES) and leftovers(cache) == []
    for wf, _ in runs:
        wf.run()
        pd.testing.assert_frame_equal(metrics(wf, f"results-{wf.workdir.name}"), reference)
