"""Experiment config -> resolved specs, checked by name, without importing torch.

The Snakefile calls `resolve()` at parse time (so it must stay cheap) and hands each job
the spec that defines its output. A spec is a plain JSON-able dict: it is both the rule's
`params` (Snakemake's params trigger re-plans a job when it changes) and the provenance
written into the store's attrs (a store whose attrs differ from it is refused on read).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Bump deliberately when the meaning or layout of a store changes: every store of that
# kind is then re-planned. Editing package code that does not change meaning must not.
DATA_FORMAT_VERSION = 4  # 2: chunk manifest; 3: chunk checksums; 4: no split
# 2: chunk manifest; 3: chunk checksums; 4: each backbone's own normalisation, Canny
# edges, grey occlusion from its own random stream, Hermitian phase scrambling
FEATURE_FORMAT_VERSION = 4
# Bump when what a train job computes changes (probe model, training, metrics): every
# train job is re-planned, no feature store is.
# 2: stacked, padded heads; float32 standardisation; 3: the split drawn per run,
# per-image predictions, debiased calibration error
PROBE_FORMAT_VERSION = 3

SOURCES = ("sklearn-digits", "synthetic-shapes", "imagefolder", "parquet", "npz")
SOURCES_WITH_PATH = ("imagefolder", "parquet", "npz")
DEFAULT_IMAGE_SIZE = {"sklearn-digits": 32}
FALLBACK_IMAGE_SIZE = 64

# Default params of every representation; `representations.py` implements exactly these.
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

# Probe config defaults (the schema documents them); measured against scikit-learn's
# LogisticRegression on digits (tests/test_probes.py).
PROBE_DEFAULTS: dict[str, Any] = {
    "hidden": 0,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "max_epochs": 300,
    "patience": 15,
    "batch_size": 128,
}
REFERENCE = "original"

# Input normalisation, (x - mean) / std on [0, 1] images: each backbone gets the one of
# its original source. `weights`: from the torchvision weights' own transforms metadata.
NORMALIZATIONS: dict[str, dict[str, list[float]] | None] = {
    "imagenet": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    # the TF Lite EfficientNet-Lite builder: (255 x - 127) / 128 (MEAN_RGB 127, STDDEV_RGB 128)
    "tf-lite": {"mean": [127 / 255] * 3, "std": [128 / 255] * 3},
    "none": {"mean": [0.0] * 3, "std": [1.0] * 3},
    "weights": None,
}


def default_normalization(model: str, weights: str | None) -> str:
    """What each backbone was trained with: pixels are left as they are; EfficientNet-Lite0
    (TF Lite weights) gets tf-lite; torchvision pretrained weights say their own; a
    torchvision net with random or checkpoint weights gets ImageNet's mean and std."""
    if model == "pixels":
        return "none"
    if model == "efficientnet_lite0":
        return "tf-lite"
    return "weights" if weights == "pretrained" else "imagenet"


POOLINGS = ("mean", "cls")
NAME_PATTERN = "[A-Za-z0-9][A-Za-z0-9_.-]*"


class ConfigError(ValueError):
    """A config problem, phrased for the person who wrote the config."""


def run_label(runs: int | list[int]) -> str:
    """`3` for run 3, `0-4` for the consecutive runs 0..4 (the `run` wildcard)."""
    if isinstance(runs, int):
        return str(runs)
    return str(runs[0]) if len(runs) == 1 else f"{runs[0]}-{runs[-1]}"


def parse_run_label(label: str) -> list[int]:
    """The runs of a `run` wildcard: `3` -> [3], `0-4` -> [0, 1, 2, 3, 4]."""
    first, _, last = label.partition("-")
    return list(range(int(first), int(last or first) + 1))


