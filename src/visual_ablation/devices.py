"""Which device a job runs on: CUDA when present (the job's visible device), else CPU."""

from __future__ import annotations

import torch


def choose_device(requested: str = "auto") -> torch.device:
    """`auto` -> cuda if available, else cpu; `cpu`/`cuda`/`cuda:N` -> that device."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} requested but CUDA is not available here")
    return device


def set_cpu_threads(threads: int) -> None:
    """Match torch's intra-op threads to the cores Snakemake gave the job."""
    torch.set_num_threads(max(1, int(threads)))
