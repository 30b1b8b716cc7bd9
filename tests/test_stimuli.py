"""Geirhos et al.'s stimuli as a source: a committed subset (tests/data/texture-vs-shape,
CC BY 4.0), its files checked against the pinned commit's hashes; nothing downloads."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from visual_ablation.data import preparation, stimuli
from visual_ablation.data.decode import DatasetError
from visual_ablation.spec.config import ConfigError, resolve

SUBSET = Path(__file__).parent / "data" / "texture-vs-shape"


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
    config = {
        "results_dir": str(tmp_path),
        "datasets": {
            "geirhos": {"source": "geirhos", "path": str(SUBSET), "targets": ["class", "texture"]}
        },
        "representations": ["original"],
        "backbones": {"pixels": {"model": "pixels", "image_size": 8}},
    }
    exp = resolve(config)
    spec = exp.data_spec("geirhos")
    assert spec["image_size"] == 224 and spec["stimuli"] == "cue-conflict"
    assert spec["manifest"]["files"] == 32  # the cue-conflict set's files, not the others
    preparation.prepare(spec, exp.data_store("geirhos"), progress=False)
    import zarr

    group = zarr.open_group(exp.data_store("geirhos"), mode="r")
    texture, names = preparation.read_target(group, "texture", "here")
    assert len(texture) == 16 and (texture != group["labels"][:]).all()
    assert preparation.read_file_names(group)[0].endswith(".png")

    config["datasets"]["geirhos"]["path"] = str(tmp_path)
    with pytest.raises(ConfigError, match="no style-transfer-preprocessed-512/ folder"):
        resolve(config)
    config["datasets"]["geirhos"] |= {"path": str(SUBSET), "cue": "texture"}
    with pytest.raises(ConfigError, match="only synthetic-cue-conflict takes it"):
        resolve(config)
