"""What changed, per store: each data and feature store of an experiment that is on disk,
compared key by key with the spec the config gives it now (one line per key: old and new
value), where `snakemake -n` shows one before/now JSON string per job.

    python -m visual_ablation.plan.changes                       # config/config.yaml
    python -m visual_ablation.plan.changes --configfile my.yaml  # merged into it, as snakemake does
    python -m visual_ablation.plan.changes --configfile my.yaml --replace-workflow-config
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from visual_ablation.vocabulary import SCHEMA_PATH as SCHEMA


def merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Snakemake's merge of config files: mappings key by key, other values replaced."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def load_config(files: list[str], replace: bool) -> dict[str, Any]:
    import yaml

    paths = files if replace else ["config/config.yaml", *files]
    config: dict[str, Any] = {}
    for path in paths:
        with open(path) as f:
            config = merged(config, yaml.safe_load(f) or {})
    return config


def store_changes(path: str, expected: dict[str, Any]) -> list[str] | None:
    """The keys whose value differs between a store on disk and its spec now, each as
    `key: old -> new`; None when the store is not on disk."""
    import zarr

    from visual_ablation.plumbing.store import spec_differences

    if not os.path.isdir(path):
        return None
    try:
        found = zarr.open_group(path, mode="r").attrs.asdict().get("spec", {})
    except Exception as err:  # noqa: BLE001 (a broken store: say so)
        return [f"cannot be read ({err})"]
    return spec_differences(expected, found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", nargs="*", default=[])
    parser.add_argument("--replace-workflow-config", action="store_true")
    args = parser.parse_args(argv)
    from snakemake.utils import validate

    from visual_ablation.plan import preflight, stages

    config = load_config(args.configfile, args.replace_workflow_config)
    try:
        experiment = preflight.experiment(
            config,
            [],
            validate=lambda checked: validate(checked, str(SCHEMA)),
            main_process=False,
            schema=str(SCHEMA),
        )
    except preflight.ConfigError as err:
        print(f"Invalid config: {err}", file=sys.stderr)
        return 2
    stores = [(experiment.data_store(d), experiment.data_spec(d)) for d in experiment.datasets]
    stores += [
        (experiment.feature_store(d, b, r), experiment.feature_spec(d, b, r))
        for d, b, r in stages.features.jobs(experiment)
    ]
    same = missing = 0
    for path, spec in stores:
        changes = store_changes(path, spec)
        if changes is None:
            missing += 1
        elif not changes:
            same += 1
        else:
            print(path)
            for change in changes:
                print(f"  {change}")
    changed = len(stores) - same - missing
    print(f"{len(stores)} stores: {same} as configured, {changed} changed, {missing} not built")
    return 0


if __name__ == "__main__":
    sys.exit(main())
