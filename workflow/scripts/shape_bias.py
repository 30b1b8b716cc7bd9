"""Snakemake adapter: class probes' predictions on cue-conflict images -> shape_bias.csv."""

import json
import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, "..", "..", "src"))  # noqa: F821
from visual_ablation.plumbing.logs import job_log  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0]):
    import pandas as pd

    from visual_ablation.analyses import shape_bias
    from visual_ablation.plumbing import outputs

    datasets = list(smk.params.datasets)
    table = shape_bias.table(
        list(smk.input.predictions),
        data_paths=dict(zip(datasets, smk.input.data, strict=True)),
        data_specs={d: json.loads(spec) for d, spec in zip(datasets, smk.params.data, strict=True)},
        reference=smk.params.reference,
        summary=pd.read_csv(smk.input.summary),
        decision_paths=list(smk.input.decisions),
    )
    outputs.write_table(table, smk.output[0])
