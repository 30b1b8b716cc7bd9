"""envs/*.yaml (for conda users) pin exactly what pyproject.toml pins."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def project_pins() -> dict[str, str]:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {}
    for requirement in meta["dependencies"]:
        name, _, version = requirement.partition("==")
        assert version, f"pyproject dependency {requirement!r} is not pinned with =="
        pins[name.lower()] = version
    return pins


@pytest.mark.parametrize("env", sorted((REPO / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_env_pins_match_the_project(env):
    pins = project_pins()
    spec = yaml.safe_load(env.read_text())
    pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
    assert "python=3.11" in spec["dependencies"]
    for requirement in pip:
        name, _, version = requirement.partition("==")
        assert name.lower() in pins, f"{env.name}: {name} is not a project dependency"
        assert version == pins[name.lower()], (
            f"{env.name}: {name}=={version}, project pins {pins[name.lower()]}"
        )


def test_every_rule_names_an_existing_env():
    for rule_file in (REPO / "rules").glob("*.smk"):
        for line in rule_file.read_text().splitlines():
            if line.strip().startswith('"../envs/'):
                assert (REPO / "rules" / line.strip().strip('"')).resolve().is_file(), line


def test_data_and_report_stage_modules_import_without_torch():
    """prepare_data and feature_table run in envs/data.yaml, aggregate and plots in
    envs/report.yaml: neither has torch."""
    import subprocess
    import sys

    code = (
        # an import blocker, not sys.modules['torch'] = None: scipy looks torch up there
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch': raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "import visual_ablation.data, visual_ablation.store, visual_ablation.logs\n"
        "import visual_ablation.config\n"
        # aggregate and plots run in envs/report.yaml, which has no torch either
        "import visual_ablation.report, visual_ablation.stats, visual_ablation.plots"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
