# Stage 1: decode each dataset once into its data store ({cache_dir}/data/{dataset}.zarr).


rule prepare_data:
    input:
        stimuli=stimuli_inputs,
    output:
        directory(LAYOUT.data_store),
    log:
        LAYOUT.log("prepare_data", "{dataset}"),
    benchmark:
        LAYOUT.benchmark("prepare_data", "{dataset}")
    # the data and feature jobs first, as soon as they can run: the 1-thread jobs after
    # them never wait on a 2-thread feature job for a free core (benchmarks/README.md)
    priority: 2
    conda:
        "../envs/data.yaml"
    threads: data_threads
    resources:
        mem_mb=data_mem_mb,
        runtime=data_runtime,
    params:
        spec=data_params,
    script:
        "../scripts/prepare_data.py"


# Geirhos' stimuli with `fetch`: the pinned commit's files of the set, into the dataset's
# path, each checked against its SHA-256 before every decode (a local rule: compute
# nodes never download; offline, it fails saying how to copy them instead)
rule fetch_stimuli:
    output:
        temp(LAYOUT.stimuli_fetched),
    log:
        LAYOUT.log("fetch_stimuli", "{dataset}"),
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        spec=data_params,
    script:
        "../scripts/fetch_stimuli.py"
