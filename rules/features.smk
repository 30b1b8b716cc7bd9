# Stage 2: one feature store per (dataset, backbone, representation), reused by every
# probe config and run. Its params are the full spec of the store, so changing a
# backbone's layers or a representation's params re-plans exactly those stores.


rule features:
    input:
        # not ancient(): Snakemake skips the params check of jobs downstream of a job
        # that reruns, so with ancient() a changed feature spec could go unnoticed
        data=rules.prepare_data.output[0],
        weights=weights_inputs,
    output:
        directory(LAYOUT.feature_store),
    log:
        LAYOUT.log("features", "{dataset}/{backbone}/{representation}"),
    benchmark:
        LAYOUT.benchmark("features", "{dataset}/{backbone}/{representation}")
    priority: 2  # before the jobs that need it (rules/data.smk)
    conda:
        "../envs/features.yaml"
    threads: config["extraction"]["threads"]
    resources:
        gpu=1,
        mem_mb=features_mem_mb,
        runtime=features_runtime,
    params:
        spec=feature_params,
    script:
        "../workflow/scripts/features.py"
