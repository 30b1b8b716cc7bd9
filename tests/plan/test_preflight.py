"""Bad config is refused before any job, with a message that names the key and the fix:
the checks the Snakefile runs at parse time (`preflight.experiment`), called in-process
with the Snakefile's own schema validation. tests/workflow/test_bad_input.py keeps a few of these
through the console, and the errors that only a job can find."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config, with_key
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from visual_ablation.plan import preflight
from visual_ablation.plan.config import ConfigError

SCHEMA = str(Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml")


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Relative results and cache dirs, and the backbone-check record, land in tmp_path."""
    monkeypatch.chdir(tmp_path)


def refusal(config: dict, files: list[str] | None = None) -> str:
    """The message a config is refused with, as the Snakefile would get it."""
    with pytest.raises((ConfigError, WorkflowError)) as raised:
        preflight.experiment(
            copy.deepcopy(config),
            files or [],
            validate=lambda checked: validate(checked, SCHEMA),
            main_process=True,
            schema=SCHEMA,
        )
    return str(raised.value)


def test_the_tiny_config_passes(tmp_path):
    exp = preflight.experiment(
        tiny_config(), [], validate=lambda c: validate(c, SCHEMA), main_process=True
    )
    assert list(exp.backbones) == ["effnet", "pixels"]
    assert not (tmp_path / "results").exists()  # checked, not created


def test_unknown_representation_lists_valid_ones():
    out = refusal(tiny_config(representations=["original", "blurry"]))
    assert "config key 'representations.blurry': unknown representation 'blurry'" in out
    assert "Valid values: original, grayscale, lowpass, highpass, phase_scramble" in out


def test_unknown_representation_param_is_named():
    out = refusal(tiny_config(representations={"lowpass": {"grid": 3}}))
    assert "representations.lowpass': unknown parameter(s) grid for lowpass" in out
    assert "Valid parameters: sigma" in out


def test_unknown_backbone_model_names_its_source_and_the_closest_names():
    out = refusal(tiny_config(backbones={"net": {"model": "resnet1000"}}))
    assert "config key 'backbones.net.model': 'resnet1000' is not a torchvision model" in out
    assert "Closest: resnet101" in out and len(out) < 300


@pytest.mark.parametrize(
    "model, source",
    [("vit_small_patch16_224.dino", "timm"), ("timm/resnet18.a1_in1k", "timm")],
)
def test_a_model_of_another_source_says_which_source_knows_it(model, source):
    out = refusal(tiny_config(backbones={"net": {"model": model}}))
    assert "is not a torchvision model" in out and f"It is a {source} model" in out
    assert f"add `source: {source}`" in out


def test_a_source_key_is_taken_and_an_unknown_one_refused():
    out = refusal(tiny_config(backbones={"net": {"model": "resnet18", "source": "caffe"}}))
    assert out == (
        "config key 'backbones.net.source': 'caffe' is not one of bundled, torchvision, "
        "timm, huggingface, open_clip."
    )


def test_unknown_layer_lists_valid_layers():
    config = tiny_config()
    config["backbones"]["effnet"]["layers"] = ["stem", "blocks.99"]
    out = refusal(config)
    assert "config key 'backbones.effnet.layers': unknown layer 'blocks.99'" in out
    assert "closest: blocks.9" in out and "python -m visual_ablation.features.layers" in out


def test_torchvision_layer_typo_lists_module_names():
    out = refusal(tiny_config(backbones={"r": {"model": "resnet18", "layers": ["layer9"]}}))
    assert "unknown layer 'layer9' of resnet18 (closest: layer4" in out
    assert "--source torchvision --model resnet18 --image-size 64" in out
    assert len(out) < 400  # not every module of the model


def test_dataset_path_that_does_not_exist(tmp_path):
    missing = tmp_path / "nowhere"
    out = refusal(tiny_config(datasets={"mine": {"source": "imagefolder", "path": str(missing)}}))
    assert f"config key 'datasets.mine.path': {missing} does not exist" in out


