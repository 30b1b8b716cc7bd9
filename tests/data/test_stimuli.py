"""Geirhos et al.'s stimuli as a source: a committed subset (tests/assets/texture-vs-shape,
CC BY 4.0), its files checked against the pinned commit's hashes; nothing downloads."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from conftest import ASSETS, Workflow, copy_workflow, tiny_config

from visual_ablation.data import data_store, preparation, splits, stimuli
from visual_ablation.data.decode import DatasetError
from visual_ablation.plan.config import ConfigError, resolve
from visual_ablation.probes import training

SUBSET = ASSETS / "texture-vs-shape"


def subset_files(folder: str) -> list[str]:
    root = SUBSET / "stimuli" / folder
    return sorted(str(p.relative_to(SUBSET)) for p in root.rglob("*.png"))


def test_the_committed_subset_is_the_pinned_commits_files(tmp_path):
    """fetch() from the subset as a file:// mirror: every file's SHA-256 is the manifest's
    (the subset is unmodified), and a changed file is refused with nothing kept."""
    paths = [p for s in stimuli.SETS.values() for p in subset_files(s)]
    assert len(paths) == 64
    assert len(stimuli.manifest()) == 1600
    fetched = stimuli.fetch(str(tmp_path / "copy"), base_url=SUBSET.as_uri() + "/", only=paths)
    assert fetched == 64
    # a second fetch keeps what is there
    assert stimuli.fetch(str(tmp_path / "copy"), base_url=SUBSET.as_uri() + "/", only=paths) == 0
    bad = tmp_path / "bad"
    shutil.copytree(SUBSET, bad)
    victim = bad / paths[0]
    victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
    with pytest.raises(DatasetError, match="SHA-256 is not the pinned commit's"):
        stimuli.fetch(str(tmp_path / "other"), base_url=bad.as_uri() + "/", only=paths[:1])
    assert not list((tmp_path / "other").rglob("*.png*"))


def test_cue_conflict_stimuli_hold_shape_as_class_and_texture_as_a_factor():
    source = stimuli.GeirhosStimuliSource(str(SUBSET), "cue-conflict", conflict_only=False)
    assert source.class_names == sorted(os.listdir(SUBSET / "stimuli/edges"))
    assert len(source.class_names) == 16 and len(source.labels) == 32
    texture, names = source.factors["texture"]
    conflict, conflict_names = source.factors["conflict"]
    assert names == source.class_names and conflict_names == ["same", "conflict"]
    for i, name in enumerate(source.file_names):
        shape, cue = stimuli.categories_of(name)
        assert source.class_names[source.labels[i]] == shape == name.split("/")[0]
        assert names[texture[i]] == cue
        assert conflict[i] == (shape != cue)
    assert conflict.sum() == 16
    # by default the images whose shape and texture differ only
    only = stimuli.GeirhosStimuliSource(str(SUBSET), "cue-conflict")
    assert len(only.labels) == 16 and "conflict" not in only.factors  # every one is
    assert (only.labels != only.factors["texture"][0]).all()
    image = next(only.decode(np.arange(2), 224))
    assert image.shape == (2, 224, 224, 3) and image.dtype == np.uint8


def test_edges_and_silhouettes_are_shapes_alone():
    for name, folder in (("edges", "edges"), ("silhouettes", "filled-silhouettes")):
        source = stimuli.GeirhosStimuliSource(str(SUBSET / "stimuli" / folder), name)
        assert len(source.labels) == 16 and source.factors == {}
        assert sorted(source.labels) == list(range(16))


def test_a_config_reads_the_stimuli_into_a_data_store(tmp_path):
    config = tiny_config(
        results_dir=str(tmp_path),
        datasets={
            "geirhos": {"source": "geirhos", "path": str(SUBSET), "targets": ["class", "texture"]}
        },
        representations=["original"],
        backbones={"pixels": {"model": "pixels", "image_size": 8}},
    )
    exp = resolve(config)
    spec = exp.data_spec("geirhos")
    assert spec["image_size"] == 224 and spec["stimuli"] == "cue-conflict"
    assert spec["manifest"]["files"] == 32  # the cue-conflict set's files, not the others
    preparation.prepare(spec, exp.data_store("geirhos"), progress=False)
    import zarr

    group = zarr.open_group(exp.data_store("geirhos"), mode="r")
    texture, names = data_store.read_target(group, "texture", "here")
    assert len(texture) == 16 and (texture != group["labels"][:]).all()
    assert data_store.read_file_names(group)[0].endswith(".png")
    # the train jobs' split groups: each stimulus's shape image (class) and texture image
    stored = data_store.read_file_names(group)
    for target, which in (("class", 0), ("texture", 1)):
        groups = training.read_labels(exp.data_store("geirhos"), spec, target).groups
        exemplar = [stimuli.exemplars_of(name)[which] for name in stored]
        same = np.equal.outer(groups, groups)
        assert (same == np.equal.outer(exemplar, exemplar)).all()
    assert len(set(training.read_labels(exp.data_store("geirhos"), spec, "texture").groups)) < 16
    assert training.read_labels(exp.data_store("geirhos"), spec, "control").groups is None

    config["datasets"]["geirhos"]["path"] = str(tmp_path)
    with pytest.raises(ConfigError, match="no style-transfer-preprocessed-512/ folder"):
        resolve(config)
    config["datasets"]["geirhos"] |= {"path": str(SUBSET), "cue": "texture"}
    with pytest.raises(ConfigError, match="only synthetic-cue-conflict takes it"):
        resolve(config)


def full_set_names() -> tuple[list[str], list[str]]:
    """The cue-conflict set's layout: 16 categories x 10 shape images, each stylised with
    8 of the 48 texture images (3 a category) of other categories."""
    categories = sorted(
        "airplane bear bicycle bird boat bottle car cat chair clock dog elephant keyboard "
        "knife oven truck".split()
    )
    rng = np.random.default_rng(0)
    names = []
    for shape in categories:
        for i in range(1, 11):
            for t in rng.choice([c for c in categories if c != shape], 8, replace=False):
                names.append(f"{shape}/{shape}{i}-{t}{rng.integers(1, 4)}.png")
    return names, categories


@pytest.mark.parametrize("target", ["class", "texture"])
def test_cue_conflict_splits_never_share_a_shape_or_texture_image_between_parts(target):
    """A probe of the shape (class) or the texture is tested on shape or texture images it
    never saw: each split keeps every image of one exemplar in one part, every category in
    every part, and resampled runs draw other exemplars."""
    names, categories = full_set_names()
    which = 0 if target == "class" else 1
    labels = np.array([categories.index(stimuli.categories_of(n)[which]) for n in names])
    spec = {"stimuli": "cue-conflict"}
    groups = stimuli.GeirhosStimuliSource.split_groups(spec, lambda: names, target)
    split_spec = {"val": 0.15, "test": 0.2, "seed": 0, "resample": True}
    of_run = splits.run_splits(labels, split_spec, [0, 1], "geirhos", groups=groups)
    for split in of_run.values():
        parts = [set(groups[split == code]) for _, code in splits.PARTS]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        for _, code in splits.PARTS:
            assert set(labels[split == code]) == set(range(16))
    # every run's parts have the same sizes (runs train together): trimmed to what the
    # smallest exemplars hold
    assert splits.split_sizes(of_run[0]) == splits.split_sizes(of_run[1])
    test_exemplars = [set(groups[s == splits.TEST]) for s in of_run.values()]
    assert test_exemplars[0] != test_exemplars[1]
    # shapes: 2 of 10 images a category tested; textures: 1 of 3
    assert len(test_exemplars[0]) == (32 if target == "class" else 16)
    assert stimuli.GeirhosStimuliSource.split_groups(spec, lambda: names, "control") is None
    assert (
        stimuli.GeirhosStimuliSource.split_groups({"stimuli": "edges"}, lambda: names, target)
        is None
    )


def test_a_data_job_refuses_stimuli_too_few_to_split_by_exemplar_before_decoding(tmp_path):
    """The committed subset has one shape image a category: no split keeps shape images
    apart, and the data job says so before it decodes anything."""
    config = tiny_config(
        datasets={"geirhos": {"source": "geirhos", "path": str(SUBSET)}},
        representations=["original"],
        backbones={"pixels": {"model": "pixels", "image_size": 8}},
    )
    exp = resolve(config)
    split = {"val": 0.15, "test": 0.2, "seed": 0}
    store = tmp_path / "geirhos.zarr"
    with pytest.raises(splits.SplitError, match="has 1 exemplars"):
        preparation.prepare(exp.data_spec("geirhos"), str(store), False, split, targets=None)
    assert not store.exists()


def test_a_grouped_split_with_too_few_exemplars_says_so():
    labels = np.repeat([0, 1], 6)
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 4])  # class 1: two exemplars
    with pytest.raises(splits.SplitError, match="class 1 has 2 exemplars"):
        splits.grouped_split(labels, groups, 0.15, 0.2, 0, "geirhos")
    with pytest.raises(splits.SplitError, match="more than one class"):
        splits.grouped_split(labels, np.zeros(12, int), 0.15, 0.2, 0, "geirhos")


def test_a_fetched_set_is_the_pinned_commits_files_whatever_is_on_disk(tmp_path, monkeypatch):
    """`fetch`: the path may be empty or incomplete; the data spec names the pinned files
    (it does not change once they are there), and fetch_dataset fills the path from a
    mirror, checking every file, then leaves the mark the data job waits for."""
    config = tiny_config(
        datasets={"geirhos": {"source": "geirhos", "path": str(tmp_path / "stim")}},
        representations=["original"],
        backbones={"pixels": {"model": "pixels", "image_size": 8}},
    )
    with pytest.raises(ConfigError, match="does not exist"):
        resolve(config)
    config["datasets"]["geirhos"]["fetch"] = SUBSET.as_uri()
    spec = resolve(config).data_spec("geirhos")
    assert spec["manifest"] == {"commit": stimuli.COMMIT, "files": 1280}
    # the subset's files stand in for the whole set
    subset = {p: d for p, d in stimuli.manifest(("cue-conflict",)).items() if (SUBSET / p).exists()}
    monkeypatch.setattr(stimuli, "manifest", lambda sets: subset)
    mark = tmp_path / "geirhos.fetched"
    assert stimuli.fetch_dataset(spec, str(mark)) == 32 and mark.exists()
    monkeypatch.undo()
    assert resolve(config).data_spec("geirhos") == spec  # files there now: the same spec
    assert stimuli.GeirhosStimuliSource.open(spec).labels.shape == (16,)
    config["datasets"]["geirhos"] |= {"source": "sklearn-digits"}
    del config["datasets"]["geirhos"]["path"]
    with pytest.raises(ConfigError, match="fetch"):
        resolve(config)


@pytest.mark.workflow
def test_a_dataset_that_fetches_waits_for_its_files_and_an_unreachable_mirror_stops_it(
    tmp_path,
):
    """The fetch_stimuli rule runs before the data job; offline (a mirror without the
    files) it fails saying how to copy the repository instead, and no store is made."""
    wf = Workflow(copy_workflow(tmp_path / "repo"), tmp_path / "work")
    mirror = (tmp_path / "nowhere").as_uri()
    datasets = {"geirhos": {"source": "geirhos", "path": "stim", "fetch": mirror}}
    wf.write_config(tiny_config(datasets=datasets, runs=1, representations=["original"]))
    planned = [rule for rule, _ in wf.planned("--until", "prepare_data")]
    assert planned == ["fetch_stimuli", "prepare_data"]
    proc = wf.run(check=False)
    assert proc.returncode != 0
    assert "Offline? Copy the repository instead" in proc.output
    assert not (wf.workdir / "results" / "data" / "geirhos.zarr").exists()
