# Stage 3b: linear CKA between each representation's features and the reference's, layer
# by layer, on the same images (all, or a fixed sample of 10,000). No probe is trained: the
# fast first look at how far a representation moves each layer. One small job per
# representation, so adding one plans only its own job (and the table and figures); the
# split plays no part, so a new split re-plans none.


rule similarity:
    input:
        reference=lambda wildcards: EXPERIMENT.feature_store(
            wildcards.dataset, wildcards.backbone, EXPERIMENT.reference
        ),
        features=LAYOUT.feature_store,
    output:
        LAYOUT.result(stages.similarity.JOB),
    log:
        LAYOUT.log("similarity", "{dataset}/{backbone}/{representation}"),
    conda:
        "../envs/train.yaml"
    resources:
        mem_mb=light_mem_mb,
        runtime=light_runtime,
    params:
        store=feature_params,
        reference=reference_params,
    script:
        "../scripts/similarity.py"


rule similarity_table:
    input:
        stages.similarity.jobs(EXPERIMENT),
    output:
        report(
            LAYOUT.table(stages.similarity.TABLE),
            caption="../report/similarity_table.rst",
            category="Tables",
        ),
    log:
        LAYOUT.log("similarity_table"),
    localrule: True
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/similarity_table.py"


rule similarity_plot:
    input:
        rules.similarity_table.output[0],
    output:
        report(
            LAYOUT.result(stages.similarity.FIGURE),
            caption="../report/similarity.rst",
            category="Similarity to original",
            subcategory="{dataset}",
            labels={"backbone": "{backbone}"},
        ),
    log:
        LAYOUT.log("similarity_plot", "{dataset}/{backbone}"),
    localrule: True
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/similarity_plot.py"
