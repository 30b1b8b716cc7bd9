"""Snakemake adapter: every amnesic job's rows -> amnesic.csv (means and intervals)."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, "..", "..", "src"))  # noqa: F821
from visual_ablation.plumbing.logs import job_log  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0]):
    from visual_ablation.analyses import amnesic
    from visual_ablation.plumbing import outputs

    table = amnesic.table(list(smk.input.rows), list(smk.input.predictions))
    outputs.write_table(table, smk.output[0])
