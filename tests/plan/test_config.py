"""Config resolution: defaults, names, specs (no Snakemake needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from visual_ablation import vocabulary
from visual_ablation.plan import stages
from visual_ablation.plan.config import ConfigError, resolve
from visual_ablation.plan.preflight import check_backbones
from visual_ablation.vocabulary import PROBE_DEFAULTS

REPO = Path(__file__).resolve().parents[2]


def base(**kw):
    config = {
        "datasets": {"d": {"source": "sklearn-digits"}},
        "representations": ["original"],
        "backbones": {"p": {"model": "pixels"}},
        "split": {"val": 0.15, "test": 0.2, "seed": 0},
    }
    config.update(kw)
    return config


def test_default_config_resolves_and_its_layers_exist():
    from visual_ablation.data.procedural import ShapesSource

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.setdefault("split", {"val": 0.15, "test": 0.2, "seed": 0})
    exp = resolve(config)
    check_backbones(exp)
    # shapes: 3 backbones x 8 representations + the untrained one's original; conflict: 4
    # backbones x original
    assert len(stages.features.jobs(exp)) == 3 * 8 + 1 + 4 * 1
    assert exp.datasets["shapes"]["image_size"] == 64
    assert exp.targets == {
        "shapes": ["class", "control"],
        "conflict": ["class", "shape", "cue", "colour"],
    }
    assert exp.transfer == ("as-trained", "restandardised")
    assert exp.untrained_twin("effnet") == "untrained"
    assert exp.untrained_twin("untrained") is None and exp.untrained_twin("pixels") is None
    # train jobs: shapes 25 stores x 2 probes (+ control on its 4 originals), conflict 4
    # stores x 4 targets x 2 probes, each for the 3 runs; transfer: shapes' 21 other
    # stores x 2 probes, each job writing the 2 variants; amnesic: shapes' 4 originals
    # (conflict: none)
    assert len(stages.train.jobs(exp)) == (25 + 4) * 2 + 4 * 4 * 2
    assert len(stages.transfer.jobs(exp)) == 21 * 2
    assert len(stages.transfer.variant_jobs(exp)) == 21 * 2 * 2
    assert len(stages.amnesic.jobs(exp)) == 4
    assert stages.amnesic.factors(exp, "shapes") == list(ShapesSource.factor_names)
    assert stages.amnesic.factors(exp, "conflict") == []
    assert len(stages.report.run_tables(exp)) == len(stages.train.jobs(exp)) + len(
        stages.transfer.variant_jobs(exp)
    )
    assert exp.reference == "original"
    assert stages.shape_bias.datasets(exp) == ["conflict"]
    assert len(stages.shape_bias.figures(exp)) == 2  # conflict x 2 probes


def test_probe_defaults_fill_every_key_and_the_reference_follows_kind():
    exp = resolve(base(probes={"lin": {"hidden": 0}, "mlp": {"hidden": 8, "lr": 0.01}}))
    assert exp.probes["lin"] == PROBE_DEFAULTS
    assert exp.probes["mlp"] == {**PROBE_DEFAULTS, "hidden": 8, "lr": 0.01}
    assert exp.probe_spec("mlp")["name"] == "mlp"
    exp = resolve(
        base(representations={"orig": {"kind": "original"}, "gray": {"kind": "grayscale"}})
    )
    assert exp.reference == "orig"
    assert resolve(base(representations=["grayscale"])).reference is None


def test_every_default_is_read_from_the_schema(monkeypatch):
    """Defaults live once, in the schema: change one there and the resolved experiment
    follows (a default also written in the package would not)."""
    top = vocabulary.SCHEMA["properties"]
    probe, backbone = (vocabulary.SCHEMA["$defs"][d]["properties"] for d in ("probe", "backbone"))
    changed = [
        (top["runs"], 7),
        (top["results_dir"], "elsewhere"),
        (top["fetch_weights"], False),
        (top["transfer"], ["as-trained"]),
        (top["split"]["properties"]["val"], 0.3),
        (top["amnesic"]["properties"]["iterations"], 5),
        (top["training"]["properties"]["runs_per_job"], 2),
        (probe["lr"], 0.05),
        (backbone["seed"], 3),
    ]
    for spec, value in changed:
        monkeypatch.setitem(spec, "default", value)
    vocabulary._filling_validator.cache_clear()
    try:
        config = base(probes={"lin": {"hidden": 0}}, backbones={"r": {"model": "resnet18"}})
        del config["split"]
        exp = resolve(config)
    finally:
        monkeypatch.undo()
        vocabulary._filling_validator.cache_clear()
    assert (exp.runs, exp.results_dir, exp.fetch_weights) == (7, "elsewhere", False)
    assert exp.transfer == ("as-trained",) and exp.split["val"] == 0.3
    assert exp.amnesic["iterations"] == 5 and exp.runs_per_job == 2
    assert exp.probes["lin"]["lr"] == 0.05 and exp.backbones["r"]["seed"] == 3
    assert resolve(config).runs == 10  # the schema as shipped


def test_cache_dir_defaults_to_results_dir_and_can_move():
    exp = resolve(base(results_dir="out"))
    assert exp.feature_store("d", "p", "original") == "out/features/d/p/original.zarr"
    exp = resolve(base(results_dir="out", cache_dir="/fast/cache"))
    assert exp.data_store("d") == "/fast/cache/data/d.zarr"


def test_data_and_feature_specs_leave_out_the_split_and_track_what_matters():
    a = resolve(base()).feature_spec("d", "p", "original")
    other_split = resolve(base(split={"val": 0.1, "test": 0.2, "seed": 5, "resample": False}))
    assert other_split.feature_spec("d", "p", "original") == a
    assert other_split.data_spec("d") == resolve(base()).data_spec("d")
    assert other_split.split == {"val": 0.1, "test": 0.2, "seed": 5, "resample": False}
    assert resolve(base()).split["resample"] is True  # the default
    c = resolve(base(backbones={"p": {"model": "pixels", "image_size": 8}}))
    assert c.feature_spec("d", "p", "original") != a


def test_representation_listed_twice_is_refused():
    with pytest.raises(ConfigError, match="listed twice: original"):
        resolve(base(representations=["original", "original"]))


def test_path_source_without_path_is_refused():
    with pytest.raises(ConfigError, match="'datasets.x.path': source npz needs a path"):
        resolve(base(datasets={"x": {"source": "npz"}}))


def test_missing_checkpoint_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="backbones.r.weights': checkpoint .* does not exist"):
        resolve(base(backbones={"r": {"model": "resnet18", "weights": str(tmp_path / "x.pt")}}))


def test_backbone_check_runs_once_per_backbone_definition(tmp_path, monkeypatch):
    from visual_ablation.plan import preflight as config_module

    calls = []
    monkeypatch.setattr(config_module, "check_backbones", lambda exp: calls.append(exp))
    record = str(tmp_path / ".snakemake" / "checked.json")
    exp = resolve(base())
    assert config_module.check_backbones_once(exp, record) is True
    assert config_module.check_backbones_once(exp, record) is False  # remembered
    changed = base(backbones={"p": {"model": "pixels", "image_size": 8}})
    assert config_module.check_backbones_once(resolve(changed), record) is True
    assert len(calls) == 2

    def failing(exp):
        raise ConfigError("config key 'backbones.x.layers': unknown layer")

    monkeypatch.setattr(config_module, "check_backbones", failing)
    changed["backbones"]["p"]["image_size"] = 9
    for _ in range(2):  # a failed check is not remembered: it fails every time
        with pytest.raises(ConfigError):
            config_module.check_backbones_once(resolve(changed), record)


def test_runs_per_job_groups_runs_into_aligned_job_tables():
    exp = resolve(base(runs=7, training={"runs_per_job": 3}))
    assert stages.train.run_groups(exp) == [[0, 1, 2], [3, 4, 5], [6]]
    names = [Path(p).name for p in stages.report.run_tables(exp)]
    assert names == ["run0-2.csv", "run3-5.csv", "run6.csv"] * 2  # x 2 default probes
    more = resolve(base(runs=9, training={"runs_per_job": 3}))
    # raising runs keeps every full group's table: only new groups are new jobs
    assert set(stages.report.run_tables(exp)) - set(stages.report.run_tables(more)) == {
        p for p in stages.report.run_tables(exp) if p.endswith("run6.csv")
    }
    assert stages.train.run_groups(resolve(base(runs=3, training={"device": "cpu"}))) == [
        [0],
        [1],
        [2],
    ]


@pytest.mark.parametrize(
    "training,gpus,groups",
    [
        ({}, "", [[0], [1], [2]]),  # auto on a machine without a GPU: a job per run
        ({}, "0", [[0, 1, 2]]),  # auto where a GPU is visible: every run in one job
        ({"device": "cuda"}, "", [[0, 1, 2]]),  # train jobs on a GPU, planned elsewhere
        ({"device": "cpu"}, "0", [[0], [1], [2]]),
        ({"runs_per_job": 2}, "0", [[0, 1], [2]]),  # a number is kept as given
    ],
)
def test_runs_per_job_auto_puts_every_run_in_one_job_on_a_gpu(monkeypatch, training, gpus, groups):
    monkeypatch.setenv("VISUAL_ABLATION_GPUS", gpus)
    assert stages.train.run_groups(resolve(base(runs=3, training=training))) == groups
    from visual_ablation.layout import parse_run_label, run_label

    for runs in ([4], [0, 1, 2], [10, 11]):
        assert parse_run_label(run_label(runs)) == runs


def test_a_run_path_parses_back_to_the_model_and_runs_that_filled_it(tmp_path):
    """parse_run_path is the inverse of every run template: what the analyses read a
    model's key from."""
    from visual_ablation import layout

    paths = layout.Layout(str(tmp_path / "results"), str(tmp_path / "cache"))
    values = dict(dataset="shapes", backbone="effnet", target="class", probe="mlp")
    for template, trained_on, transfer in (
        (paths.run_table, "grayscale", "none"),
        (paths.run_predictions, "grayscale", "none"),
        (paths.run_heads, "grayscale", "none"),
        (paths.transfer_table, "original", "as-trained"),
        (paths.transfer_predictions, "original", "restandardised"),
    ):
        path = layout.fill(
            template, representation="grayscale", run="3-5", transfer=transfer, **values
        )
        key, runs = layout.parse_run_path(path, reference="original")
        model = ("shapes", "effnet", "grayscale", trained_on, transfer, "class", "mlp")
        assert key == layout.ModelKey(*model)
        assert runs == [3, 4, 5]
    with pytest.raises(ValueError, match="not a train or transfer job"):
        layout.parse_run_path(paths.feature_table, reference="original")


