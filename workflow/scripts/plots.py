"""Snakemake adapter: the figures of one (dataset, backbone, probe) from summary.csv."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, "..", "..", "src"))  # noqa: F821
from visual_ablation.plumbing.logs import job_log  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0]):
    from visual_ablation.report import plots, tables

    plots.configure(smk.config.get("figures"))

    tables.figures(
        smk.input[0],
        dataset=smk.wildcards.dataset,
        backbone=smk.wildcards.backbone,
        probe=smk.wildcards.probe,
        by_layer_path=smk.output.by_layer,
        difference_path=smk.output.difference,
        targets_path=smk.output.targets,
        reference=smk.params.reference,
        untrained=smk.params.untrained,
    )
