"""The data store's format, written and read here only (as probes/run_files.py does for
run artefacts): the decoded images (`images`, uint8 [n, size, size, 3]), the class labels
(`labels`) and names (attribute `class_names`), each image's index in its source
(`source_index`) and file name where it has one, every factor the source knows
(`factor_{name}` with the attribute `factors`: their names), and the split the source
fixes or the data comes with. The store itself (atomic writing, the spec check, locks) is
plumbing/store.py's; the data job (preparation.py) decodes what goes in.
"""

from __future__ import annotations

import json

import numpy as np

from visual_ablation.data.sources import SOURCES
from visual_ablation.plumbing import store
from visual_ablation.vocabulary import CLASS, CONTROL

IMAGES = "images"
LABELS = "labels"  # the class of each image
SOURCE_INDEX = "source_index"  # each image's index in its source

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
        return class_labels(group), class_names(group)
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
    classes = class_labels(group)
    names = class_names(group)
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


def create_images(group, n_images: int, size: int):
    """The empty image array of a store (the data job fills it in chunks)."""
    return store.create_array(group, IMAGES, (n_images, size, size, 3), np.uint8, codec="lz4")


def write_labels(
    group,
    labels: np.ndarray,
    source_index: np.ndarray,
    class_names: list[str],
    file_names: list[str] | None,
    factors: dict[str, tuple[np.ndarray, list[str]]],
    fixed_test: np.ndarray | None,
    given_split: np.ndarray | None,
) -> None:
    """Everything a store holds beside its images: the class labels and names, each image's
    source index and file name, every factor ({name: (values, value names)}), the fixed
    test images and the given split (None where the source has none)."""
    store.save_array(group, LABELS, labels)
    store.save_array(group, SOURCE_INDEX, source_index.astype(np.int64))
    if file_names is not None:
        write_file_names(group, file_names)
    for factor, (values, _) in factors.items():
        store.save_array(group, factor_array(factor), values.astype(np.int64))
    if fixed_test is not None:
        store.save_array(group, FIXED_TEST, fixed_test)
    if given_split is not None:
        store.save_array(group, GIVEN_SPLIT, given_split)
    group.attrs.update(
        {
            "class_names": list(class_names),
            "factors": {factor: names for factor, (_, names) in factors.items()},
        }
    )


def images(group):
    """An open store's image array (read in slices: it can be large)."""
    return group[IMAGES]


def class_labels(group) -> np.ndarray:
    return group[LABELS][:]


def class_names(group) -> list[str]:
    return list(group.attrs["class_names"])
