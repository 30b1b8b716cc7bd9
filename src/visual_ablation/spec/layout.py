"""Where every artefact lives: one path template per artefact, defined here once.

The rules use the templates with Snakemake wildcards left in (`{dataset}`, ...); the
package fills them for one job (`fill`). Data and feature stores live under `cache_dir`,
everything else under `results_dir`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


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

    def _run(self, stage: str, suffix: str) -> str:
        return os.path.join(
            self.results_dir,
            stage,
            "{dataset}",
            "{backbone}",
            "{representation}",
            "{target}",
            "{probe}",
            "run{run}" + suffix,
        )

    @property
    def run_table(self) -> str:
        """One train job's csv: `run3.csv` for one run, `run0-4.csv` for runs 0..4."""
        return self._run("runs", ".csv")

    @property
    def run_predictions(self) -> str:
        """One train job's per-image test predictions, next to its csv."""
        return self._run("runs", ".predictions.npz")

    @property
    def run_heads(self) -> str:
        """One train job's best head weights and standardisation (what transfer applies)."""
        return self._run("runs", ".heads.npz")

    @property
    def transfer_table(self) -> str:
        """The reference's heads tested on `{representation}`: its csv..."""
        return self._run("transfer", ".csv")

    @property
    def transfer_predictions(self) -> str:
        """...and its per-image test predictions."""
        return self._run("transfer", ".predictions.npz")

    @property
    def shape_bias_table(self) -> str:
        return os.path.join(self.results_dir, "shape_bias.csv")

    @property
    def shape_bias_figure(self) -> str:
        """One shape-bias figure per (cue-conflict dataset, probe), a line per backbone."""
        return os.path.join(self.results_dir, "figures", "{dataset}", "{probe}", "shape_bias.png")

    @property
    def figure(self) -> str:
        """One figure per (dataset, backbone, probe): `{figure}` names it."""
        return os.path.join(
            self.results_dir, "figures", "{dataset}", "{backbone}", "{probe}", "{figure}.png"
        )

    @property
    def representation_figure(self) -> str:
        return os.path.join(self.results_dir, "figures", "{dataset}", "representations.png")

    @property
    def similarity_job(self) -> str:
        """Linear CKA of one representation's store against the reference's, per layer."""
        return os.path.join(
            self.results_dir, "similarity", "{dataset}", "{backbone}", "{representation}.csv"
        )

    @property
    def similarity_table(self) -> str:
        return os.path.join(self.results_dir, "similarity.csv")

    @property
    def similarity_figure(self) -> str:
        """One CKA heatmap per (dataset, backbone)."""
        return os.path.join(
            self.results_dir, "figures", "{dataset}", "{backbone}", "similarity.png"
        )

    @property
    def feature_table(self) -> str:
        return os.path.join(self.results_dir, "feature_stores.csv")

    @property
    def metrics(self) -> str:
        return os.path.join(self.results_dir, "metrics.csv")

    @property
    def summary(self) -> str:
        return os.path.join(self.results_dir, "summary.csv")

    def log(self, rule: str, name: str | None = None) -> str:
        """A job's log: `logs/{rule}/{name}.log` (`name` may hold wildcards), or
        `logs/{rule}.log` for a rule with one job."""
        if name is None:
            return os.path.join(self.results_dir, "logs", rule + ".log")
        return os.path.join(self.results_dir, "logs", rule, name + ".log")

    def benchmark(self, rule: str, name: str) -> str:
        """A job's time and memory: `benchmarks/{rule}/{name}.tsv`."""
        return os.path.join(self.results_dir, "benchmarks", rule, name + ".tsv")
