"""Sources read from disk: scikit-learn's digits, image folders, parquet, npz and IDX files."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image

from visual_ablation.data import splits
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
SPLIT_FOLDERS = set(splits.GIVEN_PART_NAMES)
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


def _folders(root: str) -> list[str]:
    """The folders in `root`, sorted, hidden ones (.ipynb_checkpoints, ...) left out, as
    in Hugging Face's imagefolder."""
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not _hidden(e.name))


def _given_split_folders(root: str) -> list[str]:
    """The part folders of a split given with the data (train/, val/, test/ over class
    folders), or [] when `root`'s folders are not all parts."""
    folders = _folders(root)
    return folders if folders and set(folders) <= SPLIT_FOLDERS else []


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


def _class_images(
    root: str, folders: list[str], classes: list[str] | None = None
) -> tuple[list[str], list[int]]:
    """The images of each class folder in `root`, and their labels: the folder's place
    in `classes` (default `folders`)."""
    classes = folders if classes is None else classes
    files, labels = [], []
    for name in folders:
        found = _images_under(os.path.join(root, name))
        if not found:
            raise DatasetError(
                f"imagefolder {root}: class folder {name!r} has no image (extensions "
                f"{', '.join(IMAGE_EXTENSIONS)}). Every folder under {root} is a class: "
                "add its images, or move the folder out (names starting with '.' are "
                "ignored)."
            )
        files += found
        labels += [classes.index(name)] * len(found)
    return files, labels


@register
class ImageFolderSource(Source):
    """root/<class>/<image>: one subfolder per class, images of any size and format."""

    name = "imagefolder"
    needs_path = True
    gives_split = "imagefolder: train/ and val/ or test/ folders over class folders"

    @classmethod
    def read_file(cls, name: str) -> bool:
        return not _hidden(name) and name.lower().endswith(IMAGE_EXTENSIONS)

    @classmethod
    def check_path(cls, spec: dict[str, Any]) -> str | None:
        """Refuse a folder laid out as a given split (train/, val/, test/ over class
        folders, as ImageNet's) unless the dataset says `split: given`: read as classes, its
        parts would become the classes. With `split: given`, refuse any other layout."""
        root = spec["path"]
        if not os.path.isdir(root):
            return f"{root} is not a folder (an imagefolder is <path>/<class>/<image>)"
        parts = _given_split_folders(root)
        if spec.get("split") == "given":
            if not parts:
                found = ", ".join(_folders(root)[:4]) or "no folders"
                return (
                    f"split: given reads <path>/train/<class>/<image> with val/ or test/ "
                    f"beside train/, and {root} holds {found}. Remove `split: given` to draw "
                    "the splits from its class folders."
                )
            try:
                splits.given_parts(parts, root)
            except splits.SplitError as err:
                return str(err)
            return None
        if parts:
            part = "train" if "train" in parts else parts[0]
            return (
                f"{root} holds {', '.join(parts)}/ folders: a split given with the data, not "
                "classes. Add `split: given` to the dataset to use that split, or point path "
                f"at one part ({os.path.join(root, part)}) for splits drawn from its images."
            )
        return None

    @classmethod
    def open(cls, spec: dict[str, Any]) -> Source:
        return cls(spec["path"], given=spec.get("split") == "given")

    def __init__(self, root: str, given: bool = False) -> None:
        if not given:
            classes = _folders(root)
            files, labels = _class_images(root, classes)
            part_of = None
        else:
            codes = splits.given_parts(_given_split_folders(root), root)
            parts = sorted(codes, key=codes.get)  # train, then val, then test
            classes = sorted({c for part in parts for c in _folders(os.path.join(root, part))})
            missing = sorted(set(classes) - set(_folders(os.path.join(root, parts[0]))))
            if missing:
                raise DatasetError(
                    f"imagefolder {root}: class {missing[0]!r} is in another part but not in "
                    f"{parts[0]}/, so no probe could learn it. Add its training images, or "
                    "move it out of every part."
                )
            files, labels, part_of = [], [], []
            for part in parts:
                folder = os.path.join(root, part)
                found, found_labels = _class_images(folder, _folders(folder), classes)
                files += found
                labels += found_labels
                part_of += [codes[part]] * len(found)
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
            given_split=None if part_of is None else np.array(part_of, dtype=np.int8),
        )

    def decode(self, indices, size, on_bad=fail_on_bad_image) -> Iterator[np.ndarray]:
        files = ((int(i), self.files[i], f"image {self.files[i]}") for i in indices)
        yield from decoded(files, size, on_bad)


def _parquet_files(path: str) -> list[str]:
    """`path` itself, or the parquet files under the folder `path`, sorted."""
    if os.path.isfile(path):
        return [path]
    walked = []
    for dirpath, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if not _hidden(d)]
        walked += [os.path.join(dirpath, f) for f in names if ParquetSource.read_file(f)]
    return sorted(walked)


def _parquet_part(relative: str) -> str | None:
    """The part of a split a parquet file holds, from its folders or name as Hugging Face
    writes them (`train-00000-of-00001.parquet`, `default/test/0000.parquet`), or None."""
    for component in relative.split(os.sep):
        prefix = re.split(r"[-_.]", component.lower())[0]
        if prefix in SPLIT_FOLDERS:
            return prefix
    return None


