"""Dataset sources -> one decoded uint8 image store with labels (train jobs derive the
split from the labels: splits.py).

Each source yields (labels, class_names) cheaply first, so a subset `n` is chosen before
anything is decoded, then decodes the chosen images in batches (memory is bounded by the
batch, not the dataset).
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from visual_ablation import splits, store

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
DECODE_BATCH = 1024
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "hexagon", "heart")


class DatasetError(ValueError):
    """A dataset that cannot be used as configured; the message names it and the fix."""


class BadImageError(DatasetError):
    """One image that cannot be decoded; `where` names it (file, or parquet row)."""

    def __init__(self, message: str, where: str):
        super().__init__(message)
        self.where = where


# on_bad(source index, error): raise to stop, return to leave the image out
BadImageHandler = Callable[[int, BadImageError], None]


def fail_on_bad_image(index: int, error: BadImageError) -> None:
    raise error


@dataclass
class Source:
    """Labels up front; `decode(indices)` yields uint8 [b, s, s, 3] batches in that order.
    An image that cannot be decoded goes to `on_bad`, and is left out if it returns."""

    labels: np.ndarray
    class_names: list[str]
    description: str

    def decode(
        self, indices: np.ndarray, size: int, on_bad: BadImageHandler = fail_on_bad_image
    ) -> Iterator[np.ndarray]:
        raise NotImplementedError


def to_rgb_square(image: Image.Image, size: int) -> np.ndarray:
    """Any PIL image -> uint8 [size, size, 3]: RGB, centre-cropped to square, resized."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max() > 255 else 255.0
        image = Image.fromarray((array / peak * 255).round().astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert("RGB")
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != size:
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8)


def decode_image(file: str | io.BytesIO, size: int, where: str) -> np.ndarray:
    """Decode one encoded image (path or bytes); a broken one raises naming `where`.
    A JPEG far larger than `size` is decoded at a reduced scale (PIL's draft mode)."""
    try:
        with Image.open(file) as image:
            image.draft("RGB", (size, size))
            image.load()
            return to_rgb_square(image, size)
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        ValueError,
        SyntaxError,
    ) as err:
        raise BadImageError(f"cannot read {where}: {err}. Remove or replace it", where) from err


def _decoded(
    items: Iterator[tuple[int, Any, str]], size: int, on_bad: BadImageHandler
) -> Iterator[np.ndarray]:
    """(index, file or bytes, where) -> batches of decoded images, bad ones to `on_bad`."""
    buffer: list[np.ndarray] = []
    for index, file, where in items:
        try:
            buffer.append(decode_image(file, size, where))
        except BadImageError as err:
            on_bad(index, err)
            continue
        if len(buffer) == DECODE_BATCH:
            yield np.stack(buffer)
            buffer = []
    if buffer:
        yield np.stack(buffer)


def _batches(indices: np.ndarray, batch: int = DECODE_BATCH) -> Iterator[np.ndarray]:
    for start in range(0, len(indices), batch):
        yield indices[start : start + batch]


def _encode_labels(raw: list[Any], where: str) -> tuple[np.ndarray, list[str]]:
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in raw):
        bad = next(i for i, v in enumerate(raw) if v is None or (isinstance(v, float) and v != v))
        raise DatasetError(f"{where}: label missing at row {bad}. Fill or drop unlabelled rows.")
    names = sorted({str(v) for v in raw}, key=lambda s: (len(s), s) if s.isdigit() else (0, s))
    lookup = {name: i for i, name in enumerate(names)}
    return np.array([lookup[str(v)] for v in raw], dtype=np.int64), names


