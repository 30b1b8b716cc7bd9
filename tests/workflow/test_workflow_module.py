"""The workflow used as a Snakemake module of another workflow, as snakedeploy writes it
(`module ...: snakefile: <repo>/workflow/Snakefile`, `use rule * from ...`): its paths come
from its own folder, and a tiny experiment runs to its tables."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import yaml
from conftest import copy_workflow, tiny_config

pytestmark = pytest.mark.workflow

DEPLOYED = """\
configfile: "config/config.yaml"


module visual_ablation:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from visual_ablation as visual_ablation_*
"""


def test_the_workflow_runs_as_a_module_of_another(tmp_path):
    repo = copy_workflow(tmp_path / "visual-ablation")
    project = tmp_path / "my-project"
    (project / "config").mkdir(parents=True)
    (project / "Snakefile").write_text(DEPLOYED.format(snakefile=repo / "workflow" / "Snakefile"))
    config = tiny_config(
        datasets={"digits": {"source": "sklearn-digits", "n": 150, "image_size": 16}},
        backbones={"pixels": {"model": "pixels", "image_size": 8}},
        probes={"linear": {"hidden": 0, "max_epochs": 5, "patience": 2}},
        runs=1,
    )
    (project / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    summary = pd.read_csv(project / "results" / "summary.csv")
    assert set(summary["representation"]) == {"original", "grayscale"}
    assert (project / "results" / "data" / "digits.zarr").is_dir()
    assert "visual_ablation_train" in run.stdout + run.stderr
