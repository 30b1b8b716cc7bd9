"""The data stage: decode a dataset's images once into its data store (uint8 images,
labels, class names). Sources (data/sources.py) give the labels first, so a stratified subset
`n` is chosen before anything is decoded; images are decoded in batches (data/decode.py).
Train jobs draw the split from the labels (data/splits.py).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from visual_ablation.data import splits
from visual_ablation.data.decode import DECODE_BATCH, BadImageError, batches
from visual_ablation.data.source import Source
from visual_ablation.data.sources import SOURCES, open_source
from visual_ablation.plumbing import store
from visual_ablation.vocabulary import CLASS, CONTROL

log = logging.getLogger(__name__)

FIXED_TEST = "fixed_test"  # bool per image: every run's test split, where a source fixes it
GIVEN_SPLIT = "given_split"  # part code per image of the data's own split (`split: given`)


def factor_array(factor: str) -> str:
    """A factor's label array in a data store."""
    return f"factor_{factor}"


FILE_NAMES = "file_names"


def write_file_names(group, names: list[str]) -> None:
    """Each stored image's file name, as UTF-8 JSON in a byte array (zarr 3 has no stable
    string data type)."""
    store.save_array(group, FILE_NAMES, np.frombuffer(json.dumps(names).encode(), np.uint8))


def read_file_names(group) -> list[str] | None:
    """Each stored image's file name (relative to the dataset's path), or None for a
    source without files."""
    if FILE_NAMES not in group:
        return None
    return json.loads(group[FILE_NAMES][:].tobytes().decode())


def read_target(group, target: str, where: str) -> tuple[np.ndarray, list[str]]:
    """A target's labels and class names from an open data store: `class` (the dataset's
    labels) or one of the factors its source stored."""
    if target == CLASS:
        return group["labels"][:], list(group.attrs["class_names"])
    if target == CONTROL:
        return control_labels(group)
    factors = group.attrs.get("factors", {})
    if target not in factors:
        raise ValueError(
            f"{where} has no target {target!r}: its source stores "
            f"{', '.join([CLASS, *factors])}. Fix the dataset's targets in the config."
        )
    return group[factor_array(target)][:], list(factors[target])


def control_labels(group) -> tuple[np.ndarray, list[str]]:
    """The control target of an open data store (Hewitt & Liang 2019, "Designing and
    Interpreting Probes with Control Tasks"): each image's nuisance type (the combination
    of its source's `control_factors`) mapped by a fixed random function to as many labels
    as the dataset has classes, with the classes' balance: types in a seeded random order,
    largest first, each given the label furthest below its share. A probe can only learn it
    by telling the types apart and memorising their labels, so accuracy on it is what a
    probe reaches without the class; selectivity is the class accuracy minus it. A source
    without control factors (image folders, files) gets the class labels randomly permuted
    over images: the same balance, no structure at all (Zhang et al. 2017's random labels).
    """
    spec = dict(group.attrs["spec"])
    classes = group["labels"][:]
    names = list(group.attrs["class_names"])
    share = np.bincount(classes, minlength=len(names)) / len(classes)
    rng = np.random.default_rng([int(spec.get("seed", 0)), 0xC0417])
    factors = SOURCES[spec["source"]].control_factors
    if not factors:
        return rng.permutation(classes), [f"control-{i}" for i in range(len(names))]
    codes = np.stack([group[factor_array(f)][:] for f in factors], axis=1)
    types, of_image, sizes = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    of_image = of_image.reshape(-1)
    order = rng.permutation(len(types))
    order = order[np.argsort(-sizes[order], kind="stable")]  # largest first, ties at random
    label_of_type = np.zeros(len(types), np.int64)
    filled = np.zeros(len(names))
    for t in order:
        label = int(np.argmax(share * len(classes) - filled))  # furthest below its share
        label_of_type[t] = label
        filled[label] += sizes[t]
    return label_of_type[of_image], [f"control-{i}" for i in range(len(names))]


def read_fixed_test(group) -> np.ndarray | None:
    """The images every run tests on, where the source fixes them (else None)."""
    return group[FIXED_TEST][:] if FIXED_TEST in group else None


def read_given_split(group) -> np.ndarray | None:
    """Each image's part of the split the data comes with (`split: given`), else None."""
    return group[GIVEN_SPLIT][:] if GIVEN_SPLIT in group else None


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
        images = store.create_array(
            group, "images", (len(indices), size, size, 3), np.uint8, codec="lz4"
        )
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
        store.save_array(group, "labels", labels)
        store.save_array(group, "source_index", indices.astype(np.int64))
        if source.file_names is not None:
            write_file_names(group, [source.file_names[i] for i in indices])
        # every factor the source knows, whichever targets the config asks for now: a new
        # target then re-plans train jobs only
        for factor, (values, _) in source.factors.items():
            store.save_array(group, factor_array(factor), values[indices].astype(np.int64))
        if source.fixed_test is not None:
            store.save_array(group, FIXED_TEST, source.fixed_test[indices])
        if given is not None:
            store.save_array(group, GIVEN_SPLIT, given[indices])
        group.attrs.update(
            {
                "class_names": source.class_names,
                "factors": {factor: names for factor, (_, names) in source.factors.items()},
                "source": source.description,
                "n": int(len(indices)),
                "n_source": int(n_source),
                "class_counts": np.bincount(labels, minlength=len(source.class_names)).tolist(),
                "skipped": skipped,
            }
        )
