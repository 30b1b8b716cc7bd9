"""The names and defaults the config speaks, in one torch-free place: representations and
their params, probe keys, input normalisations, poolings. plan/config.py resolves a config
with them, features/representations.py and the probes package implement them, and
tests/plan/test_config.py checks that workflow/schemas/config.schema.yaml agrees with them.
(Sources and backbone families live in their own registries, data/sources.py and
features/backbones/.)

Every config default is the schema's, read from it here (`with_defaults`, `PROBE_DEFAULTS`,
`BACKBONE_DEFAULTS`, `FIGURE_DEFAULTS`): the package carries the schema as
`config.schema.yaml`, a link to workflow/schemas/ that an installed package holds as a copy.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
# libyaml's loader where the wheel has it (a few milliseconds: every job imports this)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SCHEMA: dict[str, Any] = yaml.load(SCHEMA_PATH.read_text(encoding="utf-8"), Loader=_LOADER)


def schema_defaults(node: dict[str, Any]) -> dict[str, Any]:
    """{key: default} of one object of the schema (a probe, a backbone, `figures`)."""
    properties = node["properties"]
    return {key: spec["default"] for key, spec in properties.items() if "default" in spec}


def with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config` with every default of the schema filled in, as Snakemake's
    `validate` fills them (jsonschema's `properties` extended, the FAQ's recipe): a
    missing key takes its default, and an object so filled gets its own keys' defaults.
    Validation errors are left to the schema check (plan/preflight.py)."""
    filled = copy.deepcopy(config)
    for _error in _filling_validator().iter_errors(filled):
        pass
    return filled


@functools.cache
def _filling_validator():
    from jsonschema import Draft202012Validator, validators

    check_properties = Draft202012Validator.VALIDATORS["properties"]

    def fill(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, spec in properties.items():
                if "default" in spec and key not in instance:
                    instance[key] = copy.deepcopy(spec["default"])
        yield from check_properties(validator, properties, instance, schema)

    return validators.extend(Draft202012Validator, {"properties": fill})(SCHEMA)


# Default params of every representation; `features/representations.py` implements exactly these.
REPRESENTATION_DEFAULTS: dict[str, dict[str, Any]] = {
    "original": {},
    "grayscale": {},
    "lowpass": {"sigma": 0.04},
    "highpass": {"sigma": 0.04},
    "phase_scramble": {"strength": 1.0, "seed": 0},
    "patch_shuffle": {"grid": 4, "seed": 0},
    "edges": {"method": "canny", "sigma": 0.04, "high": 0.9, "low": 0.4},
    "occlusion": {"grid": 4, "fraction": 0.5, "fill": 0.5, "seed": 0},
}
REFERENCE = "original"  # the representation every other is compared with
CLASS = "class"  # the target that is a dataset's own labels (`datasets.<name>.targets`)
# the control target (Hewitt & Liang 2019): a fixed random function of each image's nuisance
# type, with the class's count and balance; trained on the reference representation only
CONTROL = "control"
# How the reference's heads are tested on another representation (`transfer`): as trained
# (the reference's standardisation), or re-standardised with the tested store's own
# train-split mean and std (no labels: Schneider et al. 2020's adaptation of normalisation
# statistics). A run row's `transfer` column says which (layout.py WITHIN for a
# train job's rows).
TRANSFER_VARIANTS = tuple(SCHEMA["properties"]["transfer"]["items"]["enum"])

# A probe's and a backbone's keys with their defaults (the schema's); the probe's are
# measured against scikit-learn's LogisticRegression on digits (tests/probes/test_probes.py).
PROBE_DEFAULTS: dict[str, Any] = schema_defaults(SCHEMA["$defs"]["probe"])
BACKBONE_DEFAULTS: dict[str, Any] = schema_defaults(SCHEMA["$defs"]["backbone"])
# the figures' resolution and formats (`figures`)
FIGURE_DEFAULTS: dict[str, Any] = schema_defaults(SCHEMA["properties"]["figures"])

# Input normalisation, (x - mean) / std on [0, 1] images: each backbone gets the one of
# its original source. `weights`: from the torchvision weights' own transforms metadata.
NORMALIZATIONS: dict[str, dict[str, list[float]] | None] = {
    "imagenet": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    # the TF Lite EfficientNet-Lite builder: (255 x - 127) / 128 (MEAN_RGB 127, STDDEV_RGB 128)
    "tf-lite": {"mean": [127 / 255] * 3, "std": [128 / 255] * 3},
    "none": {"mean": [0.0] * 3, "std": [1.0] * 3},
    "weights": None,
}

POOLINGS = ("mean", "cls", "patches")
NAME_PATTERN = "[A-Za-z0-9][A-Za-z0-9_.-]*"
