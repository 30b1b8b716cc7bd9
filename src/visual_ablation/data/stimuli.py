"""Geirhos et al.'s (2019) stimuli, "ImageNet-trained CNNs are biased towards texture":
the cue-conflict images (style transfer of one category's texture onto another's shape)
and the edge and filled-silhouette images of the same shapes, from rgeirhos/texture-vs-shape
at the pinned commit (CC BY 4.0, that repository's DATASET_LICENSE; Robert Geirhos et al.).

Laid out as `stimuli/<set>/<shape category>/<file>.png`, 16 categories; a cue-conflict
file is named `<shape><i>-<texture><j>.png`. The data store holds the shape category as the
class and, for the cue-conflict set, the texture category (`texture`) as a factor (with
`conflict_only: false` also whether the two differ, `conflict`), and each file's name. By
default the cue-conflict set is its 1,200 images whose shape and texture differ (Geirhos'
shape bias leaves the 80 others out; `conflict_only: false` keeps them), so that the
`class` and `texture` probes decode each category where the other is drawn apart from it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from visual_ablation.data.decode import DatasetError, decoded, fail_on_bad_image
from visual_ablation.data.source import Source, register
from visual_ablation.vocabulary import CLASS

REPOSITORY = "rgeirhos/texture-vs-shape"
COMMIT = "ccd0c01d42c0a8a834e90ec141e7f24fa915dc23"
# the `stimuli` key -> the folder under the repository's stimuli/
SETS = {
    "cue-conflict": "style-transfer-preprocessed-512",
    "edges": "edges",
    "silhouettes": "filled-silhouettes",
}
CATEGORIES = 16
ATTRIBUTION = (
    "Stimuli: Geirhos, Rubisch, Michaelis, Bethge, Wichmann & Brendel (2019), ImageNet-trained "
    f"CNNs are biased towards texture, ICLR; github.com/{REPOSITORY} at {COMMIT[:7]}, "
    "CC BY 4.0"
)


def set_folder(path: str, stimuli: str) -> str | None:
    """The folder of one stimulus set under `path` (the repository, its stimuli/ folder,
    or the set's folder itself), or None."""
    folder = SETS[stimuli]
    for candidate in (
        os.path.join(path, "stimuli", folder),
        os.path.join(path, folder),
        path,
    ):
        if os.path.isdir(candidate) and os.path.basename(os.path.normpath(candidate)) == folder:
            return candidate
    return None


def exemplars_of(name: str) -> tuple[str, str]:
    """(shape image, texture image) of a cue-conflict file name
    `<shape><i>-<texture><j>.png` (e.g. `airplane1`, `bicycle2`), with or without a folder
    or texture-vs-shape's raw-data prefix (`0001_s5n_dnn_0_airplane_00_airplane1-bicycle2.png`)."""
    stem = os.path.basename(name).rsplit("_", 1)[-1].removesuffix(".png")
    shape, _, texture = stem.partition("-")
    if not texture:
        raise DatasetError(f"{name}: not a cue-conflict stimulus (<shape><i>-<texture><j>.png)")
    return shape, texture


def categories_of(name: str) -> tuple[str, str]:
    """(shape, texture) category of a cue-conflict file name (`exemplars_of`)."""
    shape, texture = exemplars_of(name)
    return shape.rstrip("0123456789"), texture.rstrip("0123456789")


@register
class GeirhosStimuliSource(Source):
    """Geirhos et al.'s cue-conflict, edge or silhouette stimuli (`stimuli`) from a local
    copy of rgeirhos/texture-vs-shape (`path`: the repository, its stimuli/ folder or the
    set's folder); class: the shape category; cue-conflict factors: texture (and, with
    `conflict_only: false`, conflict: whether shape and texture differ)."""

    name = "geirhos"
    needs_path = True
    default_image_size = 224  # the stimuli's own size
    factor_names = ("texture",)
    # fetch: get the pinned commit's files of the set into `path` first (the fetch_stimuli
    # rule), from GitHub (true) or a mirror of the repository (its base URL)
    defaults = {"stimuli": "cue-conflict", "conflict_only": True, "fetch": False}

    @classmethod
    def stored_factors(cls, spec: dict[str, Any]) -> tuple[str, ...]:
        return cls.factor_names if spec.get("stimuli", "cue-conflict") == "cue-conflict" else ()

    @classmethod
    def split_groups(
        cls, spec: dict[str, Any], file_names: Callable[[], list[str] | None], target: str
    ) -> np.ndarray | None:
        # the 1,280 stimuli stylise 160 shape images with 48 texture images (3 a category,
        # each in 17 to 37 stimuli): a probe tested on a shape or texture image it was
        # trained on would match the image, not decode the category
        which = {CLASS: 0, "texture": 1}.get(target)
        if which is None or spec.get("stimuli", "cue-conflict") != "cue-conflict":
            return None
        exemplars = [exemplars_of(name)[which] for name in file_names() or ()]
        return np.unique(exemplars, return_inverse=True)[1].reshape(-1)

    @classmethod
    def read_file(cls, name: str) -> bool:
        return name.endswith(".png") and not name.startswith(".")

    @classmethod
    def check_path(cls, spec: dict[str, Any]) -> str | None:
        stimuli = spec.get("stimuli", cls.defaults["stimuli"])
        if stimuli not in SETS:
            return f"stimuli {stimuli!r}: expected one of {', '.join(SETS)}"
        if spec.get("fetch"):
            return None  # the fetch_stimuli rule completes it, checking every file
        folder = set_folder(spec["path"], stimuli)
        if folder is None:
            return (
                f"no {SETS[stimuli]}/ folder at {spec['path']}: point path at a copy of "
                f"github.com/{REPOSITORY} (commit {COMMIT[:7]}), its stimuli/ folder, or "
                f"stimuli/{SETS[stimuli]} itself (python -m visual_ablation.data.stimuli "
                "fetch DEST gets one)"
            )
        found = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
        if len(found) != CATEGORIES:
            return f"{folder} holds {len(found)} category folders; the stimuli have {CATEGORIES}"
        return None

    @classmethod
    def manifest(cls, spec: dict[str, Any]) -> dict[str, Any] | None:
        if spec.get("fetch"):  # the pinned files, checked by fetch_stimuli before each decode
            stimuli = spec.get("stimuli", cls.defaults["stimuli"])
            return {"commit": COMMIT, "files": len(manifest((stimuli,)))}
        # the set's own files, not the rest of the repository
        folder = set_folder(spec["path"], spec.get("stimuli", cls.defaults["stimuli"]))
        return super().manifest({**spec, "path": folder or spec["path"]})

    @classmethod
    def open(cls, spec: dict[str, Any]) -> Source:
        spec = {**cls.defaults, **spec}
        return cls(spec["path"], spec["stimuli"], bool(spec["conflict_only"]))

    def __init__(self, path: str, stimuli: str, conflict_only: bool = True) -> None:
        folder = set_folder(path, stimuli)
        if folder is None:
            raise DatasetError(f"geirhos: no {SETS[stimuli]}/ folder at {path}")
        classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
        names = [
            os.path.join(c, f)
            for c in classes
            for f in sorted(os.listdir(os.path.join(folder, c)))
            if self.read_file(f)
        ]
        factors = {}
        if stimuli == "cue-conflict":
            pairs = [categories_of(n) for n in names]
            for name, (shape, _) in zip(names, pairs, strict=True):
                if shape != os.path.dirname(name):
                    raise DatasetError(f"{folder}/{name}: a {shape} shape in the folder of another")
            unknown = sorted({t for _, t in pairs} - set(classes))
            if unknown:
                raise DatasetError(f"{folder}: texture {unknown[0]!r} is no category of the set")
            conflict = np.array([s != t for s, t in pairs])
            if conflict_only:
                names = [n for n, c in zip(names, conflict, strict=True) if c]
                pairs = [p for p, c in zip(pairs, conflict, strict=True) if c]
                conflict = conflict[conflict]
            factors = {"texture": (np.array([classes.index(t) for _, t in pairs]), list(classes))}
            if not conflict_only:  # which images' shape and texture differ (else: all)
                factors["conflict"] = (conflict.astype(np.int64), ["same", "conflict"])
        if not names:
            raise DatasetError(f"geirhos: no .png stimuli under {folder}")
        self.files = [os.path.join(folder, n) for n in names]
        super().__init__(
            np.array([classes.index(os.path.dirname(n)) for n in names], dtype=np.int64),
            list(classes),
            f"geirhos:{stimuli}:{folder}",
            factors=factors,
            file_names=names,
        )

    def decode(self, indices, size, on_bad=fail_on_bad_image) -> Iterator[np.ndarray]:
        files = ((int(i), self.files[i], f"image {self.files[i]}") for i in indices)
        yield from decoded(files, size, on_bad)


# --- Getting the stimuli: the pinned commit's files, each checked against its SHA-256.

MANIFEST = os.path.join(os.path.dirname(__file__), "texture_vs_shape.sha256")
RAW_URL = f"https://raw.githubusercontent.com/{REPOSITORY}/{COMMIT}/"


def manifest(stimuli: tuple[str, ...] = tuple(SETS)) -> dict[str, str]:
    """{path in the repository: SHA-256} of the pinned commit's files of the given sets."""
    folders = tuple(f"stimuli/{SETS[s]}/" for s in stimuli)
    out = {}
    with open(MANIFEST) as lines:
        for line in lines:
            digest, path = line.split()
            if path.startswith(folders):
                out[path] = digest
    return out


def _sha256(path: str) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fetch(
    dest: str,
    stimuli: tuple[str, ...] = tuple(SETS),
    base_url: str = RAW_URL,
    only: list[str] | None = None,
    threads: int = 8,
) -> int:
    """The pinned commit's stimuli of the given sets under `dest` (laid out as the
    repository: dest/stimuli/<set>/...), each file downloaded once and checked against
    its SHA-256; a file already there with the right hash is kept. `only`: these paths of
    the manifest. Returns the number of files downloaded."""
    import urllib.error
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    wanted = manifest(stimuli)
    if only is not None:
        wanted = {p: wanted[p] for p in only}

    def one(item: tuple[str, str]) -> int:
        path, digest = item
        target = os.path.join(dest, path)
        if os.path.exists(target) and _sha256(target) == digest:
            return 0
        os.makedirs(os.path.dirname(target), exist_ok=True)
        partial = f"{target}.partial"
        try:
            with urllib.request.urlopen(base_url + path, timeout=60) as response:
                data = response.read()
        except (urllib.error.URLError, OSError) as err:
            raise DatasetError(
                f"could not download {base_url + path} ({err}). Offline? Copy the "
                f"repository instead (git clone https://github.com/{REPOSITORY}; git checkout "
                f"{COMMIT}) and point the dataset's path at it."
            ) from err
        with open(partial, "wb") as out:
            out.write(data)
        if _sha256(partial) != digest:
            os.remove(partial)
            raise DatasetError(
                f"{path}: its SHA-256 is not the pinned commit's ({digest[:12]}...): "
                "the download is corrupt or the source has changed; nothing was kept"
            )
        os.replace(partial, target)
        return 1

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(one, sorted(wanted.items())))


