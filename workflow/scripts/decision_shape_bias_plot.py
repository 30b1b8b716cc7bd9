"""Snakemake adapter: shape_bias.csv's network rows of one dataset -> its figure."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, "..", "..", "src"))  # noqa: F821
from visual_ablation.plumbing.logs import job_log  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0]):
    import pandas as pd

    from visual_ablation.report import plots

    plots.decision_shape_bias(pd.read_csv(smk.input[0]), smk.wildcards.dataset, smk.output[0])
