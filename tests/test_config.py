"""Config resolution: defaults, names, specs (no Snakemake needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from visual_ablation.config import PROBE_DEFAULTS, ConfigError, check_backbones, resolve

REPO = Path(__file__).resolve().parents[1]


def base(**kw):
    config = {
        "datasets": {"d": {"source": "sklearn-digits"}},
        "representations": ["original"],
        "backbones": {"p": {"model": "pixels"}},
        "split": {"val": 0.15, "test": 0.2, "seed": 0},
    }
    config.update(kw)
    return config


def test_default_config_resolves_and_its_layers_exist():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.setdefault("split", {"val": 0.15, "test": 0.2, "seed": 0})
    exp = resolve(config)
    check_backbones(exp)
    assert len(exp.feature_targets()) == 1 * 2 * 8
    assert exp.datasets["shapes"]["image_size"] == 64
    assert len(exp.run_tables()) == 16 * 2 * 3  # x 2 probes x 3 runs
    assert exp.reference == "original"


def test_probe_defaults_fill_every_key_and_the_reference_follows_kind():
    exp = resolve(base(probes={"lin": {"hidden": 0}, "mlp": {"hidden": 8, "lr": 0.01}}))
    assert exp.probes["lin"] == PROBE_DEFAULTS
    assert exp.probes["mlp"] == {**PROBE_DEFAULTS, "hidden": 8, "lr": 0.01}
    assert exp.probe_spec("mlp")["name"] == "mlp"
    exp = resolve(
        base(representations={"orig": {"kind": "original"}, "gray": {"kind": "grayscale"}})
    )
    assert exp.reference == "orig"
    assert resolve(base(representations=["grayscale"])).reference is None


def test_cache_dir_defaults_to_results_dir_and_can_move():
    exp = resolve(base(results_dir="out"))
    assert exp.feature_store("d", "p", "original") == "out/features/d/p/original.zarr"
    exp = resolve(base(results_dir="out", cache_dir="/fast/cache"))
    assert exp.data_store("d") == "/fast/cache/data/d.zarr"


def test_feature_spec_leaves_out_the_split_and_tracks_what_matters():
    a = resolve(base()).feature_spec("d", "p", "original")
    b = resolve(base(split={"val": 0.1, "test": 0.2, "seed": 5})).feature_spec("d", "p", "original")
    assert a == b
    c = resolve(base(backbones={"p": {"model": "pixels", "image_size": 8}}))
    assert c.feature_spec("d", "p", "original") != a


def test_representation_listed_twice_is_refused():
    with pytest.raises(ConfigError, match="listed twice: original"):
        resolve(base(representations=["original", "original"]))


def test_path_source_without_path_is_refused():
    with pytest.raises(ConfigError, match="'datasets.x.path': source npz needs a path"):
        resolve(base(datasets={"x": {"source": "npz"}}))


def test_missing_checkpoint_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="backbones.r.weights': checkpoint .* does not exist"):
        resolve(base(backbones={"r": {"model": "resnet18", "weights": str(tmp_path / "x.pt")}}))
