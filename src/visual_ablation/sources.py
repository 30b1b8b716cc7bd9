"""Where images come from: one class per `source` of the config, in a registry.

Each source says what the config needs for it (a path, an `n`, its default image size,
its own keys and their defaults) and reads in two steps: labels and class names cheaply
first, so that a subset is chosen before anything is decoded, then the chosen images in
batches (decode.py), so memory is bounded by a batch. Adding a source is one class here,
registered with `@register`, plus its test; config.py and the schema's enum follow it
(tests/test_config.py checks the schema against SOURCES).
"""

from __future__ import annotations

import colorsys
import io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from visual_ablation.decode import (
    DECODE_BATCH,
    BadImageHandler,
    DatasetError,
    batches,
    decoded,
    fail_on_bad_image,
    to_rgb_square,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "hexagon", "heart")
TEXTURES = ("stripes", "checker", "flat")
# a colour's hue sextant: which channel is largest, which second (hue 0-60 degrees, ...)
HUES = ("red-yellow", "yellow-green", "green-cyan", "cyan-blue", "blue-magenta", "magenta-red")
POSITIONS = tuple(
    f"{row}-{col}" for row in ("top", "middle", "bottom") for col in ("left", "centre", "right")
)
SCALES = ("small", "medium", "large")
ROTATIONS = ("0-90", "90-180", "180-270", "270-360")
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
    fixes_test: ClassVar[bool] = False  # True: `fixed_test` is every run's test split
    defaults: ClassVar[dict[str, Any]] = {}  # the source's own config keys
    # decode is a pure function of the indices (no files, no bad images): a data job may
    # split it over processes (data.py)
    renders: ClassVar[bool] = False

    labels: np.ndarray
    class_names: list[str]
    description: str
    factors: dict[str, tuple[np.ndarray, list[str]]] = field(default_factory=dict)
    # images that are every run's test split (a source that fixes them), else None
    fixed_test: np.ndarray | None = None

    @classmethod
    def open(cls, spec: dict[str, Any]) -> Source:
        """The source a resolved dataset spec describes."""
        raise NotImplementedError

    def decode(
        self, indices: np.ndarray, size: int, on_bad: BadImageHandler = fail_on_bad_image
    ) -> Iterator[np.ndarray]:
        raise NotImplementedError


SOURCES: dict[str, type[Source]] = {}


def register(cls: type[Source]) -> type[Source]:
    SOURCES[cls.name] = cls
    return cls


def open_source(spec: dict[str, Any]) -> Source:
    kind = SOURCES.get(spec["source"])
    if kind is None:
        raise DatasetError(f"unknown source {spec['source']!r}; known: {', '.join(SOURCES)}")
    return kind.open(spec)


def _encode_labels(raw: list[Any], where: str) -> tuple[np.ndarray, list[str]]:
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in raw):
        bad = next(i for i, v in enumerate(raw) if v is None or (isinstance(v, float) and v != v))
        raise DatasetError(f"{where}: label missing at row {bad}. Fill or drop unlabelled rows.")
    names = sorted({str(v) for v in raw}, key=lambda s: (len(s), s) if s.isdigit() else (0, s))
    lookup = {name: i for i, name in enumerate(names)}
    return np.array([lookup[str(v)] for v in raw], dtype=np.int64), names


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