class DigitsSource(Source):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes)."""

    def __init__(self) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        self._images = digits.images  # float 0..16, [n, 8, 8]
        super().__init__(
            digits.target.astype(np.int64),
            [str(c) for c in range(10)],
            "sklearn.datasets.load_digits",
        )

    def decode(self, indices, size, on_bad=fail_on_bad_image) -> Iterator[np.ndarray]:
        for chunk in _batches(indices):
            gray = (self._images[chunk] * (255.0 / 16.0)).round().astype(np.uint8)
            yield np.stack([to_rgb_square(Image.fromarray(g), size) for g in gray])


class ShapesSource(Source):
    """Procedural shapes: label = shape; colour, texture, position, scale and rotation are
    random nuisance factors. Image i depends only on (seed, i), so any n is a prefix of a
    larger n and generation needs no memory beyond a batch."""

    def __init__(self, n: int, seed: int) -> None:
        self.seed = seed
        labels = np.array([self._rng(i).integers(len(SHAPES)) for i in range(n)], dtype=np.int64)
        super().__init__(labels, list(SHAPES), f"synthetic-shapes(seed={seed})")

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(i)])

    @staticmethod
    def _mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Inside-test in the shape's own frame, coordinates scaled to about [-1, 1]."""
        r = np.hypot(u, v)
        theta = np.arctan2(v, u)
        if shape == "circle":
            return r <= 1.0
        if shape == "square":
            return np.maximum(abs(u), abs(v)) <= 0.8
        if shape == "triangle":
            return (v >= -0.6) & (v <= 0.9 - 1.73 * abs(u)) & (v <= 0.9)
        if shape == "star":
            return r <= 0.45 + 0.5 * (0.5 + 0.5 * np.cos(5 * theta)) ** 3
        if shape == "cross":
            return ((abs(u) <= 0.3) & (abs(v) <= 0.95)) | ((abs(v) <= 0.3) & (abs(u) <= 0.95))
        if shape == "ring":
            return (r <= 1.0) & (r >= 0.55)
        if shape == "hexagon":
            return np.maximum(abs(v) * 0.866 + abs(u) * 0.5, abs(u)) <= 0.9
        if shape == "heart":
            x, y = u * 1.2, v * 1.2 + 0.25
            return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0
        raise ValueError(shape)

    def _silhouette(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """The shape's pixels [size, size] (bool), from the first draws of the image's
        generator: shape, scale, position, rotation."""
        shape = SHAPES[int(rng.integers(len(SHAPES)))]  # same draw as the label
        scale = rng.uniform(0.22, 0.42) * size
        cx, cy = rng.uniform(scale, size - scale, size=2)
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
        dx, dy = (xx - cx) / scale, (yy - cy) / scale
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        return self._mask(shape, u, v)

    def silhouette(self, i: int, size: int) -> np.ndarray:
        """Image i's shape mask: the known answer a representation can be checked against
        (benchmarks/edges.py scores edge maps against its contour)."""
        return self._silhouette(self._rng(i), size)

    def _draw(self, i: int, size: int) -> np.ndarray:
        rng = self._rng(i)
        inside = self._silhouette(rng, size)[..., None]
        fg, bg = rng.uniform(0, 1, size=3), rng.uniform(0, 1, size=3)
        texture = int(rng.integers(3))
        freq, noise_amp = rng.uniform(0.15, 0.6), rng.uniform(0.02, 0.12)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
        if texture == 0:  # stripes
            pattern = 0.5 + 0.5 * np.sign(np.sin(freq * (xx + yy)))[..., None]
        elif texture == 1:  # checker
            pattern = ((np.floor(xx * freq / 2) + np.floor(yy * freq / 2)) % 2)[..., None]
        else:  # flat
            pattern = np.ones((size, size, 1))
        colour = fg * (0.6 + 0.4 * pattern)
        image = np.where(inside, colour, bg)
        image = image + rng.normal(0, noise_amp, size=image.shape)
        return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)

    def decode(self, indices, size, on_bad=fail_on_bad_image) -> Iterator[np.ndarray]:
        for chunk in _batches(indices):
            yield np.stack([self._draw(int(i), size) for i in chunk])


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _images_under(folder: str) -> list[str]:
    """Image files under `folder` and its subfolders, sorted, skipping hidden ones."""
    walked = []
    for dirpath, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not _hidden(d)]  # os.walk descends only into these
        walked.append((dirpath, names))
    return [
        os.path.join(dirpath, f)
        for dirpath, names in sorted(walked)
        for f in sorted(names)
        if not _hidden(f) and f.lower().endswith(IMAGE_EXTENSIONS)
    ]