def test_an_unwritable_results_or_cache_dir_is_refused_before_anything_is_created(
    tmp_path, monkeypatch
):
    from visual_ablation.plan.preflight import check_writable

    check_writable(str(tmp_path / "new" / "deeper"), "cache_dir")  # creatable: fine
    assert not (tmp_path / "new").exists()  # and nothing was created
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(ConfigError, match=r"config key 'cache_dir': .*afile.* is a file"):
        check_writable(str(afile / "cache"), "cache_dir")
    monkeypatch.setattr("os.access", lambda path, mode: False)  # as a non-root user would see
    with pytest.raises(ConfigError, match=r"config key 'results_dir': .* is not writable"):
        check_writable(str(tmp_path / "results"), "results_dir")


def test_the_schema_agrees_with_the_registries_and_vocabularies():
    """One place per fact: the schema's enums are the package's registries (its defaults
    are read from it: test_every_default_is_read_from_the_schema)."""
    from visual_ablation import vocabulary
    from visual_ablation.data import sources

    schema = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "workflow/schemas/config.schema.yaml").read_text()
    )
    defs = schema["$defs"]
    assert sorted(defs["dataset"]["properties"]["source"]["enum"]) == sorted(sources.SOURCES)
    # every probe key has a default (a probe config is complete after filling)
    assert set(vocabulary.PROBE_DEFAULTS) == set(defs["probe"]["properties"])
    backbone = defs["backbone"]["properties"]
    assert backbone["normalization"]["enum"] == list(vocabulary.NORMALIZATIONS)
    assert backbone["pooling"]["enum"] == list(vocabulary.POOLINGS)
    assert defs["name"]["pattern"] == f"^{vocabulary.NAME_PATTERN}$"
    params = set(defs["representation_params"]["properties"]) - {"kind"}
    used = {key for defaults in vocabulary.REPRESENTATION_DEFAULTS.values() for key in defaults}
    assert params == used
    transfer = schema["properties"]["transfer"]
    assert transfer["default"] == list(vocabulary.TRANSFER_VARIANTS)  # every variant


