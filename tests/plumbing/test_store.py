"""Atomic writes, completeness and provenance checks of zarr stores."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from visual_ablation.plumbing import store


def write(path, spec, rows=10, fail=False):
    with store.writing(str(path), spec) as group:
        writer = store.ChunkedWriter(store.create_array(group, "x", (rows, 3), np.float32, 4))
        for start in range(0, rows, 3):
            writer.append(np.full((min(3, rows - start), 3), start, np.float32))
            if fail and start >= 3:
                raise RuntimeError("killed mid-write")
        writer.close()


def test_complete_store_round_trips(tmp_path):
    path = tmp_path / "s.zarr"
    write(path, {"a": 1})
    group = store.open_checked(str(path), {"a": 1})
    assert group["x"].chunks == (4, 3)
    assert group["x"][:, 0].tolist() == [0, 0, 0, 3, 3, 3, 6, 6, 6, 9]


def test_failure_mid_write_leaves_no_store_and_no_partial(tmp_path):
    path = tmp_path / "s.zarr"
    with pytest.raises(RuntimeError):
        write(path, {"a": 1}, fail=True)
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_a_previous_store_untouched(tmp_path):
    path = tmp_path / "s.zarr"
    write(path, {"a": 1})
    with pytest.raises(RuntimeError):
        write(path, {"a": 2}, fail=True)
    assert store.open_checked(str(path), {"a": 1})["x"].shape == (10, 3)


def test_incomplete_store_is_refused(tmp_path):
    path = tmp_path / "s.zarr"
    write(path, {"a": 1})
    zarr.open_group(path, mode="r+").attrs["complete"] = False
    with pytest.raises(store.StoreError, match="incomplete.*--forcerun"):
        store.open_checked(str(path), {"a": 1})


def test_store_for_another_spec_is_refused_with_the_difference(tmp_path):
    path = tmp_path / "s.zarr"
    write(path, {"backbone": {"layers": ["a", "b"]}, "v": 1})
    with pytest.raises(store.StoreError) as err:
        store.open_checked(str(path), {"backbone": {"layers": ["a"]}, "v": 1, "new": 0})
    message = str(err.value)
    assert "built for another config" in message
    assert "backbone.layers: store has ['a', 'b'], config has ['a']" in message
    assert "new: missing in store" in message


def test_missing_or_broken_store_is_refused(tmp_path):
    with pytest.raises(store.StoreError, match="does not exist"):
        store.open_checked(str(tmp_path / "none.zarr"), {})
    (tmp_path / "junk.zarr").mkdir()
    with pytest.raises(store.StoreError, match="junk.zarr"):
        store.open_checked(str(tmp_path / "junk.zarr"), {})


def chunk_files(path):
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name != "zarr.json")


def test_finished_store_records_every_chunk_and_its_size(tmp_path):
    path = tmp_path / "s.zarr"
    write(path, {"a": 1})
    manifest = zarr.open_group(path, mode="r").attrs["manifest"]
    files = chunk_files(path)
    assert len(files) == 3  # 10 rows in chunks of 4
    assert manifest == {str(f.relative_to(path)): f.stat().st_size for f in files}


def test_an_all_zero_chunk_is_written_and_its_loss_refused(tmp_path):
    """zarr leaves out chunks equal to the fill value unless told otherwise; the store
    writes them (no per-chunk scan), so the manifest lists them and a lost one is caught."""
    path = tmp_path / "s.zarr"
    values = np.ones((12, 3), np.float32)
    values[4:8] = 0
    with store.writing(str(path), {"a": 1}) as group:
        writer = store.ChunkedWriter(store.create_array(group, "x", values.shape, np.float32, 4))
        writer.append(values)
        writer.close()
    files = chunk_files(path)
    assert len(files) == 3
    assert np.array_equal(store.open_checked(str(path), {"a": 1})["x"][:], values)
    files[1].unlink()
    with pytest.raises(store.StoreError, match=str(files[1].relative_to(path))):
        store.open_checked(str(path), {"a": 1})


@pytest.mark.parametrize("damage", ["delete", "truncate", "empty"])
def test_a_deleted_or_truncated_chunk_is_refused_naming_it(tmp_path, damage):
    path = tmp_path / "s.zarr"
    write(path, {"a": 1})
    chunk = chunk_files(path)[1]
    name = str(chunk.relative_to(path))
    if damage == "delete":
        chunk.unlink()  # zarr alone would read the missing rows as zeros
        assert zarr.open_group(path, mode="r")["x"][4:8].tolist() == [[0.0] * 3] * 4
    else:
        data = chunk.read_bytes()
        chunk.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"")
    with pytest.raises(store.StoreError) as err:
        store.open_checked(str(path), {"a": 1})
    message = str(err.value)
    assert f"store {path} is damaged" in message and name in message
    assert "--forcerun" in message


def test_a_chunk_corrupted_at_its_size_fails_the_read_naming_the_store(tmp_path):
    path = tmp_path / "s.zarr"
    write(path, {"a": 1})
    chunk = chunk_files(path)[1]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit: same size, so the manifest agrees
    chunk.write_bytes(bytes(data))
    with pytest.raises(store.StoreError) as err:
        with store.reading(str(path), {"a": 1}) as group:
            group["x"][:]
    message = str(err.value)
    assert f"store {path} is damaged: a chunk fails its checksum" in message
    assert "--forcerun" in message
    with store.reading(str(path), {"a": 1}) as group:  # chunks before it still read
        assert group["x"][:4, 0].tolist() == [0, 0, 0, 3]


def test_a_store_without_a_manifest_is_not_taken_for_complete(tmp_path):
    path = tmp_path / "s.zarr"
    write(path, {"a": 1})
    attrs = zarr.open_group(path, mode="r+").attrs
    del attrs["manifest"]
    with pytest.raises(store.StoreError, match="incomplete"):
        store.open_checked(str(path), {"a": 1})


def test_chunked_writer_refuses_short_writes(tmp_path):
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    writer = store.ChunkedWriter(store.create_array(group, "x", (5, 2), np.float32, 2))
    writer.append(np.zeros((3, 2), np.float32))
    with pytest.raises(RuntimeError, match="wrote 3 rows"):
        writer.close()


def test_partial_stores_left_by_killed_writers_are_removed_by_the_next_writer(tmp_path):
    path = tmp_path / "s.zarr"
    # what a SIGKILLed writer leaves: a partial store, and an old store moved aside
    for leftover in (".s.zarr.partial-dead0001", ".s.zarr.old-dead0002"):
        zarr.open_group(tmp_path / leftover, mode="w").create_array("x", shape=(2,), dtype="i1")
    with store.locked(str(path)):
        write(path, {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".s.zarr.lock", "s.zarr"]


def test_rewriting_a_store_replaces_it_whole(tmp_path):
    path = tmp_path / "s.zarr"
    write(path, {"a": 1}, rows=10)
    write(path, {"a": 2}, rows=3)
    group = store.open_checked(str(path), {"a": 2})
    assert group["x"].shape == (3, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


HOLD_LOCK_AND_WRITE = """
import sys, time
sys.path.insert(0, {src!r})
from visual_ablation.plumbing import store
import numpy as np
with store.locked({path!r}):
    print("locked", flush=True)
    time.sleep(1.5)
    with store.writing({path!r}, {{"a": 1}}) as group:
        group.create_array("x", data=np.arange(5))
