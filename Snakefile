# visual-ablation: layer-wise visual ablation experiments.
# Stages: one module each in src/visual_ablation/plan/stages/ and one rule file each in
# rules/, found and ordered by what each reads (plan/stages/__init__.py). Where things go: a
# new analysis is a plan module, its rule file, script and captions (README "Where a change
# goes"); a new source is one class in data/procedural.py or
# data/files.py, a backbone source one module in features/backbones/; a new config key is the
# schema plus vocabulary.py or plan/config.py.
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


from visual_ablation import layout
from visual_ablation.features import backbones
from visual_ablation.layout import parse_run_label
from visual_ablation.plan import preflight, resources, stages
from visual_ablation.plan.config import ConfigError
from visual_ablation.plan.stages.jobs import RunJob
from visual_ablation.plumbing.canonical import canonical
from visual_ablation.vocabulary import TRANSFER_VARIANTS

SCHEMA = os.path.join(HERE, "workflow", "schemas", "config.schema.yaml")
# every check before any job: duplicate keys, the schema (which fills defaults), names,
# and in the main process the directories and the backbones (see plan/preflight.py)
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


# the landing text: what the plan holds, written by the report_text job (rules/tables.smk);
# a module read from a remote source leaves the report's text to the workflow using it
if os.path.isdir(HERE):

    report: os.path.abspath(stages.tables.landing(EXPERIMENT))


include: "rules/common.smk"


# every stage's rule file, in stage order: a stage is a module of plan/stages and its
# rules/{name}.smk (plan/stages/__init__.py), found, not listed
for stage in stages.STAGES:

    include: f"rules/{stages.name(stage)}.smk"


rule all:
    default_target: True
    input:
        stages.targets(EXPERIMENT),
    localrule: True
