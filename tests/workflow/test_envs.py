"""workflow/envs/*.yaml (for conda users) pin exactly what pyproject.toml pins."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "workflow"


def env_pins(env: Path) -> list[str]:
    """An env file's pip requirements (`name==version`)."""
    spec = yaml.safe_load(env.read_text())
    return next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))


def project_pins() -> dict[str, str]:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {}
    for requirement in meta["dependencies"]:
        name, _, version = requirement.partition("==")
        assert version, f"pyproject dependency {requirement!r} is not pinned with =="
        pins[name.lower()] = version
    return pins


@pytest.mark.parametrize("env", sorted((WORKFLOW / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_env_pins_match_the_project(env):
    pins = project_pins()
    spec = yaml.safe_load(env.read_text())
    assert "python=3.11" in spec["dependencies"]
    for requirement in env_pins(env):
        name, _, version = requirement.partition("==")
        assert name.lower() in pins, f"{env.name}: {name} is not a project dependency"
        assert version == pins[name.lower()], (
            f"{env.name}: {name}=={version}, project pins {pins[name.lower()]}"
        )


def test_every_rule_names_an_existing_env(tmp_path):
    """Each rule of every rule file has a `conda:` env, and the file exists; every one of
    them has its script's imports checked against its env (rule_envs)."""
    envs: dict[str, str | None] = {}
    for rule_file in (WORKFLOW / "rules").glob("*.smk"):
        rule = None
        for line in rule_file.read_text().splitlines():
            found = re.match(r"(?:checkpoint|rule) (\w+):", line)
            if found:
                rule = found.group(1)
                envs[rule] = None
            elif rule and line.strip().startswith('"../envs/'):
                envs[rule] = line.strip().strip('"')
    # the parse found the rules Snakemake finds (but `all`, the Snakefile's, with no job),
    # asked with one bundled backbone (the main process checks every backbone named)
    config = tiny_config(
        backbones={"p": {"model": "pixels"}},
        results_dir=str(tmp_path / "results"),
        cache_dir=str(tmp_path / "cache"),
    )
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    listed = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(WORKFLOW / "Snakefile")]
        + ["--list-rules", "--configfile", "config.yaml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    ).stdout.split()
    assert sorted(envs) == sorted(set(listed) - {"all"})
    assert [rule for rule, env in envs.items() if env is None] == []
    for rule, env in envs.items():
        assert (WORKFLOW / "rules" / env).resolve().is_file(), (rule, env)
    assert sorted(rule for rule, _, _ in rule_envs()) == sorted(envs)


def test_data_and_report_stage_modules_import_without_torch():
    """prepare_data and feature_table run in envs/data.yaml, aggregate and plots in
    envs/report.yaml: neither has torch."""
    code = (
        # an import blocker, not sys.modules['torch'] = None: scipy looks torch up there
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch': raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "import visual_ablation.data.preparation, visual_ablation.plumbing.store\n"
        "import visual_ablation.data.data_store, visual_ablation.features.feature_store\n"
        "import visual_ablation.plumbing.logs, visual_ablation.plan.config\n"
        # aggregate and plots run in envs/report.yaml, which has no torch either
        "import visual_ablation.report.tables, visual_ablation.analyses.stats\n"
        "import visual_ablation.report.plots"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def rule_envs() -> list[tuple[str, Path, Path]]:
    """(rule, its conda env file, its script) for every rule with both."""
    found = []
    for rule_file in sorted((WORKFLOW / "rules").glob("*.smk")):
        blocks = re.split(r"^(?:rule|checkpoint) ", rule_file.read_text(), flags=re.M)[1:]
        for block in blocks:
            name = block.split(":", 1)[0]
            env = re.search(r"conda:\s*\n\s*\"([^\"]+)\"", block)
            script = re.search(r"script:\s*\n\s*\"([^\"]+)\"", block)
            if env and script:
                rules = WORKFLOW / "rules"
                found.append((name, (rules / env[1]).resolve(), (rules / script[1]).resolve()))
    return found


def script_imports(script: Path) -> list[str]:
    """Every module a rule's script imports (its visual_ablation modules by full name)."""
    modules = []
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.append(node.module)
            if node.module.split(".")[0] == "visual_ablation":
                # `from visual_ablation.<package> import <module>`: the module too
                package = REPO / "src" / node.module.replace(".", "/")
                modules += [
                    f"{node.module}.{alias.name}"
                    for alias in node.names
                    if (package / f"{alias.name}.py").exists()
                ]
    return modules


def env_distributions(env: Path) -> set[str]:
    """The env's pip pins and everything they install with them (their requirements,
    from the installed metadata), as normalised distribution names."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    todo = [requirement.partition("==")[0] for requirement in env_pins(env)]
    closure: set[str] = set()
    while todo:
        name = canonicalize_name(todo.pop())
        if name in closure:
            continue
        closure.add(name)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return closure


def env_site(env: Path, where: Path) -> Path:
    """A folder that holds only what `env` installs: links to the installed files of its
    pins and of their requirements (`env_distributions`), metadata included."""
    from importlib import metadata

    from packaging.utils import canonicalize_name

    wanted = env_distributions(env)
    site = where / "site"
    site.mkdir()
    for dist in metadata.distributions():
        if canonicalize_name(dist.metadata["Name"]) not in wanted:
            continue
        for file in dist.files or []:
            top = file.parts[0]
            source = Path(dist.locate_file(top))
            if top not in ("..", "__pycache__") and source.exists():
                if not (site / top).exists():
                    (site / top).symlink_to(source)
    return site


@pytest.mark.parametrize("rule,env,script", rule_envs(), ids=lambda v: getattr(v, "name", v))
def test_each_rule_imports_only_what_its_env_installs(rule, env, script, tmp_path):
    """A conda user's job sees only its env's packages: what the rule's script imports
    (and what those modules import when imported) must come from its env's pins or their
    own requirements. Checked by importing it in a Python that sees nothing else: no
    site-packages (-S), only links to the env's installed packages."""
    import os

    site = env_site(env, tmp_path)
    code = "import importlib\n" + "".join(
        f"importlib.import_module({module!r})\n" for module in script_imports(script)
    )
    path = os.pathsep.join([str(site), str(REPO / "src")])
    proc = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert proc.returncode == 0, (
        f"rule {rule}: {script.name} needs a package {env.name} does not list: "
        f"{proc.stderr.strip().splitlines()[-1]}"
    )


def test_a_built_package_carries_the_workflows_schema(tmp_path):
    """The package reads its config defaults from the schema (vocabulary.py): an installed
    package (a module read from GitHub imports it) holds a copy, the workflow's own file."""
    import shutil
    import zipfile

    tree = tmp_path / "tree"  # built from a copy: a build leaves build/ where it runs
    for part in ("src", "workflow/schemas"):
        shutil.copytree(REPO / part, tree / part, symlinks=True)
    for part in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / part, tree / part)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path), str(tree)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("visual_ablation-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        carried = archive.read("visual_ablation/config.schema.yaml")
    assert carried == (REPO / "workflow" / "schemas" / "config.schema.yaml").read_bytes()
