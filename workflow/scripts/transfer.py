"""Snakemake adapter: the reference's heads tested on one other representation's store,
as every transfer variant says."""

import json
import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, "..", "..", "src"))  # noqa: F821
from visual_ablation.plumbing.logs import job_log  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0]):
    from visual_ablation.probes import run_files, transfer

    data_spec = json.loads(smk.params.data)
    results = transfer.transfer_store(
        heads_paths=[smk.input.heads],
        feature_path=smk.input.features,
        data_path=smk.input.data,
        feature_spec=json.loads(smk.params.store),
        data_spec=data_spec,
        target=smk.wildcards.target,
        variants=list(smk.params.variants),
    )
    outputs = zip(
        smk.output.tables, smk.output.predictions, smk.output.predictions_tables, strict=True
    )
    for (rows, predictions), (table, npz, csv) in zip(results, outputs, strict=True):
        run_files.write_predictions(predictions, npz)
        run_files.write_predictions_table(
            predictions, smk.input.data, data_spec, smk.wildcards.target, csv
        )
        run_files.write_csv(rows, table)
