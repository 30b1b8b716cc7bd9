"""Snakemake adapter: the table of this experiment's feature stores, each checked."""

import json
import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, "..", "..", "src"))  # noqa: F821
from visual_ablation.plumbing.logs import job_log  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0]):
    import pandas as pd

    from visual_ablation.features import feature_store

    rows = feature_store.inventory(json.loads(smk.params.stores))
    pd.DataFrame(rows).to_csv(smk.output[0], index=False)
