# What the rules share: where files go (layout.py's templates), the wildcards, each rule's
# params (the canonical spec of what its output means) and its cluster resources.
LAYOUT = EXPERIMENT.layout


wildcard_constraints:
    dataset="|".join(map(re.escape, EXPERIMENT.datasets)),
    backbone="|".join(map(re.escape, EXPERIMENT.backbones)),
    representation="|".join(map(re.escape, EXPERIMENT.representations)),
    probe="|".join(map(re.escape, EXPERIMENT.probes)),
    target="|".join(
        map(re.escape, sorted({t for ts in EXPERIMENT.targets.values() for t in ts}))
    ),
    run=r"\d+(-\d+)?",
    transfer="|".join(map(re.escape, TRANSFER_VARIANTS)),
    table="|".join(stages.table_names()),


# params: one canonical string per spec (Snakemake re-plans a job whose params changed)
def data_params(wildcards):
    return EXPERIMENT.params("data", wildcards.dataset)


def feature_params(wildcards):
    return EXPERIMENT.params(
        "feature", wildcards.dataset, wildcards.backbone, wildcards.representation
    )


def reference_params(wildcards):
    """The reference representation's store spec, for jobs that compare with it."""
    return EXPERIMENT.params(
        "feature", wildcards.dataset, wildcards.backbone, EXPERIMENT.reference
    )


def probe_params(wildcards):
    """A probe config's spec: changing one probe re-plans only its train jobs."""
    return EXPERIMENT.params("probe", wildcards.probe)


SPLIT_PARAMS = canonical(
    EXPERIMENT.split
)  # train jobs draw their splits from the labels


def reference_heads(wildcards):
    """The heads file of the reference's train job of the same runs."""
    w = wildcards
    runs = tuple(parse_run_label(w.run))
    job = RunJob(w.dataset, w.backbone, EXPERIMENT.reference, w.target, w.probe, runs)
    return job.file(LAYOUT.run_heads)


def stimuli_inputs(wildcards):
    """A dataset that fetches its files (Geirhos' stimuli, `fetch`) waits for them."""
    if EXPERIMENT.datasets[wildcards.dataset].get("fetch"):
        return LAYOUT.stimuli_fetched.format(dataset=wildcards.dataset)
    return []


def weights_inputs(wildcards):
    """A checkpoint file given as weights is a file dependency of its feature jobs; a
    library's weights that are not in its cache yet are fetched first, by the
    fetch_weights checkpoint (after it, Snakemake asks again: the feature spec then has
    the files' hash)."""
    spec = EXPERIMENT.backbones[wildcards.backbone]
    if backbones.is_checkpoint_path(spec["weights"]):
        return [spec["weights"]]
    if backbones.needs_fetch(spec):
        return checkpoints.fetch_weights.get(backbone=wildcards.backbone).output[0]
    return []


def feature_table_params(wildcards):
    """Every store of the experiment with its spec, sorted: the same stores written in
    another key order are the same params."""
    stores = [
        {
            "dataset": d,
            "backbone": b,
            "representation": r,
            "path": EXPERIMENT.feature_store(d, b, r),
            "spec": EXPERIMENT.feature_spec(d, b, r),
        }
        for d, b, r in stages.features.jobs(EXPERIMENT)
    ]
    return canonical(sorted(stores, key=lambda store: store["path"]))


def backbone_params(wildcards):
    return canonical(EXPERIMENT.backbones[wildcards.backbone])


# Cluster requests (mem_mb, runtime in minutes) that grow with the dataset: see
# src/visual_ablation/plan/resources.py. Evaluated when a job is submitted, so train and
# feature jobs see the real image count and feature width of the stores they read.
def data_threads(wildcards):
    return resources.data_threads(
        EXPERIMENT.data_spec(wildcards.dataset), config["data"]["threads"]
    )


def data_mem_mb(wildcards, attempt, threads):
    return resources.data_mem_mb(
        EXPERIMENT.data_spec(wildcards.dataset), attempt, threads
    )


def data_runtime(wildcards, attempt):
    return resources.data_runtime(EXPERIMENT.data_spec(wildcards.dataset), attempt)


def _feature_spec(wildcards):
    return EXPERIMENT.feature_spec(
        wildcards.dataset, wildcards.backbone, wildcards.representation
    )


def features_mem_mb(wildcards, attempt):
    return resources.features_mem_mb(
        _feature_spec(wildcards), config["extraction"]["batch_size"], attempt
    )


def features_runtime(wildcards, input, attempt):
    return resources.features_runtime(_feature_spec(wildcards), input.data, attempt)


def train_mem_mb(wildcards, input, attempt):
    return resources.train_mem_mb(
        EXPERIMENT.data_spec(wildcards.dataset), input.data, input.features, attempt
    )


def train_runtime(wildcards, input, attempt):
    return resources.train_runtime(
        EXPERIMENT.data_spec(wildcards.dataset),
        EXPERIMENT.probe_spec(wildcards.probe),
        len(parse_run_label(wildcards.run)),
        input.data,
        input.features,
        attempt,
    )


def light_mem_mb(wildcards, attempt):
    return resources.light_mem_mb(attempt)


def light_runtime(wildcards, attempt):
    return resources.light_runtime(attempt)


def warn_constant_overrides():
    """A constant mem_mb or runtime from set-resources (profile or command line) replaces a
    cluster rule's own request, which grows with attempt: say so once, in the main
    process, after every rule is defined."""
    if not workflow.is_main_process:
        return
    overrides = workflow.resource_settings.overwrite_resources
    given = {
        rule_name: {key: getattr(value, "raw", value) for key, value in dict(v).items()}
        for rule_name, v in overrides.items()
    }
    # rules declared local run in the snakemake process, never on a node
    local = workflow._localrules
    cluster = {r.name for r in workflow.rules if not (r.norun or r.name in local)}
    for warning in resources.constant_overrides(given, cluster):
        logger.warning(warning)


# report() under another name: `report(` opening a line is read as the directive
from snakemake.io import report as in_report


def figure_reports(keys, figure, caption, category):
    """One figure file per (dataset, backbone, probe) of `keys`, each in the report with
    its own labels: the figures of one table, drawn by one job (they all follow it)."""
    return [
        in_report(
            layout.fill(LAYOUT.figure, dataset=d, backbone=b, probe=p, figure=figure),
            caption=caption,
            category=category,
            subcategory=d,
            labels={"backbone": b, "probe": p},
        )
        for d, b, p in keys
    ]
