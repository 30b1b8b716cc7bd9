"""Memory (MB) and run time (minutes) each job asks a cluster for, from the sizes that
drive them, so that a job at 100k images asks for enough.

Figures come from benchmarks/memory.py and benchmarks/training.py (CPU, 2 threads):
- a data job holds one decode batch of images; its peak barely moves with n; rendering
  in `threads` processes (procedural sources) adds each process and its chunks;
- a feature job holds torch, the model, one batch of activations and a few chunks: it
  scales with batch size and input side, not with n;
- a train job holds every layer of one store, as float16 read and float32 standardised
  and stacked: it scales with n x total feature width.
A GPU job's process also maps the CUDA libraries (about 2.5 GB of host memory), which
the base of the feature and train estimates includes. Every estimate is multiplied by
Snakemake's `attempt`, so a job the cluster killed for memory or time asks for twice as
much on its retry (`retries` in profiles/slurm).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from visual_ablation.data.decode import DECODE_BATCH

MIB = 2**20
UNKNOWN_N = 200_000  # a dataset of unknown size (all of a folder) before its data store
UNKNOWN_WIDTH = 4096  # total feature width of a backbone before its first feature store

# bases: the process with its libraries; rates: images per second, pessimistic for CPU
DATA_BASE_MB = 1000
DATA_WORKER_MB = 200  # a render process, above benchmarks/data_job.py's measure
FEATURES_BASE_MB = 3000
TRAIN_BASE_MB = 3000
ACTIVATION_MB_PER_IMAGE_AT_64 = 2.0  # above benchmarks/memory.py's EfficientNet-Lite0
TRAIN_BYTES_PER_VALUE = 16  # float16 read + float32 standardised + padded stack
DATA_IMAGES_PER_SECOND = 100
FEATURE_IMAGES_PER_SECOND_AT_64 = 50
TRAIN_SECONDS_PER_RUN_PER_MVALUE = 1.0  # per million stored values (images x width)
MIN_RUNTIME = 10
# every other cluster job (transfer, amnesic, similarity read one or two stores): the
# requests the SLURM profile's default-resources held before, now the rules' own, so that
# a --default-resources on the command line (account, partition) drops nothing
LIGHT_MEM_MB = 2000
LIGHT_RUNTIME = 30
# the requests that grow with `attempt` in every rule a cluster runs
SCALED = ("mem_mb", "runtime")


_FINISHED: dict[str, dict[str, Any]] = {}  # finished stores' attrs, read once per process


def _stored_attrs(store_path: str) -> dict[str, Any]:
    """A finished store's attrs straight from its zarr.json (no zarr import), or {}.
    Remembered once the store is finished (a large grid's planning asks for the same few
    stores thousands of times); an unfinished one is read again next time."""
    if store_path in _FINISHED:
        return _FINISHED[store_path]
    try:
        with open(os.path.join(store_path, "zarr.json")) as f:
            attrs = json.load(f).get("attributes", {})
    except (OSError, ValueError):
        return {}
    if attrs.get("complete") is not True:
        return {}
    _FINISHED[store_path] = attrs
    return attrs


def n_images(data_spec: dict[str, Any], data_store: str | None = None) -> int:
    """Images of a dataset: its data store's count when built, else the config's `n`, else
    an image folder's count of image files (its manifest)."""
    if data_store:
        stored = _stored_attrs(data_store).get("n")
        if stored:
            return int(stored)
    if data_spec.get("n"):
        return int(data_spec["n"])
    if data_spec.get("source") == "imagefolder" and data_spec.get("manifest"):
        return int(data_spec["manifest"]["files"])  # one file, one image
    return UNKNOWN_N


def total_width(feature_store: str | None) -> int:
    """Summed feature width over a store's layers, once the store exists."""
    dims = _stored_attrs(feature_store).get("dims") if feature_store else None
    return int(sum(dims.values())) if dims else UNKNOWN_WIDTH


def _scaled(value: float, attempt: int) -> int:
    return int(math.ceil(value * max(1, attempt)))


def light_mem_mb(attempt: int = 1) -> int:
    return _scaled(LIGHT_MEM_MB, attempt)


def light_runtime(attempt: int = 1) -> int:
    return _scaled(LIGHT_RUNTIME, attempt)