@register
class ParquetSource(Source):
    """A parquet file, or a folder of them (read in name order), with an image column
    (bytes, or {bytes, path} structs as written by Hugging Face datasets) and a label
    column; read in column batches. With `split: given`, each file's part of the split comes
    from its name (`train-*.parquet`, `test-*.parquet`). An image's file name is its
    struct's `path`, or `<parquet file>:<row>`."""

    name = "parquet"
    needs_path = True
    defaults = {"image_column": "image", "label_column": "label"}
    gives_split = "parquet: a folder of parquet files named train-*.parquet and test-*.parquet"

    @classmethod
    def read_file(cls, name: str) -> bool:
        return not _hidden(name) and name.endswith(".parquet")

    @classmethod
    def check_path(cls, spec: dict[str, Any]) -> str | None:
        path = spec["path"]
        found = _parquet_files(path)
        if not found:
            return f"{path} holds no .parquet file"
        if spec.get("split") != "given":
            return None
        if os.path.isfile(path):
            return (
                f"split: given reads a folder of parquet files named by part, as Hugging "
                f"Face writes them (train-00000-of-00001.parquet, test-...); {path} is one "
                "file. Point path at the folder, or remove `split: given`."
            )
        parts = {}
        for file in found:
            relative = os.path.relpath(file, path)
            part = _parquet_part(relative)
            if part is None:
                return (
                    f"split: given, but the name of {relative} does not say its part "
                    f"({', '.join(sorted(SPLIT_FOLDERS))}): rename it, or remove `split: given`."
                )
            parts[part] = relative
        try:
            splits.given_parts(sorted(parts), path)
        except splits.SplitError as err:
            return str(err)
        return None

    @classmethod
    def open(cls, spec: dict[str, Any]) -> Source:
        return cls(
            spec["path"],
            spec["image_column"],
            spec["label_column"],
            given=spec.get("split") == "given",
        )

    def __init__(self, path: str, image_column: str, label_column: str, given=False) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.image_column = image_column
        self.files = _parquet_files(path)
        root = path if os.path.isdir(path) else os.path.dirname(path)
        raw, names, self.rows = [], [], []
        part_names = []
        for file in self.files:
            columns = pq.ParquetFile(file).schema_arrow
            for key, col in (("image_column", image_column), ("label_column", label_column)):
                if col not in columns.names:
                    raise DatasetError(
                        f"parquet {file}: no column {col!r} ({key}). Columns: "
                        f"{', '.join(columns.names)}."
                    )
            labels = pq.read_table(file, columns=[label_column]).column(0).to_pylist()
            relative = os.path.relpath(file, root)
            image_type = columns.field(image_column).type
            if pa.types.is_struct(image_type) and image_type.get_field_index("path") >= 0:
                paths = pq.read_table(file, columns=[f"{image_column}.path"]).column(0)
                paths = paths.to_pylist()
            else:
                paths = [None] * len(labels)
            names += [p or f"{relative}:{row}" for row, p in enumerate(paths)]
            raw += labels
            self.rows.append(len(labels))
            part_names.append(_parquet_part(relative) if given else None)
        labels, classes = encode_labels(raw, f"parquet {path} column {label_column!r}")
        given_split = None
        if given:
            codes = splits.given_parts(sorted(set(part_names)), path)
            given_split = np.repeat(np.array([codes[p] for p in part_names], np.int8), self.rows)
        super().__init__(
            labels, classes, f"parquet:{path}", file_names=names, given_split=given_split
        )

    def decode(self, indices, size, on_bad=fail_on_bad_image) -> Iterator[np.ndarray]:
        yield from decoded(self._cells(indices), size, on_bad)

    def _cells(self, indices: np.ndarray) -> Iterator[tuple[int, io.BytesIO, str]]:
        import pyarrow.parquet as pq

        # Indices are sorted, so file order is output order: stream, keep wanted rows.
        assert np.all(np.diff(indices) > 0), "parquet rows must be requested in file order"
        wanted = set(int(i) for i in indices)
        first = 0
        for file, rows in zip(self.files, self.rows, strict=True):
            if not wanted.intersection(range(first, first + rows)):
                first += rows
                continue
            row = first
            for batch in pq.ParquetFile(file).iter_batches(
                batch_size=DECODE_BATCH, columns=[self.image_column]
            ):
                for cell in batch.column(0).to_pylist():
                    if row in wanted:
                        data = cell.get("bytes") if isinstance(cell, dict) else cell
                        yield row, io.BytesIO(data or b""), f"parquet {file} row {row - first}"
                    row += 1
            first += rows


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
    gives_split = "idx: idx_parts in the order train, (val,) test"

    @classmethod
    def check_path(cls, spec: dict[str, Any]) -> str | None:
        parts = spec["idx_parts"]
        if spec.get("split") == "given" and len(parts) not in (2, 3):
            return (
                f"split: given takes idx_parts in the order train, (val,) test, and they are "
                f"{parts}: list two or three parts, or remove `split: given`."
            )
        return None

    @classmethod
    def open(cls, spec: dict[str, Any]) -> Source:
        return cls(spec["path"], list(spec["idx_parts"]), given=spec.get("split") == "given")

    def __init__(self, folder: str, parts: list[str], given: bool = False) -> None:
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
        given_split = None
        if given:  # the parts in order: train, (val,) test
            codes = [splits.TRAIN, splits.VAL, splits.TEST]
            if len(parts) == 2:
                codes.remove(splits.VAL)
            given_split = np.array(codes, np.int8)[self.part]
        super().__init__(raw, names, f"idx:{folder}:{'+'.join(parts)}", given_split=given_split)

    def decode(self, indices, size, on_bad=fail_on_bad_image) -> Iterator[np.ndarray]:
        for chunk in batches(indices):
            yield np.stack([to_rgb_square(Image.fromarray(im), size) for im in self.images[chunk]])
