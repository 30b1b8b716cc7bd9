"""Atomic writes, completeness and provenance checks of zarr stores."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from visual_ablation import store


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
