"""Snakemake adapter: a backbone's own 16-way decisions on Geirhos' cue-conflict stimuli."""

import json
import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, "..", "..", "src"))  # noqa: F821
from visual_ablation.plumbing.logs import job_log  # noqa: E402

os.environ["HF_HUB_OFFLINE"] = "1"  # never downloads (fetch_weights does, beforehand)
smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0]):
    from visual_ablation.plumbing import devices

    devices.claim_gpu_slot(smk.config["extraction"]["device"])
    from visual_ablation.analyses import shape_bias
    from visual_ablation.probes import run_files

    decided = shape_bias.network_decisions(
        data_path=smk.input.data,
        data_spec=json.loads(smk.params.data),
        feature_spec=json.loads(smk.params.spec),
        device=smk.config["extraction"]["device"],
        threads=smk.threads,
    )
    run_files.write_predictions(decided, smk.output[0])
