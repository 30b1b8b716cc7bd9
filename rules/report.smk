# Stage 4: every run row (train and transfer jobs) in one tidy table, the summary over runs
# (CIs, differences to the reference representation tested on the test images, Holm),
# and the figures of the report, with one that shows what each representation does to a
# few images.


rule aggregate:
    input:
        tables=plans.report.run_tables(EXPERIMENT),
        predictions=plans.report.run_predictions(EXPERIMENT),
    output:
        metrics=LAYOUT.metrics,
        summary=report(
            LAYOUT.summary,
            caption="../workflow/report/summary.rst",
            category="Tables",
        ),
    log:
        LAYOUT.log("aggregate"),
    conda:
        "../envs/report.yaml"
    threads: config["aggregate"]["threads"]
    params:
        reference=EXPERIMENT.reference,
        resampled=plans.report.resampled_test_datasets(EXPERIMENT),
    script:
        "../workflow/scripts/aggregate.py"


rule plots:
    input:
        rules.aggregate.output.summary,
    output:
        by_layer=report(
            layout.fill(LAYOUT.figure, figure="accuracy_by_layer"),
            caption="../workflow/report/accuracy_by_layer.rst",
            category="Accuracy by layer",
            subcategory="{dataset}",
            labels={"backbone": "{backbone}", "probe": "{probe}"},
        ),
        difference=report(
            layout.fill(LAYOUT.figure, figure="difference_heatmap"),
            caption="../workflow/report/difference_heatmap.rst",
            category="Difference to original",
            subcategory="{dataset}",
            labels={"backbone": "{backbone}", "probe": "{probe}"},
        ),
        targets=report(
            layout.fill(LAYOUT.figure, figure="targets_by_layer"),
            caption="../workflow/report/targets_by_layer.rst",
            category="Targets by layer",
            subcategory="{dataset}",
            labels={"backbone": "{backbone}", "probe": "{probe}"},
        ),
    log:
        LAYOUT.log("plots", "{dataset}/{backbone}/{probe}"),
    conda:
        "../envs/report.yaml"
    params:
        reference=EXPERIMENT.reference,
        # the same network untrained, drawn beside it: what training added
        untrained=lambda wildcards: EXPERIMENT.untrained_twin(wildcards.backbone),
    script:
        "../workflow/scripts/plots.py"


rule representation_examples:
    input:
        data=rules.prepare_data.output[0],
    output:
        report(
            LAYOUT.representation_figure,
            caption="../workflow/report/representations.rst",
            category="Representations",
            subcategory="{dataset}",
        ),
    log:
        LAYOUT.log("representation_examples", "{dataset}"),
    conda:
        "../envs/features.yaml"
    params:
        data=data_params,
        # a mapping: canonical whatever the order the config wrote them in
        representations=lambda wildcards: canonical(
            {
                name: EXPERIMENT.representations[name]
                for name in EXPERIMENT.representations_of(wildcards.dataset)
            }
        ),
        reference=EXPERIMENT.reference,
    script:
        "../workflow/scripts/representation_examples.py"
