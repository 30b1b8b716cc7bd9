# Stage 1: decode each dataset once into results/data/{dataset}.zarr.


rule prepare_data:
    output:
        directory(os.path.join(CACHE, "data", "{dataset}.zarr")),
    log:
        os.path.join(LOGS, "prepare_data", "{dataset}.log"),
    benchmark:
        os.path.join(BENCHMARKS, "prepare_data", "{dataset}.tsv")
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=data_mem_mb,
        runtime=data_runtime,
    params:
        spec=data_spec,
    script:
        "../workflow/scripts/prepare_data.py"