def fetch_dataset(spec: dict[str, Any], mark: str) -> int:
    """The fetch_stimuli rule: a `fetch` dataset's set under its `path` (`fetch`), every
    file checked, from GitHub (`fetch: true`) or a mirror (`fetch`: its base URL); then
    the mark its data job waits for. Returns the number of files downloaded."""
    base_url = spec["fetch"] if isinstance(spec["fetch"], str) else RAW_URL
    count = fetch(spec["path"], (spec["stimuli"],), base_url=base_url.rstrip("/") + "/")
    logging.getLogger(__name__).info(
        "%s: %d files of %s downloaded, every file checked against %s at %s (%s)",
        spec["path"],
        count,
        spec["stimuli"],
        REPOSITORY,
        COMMIT[:7],
        ATTRIBUTION,
    )
    with open(mark, "w") as out:
        out.write(f"{REPOSITORY}@{COMMIT} {spec['stimuli']}: {count} downloaded\n")
    return count


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        description=f"Get Geirhos et al.'s stimuli ({REPOSITORY} at {COMMIT[:7]}, CC BY 4.0)"
    )
    parser.add_argument("command", choices=["fetch"])
    parser.add_argument("dest", help="a folder: the files go to DEST/stimuli/<set>/...")
    parser.add_argument("--stimuli", nargs="+", choices=list(SETS), default=list(SETS))
    args = parser.parse_args(argv)
    count = fetch(args.dest, tuple(args.stimuli))
    print(f"{count} files downloaded, every file checked: {args.dest} ({ATTRIBUTION})")


if __name__ == "__main__":
    main()