def test_config_stage_modules_import_without_torch():
    """The Snakefile resolves and checks the config at parse time, for every snakemake
    call and every job: those modules (and the registries they ask) must not import
    torch, which costs seconds."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from visual_ablation.plan import config, preflight, resources, stages\n"
        "from visual_ablation import layout\n"
        "from visual_ablation.features import backbones\n"
        "from visual_ablation.data import sources\n"
        "from visual_ablation import vocabulary\n"
        "config.resolve({'datasets': {'d': {'source': 'sklearn-digits'}},"
        " 'representations': ['original'],"
        " 'backbones': {'e': {'model': 'efficientnet_lite0'}, 'r': {'model': 'resnet18'}}})\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_targets_name_what_the_source_can_label():
    shapes = {"source": "synthetic-shapes", "n": 100, "targets": ["class", "colour"]}
    exp = resolve(base(datasets={"s": shapes}, probes={"linear": {}}, runs=1))
    assert exp.targets == {"s": ["class", "colour"]}
    assert "targets" not in exp.data_spec("s")  # a new target keeps the data store
    assert [job.target for job in stages.train.jobs(exp)] == ["class", "colour"]
    with pytest.raises(ConfigError, match=r"datasets\.s\.targets.*'hue'.*colour, background"):
        resolve(base(datasets={"s": {**shapes, "targets": ["hue"]}}))
    with pytest.raises(
        ConfigError, match=r"datasets\.d\.targets.*'colour'.*Valid values: class, control\."
    ):
        resolve(base(datasets={"d": {"source": "sklearn-digits", "targets": ["colour"]}}))
    conflict = {"source": "synthetic-cue-conflict", "n": 100, "targets": ["texture"]}
    with pytest.raises(ConfigError, match="list class among its targets"):
        resolve(base(datasets={"c": conflict}))


def test_cue_conflict_keys_are_its_own_and_filled_in_its_spec():
    exp = resolve(base(datasets={"c": {"source": "synthetic-cue-conflict", "n": 100}}))
    spec = exp.data_spec("c")
    assert (spec["cue"], spec["agreement"], spec["conflict"]) == ("texture", 1.0, 0.2)
    with pytest.raises(ConfigError, match=r"datasets\.d\.cue': only synthetic-cue-conflict"):
        resolve(base(datasets={"d": {"source": "sklearn-digits", "cue": "colour"}}))


def test_a_dataset_may_compute_a_subset_of_the_representations():
    datasets = {
        "a": {"source": "sklearn-digits"},
        "b": {"source": "sklearn-digits", "representations": ["grayscale", "original"]},
    }
    exp = resolve(base(datasets=datasets, representations=["original", "edges", "grayscale"]))
    assert [(d, r) for d, _, r in stages.features.jobs(exp)] == [
        ("a", "original"),
        ("a", "edges"),
        ("a", "grayscale"),
        ("b", "original"),  # the experiment's order
        ("b", "grayscale"),
    ]
    assert "representations" not in exp.data_spec("b")
    with pytest.raises(ConfigError, match=r"datasets\.b\.representations.*'blur'"):
        resolve(base(datasets={"b": {**datasets["b"], "representations": ["blur"]}}))


def test_a_given_split_gets_the_plain_interval_over_runs(tmp_path):
    """Runs of a dataset with `split: given` share their test set (the data's own), so its
    summary uses the plain t over runs, not the corrected resampled t of drawn splits."""
    for part in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / "given" / part / cls).mkdir(parents=True)
            (tmp_path / "given" / part / cls / "0.png").write_bytes(b"")
    exp = resolve(
        base(
            datasets={
                "digits": {"source": "sklearn-digits"},
                "own": {"source": "imagefolder", "path": str(tmp_path / "given"), "split": "given"},
            },
            split={"val": 0.15, "test": 0.2, "seed": 0, "resample": True},
        )
    )
    assert stages.report.resampled_test_datasets(exp) == ["digits"]


def reference_tables(text: str) -> dict[str, dict[str, str]]:
    """config/README.md's tables, by the section above them ("" before the first): the
    first column's name (unquoted) -> the second column as written."""
    tables: dict[str, dict[str, str]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:].strip().strip("`")
        elif line.startswith("| `"):
            name, second = (cell.strip() for cell in line.strip("|").split("|")[:2])
            tables.setdefault(section, {})[name.strip("`")] = second
    return tables


def written_default(cell: str):
    """A default cell that is one quoted literal (`0.15`, `[class]`) as YAML reads it;
    None for prose (`the model's own`, `= results_dir`)."""
    if cell.count("`") == 2 and cell.startswith("`") and cell.endswith("`"):
        return yaml.safe_load(cell.strip("`"))
    return None


def test_the_config_reference_states_the_defaults_read_from_the_schema():
    """config/README.md writes each default for readers; it must say what the schema (and
    the sources' and representations' registries) hold, and list every schema default."""
    from visual_ablation.data.sources import SOURCES
    from visual_ablation.vocabulary import REPRESENTATION_DEFAULTS, schema_defaults

    tables = reference_tables((REPO / "config" / "README.md").read_text())
    top = vocabulary.SCHEMA["properties"]
    expected = {
        "": {
            **{
                f"{key}.{sub}": value
                for key in top
                if "properties" in top[key]
                for sub, value in schema_defaults(top[key]).items()
            },
            **{
                key: top[key]["default"]
                for key in top
                if "default" in top[key] and "properties" not in top[key]
            },
        },
        "backbones.<name>": vocabulary.BACKBONE_DEFAULTS,
        "probes.<name>": vocabulary.PROBE_DEFAULTS,
    }
    del expected[""]["probes"]  # written as prose: two probes with their hidden sizes
    for section, defaults in expected.items():
        for key, value in defaults.items():
            assert key in tables[section], f"config/README.md ({section or 'top'}) lacks {key}"
            assert written_default(tables[section][key]) == value, (section, key)
    for key, cell in tables["datasets.<name>"].items():
        given = {str(s.defaults[key]) for s in SOURCES.values() if key in s.defaults}
        if given and written_default(cell) is not None:
            assert given == {str(written_default(cell))}, key
    for name, cell in tables["representations"].items():
        written = yaml.safe_load("{" + cell.strip("`") + "}") if cell != "-" else {}
        assert written == REPRESENTATION_DEFAULTS[name], name