"""


def test_a_second_writer_waits_for_the_lock_and_then_finds_the_store_complete(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    path = str(tmp_path / "s.zarr")
    src = str(Path(__file__).resolve().parents[2] / "src")
    first = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK_AND_WRITE.format(src=src, path=path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert first.stdout.readline().strip() == "locked"
    assert store.built_meanwhile(path, {"a": 1}) is None
    with store.locked(path):  # blocks until the first writer has finished
        assert store.built_meanwhile(path, {"a": 1}) is not None
    assert first.wait() == 0


def test_a_store_deleted_or_rebuilt_while_read_is_refused(tmp_path):
    import shutil

    path = tmp_path / "s.zarr"
    write(path, {"a": 1})
    with pytest.raises(store.StoreError, match="deleted or rebuilt while this job read it"):
        with store.reading(str(path), {"a": 1}) as group:
            group["x"][:4]
            write(path, {"a": 1})  # same spec, but another build
            group["x"][4:]
    with pytest.raises(store.StoreError, match="deleted or rebuilt while this job read it"):
        with store.reading(str(path), {"a": 1}) as group:
            array = group["x"]
            shutil.rmtree(path)
            assert array[:].sum() == 0  # what zarr gives for missing chunks: zeros
    write(path, {"a": 1})
    with store.reading(str(path), {"a": 1}) as group:
        assert group["x"][:, 0].tolist() == [0, 0, 0, 3, 3, 3, 6, 6, 6, 9]


def test_disk_full_while_writing_leaves_nothing_and_says_so(tmp_path, monkeypatch):
    import errno

    from zarr.storage import _local

    real_put = _local._put
    calls = {"n": 0}

    def put_until_full(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_put(*args, **kwargs)

    path = tmp_path / "s.zarr"
    monkeypatch.setattr(_local, "_put", put_until_full)
    with pytest.raises(store.StoreError) as err:
        write(path, {"a": 1})
    message = str(err.value)
    assert f"no space left while writing store {path}" in message
    assert "Nothing of this store was kept" in message and "cache_dir" in message
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(_local, "_put", real_put)  # space freed
    write(path, {"a": 1})
    assert store.open_checked(str(path), {"a": 1})["x"].shape == (10, 3)


def test_chunks_compressed_in_parallel_give_the_same_store(tmp_path):
    """With a pool, full chunks are written by its threads while rows keep coming: the
    array, its chunk files and the manifest are those of the serial writer."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(0)
    values = rng.normal(size=(1000, 7)).astype(np.float16)
    stores = {}
    for name, pool in (("serial", None), ("parallel", ThreadPoolExecutor(3))):
        path = str(tmp_path / f"{name}.zarr")
        with store.writing(path, {"a": 1}) as group:
            writer = store.ChunkedWriter(
                store.create_array(group, "x", values.shape, np.float16, 64), pool, depth=2
            )
            for start in range(0, len(values), 50):
                writer.append(values[start : start + 50])
                assert len(writer.in_flight) <= 2  # bounded: at most `depth` chunk copies
            writer.close()
        stores[name] = store.open_checked(path, {"a": 1})
    assert np.array_equal(stores["parallel"]["x"][:], values)
    assert stores["parallel"].attrs["manifest"] == stores["serial"].attrs["manifest"]
