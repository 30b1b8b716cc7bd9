# Config resolution and input functions shared by every stage.
import functools

from snakemake.exceptions import WorkflowError

from visual_ablation import resources
from visual_ablation.config import (
    ConfigError,
    canonical,
    check_backbones_once,
    check_writable,
    parse_run_label,
    resolve,
)

try:
    EXPERIMENT = resolve(config)
    # Model and layer names need the real models (imports torch): checked in the main
    # process, so a typo stops the run before any job starts, and remembered, so a dry
    # run of an unchanged config does not import torch again.
    if workflow.is_main_process:
        check_writable(EXPERIMENT.results_dir, "results_dir")
        check_writable(EXPERIMENT.cache_dir, "cache_dir")
        check_backbones_once(
            EXPERIMENT,
            os.path.join(".snakemake", "visual-ablation", "backbones-checked.json"),
        )
except ConfigError as err:
    raise WorkflowError(f"Invalid config: {err}") from None

RESULTS = EXPERIMENT.results_dir
# what each train job's splits depend on (train jobs draw them from the labels)
SPLIT_SPEC = canonical(EXPERIMENT.split)
CACHE = EXPERIMENT.cache_dir
LOGS = os.path.join(RESULTS, "logs")
BENCHMARKS = os.path.join(RESULTS, "benchmarks")
FEATURE_TABLE = os.path.join(RESULTS, "feature_stores.csv")
METRICS = os.path.join(RESULTS, "metrics.csv")
SUMMARY = os.path.join(RESULTS, "summary.csv")
FIGURES = os.path.join(RESULTS, "figures")


wildcard_constraints:
    dataset="|".join(map(re.escape, EXPERIMENT.datasets)),
    backbone="|".join(map(re.escape, EXPERIMENT.backbones)),
    representation="|".join(map(re.escape, EXPERIMENT.representations)),
    probe="|".join(map(re.escape, EXPERIMENT.probes)),
    run=r"\d+(-\d+)?",


# Specs are cached: a large grid asks for the same few thousands of times while planning
# (params and resources of every job). The dicts are read, never changed.
_data_spec_of = functools.cache(EXPERIMENT.data_spec)
_feature_spec_of = functools.cache(EXPERIMENT.feature_spec)
_probe_spec_of = functools.cache(EXPERIMENT.probe_spec)


@functools.cache
def _data_spec(dataset):
    return canonical(_data_spec_of(dataset))


@functools.cache
def _feature_spec(dataset, backbone, representation):
    return canonical(_feature_spec_of(dataset, backbone, representation))


@functools.cache
def _probe_spec(probe):
    return canonical(_probe_spec_of(probe))


def data_spec(wildcards):
    """The data store's defining spec, as the params trigger compares it."""
    return _data_spec(wildcards.dataset)


def feature_spec(wildcards):
    return _feature_spec(
        wildcards.dataset, wildcards.backbone, wildcards.representation
    )


def checkpoint_inputs(wildcards):
    """A checkpoint file given as weights is a file dependency of its feature jobs."""
    weights = EXPERIMENT.backbones[wildcards.backbone]["weights"]
    return [weights] if weights not in (None, "none", "pretrained") else []


def all_feature_stores():
    return [
        EXPERIMENT.feature_store(*target) for target in EXPERIMENT.feature_targets()
    ]


def probe_spec(wildcards):
    """A probe config's defining spec: changing one probe re-plans only its train jobs."""
    return _probe_spec(wildcards.probe)


# Cluster requests (mem_mb, runtime in minutes) that grow with the dataset: see
# src/visual_ablation/resources.py. Evaluated when a job is submitted, so train and
# feature jobs see the real image count and feature width of the stores they read.
def data_mem_mb(wildcards, attempt):
    return resources.data_mem_mb(_data_spec_of(wildcards.dataset), attempt)


def data_runtime(wildcards, attempt):
    return resources.data_runtime(_data_spec_of(wildcards.dataset), attempt)


def _store_spec_of(wildcards):
    return _feature_spec_of(
        wildcards.dataset, wildcards.backbone, wildcards.representation
    )


def features_mem_mb(wildcards, attempt):
    return resources.features_mem_mb(
        _store_spec_of(wildcards), config["extraction"]["batch_size"], attempt
    )


def features_runtime(wildcards, input, attempt):
    return resources.features_runtime(_store_spec_of(wildcards), input.data, attempt)


def train_mem_mb(wildcards, input, attempt):
    return resources.train_mem_mb(
        _data_spec_of(wildcards.dataset), input.data, input.features, attempt
    )


def train_runtime(wildcards, input, attempt):
    return resources.train_runtime(
        _data_spec_of(wildcards.dataset),
        _probe_spec_of(wildcards.probe),
        len(parse_run_label(wildcards.run)),
        input.data,
        input.features,
        attempt,
    )


def figure_paths(name):
    """One figure per (dataset, backbone, probe)."""
    return [
        os.path.join(FIGURES, dataset, backbone, probe, f"{name}.png")
        for dataset in EXPERIMENT.datasets
        for backbone in EXPERIMENT.backbones
        for probe in EXPERIMENT.probes
    ]


def representation_figures():
    """One figure per dataset: a few of its images through every representation."""
    return [
        os.path.join(FIGURES, dataset, "representations.png")
        for dataset in EXPERIMENT.datasets
    ]
