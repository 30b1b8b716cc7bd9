"""Sources read from disk: scikit-learn's digits, image folders, parquet, npz and IDX files."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image

from visual_ablation.data.decode import (
    DECODE_BATCH,
    DatasetError,
    batches,
    decoded,
    fail_on_bad_image,
    to_rgb_square,
)
from visual_ablation.data.source import (
    Source,
    encode_labels,
    register,
)

# folder names of a split given with the data (ImageNet's train/ and val/)
SPLIT_FOLDERS = {"train", "val", "valid", "validation", "test"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


@register
class DigitsSource(Source):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes)."""

    name = "sklearn-digits"
    default_image_size = 32

    @classmethod
    def open(cls, spec: dict[str, Any]) -> Source:
        return cls()

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
        for chunk in batches(indices):
            gray = (self._images[chunk] * (255.0 / 16.0)).round().astype(np.uint8)
            yield np.stack([to_rgb_square(Image.fromarray(g), size) for g in gray])


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


@register
class ImageFolderSource(Source):
    """root/<class>/<image>: one subfolder per class, images of any size and format."""

    name = "imagefolder"
    needs_path = True

    @classmethod
    def read_file(cls, name: str) -> bool:
        return not _hidden(name) and name.lower().endswith(IMAGE_EXTENSIONS)

    @classmethod
    def check_path(cls, spec: dict[str, Any]) -> str | None:
        """Refuse a folder laid out as a given split (train/, val/, test/ over class
        folders, as ImageNet's): read as classes, its parts would become the classes."""
        root = spec["path"]
        if not os.path.isdir(root):
            return f"{root} is not a folder (an imagefolder is <path>/<class>/<image>)"
        folders = {e.name for e in os.scandir(root) if e.is_dir() and not _hidden(e.name)}
        parts = folders & SPLIT_FOLDERS
        if parts and parts == folders:
            part = "train" if "train" in parts else sorted(parts)[0]
            return (
                f"{root} holds {', '.join(sorted(parts))}/ folders: a split given with the "
                "data, not classes. This workflow draws its own splits (split.val, "
                f"split.test) from one folder of classes: point path at one part "
                f"({os.path.join(root, part)}), or merge the parts' class folders."
            )
        return None

    @classmethod
    def open(cls, spec: dict[str, Any]) -> Source:
        return cls(spec["path"])

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
        super().__init__(
            np.array(labels, dtype=np.int64),
            classes,
            f"imagefolder:{root}",
            file_names=[os.path.relpath(f, root) for f in files],
        )

    def decode(self, indices, size, on_bad=fail_on_bad_image) -> Iterator[np.ndarray]:
        files = ((int(i), self.files[i], f"image {self.files[i]}") for i in indices)
        yield from decoded(files, size, on_bad)


@register
class ParquetSource(Source):
    """A parquet file with an image column (bytes, or {bytes, path} structs as written by
    Hugging Face datasets) and a label column; read in column batches."""

    name = "parquet"
    needs_path = True
    defaults = {"image_column": "image", "label_column": "label"}

    @classmethod
    def open(cls, spec: dict[str, Any]) -> Source:
        return cls(spec["path"], spec["image_column"], spec["label_column"])

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
        labels, names = encode_labels(raw, f"parquet {path} column {label_column!r}")
        super().__init__(labels, names, f"parquet:{path}")

    def decode(self, indices, size, on_bad=fail_on_bad_image) -> Iterator[np.ndarray]:
        yield from decoded(self._cells(indices), size, on_bad)

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


