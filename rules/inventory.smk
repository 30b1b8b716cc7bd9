# Stage 2, inventory: a table of every feature store this experiment uses, each checked
# against the config it is read for (a store built for another config is refused).


rule feature_table:
    input:
        [EXPERIMENT.feature_store(*job) for job in plans.features.jobs(EXPERIMENT)],
    output:
        LAYOUT.feature_table,
    log:
        LAYOUT.log("feature_table"),
    conda:
        "../envs/data.yaml"
    params:
        # a function: evaluated again after the fetch_weights checkpoint
        stores=feature_table_params,
    script:
        "../workflow/scripts/feature_table.py"
