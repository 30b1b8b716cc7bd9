"""Snakemake adapter: the reference's heads tested on one other representation's store."""

import json
import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, "..", "..", "src"))  # noqa: F821
from visual_ablation.plumbing.logs import job_log  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0]):
    from visual_ablation.probes import run_files, transfer

    rows, predictions = transfer.transfer_store(
        heads_paths=[smk.input.heads],
        feature_path=smk.input.features,
        data_path=smk.input.data,
        feature_spec=json.loads(smk.params.store),
        data_spec=json.loads(smk.params.data),
        target=smk.wildcards.target,
        variant=smk.wildcards.transfer,
    )
    run_files.write_predictions(predictions, smk.output.predictions)
    run_files.write_predictions_table(
        predictions,
        smk.input.data,
        json.loads(smk.params.data),
        smk.wildcards.target,
        smk.output.predictions_table,
    )
    run_files.write_csv(rows, smk.output.table)
