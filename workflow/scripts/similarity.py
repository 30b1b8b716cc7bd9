"""Snakemake adapter: linear CKA of one representation's store against the reference's."""

import json
import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, "..", "..", "src"))  # noqa: F821
from visual_ablation.plumbing.logs import job_log  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0]):
    from visual_ablation.analyses import similarity

    table = similarity.layer_similarity(
        smk.input.reference,
        smk.input.features,
        json.loads(smk.params.reference),
        json.loads(smk.params.store),
    )
    similarity.write_job(table, smk.output[0])