@pytest.mark.parametrize(
    "source, key, value",
    [
        ("npz", "image_column", "pixels"),  # parquet's key
        ("imagefolder", "label_key", "y"),  # npz's
        ("sklearn-digits", "idx_parts", ["train"]),  # idx's
        ("synthetic-shapes", "cue", "colour"),  # the cue-conflict set's
    ],
)
def test_a_key_of_another_source_is_refused_naming_both(tmp_path, source, key, value):
    """Every source declares its own keys (`defaults`): one given to another source is
    refused, not silently ignored."""
    spec = {"source": source, key: value}
    if source in ("npz", "imagefolder"):
        spec["path"] = str(tmp_path)
    if source == "synthetic-shapes":
        spec["n"] = 100
    out = refusal(tiny_config(datasets={"d": spec}))
    assert f"config key 'datasets.d.{key}': only" in out and f"not {source}" in out


def test_pretrained_weights_missing_with_fetching_off_stop_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    config = tiny_config(backbones={"r": {"model": "resnet18", "weights": "IMAGENET1K_V1"}})
    out = refusal({**config, "fetch_weights": False})
    assert "'backbones.r.weights': pretrained weights ResNet18_Weights.IMAGENET1K_V1" in out
    assert str(tmp_path / "empty-torch-home") in out and "fetch_weights: false" in out


def test_hub_weights_missing_with_hf_hub_offline_stop_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    spec = {"model": "resnet18", "source": "timm", "weights": "a1_in1k", "image_size": 32}
    out = refusal(tiny_config(backbones={"r": spec}))
    assert "timm model resnet18.a1_in1k" in out and "HF_HUB_OFFLINE is set" in out


def test_an_unknown_named_weights_lists_the_tags():
    spec = {"model": "resnet18", "weights": "IMAGENET9K"}
    out = refusal(tiny_config(backbones={"r": spec}))
    assert "'backbones.r.weights': 'IMAGENET9K' is not a file" in out and "IMAGENET1K_V1" in out


def test_a_cache_dir_that_cannot_be_created_is_refused(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    out = refusal(tiny_config(cache_dir=str(blocker / "cache")))
    assert "config key 'cache_dir'" in out and "is a file" in out


@pytest.mark.parametrize(
    "probe, key",
    [({"hidden": 0, "patience": 0}, "patience"), ({"hidden": 0, "lr": -0.001}, "lr")],
)
def test_bad_probe_config_is_a_schema_error(probe, key):
    out = refusal(tiny_config(probes={"linear": probe}))
    assert out.startswith(f"config key 'probes.linear.{key}': ") and "minimum" in out


@pytest.mark.parametrize(
    "key, value",
    [
        ("runs", "ten"),
        ("extraction.batch_size", -5),
        ("datasets.digits.n", -3),
        ("datasets.digits.image_size", 0),
        ("datasets.digits.on_bad_image", "ignore"),
        ("backbones.effnet.layers", "stem"),
        ("probes.mlp.hidden", "wide"),
        ("split.test", "0.2"),
        ("split.val", -0.1),
    ],
)
def test_wrong_types_and_sizes_are_schema_errors_naming_the_key(tmp_path, key, value):
    out = refusal(with_key(key, value))
    assert out.startswith(f"config key '{key}': {value!r} ") and len(out.splitlines()) == 1
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "config, message",
    [
        (
            {"representations": ["original"], "backbones": {"p": {"model": "pixels"}}},
            "config key 'datasets' is required and missing.",
        ),
        (
            tiny_config(backbones={"p": {"model": "pixels", "sourc": "bundled"}}),
            "config key 'backbones.p.sourc' is not a key here. Valid keys: image_size, layers,",
        ),
        (
            tiny_config(backbones={"p/q": {"model": "pixels"}}),
            "config key 'backbones': name 'p/q' may use only letters, digits, _, . and -",
        ),
    ],
)
def test_a_schema_error_is_one_short_line_naming_the_key(config, message):
    out = refusal(config)
    assert out.startswith(message) and len(out) < 300 and "\n" not in out


def test_a_representation_written_twice_in_a_mapping_is_refused(tmp_path):
    text = yaml.safe_dump(tiny_config(), sort_keys=False).replace(
        "representations:\n- original\n- grayscale\n",
        "representations:\n  lowpass: {sigma: 0.05}\n  lowpass: {sigma: 0.2}\n",
    )
    assert "lowpass: {sigma: 0.2}" in text
    path = tmp_path / "config.yaml"
    path.write_text(text)
    out = refusal(yaml.safe_load(text), [str(path)])
    assert "key 'lowpass' appears twice in one mapping (lines" in out
    assert "YAML would silently keep only the second" in out


