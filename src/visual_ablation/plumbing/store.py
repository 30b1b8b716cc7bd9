"""Zarr stores: write atomically, read only what is complete and was made for this spec.

A store is written into a hidden sibling directory and renamed into place after its
`complete` attr is set, so a killed job leaves nothing at the final path that a later job
could take for finished work. On read, the store's `spec` attr must equal the spec the
caller expects; otherwise it is refused with the difference and how to rebuild. Its
`manifest` attr (every chunk file and its size when finished) must match the disk: a
chunk deleted or truncated since is refused too, where zarr would read a missing chunk
as zeros. Every chunk carries a CRC-32C that zarr checks when it decodes the chunk, so a
chunk corrupted at the same size fails the read that meets it (`reading` names the store).

Several snakemake invocations may share one cache_dir. A writer holds an exclusive lock
on the store (`locked`) while it builds it, so a second writer of the same store waits
and then finds it complete (`built_meanwhile`) instead of building it again; partial stores
of killed jobs are removed by the next writer. A reader (`reading`) checks after reading
that the store is still the one it opened, so a store deleted or replaced while it was
read is never taken as valid data.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import glob
import logging
import os
import platform
import shutil
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from visual_ablation.plumbing.canonical import canonical

log = logging.getLogger(__name__)
TARGET_CHUNK_BYTES = 4 << 20  # rows per chunk chosen so one chunk is about 4 MiB


class StoreError(RuntimeError):
    """A store that must not be read: incomplete, or made for another config."""


def rows_per_chunk(row_bytes: int, target: int = TARGET_CHUNK_BYTES) -> int:
    return max(1, target // max(1, row_bytes))


# Blosc codecs by what an array holds. Features: zstd level 1, about the size of level 3
# at a fraction of its time. Images: lz4, which reads faster than zstd (the data store is
# read by every feature job, on a GPU machine faster than one core decompresses zstd) for
# little more disk: photos and noisy shapes hardly compress losslessly. The figures:
# benchmarks/README.md, `writer.py`.
CODECS = {
    "zstd": {"cname": "zstd", "clevel": 1, "shuffle": "shuffle"},
    "lz4": {"cname": "lz4", "clevel": 5, "shuffle": "shuffle"},
}


def compressors(codec: str = "zstd") -> list:
    """Blosc `codec`, then a CRC-32C of the compressed chunk: zarr checks it on every
    read, so a chunk corrupted at its original size (which the manifest cannot see) is
    refused."""
    return [BloscCodec(**CODECS[codec]), Crc32cCodec()]


def save_array(group: zarr.Group, name: str, values: np.ndarray) -> zarr.Array:
    """A small array written whole (labels), compressed and checksummed."""
    array = create_array(group, name, values.shape, values.dtype)
    array[...] = values
    return array


def create_array(
    group: zarr.Group,
    name: str,
    shape: tuple[int, ...],
    dtype: Any,
    chunk_rows: int | None = None,
    codec: str = "zstd",
) -> zarr.Array:
    """A row-chunked, compressed, checksummed array (rows = images).

    Every chunk is written, all-zero ones too (`write_empty_chunks`): zarr would otherwise
    compare each chunk with the fill value on its one event-loop thread, which every
    writing thread shares; that scan cost a third of the writer's time
    (benchmarks/writer.py). The manifest then lists every chunk of the array."""
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    rows = chunk_rows or rows_per_chunk(row_bytes)
    chunks = (min(max(1, shape[0]), rows), *shape[1:])
    return group.create_array(
        name,
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        compressors=compressors(codec),
        fill_value=0,
        config={"write_empty_chunks": True},
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


def _hidden_sibling(path: str, suffix: str) -> str:
    parent = os.path.dirname(os.path.abspath(path))
    return os.path.join(parent, f".{os.path.basename(path)}.{suffix}")


@contextmanager
def locked(path: str) -> Iterator[None]:
    """Hold the exclusive lock of the store at `path` (a hidden sibling lock file): one
    writer per store at a time, across processes and snakemake invocations. The kernel
    releases it however the holder ends, SIGKILL included."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(_hidden_sibling(path, "lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("store %s is being written by another job; waiting for it", path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def built_meanwhile(path: str, spec: dict[str, Any]) -> zarr.Group | None:
    """Call holding `locked(path)`: the finished, undamaged store of exactly `spec` that
    another job (an invocation sharing the cache_dir) built while this one waited for the
    lock, opened; None when there is none to keep."""
    try:
        group = open_checked(path, spec)
    except StoreError:
        return None
    log.info("store %s was completed by another job meanwhile: kept as it is", path)
    return group


def remove_stale_partials(path: str) -> None:
    """Delete what killed writers of `path` left (`.partial-*`, `.old-*`). Only call
    while holding `locked(path)`: then no live writer of `path` owns any of them."""
    stale = glob.glob(_hidden_sibling(path, "partial-*")) + glob.glob(
        _hidden_sibling(path, "old-*")
    )
    for leftover in stale:
        log.info("removing %s, left by a writer that did not finish", leftover)
        shutil.rmtree(leftover, ignore_errors=True)


OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _out_of_space(path: str, err: OSError) -> StoreError:
    parent = os.path.dirname(os.path.abspath(path))
    free = shutil.disk_usage(parent).free if os.path.isdir(parent) else 0
    return StoreError(
        f"no space left while writing store {path} ({err.strerror}; {free / 2**20:.0f} MiB "
        f"free in {parent} after removing the partial store). Nothing of this store was "
        "kept; finished stores are untouched. Free space, or set cache_dir to a larger "
        "disk, then run snakemake again."
    )


@contextmanager
def writing(path: str, spec: dict[str, Any]) -> Iterator[zarr.Group]:
    """Yield a group to fill; on success mark it complete and move it to `path` atomically.

    On any error the partial store is deleted and `path` is left untouched; out of disk
    space becomes a StoreError that says so. Call it holding `locked(path)`.
    """
    parent = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(parent, exist_ok=True)
    remove_stale_partials(path)
    tmp = _hidden_sibling(path, f"partial-{uuid.uuid4().hex[:8]}")
    try:
        group = zarr.open_group(tmp, mode="w", zarr_format=3)
        group.attrs.update(
            {
                "spec": spec,
                "complete": False,
                "store_id": uuid.uuid4().hex,
                "provenance": provenance(),
            }
        )
        yield group
        # what a finished store holds: a chunk deleted or truncated later is caught on read
        group.attrs["manifest"] = manifest(tmp)
        group.attrs["complete"] = True
        if os.path.exists(path):
            # os.replace cannot replace a non-empty directory: move the old store aside
            # first, so `path` never holds a mix of both
            old = _hidden_sibling(path, f"old-{uuid.uuid4().hex[:8]}")
            os.rename(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as err:
        if err.errno in OUT_OF_SPACE:
            shutil.rmtree(tmp, ignore_errors=True)
            raise _out_of_space(path, err) from err
        raise
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


def spec_differences(expected: Any, found: Any, prefix: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(found, dict):
        out = []
        for key in sorted(set(expected) | set(found)):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in found:
                out.append(f"{where}: missing in store (config has {expected[key]!r})")
            elif key not in expected:
                out.append(f"{where}: store has {found[key]!r}, config has none")
            else:
                out.extend(spec_differences(expected[key], found[key], where))
        return out
    if canonical({"v": expected}) != canonical({"v": found}):
        return [f"{prefix}: store has {found!r}, config has {expected!r}"]
    return []


def rebuild_hint(path: str) -> str:
    return (
        f"Rebuild it: `snakemake --cores all --forcerun {path}` "
        f"(or delete {path} and run snakemake again)."
    )


def open_checked(path: str, expected_spec: dict[str, Any]) -> zarr.Group:
    """Open a finished store, refusing one that is incomplete or made for another spec."""
    if not os.path.isdir(path):
        raise StoreError(f"store {path} does not exist. {rebuild_hint(path)}")
    try:
        group = zarr.open_group(path, mode="r")
    except Exception as err:  # unreadable metadata is a broken store, whatever zarr raises
        raise StoreError(f"store {path} cannot be opened ({err}). {rebuild_hint(path)}") from err
    attrs = group.attrs.asdict()
    if attrs.get("complete") is not True or not isinstance(attrs.get("manifest"), dict):
        raise StoreError(f"store {path} is incomplete (no completion mark). {rebuild_hint(path)}")
    diffs = spec_differences(expected_spec, attrs.get("spec", {}))
    if diffs:
        raise StoreError(
            f"store {path} was built for another config and is not reused:\n  "
            + "\n  ".join(diffs)
            + f"\n{rebuild_hint(path)}"
        )
    check_manifest(path, attrs["manifest"])
    return group


@contextmanager
def reading(path: str, expected_spec: dict[str, Any]) -> Iterator[zarr.Group]:
    """`open_checked`, and after the block, a check that the store read is still the one
    opened: a store deleted or rebuilt meanwhile (by an invocation sharing the cache_dir)
    could have yielded zeros for missing chunks or a mix of two stores."""
    group = open_checked(path, expected_spec)
    opened = group.attrs.get("store_id")
    try:
        yield group
    except ValueError as err:
        if "checksum" not in str(err):
            raise
        raise StoreError(
            f"store {path} is damaged: a chunk fails its checksum ({err}). It is not "
            f"read. {rebuild_hint(path)}"
        ) from err
    try:
        now = zarr.open_group(path, mode="r").attrs.asdict()
    except Exception as err:  # deleted or half-replaced: either way not what was read
        now = {"error": str(err)}
    if now.get("store_id") != opened:
        raise StoreError(
            f"store {path} was deleted or rebuilt while this job read it (another snakemake "
            "invocation sharing this cache_dir?): what was read is not used. Run snakemake "
            "again."
        )
    check_manifest(path, now["manifest"])


def store_bytes(path: str) -> int:
    """Bytes on disk of a store directory."""
    total = 0
    for root, _dirs, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


class ChunkedWriter:
    """Append rows to a row-chunked array, writing whole chunks only (each chunk is
    compressed once, never read back and rewritten).

    Rows are copied into one chunk-sized buffer allocated up front. Keeping each batch's
    rows until its chunk is full would mix long-lived small blocks into the heap among
    the large per-batch arrays, and glibc would then grow the process by about the size of
    the features written, not by a batch (benchmarks/memory.py).

    With a `pool`, each full chunk is compressed and written in the pool while rows keep
    coming: chunks of all layers compress in parallel (zstd and the checksum release the
    GIL), at most `depth` chunks of this array in flight (their copies bound the memory)."""

    def __init__(self, array: zarr.Array, pool: Executor | None = None, depth: int = 2):
        self.array = array
        self.rows = min(array.chunks[0], max(1, array.shape[0]))
        self.buffer = np.empty((self.rows, *array.shape[1:]), dtype=array.dtype)
        self.filled = 0  # rows of the buffer in use
        self.start = 0  # rows written (or being written) to the array
        self.pool, self.depth = pool, depth
        self.in_flight: deque[Future] = deque()

    def append(self, rows: np.ndarray) -> None:
        taken = 0
        while taken < len(rows):
            n = min(self.rows - self.filled, len(rows) - taken)
            self.buffer[self.filled : self.filled + n] = rows[taken : taken + n]
            self.filled += n
            taken += n
            if self.filled == self.rows:
                self._flush()

    def _flush(self) -> None:
        if self.start + self.filled > self.array.shape[0]:
            raise RuntimeError(f"more rows than the {self.array.shape[0]} of {self.array.name}")
        where = slice(self.start, self.start + self.filled)
        if self.pool is None:
            self.array[where] = self.buffer[: self.filled]
        else:
            while len(self.in_flight) >= self.depth:
                self.in_flight.popleft().result()
            chunk = self.buffer[: self.filled].copy()  # the buffer is refilled meanwhile
            self.in_flight.append(self.pool.submit(self.array.__setitem__, where, chunk))
        self.start += self.filled
        self.filled = 0

    def flush(self) -> None:
        """Start writing the last, partial chunk (`close` waits for it): several arrays'
        last chunks then compress in parallel."""
        if self.filled:
            self._flush()

    def close(self) -> None:
        self.flush()
        while self.in_flight:
            self.in_flight.popleft().result()
        if self.start != self.array.shape[0]:
            raise RuntimeError(
                f"wrote {self.start} rows into {self.array.name} of {self.array.shape[0]}"
            )
