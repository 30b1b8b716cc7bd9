"""A source of images: the base class every source derives from, and the registry.

Each source says what the config needs for it (a path, an `n`, its default image size,
its own keys and their defaults) and reads in two steps: labels and class names cheaply
first, so that a subset is chosen before anything is decoded, then the chosen images in
batches (data/decode.py), so memory is bounded by a batch. Adding a source is one class in
procedural.py or files.py, registered with `@register`, plus its test; the config and the
schema's enum follow it (tests/plan/test_config.py checks the schema against SOURCES).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from visual_ablation.data.decode import (
    BadImageHandler,
    DatasetError,
    fail_on_bad_image,
)

FALLBACK_IMAGE_SIZE = 64


@dataclass
class Source:
    """Labels up front; `decode(indices)` yields uint8 [b, s, s, 3] batches in that order.
    An image that cannot be decoded goes to `on_bad`, and is left out if it returns.

    Class attributes say what the config needs: `name` (the `source` value), `needs_path`,
    `draws_n` (n is the number of images to draw, required, rather than a stratified
    subset), `default_image_size`, and `factor_names`: the labels besides the class that
    a probe may predict instead (a dataset's `targets`), given per image in `factors`
    ({name: (labels, names)}, the labels as long as `labels`)."""

    name: ClassVar[str]
    needs_path: ClassVar[bool] = False
    draws_n: ClassVar[bool] = False
    default_image_size: ClassVar[int] = FALLBACK_IMAGE_SIZE
    factor_names: ClassVar[tuple[str, ...]] = ()
    # the factors whose combination is an image's nuisance type for the control target
    # (data.control_labels); none: the control target is the class labels permuted
    control_factors: ClassVar[tuple[str, ...]] = ()
    # True: `fixed_test` is every run's test split of the class probes, and the images
    # where the source draws its factors apart from the class: factor targets are trained
    # and tested within them (data/splits.py target_images)
    fixes_test: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {}  # the source's own config keys
    # the source can read a split given with the data (a dataset's `split: given`); what
    # that split is made of, for the message refusing it elsewhere
    gives_split: ClassVar[str | None] = None
    # bump when this source's stores change: re-plans its datasets only (plan/config.py)
    version: ClassVar[int] = 1
    # decode is a pure function of the indices (no files, no bad images): a data job may
    # split it over processes (data/preparation.py)
    renders: ClassVar[bool] = False

    labels: np.ndarray
    class_names: list[str]
    description: str
    factors: dict[str, tuple[np.ndarray, list[str]]] = field(default_factory=dict)
    # images that are every run's test split (a source that fixes them), else None
    fixed_test: np.ndarray | None = None
    # each image's file, relative to the source's path (file-based sources), else None
    file_names: list[str] | None = None
    # with `split: given`, each image's part of the data's own split (data/splits.py codes)
    given_split: np.ndarray | None = None

    @classmethod
    def stored_factors(cls, spec: dict[str, Any]) -> tuple[str, ...]:
        """The factors a dataset of this source stores (its targets besides the class):
        `factor_names`, unless the source's keys choose fewer."""
        return cls.factor_names

    @classmethod
    def split_groups(
        cls, spec: dict[str, Any], file_names: Callable[[], list[str] | None], target: str
    ) -> np.ndarray | None:
        """For a target whose images come in groups of one exemplar (the same source image
        in several), an id per stored image, so that splits keep each group in one part
        (data/splits.py `grouped_split`); else None. `file_names`: reads the stored
        images' names, called only by a source that groups (train jobs of other sources
        read nothing more)."""
        return None

    @classmethod
    def open(cls, spec: dict[str, Any]) -> Source:
        """The source a resolved dataset spec describes."""
        raise NotImplementedError

    @classmethod
    def check_path(cls, spec: dict[str, Any]) -> str | None:
        """Why `path` cannot be this source's (checked at parse time, cheaply), or None."""
        return None

    @classmethod
    def read_file(cls, name: str) -> bool:
        """Whether a file name under a path source's `path` is part of what it reads (its
        manifest)."""
        return not name.startswith(".")

    @classmethod
    def manifest(cls, spec: dict[str, Any]) -> dict[str, Any] | None:
        """What a path source reads, as it is on disk now: the count of files under `path`
        (or the file itself) and one SHA-256 of their relative paths, sizes and modification
        times. Part of the data spec, so adding, removing or replacing a file re-plans the
        dataset's store and everything after it (stat only: cheap enough for every parse)."""
        if not cls.needs_path:
            return None
        import hashlib
        import os

        root = spec["path"]
        if os.path.isfile(root):
            entries = [(os.path.basename(root), os.stat(root))]
        else:
            entries = []
            for dirpath, dirs, names in os.walk(root):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    if cls.read_file(name):
                        path = os.path.join(dirpath, name)
                        entries.append((os.path.relpath(path, root), os.stat(path)))
        digest = hashlib.sha256()
        for name, stat in sorted(entries, key=lambda e: e[0]):
            digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return {"files": len(entries), "sha256": digest.hexdigest()}

    @classmethod
    def coinciding(cls, spec: dict[str, Any]) -> list[tuple[str, str]]:
        """Pairs of targets whose labels are the same on every image they are trained on
        under `spec` (the source's defaults filled in): two such targets would train the
        same heads, so a config may list only one of each pair."""
        return []

    def decode(
        self, indices: np.ndarray, size: int, on_bad: BadImageHandler = fail_on_bad_image
    ) -> Iterator[np.ndarray]:
        raise NotImplementedError


SOURCES: dict[str, type[Source]] = {}


def register(cls: type[Source]) -> type[Source]:
    SOURCES[cls.name] = cls
    return cls


def encode_labels(raw: list[Any], where: str) -> tuple[np.ndarray, list[str]]:
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in raw):
        bad = next(i for i, v in enumerate(raw) if v is None or (isinstance(v, float) and v != v))
        raise DatasetError(f"{where}: label missing at row {bad}. Fill or drop unlabelled rows.")
    names = sorted({str(v) for v in raw}, key=lambda s: (len(s), s) if s.isdigit() else (0, s))
    lookup = {name: i for i, name in enumerate(names)}
    return np.array([lookup[str(v)] for v in raw], dtype=np.int64), names
