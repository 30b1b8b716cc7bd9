"""Snakemake adapter: a few images of one dataset through every representation."""

import json
import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, "..", "..", "src"))  # noqa: F821
from visual_ablation.plumbing.logs import job_log  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0]):
    from visual_ablation.report import plots, tables

    plots.configure(smk.config.get("figures"))

    tables.representation_figure(
        smk.input.data,
        json.loads(smk.params.data),
        json.loads(smk.params.representations),
        smk.params.reference,
        smk.output[0],
    )
