"""Zarr stores: write atomically, read only what is complete and was made for this spec.

A store is written into a hidden sibling directory and renamed into place after its
`complete` attr is set, so a killed job leaves nothing at the final path that a later job
could take for finished work. On read, the store's `spec` attr must equal the spec the
caller expects; otherwise it is refused with the difference and how to rebuild. Its
`manifest` attr (every chunk file and its size when finished) must match the disk: a
chunk deleted or truncated since is refused too, where zarr would read a missing chunk
as zeros.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from visual_ablation.config import canonical

TARGET_CHUNK_BYTES = 4 << 20  # rows per chunk chosen so one chunk is about 4 MiB


class StoreError(RuntimeError):
    """A store that must not be read: incomplete, or made for another config."""


def rows_per_chunk(row_bytes: int, target: int = TARGET_CHUNK_BYTES) -> int:
    return max(1, target // max(1, row_bytes))


def compressor() -> BloscCodec:
    return BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")


def create_array(
    group: zarr.Group, name: str, shape: tuple[int, ...], dtype: Any, chunk_rows: int | None = None
) -> zarr.Array:
    """A row-chunked, compressed array (rows = images)."""
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    rows = chunk_rows or rows_per_chunk(row_bytes)
    chunks = (min(max(1, shape[0]), rows), *shape[1:])
    return group.create_array(
        name, shape=shape, chunks=chunks, dtype=dtype, compressors=[compressor()], fill_value=0
    )


def provenance() -> dict[str, Any]:
    import visual_ablation

    return {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "visual_ablation": visual_ablation.__version__,
        "numpy": np.__version__,
        "zarr": zarr.__version__,
    }


@contextmanager
def writing(path: str, spec: dict[str, Any]) -> Iterator[zarr.Group]:
    """Yield a group to fill; on success mark it complete and move it to `path` atomically.

    On any error the partial store is deleted and `path` is left untouched.
    """
    parent = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.partial-{uuid.uuid4().hex[:8]}")
    try:
        group = zarr.open_group(tmp, mode="w", zarr_format=3)
        group.attrs.update({"spec": spec, "complete": False, "provenance": provenance()})
        yield group
        # what a finished store holds: a chunk deleted or truncated later is caught on read
        group.attrs["manifest"] = manifest(tmp)
        group.attrs["complete"] = True
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def manifest(path: str) -> dict[str, int]:
    """Size in bytes of every data file (chunk) of a store, by path relative to it.
    zarr.json files are left out: they hold the attrs, which are written last."""
    sizes = {}
    for root, _dirs, files in os.walk(path):
        for name in files:
            if name != "zarr.json":
                full = os.path.join(root, name)
                sizes[os.path.relpath(full, path)] = os.path.getsize(full)
    return sizes


def check_manifest(path: str, expected: dict[str, int]) -> None:
    """Every chunk the finished store had is there, at its size."""
    found = manifest(path)
    damaged = []
    for name, size in sorted(expected.items()):
        if name not in found:
            damaged.append(f"chunk {name} is missing")
        elif found[name] != size:
            damaged.append(f"chunk {name} has {found[name]} bytes, {size} when written")
    if damaged:
        shown = "; ".join(damaged[:5]) + (
            f"; and {len(damaged) - 5} more" if len(damaged) > 5 else ""
        )
        raise StoreError(f"store {path} is damaged ({shown}): it is not read. {rebuild_hint(path)}")


def _differences(expected: Any, found: Any, prefix: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(found, dict):
        out = []
        for key in sorted(set(expected) | set(found)):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in found:
                out.append(f"{where}: missing in store (config has {expected[key]!r})")
            elif key not in expected:
                out.append(f"{where}: store has {found[key]!r}, config has none")
            else:
                out.extend(_differences(expected[key], found[key], where))
        return out
    if canonical({"v": expected}) != canonical({"v": found}):
        return [f"{prefix}: store has {found!r}, config has {expected!r}"]
    return []


def rebuild_hint(path: str) -> str:
    return (
        f"Rebuild it: `snakemake --cores all --forcerun {path}` "
        f"(or delete {path} and run snakemake again)."
    )


def open_checked(
    path: str, expected_spec: dict[str, Any], ignore: tuple[str, ...] = ()
) -> zarr.Group:
    """Open a finished store, refusing one that is incomplete or made for another spec.

    `ignore`: top-level spec keys the reader does not depend on (a feature job reads the
    images of a data store, not its split).
    """
    if not os.path.isdir(path):
        raise StoreError(f"store {path} does not exist. {rebuild_hint(path)}")
    try:
        group = zarr.open_group(path, mode="r")
    except Exception as err:  # unreadable metadata is a broken store, whatever zarr raises
        raise StoreError(f"store {path} cannot be opened ({err}). {rebuild_hint(path)}") from err
    attrs = group.attrs.asdict()
    if attrs.get("complete") is not True or not isinstance(attrs.get("manifest"), dict):
        raise StoreError(f"store {path} is incomplete (no completion mark). {rebuild_hint(path)}")
    found = {k: v for k, v in attrs.get("spec", {}).items() if k not in ignore}
    diffs = _differences(expected_spec, found)
    if diffs:
        raise StoreError(
            f"store {path} was built for another config and is not reused:\n  "
            + "\n  ".join(diffs)
            + f"\n{rebuild_hint(path)}"
        )
    check_manifest(path, attrs["manifest"])
    return group


def store_bytes(path: str) -> int:
    """Bytes on disk of a store directory."""
    total = 0
    for root, _dirs, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


class ChunkedWriter:
    """Append rows to a row-chunked array, writing whole chunks only (each chunk is
    compressed once, never read back and rewritten)."""

    def __init__(self, array: zarr.Array):
        self.array = array
        self.rows = array.chunks[0]
        self.start = 0
        self.pending: list[np.ndarray] = []
        self.n_pending = 0

    def append(self, rows: np.ndarray) -> None:
        self.pending.append(rows)
        self.n_pending += len(rows)
        if self.n_pending >= self.rows:
            block = np.concatenate(self.pending)
            full = (len(block) // self.rows) * self.rows
            self.array[self.start : self.start + full] = block[:full]
            self.start += full
            self.pending = [block[full:]] if full < len(block) else []
            self.n_pending = len(block) - full

    def close(self) -> None:
        if self.pending:
            block = np.concatenate(self.pending)
            self.array[self.start : self.start + len(block)] = block
            self.start += len(block)
            self.pending, self.n_pending = [], 0
        if self.start != self.array.shape[0]:
            raise RuntimeError(
                f"wrote {self.start} rows into {self.array.name} of {self.array.shape[0]}"
            )


def inventory(stores: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (store, layer): shape and disk use, each store checked against its spec.

    `stores`: dicts with dataset, backbone, representation, path, spec. A store made for
    another config raises StoreError here instead of being listed as valid.
    """
    rows = []
    for entry in stores:
        group = open_checked(entry["path"], entry["spec"])
        attrs = group.attrs.asdict()
        total = store_bytes(entry["path"])
        for layer in attrs["layers"]:
            rows.append(
                {
                    "dataset": entry["dataset"],
                    "backbone": entry["backbone"],
                    "representation": entry["representation"],
                    "layer": layer,
                    "n_images": attrs["n_images"],
                    "dim": attrs["dims"][layer],
                    "dtype": attrs["dtype"],
                    "store_bytes_per_image": round(total / max(1, attrs["n_images"]), 1),
                    "extract_seconds": attrs["seconds"],
                    "device": attrs["device"],
                    "path": entry["path"],
                }
            )
    return rows
