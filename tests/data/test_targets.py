"""Factor labels of the synthetic sources, the cue-conflict source and its fixed test
split: each label checked against the pixels it describes."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest

from visual_ablation.data import data_store, splits
from visual_ablation.data.procedural import (
    CUE_TEXTURES,
    HUES,
    SHAPES,
    CueConflictSource,
    ShapesSource,
    hue_sextant,
)


def test_hue_sextants_are_sixths_of_the_hue_circle():
    rng = np.random.default_rng(0)
    rgb = rng.uniform(0, 1, size=(5000, 3))
    hue = np.array([colorsys.rgb_to_hsv(*c)[0] for c in rgb])
    assert np.array_equal(hue_sextant(rgb), np.minimum((hue * 6).astype(int), 5))
    assert len(HUES) == 6


def _inside_pixels(source, i: int, size: int) -> np.ndarray:
    image = next(source.decode(np.array([i]), size))[0].astype(float) / 255.0
    return image[source.silhouette(i, size)]


def test_shapes_factors_describe_the_drawn_images():
    size, n = 64, 60
    source = ShapesSource(n, seed=3)
    assert set(source.factors) == set(ShapesSource.factor_names)
    colour, names = source.factors["colour"]
    assert names == list(HUES)
    # the shape's median pixel has the colour's hue sextant (noise aside)
    seen = [hue_sextant(np.median(_inside_pixels(source, i, size), axis=0)) for i in range(n)]
    assert np.mean(np.array(seen) == colour) >= 0.9
    # flat shapes are the smoothest inside
    texture, _ = source.factors["texture"]
    spread = np.array([_inside_pixels(source, i, size).std(axis=0).mean() for i in range(n)])
    flat, patterned = spread[texture == 2], spread[texture != 2]
    assert np.median(flat) < np.median(patterned)
    # position: the shape's centre of mass is in the labelled third, left to right
    position, _ = source.factors["position"]
    cx = np.array([np.nonzero(source.silhouette(i, size))[1].mean() / size for i in range(n)])
    means = [cx[position % 3 == col].mean() for col in range(3)]
    assert means[0] < means[1] < means[2]
    # labels and images did not change: the factors replay the draws
    assert np.array_equal(source.labels, ShapesSource(n, seed=3).labels)


def test_every_factor_is_balanced_over_its_classes():
    source = ShapesSource(3000, seed=0)
    for name, (labels, names) in source.factors.items():
        counts = np.bincount(labels, minlength=len(names))
        assert counts.min() > 0.7 * len(labels) / len(names), name


@pytest.mark.parametrize("cue", ["texture", "colour"])
def test_cue_conflict_images_set_the_cue_against_the_shape_only_in_the_test_set(cue):
    source = CueConflictSource(2000, seed=1, cue=cue, agreement=0.9, conflict=0.25)
    labels, fixed = source.labels, source.fixed_test
    signalled, names = source.factors["cue"]
    assert names == list(SHAPES)
    assert abs(fixed.mean() - 0.25) < 0.03
    assert not (signalled[fixed] == labels[fixed]).any()  # every test image conflicts
    agree = (signalled[~fixed] == labels[~fixed]).mean()
    assert abs(agree - 0.9) < 0.03
    if cue == "texture":
        texture, names = source.factors["texture"]
        assert names == list(CUE_TEXTURES) and np.array_equal(texture, signalled)
    else:
        # the cue's hue: eight hues, one per class, and the colour factor is its sextant
        colour, _ = source.factors["colour"]
        hue = (signalled / 8.0 * 6).astype(int)
        assert np.mean(colour == hue) > 0.8


def test_colour_cue_paints_the_cues_hue():
    source = CueConflictSource(40, seed=2, cue="colour", agreement=1.0, conflict=0.5)
    signalled, _ = source.factors["cue"]
    for i in range(40):
        rgb = np.median(_inside_pixels(source, i, 64), axis=0)
        hue = colorsys.rgb_to_hsv(*rgb)[0]
        distance = min(abs(hue - signalled[i] / 8), 1 - abs(hue - signalled[i] / 8))
        assert distance < 0.06, (i, hue, signalled[i])


def test_a_fixed_test_set_is_every_runs_test_split():
    source = CueConflictSource(600, seed=0, cue="texture", agreement=1.0, conflict=0.2)
    split = {"val": 0.15, "test": 0.2, "seed": 0, "resample": True}
    of = splits.run_splits(source.labels, split, [0, 1, 2], "c", source.fixed_test)
    for run in (0, 1, 2):
        assert np.array_equal(of[run] == splits.TEST, source.fixed_test)
    sizes = {tuple(splits.split_sizes(of[run]).values()) for run in (0, 1, 2)}
    assert len(sizes) == 1  # the same part sizes in every run
    assert not np.array_equal(of[0], of[1])  # train and validation resampled
    rest = ~source.fixed_test
    n_val = (of[0] == splits.VAL).sum()
    assert n_val == int(np.ceil(0.15 / 0.8 * rest.sum()))
    # validation stratified by class among the non-test images
    val_counts = np.bincount(source.labels[of[0] == splits.VAL], minlength=8)
    expected = np.bincount(source.labels[rest], minlength=8) * n_val / rest.sum()
    assert np.all(np.abs(val_counts - expected) <= 1)


def control_store(tmp_path, source, spec):
    """A data store's label arrays (what control_labels reads) for a source's labels."""
    import zarr

    group = zarr.open_group(str(tmp_path / "labels.zarr"), mode="w")
    group.attrs.update({"spec": spec, "class_names": list(source.class_names)})
    group.create_array("labels", data=source.labels)
    for name, (labels, _) in source.factors.items():
        group.create_array(data_store.factor_array(name), data=labels)
    return group


def test_the_control_target_has_the_class_balance_and_is_independent_of_the_class(tmp_path):
    from scipy.stats import chi2_contingency

    source = ShapesSource(3000, seed=0)
    spec = {"source": "synthetic-shapes", "n": 3000, "seed": 0}
    control, names = data_store.control_labels(control_store(tmp_path, source, spec))
    classes = source.labels
    assert len(names) == len(source.class_names)
    # the class balance, up to the largest type (about 3000 / 108 images)
    gap = np.abs(np.bincount(control, minlength=8) - np.bincount(classes, minlength=8))
    assert gap.max() <= 3000 / 108
    # a function of colour x background x texture: every image of a type has one label
    types = np.stack([source.factors[f][0] for f in ("colour", "background", "texture")], 1)
    _, of_type = np.unique(types, axis=0, return_inverse=True)
    for t in np.unique(of_type):
        assert len(np.unique(control[of_type.ravel() == t])) == 1
    # independent of the class: a chi-square test does not reject, Cramer's V is small
    table = np.zeros((8, 8))
    np.add.at(table, (classes, control), 1)
    chi2, p, _, _ = chi2_contingency(table)
    assert p > 0.01 and np.sqrt(chi2 / (len(classes) * 7)) < 0.1
    # fixed: the same labels again, other labels for another dataset seed
    again, _ = data_store.control_labels(control_store(tmp_path, source, spec))
    assert np.array_equal(control, again)
    other, _ = data_store.control_labels(control_store(tmp_path, source, {**spec, "seed": 1}))
    assert not np.array_equal(control, other)


def test_a_source_without_factors_gets_the_class_labels_permuted(tmp_path):
    import zarr

    group = zarr.open_group(str(tmp_path / "digits.zarr"), mode="w")
    classes = np.repeat(np.arange(10), 30)
    group.attrs.update(
        {"spec": {"source": "sklearn-digits", "seed": 0}, "class_names": list("0123456789")}
    )
    group.create_array("labels", data=classes)
    control, _ = data_store.control_labels(group)
    assert np.array_equal(np.sort(control), classes)  # the same balance exactly
    assert (control == classes).mean() < 0.25  # chance is 0.1


def test_factor_targets_of_a_cue_conflict_set_are_decoded_on_its_conflict_images():
    from visual_ablation.probes import training

    source = CueConflictSource(1200, seed=0, cue="texture", agreement=1.0, conflict=0.25)
    fixed = source.fixed_test
    split = {"val": 0.15, "test": 0.2, "seed": 0, "resample": True}
    assert splits.target_images("class", fixed) is None
    assert splits.target_images("control", fixed) is None
    assert splits.target_images("cue", None) is None  # a source without conflict images
    within = splits.target_images("cue", fixed)
    of = splits.run_splits(source.labels, split, [0, 1], "c", fixed, within=within)
    for run in (0, 1):
        used = of[run] != splits.UNUSED
        assert np.array_equal(used, fixed)  # train, validation and test all conflict images
        assert splits.check_split(of[run], "c")["test"] == int(np.ceil(0.2 * fixed.sum()))
    assert not np.array_equal(of[0], of[1])  # each run draws its own
    shape, cue = source.factors["shape"][0], source.factors["cue"][0]
    assert np.array_equal(shape, source.labels)
    # where the class probe trains, the cue is the class renamed: refused as a target
    trained = splits.run_splits(source.labels, split, [0], "c", fixed)
    with pytest.raises(ValueError, match="target 'cue' has the class labels"):
        training.check_not_class("cue", cue, source.labels, trained, "c")
    training.check_not_class("class", source.labels, source.labels, trained, "c")
    # on the conflict images it never is: the cue is another class, spread over the others
    assert not training.same_up_to_names(cue[fixed], shape[fixed])
    table = np.zeros((8, 8))
    np.add.at(table, (shape[fixed], cue[fixed]), 1)
    assert np.trace(table) == 0 and (table + np.eye(8) > 0).all()
    training.check_not_class("background", source.factors["background"][0], shape, trained, "c")