def hue_sextant(rgb: np.ndarray) -> np.ndarray:
    """Which sixth of the hue circle each colour [..., 3] is in (HUES): the order of its
    channels. Uniform RGB colours fall in each sextant equally often."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.select(
        [
            (r >= g) & (g >= b),
            (g > r) & (r >= b),
            (g >= b) & (b > r),
            (b > g) & (g > r),
            (b > r) & (r >= g),
        ],
        [0, 1, 2, 3, 4],
        5,
    )


def _tertile(u: np.ndarray) -> np.ndarray:
    return np.minimum((np.asarray(u) * 3).astype(np.int64), 2)


@register
class ShapesSource(Source):
    """Procedural shapes: label = shape; colour, texture, position, scale and rotation are
    random nuisance factors, each also stored as its own label (`factors`, binned where
    continuous: hue sextants, tertiles of position and scale, quadrants of rotation, the
    last decodable only up to each shape's symmetry). Image i depends only on (seed, i), so
    any n is a prefix of a larger n and generation needs no memory beyond a batch."""

    name = "synthetic-shapes"
    draws_n = True
    renders = True
    factor_names = ("colour", "background", "texture", "position", "scale", "rotation")
    # 6 x 6 x 3 = 108 types, each in about n / 108 images: enough repeats to be learnable
    control_factors = ("colour", "background", "texture")

    @classmethod
    def open(cls, spec: dict[str, Any]) -> Source:
        return cls(int(spec["n"]), int(spec.get("seed", 0)))

    def __init__(self, n: int, seed: int) -> None:
        self.seed = seed
        # the draws at size 1 (relative position and scale): labels and factors, no pixels
        draws = [self._draws(i, 1) for i in range(n)]
        labels = np.array([d["shape"] for d in draws], dtype=np.int64)
        super().__init__(labels, list(SHAPES), self._describe(), self._factors(draws))

    def _describe(self) -> str:
        return f"synthetic-shapes(seed={self.seed})"

    def _factors(self, draws: list[dict[str, Any]]) -> dict[str, tuple[np.ndarray, list[str]]]:
        def column(key: str) -> np.ndarray:
            return np.array([d[key] for d in draws], dtype=np.float64)

        scale = column("scale")
        # the centre's place within the range it was drawn from, per axis
        free = np.maximum(1.0 - 2.0 * scale, 1e-12)
        col = _tertile((column("cx") - scale) / free)
        row = _tertile((column("cy") - scale) / free)
        out = {
            "colour": (hue_sextant(np.stack([d["fg"] for d in draws])), list(HUES)),
            "background": (hue_sextant(np.stack([d["bg"] for d in draws])), list(HUES)),
            "texture": (column("texture").astype(np.int64), list(TEXTURES)),
            "position": (row * 3 + col, list(POSITIONS)),
            "scale": (_tertile((scale - 0.22) / 0.2), list(SCALES)),
            "rotation": (
                np.minimum((column("angle") / (np.pi / 2)).astype(np.int64), 3),
                list(ROTATIONS),
            ),
        }
        return {name: (labels.astype(np.int64), names) for name, (labels, names) in out.items()}

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(i)])

    def _draws(self, i: int, size: int) -> dict[str, Any]:
        """Image i's random draws, in the generator's order (its noise comes after):
        shape, scale, centre, rotation, colours, texture. `_draw` renders them."""
        rng = self._rng(i)
        shape = int(rng.integers(len(SHAPES)))
        scale = rng.uniform(0.22, 0.42) * size
        cx, cy = rng.uniform(scale, size - scale, size=2)
        angle = rng.uniform(0, 2 * np.pi)
        fg, bg = rng.uniform(0, 1, size=3), rng.uniform(0, 1, size=3)
        texture = int(rng.integers(len(TEXTURES)))
        freq, noise_amp = rng.uniform(0.15, 0.6), rng.uniform(0.02, 0.12)
        return {
            "rng": rng,
            "shape": shape,
            "scale": scale,
            "cx": cx,
            "cy": cy,
            "angle": angle,
            "fg": fg,
            "bg": bg,
            "texture": texture,
            "freq": freq,
            "noise_amp": noise_amp,
        }

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

    def _silhouette(self, d: dict[str, Any], size: int) -> np.ndarray:
        """The shape's pixels [size, size] (bool) from its draws."""
        scale, angle = d["scale"], d["angle"]
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
        dx, dy = (xx - d["cx"]) / scale, (yy - d["cy"]) / scale
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        return self._mask(SHAPES[d["shape"]], u, v)

    def silhouette(self, i: int, size: int) -> np.ndarray:
        """Image i's shape mask: the known answer a representation can be checked against
        (benchmarks/edges.py scores edge maps against its contour)."""
        return self._silhouette(self._draws(i, size), size)

    def _colour(self, d: dict[str, Any], size: int) -> np.ndarray:
        """The shape's pixels' colour [size, size, 3]: its colour, brighter on its texture."""
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
        freq = d["freq"]
        if d["texture"] == 0:  # stripes
            pattern = 0.5 + 0.5 * np.sign(np.sin(freq * (xx + yy)))[..., None]
        elif d["texture"] == 1:  # checker
            pattern = ((np.floor(xx * freq / 2) + np.floor(yy * freq / 2)) % 2)[..., None]
        else:  # flat
            pattern = np.ones((size, size, 1))
        return d["fg"] * (0.6 + 0.4 * pattern)

    def _draw(self, i: int, size: int) -> np.ndarray:
        d = self._draws(i, size)
        inside = self._silhouette(d, size)[..., None]
        image = np.where(inside, self._colour(d, size), d["bg"])
        image = image + d["rng"].normal(0, d["noise_amp"], size=image.shape)
        return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)

    def decode(self, indices, size, on_bad=fail_on_bad_image) -> Iterator[np.ndarray]:
        for chunk in batches(indices):
            yield np.stack([self._draw(int(i), size) for i in chunk])


CUE_TEXTURES = (
    "stripes-0",
    "stripes-45",
    "stripes-90",
    "stripes-135",
    "checker",
    "dots",
    "rings",
    "grid",
)


