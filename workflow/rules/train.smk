# Stage 3: one small job per (feature store, target, probe config, run): every layer's
# probe of that store trained together, one csv row per layer, the per-image test
# predictions the image-level tests need, and the best heads (transfer.smk applies the
# reference's to the other representations). Each job draws its runs' splits from the
# class labels, whatever the target: a new split, target, more runs or a new probe config
# only re-plan train jobs, never features.


rule train:
    input:
        features=LAYOUT.feature_store,
        data=LAYOUT.data_store,
    output:
        table=LAYOUT.run_table,
        predictions=LAYOUT.run_predictions,
        predictions_table=LAYOUT.run_predictions_table,
        heads=LAYOUT.run_heads,
    log:
        LAYOUT.run_log("train"),
    benchmark:
        LAYOUT.run_benchmark("train")
    conda:
        "../envs/train.yaml"
    threads: config["training"]["threads"]
    resources:
        gpu=1,
        mem_mb=train_mem_mb,
        runtime=train_runtime,
    params:
        probe=probe_params,
        store=feature_params,
        data=data_params,
        split=SPLIT_PARAMS,
    script:
        "../scripts/train.py"
