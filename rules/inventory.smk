# Stage 3 (for now): a table of every feature store this experiment uses, each checked
# against the config it is read for (a store built for another config is refused).


rule feature_table:
    input:
        all_feature_stores(),
    output:
        FEATURE_TABLE,
    log:
        os.path.join(LOGS, "feature_table.log"),
    conda:
        "../envs/data.yaml"
    params:
        stores=lambda wildcards: canonical(
            [
                {
                    "dataset": d,
                    "backbone": b,
                    "representation": r,
                    "path": EXPERIMENT.feature_store(d, b, r),
                    "spec": EXPERIMENT.feature_spec(d, b, r),
                }
                for d, b, r in EXPERIMENT.feature_targets()
            ]
        ),
    script:
        "../workflow/scripts/feature_table.py"
