"""The data stage: decode a dataset's images once into its data store (uint8 images,
labels, class names). Sources (data/sources.py) give the labels first, so a stratified subset
`n` is chosen before anything is decoded; images are decoded in batches (data/decode.py).
Train jobs draw the split from the labels (data/splits.py).
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from visual_ablation.data import data_store, splits
from visual_ablation.data.decode import DECODE_BATCH, BadImageError, batches
from visual_ablation.data.source import Source
from visual_ablation.data.sources import SOURCES, open_source
from visual_ablation.plumbing import store
from visual_ablation.vocabulary import CLASS

log = logging.getLogger(__name__)


def prepare(
    spec: dict[str, Any],
    path: str,
    progress: bool = True,
    split: dict[str, Any] | None = None,
    workers: int = 1,
    targets: list[str] | None = None,
) -> None:
    """Decode the dataset of `spec` once into the data store at `path`. `split` (the
    experiment's split config, not part of the store) is tried on the labels before
    anything is decoded, so that a dataset too small for it stops here, not in every
    train job after the features are computed (with `targets`, the config's, those split by
    their exemplars too; default the class). `workers`: processes that render a
    procedural source's images (the same bytes whatever the count); other sources
    decode in this one."""
    with store.locked(path):
        if store.built_meanwhile(path, spec) is not None:
            return
        _prepare(spec, path, progress, split, workers, targets)


_RENDERING: tuple[Source, int] | None = None  # a render worker's source and image size


def _adopt(source: Source, size: int) -> None:
    global _RENDERING
    _RENDERING = (source, size)


def _render(indices: np.ndarray) -> np.ndarray:
    source, size = _RENDERING
    return np.concatenate(list(source.decode(indices, size)))


def rendered(source: Source, indices: np.ndarray, size: int, workers: int) -> Iterator[np.ndarray]:
    """A rendering source's images in order, in batches, drawn by `workers` processes:
    small chunks (a decode batch split between the workers), at most two per worker in
    flight, so memory stays about two decode batches."""
    chunk = max(1, -(-DECODE_BATCH // workers))
    # fork: the workers inherit the source (its labels and factors) instead of rebuilding it
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, context, initializer=_adopt, initargs=(source, size)) as pool:
        pending: deque = deque()
        for part in batches(indices, chunk):
            pending.append(pool.submit(_render, part))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _prepare(
    spec: dict[str, Any],
    path: str,
    progress: bool,
    split: dict[str, Any] | None,
    workers: int,
    targets: list[str] | None = None,
) -> None:
    from tqdm import tqdm

    name = spec["name"]
    source = open_source(spec)
    n_source = len(source.labels)
    # a source that draws n images has exactly n; other sources are subset by class
    n = None if source.draws_n else spec.get("n")
    given = source.given_split
    # a subset of a given split keeps each part's share of every class
    strata = source.labels if given is None else given * len(source.class_names) + source.labels
    indices = splits.stratified_subset(strata, n, int(spec.get("seed", 0)), name)
    if split is not None:
        # each target as its train jobs split it: by its exemplars where the source groups
        # its images (data/source.py `split_groups`), else by class
        stored_names = source.file_names and [source.file_names[i] for i in indices]
        values = {CLASS: source.labels, **{f: v for f, (v, _) in source.factors.items()}}
        grouped = {
            target: SOURCES[spec["source"]].split_groups(spec, lambda: stored_names, target)
            for target in set(targets or [CLASS]) & set(values)
        }
        if grouped.get(CLASS) is None:
            fixed = None if source.fixed_test is None else source.fixed_test[indices]
            splits.run_splits(
                source.labels[indices],
                split,
                [0],
                name,
                fixed,
                given=None if given is None else given[indices],
            )
        for target, groups in sorted(grouped.items()):
            if groups is not None:
                splits.run_splits(values[target][indices], split, [0], name, groups=groups)
    size = int(spec["image_size"])
    log.info(
        "dataset %s: %d of %d images from %s, %dx%d",
        name,
        len(indices),
        n_source,
        source.description,
        size,
        size,
    )
    counts = np.bincount(source.labels[indices], minlength=len(source.class_names))
    log.info(
        "%d classes: %s",
        len(source.class_names),
        ", ".join(f"{c} {k}" for c, k in zip(source.class_names, counts, strict=True)),
    )
    if given is not None:
        sizes = splits.split_sizes(given[indices])
        log.info(
            "the split given with the data: %s%s",
            ", ".join(f"{part} {size}" for part, size in sizes.items() if size),
            "" if sizes["val"] else "; each run draws its validation images from train",
        )
    skipped: list[dict[str, Any]] = []

    def on_bad(index: int, error: BadImageError) -> None:
        if spec.get("on_bad_image", "fail") != "skip":
            raise BadImageError(
                f"{error}, or set datasets.{name}.on_bad_image: skip to leave such images out.",
                error.where,
            ) from error
        log.warning("skipped %s", error)
        skipped.append({"source_index": index, "where": error.where, "error": str(error)})

    with store.writing(path, spec) as group:
        images = data_store.create_images(group, len(indices), size)
        writer = store.ChunkedWriter(images)
        bar = tqdm(
            total=len(indices),
            desc=f"decode {name}",
            unit="img",
            disable=not progress,
            mininterval=2.0,
        )
        if source.renders and workers > 1:
            decoding = rendered(source, indices, size, workers)
        else:
            decoding = source.decode(indices, size, on_bad)
        for batch in decoding:
            writer.append(batch)
            bar.update(len(batch))
        bar.close()
        if skipped:
            # skipped images leave the store; the others keep their label
            keep = ~np.isin(indices, [s["source_index"] for s in skipped])
            indices = indices[keep]
            images.resize((len(indices), size, size, 3))
            log.warning("dataset %s: skipped %d unreadable images", name, len(skipped))
        writer.close()
        labels = source.labels[indices]
        data_store.write_labels(
            group,
            labels,
            indices,
            source.class_names,
            file_names=None
            if source.file_names is None
            else [source.file_names[i] for i in indices],
            # every factor the source knows, whichever targets the config asks for now: a
            # new target then re-plans train jobs only
            factors={f: (values[indices], names) for f, (values, names) in source.factors.items()},
            fixed_test=None if source.fixed_test is None else source.fixed_test[indices],
            given_split=None if given is None else given[indices],
        )
        group.attrs.update(
            {
                "source": source.description,
                "n": int(len(indices)),
                "n_source": int(n_source),
                "class_counts": np.bincount(labels, minlength=len(source.class_names)).tolist(),
                "skipped": skipped,
            }
        )