def test_two_targets_with_the_same_labels_are_refused():
    conflict = {"source": "synthetic-cue-conflict", "n": 200, "seed": 0}
    config = with_key("datasets", {"c": {**conflict, "targets": ["class", "cue", "texture"]}})
    out = refusal(config)
    assert "config key 'datasets.c.targets': cue and texture have the same labels" in out
    assert "would train the same heads: list one of them" in out
    # with the colour as the cue, the texture is a nuisance drawn apart from it
    config["datasets"]["c"]["cue"] = "colour"
    preflight.experiment(
        config, [], validate=lambda checked: validate(checked, SCHEMA), main_process=True
    )


def readme_model_backbones() -> dict:
    """The backbones of the README's "Your own model" section, as written."""
    section = (Path(SCHEMA).parents[2] / "README.md").read_text().split("## Your own model")[1]
    return yaml.safe_load(section.split("```yaml", 1)[1].split("```", 1)[0])["backbones"]


def test_the_readme_model_section_passes_the_checks_and_plans_fetching(tmp_path, monkeypatch):
    import huggingface_hub.constants
    import torch
    import torchvision

    from visual_ablation.features import backbones

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    written = readme_model_backbones()
    assert list(written) == ["dino", "dinov2", "clip", "mine"]
    checkpoint = tmp_path / "r50-finetuned.pth"
    torch.save({"model": torchvision.models.resnet50().state_dict(), "epoch": 90}, checkpoint)
    written["mine"]["weights"] = str(checkpoint)
    config = tiny_config(backbones=written)
    exp = preflight.experiment(
        copy.deepcopy(config), [], lambda c: validate(c, SCHEMA), main_process=True
    )
    fetched = {name: backbones.needs_fetch(spec) for name, spec in exp.backbones.items()}
    assert fetched == {"dino": True, "dinov2": True, "clip": True, "mine": False}
    out = refusal({**config, "fetch_weights": False})
    assert "'backbones.dino.weights': pretrained weights of timm model" in out


def test_split_given_is_refused_for_a_source_without_one_and_left_out_when_drawn():
    digits = {"source": "sklearn-digits", "n": 200, "split": "given"}
    out = refusal(tiny_config(datasets={"digits": digits}))
    assert out.startswith(
        "config key 'datasets.digits.split': sklearn-digits has no split of its own to give"
    )
    assert "imagefolder: train/ and val/ or test/ folders over class folders" in out
    drawn = {**digits, "split": "drawn"}
    exp = preflight.experiment(
        tiny_config(datasets={"digits": drawn}),
        [],
        lambda c: validate(c, SCHEMA),
        main_process=False,
    )
    assert "split" not in exp.data_spec("digits")  # the default: specs as before the key


def test_a_folder_with_a_given_split_is_refused_saying_where_to_point(tmp_path):
    from PIL import Image

    root = tmp_path / "imagenet-style"
    for part in ("train", "val"):
        for name in ("cat", "dog"):
            (root / part / name).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(root / part / name / "0.png")
    out = refusal(tiny_config(datasets={"d": {"source": "imagefolder", "path": str(root)}}))
    assert f"config key 'datasets.d.path': {root} holds train, val/ folders" in out
    assert "Add `split: given` to the dataset to use that split" in out
    assert f"point path at one part ({root / 'train'})" in out
    # with split: given, its parts are the split; the key is in the data spec
    given = {"source": "imagefolder", "path": str(root), "split": "given"}
    exp = preflight.experiment(
        tiny_config(datasets={"d": given}), [], lambda c: validate(c, SCHEMA), main_process=False
    )
    assert exp.data_spec("d")["split"] == "given" and exp.data_spec("d")["manifest"]["files"] == 4
    # one part is a folder of classes
    exp = preflight.experiment(
        tiny_config(datasets={"d": {"source": "imagefolder", "path": str(root / "train")}}),
        [],
        lambda c: validate(c, SCHEMA),
        main_process=False,
    )
    assert exp.data_spec("d")["manifest"]["files"] == 2
