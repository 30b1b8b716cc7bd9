"""The package's imports point one way: each stage imports only the stages before it and
the plumbing, so a stage can be read (and changed) without those after it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "visual_ablation"
# in the order data flows; a package may import its own modules and those ranked lower
# the ground floor (vocabulary, the path templates, the plumbing) imports nothing above it
RANK = {
    "vocabulary": 0,
    "layout": 0,
    "plumbing": 0,
    "data": 1,
    "features": 2,
    "probes": 3,
    "analyses": 4,
    "report": 5,
}
# the plan (the experiment as planned) plans every stage: it may import the ground floor,
# data and features (their registries), never probes, analyses or report; no stage
# imports it
PLAN_MAY_IMPORT = {"vocabulary", "layout", "plumbing", "data", "features", "plan"}


def package_of(module: str) -> str:
    """`visual_ablation.probes.fitting` -> `probes`; `visual_ablation.vocabulary` ->
    `vocabulary`."""
    return module.split(".")[1]


def imports(path: Path) -> list[str]:
    """Every visual_ablation module `path` imports, anywhere in it, by full name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("visual_ablation.")]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "visual_ablation":
                found += [f"visual_ablation.{a.name}" for a in node.names]
            elif node.module.startswith("visual_ablation."):
                found.append(node.module)
    return found


def violations(package: Path = PACKAGE) -> list[str]:
    bad = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        if relative.name == "__init__.py" and len(relative.parts) == 1:
            continue
        own = relative.parts[0].removesuffix(".py")
        for module in imports(path):
            other = package_of(module)
            if own == "plan":
                ok = other in PLAN_MAY_IMPORT
            elif other == "plan":
                ok = False
            elif own in ("plumbing", "layout", "vocabulary"):
                ok = other == own
            else:
                ok = RANK[other] <= RANK[own]
            if not ok:
                bad.append(f"{relative} imports {module}")
    return bad


def test_imports_point_one_way():
    assert violations() == []


def test_the_check_sees_an_upward_import(tmp_path):
    """The rule bites: a data module importing the report is reported."""
    fake = tmp_path / "visual_ablation"
    for folder in ("data", "report"):
        (fake / folder).mkdir(parents=True)
    (fake / "data" / "oops.py").write_text("from visual_ablation.report import plots\n")
    (fake / "report" / "plots.py").write_text("")
    assert violations(fake) == ["data/oops.py imports visual_ablation.report"]
