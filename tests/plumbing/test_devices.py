"""GPU slots without a GPU: the device list is faked through VISUAL_ABLATION_GPUS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from visual_ablation.plumbing import devices

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(autouse=True)
def release_slots():
    yield
    devices.release_gpu_slots()


def fake(gpus: str, **extra: str) -> dict[str, str]:
    return {devices.GPUS_ENV: gpus, **extra}


def test_each_job_gets_its_own_device_then_devices_are_shared_round_robin(tmp_path):
    claimed = []
    for _ in range(5):
        env = fake("0,1")
        slot = devices.claim_gpu_slot(environ=env, lock_dir=str(tmp_path))
        assert env["CUDA_VISIBLE_DEVICES"] == slot.device  # what torch will see as cuda:0
        claimed.append((slot.device, slot.slot))
    assert claimed == [("0", 0), ("1", 0), ("0", 1), ("1", 1), ("0", 2)]


def test_a_released_slot_is_taken_again_first(tmp_path):
    first = devices.claim_gpu_slot(environ=fake("0,1"), lock_dir=str(tmp_path))
    devices.claim_gpu_slot(environ=fake("0,1"), lock_dir=str(tmp_path))
    devices.release_gpu_slots()
    again = devices.claim_gpu_slot(environ=fake("0,1"), lock_dir=str(tmp_path))
    assert (again.device, again.slot) == (first.device, first.slot) == ("0", 0)


HOLDER = """
import sys, time
sys.path.insert(0, {src!r})
from visual_ablation.plumbing import devices
slot = devices.claim_gpu_slot(environ={{"VISUAL_ABLATION_GPUS": "a,b"}}, lock_dir={lock!r})
print(slot.device, slot.slot, flush=True)
time.sleep(600)
"""


def start_holder(lock_dir: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(src=SRC, lock=str(lock_dir))],
        stdout=subprocess.PIPE,
        text=True,
    )
    return proc, proc.stdout.readline().strip()


def test_concurrent_jobs_get_distinct_devices_and_a_killed_job_frees_its_slot(tmp_path):
    first, first_slot = start_holder(tmp_path)
    second, second_slot = start_holder(tmp_path)
    try:
        assert {first_slot, second_slot} == {"a 0", "b 0"}
        third = devices.claim_gpu_slot(environ=fake("a,b"), lock_dir=str(tmp_path))
        assert (third.device, third.slot) == ("a", 1)  # both devices busy: share
        devices.release_gpu_slots()

        held_by_first = first_slot.split()[0]
        os.kill(first.pid, signal.SIGKILL)  # no cleanup code runs: the kernel drops the lock
        first.wait(timeout=30)
        time.sleep(0.1)
        freed = devices.claim_gpu_slot(environ=fake("a,b"), lock_dir=str(tmp_path))
        assert (freed.device, freed.slot) == (held_by_first, 0)
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait(timeout=30)


def test_slurm_pinned_device_is_kept_and_nothing_is_locked(tmp_path):
    env = {"SLURM_JOB_ID": "123", "CUDA_VISIBLE_DEVICES": "3", devices.GPUS_ENV: "0,1,2,3"}
    slot = devices.claim_gpu_slot(environ=env, lock_dir=str(tmp_path))
    assert slot == devices.GpuSlot(device="3", slot=0, lock=None)
    assert env["CUDA_VISIBLE_DEVICES"] == "3"
    assert list(tmp_path.iterdir()) == []


def test_visible_devices_outside_slurm_are_the_devices_to_share(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert devices.claim_gpu_slot(environ=env, lock_dir=str(tmp_path)).device == "2"
    assert env["CUDA_VISIBLE_DEVICES"] == "2"
    other = {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert devices.claim_gpu_slot(environ=other, lock_dir=str(tmp_path)).device == "3"


@pytest.mark.parametrize(
    ("requested", "env"),
    [
        ("auto", fake("")),  # no GPU: CPU
        ("auto", {"CUDA_VISIBLE_DEVICES": "-1"}),  # all hidden: CPU
        ("cpu", fake("0,1")),  # the config asks for the CPU
        ("cuda:1", fake("0,1")),  # the config names its device itself
    ],
)
def test_no_slot_is_claimed_when_the_job_does_not_share_gpus(tmp_path, requested, env):
    before = dict(env)
    assert devices.claim_gpu_slot(requested, environ=env, lock_dir=str(tmp_path)) is None
    assert env == before
    assert list(tmp_path.iterdir()) == []


def test_device_names_are_made_safe_for_lock_file_names(tmp_path):
    slot = devices.claim_gpu_slot(environ=fake("GPU-1a/2b"), lock_dir=str(tmp_path))
    assert slot.device == "GPU-1a/2b"
    assert Path(slot.lock).parent == tmp_path and Path(slot.lock).name == "gpu-GPU-1a_2b.slot0.lock"
