"""Snakemake adapter: run tables and predictions -> metrics.csv (every row), summary.csv."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, "..", "..", "src"))  # noqa: F821
from visual_ablation.plumbing.logs import job_log  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0]):
    from visual_ablation.report import tables

    tables.aggregate(
        list(smk.input.tables),
        list(smk.input.predictions),
        metrics_path=smk.output.metrics,
        summary_path=smk.output.summary,
        reference=smk.params.reference,
        resampled=list(smk.params.resampled),
        threads=smk.threads,
    )
