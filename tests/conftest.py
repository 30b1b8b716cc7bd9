"""Shared helpers: run Snakemake on a tiny config in a temporary directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "tests" / "assets"  # committed data the tests read (with their licences)
JOB = re.compile(r"^(?:local)?rule (\w+):\n((?:[ \t]+.*\n)+)", re.M)


def copy_workflow(dest: Path) -> Path:
    """A private copy of the workflow (Snakefile, rules, scripts, schema, profile, src)
    so a test may edit package code without touching the repo."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in ("workflow", "profiles", "src"):
        src = REPO / part
        if src.is_dir():
            shutil.copytree(
                src, dest / part, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(src, dest / part)
    return dest


def tiny_config(**overrides) -> dict:
    config = {
        "datasets": {"digits": {"source": "sklearn-digits", "n": 200, "image_size": 16}},
        "representations": ["original", "grayscale"],
        "backbones": {
            "effnet": {
                "model": "efficientnet_lite0",
                "weights": "none",
                "layers": ["stem", "blocks.0"],
                "image_size": 32,
            },
            "pixels": {"model": "pixels", "image_size": 8},
        },
        "split": {"val": 0.15, "test": 0.2, "seed": 0},
        "extraction": {"threads": 1, "batch_size": 64},
        "probes": {
            "linear": {"hidden": 0, "max_epochs": 20, "patience": 5},
            "mlp": {"hidden": 16, "max_epochs": 20, "patience": 5},
        },
        "runs": 3,
        # one job per run on any machine (auto would group them where a GPU is visible)
        "training": {"threads": 1, "runs_per_job": 1},
    }
    config.update(overrides)
    return config


def with_key(path: str, value) -> dict:
    """The tiny config with the dotted key `path` set to `value`."""
    config = tiny_config()
    *parents, last = path.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[last] = value
    return config


def build_stores(exp, dataset: str, pairs, batch_size: int = 256) -> None:
    """The data store of `dataset` and the feature store of each (backbone,
    representation) in `pairs`, built in-process on the CPU (no Snakemake)."""
    from visual_ablation.data import preparation
    from visual_ablation.features import extraction

    preparation.prepare(exp.data_spec(dataset), exp.data_store(dataset), progress=False)
    for backbone, representation in pairs:
        extraction.extract(
            exp.data_store(dataset),
            exp.feature_store(dataset, backbone, representation),
            exp.feature_spec(dataset, backbone, representation),
            device="cpu",
            batch_size=batch_size,
            progress=False,
        )


class Workflow:
    """A workflow copy plus a working directory, driven through the snakemake CLI."""

    def __init__(self, root: Path, workdir: Path):
        self.root = root
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)

    def write_config(self, config: dict, name: str = "config.yaml") -> Path:
        path = self.workdir / name
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def command(self, *args: str, config: str = "config.yaml") -> list[str]:
        """The snakemake command line of this workflow copy and working directory."""
        return [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(self.root / "workflow" / "Snakefile"),
            # the default profile, as `snakemake` run from the repository finds it
            "--workflow-profile",
            str(self.root / "profiles" / "default"),
            "--directory",
            str(self.workdir),
            "--configfile",
            str(self.workdir / config),
            *args,
        ]

    def run(
        self,
        *args: str,
        config: str = "config.yaml",
        check: bool = True,
        env: dict[str, str] | None = None,
    ):
        cmd = self.command("--cores", "2", *args, config=config)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=self.workdir)
        proc.output = proc.stdout + proc.stderr
        if check and proc.returncode != 0:
            raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.output[-6000:]}")
        return proc

    def planned(
        self, *args: str, config: str = "config.yaml", env: dict[str, str] | None = None
    ) -> list[tuple[str, str]]:
        """(rule, first output) of every job a dry run plans."""
        out = self.run("-n", *args, config=config, env=env).output
        jobs = []
        for rule, body in JOB.findall(out):
            match = re.search(r"^\s+output: (.+)$", body, re.M)
            jobs.append((rule, match.group(1).split(", ")[0].strip() if match else ""))
        return jobs


@pytest.fixture
def workflow_copy(tmp_path: Path) -> Workflow:
    root = copy_workflow(tmp_path / "repo")
    return Workflow(root, tmp_path / "work")
