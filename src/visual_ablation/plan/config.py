"""Experiment config -> resolved specs, without importing torch: the spec model.

The Snakefile resolves the config at parse time (so this stays cheap; plan/preflight.py holds
the checks that run before any job) and hands each job the spec that defines its output.
A spec is a plain JSON-able dict: its canonical JSON is the rule's `params` (Snakemake's
params trigger re-plans a job when it changes) and the spec itself is the provenance
written into the store's attrs (a store whose attrs differ from it is refused on read).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visual_ablation import layout
from visual_ablation.data.procedural import CueConflictSource
from visual_ablation.data.sources import SOURCES
from visual_ablation.features import backbones
from visual_ablation.plumbing import devices
from visual_ablation.plumbing.canonical import canonical
from visual_ablation.vocabulary import (
    BACKBONE_DEFAULTS,
    CLASS,
    CONTROL,
    REFERENCE,
    REPRESENTATION_DEFAULTS,
    with_defaults,
)

# Bump deliberately when the meaning or layout of a store changes: every store of that
# kind is then re-planned. Editing package code that does not change meaning must not.
# 2: chunk manifest; 3: chunk checksums; 4: no split; 5: factor labels, fixed test sets
# (a change of one source's stores bumps its own `Source.version` instead)
DATA_FORMAT_VERSION = 5
# 2: chunk manifest; 3: chunk checksums; 4: each backbone's own normalisation, Canny
# edges, grey occlusion from its own random stream, Hermitian phase scrambling (the
# backbone's `readout` entered the spec after 4: it re-plans stores by itself)
FEATURE_FORMAT_VERSION = 4
# Bump when what a train job computes changes (probe model, training, metrics): every
# train job is re-planned, no feature store is.
# 2: stacked, padded heads; float32 standardisation; 3: the split drawn per run,
# per-image predictions, debiased calibration error; 4: targets, heads kept for transfer;
# 5: weight-decay grids chosen on validation, the control target; 6: the L-BFGS solver;
# 7: the transfer column, train rows kept with the heads; 8: weight_decay_at_edge
PROBE_FORMAT_VERSION = 8


CUE_CONFLICT = CueConflictSource.name
# a backbone's weights_sha256 while its files are still to be fetched (fetch_weights)
PENDING_WEIGHTS = "to be fetched"


class ConfigError(ValueError):
    """A config problem, phrased for the person who wrote the config."""


@dataclass(frozen=True)
class Experiment:
    """The resolved config: names -> normalised specs, and where files live. Specs are
    built once per name and cached (a large grid asks for the same few thousands of times
    while planning): callers read them, never change them."""

    results_dir: str
    cache_dir: str
    datasets: dict[str, dict[str, Any]]
    representations: dict[str, dict[str, Any]]
    backbones: dict[str, dict[str, Any]]
    split: dict[str, Any]
    probes: dict[str, dict[str, Any]]
    runs: int
    runs_per_job: int
    # whether the fetch_weights rule may download pretrained weights
    fetch_weights: bool
    # how the reference's heads are tested on the other representations (TRANSFER_VARIANTS)
    transfer: tuple[str, ...]
    # amnesic probing: {"iterations": int, "factors": list or None (every factor)}
    amnesic: dict[str, Any]
    # dataset -> what its probes predict (`class` and/or factors of its source)
    targets: dict[str, list[str]] = field(default_factory=dict)
    # dataset -> the representations computed for it (a subset; absent: all)
    dataset_representations: dict[str, list[str]] = field(default_factory=dict)
    # backbone -> the representations computed with it (a subset; absent: all)
    backbone_representations: dict[str, list[str]] = field(default_factory=dict)
    _cache: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @functools.cached_property
    def layout(self) -> layout.Layout:
        return layout.Layout(self.results_dir, self.cache_dir)

    def data_store(self, dataset: str) -> str:
        return layout.fill(self.layout.data_store, dataset=dataset)

    def feature_store(self, dataset: str, backbone: str, representation: str) -> str:
        return layout.fill(
            self.layout.feature_store,
            dataset=dataset,
            backbone=backbone,
            representation=representation,
        )

    def data_spec(self, dataset: str) -> dict[str, Any]:
        """Everything that defines `data/{dataset}.zarr` (not the split: train jobs draw it)."""
        key = ("data", dataset)
        if key not in self._cache:
            spec = self.datasets[dataset]
            source = SOURCES[spec["source"]]
            manifest = source.manifest(spec)
            self._cache[key] = {
                "format_version": DATA_FORMAT_VERSION,
                # only where a source has changed its stores: the others' specs stay as
                # they were, and so do their caches
                **({"source_version": source.version} if source.version > 1 else {}),
                "name": dataset,
                **spec,
                # what a path source reads now (files, sizes, times): a changed folder
                # or file re-plans its store
                **({"manifest": manifest} if manifest is not None else {}),
            }
        return self._cache[key]

    def backbone_spec(self, backbone: str) -> dict[str, Any]:
        """A backbone's part of its feature specs: its config, plus what its library and
        weights files resolve (`backbones.resolved`: the model's own image size, the
        files' SHA-256). While its files are still to be fetched, `weights_sha256` says so
        (PENDING_WEIGHTS) and nothing is cached: after the fetch_weights checkpoint,
        Snakemake asks again."""
        key = ("backbone", backbone)
        if key not in self._cache:
            spec = {"name": backbone, **self.backbones[backbone]}
            try:
                spec.update(backbones.resolved(spec))
            except backbones.WeightsNotLocal:
                return {**spec, "weights_sha256": PENDING_WEIGHTS}
            self._cache[key] = spec
        return self._cache[key]

    def feature_spec(self, dataset: str, backbone: str, representation: str) -> dict[str, Any]:
        """Everything that defines one feature store (the split does not: features are
        computed for every image)."""
        key = ("feature", dataset, backbone, representation)
        if key not in self._cache:
            spec = {
                "format_version": FEATURE_FORMAT_VERSION,
                "dataset": self.data_spec(dataset),
                "representation": {
                    "name": representation,
                    **self.representations[representation],
                },
                "backbone": self.backbone_spec(backbone),
            }
            if spec["backbone"].get("weights_sha256") == PENDING_WEIGHTS:
                return spec
            self._cache[key] = spec
        return self._cache[key]

    def probe_spec(self, probe: str) -> dict[str, Any]:
        """Everything that defines a train job's result besides its store and run."""
        key = ("probe", probe)
        if key not in self._cache:
            spec = {"format_version": PROBE_FORMAT_VERSION, "name": probe, **self.probes[probe]}
            self._cache[key] = spec
        return self._cache[key]

    def params(self, kind: str, *names: str) -> str:
        """The canonical JSON of a spec (`kind`: data, feature or probe): what a rule's
        params trigger compares."""
        key = ("params", kind, *names)
        found = self._cache.get(key)
        if found is None:
            spec = getattr(self, f"{kind}_spec")(*names)
            found = canonical(spec)
            if PENDING_WEIGHTS not in found:
                self._cache[key] = found
        return found

    def representations_of(self, dataset: str, backbone: str | None = None) -> list[str]:
        """The representations of one dataset (through one backbone), in the config's
        order."""
        chosen = self.dataset_representations.get(dataset, list(self.representations))
        if backbone in self.backbone_representations:
            chosen = [r for r in chosen if r in self.backbone_representations[backbone]]
        return chosen

    def untrained_twin(self, backbone: str) -> str | None:
        """The experiment's backbone that is `backbone` with seeded random weights (the same
        model, layers, image size, normalisation and readout, `weights: none`): what its
        figures show beside it as the untrained control; None when there is none."""
        spec = self.backbones[backbone]
        if spec["weights"] in (None, "none"):
            return None
        same = ("source", "model", "layers", "image_size", "normalization", "readout", "pooling")
        return next(
            (
                name
                for name, other in sorted(self.backbones.items())  # the first by name
                if other["weights"] == "none" and all(other.get(k) == spec.get(k) for k in same)
            ),
            None,
        )

    @property
    def reference(self) -> str | None:
        """The representation every other is compared with: `original`, or the first
        entry of kind original; None when there is none (no differences then)."""
        if REFERENCE in self.representations:
            return REFERENCE
        return next((n for n, r in self.representations.items() if r["kind"] == REFERENCE), None)


def unknown_value(
    kind: str, key: str, value: Any, valid: list[str] | tuple[str, ...]
) -> ConfigError:
    return ConfigError(
        f"config key '{key}': unknown {kind} {value!r}. Valid values: {', '.join(valid)}."
    )


def _resolve_targets(name: str, spec: dict[str, Any]) -> list[str]:
    """A dataset's `targets` (default [class]), each one its source can label."""
    source = SOURCES[spec["source"]]
    targets = list(spec.get("targets") or [CLASS])
    valid = [CLASS, CONTROL, *source.stored_factors({**source.defaults, **spec})]
    for target in targets:
        if target not in valid:
            raise unknown_value(
                f"target of {source.name}", f"datasets.{name}.targets", target, valid
            )
    for first, second in source.coinciding({**source.defaults, **spec}):
        if first in targets and second in targets:
            raise ConfigError(
                f"config key 'datasets.{name}.targets': {first} and {second} have the same "
                f"labels on every image of this {source.name} dataset, so their probes "
                f"would train the same heads: list one of them."
            )
    if source.name == CUE_CONFLICT and CLASS not in targets:
        raise ConfigError(
            f"config key 'datasets.{name}.targets': a {CUE_CONFLICT} dataset measures shape "
            f"bias with its class probes: list {CLASS} among its targets."
        )
    return targets


def _resolve_dataset(name: str, spec: dict[str, Any], base: Path) -> dict[str, Any]:
    key = f"datasets.{name}"
    source = SOURCES.get(spec.get("source"))
    if source is None:
        raise unknown_value("dataset source", f"{key}.source", spec.get("source"), list(SOURCES))
    # what probes predict is not what the data store holds (it stores every factor)
    out = {k: v for k, v in spec.items() if k not in ("targets", "representations")}
    for other in SOURCES.values():
        for option in set(other.defaults) & set(out) - set(source.defaults):
            raise ConfigError(
                f"config key '{key}.{option}': only {other.name} takes it, not {source.name}."
            )
    # `split: drawn` (the default) is left out of the spec: it is what a spec without it meant
    if out.get("split", "drawn") == "drawn":
        out.pop("split", None)
    elif not source.gives_split:
        givers = "; ".join(s.gives_split for s in SOURCES.values() if s.gives_split)
        raise ConfigError(
            f"config key '{key}.split': {source.name} has no split of its own to give; "
            f"remove `split: given` to draw the splits. Sources that give one: {givers}."
        )
    out = {**source.defaults, **out}
    out.setdefault("image_size", source.default_image_size)
    out.setdefault("seed", 0)
    out.setdefault("n", None)
    if source.draws_n and out["n"] is None:
        raise ConfigError(f"config key '{key}.n': {source.name} needs n (images to draw).")
    if source.needs_path:
        if not out.get("path"):
            raise ConfigError(f"config key '{key}.path': source {source.name} needs a path.")
        path = Path(out["path"]).expanduser()
        if not path.is_absolute():
            path = base / path
        if not path.exists() and not out.get("fetch"):  # fetch: a rule fills it
            raise ConfigError(
                f"config key '{key}.path': {path} does not exist. "
                "Point it at the dataset (absolute, or relative to the working directory)."
            )
        out["path"] = str(path.resolve())
        problem = source.check_path(out)
        if problem:
            raise ConfigError(f"config key '{key}.path': {problem}")
    elif "path" in out:
        raise ConfigError(f"config key '{key}.path': source {source.name} takes no path.")
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
            raise unknown_value("representation", f"representations.{name}", kind, valid)
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
    """A backbone's config with its defaults (torch-free). Its `source` is kept only where
    it is not the model name's default, so that existing specs stay as they were."""
    key = f"backbones.{name}"
    out = {**BACKBONE_DEFAULTS, **spec}
    model = str(out["model"])
    source = out.pop("source", None) or backbones.default_source(model)
    try:
        cls = backbones.family_class(model, source)
    except ValueError as err:
        raise ConfigError(f"config key '{key}.model': {err}.") from None
    if source == "huggingface" and (base / Path(model).expanduser()).is_dir():
        out["model"] = model = str((base / Path(model).expanduser()).resolve())
    if source != backbones.default_source(model):
        out["source"] = source
    weights = out["weights"]
    if not cls.uses_weights:
        out["weights"] = weights = None
    elif backbones.is_checkpoint_path(weights):
        path = Path(str(weights)).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise ConfigError(
                f"config key '{key}.weights': checkpoint {path} does not exist. Use 'none', "
                "'pretrained', a named tag of the model's library, or the path of a "
                "checkpoint file (.pt, .pth, .bin, .safetensors)."
            )
        out["weights"] = weights = str(path.resolve())
    fam = cls(model, weights)
    out.setdefault("image_size", fam.image_size_default())
    out.setdefault("normalization", fam.default_normalization())
    valid = fam.normalizations()
    if out["normalization"] not in valid:  # the schema's enum leaves only `weights` here
        raise ConfigError(
            f"config key '{key}.normalization': 'weights' takes the mean and std of the "
            "model's library for its pretrained weights, and this backbone has none. Use "
            f"one of {', '.join(valid)}."
        )
    return out


def resolve(config: dict[str, Any], base: str | os.PathLike = ".") -> Experiment:
    """Check names and fill defaults (the schema's: vocabulary.with_defaults, which the
    Snakefile's `validate` has already applied); `config` has passed the JSON schema."""
    base = Path(base)
    config = with_defaults(config)
    datasets = {n: _resolve_dataset(n, s, base) for n, s in config["datasets"].items()}
    models = {
        n: _resolve_backbone(n, {k: v for k, v in s.items() if k != "representations"}, base)
        for n, s in config["backbones"].items()
    }
    if not datasets:
        raise ConfigError("config key 'datasets': define at least one dataset.")
    if not models:
        raise ConfigError("config key 'backbones': define at least one backbone.")
    results_dir = str(config["results_dir"])
    probes = config["probes"]
    for name, spec in probes.items():
        if spec["solver"] == "lbfgs" and spec["hidden"]:
            raise ConfigError(
                f"config key 'probes.{name}.solver': lbfgs fits linear heads only (hidden: 0), "
                f"and this probe has hidden: {spec['hidden']}; use solver: adamw for an MLP."
            )
    return Experiment(
        results_dir=results_dir,
        cache_dir=str(config.get("cache_dir") or results_dir),
        datasets=datasets,
        representations=_resolve_representations(config["representations"]),
        backbones=models,
        split=dict(config["split"]),
        probes=probes,
        runs=int(config["runs"]),
        fetch_weights=bool(config["fetch_weights"]),
        transfer=tuple(config["transfer"]),
        amnesic=_resolve_amnesic(config["amnesic"], datasets),
        runs_per_job=runs_per_job(config["training"], int(config["runs"])),
        targets={n: _resolve_targets(n, s) for n, s in config["datasets"].items()},
        dataset_representations={
            n: _resolve_subset(n, s["representations"], config["representations"])
            for n, s in config["datasets"].items()
            if s.get("representations")
        },
        backbone_representations={
            n: _resolve_subset(n, s["representations"], config["representations"], "backbones")
            for n, s in config["backbones"].items()
            if s.get("representations")
        },
    )


def _resolve_amnesic(spec: dict[str, Any], datasets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`amnesic`: its factors, each one some dataset's source stores."""
    factors = spec.get("factors")
    if factors is not None:
        known = sorted({f for d in datasets.values() for f in SOURCES[d["source"]].factor_names})
        for factor in factors:
            if factor not in known:
                raise unknown_value("factor", "amnesic.factors", factor, known)
    return {"iterations": int(spec["iterations"]), "factors": factors}


def _resolve_subset(
    name: str, chosen: list[str], representations: Any, section: str = "datasets"
) -> list[str]:
    """A dataset's (or backbone's) own `representations`: names of the experiment's, in
    its order."""
    known = list(representations)
    unknown = [r for r in chosen if r not in known]
    if unknown:
        raise unknown_value(
            "representation", f"{section}.{name}.representations", unknown[0], known
        )
    return [r for r in known if r in chosen]


def runs_per_job(training: dict[str, Any], runs: int) -> int:
    """`training.runs_per_job`; `auto`: every run in one job when train jobs run on a GPU
    (there a job of one run waits on kernel launches, and ten cost about what one does),
    else one job per run (a CPU is bound by arithmetic: one job per core keeps them busy).
    A GPU is `training.device: cuda`, or `auto` where this process sees one (no CUDA
    initialisation: devices.visible_gpus)."""
    value = training["runs_per_job"]
    if value != "auto":
        return int(value)
    device = str(training["device"])
    on_gpu = device.startswith("cuda") or (device == "auto" and bool(devices.visible_gpus()))
    return max(1, runs) if on_gpu else 1
