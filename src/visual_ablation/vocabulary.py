"""The names and defaults the config speaks, in one torch-free place: representations and
their params, probe keys, input normalisations, poolings. plan/config.py resolves a config
with them, features/representations.py and the probes package implement them, and
tests/plan/test_config.py checks that workflow/schemas/config.schema.yaml agrees with them.
(Sources and backbone families live in their own registries, data/sources.py and
features/backbones/.)
"""

from __future__ import annotations

from typing import Any

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
TRANSFER_VARIANTS = ("as-trained", "restandardised")

# Probe config defaults (the schema fills the same ones); measured against scikit-learn's
# LogisticRegression on digits (tests/probes/test_probes.py).
PROBE_DEFAULTS: dict[str, Any] = {
    "hidden": 0,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "max_epochs": 300,
    "patience": 15,
    "batch_size": 128,
    "solver": "adamw",
    "monitor": "loss",
}

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
