# Stage 2: one feature store per (dataset, backbone, representation), reused by every
# probe config and run. Its params are the full spec of the store, so changing a
# backbone's layers or a representation's params re-plans exactly those stores.


rule features:
    input:
        # not ancient(): Snakemake skips the params check of jobs downstream of a job
        # that reruns, so with ancient() a changed feature spec could go unnoticed
        data=LAYOUT.data_store,
        weights=weights_inputs,
    output:
        directory(LAYOUT.feature_store),
    log:
        LAYOUT.log("features", "{dataset}/{backbone}/{representation}"),
    benchmark:
        LAYOUT.benchmark("features", "{dataset}/{backbone}/{representation}")
    priority: 2  # before the jobs that need it (data.smk)
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
        "../scripts/features.py"


# Stage 2, inventory: a table of every feature store this experiment uses, each checked
# against the config it is read for (a store built for another config is refused).


rule feature_table:
    input:
        [EXPERIMENT.feature_store(*job) for job in stages.features.jobs(EXPERIMENT)],
    output:
        LAYOUT.feature_table,
    log:
        LAYOUT.log("feature_table"),
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        # a function: evaluated again after the fetch_weights checkpoint
        stores=feature_table_params,
    script:
        "../scripts/feature_table.py"
