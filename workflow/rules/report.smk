# Stage 4: every run row (train and transfer jobs) in one tidy table, the summary over runs
# (CIs, differences to the reference representation tested on the test images, Holm),
# and the figures of the report, with one that shows what each representation does to a
# few images.


rule aggregate:
    input:
        tables=stages.report.run_tables(EXPERIMENT),
        predictions=stages.report.run_predictions(EXPERIMENT),
    output:
        metrics=LAYOUT.metrics,
        summary=report(
            LAYOUT.summary,
            caption="../report/summary.rst",
            category="Tables",
        ),
    log:
        LAYOUT.log("aggregate"),
    localrule: True
    conda:
        "../envs/report.yaml"
    threads: config["aggregate"]["threads"]
    params:
        reference=EXPERIMENT.reference,
        resampled=stages.report.resampled_test_datasets(EXPERIMENT),
    script:
        "../scripts/aggregate.py"


# every (dataset, backbone, probe)'s figures in one job: they all follow the summary, and a
# job's start-up is most of a figure's time
PLOT_KEYS = stages.report.figure_keys(EXPERIMENT)


rule plots:
    input:
        LAYOUT.summary,
    output:
        by_layer=figure_reports(
            PLOT_KEYS,
            "accuracy_by_layer",
            "../report/accuracy_by_layer.rst",
            "Accuracy by layer",
        ),
        difference=figure_reports(
            PLOT_KEYS,
            "difference_heatmap",
            "../report/difference_heatmap.rst",
            "Difference to original",
        ),
        targets=figure_reports(
            PLOT_KEYS,
            "targets_by_layer",
            "../report/targets_by_layer.rst",
            "Targets by layer",
        ),
    log:
        LAYOUT.log("plots"),
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        figures=[list(key) for key in PLOT_KEYS],
        reference=EXPERIMENT.reference,
        # the same network untrained, drawn beside it: what training added
        untrained={
            b: EXPERIMENT.untrained_twin(b) for b in sorted(EXPERIMENT.backbones)
        },
    script:
        "../scripts/plots.py"


rule representation_examples:
    input:
        data=LAYOUT.data_store,
    output:
        report(
            LAYOUT.representation_figure,
            caption="../report/representations.rst",
            category="Representations",
            subcategory="{dataset}",
        ),
    log:
        LAYOUT.log("representation_examples", "{dataset}"),
    priority: 1  # needs the data only: drawn early, not alone at the end
    localrule: True
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
        "../scripts/representation_examples.py"
