"""An analysis is a unit the plan finds: a new one is its plan module, rule file, script and
caption, with no other file touched (README "Where a change goes"). Checked by adding a
toy analysis to a copy of the workflow and running it."""

from __future__ import annotations

import subprocess
import textwrap

import pandas as pd
import pytest
from conftest import Workflow, copy_workflow, tiny_config

pytestmark = pytest.mark.workflow

TOY = {
    "src/visual_ablation/plan/stages/toy.py": '''
        """A toy analysis: the width of every layer of every feature store."""

        from visual_ablation.plan.stages import features

        AFTER = ("features",)
        TABLE = "toy"


        def targets(exp):
            return [exp.layout.table(TABLE)]


        def describe(exp):
            return f"Toy: the width of each layer of {len(features.jobs(exp))} stores."
        ''',
    "workflow/rules/toy.smk": """
        rule toy:
            input:
                [EXPERIMENT.feature_store(*job) for job in stages.features.jobs(EXPERIMENT)],
            output:
                report(
                    LAYOUT.table(stages.toy.TABLE),
                    caption="../report/toy.rst",
                    category="Tables",
                ),
            log:
                LAYOUT.log("toy"),
            localrule: True
            conda:
                "../envs/report.yaml"
            script:
                "../scripts/toy.py"
        """,
    "workflow/scripts/toy.py": """
        import zarr
        import pandas as pd

        rows = [
            {"store": path, "layer": name, "width": layer.shape[1]}
            for path in snakemake.input
            for name, layer in zarr.open_group(path, mode="r")["layers"].members()
        ]
        pd.DataFrame(rows).to_csv(snakemake.output[0], index=False)
        """,
    "workflow/report/toy.rst": "The toy table: each layer's width.\n",
}


def git(root, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
    ).stdout


def test_a_new_analysis_is_planned_run_and_reported_with_no_other_file_touched(tmp_path):
    root = copy_workflow(tmp_path / "repo")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "workflow")
    for path, text in TOY.items():
        (root / path).write_text(textwrap.dedent(text).lstrip())
    status = git(root, "status", "--porcelain", "--untracked-files=all").splitlines()
    assert sorted(status) == sorted(f"?? {path}" for path in TOY)

    wf = Workflow(root, tmp_path / "work")
    config = tiny_config(
        representations=["original"],
        backbones={"pixels": {"model": "pixels", "image_size": 8}},
        probes={"linear": {"hidden": 0, "max_epochs": 5, "patience": 2}},
        runs=1,
    )
    wf.write_config(config)
    assert ("toy", "results/toy.csv") in wf.planned()
    wf.run()
    table = pd.read_csv(wf.workdir / "results" / "toy.csv")
    assert list(table["width"]) == [8 * 8 * 3] * len(table) and len(table) >= 1
    # its table is a page of the report, and the landing text has its paragraph
    assert (wf.workdir / "results" / "tables" / "toy.html").exists()
    wf.run("--report", "report.html")
    html = (wf.workdir / "report.html").read_text(errors="replace")
    assert "Toy: the width of each layer of 1 stores." in html
    assert "toy.csv" in html and "toy.html" in html
    # ... while the stages this experiment does not plan are not announced
    assert "Amnesic probing" not in html and "shape bias" not in html
