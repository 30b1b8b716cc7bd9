"""Snakemake adapter: get one dataset's Geirhos stimuli (`fetch`), every file checked."""

import json
import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, "..", "..", "src"))  # noqa: F821
from visual_ablation.plumbing.logs import job_log  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0]):
    from visual_ablation.data import stimuli

    stimuli.fetch_dataset(json.loads(smk.params.spec), smk.output[0])
