# Stage 3: one small job per (feature store, probe config, run): every layer's probe of
# that store trained together, one csv row per layer, and the per-image test predictions
# the image-level tests need. Each job draws its runs' splits from the labels: a new
# split, more runs or a new probe config only re-plan train jobs, never features.


rule train:
    input:
        features=os.path.join(
            CACHE, "features", "{dataset}", "{backbone}", "{representation}.zarr"
        ),
        data=os.path.join(CACHE, "data", "{dataset}.zarr"),
    output:
        table=os.path.join(
            RESULTS,
            "runs",
            "{dataset}",
            "{backbone}",
            "{representation}",
            "{probe}",
            "run{run}.csv",
        ),
        predictions=os.path.join(
            RESULTS,
            "runs",
            "{dataset}",
            "{backbone}",
            "{representation}",
            "{probe}",
            "run{run}.predictions.npz",
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
        split=SPLIT_SPEC,
    script:
        "../workflow/scripts/train.py"
