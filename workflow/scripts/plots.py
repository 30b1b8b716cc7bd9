"""Snakemake adapter: the figures of every (dataset, backbone, probe) from summary.csv."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, "..", "..", "src"))  # noqa: F821
from visual_ablation.plumbing.logs import job_log  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0]):
    from visual_ablation.report import plots, tables

    plots.configure(smk.config.get("figures"))

    paths = zip(smk.output.by_layer, smk.output.difference, smk.output.targets, strict=True)
    tables.figures(
        smk.input[0],
        list(zip(map(tuple, smk.params.figures), paths, strict=True)),
        reference=smk.params.reference,
        untrained=dict(smk.params.untrained),
    )
