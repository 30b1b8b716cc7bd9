"""Which images: a dataset's stratified subset (`n`), and the train / validation / test
split that each train job derives from the labels.

The split is not stored with the images: a train job draws it, stratified by class and
deterministic, from the labels, the `split` fractions and a seed. So a new split re-plans
train jobs only, never a data or feature store. With `split.resample`, run `r` gets its own
split (seed from `split.seed` and `r`): runs then vary the data as well as the probe, and
their test sets overlap (analyses/stats.py corrects the interval over runs for that).

A dataset with `split: given` keeps the split its data comes with (`given_parts`): its test
part is every run's test set, and its validation part too where it has one; where it has
only train and test, each run draws validation from the train part.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from visual_ablation.vocabulary import CLASS, CONTROL

TRAIN, VAL, TEST = 0, 1, 2
UNUSED = -1  # an image outside the ones a target is decoded on (`run_splits` within)
PARTS = (("train", TRAIN), ("val", VAL), ("test", TEST))
# what the parts of a split given with the data are called (folders, file name prefixes)
GIVEN_PART_NAMES = {
    "train": TRAIN,
    "val": VAL,
    "valid": VAL,
    "validation": VAL,
    "test": TEST,
}


class SplitError(ValueError):
    """Labels that cannot be split as configured; the message says why and what to change."""


def within_fixed_test(target: str) -> bool:
    """Whether `target`, on a source that fixes its test images, is decoded within them
    (`target_images`): every factor; not the class and control probes."""
    return target not in (CLASS, CONTROL)


def target_images(target: str, fixed_test: np.ndarray | None) -> np.ndarray | None:
    """The images a target is trained and tested on, where not all (None). A source that
    fixes its test images (the cue-conflict set) draws its factors apart from the class
    there only: elsewhere a factor may signal the class (the cue does), and its probe would
    decode the class again. So its factor targets are decoded within those images, each run
    drawing its own split of them; the class (and control) probes train on the others."""
    if fixed_test is None or not within_fixed_test(target):
        return None
    return fixed_test


def given_parts(names: list[str], where: str) -> dict[str, int]:
    """Each part of a split given with the data (`GIVEN_PART_NAMES`) and its code: train,
    validation and test as named; with only train and one other part, that part is the test
    set (ImageNet's val/ is what results are reported on) and validation is drawn from train
    by every run (`run_splits`)."""
    unknown = sorted(set(names) - set(GIVEN_PART_NAMES))
    if unknown:
        raise SplitError(
            f"{where}: {', '.join(unknown)} is not a part of a split "
            f"({', '.join(GIVEN_PART_NAMES)})."
        )
    by_code: dict[int, list[str]] = {}
    for name in names:
        by_code.setdefault(GIVEN_PART_NAMES[name], []).append(name)
    twice = [parts for parts in by_code.values() if len(parts) > 1]
    if twice:
        raise SplitError(
            f"{where}: {' and '.join(twice[0])} are the same part of a split; keep one."
        )
    if TRAIN not in by_code or len(by_code) < 2:
        raise SplitError(
            f"{where}: a given split needs a train part and a val or test part, found "
            f"{', '.join(names) or 'none'}."
        )
    if len(by_code) == 2:
        return {name: TRAIN if code == TRAIN else TEST for code, [name] in by_code.items()}
    return {parts[0]: code for code, parts in by_code.items()}


def split_sizes(split: np.ndarray) -> dict[str, int]:
    return {part: int((split == code).sum()) for part, code in PARTS}


def check_split(split: np.ndarray, where: str) -> dict[str, int]:
    """The part sizes; an empty part is refused (a probe needs images in all three)."""
    sizes = split_sizes(split)
    empty = [part for part, size in sizes.items() if size == 0]
    if empty:
        raise SplitError(
            f"{where}: the {' and '.join(empty)} part of the split is empty "
            f"(train={sizes['train']}, val={sizes['val']}, test={sizes['test']}). "
            "Probes need images in all three: use a larger dataset or larger split.val / "
            "split.test fractions."
        )
    return sizes


def run_seed(split: dict[str, Any], run: int) -> int:
    """The seed of run `run`'s split: `split.seed` itself, or with `resample` a seed
    drawn from (split.seed, run), so that every run has its own split."""
    if not split.get("resample", False):
        return int(split["seed"])
    return int(np.random.SeedSequence([int(split["seed"]), int(run)]).generate_state(1)[0])


def stratified_subset(labels: np.ndarray, n: int | None, seed: int, name: str) -> np.ndarray:
    """Sorted indices of a class-stratified subset of size n (all indices when n is None)."""
    total = len(labels)
    if n is None or n == total:
        return np.arange(total)
    if n > total:
        raise SplitError(
            f"dataset '{name}': subset n={n} is larger than the dataset ({total} images). "
            f"Set datasets.{name}.n to at most {total}, or remove it."
        )
    from sklearn.model_selection import train_test_split

    chosen, _ = train_test_split(np.arange(total), train_size=n, stratify=labels, random_state=seed)
    return np.sort(chosen)


def _allocate(counts: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """`total` images shared among classes in proportion to `counts`: the whole parts,
    then one more to the largest remainders (ties in a random class order)."""
    exact = counts * (total / counts.sum())
    share = np.floor(exact).astype(np.int64)
    order = rng.permutation(len(counts))
    by_remainder = order[np.argsort(-(exact - share)[order], kind="stable")]
    share[by_remainder[: total - share.sum()]] += 1
    return share


def stratified_split(
    labels: np.ndarray, val: float, test: float, seed: int, name: str
) -> np.ndarray:
    """0 = train, 1 = val, 2 = test per image, stratified by class: ceil(test * n) test
    images and ceil(val / (1 - test) * the rest) validation images, shared among classes
    in proportion to their sizes, each class's images drawn at random. The sizes depend
    only on the labels and fractions, so every seed gives parts of the same sizes. (numpy
    only: a train job draws its split, and importing scikit-learn costs it 1.5 s.)"""
    counts = np.bincount(labels)
    present = counts[counts > 0]
    if len(present) < 2:
        raise SplitError(
            f"dataset '{name}': only one class present ({len(labels)} images). "
            "A probe needs at least two classes: check the labels or the subset."
        )
    n = len(labels)
    n_test = math.ceil(test * n)
    n_val = math.ceil(val / (1.0 - test) * (n - n_test))
    n_train = n - n_test - n_val
    if present.min() < 2 or min(n_test, n_val, n_train) < len(present):
        raise SplitError(
            f"dataset '{name}': cannot split {n} images of {len(present)} classes "
            f"(smallest class: {present.min()}) into val={val}, test={test}: that gives "
            f"train={n_train}, val={n_val}, test={n_test} images, and each part needs at "
            "least one image per class and each class two images. Use more images or "
            "larger split fractions."
        )
    rng = np.random.default_rng(seed)
    test_share = _allocate(counts, n_test, rng)
    val_share = _allocate(counts - test_share, n_val, rng)
    # every class's images in a random order: the first ones test, the next ones val
    order = np.lexsort((rng.random(n), labels))
    rank = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    split = np.full(n, TRAIN, dtype=np.int8)
    sorted_labels = labels[order]
    split[order[rank < test_share[sorted_labels]]] = TEST
    in_val = (rank >= test_share[sorted_labels]) & (rank < (test_share + val_share)[sorted_labels])
    split[order[in_val]] = VAL
    check_split(split, f"dataset '{name}': the split of {n} images")
    return split


def grouped_split(
    labels: np.ndarray, groups: np.ndarray, val: float, test: float, seed: int, name: str
) -> np.ndarray:
    """A split that keeps each group of images (`groups`, an id per image: the same source
    exemplar) in one part, stratified by class within each class: of a class's g groups,
    round(test * g) go to test and round(val * g) to validation, at least one each, in a
    random order; the rest train. A probe is then tested on exemplars it never saw (on
    Geirhos' stimuli, a texture image stylised onto 17 to 37 shapes would otherwise be
    matched, not decoded). Groups differ in size, and runs train together on parts of one
    size: each class's part keeps as many of its images, drawn at random, as its smallest
    groups hold (the others are UNUSED), so every seed gives parts of the same sizes. A
    group must hold one class."""
    ids, of_image, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    of_image = of_image.reshape(-1)
    group_label = np.full(len(ids), -1, dtype=np.int64)
    group_label[of_image] = labels
    if (group_label[of_image] != labels).any():
        raise SplitError(
            f"dataset '{name}': a split group holds images of more than one class; its "
            "images cannot all be in one part of a stratified split."
        )
    rng = np.random.default_rng(seed)
    split = np.full(len(labels), UNUSED, dtype=np.int8)
    for c in np.unique(group_label):
        members = np.flatnonzero(group_label == c)
        g = len(members)
        n_test, n_val = max(1, round(test * g)), max(1, round(val * g))
        if g - n_test - n_val < 1:
            raise SplitError(
                f"dataset '{name}': class {c} has {g} exemplars (groups of images split "
                f"together); train, val and test need one each, and val={val}, test={test} "
                f"leave {g - n_test - n_val} to train. Use smaller split fractions or more "
                "exemplars."
            )
        smallest = np.cumsum(np.sort(sizes[members]))  # k smallest groups' images: [k - 1]
        order = rng.permutation(members)
        drawn = {TEST: order[:n_test], VAL: order[n_test : n_test + n_val]}
        drawn[TRAIN] = order[n_test + n_val :]
        for code, chosen in drawn.items():
            images = rng.permutation(np.flatnonzero(np.isin(of_image, chosen)))
            split[images[: smallest[len(chosen) - 1]]] = code
    check_split(split, f"dataset '{name}': the grouped split of {len(labels)} images")
    return split


def fixed_test_split(
    labels: np.ndarray, fixed_test: np.ndarray, val: float, test: float, seed: int, name: str
) -> np.ndarray:
    """A split whose test part is fixed by the source (`fixed_test`, e.g. the cue-conflict
    images); the other images are split into train and validation, stratified by class,
    with validation getting the share val / (1 - test) of them as in `stratified_split`."""
    rest = np.flatnonzero(~fixed_test)
    counts = np.bincount(labels[rest], minlength=labels.max() + 1)
    n_val = math.ceil(val / (1.0 - test) * len(rest))
    rng = np.random.default_rng(seed)
    val_share = _allocate(counts, n_val, rng)
    split = np.full(len(labels), TRAIN, dtype=np.int8)
    split[fixed_test] = TEST
    for c in np.flatnonzero(val_share):
        members = rest[labels[rest] == c]
        split[rng.permutation(members)[: val_share[c]]] = VAL
    check_split(split, f"dataset '{name}': the split of {len(labels)} images (fixed test set)")
    return split


def within_split(
    labels: np.ndarray, within: np.ndarray, val: float, test: float, seed: int, name: str
) -> np.ndarray:
    """A stratified split (`stratified_split`) of the images `within` (bool per image)
    only; every other image is UNUSED."""
    split = np.full(len(labels), UNUSED, dtype=np.int8)
    split[within] = stratified_split(labels[within], val, test, seed, name)
    return split


def run_splits(
    labels: np.ndarray,
    split: dict[str, Any],
    runs: list[int],
    name: str,
    fixed_test: np.ndarray | None = None,
    within: np.ndarray | None = None,
    given: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> dict[int, np.ndarray]:
    """Each run's split of `labels` (computed once per distinct seed); with `fixed_test`
    (a source's own test images), only train and validation are drawn; with `within`
    (bool per image), all three parts are drawn among those images only; with `given`
    (the data's own split, a part code per image), that split, validation drawn from its
    train part where it has no validation part; with `groups` (an id per image: images
    of one exemplar), each group in one part (`grouped_split`)."""
    if groups is not None and (given is not None or fixed_test is not None or within is not None):
        raise SplitError(f"dataset '{name}': split groups with a given or fixed test split")
    if given is not None:
        if (given == VAL).any():
            check_split(given, f"dataset '{name}': the given split")
            return {run: given for run in runs}
        fixed_test = given == TEST
    by_seed: dict[int, np.ndarray] = {}
    out = {}
    for run in runs:
        seed = run_seed(split, run)
        if seed not in by_seed:
            if within is not None:
                by_seed[seed] = within_split(
                    labels, within, split["val"], split["test"], seed, name
                )
            elif groups is not None:
                by_seed[seed] = grouped_split(
                    labels, groups, split["val"], split["test"], seed, name
                )
            elif fixed_test is not None:
                by_seed[seed] = fixed_test_split(
                    labels, fixed_test, split["val"], split["test"], seed, name
                )
            else:
                by_seed[seed] = stratified_split(labels, split["val"], split["test"], seed, name)
        out[run] = by_seed[seed]
    return out
