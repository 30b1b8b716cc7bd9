# Stage 3c: reliance. The heads trained on the reference representation (its train job's
# heads file), tested on each other representation's features of the same test images,
# as each `transfer` variant says (as trained, or re-standardised with the tested store's
# own train statistics): one cheap job per train job of another representation (same
# runs) writing every variant's files, no feature recomputed and no probe retrained. Rows
# and predictions as a train job's, with train_representation the reference and the
# variant in their transfer column.
# with no variant the rule is never planned, but needs an output to be a rule
TRANSFERS = list(EXPERIMENT.transfer) or list(TRANSFER_VARIANTS[:1])


rule transfer:
    input:
        heads=reference_heads,
        features=LAYOUT.feature_store,
        data=LAYOUT.data_store,
    output:
        tables=expand(LAYOUT.transfer_table, transfer=TRANSFERS, allow_missing=True),
        predictions=expand(
            LAYOUT.transfer_predictions, transfer=TRANSFERS, allow_missing=True
        ),
        predictions_tables=expand(
            LAYOUT.transfer_predictions_table, transfer=TRANSFERS, allow_missing=True
        ),
    log:
        LAYOUT.run_log("transfer"),
    conda:
        "../envs/train.yaml"
    resources:
        mem_mb=train_mem_mb,
        runtime=light_runtime,
    params:
        store=feature_params,
        data=data_params,
        variants=TRANSFERS,
    script:
        "../scripts/transfer.py"
