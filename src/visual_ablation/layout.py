"""Where every artefact lives: one path template per artefact of the core stages, defined
here once (an analysis's own artefacts: templates in its plan module, under `result`). On
the ground floor: it imports nothing of the package, every stage may read it.

The rules use the templates with Snakemake wildcards left in (`{dataset}`, ...); the
package fills them for one job (`fill`). Data and feature stores live under `cache_dir`,
everything else under `results_dir`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NamedTuple

# a train or transfer job's name under its stage folder (its files, log and benchmark);
# a transfer job's stage folder is transfer/{transfer} (its variant)
RUN_JOB = "{dataset}/{backbone}/{representation}/{target}/{probe}/run{run}"
TRAIN_STAGE, TRANSFER_STAGE = "runs", "transfer"
WITHIN = "none"  # the `transfer` of a train job's model (vocabulary.TRANSFER_VARIANTS)


class ModelKey(NamedTuple):
    """What one model's predictions are: tested on `representation`, its heads trained
    on `train_representation` (the same for a train job, the reference for transfer) and
    applied as `transfer` says (WITHIN for a train job)."""

    dataset: str
    backbone: str
    representation: str
    train_representation: str
    transfer: str
    target: str
    probe: str


def run_label(runs: int | list[int]) -> str:
    """`3` for run 3, `0-4` for the consecutive runs 0..4 (the `run` wildcard)."""
    if isinstance(runs, int):
        return str(runs)
    return str(runs[0]) if len(runs) == 1 else f"{runs[0]}-{runs[-1]}"


def parse_run_label(label: str) -> list[int]:
    """The runs of a `run` wildcard: `3` -> [3], `0-4` -> [0, 1, 2, 3, 4]."""
    first, _, last = label.partition("-")
    return list(range(int(first), int(last or first) + 1))


def parse_run_path(path: str, reference: str | None) -> tuple[ModelKey, list[int]]:
    """The inverse of the run templates (`Layout.run_table` and its siblings): a train or
    transfer job's file -> (its model, its runs). A transfer job's heads were trained on
    `reference`."""
    parts = path.replace(os.sep, "/").split("/")
    stage, dataset, backbone, representation, target, probe, name = parts[-7:]
    transfer = WITHIN
    if len(parts) > 7 and parts[-8] == TRANSFER_STAGE:
        transfer, stage = stage, TRANSFER_STAGE
    elif stage != TRAIN_STAGE:
        stage = ""
    if not stage or not name.startswith("run"):
        raise ValueError(f"{path} is not a train or transfer job's file ({RUN_JOB})")
    trained_on = reference if stage == TRANSFER_STAGE else representation
    if trained_on is None:
        raise ValueError(f"{path}: a transfer job's file needs the reference representation")
    label = name[len("run") :].split(".", 1)[0]
    key = ModelKey(dataset, backbone, representation, trained_on, transfer, target, probe)
    return key, parse_run_label(label)


def fill(template: str, **values: object) -> str:
    """`template` with the named wildcards filled and any others left as they are."""
    for key, value in values.items():
        template = template.replace("{" + key + "}", str(value))
    return template


@dataclass(frozen=True)
class Layout:
    results_dir: str
    cache_dir: str

    @property
    def data_store(self) -> str:
        return os.path.join(self.cache_dir, "data", "{dataset}.zarr")

    @property
    def feature_store(self) -> str:
        return os.path.join(
            self.cache_dir, "features", "{dataset}", "{backbone}", "{representation}.zarr"
        )

    @property
    def stimuli_fetched(self) -> str:
        """The fetch_stimuli rule's mark (temporary: the stimuli live at the dataset's path)."""
        return os.path.join(self.cache_dir, "data", "{dataset}.fetched")

    @property
    def weights_fetched(self) -> str:
        """The fetch_weights checkpoint's mark (temporary: the weights live in their
        library's own cache)."""
        return os.path.join(self.cache_dir, "weights", "{backbone}.fetched")

    def _run(self, stage: str, suffix: str) -> str:
        return os.path.join(self.results_dir, *stage.split("/"), *RUN_JOB.split("/")) + suffix

    @property
    def run_table(self) -> str:
        """One train job's csv: `run3.csv` for one run, `run0-4.csv` for runs 0..4."""
        return self._run(TRAIN_STAGE, ".csv")

    @property
    def run_predictions(self) -> str:
        """One train job's per-image test predictions, next to its csv."""
        return self._run(TRAIN_STAGE, ".predictions.npz")

    @property
    def run_predictions_table(self) -> str:
        """...and the same as a table with class names and file names."""
        return self._run(TRAIN_STAGE, ".predictions.csv")

    @property
    def run_heads(self) -> str:
        """One train job's best head weights and standardisation (what transfer applies)."""
        return self._run(TRAIN_STAGE, ".heads.npz")

    @property
    def transfer_table(self) -> str:
        """The reference's heads tested on `{representation}` as `{transfer}` says: its
        csv..."""
        return self._run(TRANSFER_STAGE + "/{transfer}", ".csv")

    @property
    def transfer_predictions(self) -> str:
        """...and its per-image test predictions."""
        return self._run(TRANSFER_STAGE + "/{transfer}", ".predictions.npz")

    @property
    def transfer_predictions_table(self) -> str:
        return self._run(TRANSFER_STAGE + "/{transfer}", ".predictions.csv")

    @property
    def figure(self) -> str:
        """One figure per (dataset, backbone, probe): `{figure}` names it."""
        return os.path.join(
            self.results_dir, "figures", "{dataset}", "{backbone}", "{probe}", "{figure}.png"
        )

    @property
    def representation_figure(self) -> str:
        return os.path.join(self.results_dir, "figures", "{dataset}", "representations.png")

    def result(self, template: str) -> str:
        """A stage's own artefact: `template` (a path with wildcards, `/`-separated, that
        the stage's plan module defines) under the results directory."""
        return os.path.join(self.results_dir, *template.split("/"))

    def table(self, stem: str) -> str:
        """A results table: `{results}/{stem}.csv` (a stage's TABLE)."""
        return os.path.join(self.results_dir, stem + ".csv")

    @property
    def feature_table(self) -> str:
        return os.path.join(self.results_dir, "feature_stores.csv")

    @property
    def metrics(self) -> str:
        return os.path.join(self.results_dir, "metrics.csv")

    @property
    def summary(self) -> str:
        return os.path.join(self.results_dir, "summary.csv")

    @property
    def table_page(self) -> str:
        """A results table as an HTML page of the report."""
        return os.path.join(self.results_dir, "tables", "{table}.html")

    def log(self, rule: str, name: str | None = None) -> str:
        """A job's log: `logs/{rule}/{name}.log` (`name` may hold wildcards), or
        `logs/{rule}.log` for a rule with one job."""
        if name is None:
            return os.path.join(self.results_dir, "logs", rule + ".log")
        return os.path.join(self.results_dir, "logs", rule, name + ".log")

    def benchmark(self, rule: str, name: str) -> str:
        """A job's time and memory: `benchmarks/{rule}/{name}.tsv`."""
        return os.path.join(self.results_dir, "benchmarks", rule, name + ".tsv")

    def run_log(self, rule: str) -> str:
        """A train or transfer job's log, named as its files are (a transfer job's files
        are under each variant's folder; its one log is not)."""
        return self.log(rule, RUN_JOB)

    def run_benchmark(self, rule: str) -> str:
        return self.benchmark(rule, RUN_JOB)
