"""Pre-flight: everything checked before any job runs, behind one entry point the
Snakefile calls once (`experiment`): a config file that writes a key twice, the JSON
schema (Snakemake's `validate`, passed in: no module here imports Snakemake), the
resolved config, and in the main process the results and cache directories and the
backbones' model and layer names against the real models (remembered, so that a dry run
of an unchanged config does not import torch again).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from visual_ablation.features import backbones
from visual_ablation.plumbing.canonical import canonical
from visual_ablation.spec.config import ConfigError, Experiment, resolve, unknown_value

# where the main process remembers backbone specs that passed the check
CHECKED_RECORD = os.path.join(".snakemake", "visual-ablation", "backbones-checked.json")


def experiment(
    config: dict[str, Any],
    config_files: list[str],
    validate: Callable[[dict[str, Any]], None],
    main_process: bool,
) -> Experiment:
    """The checked, resolved experiment, or a ConfigError naming the key and the fix.
    `validate` checks the config against the JSON schema and fills its defaults."""
    for path in config_files:
        check_duplicate_keys(path)
    validate(config)
    resolved = resolve(config)
    if main_process:
        check_writable(resolved.results_dir, "results_dir")
        check_writable(resolved.cache_dir, "cache_dir")
        check_backbones_once(resolved, CHECKED_RECORD)
    return resolved


def check_duplicate_keys(path: str | os.PathLike) -> None:
    """Refuse a YAML config file that writes one key twice in a mapping (for example a
    representation listed twice with different params): YAML loaders silently keep the
    last value, so the first would be dropped without a word."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            key = loader.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"config file {path}: key {key!r} appears twice in one mapping (lines "
                    f"{seen[key]} and {line}); YAML would silently keep only the second. "
                    "Remove one, or give the second another name (a representation can "
                    "repeat a kind: `lowpass_wide: {kind: lowpass, sigma: 0.1}`)."
                )
            seen[key] = line
        return loader.construct_mapping(node)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    with open(path, encoding="utf-8") as f:
        yaml.load(f, Loader=StrictLoader)  # noqa: S506 (SafeLoader subclass)


def check_writable(path: str, key: str) -> None:
    """`path` exists as a writable directory or can be created as one; checked without
    creating anything (a dry run must not), so a bad results_dir or cache_dir stops the
    run before any job."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(
            f"config key '{key}': {path!r} cannot be created, because {existing!r} is a file, "
            "not a directory. Choose another directory."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"config key '{key}': {path!r} is not writable ({existing!r} does not allow this "
            f"user to write). Choose a writable directory, e.g. --config {key}=/scratch/$USER/va."
        )


# what the layer and model names of a backbone check depend on, besides the specs
CHECK_PACKAGES = ("torch", "torchvision", "efficientnet-lite-pytorch")


def check_backbones_once(experiment: Experiment, record: str) -> bool:
    """`check_backbones`, skipped when `record` says these exact backbone specs passed
    with the same package versions: the check imports torch (2-3 s), and the Snakefile
    runs on every `snakemake -n`. Returns whether the check ran."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    key = canonical(
        {"backbones": experiment.backbones, **{n: installed(n) for n in CHECK_PACKAGES}}
    )
    try:
        with open(record) as f:
            passed = list(json.load(f))
    except (OSError, ValueError, TypeError):
        passed = []
    if key in passed:
        return False
    check_backbones(experiment)
    os.makedirs(os.path.dirname(record) or ".", exist_ok=True)
    with open(record + ".tmp", "w") as f:
        json.dump((passed + [key])[-20:], f)
    os.replace(record + ".tmp", record)
    return True


def check_backbones(experiment: Experiment) -> None:
    """Check model and layer names against the real models (imports torch: ~2 s).

    Called once in the main Snakemake process, so a typo stops the run before any job.
    """
    valid_models = backbones.available_models()
    for name, spec in experiment.backbones.items():
        if spec["model"] not in valid_models:
            raise unknown_value(
                "backbone model", f"backbones.{name}.model", spec["model"], valid_models
            )
        if spec["weights"] == "pretrained":
            problem = backbones.family(spec["model"]).missing_weights()
            if problem:
                raise ConfigError(f"config key 'backbones.{name}.weights': {problem}")
        if spec["layers"] == "all":
            continue
        layers = backbones.available_layers(spec["model"])
        for layer in spec["layers"]:
            if layer not in layers:
                raise ConfigError(
                    f"config key 'backbones.{name}.layers': unknown layer {layer!r} of "
                    f"{spec['model']}. Valid layers: {', '.join(layers)} (or 'all': "
                    f"{', '.join(backbones.default_layers(spec['model']))})."
                )
