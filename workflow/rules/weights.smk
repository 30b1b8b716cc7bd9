# Stage 1b: pretrained weights that are not in their library's cache yet (torch hub for
# torchvision, the Hugging Face cache for timm, transformers and open_clip) are fetched
# once, in the main process (a local rule: compute nodes never download). A checkpoint:
# after it, Snakemake plans the feature jobs again, with the files' hash in their spec.


checkpoint fetch_weights:
    output:
        temp(LAYOUT.weights_fetched),
    log:
        LAYOUT.log("fetch_weights", "{backbone}"),
    localrule: True
    conda:
        "../envs/features.yaml"
    params:
        spec=backbone_params,
        allowed=EXPERIMENT.fetch_weights,
    script:
        "../scripts/fetch_weights.py"