@register
class CueConflictSource(ShapesSource):
    """Shapes whose class a second cue signals too, for measuring shape bias (Geirhos et
    al. 2019): the shape's `texture` (one of 8 patterns, CUE_TEXTURES) or its `colour` (one
    of 8 hues) stands for a class. In train and validation images the cue signals the
    shape's own class with probability `agreement` (else another class, at random); a
    fixed `conflict` share of the images, the test split of every run, has a cue of
    another class, so that each test decision follows the shape, the cue, or neither.
    The cue's class is the factor `cue`; `colour` (hue sextant) and `texture` are what the
    image shows (one of them the cue's rendering, the other a random nuisance as in
    synthetic-shapes), decodable on conflict images only from the cue itself, not from
    the shape it usually comes with."""

    name = "synthetic-cue-conflict"
    factor_names = ("cue", "colour", "texture", "background", "position", "scale", "rotation")
    # the cue (colour or texture) signals the class: only factors drawn apart from it
    control_factors = ("background", "position")
    fixes_test = True
    defaults = {"cue": "texture", "agreement": 1.0, "conflict": 0.2}

    @classmethod
    def open(cls, spec: dict[str, Any]) -> Source:
        return cls(
            int(spec["n"]),
            int(spec.get("seed", 0)),
            cue=spec["cue"],
            agreement=float(spec["agreement"]),
            conflict=float(spec["conflict"]),
        )

    def __init__(self, n: int, seed: int, cue: str, agreement: float, conflict: float) -> None:
        if cue not in ("texture", "colour"):
            raise DatasetError(f"{self.name}: cue {cue!r} is neither 'texture' nor 'colour'")
        self.cue, self.agreement, self.conflict = cue, agreement, conflict
        super().__init__(n, seed)
        self.fixed_test = np.array([self._role(i)[0] for i in range(n)], dtype=bool)

    def _describe(self) -> str:
        return (
            f"synthetic-cue-conflict(seed={self.seed}, cue={self.cue}, "
            f"agreement={self.agreement}, conflict={self.conflict})"
        )

    def _role(self, i: int) -> tuple[bool, int]:
        """(in the conflict test set, the cue's offset from the shape's class: 0 = agrees),
        from the image's own second stream (the shapes' draws stay as they are)."""
        rng = np.random.default_rng([self.seed, int(i), 1])
        conflict = bool(rng.random() < self.conflict)
        agrees = not conflict and bool(rng.random() < self.agreement)
        return conflict, 0 if agrees else int(rng.integers(1, len(SHAPES)))

    def _draws(self, i: int, size: int) -> dict[str, Any]:
        d = super()._draws(i, size)
        d["cue"] = (d["shape"] + self._role(i)[1]) % len(SHAPES)
        if self.cue == "colour":
            # the cue's hue, a little jitter, a saturated and bright colour
            jitter = np.random.default_rng([self.seed, int(i), 2]).uniform(-0.03, 0.03)
            hsv = (
                (d["cue"] / len(SHAPES) + jitter) % 1.0,
                0.6 + 0.4 * d["fg"][1],
                0.6 + 0.4 * d["fg"][2],
            )
            d["fg"] = np.array(colorsys.hsv_to_rgb(*hsv))
        return d

    def _factors(self, draws: list[dict[str, Any]]) -> dict[str, tuple[np.ndarray, list[str]]]:
        shared = super()._factors(draws)
        cue = np.array([d["cue"] for d in draws], dtype=np.int64)
        if self.cue == "texture":  # the texture drawn is the cue's pattern
            shared["texture"] = (cue, list(CUE_TEXTURES))
        return {"cue": (cue, list(SHAPES))} | {
            name: shared[name] for name in self.factor_names if name != "cue"
        }

    def _colour(self, d: dict[str, Any], size: int) -> np.ndarray:
        if self.cue == "colour":
            return super()._colour(d, size)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
        period = max(3.0, size / 10.0)
        u, v = xx / period, yy / period
        kind = CUE_TEXTURES[d["cue"]]
        if kind.startswith("stripes"):
            theta = np.deg2rad(float(kind.split("-")[1]))
            pattern = np.sin(2 * np.pi * (u * np.cos(theta) + v * np.sin(theta))) > 0
        elif kind == "checker":
            pattern = (np.floor(u) + np.floor(v)) % 2 == 0
        elif kind == "dots":
            pattern = np.hypot(u % 1 - 0.5, v % 1 - 0.5) < 0.3
        elif kind == "rings":
            pattern = np.sin(2 * np.pi * np.hypot(xx - d["cx"], yy - d["cy"]) / period) > 0
        else:  # grid
            pattern = (u % 1 < 0.25) | (v % 1 < 0.25)
        return d["fg"] * (0.35 + 0.65 * pattern[..., None])


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
        super().__init__(np.array(labels, dtype=np.int64), classes, f"imagefolder:{root}")

    def decode(self, indices, size, on_bad=fail_on_bad_image) -> Iterator[np.ndarray]:
        files = ((int(i), self.files[i], f"image {self.files[i]}") for i in indices)
        yield from decoded(files, size, on_bad)


@register
class ParquetSource(Source):
    """A parquet file with an image column (bytes, or {bytes, path} structs as written by
    Hugging Face datasets) and a label column; read in column batches."""

    name = "parquet"
    needs_path = True

    @classmethod
    def open(cls, spec: dict[str, Any]) -> Source:
        return cls(
            spec["path"], spec.get("image_column", "image"), spec.get("label_column", "label")
        )

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

    @classmethod
    def open(cls, spec: dict[str, Any]) -> Source:
        return cls(spec["path"], spec.get("image_key", "images"), spec.get("label_key", "labels"))

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

    @classmethod
    def open(cls, spec: dict[str, Any]) -> Source:
        return cls(spec["path"], list(spec.get("idx_parts") or ["train", "t10k"]))

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