class ImageFolderSource(Source):
    """root/<class>/<image>: one subfolder per class, images of any size and format."""

    def __init__(self, root: str) -> None:
        # hidden entries (.ipynb_checkpoints, .DS_Store, ...) are neither classes nor
        # images, as in Hugging Face's imagefolder
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not _hidden(e.name))
        files, labels = [], []
        for label, name in enumerate(classes):
            found = _images_under(os.path.join(root, name))
            if not found:
                raise DatasetError(
                    f"imagefolder {root}: class folder {name!r} has no image (extensions "
                    f"{', '.join(IMAGE_EXTENSIONS)}). Every folder under {root} is a class: "
                    "add its images, or move the folder out (names starting with '.' are "
                    "ignored)."
                )
            files += found
            labels += [label] * len(found)
        if not files:
            raise DatasetError(
                f"imagefolder {root}: no images found. Expected {root}/<class>/<image> with "
                f"extensions {', '.join(IMAGE_EXTENSIONS)}."
            )
        self.files = files
        super().__init__(np.array(labels, dtype=np.int64), classes, f"imagefolder:{root}")

    def decode(self, indices, size, on_bad=fail_on_bad_image) -> Iterator[np.ndarray]:
        files = ((int(i), self.files[i], f"image {self.files[i]}") for i in indices)
        yield from _decoded(files, size, on_bad)


class ParquetSource(Source):
    """A parquet file with an image column (bytes, or {bytes, path} structs as written by
    Hugging Face datasets) and a label column; read in column batches."""

    def __init__(self, path: str, image_column: str, label_column: str) -> None:
        import pyarrow.parquet as pq

        self.path, self.image_column = path, image_column
        meta = pq.ParquetFile(path)
        columns = meta.schema_arrow.names
        for key, col in (("image_column", image_column), ("label_column", label_column)):
            if col not in columns:
                raise DatasetError(
                    f"parquet {path}: no column {col!r} ({key}). Columns: {', '.join(columns)}."
                )
        raw = pq.read_table(path, columns=[label_column]).column(0).to_pylist()
        labels, names = _encode_labels(raw, f"parquet {path} column {label_column!r}")
        super().__init__(labels, names, f"parquet:{path}")

    def decode(self, indices, size, on_bad=fail_on_bad_image) -> Iterator[np.ndarray]:
        yield from _decoded(self._cells(indices), size, on_bad)

    def _cells(self, indices: np.ndarray) -> Iterator[tuple[int, io.BytesIO, str]]:
        import pyarrow.parquet as pq

        # Indices are sorted, so file order is output order: stream, keep wanted rows.
        assert np.all(np.diff(indices) > 0), "parquet rows must be requested in file order"
        wanted = set(int(i) for i in indices)
        row = 0
        for batch in pq.ParquetFile(self.path).iter_batches(
            batch_size=DECODE_BATCH, columns=[self.image_column]
        ):
            for cell in batch.column(0).to_pylist():
                if row in wanted:
                    data = cell.get("bytes") if isinstance(cell, dict) else cell
                    yield row, io.BytesIO(data or b""), f"parquet {self.path} row {row}"
                row += 1