@dataclass(frozen=True)
class Experiment:
    """The resolved config: names -> normalised specs, and where files live."""

    results_dir: str
    cache_dir: str
    datasets: dict[str, dict[str, Any]]
    representations: dict[str, dict[str, Any]]
    backbones: dict[str, dict[str, Any]]
    split: dict[str, Any]
    probes: dict[str, dict[str, Any]]
    runs: int
    runs_per_job: int = 1

    def data_store(self, dataset: str) -> str:
        return os.path.join(self.cache_dir, "data", f"{dataset}.zarr")

    def feature_store(self, dataset: str, backbone: str, representation: str) -> str:
        return os.path.join(self.cache_dir, "features", dataset, backbone, f"{representation}.zarr")

    def data_spec(self, dataset: str) -> dict[str, Any]:
        """Everything that defines `data/{dataset}.zarr` (not the split: train jobs draw it)."""
        return {"format_version": DATA_FORMAT_VERSION, "name": dataset, **self.datasets[dataset]}

    def feature_spec(self, dataset: str, backbone: str, representation: str) -> dict[str, Any]:
        """Everything that defines one feature store (the split does not: features are
        computed for every image)."""
        return {
            "format_version": FEATURE_FORMAT_VERSION,
            "dataset": self.data_spec(dataset),
            "representation": {"name": representation, **self.representations[representation]},
            "backbone": {"name": backbone, **self.backbones[backbone]},
        }

    def feature_targets(self) -> list[tuple[str, str, str]]:
        return [
            (d, b, r) for d in self.datasets for b in self.backbones for r in self.representations
        ]

    def probe_spec(self, probe: str) -> dict[str, Any]:
        """Everything that defines a train job's result besides its store and run."""
        return {"format_version": PROBE_FORMAT_VERSION, "name": probe, **self.probes[probe]}

    def run_table(
        self, dataset: str, backbone: str, representation: str, probe: str, runs: int | list[int]
    ) -> str:
        """One train job's csv: `run3.csv` for one run, `run0-4.csv` for runs 0..4."""
        return os.path.join(
            self.results_dir,
            "runs",
            dataset,
            backbone,
            representation,
            probe,
            f"run{run_label(runs)}.csv",
        )

    def run_predictions(
        self, dataset: str, backbone: str, representation: str, probe: str, runs: int | list[int]
    ) -> str:
        """One train job's per-image test predictions, next to its csv."""
        table = self.run_table(dataset, backbone, representation, probe, runs)
        return table[: -len(".csv")] + ".predictions.npz"

    def run_groups(self) -> list[list[int]]:
        """Runs 0..runs-1 in consecutive groups of `runs_per_job`, one train job each.
        Groups are aligned to multiples of runs_per_job, so raising `runs` keeps every
        full group's csv."""
        k = self.runs_per_job
        return [list(range(s, min(s + k, self.runs))) for s in range(0, self.runs, k)]

    def run_tables(self) -> list[str]:
        """Every train job's csv, in config order (datasets, backbones, representations,
        probes, runs): the order of metrics.csv."""
        return [
            self.run_table(d, b, r, p, runs)
            for d, b, r in self.feature_targets()
            for p in self.probes
            for runs in self.run_groups()
        ]

    def all_run_predictions(self) -> list[str]:
        """Every train job's predictions file, in the order of `run_tables`."""
        return [
            self.run_predictions(d, b, r, p, runs)
            for d, b, r in self.feature_targets()
            for p in self.probes
            for runs in self.run_groups()
        ]

    @property
    def reference(self) -> str | None:
        """The representation every other is compared with: `original`, or the first
        entry of kind original; None when there is none (no differences then)."""
        if REFERENCE in self.representations:
            return REFERENCE
        return next((n for n, r in self.representations.items() if r["kind"] == REFERENCE), None)


