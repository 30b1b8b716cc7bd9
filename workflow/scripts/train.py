"""Snakemake adapter: train one probe config for one target on every layer of one store
for its runs."""

import json
import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, "..", "..", "src"))  # noqa: F821
from visual_ablation.plumbing.logs import job_log  # noqa: E402

smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0]):
    from visual_ablation.plumbing import devices

    # pin this job to its own GPU slot before torch initialises CUDA (none: CPU)
    devices.claim_gpu_slot(smk.config["training"]["device"])
    from visual_ablation.layout import parse_run_label
    from visual_ablation.probes import run_files, training

    rows, predictions, heads = training.train_store(
        feature_path=smk.input.features,
        data_path=smk.input.data,
        feature_spec=json.loads(smk.params.store),
        data_spec=json.loads(smk.params.data),
        probe_spec=json.loads(smk.params.probe),
        split_spec=json.loads(smk.params.split),
        runs=parse_run_label(smk.wildcards.run),
        device=smk.config["training"]["device"],
        threads=smk.threads,
        target=smk.wildcards.target,
    )
    run_files.write_heads(heads, rows, smk.output.heads)
    run_files.write_predictions(predictions, smk.output.predictions)
    run_files.write_predictions_table(
        predictions,
        smk.input.data,
        json.loads(smk.params.data),
        smk.wildcards.target,
        smk.output.predictions_table,
    )
    run_files.write_csv(rows, smk.output.table)
