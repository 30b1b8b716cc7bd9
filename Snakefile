# visual-ablation: layer-wise visual ablation experiments.
# Stages (one rule file each): data -> features (+ inventory) -> train -> report.
import os
import re
import sys

from snakemake.utils import min_version, validate

min_version("9.0")

# The package lives in src/ (scripts add it to their path too, so conda envs need
# only third-party packages).
sys.path.insert(0, os.path.join(workflow.basedir, "src"))


configfile: "config/config.yaml"


# YAML keeps the last of a key written twice; refuse that before validating what is left
from snakemake.exceptions import WorkflowError
from visual_ablation.config import ConfigError, check_duplicate_keys

try:
    for path in workflow.configfiles:
        check_duplicate_keys(path)
except ConfigError as err:
    raise WorkflowError(f"Invalid config: {err}") from None


validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/features.smk"
include: "rules/inventory.smk"
include: "rules/train.smk"
include: "rules/report.smk"


# cheap table and figure jobs run in the main process, not as cluster jobs
localrules:
    all,
    feature_table,
    aggregate,
    plots,
    representation_examples,


rule all:
    default_target: True
    input:
        FEATURE_TABLE,
        METRICS,
        SUMMARY,
        figure_paths("accuracy_by_layer"),
        figure_paths("difference_heatmap"),
        representation_figures(),
