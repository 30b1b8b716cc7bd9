# Stage 4: every run row in one tidy table, the summary over runs (CIs, differences to
# the reference representation tested on the test images, Holm), and the figures of the
# report, with one that shows what each representation does to a few images.


rule aggregate:
    input:
        tables=EXPERIMENT.run_tables(),
        predictions=EXPERIMENT.all_run_predictions(),
    output:
        metrics=METRICS,
        summary=SUMMARY,
    log:
        os.path.join(LOGS, "aggregate.log"),
    conda:
        "../envs/report.yaml"
    params:
        reference=EXPERIMENT.reference,
        resampled=EXPERIMENT.split["resample"],
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


rule representation_examples:
    input:
        data=os.path.join(CACHE, "data", "{dataset}.zarr"),
    output:
        report(
            os.path.join(FIGURES, "{dataset}", "representations.png"),
            caption="../workflow/report/representations.rst",
            category="Representations",
            subcategory="{dataset}",
        ),
    log:
        os.path.join(LOGS, "representation_examples", "{dataset}.log"),
    conda:
        "../envs/features.yaml"
    params:
        data=data_spec,
        # name -> spec pairs: the figure's columns in config order
        representations=canonical(list(EXPERIMENT.representations.items())),
    script:
        "../workflow/scripts/representation_examples.py"
