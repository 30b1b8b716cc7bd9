# Stage 5b: each results table the experiment writes also as an HTML page, which the
# report shows as a table (a csv it only offers as a download).


rule table_page:
    input:
        os.path.join(EXPERIMENT.results_dir, "{table}.csv"),
    output:
        report(LAYOUT.table_page, category="Tables", labels={"table": "{table}"}),
    log:
        LAYOUT.log("table_page", "{table}"),
    conda:
        "../envs/report.yaml"
    script:
        "../workflow/scripts/table_page.py"