def constant_overrides(overrides: dict[str, dict[str, Any]], cluster_rules: set[str]) -> list[str]:
    """Warnings for each `set-resources` override (profile or command line) of a cluster
    rule's mem_mb or runtime that does not grow with `attempt`: it replaces the rule's own
    request, which does, so a job killed for memory or time is retried with the same
    request and killed again. `overrides` maps rule to resource to its raw value (an int,
    or the expression's text)."""
    warnings = []
    for rule in sorted(overrides):
        if rule not in cluster_rules:
            continue  # a local rule runs in the snakemake process: nothing to retry with
        for name in SCALED:
            raw = overrides[rule].get(name)
            if raw is None or "attempt" in str(raw):
                continue
            warnings.append(
                f"set-resources {rule}:{name}={raw} does not grow with attempt: it "
                f"replaces the rule's own request (which doubles on a retry), so a job "
                f"killed for {'memory' if name == 'mem_mb' else 'time'} is retried with "
                f"the same {raw} and killed again. Write it as an expression of attempt, "
                f"e.g. {rule}:{name}={raw}*attempt (docs/operations.md, 'On a SLURM "
                f"cluster')."
            )
    return warnings


def data_threads(data_spec: dict[str, Any], threads: int) -> int:
    """A data job's threads: `data.threads` render processes for a procedural source, one
    for the others (they decode in the job's own process)."""
    from visual_ablation.data.sources import SOURCES

    return threads if SOURCES[data_spec["source"]].renders else 1


def data_mem_mb(data_spec: dict[str, Any], attempt: int = 1, threads: int = 1) -> int:
    side = int(data_spec["image_size"])
    batch = DECODE_BATCH * side * side * 3 * 4 / MIB  # a batch and its copies
    workers = 0  # render processes (data_threads): a procedural source's images
    if threads > 1:
        workers = threads * (DATA_WORKER_MB + batch / 2)
    return _scaled(DATA_BASE_MB + batch + workers, attempt)


def data_runtime(data_spec: dict[str, Any], attempt: int = 1) -> int:
    seconds = n_images(data_spec) / DATA_IMAGES_PER_SECOND
    return _scaled(MIN_RUNTIME + seconds / 60, attempt)


def _side_factor(feature_spec: dict[str, Any]) -> float:
    # a model whose own size is not known before its files are fetched: a ViT's 224
    side = feature_spec["backbone"].get("image_size") or 224
    return (int(side) / 64) ** 2


def features_mem_mb(feature_spec: dict[str, Any], batch_size: int, attempt: int = 1) -> int:
    activations = batch_size * ACTIVATION_MB_PER_IMAGE_AT_64 * _side_factor(feature_spec)
    return _scaled(FEATURES_BASE_MB + activations, attempt)


def features_runtime(feature_spec: dict[str, Any], data_store: str, attempt: int = 1) -> int:
    n = n_images(feature_spec["dataset"], data_store)
    seconds = n * _side_factor(feature_spec) / FEATURE_IMAGES_PER_SECOND_AT_64
    return _scaled(MIN_RUNTIME + seconds / 60, attempt)


def train_mem_mb(
    data_spec: dict[str, Any], data_store: str, feature_store: str, attempt: int = 1
) -> int:
    values = n_images(data_spec, data_store) * total_width(feature_store)
    return _scaled(TRAIN_BASE_MB + values * TRAIN_BYTES_PER_VALUE / MIB, attempt)


def train_runtime(
    data_spec: dict[str, Any],
    probe_spec: dict[str, Any],
    runs: int,
    data_store: str,
    feature_store: str,
    attempt: int = 1,
) -> int:
    mvalues = n_images(data_spec, data_store) * total_width(feature_store) / 1e6
    # an MLP head costs about 3 linear ones; early stopping ends most runs well before
    epochs = probe_spec["max_epochs"] / 300 * (3 if probe_spec["hidden"] else 1)
    # a weight-decay grid trains one head per value: as many runs' work
    decays = probe_spec.get("weight_decay")
    runs *= len(decays) if isinstance(decays, list) else 1
    seconds = runs * mvalues * TRAIN_SECONDS_PER_RUN_PER_MVALUE * epochs * 3  # x3: slack
    return _scaled(MIN_RUNTIME + seconds / 60, attempt)