def canonical(spec: dict[str, Any]) -> str:
    """One stable string per spec: what Snakemake's params trigger compares."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def _valid(kind: str, key: str, value: Any, valid: list[str] | tuple[str, ...]) -> ConfigError:
    return ConfigError(
        f"config key '{key}': unknown {kind} {value!r}. Valid values: {', '.join(valid)}."
    )


def _resolve_dataset(name: str, spec: dict[str, Any], base: Path) -> dict[str, Any]:
    key = f"datasets.{name}"
    source = spec.get("source")
    if source not in SOURCES:
        raise _valid("dataset source", f"{key}.source", source, SOURCES)
    out = dict(spec)
    out.setdefault("image_size", DEFAULT_IMAGE_SIZE.get(source, FALLBACK_IMAGE_SIZE))
    out.setdefault("seed", 0)
    out.setdefault("n", None)
    if source == "synthetic-shapes" and out["n"] is None:
        raise ConfigError(f"config key '{key}.n': synthetic-shapes needs n (images to draw).")
    if source in SOURCES_WITH_PATH:
        if not out.get("path"):
            raise ConfigError(f"config key '{key}.path': source {source} needs a path.")
        path = Path(out["path"]).expanduser()
        if not path.is_absolute():
            path = base / path
        if not path.exists():
            raise ConfigError(
                f"config key '{key}.path': {path} does not exist. "
                "Point it at the dataset (absolute, or relative to the working directory)."
            )
        out["path"] = str(path.resolve())
    elif "path" in out:
        raise ConfigError(f"config key '{key}.path': source {source} takes no path.")
    return out


def _resolve_representations(reps: Any) -> dict[str, dict[str, Any]]:
    valid = tuple(REPRESENTATION_DEFAULTS)
    if isinstance(reps, list):
        if len(set(reps)) != len(reps):
            dup = sorted({r for r in reps if reps.count(r) > 1})
            raise ConfigError(f"config key 'representations': listed twice: {', '.join(dup)}.")
        reps = {r: {} for r in reps}
    out = {}
    for name, params in reps.items():
        params = dict(params or {})
        kind = params.pop("kind", name)
        if kind not in REPRESENTATION_DEFAULTS:
            raise _valid("representation", f"representations.{name}", kind, valid)
        defaults = REPRESENTATION_DEFAULTS[kind]
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise ConfigError(
                f"config key 'representations.{name}': unknown parameter(s) "
                f"{', '.join(unknown)} for {kind}. "
                f"Valid parameters: {', '.join(defaults) or '(none)'}."
            )
        out[name] = {"kind": kind, "params": {**defaults, **params}}
    if not out:
        raise ConfigError("config key 'representations': list at least one representation.")
    return out


def _resolve_backbone(name: str, spec: dict[str, Any], base: Path) -> dict[str, Any]:
    out = {"weights": "none", "layers": "all", "pooling": "mean", "seed": 0, **spec}
    model = out["model"]
    out.setdefault("image_size", 16 if model == "pixels" else 64)
    weights = out["weights"]
    out.setdefault("normalization", default_normalization(model, weights))
    if out["normalization"] == "weights" and (
        weights != "pretrained" or model in ("pixels", "efficientnet_lite0")
    ):
        raise ConfigError(
            f"config key 'backbones.{name}.normalization': 'weights' takes the mean and std "
            "from a torchvision model's pretrained weights, and this backbone has none. Use "
            f"one of {', '.join(n for n in NORMALIZATIONS if n != 'weights')}."
        )
    if model == "pixels":
        out["weights"] = None
    elif weights not in ("none", "pretrained"):
        path = Path(str(weights)).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise ConfigError(
                f"config key 'backbones.{name}.weights': checkpoint {path} does not exist. "
                "Use 'none', 'pretrained' or the path of a saved state_dict."
            )
        out["weights"] = str(path.resolve())
    return out


def resolve(config: dict[str, Any], base: str | os.PathLike = ".") -> Experiment:
    """Check names and fill defaults; `config` has already passed the JSON schema."""
    base = Path(base)
    datasets = {n: _resolve_dataset(n, s, base) for n, s in config["datasets"].items()}
    backbones = {n: _resolve_backbone(n, s, base) for n, s in config["backbones"].items()}
    if not datasets:
        raise ConfigError("config key 'datasets': define at least one dataset.")
    if not backbones:
        raise ConfigError("config key 'backbones': define at least one backbone.")
    results_dir = str(config.get("results_dir", "results"))
    probes = config.get("probes") or {"linear": {"hidden": 0}, "mlp": {"hidden": 256}}
    return Experiment(
        results_dir=results_dir,
        cache_dir=str(config.get("cache_dir") or results_dir),
        datasets=datasets,
        representations=_resolve_representations(config["representations"]),
        backbones=backbones,
        split={"val": 0.15, "test": 0.2, "seed": 0, "resample": True, **config.get("split", {})},
        probes={name: {**PROBE_DEFAULTS, **(spec or {})} for name, spec in probes.items()},
        runs=int(config.get("runs", 10)),
        runs_per_job=int(config.get("training", {}).get("runs_per_job", 1)),
    )


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
    from visual_ablation import backbones

    valid_models = backbones.available_models()
    for name, spec in experiment.backbones.items():
        if spec["model"] not in valid_models:
            raise _valid("backbone model", f"backbones.{name}.model", spec["model"], valid_models)
        if spec["weights"] == "pretrained":
            problem = backbones.missing_pretrained_weights(spec["model"])
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
