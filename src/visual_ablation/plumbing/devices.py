"""Which device a job runs on, and GPU slots: each running GPU job pinned to one device.

Snakemake's `--resources gpu=N` only caps how many GPU-tagged jobs run at once; it does
not say which GPU each should use. `claim_gpu_slot` does, before torch initialises CUDA:
it takes an exclusive lock on `gpu-{device}.slot{k}.lock` (first slot 0 of every device,
then slot 1, ...: with more slots than devices, jobs share devices round-robin) and sets
`CUDA_VISIBLE_DEVICES` to that device for the rest of the job. The lock is an `flock` on
an open file, held for the life of the process: the kernel releases it when the job
ends, however it ends (SIGKILL included), so a killed job never leaves a slot taken.

Under SLURM a job whose `CUDA_VISIBLE_DEVICES` is already set keeps it (the scheduler
pinned it). With no GPU, nothing is claimed and the job runs on the CPU.

This module imports torch only inside the functions that need it, so that claiming a
slot costs no torch import and happens before CUDA is initialised.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# the GPUs to hand out, e.g. "0,1,2,3" (overrides detection; "" means none): for tests
# and for machines where /proc/driver/nvidia is not visible
GPUS_ENV = "VISUAL_ABLATION_GPUS"
# where the slot locks live: a machine-local directory (flock is per machine)
LOCK_DIR_ENV = "VISUAL_ABLATION_LOCK_DIR"
MAX_SLOTS_PER_DEVICE = 256

_held: list[int] = []  # descriptors of the locks this process holds (kept open on purpose)


@dataclass(frozen=True)
class GpuSlot:
    device: str  # the CUDA_VISIBLE_DEVICES entry the job now sees as cuda:0
    slot: int  # 0 for the first job on the device, 1 for the second, ...
    lock: str | None  # the lock file held, None when SLURM pinned the device


def _entries(value: str) -> list[str]:
    """CUDA_VISIBLE_DEVICES-style list; '-1' or 'NoDevFiles' hides every device."""
    entries = [v.strip() for v in value.split(",") if v.strip()]
    return [] if entries[:1] in (["-1"], ["NoDevFiles"]) else entries


def visible_gpus(environ: dict[str, str] | None = None) -> list[str]:
    """The GPUs this job may use: VISUAL_ABLATION_GPUS, else CUDA_VISIBLE_DEVICES, else
    the NVIDIA driver's list (/proc/driver/nvidia/gpus, no CUDA initialisation)."""
    env = os.environ if environ is None else environ
    if GPUS_ENV in env:
        return _entries(env[GPUS_ENV])
    if "CUDA_VISIBLE_DEVICES" in env:
        return _entries(env["CUDA_VISIBLE_DEVICES"])
    try:
        return [str(i) for i in range(len(os.listdir("/proc/driver/nvidia/gpus")))]
    except OSError:
        return []


def default_lock_dir() -> str:
    return os.path.join(tempfile.gettempdir(), f"visual-ablation-gpu-slots-{os.getuid()}")


def _try_lock(path: str) -> int | None:
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a curious human
    return fd


def claim_gpu_slot(
    requested: str = "auto",
    environ: dict[str, str] | None = None,
    lock_dir: str | None = None,
) -> GpuSlot | None:
    """Pin this process to one GPU slot (see the module doc); None when the job runs on
    the CPU or names its device itself (`cuda:N`). Call before importing torch."""
    env = os.environ if environ is None else environ
    if requested not in ("auto", "cuda"):
        return None
    if "SLURM_JOB_ID" in env and env.get("CUDA_VISIBLE_DEVICES"):
        slot = GpuSlot(device=env["CUDA_VISIBLE_DEVICES"], slot=0, lock=None)
        log.info("GPU: CUDA_VISIBLE_DEVICES=%s, set by SLURM; kept", slot.device)
        return slot
    gpus = visible_gpus(env)
    if not gpus:
        return None
    lock_dir = lock_dir or env.get(LOCK_DIR_ENV) or default_lock_dir()
    os.makedirs(lock_dir, exist_ok=True)
    for slot in range(MAX_SLOTS_PER_DEVICE):
        for device in gpus:
            name = re.sub(r"[^A-Za-z0-9._-]", "_", device)
            path = os.path.join(lock_dir, f"gpu-{name}.slot{slot}.lock")
            fd = _try_lock(path)
            if fd is not None:
                _held.append(fd)
                env["CUDA_VISIBLE_DEVICES"] = device
                log.info(
                    "GPU slot: device %s, slot %d of it (lock %s); CUDA_VISIBLE_DEVICES=%s",
                    device,
                    slot,
                    path,
                    device,
                )
                return GpuSlot(device=device, slot=slot, lock=path)
    raise RuntimeError(
        f"no free GPU slot among {len(gpus)} devices x {MAX_SLOTS_PER_DEVICE} slots in "
        f"{lock_dir}: are that many GPU jobs running? Stale locks cannot exist (they die with "
        "their process); check --resources gpu=N."
    )


def release_gpu_slots() -> None:
    """Release every slot this process holds (a job's end does this by itself)."""
    while _held:
        os.close(_held.pop())


def choose_device(requested: str = "auto") -> torch.device:
    """`auto` -> cuda if available, else cpu; `cpu`/`cuda`/`cuda:N` -> that device."""
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} requested but CUDA is not available here")
    return device


def set_cpu_threads(threads: int) -> None:
    """Match torch's intra-op threads to the cores Snakemake gave the job."""
    import torch

    torch.set_num_threads(max(1, int(threads)))
