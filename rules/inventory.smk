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
        # sorted: the same stores written in another key order are the same params
        stores=canonical(
            sorted(
                (
                    {
                        "dataset": d,
                        "backbone": b,
                        "representation": r,
                        "path": EXPERIMENT.feature_store(d, b, r),
                        "spec": EXPERIMENT.feature_spec(d, b, r),
                    }
                    for d, b, r in plans.features.jobs(EXPERIMENT)
                ),
                key=lambda store: store["path"],
            )
        ),
    script:
        "../workflow/scripts/feature_table.py"