@register
class NpzSource(Source):
    """An .npz with an image array ([n, h, w] or [n, h, w, c]; uint8, or float in [0, 1])
    and a label array."""

    name = "npz"
    needs_path = True
    defaults = {"image_key": "images", "label_key": "labels"}

    @classmethod
    def open(cls, spec: dict[str, Any]) -> Source:
        return cls(spec["path"], spec["image_key"], spec["label_key"])

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
        labels, names = encode_labels(archive[label_key].tolist(), f"npz {path}")
        super().__init__(labels, names, f"npz:{path}")

    def decode(self, indices, size, on_bad=fail_on_bad_image) -> Iterator[np.ndarray]:
        for chunk in batches(indices):
            images = self.images[chunk]
            if images.dtype != np.uint8:
                images = (np.clip(images.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
            if images.ndim == 4 and images.shape[-1] == 1:
                images = images[..., 0]
            yield np.stack([to_rgb_square(Image.fromarray(im), size) for im in images])


IDX_TYPES = {0x08: np.uint8}  # the IDX type codes this source reads (unsigned bytes)


def read_idx(path: str) -> np.ndarray:
    """One IDX file (the MNIST format: big-endian magic, dims, then the values), plain or
    gzipped; unsigned bytes only."""
    import gzip

    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise DatasetError(f"idx {path}: cannot read it ({err}).") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise DatasetError(
            f"idx {path}: not an IDX file of unsigned bytes (magic {raw[:4].hex()}, expected "
            "0000 08 and the number of dimensions)."
        )
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    start = 4 + 4 * ndim
    count = int(np.prod(dims))
    if len(raw) - start != count:
        raise DatasetError(
            f"idx {path}: the header says {dims} ({count} values) but the file holds "
            f"{len(raw) - start}: the file is truncated or not what its name says."
        )
    return np.frombuffer(raw, dtype=IDX_TYPES[raw[2]], offset=start).reshape(dims)


def _idx_file(folder: str, part: str, kind: str) -> str:
    """`{part}-{kind}-idx{1,3}-ubyte`, gzipped or not, in `folder`."""
    stem = f"{part}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
    for name in (stem + ".gz", stem):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise DatasetError(
        f"idx {folder}: no {stem}(.gz) for part {part!r}. For Fashion-MNIST: apt-get install "
        "dataset-fashion-mnist (path /usr/share/datasets/fashion-mnist), or set idx_parts."
    )


@register
class IdxSource(Source):
    """A folder of IDX files (MNIST's format; Fashion-MNIST, MNIST, KMNIST): for each
    part in `idx_parts` (default train, t10k), `{part}-images-idx3-ubyte` and
    `{part}-labels-idx1-ubyte`, gzipped or not; the parts' images in that order. Images
    are grey; `part` says which file each image came from (`parts` attr of the source)."""

    name = "idx"
    needs_path = True
    default_image_size = 28
    defaults = {"idx_parts": ["train", "t10k"]}

    @classmethod
    def open(cls, spec: dict[str, Any]) -> Source:
        return cls(spec["path"], list(spec["idx_parts"]))

    def __init__(self, folder: str, parts: list[str]) -> None:
        if not os.path.isdir(folder):
            raise DatasetError(
                f"idx {folder}: no such folder. For Fashion-MNIST: apt-get install "
                "dataset-fashion-mnist, then path: /usr/share/datasets/fashion-mnist."
            )
        images, labels, part_of = [], [], []
        for i, part in enumerate(parts):
            x = read_idx(_idx_file(folder, part, "images"))
            y = read_idx(_idx_file(folder, part, "labels"))
            if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
                raise DatasetError(
                    f"idx {folder}: part {part!r} has images {list(x.shape)} and labels "
                    f"{list(y.shape)}; expected [n, h, w] and [n]."
                )
            images.append(x)
            labels.append(y)
            part_of.append(np.full(len(y), i, np.int8))
        self.images = np.concatenate(images)
        self.parts = parts
        self.part = np.concatenate(part_of)  # index into `parts` for each image
        raw = np.concatenate(labels).astype(np.int64)
        names = [str(c) for c in range(int(raw.max()) + 1)]
        super().__init__(raw, names, f"idx:{folder}:{'+'.join(parts)}")

    def decode(self, indices, size, on_bad=fail_on_bad_image) -> Iterator[np.ndarray]:
        for chunk in batches(indices):
            yield np.stack([to_rgb_square(Image.fromarray(im), size) for im in self.images[chunk]])
