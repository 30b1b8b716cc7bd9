"""The fetch_weights job: download one backbone's weights into its library's own cache
and leave a mark that lists the files and their hashes."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from visual_ablation.features.backbones.base import WeightsNotLocal, family
from visual_ablation.features.backbones.library_cache import sha256
from visual_ablation.plumbing import outputs

log = logging.getLogger(__name__)


def fetch_to(spec: dict[str, Any], mark: str, allowed: bool = True) -> list[str]:
    fam = family(spec)
    if not allowed:
        raise WeightsNotLocal(
            f"{fam.missing_weights()}; fetch_weights is false. Fetch them once where there "
            "is internet, into the same cache (TORCH_HOME, HF_HOME), or give a checkpoint."
        )
    try:
        files = fam.fetch()
    except WeightsNotLocal:
        raise
    except Exception as err:  # network, permissions: say what was being fetched
        raise RuntimeError(
            f"could not fetch the weights of {fam.source} model {fam.model} "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). On a "
            "machine without internet, fetch them elsewhere into the same cache (TORCH_HOME, "
            "HF_HOME) or give a checkpoint path as weights."
        ) from err
    record = {os.path.basename(path): sha256(path) for path in files}
    for path in files:
        log.info("%s: %s", path, record[os.path.basename(path)])
    with outputs.replacing(mark) as tmp:
        with open(tmp, "w") as f:
            json.dump({"model": fam.model, "source": fam.source, "files": record}, f, indent=1)
    return files
