"""Snakemake adapter: decode one dataset into its data store."""

import json
import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, "..", "..", "src"))  # noqa: F821
from visual_ablation.plumbing.logs import job_log  # noqa: E402

with job_log(snakemake.log[0]):  # noqa: F821 (snakemake is injected)
    from visual_ablation.data import preparation

    # the split is not part of the store: it is only tried, so that a dataset too small
    # for it stops here rather than in every train job
    preparation.prepare(
        json.loads(snakemake.params.spec),  # noqa: F821
        snakemake.output[0],  # noqa: F821
        split=snakemake.config["split"],  # noqa: F821
        workers=snakemake.threads,  # noqa: F821
        # tried too, not part of the store: a new target re-plans train jobs only
        targets=snakemake.config["datasets"][snakemake.wildcards.dataset].get("targets"),  # noqa: F821
    )
