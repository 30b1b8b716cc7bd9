"""Image decoding: any file or bytes -> uint8 RGB square of the stored size, and the
errors that name the image that cannot be read. Every source decodes through here, so
one table of odd images (config/README.md, "Images") holds for all of them."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

DECODE_BATCH = 1024  # images decoded per batch: the data job's memory is one batch


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


def decoded(
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


def batches(indices: np.ndarray, batch: int = DECODE_BATCH) -> Iterator[np.ndarray]:
    for start in range(0, len(indices), batch):
        yield indices[start : start + batch]
