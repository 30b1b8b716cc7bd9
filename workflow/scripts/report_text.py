"""Snakemake adapter: the report's landing text, the plan's description (rules/tables.smk)."""

import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, "..", "..", "src"))  # noqa: F821
from visual_ablation.plumbing.logs import job_log  # noqa: E402
from visual_ablation.plumbing.outputs import replacing  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0]), replacing(smk.output[0]) as partial:
    with open(partial, "w") as out:
        out.write(smk.params.text)
