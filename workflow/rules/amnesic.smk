# Stage 3d: amnesic probing. Each factor's linearly decodable subspace removed from the
# reference representation's features (iterative nullspace projection), the reference's
# class heads tested unchanged on what is left, against as many random directions
# removed: does the class head use what the layer holds of the factor? One job per
# (dataset, backbone, group of runs) for every probe's heads; a table over all of them
# and a figure per (dataset, backbone, probe).


rule amnesic:
    input:
        unpack(
            lambda wildcards: stages.amnesic.heads(
                EXPERIMENT,
                wildcards.dataset,
                wildcards.backbone,
                tuple(parse_run_label(wildcards.run)),
            )
        ),
        features=lambda wildcards: EXPERIMENT.feature_store(
            wildcards.dataset, wildcards.backbone, EXPERIMENT.reference
        ),
        data=LAYOUT.data_store,
    output:
        rows=LAYOUT.result(stages.amnesic.JOB),
        predictions=LAYOUT.result(stages.amnesic.PREDICTIONS),
    log:
        LAYOUT.log("amnesic", "{dataset}/{backbone}/run{run}"),
    priority: 1  # a long 1-thread job: started early, beside the train jobs
    conda:
        "../envs/report.yaml"
    resources:
        mem_mb=train_mem_mb,
        runtime=light_runtime,
    params:
        store=reference_params,
        data=data_params,
        factors=lambda wildcards: stages.amnesic.factors(EXPERIMENT, wildcards.dataset),
        iterations=EXPERIMENT.amnesic["iterations"],
        probes=sorted(EXPERIMENT.probes),
    script:
        "../scripts/amnesic.py"


rule amnesic_table:
    input:
        rows=[
            stages.amnesic.job_file(EXPERIMENT, job)
            for job in stages.amnesic.jobs(EXPERIMENT)
        ],
        predictions=[
            stages.amnesic.job_file(EXPERIMENT, job, stages.amnesic.PREDICTIONS)
            for job in stages.amnesic.jobs(EXPERIMENT)
        ],
    output:
        report(
            LAYOUT.table(stages.amnesic.TABLE),
            caption="../report/amnesic_table.rst",
            category="Tables",
        ),
    log:
        LAYOUT.log("amnesic_table"),
    localrule: True
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/amnesic_table.py"


# every (dataset, backbone, probe)'s figure in one job: they all follow the table
AMNESIC_KEYS = stages.amnesic.figure_keys(EXPERIMENT)


rule amnesic_plot:
    input:
        rules.amnesic_table.output[0],
    output:
        figure_reports(
            AMNESIC_KEYS,
            "amnesic",
            "../report/amnesic.rst",
            "Amnesic probing",
        ),
    log:
        LAYOUT.log("amnesic_plot"),
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        figures=[list(key) for key in AMNESIC_KEYS],
    script:
        "../scripts/amnesic_plot.py"
