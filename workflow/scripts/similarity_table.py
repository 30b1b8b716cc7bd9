"""Snakemake adapter: every CKA job's table in similarity.csv."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, "..", "..", "src"))  # noqa: F821
from visual_ablation.plumbing.logs import job_log  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0]):
    from visual_ablation.analyses import similarity

    similarity.collect(list(smk.input), smk.output[0])
