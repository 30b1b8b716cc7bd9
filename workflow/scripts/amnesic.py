"""Snakemake adapter: one reference store's factors removed, the class heads tested."""

import json
import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, "..", "..", "src"))  # noqa: F821
from visual_ablation.plumbing.logs import job_log  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0]):
    from visual_ablation.analyses import amnesic
    from visual_ablation.plumbing import outputs

    rows, predictions = amnesic.amnesic_store(
        heads_paths={probe: [smk.input[probe]] for probe in smk.params.probes},
        feature_path=smk.input.features,
        data_path=smk.input.data,
        feature_spec=json.loads(smk.params.store),
        data_spec=json.loads(smk.params.data),
        factors=list(smk.params.factors),
        iterations=int(smk.params.iterations),
    )
    outputs.write_csv(rows, smk.output.rows, amnesic.ROW_COLUMNS)
    amnesic.write_predictions(predictions, smk.output.predictions)
