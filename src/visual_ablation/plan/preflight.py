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
from visual_ablation.plan.config import ConfigError, Experiment, resolve
from visual_ablation.plumbing.canonical import canonical

# where the main process remembers backbone specs that passed the check
CHECKED_RECORD = os.path.join(".snakemake", "visual-ablation", "backbones-checked.json")


def experiment(
    config: dict[str, Any],
    config_files: list[str],
    validate: Callable[[dict[str, Any]], None],
    main_process: bool,
    schema: str | None = None,
) -> Experiment:
    """The checked, resolved experiment, or a ConfigError naming the key and the fix.
    `validate` checks the config against the JSON schema and fills its defaults; the
    `schema` file, where given, is checked first for one short message."""
    for path in config_files:
        check_duplicate_keys(path)
    if schema is not None:
        check_schema(config, schema)
    validate(config)
    resolved = resolve(config)
    if main_process:
        check_writable(resolved.results_dir, "results_dir")
        check_writable(resolved.cache_dir, "cache_dir")
        check_backbones_once(resolved, CHECKED_RECORD)
    return resolved


def check_schema(config: dict[str, Any], schema_path: str) -> None:
    """The config against the JSON schema, refused with the most relevant error as one
    short message that names the key (Snakemake's own validation prints the schema)."""
    import yaml
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    with open(schema_path, encoding="utf-8") as f:
        schema = yaml.safe_load(f)
    error = best_match(Draft202012Validator(schema).iter_errors(config))
    if error is not None:
        raise ConfigError(schema_message(error))


def schema_message(error) -> str:
    """One line for a jsonschema error: the dotted key, what is wrong, what is valid."""
    path = [str(p) for p in error.absolute_path]
    key = ".".join(path)
    shown = repr(error.instance) if not isinstance(error.instance, dict | list) else ""
    if error.validator == "required":
        missing = error.message.split("'")[1]
        name = f"{key}.{missing}" if key else missing
        return (
            f"config key '{name}' is required and missing. config/README.md says what it "
            "holds; config/own-images.yaml is a complete experiment to copy."
        )
    if error.validator == "additionalProperties":
        valid = sorted(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in valid]
        where = f"{key}." if key else ""
        return f"config key '{where}{extra[0]}' is not a key here. Valid keys: {', '.join(valid)}."
    if error.validator == "enum":
        valid = ", ".join(str(v) for v in error.validator_value)
        return f"config key '{key}': {shown} is not one of {valid}."
    if error.validator in ("oneOf", "anyOf"):
        what = " ".join(str(error.schema.get("description", "")).split())
        return f"config key '{key}': {shown or 'this value'} is not valid: {what}".rstrip(": ")
    if error.validator == "type":
        wanted = error.validator_value
        return f"config key '{key}': {shown or 'this value'} is not of type {wanted}."
    if error.validator in ("propertyNames", "pattern"):
        return (
            f"config key '{key}': name {shown} may use only letters, digits, _, . and - "
            "(it becomes part of file paths)."
        )
    return f"config key '{key}': {error.message}."


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
CHECK_PACKAGES = (
    "torch",
    "torchvision",
    "efficientnet-lite-pytorch",
    "timm",
    "transformers",
    "open-clip-torch",
)


def check_backbones_once(experiment: Experiment, record: str) -> bool:
    """`check_backbones`, skipped when `record` says these exact backbone specs passed
    with the same package versions and the same weights files: the check imports torch
    (2-3 s), and the Snakefile runs on every `snakemake -n`. Returns whether the check
    ran."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    key = canonical(
        {
            "backbones": experiment.backbones,
            "files": {name: files_state(spec) for name, spec in experiment.backbones.items()},
            "fetch_weights": experiment.fetch_weights,
            "offline": backbones.hub_offline(),
            **{n: installed(n) for n in CHECK_PACKAGES},
        }
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


def files_state(spec: dict[str, Any]) -> str | None:
    """The weights files' hash, 'missing' while they are to be fetched, or None (an
    unknown model or tag: the check says so)."""
    try:
        return backbones.files_sha256(backbones.weights_files(spec)) or None
    except backbones.WeightsNotLocal:
        return "missing"
    except Exception:  # noqa: BLE001 (check_backbones phrases it)
        return None


def fetch_blocked(experiment: Experiment, family: backbones.Backbone) -> str | None:
    """Why the fetch_weights rule may not download this family's files, or None."""
    if not experiment.fetch_weights:
        return "fetch_weights: false"
    if family.source != "torchvision" and backbones.hub_offline():
        return "HF_HUB_OFFLINE is set"
    return None


def other_sources(model: str, source: str) -> list[str]:
    """The other sources that know a model name (on a refusal only: imports them)."""
    found = []
    for name in backbones.source_names():
        if name == source:
            continue
        try:
            if backbones.family(model, name).known():
                found.append(name)
        except Exception:  # noqa: BLE001 (a library that cannot say: not this one)
            continue
    return found


def check_backbones(experiment: Experiment) -> None:
    """Check each backbone against its real model, before any job (imports torch and the
    backbone's library): the model name in its source (with the closest names and the
    sources that do know it), a named tag, weights on disk or fetchable, layer names (with
    the closest names and the command that lists them), and a checkpoint path's fit."""
    from visual_ablation.features.backbones.checkpoints import CheckpointError, check_fits

    for name, spec in experiment.backbones.items():
        key = f"backbones.{name}"
        fam = backbones.family(spec)
        if not fam.known():
            others = other_sources(spec["model"], fam.source)
            hint = (
                f" It is a {' and a '.join(others)} model: add `source: {others[0]}`."
                if others
                else ""
            )
            raise ConfigError(f"config key '{key}.model': {fam.unknown_model()}{hint}")
        weights = spec["weights"]
        if fam.pretrained and weights != backbones.PRETRAINED:
            tags = fam.tags()
            if weights not in tags:
                raise ConfigError(
                    f"config key '{key}.weights': {weights!r} is not a file, and not a named "
                    f"weights of {fam.source} model {spec['model']} "
                    f"({', '.join(tags) or 'it has none'}). Use none, pretrained, one of "
                    "those, or a checkpoint path."
                )
        if fam.pretrained or fam.library_files:
            problem = fam.missing_weights()
            if problem and not fam.fetched:
                raise ConfigError(f"config key '{key}.weights': {problem}")
            if problem:
                blocked = fetch_blocked(experiment, fam)
                if blocked:
                    raise ConfigError(
                        f"config key '{key}.weights': {problem}, and fetching is off "
                        f"({blocked}). Fetch them once where there is internet "
                        "(snakemake -c1 --until fetch_weights), into the same cache "
                        "(TORCH_HOME, HF_HOME), or give a checkpoint path."
                    )
                continue  # its layers are checked once fetched, by its feature job
        image_size = backbones.image_size(spec)
        if spec["layers"] != "all":
            layers = set(fam.layers())
            for layer in spec["layers"]:
                if layer not in layers:
                    raise ConfigError(
                        f"config key '{key}.layers': {fam.unknown_layer(layer, image_size)}"
                    )
        if backbones.is_checkpoint_path(weights) and fam.uses_weights:
            try:
                check_fits(fam.checkpoint_structure(image_size), weights)
            except CheckpointError as err:
                raise ConfigError(f"config key '{key}.weights': {err}") from None
