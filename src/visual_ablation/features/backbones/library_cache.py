"""Where the libraries keep downloaded weights, read without downloading: the Hugging Face
hub cache (timm, transformers and open_clip weights live there), torch hub's checkpoints
folder (torchvision's), and each file's SHA-256, remembered by path, size and modification
time so that `snakemake -n` does not hash large files again. Downloading happens only in
`fetch_*`, called by the fetch_weights rule."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence

from visual_ablation.features.backbones.base import WeightsNotLocal, hub_offline
from visual_ablation.plumbing import records

# where file hashes are remembered (the working directory's Snakemake folder)
HASH_RECORD = os.path.join(".snakemake", "visual-ablation", "file-sha256.json")


def hub_file(repo: str, filenames: Sequence[str]) -> str | None:
    """The first of `filenames` that the hub cache holds for `repo`, or None."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str) and os.path.exists(found):
            return found
    return None


def hub_files(repo: str, wanted: Sequence[Sequence[str]], what: str) -> list[str]:
    """One cached file per entry of `wanted` (alternatives for one file, best first);
    WeightsNotLocal naming what is missing where."""
    from huggingface_hub.constants import HF_HUB_CACHE

    found, missing = [], []
    for names in wanted:
        path = hub_file(repo, names)
        if path is None:
            missing.append(" or ".join(names))
        else:
            found.append(path)
    if missing:
        raise WeightsNotLocal(
            f"{what}: {', '.join(missing)} of {repo} not in the Hugging Face cache ({HF_HUB_CACHE})"
        )
    return found


def fetch_hub_files(repo: str, wanted: Sequence[Sequence[str]], what: str) -> list[str]:
    """Download each wanted file (the first alternative the repository has) into the hub
    cache; the files."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    refuse_offline(what)
    out = []
    for names in wanted:
        if (path := hub_file(repo, names)) is not None:
            out.append(path)
            continue
        for filename in names:
            try:
                out.append(hf_hub_download(repo, filename))
                break
            except EntryNotFoundError:
                continue
        else:
            raise WeightsNotLocal(f"{what}: {repo} has none of {', '.join(names)}")
    return out


def torch_hub_file(url: str) -> str:
    """Where torch hub keeps the file of `url` (torchvision's weights, timm's older ones):
    torch.hub.get_dir()'s rule, without importing torch."""
    cache = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    home = os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(cache, "torch")))
    return os.path.join(home, "hub", "checkpoints", os.path.basename(url))


def fetch_url(url: str, what: str) -> str:
    import torch

    refuse_offline(what)
    path = torch_hub_file(url)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.hub.download_url_to_file(url, path, progress=False)
    return path


def refuse_offline(what: str) -> None:
    if hub_offline():
        raise WeightsNotLocal(
            f"{what}: not on disk, and HF_HUB_OFFLINE is set, so nothing is downloaded. "
            "Fetch them once where there is internet (snakemake -c1 --until fetch_weights), "
            "into the same cache (HF_HOME, TORCH_HOME)."
        )


def sha256(path: str) -> str:
    """The SHA-256 of a file, remembered in HASH_RECORD by (path, size, mtime)."""
    stat = os.stat(path)
    key = f"{os.path.realpath(path)}:{stat.st_size}:{stat.st_mtime_ns}"

    def compute() -> str:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    return records.remembered(HASH_RECORD, key, compute)


def files_sha256(paths: Sequence[str]) -> str:
    """One hash of several files (a folder's weights and configs): of their names and
    hashes, in name order."""
    parts = sorted((os.path.basename(p), sha256(p)) for p in paths)
    if len(parts) == 1:
        return parts[0][1]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()
