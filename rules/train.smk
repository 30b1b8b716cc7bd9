# Stage 3: one small job per (feature store, probe config, run): every layer's probe of
# that store trained together, one csv row per layer. Features are never recomputed
# here: more runs or a new probe config only add train jobs.


rule train:
    input:
        features=os.path.join(
            CACHE, "features", "{dataset}", "{backbone}", "{representation}.zarr"
        ),
        data=os.path.join(CACHE, "data", "{dataset}.zarr"),
    output:
        os.path.join(
            RESULTS,
            "runs",
            "{dataset}",
            "{backbone}",
            "{representation}",
            "{probe}",
            "run{run}.csv",
        ),
    log:
        os.path.join(
            LOGS,
            "train",
            "{dataset}",
            "{backbone}",
            "{representation}",
            "{probe}",
            "run{run}.log",
        ),
    benchmark:
        os.path.join(
            BENCHMARKS,
            "train",
            "{dataset}",
            "{backbone}",
            "{representation}",
            "{probe}",
            "run{run}.tsv",
        )
    conda:
        "../envs/train.yaml"
    threads: config["training"]["threads"]
    resources:
        gpu=1,
        mem_mb=train_mem_mb,
        runtime=train_runtime,
    params:
        probe=probe_spec,
        store=feature_spec,
        data=data_spec,
    script:
        "../workflow/scripts/train.py"
