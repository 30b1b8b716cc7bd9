# visual-ablation: layer-wise visual ablation experiments.
# Stages (one rule file each): (fetch_stimuli) data -> (fetch_weights) -> features (+ inventory) -> train ->
# transfer, amnesic; similarity -> report, shape bias.
# Where things go (src/visual_ablation/): a new source is one class in data/procedural.py or
# data/files.py, a backbone source one module in features/backbones/; a new artefact's path is one
# template in spec/layout.py; a new config key is the schema plus vocabulary.py or
# spec/config.py.
import os
import re
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")

# This file's own folder: the workflow's, also where it is used as a module of another
# workflow (workflow.basedir is then the other's). The package lives in its src/ (scripts
# add it to their path too, so conda envs need only third-party packages); a module read
# from GitHub imports the installed package instead (docs/operations.md).
HERE = str(workflow.current_basedir)
sys.path.insert(0, os.path.join(HERE, "src"))


configfile: "config/config.yaml"


from visual_ablation.features import backbones
from visual_ablation.spec import layout, plans, preflight, resources
from visual_ablation.plumbing.canonical import canonical
from visual_ablation.spec.config import ConfigError
from visual_ablation.spec.layout import parse_run_label
from visual_ablation.spec.plans.jobs import RunJob
from visual_ablation.vocabulary import TRANSFER_VARIANTS

SCHEMA = os.path.join(HERE, "workflow", "schemas", "config.schema.yaml")
# every check before any job: duplicate keys, the schema (which fills defaults), names,
# and in the main process the directories and the backbones (see spec/preflight.py)
try:
    EXPERIMENT = preflight.experiment(
        config,
        workflow.configfiles,
        validate=lambda checked: validate(checked, SCHEMA),
        main_process=workflow.is_main_process,
        schema=SCHEMA if os.path.exists(SCHEMA) else None,
    )
except ConfigError as err:
    raise WorkflowError(f"Invalid config: {err}") from None


report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/weights.smk"
include: "rules/features.smk"
include: "rules/inventory.smk"
include: "rules/train.smk"
include: "rules/transfer.smk"
include: "rules/similarity.smk"
include: "rules/report.smk"
include: "rules/shape_bias.smk"
include: "rules/amnesic.smk"
include: "rules/tables.smk"


# cheap table and figure jobs run in the main process, not as cluster jobs
localrules:
    all,
    fetch_weights,
    fetch_stimuli,
    feature_table,
    aggregate,
    plots,
    representation_examples,
    similarity_table,
    similarity_plot,
    shape_bias,
    shape_bias_plot,
    decision_shape_bias_plot,
    amnesic_table,
    amnesic_plot,
    table_page,


rule all:
    default_target: True
    input:
        plans.targets(EXPERIMENT),