class NpzSource(Source):
    """An .npz with an image array ([n, h, w] or [n, h, w, c]; uint8, or float in [0, 1])
    and a label array."""

    def __init__(self, path: str, image_key: str, label_key: str) -> None:
        archive = np.load(path, allow_pickle=False)
        for key, name in (("image_key", image_key), ("label_key", label_key)):
            if name not in archive.files:
                raise DatasetError(
                    f"npz {path}: no array {name!r} ({key}). Arrays: {', '.join(archive.files)}."
                )
        self.images = archive[image_key]
        if self.images.ndim not in (3, 4):
            raise DatasetError(f"npz {path}: {image_key!r} must be [n, h, w(, c)].")
        labels, names = _encode_labels(archive[label_key].tolist(), f"npz {path}")
        super().__init__(labels, names, f"npz:{path}")

    def decode(self, indices, size, on_bad=fail_on_bad_image) -> Iterator[np.ndarray]:
        for chunk in _batches(indices):
            images = self.images[chunk]
            if images.dtype != np.uint8:
                images = (np.clip(images.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
            if images.ndim == 4 and images.shape[-1] == 1:
                images = images[..., 0]
            yield np.stack([to_rgb_square(Image.fromarray(im), size) for im in images])


def open_source(spec: dict[str, Any]) -> Source:
    source = spec["source"]
    if source == "sklearn-digits":
        return DigitsSource()
    if source == "synthetic-shapes":
        return ShapesSource(int(spec["n"]), int(spec.get("seed", 0)))
    if source == "imagefolder":
        return ImageFolderSource(spec["path"])
    if source == "parquet":
        return ParquetSource(
            spec["path"], spec.get("image_column", "image"), spec.get("label_column", "label")
        )
    if source == "npz":
        return NpzSource(
            spec["path"], spec.get("image_key", "images"), spec.get("label_key", "labels")
        )
    raise DatasetError(f"unknown source {source!r}")


def stratified_subset(labels: np.ndarray, n: int | None, seed: int, name: str) -> np.ndarray:
    """Sorted indices of a class-stratified subset of size n (all indices when n is None)."""
    total = len(labels)
    if n is None or n == total:
        return np.arange(total)
    if n > total:
        raise DatasetError(
            f"dataset '{name}': subset n={n} is larger than the dataset ({total} images). "
            f"Set datasets.{name}.n to at most {total}, or remove it."
        )
    from sklearn.model_selection import train_test_split

    chosen, _ = train_test_split(np.arange(total), train_size=n, stratify=labels, random_state=seed)
    return np.sort(chosen)


def prepare(
    spec: dict[str, Any], path: str, progress: bool = True, split: dict[str, Any] | None = None
) -> None:
    """Decode the dataset of `spec` once into the data store at `path`. `split` (the
    experiment's split config, not part of the store) is tried on the labels before
    anything is decoded, so that a dataset too small for it stops here, not in every
    train job after the features are computed."""
    with store.locked(path):
        if store.built_meanwhile(path, spec) is not None:
            return
        _prepare(spec, path, progress, split)


def _prepare(spec: dict[str, Any], path: str, progress: bool, split: dict[str, Any] | None) -> None:
    from tqdm import tqdm

    name = spec["name"]
    source = open_source(spec)
    n_source = len(source.labels)
    # synthetic-shapes draws exactly n images; other sources are subset by class
    n = None if spec["source"] == "synthetic-shapes" else spec.get("n")
    indices = stratified_subset(source.labels, n, int(spec.get("seed", 0)), name)
    if split is not None:
        splits.stratified_split(
            source.labels[indices], split["val"], split["test"], int(split["seed"]), name
        )
    size = int(spec["image_size"])
    log.info(
        "dataset %s: %d of %d images from %s, %dx%d",
        name,
        len(indices),
        n_source,
        source.description,
        size,
        size,
    )
    skipped: list[dict[str, Any]] = []

    def on_bad(index: int, error: BadImageError) -> None:
        if spec.get("on_bad_image", "fail") != "skip":
            raise BadImageError(
                f"{error}, or set datasets.{name}.on_bad_image: skip to leave such images out.",
                error.where,
            ) from error
        log.warning("skipped %s", error)
        skipped.append({"source_index": index, "where": error.where, "error": str(error)})

    with store.writing(path, spec) as group:
        images = store.create_array(group, "images", (len(indices), size, size, 3), np.uint8)
        writer = store.ChunkedWriter(images)
        bar = tqdm(
            total=len(indices),
            desc=f"decode {name}",
            unit="img",
            disable=not progress,
            mininterval=2.0,
        )
        for batch in source.decode(indices, size, on_bad):
            writer.append(batch)
            bar.update(len(batch))
        bar.close()
        if skipped:
            # skipped images leave the store; the others keep their label
            keep = ~np.isin(indices, [s["source_index"] for s in skipped])
            indices = indices[keep]
            images.resize((len(indices), size, size, 3))
            log.warning("dataset %s: skipped %d unreadable images", name, len(skipped))
        writer.close()
        labels = source.labels[indices]
        store.save_array(group, "labels", labels)
        store.save_array(group, "source_index", indices.astype(np.int64))
        group.attrs.update(
            {
                "class_names": source.class_names,
                "source": source.description,
                "n": int(len(indices)),
                "n_source": int(n_source),
                "class_counts": np.bincount(labels, minlength=len(source.class_names)).tolist(),
                "skipped": skipped,
            }
        )
