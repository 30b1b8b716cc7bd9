# Stage 4: every run row in one tidy table, the summary over runs (CIs, paired
# differences to the reference representation, Holm), and the figures of the report.


rule aggregate:
    input:
        all_run_tables(),
    output:
        metrics=METRICS,
        summary=SUMMARY,
    log:
        os.path.join(LOGS, "aggregate.log"),
    conda:
        "../envs/report.yaml"
    params:
        reference=EXPERIMENT.reference,
    script:
        "../workflow/scripts/aggregate.py"


rule plots:
    input:
        SUMMARY,
    output:
        by_layer=report(
            os.path.join(
                FIGURES, "{dataset}", "{backbone}", "{probe}", "accuracy_by_layer.png"
            ),
            caption="../workflow/report/accuracy_by_layer.rst",
            category="Accuracy by layer",
            subcategory="{dataset}",
            labels={"backbone": "{backbone}", "probe": "{probe}"},
        ),
        difference=report(
            os.path.join(
                FIGURES, "{dataset}", "{backbone}", "{probe}", "difference_heatmap.png"
            ),
            caption="../workflow/report/difference_heatmap.rst",
            category="Difference to original",
            subcategory="{dataset}",
            labels={"backbone": "{backbone}", "probe": "{probe}"},
        ),
    log:
        os.path.join(LOGS, "plots", "{dataset}", "{backbone}", "{probe}.log"),
    conda:
        "../envs/report.yaml"
    params:
        reference=EXPERIMENT.reference,
    script:
        "../workflow/scripts/plots.py"
