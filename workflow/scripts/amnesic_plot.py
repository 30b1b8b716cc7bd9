"""Snakemake adapter: amnesic.csv -> the figure of every (dataset, backbone, probe)."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, "..", "..", "src"))  # noqa: F821
from visual_ablation.plumbing.logs import job_log  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0]):
    import pandas as pd

    from visual_ablation.report import plots

    plots.configure(smk.config.get("figures"))

    table = pd.read_csv(smk.input[0])
    for (dataset, backbone, probe), path in zip(smk.params.figures, smk.output, strict=True):
        plots.amnesic_by_layer(table, dataset, backbone, probe, path)
