"""Snakemake adapter: extract one feature store (dataset x backbone x representation)."""

import json
import os
import sys

sys.path.insert(0, os.path.join(snakemake.scriptdir, "..", "..", "src"))  # noqa: F821
from visual_ablation.plumbing.logs import job_log  # noqa: E402

# a feature job never downloads (it may run on a compute node): weights not on disk were
# fetched by the fetch_weights rule, or the job fails saying so
os.environ["HF_HUB_OFFLINE"] = "1"
smk = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(smk.log[0]):
    from visual_ablation.plumbing import devices

    # pin this job to its own GPU slot before torch initialises CUDA (none: CPU)
    devices.claim_gpu_slot(smk.config["extraction"]["device"])
    from visual_ablation.features import extraction

    extraction.extract(
        data_path=smk.input.data,
        out_path=smk.output[0],
        spec=json.loads(smk.params.spec),
        device=smk.config["extraction"]["device"],
        batch_size=smk.config["extraction"]["batch_size"],
        threads=smk.threads,
    )
