# Stage 4b: shape bias per layer on cue-conflict datasets (Geirhos et al. 2019): of the
# class probes' test decisions on images whose texture or colour signals another class,
# the share that follow the shape among those that follow the shape or the cue, beside
# the share that follow either and each cue's decodability (analyses/shape_bias.py). A
# table over every such dataset, and one figure per (dataset, probe) with a line per
# backbone.


rule shape_bias:
    input:
        predictions=stages.shape_bias.predictions(EXPERIMENT),
        data=[EXPERIMENT.data_store(d) for d in stages.shape_bias.datasets(EXPERIMENT)],
        # the shape and cue targets' accuracy: each cue's decodability beside the bias
        summary=LAYOUT.summary,
        decisions=stages.shape_bias.decision_files(EXPERIMENT),
    output:
        report(
            LAYOUT.table(stages.shape_bias.TABLE),
            caption="../report/shape_bias_table.rst",
            category="Tables",
        ),
    log:
        LAYOUT.log("shape_bias"),
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        datasets=stages.shape_bias.datasets(EXPERIMENT),
        data=[
            EXPERIMENT.params("data", d)
            for d in stages.shape_bias.datasets(EXPERIMENT)
        ],
        reference=EXPERIMENT.reference,
    script:
        "../scripts/shape_bias.py"


rule shape_bias_plot:
    input:
        rules.shape_bias.output[0],
    output:
        report(
            LAYOUT.result(stages.shape_bias.FIGURE),
            caption="../report/shape_bias.rst",
            category="Shape bias",
            subcategory="{dataset}",
            labels={"probe": "{probe}"},
        ),
    log:
        LAYOUT.log("shape_bias_plot", "{dataset}/{probe}"),
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        # backbones whose layers are parallel measurements (image statistics): points
        unordered=sorted(
            name
            for name, spec in EXPERIMENT.backbones.items()
            if not backbones.family(spec).layers_in_depth
        ),
    script:
        "../scripts/shape_bias_plot.py"


# The networks' own decisions on Geirhos et al.'s cue-conflict stimuli: each image through
# the backbone's ImageNet-1k head, its 16-way decision (the mean probability over each
# category's classes), per (dataset, backbone, representation).
rule decisions:
    input:
        data=LAYOUT.data_store,
        weights=weights_inputs,
    output:
        LAYOUT.result(stages.shape_bias.DECISIONS),
    log:
        LAYOUT.log("decisions", "{dataset}/{backbone}/{representation}"),
    conda:
        "../envs/features.yaml"
    threads: config["extraction"]["threads"]
    resources:
        gpu=1,
        mem_mb=features_mem_mb,
        runtime=features_runtime,
    params:
        spec=feature_params,
        data=data_params,
    script:
        "../scripts/decisions.py"


rule decision_shape_bias_plot:
    input:
        rules.shape_bias.output[0],
    output:
        report(
            LAYOUT.result(stages.shape_bias.DECISION_FIGURE),
            caption="../report/decision_shape_bias.rst",
            category="Shape bias",
            subcategory="{dataset}",
        ),
    log:
        LAYOUT.log("decision_shape_bias_plot", "{dataset}"),
    localrule: True
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/decision_shape_bias_plot.py"
