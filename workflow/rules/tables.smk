# Stage 5b: each results table the experiment writes also as an HTML page, which the
# report shows as a table (a csv it only offers as a download).


rule table_page:
    input:
        LAYOUT.table("{table}"),
    output:
        report(LAYOUT.table_page, category="Tables", labels={"table": "{table}"}),
    log:
        LAYOUT.log("table_page", "{table}"),
    localrule: True
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/table_page.py"


# The report's landing text: each planned stage's paragraph (plan/stages: describe), so it
# names only what this experiment runs.
rule report_text:
    output:
        stages.tables.landing(EXPERIMENT),
    log:
        LAYOUT.log("report_text"),
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        text=stages.description(EXPERIMENT),
    script:
        "../scripts/report_text.py"
