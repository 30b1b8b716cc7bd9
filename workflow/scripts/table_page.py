"""Snakemake adapter: one results table as an HTML page of the report."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, "..", "..", "src"))  # noqa: F821
from visual_ablation.plumbing.logs import job_log  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0]):
    from visual_ablation.report import tables

    tables.html_page(smk.input[0], smk.output[0], title=f"{smk.wildcards.table}.csv")
